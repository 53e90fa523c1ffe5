/*
 * csum.h: the Internet checksum (RFC 1071), checksum-while-copying,
 * incremental update (RFC 1624) and pseudo-header sums (RFC 768, RFC 793,
 * RFC 8200 section 8.1).
 *
 * Conventions.  Every sum that crosses this API is in *network* convention:
 * the value a plain sum of big-endian 16-bit words would give (an odd
 * trailing byte is the high half of a word padded with zero, RFC 1071
 * section 4.1).  A "partial sum" is such a sum folded to 16 bits with
 * end-around carries and not complemented (0..0xffff, 0 only when every word
 * added was 0); a "checksum" is its complement, the value a header field
 * holds (store it big-endian).  An `initial` argument is any 32-bit sum in
 * network convention (e.g. a pseudo-header sum or a previous partial sum),
 * so sums chain: csum_partial(b, nb, csum_partial(a, na, 0)) is the sum of
 * a followed by b when na is even.
 *
 * How.  The one's-complement sum is byte-order independent (RFC 1071 section
 * 2(B)): the kernels add the buffer as little-endian words (as x86 loads
 * them) and the folded result is byte-swapped once at the end.  Most kernels
 * add 32-bit chunks into 64-bit lanes, which cannot overflow for the chunk
 * sizes the kernels are handed (CSUM_CHUNK); a 32-bit chunk is congruent to
 * the sum of its two 16-bit words modulo 0xffff, and every reduction step is
 * an end-around add, which keeps both the residue modulo 0xffff and "zero
 * only if everything was zero", so the result equals the plain word sum
 * folded.  The VNNI kernel adds exact word sums instead (see there).
 *
 * Kernels: portable C (any CPU; the compiler may vectorise it for SSE2),
 * AVX2, AVX-512BW and AVX-512 VNNI, chosen once at run time with
 * __builtin_cpu_supports; the code is compiled for baseline x86-64 and only
 * the vector kernels carry a target attribute.  Small buffers (<= CSUM_SMALL
 * bytes) take inline portable code, as that beats a call; the VNNI kernel
 * only pays off from CSUM_VNNI_MIN bytes.
 *
 * Copy.  csum_partial_copy loads each block of the source before it stores
 * the block before it.  A copy loop that stores block i and then loads block
 * i+1 stalls when the destination sits 1..31 bytes past the source modulo
 * 4096: the loads look (by their low 12 address bits) as if they overlapped
 * the stores just issued ("4K aliasing") and wait for them.  Loads issued
 * ahead of those stores have nothing older to wait for.
 *
 * All functions are thread-safe and need no lock (the dispatch choice is a
 * word written once with the same value by whoever gets there first).
 */
#ifndef FASTPROTO_CSUM_H
#define FASTPROTO_CSUM_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#define CSUM_X86 1
#include <immintrin.h>
#else
#define CSUM_X86 0
#endif

/* Kernel choices (csum_*_impl); CSUM_IMPL_AUTO is the best one this CPU runs. */
enum {
    CSUM_IMPL_AUTO = -1,
    CSUM_IMPL_GENERIC = 0,
    CSUM_IMPL_AVX2 = 1,
    CSUM_IMPL_AVX512 = 2,
    CSUM_IMPL_AVX512VNNI = 3,
    CSUM_NIMPL = 4
};

/* Buffers at most this long are summed inline without dispatch. */
#define CSUM_SMALL 64
/* The dispatcher prefers the VNNI kernel from this many bytes on. */
#define CSUM_VNNI_MIN 1024
/* Kernels see at most this many bytes per call: 2^30 bytes of 32-bit chunks
 * add up to < 2^58 per 64-bit lane, far from overflow. */
#define CSUM_CHUNK ((size_t)1 << 30)

/* ---- folding ------------------------------------------------------------ */

/* End-around fold of a 64-bit sum to 32 bits; 0 only when s is 0.  Every
 * fold keeps the residue modulo 0xffff, which divides 2^32 - 1. */
static inline uint32_t csum_fold32(uint64_t s)
{
    uint32_t lo = (uint32_t)s, r = lo + (uint32_t)(s >> 32);
    return r + (r < lo); /* the carry out of bit 31 comes back in at bit 0 */
}

