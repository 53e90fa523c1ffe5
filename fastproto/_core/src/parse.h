/*
 * Header parsing of received Ethernet frames into fixed 128-byte rows.
 *
 * parse_frame() reads one frame (Ethernet II, 802.1Q / 802.1ad tags, ARP,
 * IPv4 with options and fragments, IPv6 with its extension-header chain,
 * ICMP, ICMPv6, UDP, TCP with options) and fills one parsed_t: the fields
 * the stack's demux and protocol input need, and a status that is either
 * PARSE_OK or the named reason the frame is rejected.  parse_batch() does it
 * for a batch of rows of a buffer pool.
 *
 * Rules that every path keeps:
 *   - the frame length bounds every read (the buffer row behind it may be
 *     longer and is never looked at); lengths inside the packet (IPv4 total
 *     length, IPv6 payload length, UDP length, TCP data offset, option and
 *     extension-header lengths) are checked against what is really there
 *     before they are used, so a lying length is a status, never a read
 *     past the end;
 *   - L4 reads are bounded by the IP length, not the frame length: Ethernet
 *     pads short frames (IEEE 802.3 minimum 60 bytes) and the padding is
 *     not payload;
 *   - the row is zeroed first, so fields a frame does not have read 0, and
 *     a rejected row keeps what was parsed before the failing header.
 *
 * Everything is static inline, free of globals and of the GIL.
 */
#ifndef FASTPROTO_PARSE_H
#define FASTPROTO_PARSE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "csum.h"

/* ---- statuses -------------------------------------------------------- */

/* One value per reason a frame is not delivered; the stack counts each.
 * Keep parse_status_names[] in the same order. */
enum parse_status {
    PARSE_OK = 0,
    PARSE_ETH_TRUNCATED,          /* fewer than 14 bytes */
    PARSE_VLAN_TRUNCATED,         /* frame ends inside a VLAN tag */
    PARSE_VLAN_TOO_MANY_TAGS,     /* a tag after the C-tag, or a second S-tag */
    PARSE_UNKNOWN_ETHERTYPE,      /* not ARP, IPv4 or IPv6 (also 802.3 lengths) */
    PARSE_ARP_TRUNCATED,          /* fewer than 28 bytes of ARP */
    PARSE_ARP_BAD_FORMAT,         /* not Ethernet/IPv4 (htype 1, ptype 0x0800, 6, 4) */
    PARSE_ARP_BAD_OPCODE,         /* op not request (1) or reply (2) */
    PARSE_IP_TRUNCATED,           /* frame ends before 20 bytes or before total length */
    PARSE_IP_BAD_VERSION,         /* version field disagrees with the EtherType */
    PARSE_IP_BAD_IHL,             /* IHL < 5 */
    PARSE_IP_BAD_TOTAL_LENGTH,    /* total length < IHL * 4 */
    PARSE_IP_BAD_CHECKSUM,        /* IPv4 header checksum */
    PARSE_IP_OPTION_BAD,          /* option length missing, < 2 or past the header */
    PARSE_FRAGMENT_BAD_LENGTH,    /* offset + length > 65535; IPv6: non-last not 8n */
    PARSE_IPV6_TRUNCATED,         /* frame ends before 40 bytes or before payload length */
    PARSE_IPV6_EXT_TRUNCATED,     /* extension header runs past the payload */
    PARSE_IPV6_EXT_TOO_MANY,      /* more than PARSE_IPV6_MAX_EXT extension headers */
    PARSE_IPV6_HBH_NOT_FIRST,     /* Hop-by-Hop header not right after the IPv6 header */
    PARSE_IPV6_OPTION_BAD,        /* HBH/DestOpt TLV runs past its header */
    PARSE_IPV6_OPTION_UNKNOWN,    /* unrecognised option whose type says discard */
    PARSE_IPV6_ROUTING_UNSUPPORTED, /* Routing header with Segments Left != 0 */
    PARSE_ICMP_TRUNCATED,         /* fewer than 8 bytes of ICMP */
    PARSE_ICMPV6_TRUNCATED,       /* fewer than 8 bytes of ICMPv6 */
    PARSE_UDP_TRUNCATED,          /* fewer than 8 bytes of UDP */
    PARSE_UDP_BAD_LENGTH,         /* UDP length < 8 or > IP payload */
    PARSE_UDP_ZERO_CHECKSUM,      /* UDP over IPv6 with checksum 0 */
    PARSE_TCP_TRUNCATED,          /* fewer than 20 bytes of TCP */
    PARSE_TCP_BAD_DATA_OFFSET,    /* data offset < 5 or past the segment */
    PARSE_TCP_OPTION_BAD_LENGTH,  /* option length missing, < 2 or past the header */
    PARSE_L4_BAD_CHECKSUM,        /* TCP/UDP/ICMP/ICMPv6 checksum (verify_l4) */
    PARSE_NSTATUS
};

static const char *const parse_status_names[PARSE_NSTATUS] = {
    "OK",
    "ETH_TRUNCATED",
    "VLAN_TRUNCATED",
    "VLAN_TOO_MANY_TAGS",
    "UNKNOWN_ETHERTYPE",
    "ARP_TRUNCATED",
    "ARP_BAD_FORMAT",
    "ARP_BAD_OPCODE",
    "IP_TRUNCATED",
    "IP_BAD_VERSION",
    "IP_BAD_IHL",
    "IP_BAD_TOTAL_LENGTH",
    "IP_BAD_CHECKSUM",
    "IP_OPTION_BAD",
    "FRAGMENT_BAD_LENGTH",
    "IPV6_TRUNCATED",
    "IPV6_EXT_TRUNCATED",
    "IPV6_EXT_TOO_MANY",
    "IPV6_HBH_NOT_FIRST",
    "IPV6_OPTION_BAD",
    "IPV6_OPTION_UNKNOWN",
    "IPV6_ROUTING_UNSUPPORTED",
    "ICMP_TRUNCATED",
    "ICMPV6_TRUNCATED",
    "UDP_TRUNCATED",
    "UDP_BAD_LENGTH",
    "UDP_ZERO_CHECKSUM",
    "TCP_TRUNCATED",
    "TCP_BAD_DATA_OFFSET",
    "TCP_OPTION_BAD_LENGTH",
    "L4_BAD_CHECKSUM",
};

