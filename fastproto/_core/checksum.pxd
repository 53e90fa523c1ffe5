# C-level Internet checksum API, for cimport by the parser and the L4 code.
#
#     from fastproto._core.checksum cimport csum_partial, csum_finish, csum_pseudo_v4
#     with nogil:
#         ok = csum_finish(csum_partial(ip, ihl * 4, 0)) == 0
#         check = csum_finish(csum_partial(l4, l4len, csum_pseudo_v4(src, dst, 6, l4len)))
#
# Everything is declared from csum.h, so a cimporting module compiles these
# inline; all are nogil and thread-safe.  Sums are in network convention (the
# value a big-endian 16-bit word sum gives): a "partial sum" is folded to 16
# bits and not complemented, a "checksum" is its complement (store it
# big-endian).  Any 32-bit sum may be passed as `initial`; partial sums chain
# over pieces of even length.  See docs/checksum.md.

from libc.stdint cimport uint8_t, uint16_t, uint32_t


cdef extern from "csum.h" nogil:
    # Partial sum of n bytes at p (any alignment) plus initial.
    uint32_t csum_partial(const void *p, size_t n, uint32_t initial)
    # Copy n bytes src -> dst (must not overlap) and return their partial sum
    # plus initial; one pass over the data.
    uint32_t csum_partial_copy(void *dst, const void *src, size_t n, uint32_t initial)
    # The checksum: ~csum_partial(p, n, initial); 0 over a correct header.
    uint16_t csum_compute(const void *p, size_t n, uint32_t initial)
    # 32-bit sum -> partial sum (end-around fold, not complemented).
    uint16_t csum_fold(uint32_t sum)
    # 32-bit sum -> checksum (folded and complemented).
    uint16_t csum_finish(uint32_t sum)
    # RFC 1624 eqn. 3: checksum after a 16-bit (32-bit) field changes.
    uint16_t csum_update16(uint16_t check, uint16_t old16, uint16_t new16)
    uint16_t csum_update32(uint16_t check, uint32_t old32, uint32_t new32)
    # Pseudo-header partial sums, addresses as on the wire (4 or 16 bytes).
    uint32_t csum_pseudo_v4(const uint8_t *src, const uint8_t *dst, uint8_t proto,
                            uint16_t length)
    uint32_t csum_pseudo_v6(const uint8_t *src, const uint8_t *dst, uint8_t next_header,
                            uint32_t length)