/* End-around fold of a 64-bit sum to 16 bits; 0 only when s is 0. */
static inline uint32_t csum_fold64(uint64_t s)
{
    uint32_t x = csum_fold32(s);
    x = (x & 0xffff) + (x >> 16); /* <= 0x1fffe */
    x = (x & 0xffff) + (x >> 16); /* <= 0xffff */
    return x;
}

/* A sum with the bytes of every word swapped, as a 32-bit sum: swapping the
 * bytes of a word multiplies it by 256 modulo 0xffff (RFC 1071 section
 * 2(B)), and bswap32 swaps the bytes within both halves at once. */
static inline uint32_t csum_swap(uint64_t s)
{
    return __builtin_bswap32(csum_fold32(s));
}

/* The partial sum (uncomplemented, 16 bits) of a 32-bit sum. */
static inline uint16_t csum_fold(uint32_t sum)
{
    return (uint16_t)csum_fold64(sum);
}

/* The checksum (the complemented folded sum: the header field's value). */
static inline uint16_t csum_finish(uint32_t sum)
{
    return (uint16_t)~csum_fold64(sum);
}

/* ---- portable kernels --------------------------------------------------- */

/* Little-endian sum of up to a few hundred bytes, no unrolling. */
static inline uint64_t csum_sum_small(const unsigned char *p, size_t n)
{
    uint64_t s = 0;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        s += (w & 0xffffffffu) + (w >> 32);
        p += 8;
        n -= 8;
    }
    if (n & 4) {
        uint32_t w;
        memcpy(&w, p, 4);
        s += w;
        p += 4;
    }
    if (n & 2) {
        uint16_t w;
        memcpy(&w, p, 2);
        s += w;
        p += 2;
    }
    if (n & 1)
        s += *p; /* low half of a little-endian word: the pad byte is 0 */
    return s;
}

/* Copy n (a few hundred at most) bytes; return their little-endian sum. */
static inline uint64_t csum_copy_small(unsigned char *d, const unsigned char *p, size_t n)
{
    uint64_t s = 0;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        memcpy(d, &w, 8);
        s += (w & 0xffffffffu) + (w >> 32);
        p += 8;
        d += 8;
        n -= 8;
    }
    if (n & 4) {
        uint32_t w;
        memcpy(&w, p, 4);
        memcpy(d, &w, 4);
        s += w;
        p += 4;
        d += 4;
    }
    if (n & 2) {
        uint16_t w;
        memcpy(&w, p, 2);
        memcpy(d, &w, 2);
        s += w;
        p += 2;
        d += 2;
    }
    if (n & 1) {
        *d = *p;
        s += *p;
    }
    return s;
}

static uint64_t csum_sum_generic(const unsigned char *p, size_t n)
{
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    while (n >= 32) {
        uint64_t w0, w1, w2, w3;
        memcpy(&w0, p, 8);
        memcpy(&w1, p + 8, 8);
        memcpy(&w2, p + 16, 8);
        memcpy(&w3, p + 24, 8);
        s0 += (w0 & 0xffffffffu) + (w0 >> 32);
        s1 += (w1 & 0xffffffffu) + (w1 >> 32);
        s2 += (w2 & 0xffffffffu) + (w2 >> 32);
        s3 += (w3 & 0xffffffffu) + (w3 >> 32);
        p += 32;
        n -= 32;
    }
    return s0 + s1 + s2 + s3 + csum_sum_small(p, n);
}

static uint64_t csum_copy_generic(unsigned char *d, const unsigned char *p, size_t n)
{
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    while (n >= 32) {
        uint64_t w0, w1, w2, w3;
        memcpy(&w0, p, 8);
        memcpy(&w1, p + 8, 8);
        memcpy(&w2, p + 16, 8);
        memcpy(&w3, p + 24, 8);
        memcpy(d, &w0, 8);
        memcpy(d + 8, &w1, 8);
        memcpy(d + 16, &w2, 8);
        memcpy(d + 24, &w3, 8);
        s0 += (w0 & 0xffffffffu) + (w0 >> 32);
        s1 += (w1 & 0xffffffffu) + (w1 >> 32);
        s2 += (w2 & 0xffffffffu) + (w2 >> 32);
        s3 += (w3 & 0xffffffffu) + (w3 >> 32);
        p += 32;
        d += 32;
        n -= 32;
    }
    return s0 + s1 + s2 + s3 + csum_copy_small(d, p, n);
}