/* ---- row flags --------------------------------------------------------- */

enum parse_flag {
    PF_VLAN           = 1u << 0,  /* 802.1Q C-tag (TPID 0x8100): vlan_tci */
    PF_SVLAN          = 1u << 1,  /* 802.1ad S-tag (TPID 0x88a8): svlan_tci */
    PF_L2_MULTICAST   = 1u << 2,  /* group bit of the destination MAC */
    PF_L2_BROADCAST   = 1u << 3,  /* destination ff:ff:ff:ff:ff:ff */
    PF_IP_OPTIONS     = 1u << 4,  /* IPv4 options present (walked, valid) */
    PF_IP_DF          = 1u << 5,  /* IPv4 Don't Fragment */
    PF_FRAGMENT       = 1u << 6,  /* part of a fragmented datagram */
    PF_FRAG_FIRST     = 1u << 7,  /* fragment at offset 0 */
    PF_FRAG_LATER     = 1u << 8,  /* fragment at offset > 0: no L4 header here */
    PF_FRAG_MORE      = 1u << 9,  /* More Fragments */
    PF_IPV6_HBH       = 1u << 10, /* Hop-by-Hop Options header */
    PF_IPV6_ROUTING   = 1u << 11, /* Routing header (Segments Left 0) */
    PF_IPV6_FRAG_HDR  = 1u << 12, /* Fragment header (also atomic fragments) */
    PF_IPV6_DSTOPTS   = 1u << 13, /* Destination Options header */
    PF_IPV6_AH        = 1u << 14, /* Authentication Header */
    PF_L4             = 1u << 15, /* TCP/UDP/ICMP/ICMPv6 header parsed */
    PF_L4_CSUM_OK     = 1u << 16, /* L4 checksum verified and correct */
    PF_L4_CSUM_NONE   = 1u << 17, /* UDP over IPv4 without checksum (field 0) */
    PF_TCP_MSS        = 1u << 18, /* tcp_mss */
    PF_TCP_WSCALE     = 1u << 19, /* tcp_wscale */
    PF_TCP_SACK_PERM  = 1u << 20, /* SACK-permitted */
    PF_TCP_SACK       = 1u << 21, /* tcp_sack_count / tcp_sack */
    PF_TCP_TS         = 1u << 22, /* tcp_tsval / tcp_tsecr */
    PF_TCP_OPT_IGNORED = 1u << 23, /* a known option with the wrong length */
    PF_ICMP_ECHO      = 1u << 24, /* echo request/reply: icmp_id / icmp_seq */
    PF_NDP            = 1u << 25, /* ICMPv6 Neighbor Discovery, types 133-137 */
    PF_L4_CSUM_DEFERRED = 1u << 26, /* TCP: checksum left to the payload copy */
};
#define PARSE_NFLAGS 27

static const char *const parse_flag_names[PARSE_NFLAGS] = {
    "VLAN", "SVLAN", "L2_MULTICAST", "L2_BROADCAST", "IP_OPTIONS", "IP_DF",
    "FRAGMENT", "FRAG_FIRST", "FRAG_LATER", "FRAG_MORE", "IPV6_HBH",
    "IPV6_ROUTING", "IPV6_FRAG_HDR", "IPV6_DSTOPTS", "IPV6_AH", "L4",
    "L4_CSUM_OK", "L4_CSUM_NONE", "TCP_MSS", "TCP_WSCALE", "TCP_SACK_PERM",
    "TCP_SACK", "TCP_TS", "TCP_OPT_IGNORED", "ICMP_ECHO", "NDP", "L4_CSUM_DEFERRED",
};

/* parse_frame() options.  PARSE_DEFER_UDP (with PARSE_VERIFY_L4) leaves the
 * checksum of a whole UDP datagram to whoever copies its payload out, who
 * verifies it in the same pass (checksum-on-copy): such a row has neither
 * PF_L4_CSUM_OK nor PF_L4_CSUM_NONE.  PARSE_DEFER_TCP does the same for a
 * whole TCP segment that carries data and neither SYN nor RST: its row has
 * PF_L4_CSUM_DEFERRED instead of PF_L4_CSUM_OK.  Segments without data (and
 * SYNs, RSTs) are still verified here: header only, and they change state
 * with nothing to copy. */
enum { PARSE_VERIFY_L4 = 1, PARSE_DEFER_UDP = 2, PARSE_DEFER_TCP = 4 };

/* A chain longer than this is rejected (PARSE_IPV6_EXT_TOO_MANY): RFC 8200
 * section 4.1 recommends each header at most once (Destination Options at
 * most twice), which makes 7 at most in a sane packet. */
#define PARSE_IPV6_MAX_EXT 8

/* ---- the row ----------------------------------------------------------- */

/* Naturally aligned, no padding the compiler could choose: the NumPy dtype
 * in parse.pyx names the same offsets, and both are checked at import.
 * Multi-byte fields are host order; addresses and MACs are network order
 * bytes.  The 48 bytes at 80 hold the fields of one of TCP, ICMP or ARP. */
