/*
 * SipHash-c-d (Aumasson and Bernstein, "SipHash: a fast short-input PRF",
 * INDOCRYPT 2012), 64-bit output, written from the paper's specification.
 *
 * The pcbtable hashes with SipHash-1-3: one compression round per 8-byte word
 * and three finalization rounds.  Its inputs are short (4 to 37 bytes), so the
 * finalization dominates and -1-3 costs about half of -2-4.  A hash-table key
 * needs the PRF property only against an attacker who sees at most which
 * packets were slow (no outputs), and -1-3 is what CPython's str hash, Rust's
 * HashMap and Linux's hsiphash (on 64-bit) use for that job.  The generic
 * siphash() below also computes -2-4, so the tests can check the
 * implementation against the paper's vectors.
 *
 * All words are little-endian, as in the paper: the byte string m_0..m_{n-1}
 * is cut into 8-byte words read little-endian; the last word holds the
 * remaining bytes and (n mod 256) in its most significant byte.
 */
#ifndef FASTPROTO_SIPHASH_H
#define FASTPROTO_SIPHASH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct sip_key {
    uint64_t k0, k1;
} sip_key;

typedef struct sip_state {
    uint64_t v0, v1, v2, v3;
} sip_state;

#define SIP_ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

/* One SipRound (paper, Section 2, Figure 2). */
#define SIP_ROUND(s)                                                   \
    do {                                                               \
        (s).v0 += (s).v1; (s).v1 = SIP_ROTL((s).v1, 13); (s).v1 ^= (s).v0; \
        (s).v0 = SIP_ROTL((s).v0, 32);                                 \
        (s).v2 += (s).v3; (s).v3 = SIP_ROTL((s).v3, 16); (s).v3 ^= (s).v2; \
        (s).v0 += (s).v3; (s).v3 = SIP_ROTL((s).v3, 21); (s).v3 ^= (s).v0; \
        (s).v2 += (s).v1; (s).v1 = SIP_ROTL((s).v1, 17); (s).v1 ^= (s).v2; \
        (s).v2 = SIP_ROTL((s).v2, 32);                                 \
    } while (0)

static inline uint64_t sip_load_le64(const uint8_t *p)
{
    uint64_t w;
    memcpy(&w, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    w = __builtin_bswap64(w);
#endif
    return w;
}

static inline sip_key sip_key_from_bytes(const uint8_t k[16])
{
    sip_key key;
    key.k0 = sip_load_le64(k);
    key.k1 = sip_load_le64(k + 8);
    return key;
}

/* Initialization: the constants spell "somepseudorandomlygeneratedbytes". */
static inline sip_state sip_init(sip_key key)
{
    sip_state s;
    s.v0 = key.k0 ^ 0x736f6d6570736575ULL;
    s.v1 = key.k1 ^ 0x646f72616e646f6dULL;
    s.v2 = key.k0 ^ 0x6c7967656e657261ULL;
    s.v3 = key.k1 ^ 0x7465646279746573ULL;
    return s;
}

/* Compression with SipHash-1-x: one round per message word. */
static inline void sip13_word(sip_state *s, uint64_t m)
{
    s->v3 ^= m;
    SIP_ROUND(*s);
    s->v0 ^= m;
}

/* Finalization of SipHash-x-3. */
static inline uint64_t sip13_final(sip_state *s)
{
    s->v2 ^= 0xff;
    SIP_ROUND(*s);
    SIP_ROUND(*s);
    SIP_ROUND(*s);
    return s->v0 ^ s->v1 ^ s->v2 ^ s->v3;
}

/*
 * SipHash-c-d of an arbitrary byte string: the reference form, used by the
 * tests (with c=2, d=4 against the paper's vectors, and c=1, d=3 against the
 * word-level functions the table uses).
 */
static inline uint64_t siphash(sip_key key, const uint8_t *msg, size_t len, int c, int d)
{
    sip_state s = sip_init(key);
    size_t full = len & ~(size_t)7;
    size_t i;
    int r;
    for (i = 0; i < full; i += 8) {
        uint64_t m = sip_load_le64(msg + i);
        s.v3 ^= m;
        for (r = 0; r < c; r++)
            SIP_ROUND(s);
        s.v0 ^= m;
    }
    /* last word: the 0..7 remaining bytes, then len mod 256 in the top byte */
    uint64_t b = ((uint64_t)(len & 0xff)) << 56;
    size_t rest = len - full;
    for (i = 0; i < rest; i++)
        b |= ((uint64_t)msg[full + i]) << (8 * i);
    s.v3 ^= b;
    for (r = 0; r < c; r++)
        SIP_ROUND(s);
    s.v0 ^= b;
    s.v2 ^= 0xff;
    for (r = 0; r < d; r++)
        SIP_ROUND(s);
    return s.v0 ^ s.v1 ^ s.v2 ^ s.v3;
}

#endif /* FASTPROTO_SIPHASH_H */