/* ---- vector kernels ----------------------------------------------------- *
 * Per vector: lo += v (64-bit lanes, wrapping) and hi += v >> 32.  Then
 * lo - (hi << 32) is the exact sum of the low 32-bit halves (it is < 2^64),
 * and the lane's sum of 32-bit chunks is that plus hi: three operations per
 * vector instead of four for mask, shift and two adds. */
#if CSUM_X86

#define CSUM_AVX2 __attribute__((target("avx2")))
#define CSUM_AVX512 __attribute__((target("avx2,avx512f,avx512bw")))

#define CSUM_ACC256(lo, hi, v)                                                 \
    do {                                                                       \
        lo = _mm256_add_epi64(lo, v);                                          \
        hi = _mm256_add_epi64(hi, _mm256_srli_epi64(v, 32));                   \
    } while (0)

/* Lanes add up modulo 2^64, so accumulators may be added before this. */
#define CSUM_ADD4_256(a, b, c, e) \
    _mm256_add_epi64(_mm256_add_epi64(a, b), _mm256_add_epi64(c, e))
#define CSUM_ADD4_512(a, b, c, e) \
    _mm512_add_epi64(_mm512_add_epi64(a, b), _mm512_add_epi64(c, e))

/* The sum of the 32-bit chunks that went into lo and hi, over all lanes (each
 * lane's true sum of low halves, lo - (hi << 32), is < 2^58 for CSUM_CHUNK). */