typedef struct parsed {
    uint8_t  src[16];         /*   0 IPv6, or IPv4-mapped ::ffff:a.b.c.d */
    uint8_t  dst[16];         /*  16 */
    uint32_t flags;           /*  32 PF_* */
    uint32_t frag_id;         /*  36 IPv4 identification / IPv6 fragment id */
    uint8_t  src_mac[6];      /*  40 */
    uint8_t  dst_mac[6];      /*  46 */
    uint16_t ethertype;       /*  52 after the tags */
    uint16_t vlan_tci;        /*  54 */
    uint16_t svlan_tci;       /*  56 */
    uint16_t l3_off;          /*  58 */
    uint16_t l4_off;          /*  60 */
    uint16_t payload_off;     /*  62 */
    uint16_t payload_len;     /*  64 */
    uint16_t sport;           /*  66 */
    uint16_t dport;           /*  68 */
    uint16_t frag_off;        /*  70 bytes */
    uint8_t  status;          /*  72 enum parse_status */
    uint8_t  ip_version;      /*  73 */
    uint8_t  ttl;             /*  74 TTL / Hop Limit */
    uint8_t  proto;           /*  75 L4 protocol (after the IPv6 chain) */
    uint8_t  tclass;          /*  76 TOS / Traffic Class (DSCP and ECN) */
    uint8_t  tcp_wscale;      /*  77 */
    uint16_t tcp_flags;       /*  78 low 12 bits of TCP header bytes 12-13 */
    union {
        struct {
            uint32_t tcp_seq;         /*  80 */
            uint32_t tcp_ack;         /*  84 */
            uint16_t tcp_window;      /*  88 unscaled */
            uint16_t tcp_urgent;      /*  90 */
            uint16_t tcp_mss;         /*  92 */
            uint8_t  tcp_sack_count;  /*  94 */
            uint8_t  tcp_doff;        /*  95 data offset, 32-bit words */
            /* 40 bytes of option space hold four SACK blocks or
             * timestamps and at most three blocks, never both (RFC 2018
             * section 3), so the fourth block shares its bytes with
             * TSval/TSecr. */
            union {
                uint32_t tcp_sack[4][2];          /* 96 left, right edges */
                struct {
                    uint32_t tcp_sack_head_[6];
                    uint32_t tcp_tsval;           /* 120 */
                    uint32_t tcp_tsecr;           /* 124 */
                };
            };
        };
        struct {
            uint8_t  icmp_type;       /*  80 */
            uint8_t  icmp_code;       /*  81 */
            uint16_t icmp_id;         /*  82 echo only */
            uint16_t icmp_seq;        /*  84 echo only */
        };
        struct {
            uint16_t arp_op;          /*  80 */
            uint8_t  arp_sha[6];      /*  82 */
            uint8_t  arp_tha[6];      /*  88 */
        };
    };
} parsed_t;

#define PARSE_CHECK_OFF(f, o) _Static_assert(offsetof(parsed_t, f) == (o), #f)
PARSE_CHECK_OFF(src, 0);          PARSE_CHECK_OFF(dst, 16);
PARSE_CHECK_OFF(flags, 32);       PARSE_CHECK_OFF(frag_id, 36);
PARSE_CHECK_OFF(src_mac, 40);     PARSE_CHECK_OFF(dst_mac, 46);
PARSE_CHECK_OFF(ethertype, 52);   PARSE_CHECK_OFF(vlan_tci, 54);
PARSE_CHECK_OFF(svlan_tci, 56);   PARSE_CHECK_OFF(l3_off, 58);
PARSE_CHECK_OFF(l4_off, 60);      PARSE_CHECK_OFF(payload_off, 62);
PARSE_CHECK_OFF(payload_len, 64); PARSE_CHECK_OFF(sport, 66);
PARSE_CHECK_OFF(dport, 68);       PARSE_CHECK_OFF(frag_off, 70);
PARSE_CHECK_OFF(status, 72);      PARSE_CHECK_OFF(ip_version, 73);
PARSE_CHECK_OFF(ttl, 74);         PARSE_CHECK_OFF(proto, 75);
PARSE_CHECK_OFF(tclass, 76);      PARSE_CHECK_OFF(tcp_wscale, 77);
PARSE_CHECK_OFF(tcp_flags, 78);   PARSE_CHECK_OFF(tcp_seq, 80);
PARSE_CHECK_OFF(tcp_ack, 84);     PARSE_CHECK_OFF(tcp_window, 88);
PARSE_CHECK_OFF(tcp_urgent, 90);  PARSE_CHECK_OFF(tcp_mss, 92);
PARSE_CHECK_OFF(tcp_sack_count, 94); PARSE_CHECK_OFF(tcp_doff, 95);
PARSE_CHECK_OFF(tcp_sack, 96);
PARSE_CHECK_OFF(tcp_tsval, 120);  PARSE_CHECK_OFF(tcp_tsecr, 124);
PARSE_CHECK_OFF(icmp_type, 80);   PARSE_CHECK_OFF(icmp_code, 81);
PARSE_CHECK_OFF(icmp_id, 82);     PARSE_CHECK_OFF(icmp_seq, 84);
PARSE_CHECK_OFF(arp_op, 80);      PARSE_CHECK_OFF(arp_sha, 82);
PARSE_CHECK_OFF(arp_tha, 88);
_Static_assert(sizeof(parsed_t) == 128, "parsed_t is two cache lines");
#undef PARSE_CHECK_OFF

/* ---- wire access --------------------------------------------------------- */

#define PARSE_LIKELY(x) __builtin_expect(!!(x), 1)
#define PARSE_UNLIKELY(x) __builtin_expect(!!(x), 0)

enum {
    ETHERTYPE_IPV4 = 0x0800,
    ETHERTYPE_ARP = 0x0806,
    ETHERTYPE_VLAN = 0x8100,
    ETHERTYPE_QINQ = 0x88a8,
    ETHERTYPE_IPV6 = 0x86dd,
};

