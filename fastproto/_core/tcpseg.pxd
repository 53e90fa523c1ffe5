# C-level TCP segment checksums, for cimport by the receive path (all nogil).
#
#     from fastproto._core.tcpseg cimport tcpseg_csum_ok, tcpseg_copy_verified
#     with nogil:
#         ok = tcpseg_copy_verified(dst, row, frame)   # dst gets row.payload_len bytes
#
# ``row`` is the parser's row of the frame at ``frame`` (parse.pxd parsed_t,
# status OK, a TCP segment that is not an IP fragment); the checksum covers
# the pseudo-header (RFC 9293 3.1; RFC 8200 8.1 for IPv6), the TCP header as
# it is in the frame, and the payload.  The header is read again from the
# frame (a few dozen bytes, in cache); the payload is read once, while it is
# copied.  The module's Python function is tcp_fields (tcpseg.pyx).

from libc.stdint cimport uint8_t, uint16_t, uint32_t

from fastproto._core.checksum cimport (csum_finish, csum_partial, csum_partial_copy,
                                      csum_pseudo_v4, csum_pseudo_v6)
from fastproto._core.parse cimport parsed_t


cdef inline uint32_t tcpseg_header_sum(const parsed_t *row, const uint8_t *frame) noexcept nogil:
    """Partial sum of the pseudo-header and the TCP header of the segment
    (its checksum field included): everything but the payload."""
    cdef uint32_t hlen = <uint32_t>row.payload_off - row.l4_off
    cdef uint32_t tlen = hlen + row.payload_len
    cdef uint32_t s
    if row.ip_version == 4:
        # rows hold IPv4 addresses in the last 4 of their 16 bytes
        s = csum_pseudo_v4(row.src + 12, row.dst + 12, 6, <uint16_t>tlen)
    else:
        s = csum_pseudo_v6(row.src, row.dst, 6, tlen)
    # the header is a multiple of 4 bytes: the payload's sum chains after it
    return csum_partial(frame + row.l4_off, hlen, s)


cdef inline bint tcpseg_csum_ok(const parsed_t *row, const uint8_t *frame) noexcept nogil:
    """Whether the segment's TCP checksum is right (reads the payload)."""
    return csum_finish(csum_partial(frame + row.payload_off, row.payload_len,
                                    tcpseg_header_sum(row, frame))) == 0


cdef inline bint tcpseg_copy_verified(void *dst, const parsed_t *row,
                                      const uint8_t *frame) noexcept nogil:
    """Copy the segment's payload to ``dst`` and say whether its TCP checksum
    is right, in one pass over the payload (``dst`` is written either way)."""
    return csum_finish(csum_partial_copy(dst, frame + row.payload_off, row.payload_len,
                                         tcpseg_header_sum(row, frame))) == 0