CSUM_AVX2 static inline uint64_t csum_lanes256(__m256i lo, __m256i hi)
{
    __m256i s = _mm256_add_epi64(_mm256_sub_epi64(lo, _mm256_slli_epi64(hi, 32)), hi);
    __m128i t = _mm_add_epi64(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    return (uint64_t)_mm_cvtsi128_si64(t) + (uint64_t)_mm_extract_epi64(t, 1);
}

CSUM_AVX2 static uint64_t csum_sum_avx2_body(const unsigned char *p, size_t n)
{
    __m256i l0 = _mm256_setzero_si256(), l1 = l0, l2 = l0, l3 = l0;
    __m256i h0 = l0, h1 = l0, h2 = l0, h3 = l0;
    while (n >= 128) {
        __m256i v0 = _mm256_loadu_si256((const __m256i *)p);
        __m256i v1 = _mm256_loadu_si256((const __m256i *)(p + 32));
        __m256i v2 = _mm256_loadu_si256((const __m256i *)(p + 64));
        __m256i v3 = _mm256_loadu_si256((const __m256i *)(p + 96));
        CSUM_ACC256(l0, h0, v0);
        CSUM_ACC256(l1, h1, v1);
        CSUM_ACC256(l2, h2, v2);
        CSUM_ACC256(l3, h3, v3);
        p += 128;
        n -= 128;
    }
    while (n >= 32) {
        __m256i v0 = _mm256_loadu_si256((const __m256i *)p);
        CSUM_ACC256(l0, h0, v0);
        p += 32;
        n -= 32;
    }
    return csum_lanes256(CSUM_ADD4_256(l0, l1, l2, l3), CSUM_ADD4_256(h0, h1, h2, h3)) +
           csum_sum_small(p, n);
}

/* Loads are made 32-byte aligned by summing the head apart; an odd head
 * shifts the pairing of bytes into words for the rest, which one byte swap of
 * its folded sum undoes (RFC 1071 section 2(B)). */
CSUM_AVX2 static uint64_t csum_sum_avx2(const unsigned char *p, size_t n)
{
    size_t head = (size_t)(-(uintptr_t)p) & 31;
    uint64_t s, rest;
    if (n < 256 || head == 0)
        return csum_sum_avx2_body(p, n);
    s = csum_sum_small(p, head);
    rest = csum_sum_avx2_body(p + head, n - head);
    if (head & 1)
        rest = csum_swap(rest);
    return s + rest;
}

CSUM_AVX2 static uint64_t csum_copy_avx2(unsigned char *d, const unsigned char *p, size_t n)
{
    __m256i l0 = _mm256_setzero_si256(), l1 = l0, l2 = l0, l3 = l0;
    __m256i h0 = l0, h1 = l0, h2 = l0, h3 = l0;
    if (n >= 128) {
        __m256i v0 = _mm256_loadu_si256((const __m256i *)p);
        __m256i v1 = _mm256_loadu_si256((const __m256i *)(p + 32));
        __m256i v2 = _mm256_loadu_si256((const __m256i *)(p + 64));
        __m256i v3 = _mm256_loadu_si256((const __m256i *)(p + 96));
        while (n >= 256) {
            /* next block's loads go before this block's stores (4K aliasing) */
            __m256i w0 = _mm256_loadu_si256((const __m256i *)(p + 128));
            __m256i w1 = _mm256_loadu_si256((const __m256i *)(p + 160));
            __m256i w2 = _mm256_loadu_si256((const __m256i *)(p + 192));
            __m256i w3 = _mm256_loadu_si256((const __m256i *)(p + 224));
            _mm256_storeu_si256((__m256i *)d, v0);
            _mm256_storeu_si256((__m256i *)(d + 32), v1);
            _mm256_storeu_si256((__m256i *)(d + 64), v2);
            _mm256_storeu_si256((__m256i *)(d + 96), v3);
            CSUM_ACC256(l0, h0, v0);
            CSUM_ACC256(l1, h1, v1);
            CSUM_ACC256(l2, h2, v2);
            CSUM_ACC256(l3, h3, v3);
            v0 = w0;
            v1 = w1;
            v2 = w2;
            v3 = w3;
            p += 128;
            d += 128;
            n -= 128;
        }
        _mm256_storeu_si256((__m256i *)d, v0);
        _mm256_storeu_si256((__m256i *)(d + 32), v1);
        _mm256_storeu_si256((__m256i *)(d + 64), v2);
        _mm256_storeu_si256((__m256i *)(d + 96), v3);
        CSUM_ACC256(l0, h0, v0);
        CSUM_ACC256(l1, h1, v1);
        CSUM_ACC256(l2, h2, v2);
        CSUM_ACC256(l3, h3, v3);
        p += 128;
        d += 128;
        n -= 128;
    }
    while (n >= 32) {
        __m256i v0 = _mm256_loadu_si256((const __m256i *)p);
        _mm256_storeu_si256((__m256i *)d, v0);
        CSUM_ACC256(l0, h0, v0);
        p += 32;
        d += 32;
        n -= 32;
    }
    return csum_lanes256(CSUM_ADD4_256(l0, l1, l2, l3), CSUM_ADD4_256(h0, h1, h2, h3)) +
           csum_copy_small(d, p, n);
}

#define CSUM_ACC512(lo, hi, v)                                                 \
    do {                                                                       \
        lo = _mm512_add_epi64(lo, v);                                          \
        hi = _mm512_add_epi64(hi, _mm512_srli_epi64(v, 32));                   \
    } while (0)

CSUM_AVX512 static inline uint64_t csum_lanes512(__m512i lo, __m512i hi)
{
    __m512i s = _mm512_add_epi64(_mm512_sub_epi64(lo, _mm512_slli_epi64(hi, 32)), hi);
    return (uint64_t)_mm512_reduce_add_epi64(s);
}

/* The first n (< 64) bytes at p as a vector, zero beyond; reads nothing past
 * p + n (masked loads do not fault on masked-off bytes). */
CSUM_AVX512 static inline __m512i csum_load_tail512(const unsigned char *p, size_t n)
{
    return _mm512_maskz_loadu_epi8((__mmask64)((1ULL << n) - 1), p);
}

CSUM_AVX512 static uint64_t csum_sum_avx512(const unsigned char *p, size_t n)
{
    /* aligned loads, words paired by absolute address: see the VNNI kernel */
    const size_t off = (uintptr_t)p & 63;
    const unsigned char *a = p - off;
    size_t span = off + n;
    __m512i l0 = _mm512_setzero_si512(), l1 = l0, l2 = l0, l3 = l0;
    __m512i h0 = l0, h1 = l0, h2 = l0, h3 = l0;
    __mmask64 m = ~0ULL << off;
    if (span < 64)
        m &= (1ULL << span) - 1;
    {
        __m512i v = _mm512_maskz_loadu_epi8(m, a);
        CSUM_ACC512(l0, h0, v);
    }
    if (span <= 64)
        goto done;
    a += 64;
    span -= 64;
    while (span >= 256) {
        __m512i v0 = _mm512_load_si512(a);
        __m512i v1 = _mm512_load_si512(a + 64);
        __m512i v2 = _mm512_load_si512(a + 128);
        __m512i v3 = _mm512_load_si512(a + 192);
        CSUM_ACC512(l0, h0, v0);
        CSUM_ACC512(l1, h1, v1);
        CSUM_ACC512(l2, h2, v2);
        CSUM_ACC512(l3, h3, v3);
        a += 256;
        span -= 256;
    }
    if (span >= 64) {
        __m512i v = _mm512_load_si512(a);
        CSUM_ACC512(l1, h1, v);
        a += 64;
        span -= 64;
        if (span >= 64) {
            v = _mm512_load_si512(a);
            CSUM_ACC512(l2, h2, v);
            a += 64;
            span -= 64;
            if (span >= 64) {
                v = _mm512_load_si512(a);
                CSUM_ACC512(l3, h3, v);
                a += 64;
                span -= 64;
            }
        }
    }
    if (span) {
        __m512i v = _mm512_maskz_loadu_epi8((__mmask64)((1ULL << span) - 1), a);
        CSUM_ACC512(l0, h0, v);
    }
done:
    {
        uint64_t s = csum_lanes512(CSUM_ADD4_512(l0, l1, l2, l3), CSUM_ADD4_512(h0, h1, h2, h3));
        if ((uintptr_t)p & 1)
            s = csum_swap(s);
        return s;
    }
}

CSUM_AVX512 static uint64_t csum_copy_avx512(unsigned char *d, const unsigned char *p, size_t n)
{
    __m512i l0 = _mm512_setzero_si512(), l1 = l0, l2 = l0, l3 = l0;
    __m512i h0 = l0, h1 = l0, h2 = l0, h3 = l0;
    if (n >= 256) {
        __m512i v0 = _mm512_loadu_si512(p);
        __m512i v1 = _mm512_loadu_si512(p + 64);
        __m512i v2 = _mm512_loadu_si512(p + 128);
        __m512i v3 = _mm512_loadu_si512(p + 192);
        while (n >= 512) {
            /* next block's loads go before this block's stores (4K aliasing) */
            __m512i w0 = _mm512_loadu_si512(p + 256);
            __m512i w1 = _mm512_loadu_si512(p + 320);
            __m512i w2 = _mm512_loadu_si512(p + 384);
            __m512i w3 = _mm512_loadu_si512(p + 448);
            _mm512_storeu_si512(d, v0);
            _mm512_storeu_si512(d + 64, v1);
            _mm512_storeu_si512(d + 128, v2);
            _mm512_storeu_si512(d + 192, v3);
            CSUM_ACC512(l0, h0, v0);
            CSUM_ACC512(l1, h1, v1);
            CSUM_ACC512(l2, h2, v2);
            CSUM_ACC512(l3, h3, v3);
            v0 = w0;
            v1 = w1;
            v2 = w2;
            v3 = w3;
            p += 256;
            d += 256;
            n -= 256;
        }
        _mm512_storeu_si512(d, v0);
        _mm512_storeu_si512(d + 64, v1);
        _mm512_storeu_si512(d + 128, v2);
        _mm512_storeu_si512(d + 192, v3);
        CSUM_ACC512(l0, h0, v0);
        CSUM_ACC512(l1, h1, v1);
        CSUM_ACC512(l2, h2, v2);
        CSUM_ACC512(l3, h3, v3);
        p += 256;
        d += 256;
        n -= 256;
    }
    while (n >= 64) {
        __m512i v0 = _mm512_loadu_si512(p);
        _mm512_storeu_si512(d, v0);
        CSUM_ACC512(l1, h1, v0);
        p += 64;
        d += 64;
        n -= 64;
    }
    if (n) {
        __m512i v0 = csum_load_tail512(p, n);
        _mm512_mask_storeu_epi8(d, (__mmask64)((1ULL << n) - 1), v0);
        CSUM_ACC512(l2, h2, v0);
    }
    return csum_lanes512(CSUM_ADD4_512(l0, l1, l2, l3), CSUM_ADD4_512(h0, h1, h2, h3));
}

/* AVX-512 VNNI kernel.  vpdpwssd adds pairs of *signed* words into 32-bit
 * lanes, so each word is first biased by xor 0x8000 (giving w - 0x8000) and
 * 0x8000 per word is added back at the end: two operations per vector.  A
 * lane gains at most 2^16 in magnitude per vector, so the 32-bit lanes are
 * widened into 64-bit ones every CSUM_VNNI_FLUSH blocks, well before 2^31.
 *
 * Loads are aligned: the first is a masked load of the 64-byte line that
 * holds p, so every byte sits in the lane its address gives it and words are
 * paired by absolute address; when p is odd that pairs bytes the other way
 * round from the buffer's own words, which one byte swap of the folded sum
 * undoes (RFC 1071 section 2(B)). */
#define CSUM_AVX512VNNI __attribute__((target("avx2,avx512f,avx512bw,avx512vnni")))
#define CSUM_VNNI_FLUSH 4096

#define CSUM_WIDEN512(w, c)                                                    \
    _mm512_add_epi64(w, _mm512_add_epi64(                                      \
        _mm512_cvtepi32_epi64(_mm512_castsi512_si256(c)),                      \
        _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(c, 1))))