enum {
    IPPROTO_HOPOPTS_ = 0, IPPROTO_ICMP_ = 1, IPPROTO_TCP_ = 6, IPPROTO_UDP_ = 17,
    IPPROTO_ROUTING_ = 43, IPPROTO_FRAGMENT_ = 44, IPPROTO_AH_ = 51,
    IPPROTO_ICMPV6_ = 58, IPPROTO_DSTOPTS_ = 60,
};

static inline uint16_t parse_be16(const uint8_t *p)
{
    return (uint16_t)((unsigned)p[0] << 8 | p[1]);
}

static inline uint32_t parse_be32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    v = __builtin_bswap32(v);
#endif
    return v;
}

static inline void parse_set_v4mapped(uint8_t out[16], const uint8_t *v4)
{
    /* RFC 4291 section 2.5.5.2; bytes 0-9 are already zero */
    out[10] = 0xff;
    out[11] = 0xff;
    memcpy(out + 12, v4, 4);
}

/* ---- Internet checksum (RFC 1071) ----------------------------------------
 * Sums are kept in the machine's byte order: the one's-complement sum is
 * byte-order independent (RFC 1071 section 2(B)), so a packet whose fields
 * (checksum included) add up to 0xffff is correct in either order.  Pseudo-
 * header words are added as they sit in memory for the same reason. */

/* Add n bytes at p to the running sum acc (at most 2^32 words: any frame). */
static inline uint64_t parse_sum(const uint8_t *p, size_t n, uint64_t acc)
{
    uint64_t a = 0, b = 0;
    while (n >= 16) {
        uint64_t x, y;
        memcpy(&x, p, 8);
        memcpy(&y, p + 8, 8);
        a += (x & 0xffffffffu) + (x >> 32);
        b += (y & 0xffffffffu) + (y >> 32);
        p += 16;
        n -= 16;
    }
    acc += a + b;
    if (n >= 8) {
        uint64_t x;
        memcpy(&x, p, 8);
        acc += (x & 0xffffffffu) + (x >> 32);
        p += 8;
        n -= 8;
    }
    if (n >= 4) {
        uint32_t x;
        memcpy(&x, p, 4);
        acc += x;
        p += 4;
        n -= 4;
    }
    if (n >= 2) {
        uint16_t x;
        memcpy(&x, p, 2);
        acc += x;
        p += 2;
        n -= 2;
    }
    if (n) {
        /* the odd byte is the high half of a word padded with zero */
        uint8_t w[2] = {p[0], 0};
        uint16_t x;
        memcpy(&x, w, 2);
        acc += x;
    }
    return acc;
}

