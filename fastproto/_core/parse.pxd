# C-level parser API, for cimport by the receive path (all nogil).
#
#     from fastproto._core.parse cimport parsed_t, parse_frame, PARSE_OK, PARSE_VERIFY_L4
#     cdef parsed_t row
#     with nogil:
#         if parse_frame(frame, length, &row, PARSE_VERIFY_L4) == PARSE_OK: ...
#
# parsed_t is the 128-byte row of PARSED_DTYPE (same offsets, checked at
# import), so a NumPy array of PARSED_DTYPE can be filled in place through
# <parsed_t *>PyArray_DATA(arr).  See docs/parse.md for every field.

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t
from libc.stddef cimport ptrdiff_t


cdef extern from "parse.h" nogil:
    # statuses (uint8 in a row): OK or the reason the frame is rejected
    enum parse_status:
        PARSE_OK
        PARSE_ETH_TRUNCATED
        PARSE_VLAN_TRUNCATED
        PARSE_VLAN_TOO_MANY_TAGS
        PARSE_UNKNOWN_ETHERTYPE
        PARSE_ARP_TRUNCATED
        PARSE_ARP_BAD_FORMAT
        PARSE_ARP_BAD_OPCODE
        PARSE_IP_TRUNCATED
        PARSE_IP_BAD_VERSION
        PARSE_IP_BAD_IHL
        PARSE_IP_BAD_TOTAL_LENGTH
        PARSE_IP_BAD_CHECKSUM
        PARSE_IP_OPTION_BAD
        PARSE_FRAGMENT_BAD_LENGTH
        PARSE_IPV6_TRUNCATED
        PARSE_IPV6_EXT_TRUNCATED
        PARSE_IPV6_EXT_TOO_MANY
        PARSE_IPV6_HBH_NOT_FIRST
        PARSE_IPV6_OPTION_BAD
        PARSE_IPV6_OPTION_UNKNOWN
        PARSE_IPV6_ROUTING_UNSUPPORTED
        PARSE_ICMP_TRUNCATED
        PARSE_ICMPV6_TRUNCATED
        PARSE_UDP_TRUNCATED
        PARSE_UDP_BAD_LENGTH
        PARSE_UDP_ZERO_CHECKSUM
        PARSE_TCP_TRUNCATED
        PARSE_TCP_BAD_DATA_OFFSET
        PARSE_TCP_OPTION_BAD_LENGTH
        PARSE_L4_BAD_CHECKSUM
        PARSE_NSTATUS

    # row flags (parsed_t.flags)
    enum parse_flag:
        PF_VLAN
        PF_SVLAN
        PF_L2_MULTICAST
        PF_L2_BROADCAST
        PF_IP_OPTIONS
        PF_IP_DF
        PF_FRAGMENT
        PF_FRAG_FIRST
        PF_FRAG_LATER
        PF_FRAG_MORE
        PF_IPV6_HBH
        PF_IPV6_ROUTING
        PF_IPV6_FRAG_HDR
        PF_IPV6_DSTOPTS
        PF_IPV6_AH
        PF_L4
        PF_L4_CSUM_OK
        PF_L4_CSUM_NONE
        PF_TCP_MSS
        PF_TCP_WSCALE
        PF_TCP_SACK_PERM
        PF_TCP_SACK
        PF_TCP_TS
        PF_TCP_OPT_IGNORED
        PF_ICMP_ECHO
        PF_NDP
        PF_L4_CSUM_DEFERRED
    int PARSE_NFLAGS

    # parse_frame options
    int PARSE_VERIFY_L4
    int PARSE_DEFER_UDP
    int PARSE_DEFER_TCP
    int PARSE_IPV6_MAX_EXT

    # lengths array element type for parse_batch
    enum parse_len_kind:
        PARSE_LEN_U16
        PARSE_LEN_U32
        PARSE_LEN_U64
        PARSE_LEN_I32
        PARSE_LEN_I64

    const char *const parse_status_names[]
    const char *const parse_flag_names[]

    # One row; the TCP, ICMP and ARP fields share bytes 80..127 (a C union),
    # and tcp_sack[3] shares its bytes with tcp_tsval/tcp_tsecr.
    ctypedef struct parsed_t:
        uint8_t src[16]
        uint8_t dst[16]
        uint32_t flags
        uint32_t frag_id
        uint8_t src_mac[6]
        uint8_t dst_mac[6]
        uint16_t ethertype
        uint16_t vlan_tci
        uint16_t svlan_tci
        uint16_t l3_off
        uint16_t l4_off
        uint16_t payload_off
        uint16_t payload_len
        uint16_t sport
        uint16_t dport
        uint16_t frag_off
        uint8_t status
        uint8_t ip_version
        uint8_t ttl
        uint8_t proto
        uint8_t tclass
        uint8_t tcp_wscale
        uint16_t tcp_flags
        uint32_t tcp_seq
        uint32_t tcp_ack
        uint16_t tcp_window
        uint16_t tcp_urgent
        uint16_t tcp_mss
        uint8_t tcp_sack_count
        uint8_t tcp_doff
        uint32_t tcp_sack[4][2]
        uint32_t tcp_tsval
        uint32_t tcp_tsecr
        uint8_t icmp_type
        uint8_t icmp_code
        uint16_t icmp_id
        uint16_t icmp_seq
        uint16_t arp_op
        uint8_t arp_sha[6]
        uint8_t arp_tha[6]

    # Parse len bytes at frame into *out (all of it written); returns the
    # status (also out.status).  flags: 0, PARSE_VERIFY_L4, or that | PARSE_DEFER_UDP
    # (whole UDP datagrams' checksums left to the payload copy) | PARSE_DEFER_TCP
    # (TCP segments with data but no SYN/RST: PF_L4_CSUM_DEFERRED on the row).
    int parse_frame(const uint8_t *frame, size_t len, parsed_t *out, int flags)

    # n frames of a buffer pool: frame i is row handles[i] (i if handles is
    # NULL) of nrows rows of row_size bytes, row_stride apart from base, and
    # lengths[i] (of length_kind) bytes long.  Returns -1, or the index of
    # the first entry with a handle >= nrows or a length < 0 or > row_size
    # (entries before it are parsed).
    ptrdiff_t parse_batch(const uint8_t *base, size_t nrows, size_t row_size,
                          ptrdiff_t row_stride, const uint64_t *handles,
                          const void *lengths, int length_kind, size_t n,
                          parsed_t *out, int flags)

    # internal helpers the tests reach through the module
    uint64_t parse_sum(const uint8_t *p, size_t n, uint64_t acc)
    uint16_t parse_sum_fold(uint64_t acc)