CSUM_AVX512VNNI static uint64_t csum_sum_avx512vnni(const unsigned char *p, size_t n)
{
    const __m512i bias = _mm512_set1_epi16((short)0x8000);
    const __m512i ones = _mm512_set1_epi16(1);
    const size_t off = (uintptr_t)p & 63;
    const unsigned char *a = p - off; /* p's line: only bytes from p on are read */
    size_t span = off + n;            /* bytes from a to the end */
    uint64_t nvec = 1;
    __m512i w = _mm512_setzero_si512();
    __m512i c0 = w, c1 = w, c2 = w, c3 = w;
    __mmask64 m = ~0ULL << off;
    if (span < 64)
        m &= (1ULL << span) - 1;
    c0 = _mm512_dpwssd_epi32(c0, _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, a), bias), ones);
    if (span <= 64)
        goto done;
    a += 64;
    span -= 64;
    while (span >= 256) {
        size_t blocks = span / 256;
        if (blocks > CSUM_VNNI_FLUSH)
            blocks = CSUM_VNNI_FLUSH;
        nvec += 4 * blocks;
        span -= 256 * blocks;
        for (; blocks; blocks--) {
            __m512i v0 = _mm512_load_si512(a);
            __m512i v1 = _mm512_load_si512(a + 64);
            __m512i v2 = _mm512_load_si512(a + 128);
            __m512i v3 = _mm512_load_si512(a + 192);
            c0 = _mm512_dpwssd_epi32(c0, _mm512_xor_si512(v0, bias), ones);
            c1 = _mm512_dpwssd_epi32(c1, _mm512_xor_si512(v1, bias), ones);
            c2 = _mm512_dpwssd_epi32(c2, _mm512_xor_si512(v2, bias), ones);
            c3 = _mm512_dpwssd_epi32(c3, _mm512_xor_si512(v3, bias), ones);
            a += 256;
        }
        if (span >= 256) {
            w = CSUM_WIDEN512(w, _mm512_add_epi32(_mm512_add_epi32(c0, c1),
                                                  _mm512_add_epi32(c2, c3)));
            c0 = c1 = c2 = c3 = _mm512_setzero_si512();
        }
    }
    if (span >= 64) {
        c1 = _mm512_dpwssd_epi32(c1, _mm512_xor_si512(_mm512_load_si512(a), bias), ones);
        nvec++;
        a += 64;
        span -= 64;
        if (span >= 64) {
            c2 = _mm512_dpwssd_epi32(c2, _mm512_xor_si512(_mm512_load_si512(a), bias), ones);
            nvec++;
            a += 64;
            span -= 64;
            if (span >= 64) {
                c3 = _mm512_dpwssd_epi32(c3, _mm512_xor_si512(_mm512_load_si512(a), bias), ones);
                nvec++;
                a += 64;
                span -= 64;
            }
        }
    }
    if (span) {
        __m512i v = _mm512_maskz_loadu_epi8((__mmask64)((1ULL << span) - 1), a);
        c0 = _mm512_dpwssd_epi32(c0, _mm512_xor_si512(v, bias), ones);
        nvec++;
    }
