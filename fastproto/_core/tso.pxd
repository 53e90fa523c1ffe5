# C-level TCP segmentation offload (TSO), for cimport by transmit paths.
#
#     from fastproto._core.tso cimport tso_tmpl_t, tso_tmpl_init, tso_frame_len, tso_frame
#     cdef tso_tmpl_t t
#     tso_tmpl_init(&t, l2, l2len, src, dst, 4, sport, dport, ack, window, opts, olen)
#     with nogil:
#         n = tso_frame(out, &t, seq, flags, payload, plen)   # one frame into out
#
# A template holds what every frame of one large send shares (link header,
# addresses, ports, ACK, window, options) and the partial sum of their
# fixed part; tso_frame lays one frame out and fills in its lengths,
# sequence number, flags and both checksums.  All nogil, thread-safe on
# distinct templates.  See docs/tcp.md ("Segmentation and coalescing").

from libc.stdint cimport uint8_t, uint16_t, uint32_t


cdef struct tso_tmpl_t:
    uint8_t l2[14]          # Ethernet header (dst MAC, src MAC, type), if l2len
    uint8_t l2len           # 14, or 0 for bare IP packets
    uint8_t v4              # 1: IPv4, 0: IPv6
    uint8_t src[16]         # addresses as on the wire (4 or 16 bytes used)
    uint8_t dst[16]
    uint16_t sport, dport   # host order
    uint32_t ack
    uint16_t window         # the 16-bit field, already scaled
    uint8_t opts[40]
    uint8_t olen            # a multiple of 4, at most 40
    uint32_t fixed_sum      # pseudo-header addresses + protocol, ports, ACK, window, options


cdef int tso_tmpl_init(tso_tmpl_t *t, const uint8_t *l2, size_t l2len, const uint8_t *src,
                       const uint8_t *dst, size_t alen, uint16_t sport, uint16_t dport,
                       uint32_t ack, uint16_t window, const uint8_t *opts,
                       size_t olen) noexcept nogil
cdef size_t tso_frame_len(const tso_tmpl_t *t, size_t plen) noexcept nogil
cdef size_t tso_frame(uint8_t *out, const tso_tmpl_t *t, uint32_t seq, uint16_t flags,
                      const uint8_t *payload, size_t plen) noexcept nogil