/* A 16-bit network-order value as the sum sees it in memory. */
static inline uint64_t parse_sum_word(uint16_t v)
{
    uint8_t w[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    uint16_t x;
    memcpy(&x, w, 2);
    return x;
}

static inline uint16_t parse_sum_fold(uint64_t acc)
{
    uint32_t lo = (uint32_t)acc, hi = (uint32_t)(acc >> 32);
    uint32_t s = lo + hi;
    s += s < hi;                        /* end-around carry */
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    return (uint16_t)s;
}

/* The one place the parser computes checksums: true when the n bytes at p,
 * plus the pseudo-header partial sum pseudo, add up to all ones. */
static inline int parse_csum_ok(const uint8_t *p, size_t n, uint64_t pseudo)
{
    /* The payload goes through the vectorised sum of csum.h, which works in
     * network-order convention; byte-swapping a folded one's-complement sum
     * moves it to the native convention of `pseudo` (RFC 1071 2(B)). */
    uint16_t net = csum_fold(csum_partial(p, n, 0));
    return parse_sum_fold(pseudo + (uint16_t)((net << 8) | (net >> 8))) == 0xffff;
}

/* ---- L4 ------------------------------------------------------------------- */

/* Where the L4 header sits and what its checksum needs. */
typedef struct parse_l4_ctx {
    const uint8_t *l4;     /* first L4 byte */
    size_t len;            /* L4 bytes up to the end of the IP payload */
    const uint8_t *addrs;  /* source then destination address in the header */
    size_t addrs_len;      /* 8 (IPv4) or 32 (IPv6) */
    int v6;
    int fragment;          /* a first fragment: the datagram goes on elsewhere */
    int verify;
    int defer_udp;         /* PARSE_DEFER_UDP: UDP checksums left to the copy */
    int defer_tcp;         /* PARSE_DEFER_TCP: data segments' checksums left to the copy */
} parse_l4_ctx;

static inline uint64_t parse_pseudo(const parse_l4_ctx *c, uint8_t proto, size_t len)
{
    /* RFC 793 3.1 / RFC 768 (IPv4), RFC 8200 8.1 (IPv6): addresses, protocol,
     * upper-layer length (< 65536 here, so its high 16 bits are zero) */
    return parse_sum(c->addrs, c->addrs_len, 0) + parse_sum_word(proto)
           + parse_sum_word((uint16_t)len);
}

/* TCP options, RFC 9293 3.2: EOL ends the list, NOP is one byte, every
 * other kind has a length byte covering kind and length.  A known kind with
 * the wrong length is skipped by its length and flagged (as Linux does); a
 * length that is missing, < 2 or runs past the header rejects the segment
 * (RFC 9293 3.1 "MUST be prepared to handle an illegal option length"). */
static inline int parse_tcp_options(const uint8_t *q, const uint8_t *end, parsed_t *o)
{
    uint32_t fl = 0;
    while (q < end) {
        uint8_t kind = q[0];
        if (kind == 0)
            break;
        if (kind == 1) {
            q++;
            continue;
        }
        if (end - q < 2)
            return PARSE_TCP_OPTION_BAD_LENGTH;
        size_t olen = q[1];
        if (olen < 2 || olen > (size_t)(end - q))
            return PARSE_TCP_OPTION_BAD_LENGTH;
        switch (kind) {
        case 2: /* MSS, RFC 9293 3.7.1 */
            if (olen == 4) {
                o->tcp_mss = parse_be16(q + 2);
                fl |= PF_TCP_MSS;
            } else
                fl |= PF_TCP_OPT_IGNORED;
            break;
        case 3: /* window scale, RFC 7323 2.2 (values > 14 are kept as sent) */
            if (olen == 3) {
                o->tcp_wscale = q[2];
                fl |= PF_TCP_WSCALE;
            } else
                fl |= PF_TCP_OPT_IGNORED;
            break;
        case 4: /* SACK-permitted, RFC 2018 2 */
            if (olen == 2)
                fl |= PF_TCP_SACK_PERM;
            else
                fl |= PF_TCP_OPT_IGNORED;
            break;
        case 5: /* SACK, RFC 2018 3: 2 + 8n bytes; n <= 4 fits 40 bytes */
            if (olen >= 10 && (olen - 2) % 8 == 0) {
                unsigned n = (unsigned)(olen - 2) / 8;
                if (n > 4)
                    n = 4;
                for (unsigned i = 0; i < n; i++) {
                    o->tcp_sack[i][0] = parse_be32(q + 2 + 8 * i);
                    o->tcp_sack[i][1] = parse_be32(q + 6 + 8 * i);
                }
                o->tcp_sack_count = (uint8_t)n;
                fl |= PF_TCP_SACK;
            } else
                fl |= PF_TCP_OPT_IGNORED;
            break;
        case 8: /* timestamps, RFC 7323 3.2 */
            if (olen == 10) {
                o->tcp_tsval = parse_be32(q + 2);
                o->tcp_tsecr = parse_be32(q + 6);
                fl |= PF_TCP_TS;
            } else
                fl |= PF_TCP_OPT_IGNORED;
            break;
        default:
            break;
        }
        q += olen;
    }
    o->flags |= fl;
    return PARSE_OK;
}

static inline int parse_tcp(const parse_l4_ctx *c, parsed_t *o)
{
    const uint8_t *t = c->l4;
    if (PARSE_UNLIKELY(c->len < 20))
        return PARSE_TCP_TRUNCATED;
    o->sport = parse_be16(t);
    o->dport = parse_be16(t + 2);
    o->tcp_seq = parse_be32(t + 4);
    o->tcp_ack = parse_be32(t + 8);
    o->tcp_flags = parse_be16(t + 12) & 0x0fff;
    o->tcp_window = parse_be16(t + 14);
    o->tcp_urgent = parse_be16(t + 18);
    o->tcp_doff = t[12] >> 4;
    size_t doff = (size_t)o->tcp_doff * 4;
    if (PARSE_UNLIKELY(doff < 20 || doff > c->len))
        return PARSE_TCP_BAD_DATA_OFFSET;
    if (doff > 20) {
        int st = parse_tcp_options(t + 20, t + doff, o);
        if (st != PARSE_OK)
            return st;
    }
    o->payload_off = (uint16_t)(o->l4_off + doff);
    o->payload_len = (uint16_t)(c->len - doff);
    if (c->verify && !c->fragment) {
        /* SYN 0x02, RST 0x04: rare, and acted on before any payload is read */
        if (c->defer_tcp && o->payload_len && !(o->tcp_flags & 0x06))
            o->flags |= PF_L4_CSUM_DEFERRED;
        else if (!parse_csum_ok(t, c->len, parse_pseudo(c, IPPROTO_TCP_, c->len)))
            return PARSE_L4_BAD_CHECKSUM;
        else
            o->flags |= PF_L4_CSUM_OK;
    }
    o->flags |= PF_L4;
    return PARSE_OK;
}

static inline int parse_udp(const parse_l4_ctx *c, parsed_t *o)
{
    const uint8_t *u = c->l4;
    if (PARSE_UNLIKELY(c->len < 8))
        return PARSE_UDP_TRUNCATED;
    o->sport = parse_be16(u);
    o->dport = parse_be16(u + 2);
    size_t ulen = parse_be16(u + 4);
    /* RFC 768: the length covers header and data.  A datagram shorter than
     * the IP payload is trimmed to it; a longer one is a lie, unless this
     * is a first fragment and the rest is still to come.  Length 0 (IPv6
     * jumbograms, RFC 2675) is not supported. */
    if (PARSE_UNLIKELY(ulen < 8 || (!c->fragment && ulen > c->len)))
        return PARSE_UDP_BAD_LENGTH;
    o->payload_off = (uint16_t)(o->l4_off + 8);
    o->payload_len = (uint16_t)((c->fragment ? c->len : ulen) - 8);
    uint16_t csum = parse_be16(u + 6);
    if (csum == 0) {
        /* IPv4: no checksum was computed (RFC 768).  IPv6: not allowed;
         * RFC 8200 8.1 says discard, whether or not checksums are verified */
        if (c->v6)
            return PARSE_UDP_ZERO_CHECKSUM;
        o->flags |= PF_L4_CSUM_NONE;
    } else if (c->verify && !c->fragment && !c->defer_udp) {
        if (!parse_csum_ok(u, ulen, parse_pseudo(c, IPPROTO_UDP_, ulen)))
            return PARSE_L4_BAD_CHECKSUM;
        o->flags |= PF_L4_CSUM_OK;
    }
    o->flags |= PF_L4;
    return PARSE_OK;
}

/* ICMP (RFC 792) and ICMPv6 (RFC 4443): every message has at least the
 * 8-byte header (type, code, checksum, 4 bytes that depend on the type). */
static inline int parse_icmp(const parse_l4_ctx *c, parsed_t *o)
{
    const uint8_t *m = c->l4;
    if (PARSE_UNLIKELY(c->len < 8))
        return c->v6 ? PARSE_ICMPV6_TRUNCATED : PARSE_ICMP_TRUNCATED;
    uint8_t type = m[0];
    o->icmp_type = type;
    o->icmp_code = m[1];
    int echo = c->v6 ? (type == 128 || type == 129) : (type == 0 || type == 8);
    if (echo) {
        o->icmp_id = parse_be16(m + 4);
        o->icmp_seq = parse_be16(m + 6);
        o->flags |= PF_ICMP_ECHO;
    }
    if (c->v6 && type >= 133 && type <= 137)  /* RFC 4861 section 4 */
        o->flags |= PF_NDP;
    o->payload_off = (uint16_t)(o->l4_off + 8);
    o->payload_len = (uint16_t)(c->len - 8);
    if (c->verify && !c->fragment) {
        /* ICMPv6 covers a pseudo-header (RFC 4443 2.3), ICMP does not */
        uint64_t pseudo = c->v6 ? parse_pseudo(c, IPPROTO_ICMPV6_, c->len) : 0;
        if (!parse_csum_ok(m, c->len, pseudo))
            return PARSE_L4_BAD_CHECKSUM;
        o->flags |= PF_L4_CSUM_OK;
    }
    o->flags |= PF_L4;
    return PARSE_OK;
}

/* L4 of an unfragmented datagram or a first fragment.  Other protocols
 * (ESP, SCTP, GRE, No Next Header, ...) are left to raw delivery: status
 * OK, payload_off = l4_off, payload_len = the whole IP payload. */
static inline int parse_l4(const parse_l4_ctx *c, parsed_t *o)
{
    switch (o->proto) {
    case IPPROTO_TCP_:
        return parse_tcp(c, o);
    case IPPROTO_UDP_:
        return parse_udp(c, o);
    case IPPROTO_ICMP_:
        return c->v6 ? PARSE_OK : parse_icmp(c, o);
    case IPPROTO_ICMPV6_:
        return c->v6 ? parse_icmp(c, o) : PARSE_OK;
    default:
        return PARSE_OK;
    }
}

/* ---- IPv4 ------------------------------------------------------------------ */

/* RFC 791 3.1: option 0 ends the list, 1 is a one-byte no-op, every other
 * option has a length byte that counts kind and length. */
static inline int parse_ipv4_options(const uint8_t *q, const uint8_t *end)
{
    while (q < end) {
        uint8_t kind = q[0];
        if (kind == 0)
            break;
        if (kind == 1) {
            q++;
            continue;
        }
        if (end - q < 2)
            return PARSE_IP_OPTION_BAD;
        size_t olen = q[1];
        if (olen < 2 || olen > (size_t)(end - q))
            return PARSE_IP_OPTION_BAD;
        q += olen;
    }
    return PARSE_OK;
}

static inline int parse_ipv4(const uint8_t *ip, size_t avail, parsed_t *o, int opts)
{
    if (PARSE_UNLIKELY(avail < 20))
        return PARSE_IP_TRUNCATED;
    o->ip_version = ip[0] >> 4;
    o->tclass = ip[1];
    o->frag_id = parse_be16(ip + 4);
    o->ttl = ip[8];
    o->proto = ip[9];
    parse_set_v4mapped(o->src, ip + 12);
    parse_set_v4mapped(o->dst, ip + 16);
    if (PARSE_UNLIKELY(o->ip_version != 4))
        return PARSE_IP_BAD_VERSION;
    size_t ihl = (size_t)(ip[0] & 15) * 4;
    if (PARSE_UNLIKELY(ihl < 20))
        return PARSE_IP_BAD_IHL;
    size_t tot = parse_be16(ip + 2);
    if (PARSE_UNLIKELY(tot < ihl))
        return PARSE_IP_BAD_TOTAL_LENGTH;
    /* a shorter frame than the total length says: Linux's InTruncatedPkts */
    if (PARSE_UNLIKELY(tot > avail))
        return PARSE_IP_TRUNCATED;
    if (PARSE_UNLIKELY(!parse_csum_ok(ip, ihl, 0)))
        return PARSE_IP_BAD_CHECKSUM;
    uint32_t fl = 0;
    if (ihl > 20) {
        int st = parse_ipv4_options(ip + 20, ip + ihl);
        if (st != PARSE_OK)
            return st;
        fl |= PF_IP_OPTIONS;
    }
    uint16_t fo = parse_be16(ip + 6);
    size_t plen = tot - ihl;
    size_t foff = (size_t)(fo & 0x1fff) * 8;
    if (fo & 0x4000)
        fl |= PF_IP_DF;
    o->l4_off = (uint16_t)(o->l3_off + ihl);
    o->payload_off = o->l4_off;
    o->payload_len = (uint16_t)plen;
    if (fo & 0x3fff) {  /* MF or an offset: RFC 791 3.2 fragmentation */
        fl |= PF_FRAGMENT | (foff ? PF_FRAG_LATER : PF_FRAG_FIRST)
              | ((fo & 0x2000) ? PF_FRAG_MORE : 0);
        o->frag_off = (uint16_t)foff;
        o->flags |= fl;
        /* the reassembled datagram could not be represented (ping of death) */
        if (foff + plen > 65535)
            return PARSE_FRAGMENT_BAD_LENGTH;
        if (foff)
            return PARSE_OK;  /* the L4 header is in the first fragment */
    } else {
        o->flags |= fl;
    }
    parse_l4_ctx c = {
        .l4 = ip + ihl, .len = plen, .addrs = ip + 12, .addrs_len = 8, .v6 = 0,
        .fragment = (fo & 0x2000) != 0, .verify = opts & PARSE_VERIFY_L4,
        .defer_udp = opts & PARSE_DEFER_UDP, .defer_tcp = opts & PARSE_DEFER_TCP,
    };
    return parse_l4(&c, o);
}

/* ---- IPv6 ------------------------------------------------------------------ */

/* Hop-by-Hop and Destination Options TLVs, RFC 8200 4.2: Pad1 is one byte,
 * every other option has a length byte.  The two high bits of an
 * unrecognised option's type say what to do; every option this stack does
 * not act on is unrecognised, so only "skip" (00) passes.  Jumbo Payload
 * (0xC2, RFC 2675) is therefore rejected: Ethernet cannot carry one. */
static inline int parse_ipv6_options(const uint8_t *q, const uint8_t *end)
{
    while (q < end) {
        uint8_t type = q[0];
        if (type == 0) {
            q++;
            continue;
        }
        if (end - q < 2)
            return PARSE_IPV6_OPTION_BAD;
        size_t olen = (size_t)q[1] + 2;
        if (olen > (size_t)(end - q))
            return PARSE_IPV6_OPTION_BAD;
        if (type & 0xc0)
            return PARSE_IPV6_OPTION_UNKNOWN;
        q += olen;
    }
    return PARSE_OK;
}

static inline int parse_ipv6(const uint8_t *ip, size_t avail, parsed_t *o, int opts)
{
    if (PARSE_UNLIKELY(avail < 40))
        return PARSE_IPV6_TRUNCATED;
    uint32_t w0 = parse_be32(ip);
    o->ip_version = (uint8_t)(w0 >> 28);
    o->tclass = (uint8_t)(w0 >> 20);
    o->ttl = ip[7];
    memcpy(o->src, ip + 8, 16);
    memcpy(o->dst, ip + 24, 16);
    if (PARSE_UNLIKELY(o->ip_version != 6))
        return PARSE_IP_BAD_VERSION;
    size_t end = 40 + (size_t)parse_be16(ip + 4);
    if (PARSE_UNLIKELY(end > avail))
        return PARSE_IPV6_TRUNCATED;

    /* RFC 8200 4.1: walk the chain until an upper-layer header, ESP (50) or
     * No Next Header (59); a fragment at offset > 0 also ends it. */
    uint8_t nh = ip[6];
    size_t off = 40;
    uint32_t fl = 0;
    int fragment = 0, later = 0;
    for (unsigned count = 0;; count++) {
        size_t hlen;
        if (nh != IPPROTO_HOPOPTS_ && nh != IPPROTO_ROUTING_ && nh != IPPROTO_DSTOPTS_
            && nh != IPPROTO_FRAGMENT_ && nh != IPPROTO_AH_)
            break;
        if (count == PARSE_IPV6_MAX_EXT) {
            o->flags |= fl;
            return PARSE_IPV6_EXT_TOO_MANY;
        }
        const uint8_t *h = ip + off;
        size_t left = end - off;
        if (left < 8) {
            o->flags |= fl;
            return PARSE_IPV6_EXT_TRUNCATED;
        }
        switch (nh) {
        case IPPROTO_FRAGMENT_: {  /* RFC 8200 4.5 */
            uint16_t fo = parse_be16(h + 2);
            size_t foff = fo & 0xfff8;
            hlen = 8;
            fl |= PF_IPV6_FRAG_HDR;
            o->frag_id = parse_be32(h + 4);
            o->frag_off = (uint16_t)foff;
            if (foff || (fo & 1)) {
                size_t flen = end - off - 8;  /* the fragment's data */
                fragment = 1;
                fl |= PF_FRAGMENT | (foff ? PF_FRAG_LATER : PF_FRAG_FIRST)
                      | ((fo & 1) ? PF_FRAG_MORE : 0);
                if (((fo & 1) && flen % 8) || foff + flen > 65535) {
                    o->flags |= fl;
                    return PARSE_FRAGMENT_BAD_LENGTH;
                }
                later = foff != 0;
            }
            /* an atomic fragment (offset 0, M 0) is a whole datagram,
             * RFC 6946 */
            break;
        }
        case IPPROTO_AH_:  /* RFC 4302 2.2: length in 4-byte words minus 2 */
            hlen = ((size_t)h[1] + 2) * 4;
            fl |= PF_IPV6_AH;
            break;
        default:           /* HBH, Routing, DestOpt: 8-byte units minus 1 */
            hlen = ((size_t)h[1] + 1) * 8;
            break;
        }
        if (hlen > left) {
            o->flags |= fl;
            return PARSE_IPV6_EXT_TRUNCATED;
        }
        int st = PARSE_OK;
        if (nh == IPPROTO_HOPOPTS_) {
            fl |= PF_IPV6_HBH;
            st = off != 40 ? PARSE_IPV6_HBH_NOT_FIRST : parse_ipv6_options(h + 2, h + hlen);
        } else if (nh == IPPROTO_DSTOPTS_) {
            fl |= PF_IPV6_DSTOPTS;
            st = parse_ipv6_options(h + 2, h + hlen);
        } else if (nh == IPPROTO_ROUTING_) {
            /* RFC 8200 4.4: with Segments Left 0 the packet has arrived;
             * otherwise this host would have to route it on, which it does
             * not (and type 0 is deprecated, RFC 5095) */
            fl |= PF_IPV6_ROUTING;
            if (h[3] != 0)
                st = PARSE_IPV6_ROUTING_UNSUPPORTED;
        }
        if (st != PARSE_OK) {
            o->flags |= fl;
            return st;
        }
        nh = h[0];
        off += hlen;
        if (later)
            break;
    }
    o->flags |= fl;
    o->proto = nh;
    o->l4_off = (uint16_t)(o->l3_off + off);
    o->payload_off = o->l4_off;
    o->payload_len = (uint16_t)(end - off);
    if (later)
        return PARSE_OK;
    parse_l4_ctx c = {
        .l4 = ip + off, .len = end - off, .addrs = ip + 8, .addrs_len = 32, .v6 = 1,
        .fragment = fragment, .verify = opts & PARSE_VERIFY_L4,
        .defer_udp = opts & PARSE_DEFER_UDP, .defer_tcp = opts & PARSE_DEFER_TCP,
    };
    return parse_l4(&c, o);
}

/* ---- ARP ------------------------------------------------------------------- */

/* RFC 826 for Ethernet and IPv4 only.  The protocol addresses go to src/dst
 * (IPv4-mapped, as for IP) so the same columns serve the neighbour cache. */
static inline int parse_arp(const uint8_t *a, size_t avail, parsed_t *o)
{
    if (PARSE_UNLIKELY(avail < 28))
        return PARSE_ARP_TRUNCATED;
    if (parse_be16(a) != 1 || parse_be16(a + 2) != ETHERTYPE_IPV4 || a[4] != 6 || a[5] != 4)
        return PARSE_ARP_BAD_FORMAT;
    uint16_t op = parse_be16(a + 6);
    o->arp_op = op;
    memcpy(o->arp_sha, a + 8, 6);
    parse_set_v4mapped(o->src, a + 14);
    memcpy(o->arp_tha, a + 18, 6);
    parse_set_v4mapped(o->dst, a + 24);
    if (op != 1 && op != 2)
        return PARSE_ARP_BAD_OPCODE;
    return PARSE_OK;
}

/* ---- Ethernet and the entry points ----------------------------------------- */

static inline int parse_frame_fields(const uint8_t *f, size_t len, parsed_t *o, int opts)
{
    if (PARSE_UNLIKELY(len < 14))
        return PARSE_ETH_TRUNCATED;
    memcpy(o->dst_mac, f, 6);
    memcpy(o->src_mac, f + 6, 6);
    uint32_t fl = 0;
    if (f[0] & 1) {
        fl |= PF_L2_MULTICAST;
        if (parse_be32(f) == 0xffffffffu && parse_be16(f + 4) == 0xffff)
            fl |= PF_L2_BROADCAST;
    }
    /* the EtherType (or TPID) at off; at most an S-tag then a C-tag
     * (IEEE 802.1ad), or one C-tag (802.1Q) */
    size_t off = 12;
    uint16_t et = parse_be16(f + 12);
    if (et == ETHERTYPE_QINQ) {
        if (len < off + 6) {
            o->flags = fl;
            return PARSE_VLAN_TRUNCATED;
        }
        o->svlan_tci = parse_be16(f + off + 2);
        fl |= PF_SVLAN;
        off += 4;
        et = parse_be16(f + off);
    }
    if (et == ETHERTYPE_VLAN) {
        if (len < off + 6) {
            o->flags = fl;
            return PARSE_VLAN_TRUNCATED;
        }
        o->vlan_tci = parse_be16(f + off + 2);
        fl |= PF_VLAN;
        off += 4;
        et = parse_be16(f + off);
    }
    o->flags = fl;
    o->ethertype = et;
    off += 2;
    o->l3_off = (uint16_t)off;
    switch (et) {
    case ETHERTYPE_IPV4:
        return parse_ipv4(f + off, len - off, o, opts);
    case ETHERTYPE_IPV6:
        return parse_ipv6(f + off, len - off, o, opts);
    case ETHERTYPE_ARP:
        return parse_arp(f + off, len - off, o);
    case ETHERTYPE_VLAN:
    case ETHERTYPE_QINQ:
        return PARSE_VLAN_TOO_MANY_TAGS;
    default:
        return PARSE_UNKNOWN_ETHERTYPE;
    }
}

/* Parse the len bytes at frame into *out (all 128 bytes written) and return
 * the status, also stored in out->status.  opts: PARSE_VERIFY_L4. */
static inline int parse_frame(const uint8_t *frame, size_t len, parsed_t *out, int opts)
{
    memset(out, 0, sizeof *out);
    int st = parse_frame_fields(frame, len, out, opts);
    out->status = (uint8_t)st;
    return st;
}

/* How parse_batch reads the lengths array. */
enum parse_len_kind {
    PARSE_LEN_U16, PARSE_LEN_U32, PARSE_LEN_U64, PARSE_LEN_I32, PARSE_LEN_I64,
};

/* lengths[i] as a size, or -1 if negative */
static inline int64_t parse_len_at(const void *lengths, int kind, size_t i)
{
    switch (kind) {
    case PARSE_LEN_U16: return ((const uint16_t *)lengths)[i];
    case PARSE_LEN_U32: return ((const uint32_t *)lengths)[i];
    case PARSE_LEN_I32: return ((const int32_t *)lengths)[i];
    case PARSE_LEN_I64: return ((const int64_t *)lengths)[i];
    default: {
        uint64_t v = ((const uint64_t *)lengths)[i];
        return v > INT64_MAX ? -1 : (int64_t)v;
    }
    }
}

/* Parse n frames of a buffer pool into out[0..n).  Frame i is row
 * handles[i] (i when handles is NULL) of the nrows rows of row_size bytes
 * that start every row_stride bytes at base, and is lengths[i] bytes long.
 * Returns -1 when all n were parsed, or the index of the first entry whose
 * handle is not a row or whose length is negative or longer than a row
 * (the entries before it are parsed). */
static inline ptrdiff_t parse_batch(const uint8_t *base, size_t nrows, size_t row_size,
                                    ptrdiff_t row_stride, const uint64_t *handles,
                                    const void *lengths, int length_kind, size_t n,
                                    parsed_t *out, int opts)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t h = handles ? handles[i] : i;
        int64_t len = parse_len_at(lengths, length_kind, i);
        if (PARSE_UNLIKELY(h >= nrows || len < 0 || (uint64_t)len > row_size))
            return (ptrdiff_t)i;
        parse_frame(base + (ptrdiff_t)h * row_stride, (size_t)len, &out[i], opts);
    }
    return -1;
}

#endif /* FASTPROTO_PARSE_H */