done:
    {
        /* since the last widening each lane of each c gained at most
         * (CSUM_VNNI_FLUSH + 3) * 2^16 in magnitude: their sum fits 32 bits */
        __m512i c = _mm512_add_epi32(_mm512_add_epi32(c0, c1), _mm512_add_epi32(c2, c3));
        int64_t t;
        if (nvec <= 1024) /* never widened, and 16 lanes of < 2^26 fit 32 bits */
            t = _mm512_reduce_add_epi32(c);
        else
            t = _mm512_reduce_add_epi64(CSUM_WIDEN512(w, c));
        /* each vector held 32 words, each short by 0x8000 */
        uint64_t s = (uint64_t)t + (nvec << 20);
        if ((uintptr_t)p & 1)
            s = csum_swap(s);
        return s;
    }
}

#endif /* CSUM_X86 */

/* ---- dispatch ----------------------------------------------------------- */

static int csum_impl_cached = CSUM_IMPL_AUTO;

/* Whether this CPU (and OS) runs kernel impl. */
static int csum_impl_usable(int impl)
{
    switch (impl) {
    case CSUM_IMPL_GENERIC:
        return 1;
#if CSUM_X86
    case CSUM_IMPL_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2");
    case CSUM_IMPL_AVX512:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("avx512f") &&
               __builtin_cpu_supports("avx512bw");
    case CSUM_IMPL_AVX512VNNI:
        return csum_impl_usable(CSUM_IMPL_AVX512) && __builtin_cpu_supports("avx512vnni");
#endif
    default:
        return 0;
    }
}

/* The best kernel this CPU runs (decided once). */
static inline int csum_impl_best(void)
{
    int impl = __atomic_load_n(&csum_impl_cached, __ATOMIC_RELAXED);
    if (__builtin_expect(impl < 0, 0)) {
        impl = CSUM_IMPL_GENERIC;
        for (int i = CSUM_NIMPL - 1; i > CSUM_IMPL_GENERIC; i--)
            if (csum_impl_usable(i)) {
                impl = i;
                break;
            }
        /* every thread that races here stores the same value */
        __atomic_store_n(&csum_impl_cached, impl, __ATOMIC_RELAXED);
    }
    return impl;
}

static const char *const csum_impl_names[CSUM_NIMPL] = {"generic", "avx2", "avx512", "avx512vnni"};

/* Little-endian sum of n <= CSUM_CHUNK bytes with kernel impl (usable). */
static inline uint64_t csum_sum_kernel(int impl, const unsigned char *p, size_t n)
{
#if CSUM_X86
    if (impl == CSUM_IMPL_AVX512VNNI)
        return csum_sum_avx512vnni(p, n);
    if (impl == CSUM_IMPL_AVX512)
        return csum_sum_avx512(p, n);
    if (impl == CSUM_IMPL_AVX2)
        return csum_sum_avx2(p, n);
#endif
    (void)impl;
    return csum_sum_generic(p, n);
}

static inline uint64_t csum_copy_kernel(int impl, unsigned char *d, const unsigned char *p, size_t n)
{
#if CSUM_X86
    if (impl >= CSUM_IMPL_AVX512)
        return csum_copy_avx512(d, p, n);
    if (impl == CSUM_IMPL_AVX2)
        return csum_copy_avx2(d, p, n);
#endif
    (void)impl;
    return csum_copy_generic(d, p, n);
}

/* Network-convention partial sum of a little-endian kernel sum plus initial. */
static inline uint32_t csum_combine(uint64_t le_sum, uint32_t initial)
{
    return csum_fold64((uint64_t)csum_swap(le_sum) + initial);
}

/* ---- the API ------------------------------------------------------------ */

/* Sum (dst NULL) or copy-and-sum (dst not NULL) n bytes with kernel impl
 * (CSUM_IMPL_AUTO: the best; others must be csum_impl_usable), a chunk of at
 * most CSUM_CHUNK bytes per kernel call; returns the partial sum plus initial.
 * Chunks are even-sized, so words pair up across them as in one buffer. */
static inline uint32_t csum_chunked(void *dst, const void *src, size_t n, uint32_t initial,
                                    int impl)
{
    unsigned char *d = (unsigned char *)dst;
    const unsigned char *b = (const unsigned char *)src;
    uint64_t s = 0;
    if (impl < 0) {
        impl = csum_impl_best();
        /* below this the VNNI kernel's longer dependency chains cost more
         * than its fewer operations save */
        if (impl == CSUM_IMPL_AVX512VNNI && n < CSUM_VNNI_MIN)
            impl = CSUM_IMPL_AVX512;
    }
    for (;;) {
        size_t k = n < CSUM_CHUNK ? n : CSUM_CHUNK;
        /* folded per chunk: s cannot overflow whatever n is */
        s += csum_fold32(d ? csum_copy_kernel(impl, d, b, k) : csum_sum_kernel(impl, b, k));
        n -= k;
        if (n == 0)
            break;
        b += k;
        if (d)
            d += k;
    }
    return csum_combine(s, initial);
}

static inline uint32_t csum_partial_impl(const void *p, size_t n, uint32_t initial, int impl)
{
    return csum_chunked(NULL, p, n, initial, impl);
}

/* Partial sum (network convention, folded to 16 bits, uncomplemented) of the
 * n bytes at p plus the 32-bit sum initial.  Any alignment, any n. */
static inline uint32_t csum_partial(const void *p, size_t n, uint32_t initial)
{
    if (n <= CSUM_SMALL)
        return csum_combine(csum_sum_small((const unsigned char *)p, n), initial);
    return csum_partial_impl(p, n, initial, CSUM_IMPL_AUTO);
}

static inline uint32_t csum_partial_copy_impl(void *dst, const void *src, size_t n,
                                              uint32_t initial, int impl)
{
    return csum_chunked(dst, src, n, initial, impl);
}

/* Copy n bytes from src to dst (which must not overlap) and return the
 * partial sum of them plus initial, reading and writing each byte once. */
static inline uint32_t csum_partial_copy(void *dst, const void *src, size_t n, uint32_t initial)
{
    if (n <= CSUM_SMALL)
        return csum_combine(
            csum_copy_small((unsigned char *)dst, (const unsigned char *)src, n), initial);
    return csum_partial_copy_impl(dst, src, n, initial, CSUM_IMPL_AUTO);
}

/* The checksum of n bytes at p starting from initial: 0 over a header whose
 * checksum field is right. */
static inline uint16_t csum_compute(const void *p, size_t n, uint32_t initial)
{
    return (uint16_t)~csum_partial(p, n, initial);
}

/* RFC 1624 eqn. 3: the checksum after a 16-bit word changes from old16 to
 * new16, HC' = ~(~HC + ~m + m'); unlike eqn. 2 it never yields a -0 the full
 * computation would not. */
static inline uint16_t csum_update16(uint16_t check, uint16_t old16, uint16_t new16)
{
    uint32_t s = (uint32_t)(uint16_t)~check + (uint16_t)~old16 + new16;
    return (uint16_t)~csum_fold64(s);
}

/* The same for a 32-bit field (two words; the value as read big-endian). */
static inline uint16_t csum_update32(uint16_t check, uint32_t old32, uint32_t new32)
{
    uint64_t s = (uint64_t)(uint16_t)~check + (uint16_t)~(old32 >> 16) +
                 (uint16_t)~(old32 & 0xffff) + (new32 >> 16) + (new32 & 0xffff);
    return (uint16_t)~csum_fold64(s);
}

static inline uint64_t csum_be32(const uint8_t *p)
{
    return ((uint64_t)p[0] << 24) | ((uint64_t)p[1] << 16) | ((uint64_t)p[2] << 8) | p[3];
}

/* Partial sum of the IPv4 pseudo-header (RFC 768; RFC 793 section 3.1):
 * source and destination address (4 bytes each, as on the wire), a zero
 * byte, the protocol and the 16-bit L4 length (header + data, in bytes). */
static inline uint32_t csum_pseudo_v4(const uint8_t *src, const uint8_t *dst, uint8_t proto,
                                      uint16_t length)
{
    /* a big-endian 32-bit value is congruent to the sum of its two words */
    return csum_fold64(csum_be32(src) + csum_be32(dst) + proto + length);
}

/* Partial sum of the IPv6 pseudo-header (RFC 8200 section 8.1): source and
 * destination address (16 bytes each), the 32-bit upper-layer packet length,
 * three zero bytes and the next-header value. */
static inline uint32_t csum_pseudo_v6(const uint8_t *src, const uint8_t *dst,
                                      uint8_t next_header, uint32_t length)
{
    uint64_t s = (uint64_t)next_header + length;
    for (int i = 0; i < 16; i += 4)
        s += csum_be32(src + i) + csum_be32(dst + i);
    return csum_fold64(s);
}

#endif /* FASTPROTO_CSUM_H */
