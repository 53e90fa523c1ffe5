/* Linux TAP devices: open, configure, and move batches of Ethernet frames
 * between the device's file descriptor and a buffer pool.
 *
 * The batch loops run without the GIL and never allocate.  A batch's caller
 * holds the interface's serializer, so exactly one thread updates a
 * tap_stats_t at a time; readers in other threads may see a counter a batch
 * behind (aligned 64-bit loads and stores never tear on x86-64).
 *
 * Frame layout on the file descriptor: the device is opened IFF_NO_PI, so
 * each read(2)/write(2) is exactly one Ethernet frame without FCS.  With
 * offloads (IFF_VNET_HDR, tap_t.vnet_hdr_len = 10) a struct virtio_net_hdr
 * comes first: it is a separate iovec of the receive readv and the transmit
 * writev, so frames in the pool stay plain Ethernet.  Received GSO
 * super-frames are cut into MSS-sized segments and partial checksums
 * completed here (tap_vnet_input), so the pool only ever holds ordinary,
 * fully checksummed frames.
 */
#ifndef FASTPROTO_TAP_H
#define FASTPROTO_TAP_H

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <stdlib.h>
#include <endian.h>
#include <linux/if_tun.h>

#include "buffers.h"
#include "csum.h"

#define TAP_ETH_HLEN 14          /* shortest frame the kernel accepts on write */
#define TAP_MAX_FRAME 65535      /* longest frame one read can carry */

/* virtio_net_hdr (virtio 1.x section 5.1.6; legacy layout, little-endian
 * fields on x86-64: the kernel uses the host's order unless TUNSETVNETBE) */
#define TAP_VNET_HDR_LEN 10
#define TAP_VNET_F_NEEDS_CSUM 1
#define TAP_VNET_F_DATA_VALID 2
#define TAP_GSO_NONE 0
#define TAP_GSO_TCPV4 1
#define TAP_GSO_UDP 3
#define TAP_GSO_TCPV6 4
#define TAP_GSO_ECN 0x80
/* What TUNSETOFFLOAD announces: checksum offload and TSO for IPv4/IPv6,
 * with ECN (the segmenter puts CWR on the first segment only). */
#define TAP_OFFLOADS (TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN)
/* The receive scratch area: the longest super-frame a read can bring (an IP
 * datagram of 65535 bytes, Ethernet header and one VLAN tag), rounded up. */
#define TAP_GSO_BUF (1u << 17)

typedef struct {
    uint8_t flags;
    uint8_t gso_type;
    uint16_t hdr_len;            /* little-endian on the fd, host order here */
    uint16_t gso_size;
    uint16_t csum_start;
    uint16_t csum_offset;
} tap_vnet_hdr_t;

typedef struct {
    uint64_t rx_frames;          /* frames handed to the caller */
    uint64_t rx_bytes;           /* their bytes (Ethernet header included) */
    uint64_t rx_no_buffer;       /* dropped: the pool had no free buffer */
    uint64_t rx_oversize;        /* dropped: frame longer than a pool buffer */
    uint64_t rx_dropped_down;    /* dropped: queued when the interface went down */
    uint64_t rx_errors;          /* read(2) failed (not EAGAIN/EINTR) */
    uint64_t tx_frames;          /* frames the kernel accepted */
    uint64_t tx_bytes;
    uint64_t tx_errors;          /* every rejected frame; the sum of the tx_* reasons below */
    uint64_t tx_oversize;        /* longer than the interface's max frame */
    uint64_t tx_runt;            /* shorter than an Ethernet header */
    uint64_t tx_bad_handle;      /* handle not an allocated buffer, or length > buffer size */
    uint64_t tx_write_failed;    /* write(2) failed */
    uint64_t tx_dropped_down;    /* the interface was down */
    /* offloads (IFF_VNET_HDR) */
    uint64_t rx_gso_frames;      /* super-frames cut into segments */
    uint64_t rx_gso_segments;    /* segments made from them (counted in rx_frames too) */
    uint64_t rx_csum_completed;  /* frames whose partial checksum was completed */
    uint64_t rx_vnet_truncated;  /* dropped: read shorter than the virtio_net_hdr + 14 bytes */
    uint64_t rx_gso_bad_type;    /* dropped: gso_type not NONE, TCPV4 or TCPV6 */
    uint64_t rx_gso_zero_size;   /* dropped: GSO frame with gso_size 0 */
    uint64_t rx_gso_bad_hdr_len; /* dropped: hdr_len past the end of the frame */
    uint64_t rx_csum_bad_offset; /* dropped: csum_start/csum_offset outside the frame */
    uint64_t rx_gso_bad_headers; /* dropped: not Ethernet/IPv4|IPv6/TCP of the gso_type with lengths that add up */
    uint64_t rx_gso_too_big;     /* dropped: headers + gso_size longer than a pool buffer */
    uint64_t tx_gso_frames;      /* super-frames the kernel took to segment */
    uint64_t tx_gso_bad;         /* rejected: longer than max_frame and not a TCP super-frame */
    uint64_t tx_gso_segments;    /* frames sent coalesced into super-frames (tap_tx_vec) */
} tap_stats_t;

/* A received super-frame being cut into segments.  The frame sits in buf
 * (TAP_GSO_BUF bytes, allocated while offloads are on); segments next, next
 * + gso_size, ... of its payload are still to be made while next < len. */
typedef struct {
    uint8_t *buf;
    uint32_t len;                /* frame bytes in buf */
    uint32_t l3, l4, hlen;       /* offsets: IP header, TCP header, payload */
    uint32_t gso_size;           /* payload bytes per segment */
    uint32_t next;               /* payload offset of the next segment; len: none pending */
    uint32_t seg;                /* index of the next segment */
    uint32_t v6;                 /* 1 for IPv6, 0 for IPv4 */
} tap_gso_t;

typedef struct {
    int fd;                      /* non-blocking /dev/net/tun descriptor, -1 when closed */
    int wake_fd;                 /* eventfd that ends a tap_wait early, -1 when closed */
    uint32_t max_frame;          /* longest frame transmitted: MTU + Ethernet + one 802.1Q tag */
    uint32_t vnet_hdr_len;       /* bytes of virtio_net_hdr before each frame; 0: no offloads */
    tap_stats_t st;
    tap_gso_t gso;               /* receive segmentation state (offloads only) */
} tap_t;

/* -- control path (called with the GIL; results 0 or an errno value) ----- */

/* Open /dev/net/tun as a TAP device named `name` (IFF_TAP | IFF_NO_PI,
 * non-blocking, close-on-exec) in the calling thread's network namespace.
 * The kernel's name for it (it expands "%d") goes to `out_name`
 * (IFNAMSIZ bytes).  Returns the fd, or -errno. */
static inline int tap_open_vnet(const char *name, char *out_name, int offload);

static inline int tap_open(const char *name, char *out_name)
{
    return tap_open_vnet(name, out_name, 0);
}

/* tap_open; with `offload` also IFF_VNET_HDR, TUNSETVNETHDRSZ 10 and
 * TUNSETOFFLOAD TAP_OFFLOADS, so every frame read or written carries a
 * virtio_net_hdr and the kernel may hand over GSO super-frames and partial
 * checksums. */
static inline int tap_open_vnet(const char *name, char *out_name, int offload)
{
    struct ifreq ifr;
    size_t len = strlen(name);
    if (len == 0 || len >= IFNAMSIZ)
        return -EINVAL;
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    memset(&ifr, 0, sizeof ifr);
    memcpy(ifr.ifr_name, name, len);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | (offload ? IFF_VNET_HDR : 0);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    if (offload) {
        int hdr_len = TAP_VNET_HDR_LEN;
        if (ioctl(fd, TUNSETVNETHDRSZ, &hdr_len) < 0 ||
            ioctl(fd, TUNSETOFFLOAD, (unsigned long)TAP_OFFLOADS) < 0) {
            int e = errno;
            close(fd);
            return -e;
        }
    }
    memcpy(out_name, ifr.ifr_name, IFNAMSIZ);
    out_name[IFNAMSIZ - 1] = 0;
    return fd;
}

/* One SIOC* interface ioctl on a throwaway datagram socket (the socket
 * ioctls need some socket of the device's namespace, not the tap fd). */
static inline int tap_ifioctl(const char *name, unsigned long req, struct ifreq *ifr)
{
    size_t len = strlen(name);
    if (len == 0 || len >= IFNAMSIZ)
        return EINVAL;
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return errno;
    memset(ifr->ifr_name, 0, IFNAMSIZ);
    memcpy(ifr->ifr_name, name, len);
    int rc = ioctl(s, req, ifr) < 0 ? errno : 0;
    close(s);
    return rc;
}

static inline int tap_get_mtu(const char *name, int *mtu)
{
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    int rc = tap_ifioctl(name, SIOCGIFMTU, &ifr);
    if (rc == 0)
        *mtu = ifr.ifr_mtu;
    return rc;
}

static inline int tap_set_mtu(const char *name, int mtu)
{
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_mtu = mtu;
    return tap_ifioctl(name, SIOCSIFMTU, &ifr);
}

static inline int tap_get_hwaddr(const char *name, uint8_t mac[6])
{
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    int rc = tap_ifioctl(name, SIOCGIFHWADDR, &ifr);
    if (rc == 0)
        memcpy(mac, ifr.ifr_hwaddr.sa_data, 6);
    return rc;
}

static inline int tap_set_hwaddr(const char *name, const uint8_t mac[6])
{
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_hwaddr.sa_family = ARPHRD_ETHER;
    memcpy(ifr.ifr_hwaddr.sa_data, mac, 6);
    return tap_ifioctl(name, SIOCSIFHWADDR, &ifr);
}

/* Set or clear IFF_UP, keeping the other flags. */
static inline int tap_set_up(const char *name, int up)
{
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    int rc = tap_ifioctl(name, SIOCGIFFLAGS, &ifr);
    if (rc)
        return rc;
    if (up)
        ifr.ifr_flags |= IFF_UP;
    else
        ifr.ifr_flags &= ~IFF_UP;
    return tap_ifioctl(name, SIOCSIFFLAGS, &ifr);
}

static inline int tap_get_flags(const char *name, int *flags)
{
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    int rc = tap_ifioctl(name, SIOCGIFFLAGS, &ifr);
    if (rc == 0)
        *flags = ifr.ifr_flags;
    return rc;
}

/* -- data path (nogil) ---------------------------------------------------- */

/* An eventfd for tap_wake (non-blocking, close-on-exec); fd or -errno. */
static inline int tap_wake_fd_open(void)
{
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

/* Make every tap_wait in progress return 2.  Any thread, any time. */
static inline void tap_wake(const tap_t *t)
{
    uint64_t one = 1;
    /* EAGAIN only when the counter is near 2^64: it is readable anyway. */
    ssize_t r = write(t->wake_fd, &one, sizeof one);
    (void)r;
}

/* Clear a wake-up signal (so later waits sleep again). */
static inline void tap_wake_clear(const tap_t *t)
{
    uint64_t v;
    ssize_t r = read(t->wake_fd, &v, sizeof v);
    (void)r;
}

/* Wait up to timeout_ms (-1: forever) for a frame to read.  1 readable (or
 * the fd reports an error the next read will return), 2 tap_wake was
 * called, 0 timed out, -errno.  Readable wins over woken. */
static inline int tap_wait(const tap_t *t, int timeout_ms)
{
    struct pollfd pfd[2] = {
        { .fd = t->fd, .events = POLLIN, .revents = 0 },
        { .fd = t->wake_fd, .events = POLLIN, .revents = 0 },
    };
    int rc = poll(pfd, 2, timeout_ms);
    if (rc < 0)
        return errno == EINTR ? 0 : -errno;
    if (pfd[0].revents)
        return 1;
    return pfd[1].revents ? 2 : 0;
}

/* -- offloads: virtio_net_hdr and segmentation (nogil) ------------------- */

#define TAP_NO_HANDLE UINT64_MAX
#define TAP_ETH_P_IP 0x0800
#define TAP_ETH_P_IPV6 0x86dd
#define TAP_ETH_P_8021Q 0x8100
#define TAP_IPPROTO_TCP 6
#define TAP_TCP_FIN 0x01
#define TAP_TCP_PSH 0x08
#define TAP_TCP_CWR 0x80

static inline uint16_t tap_get16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static inline uint32_t tap_get32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline void tap_put16(uint8_t *p, uint32_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static inline void tap_put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}
static inline uint16_t tap_get_le16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline void tap_put_le16(uint8_t *p, uint32_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }

/* The fields of the virtio_net_hdr at raw (TAP_VNET_HDR_LEN bytes). */
static inline tap_vnet_hdr_t tap_vnet_decode(const uint8_t *raw)
{
    tap_vnet_hdr_t h;
    h.flags = raw[0];
    h.gso_type = raw[1];
    h.hdr_len = tap_get_le16(raw + 2);
    h.gso_size = tap_get_le16(raw + 4);
    h.csum_start = tap_get_le16(raw + 6);
    h.csum_offset = tap_get_le16(raw + 8);
    return h;
}

static inline void tap_vnet_encode(uint8_t *raw, const tap_vnet_hdr_t *h)
{
    raw[0] = h->flags;
    raw[1] = h->gso_type;
    tap_put_le16(raw + 2, h->hdr_len);
    tap_put_le16(raw + 4, h->gso_size);
    tap_put_le16(raw + 6, h->csum_start);
    tap_put_le16(raw + 8, h->csum_offset);
}

/* Where the headers of a TCP frame f[0 .. len) end: Ethernet (at most one
 * 802.1Q tag), IPv4 (options allowed, not a fragment) or IPv6 (no extension
 * headers), TCP.  The IP length field must cover exactly the rest of the
 * frame.  Fills l3 (IP header), l4 (TCP header), hlen (payload) and v6;
 * 0 if it is such a frame, -1 if not. */
static inline int tap_tcp_headers(const uint8_t *f, size_t len, uint32_t *l3, uint32_t *l4,
                                  uint32_t *hlen, uint32_t *v6)
{
    if (len < TAP_ETH_HLEN)
        return -1;
    uint32_t n = 12;
    uint16_t type = tap_get16(f + 12);
    if (type == TAP_ETH_P_8021Q) {
        if (len < 18)
            return -1;
        n = 16;
        type = tap_get16(f + 16);
    }
    uint32_t ip = n + 2, tcp;
    if (type == TAP_ETH_P_IP) {
        if (len < ip + 20 || (f[ip] >> 4) != 4)
            return -1;
        uint32_t ihl = (uint32_t)(f[ip] & 15) * 4;
        /* RFC 791: a fragment (MF set or an offset) is not a whole segment */
        if (ihl < 20 || len < ip + ihl || f[ip + 9] != TAP_IPPROTO_TCP ||
            (tap_get16(f + ip + 6) & 0x3fff) != 0 || tap_get16(f + ip + 2) != len - ip)
            return -1;
        tcp = ip + ihl;
        *v6 = 0;
    } else if (type == TAP_ETH_P_IPV6) {
        if (len < ip + 40 || (f[ip] >> 4) != 6 || f[ip + 6] != TAP_IPPROTO_TCP ||
            tap_get16(f + ip + 4) != len - ip - 40)
            return -1;
        tcp = ip + 40;
        *v6 = 1;
    } else {
        return -1;
    }
    if (len < tcp + 20)
        return -1;
    uint32_t doff = (uint32_t)(f[tcp + 12] >> 4) * 4;
    if (doff < 20 || len < tcp + doff)
        return -1;
    *l3 = ip;
    *l4 = tcp;
    *hlen = tcp + doff;
    return 0;
}

/* Allocate the receive scratch area (offloads on); 0 or ENOMEM. */
static inline int tap_gso_init(tap_t *t)
{
    memset(&t->gso, 0, sizeof t->gso);
    t->gso.buf = (uint8_t *)malloc(TAP_GSO_BUF);
    return t->gso.buf ? 0 : ENOMEM;
}

static inline void tap_gso_free(tap_t *t)
{
    free(t->gso.buf);
    memset(&t->gso, 0, sizeof t->gso);
}

/* Segments of the pending super-frame still to be made. */
static inline size_t tap_gso_pending(const tap_t *t)
{
    const tap_gso_t *g = &t->gso;
    if (g->next >= g->len || g->gso_size == 0)
        return 0;
    return (g->len - g->next + g->gso_size - 1) / g->gso_size;
}

/* Make up to n segments of the pending super-frame (RFC 9293 section 3.1
 * header, one segment per gso_size bytes of payload), each in a pool
 * buffer: handles[i], lengths[i].  `first`, when not TAP_NO_HANDLE, is a
 * buffer of p to use for the first one.  A segment that finds the pool
 * empty is dropped (rx_no_buffer) and TCP will retransmit it.  Returns the
 * segments made; the rest stay pending for the next call.
 *
 * Each segment gets the super-frame's headers with: IPv4 total length, an
 * identification one more per segment (as a NIC's TSO does) and the header
 * checksum; IPv6 payload length; the TCP sequence number advanced by the
 * payload before it; FIN and PSH only on the last segment, CWR only on the
 * first (RFC 3168 section 6.1.2: CWR is sent once); the TCP checksum
 * computed over the segment (RFC 9293 section 3.1), whatever the
 * super-frame's checksum field held. */
static inline size_t tap_gso_emit(tap_t *t, bufpool_t *p, uint64_t first, uint64_t *handles,
                                  uint32_t *lengths, size_t n)
{
    tap_gso_t *g = &t->gso;
    const uint8_t *f = g->buf;
    const uint32_t l3 = g->l3, l4 = g->l4, hlen = g->hlen;
    const uint32_t thlen = hlen - l4;
    const uint32_t seq0 = tap_get32(f + l4 + 4);
    const uint32_t id0 = g->v6 ? 0 : tap_get16(f + l3 + 4);
    const uint32_t ihl = g->v6 ? 40 : (uint32_t)(f[l3] & 15) * 4;
    size_t got = 0;
    uint64_t bytes = 0;
    while (g->next < g->len && got < n) {
        uint32_t plen = g->len - g->next;
        if (plen > g->gso_size)
            plen = g->gso_size;
        int last = g->next + plen == g->len;
        uint64_t h = first;
        first = TAP_NO_HANDLE;
        if (h == TAP_NO_HANDLE && !bufpool_alloc(p, &h)) {
            t->st.rx_no_buffer++;
            g->next += plen;
            g->seg++;
            continue;
        }
        uint8_t *b = buf_ptr(p, h);
        uint32_t seglen = hlen + plen;
        memcpy(b, f, hlen);
        uint8_t *ip = b + l3, *th = b + l4;
        if (g->v6) {
            tap_put16(ip + 4, seglen - l3 - 40);
        } else {
            tap_put16(ip + 2, seglen - l3);
            tap_put16(ip + 4, id0 + g->seg);
            tap_put16(ip + 10, 0);
            tap_put16(ip + 10, csum_compute(ip, ihl, 0));
        }
        tap_put32(th + 4, seq0 + (g->next - hlen));
        uint8_t flags = th[13];
        if (!last)
            flags &= (uint8_t)~(TAP_TCP_FIN | TAP_TCP_PSH);
        if (g->seg != 0)
            flags &= (uint8_t)~TAP_TCP_CWR;
        th[13] = flags;
        tap_put16(th + 16, 0);
        uint32_t sum = g->v6 ? csum_pseudo_v6(f + l3 + 8, f + l3 + 24, TAP_IPPROTO_TCP, thlen + plen)
                             : csum_pseudo_v4(f + l3 + 12, f + l3 + 16, TAP_IPPROTO_TCP,
                                              (uint16_t)(thlen + plen));
        /* thlen is a multiple of 4, so the payload's words pair up after it */
        sum = csum_partial(th, thlen, sum);
        sum = csum_partial_copy(b + hlen, f + g->next, plen, sum);
        tap_put16(th + 16, csum_finish(sum));
        handles[got] = h;
        lengths[got] = seglen;
        bytes += seglen;
        got++;
        g->next += plen;
        g->seg++;
    }
    if (first != TAP_NO_HANDLE)
        bufpool_free(p, first);
    t->st.rx_gso_segments += got;
    t->st.rx_frames += got;
    t->st.rx_bytes += bytes;
    return got;
}

/* Drop a received frame whose buffer is h: free it and count `reason`. */
static inline size_t tap_vnet_drop(bufpool_t *p, uint64_t h, uint64_t *reason)
{
    bufpool_free(p, h);
    (*reason)++;
    return 0;
}

/* Take one frame read with offloads on: raw is its virtio_net_hdr, buffer h
 * of p holds its first min(flen, p->size) bytes and, when flen > p->size,
 * t->gso.buf + p->size the rest.  Owns h from here.  A plain frame goes to
 * handles[0] with its partial checksum completed (NEEDS_CSUM); a GSO
 * super-frame is cut into segments (tap_gso_emit) of which up to n go out
 * now.  Returns the frames handed out; a bad header drops the frame under
 * its reason.  n >= 1. */
static inline size_t tap_vnet_input(tap_t *t, bufpool_t *p, const uint8_t *raw, uint64_t h,
                                    size_t flen, uint64_t *handles, uint32_t *lengths, size_t n)
{
    tap_stats_t *st = &t->st;
    tap_gso_t *g = &t->gso;
    tap_vnet_hdr_t v = tap_vnet_decode(raw);
    uint8_t *b = buf_ptr(p, h);
    int needs_csum = (v.flags & TAP_VNET_F_NEEDS_CSUM) != 0;
    uint32_t gso_type = v.gso_type & (uint32_t)~TAP_GSO_ECN;
    if (gso_type == TAP_GSO_NONE) {
        if (flen > p->size)
            return tap_vnet_drop(p, h, &st->rx_oversize);
        if (needs_csum) {
            /* virtio 1.x 5.1.6.2: the sum from csum_start to the end goes
             * at csum_start + csum_offset, whose field already holds the
             * pseudo-header sum */
            if ((size_t)v.csum_start >= flen || (size_t)v.csum_start + v.csum_offset + 2 > flen)
                return tap_vnet_drop(p, h, &st->rx_csum_bad_offset);
            uint16_t c = csum_finish(csum_partial(b + v.csum_start, flen - v.csum_start, 0));
            /* RFC 768: a computed 0 is sent as all ones (same value in
             * one's complement; for UDP 0 would mean "no checksum") */
            tap_put16(b + v.csum_start + v.csum_offset, c ? c : 0xffff);
            st->rx_csum_completed++;
        }
        handles[0] = h;
        lengths[0] = (uint32_t)flen;
        st->rx_frames++;
        st->rx_bytes += flen;
        return 1;
    }
    if (gso_type != TAP_GSO_TCPV4 && gso_type != TAP_GSO_TCPV6)
        return tap_vnet_drop(p, h, &st->rx_gso_bad_type);
    if (v.gso_size == 0)
        return tap_vnet_drop(p, h, &st->rx_gso_zero_size);
    if (v.hdr_len > flen)
        return tap_vnet_drop(p, h, &st->rx_gso_bad_hdr_len);
    if (flen > TAP_GSO_BUF)
        return tap_vnet_drop(p, h, &st->rx_oversize);
    /* the whole super-frame into the scratch area, where it stays while
     * its segments are made (the tail is already there) */
    memcpy(g->buf, b, flen < p->size ? flen : p->size);
    uint32_t l3, l4, hlen, v6;
    if (tap_tcp_headers(g->buf, flen, &l3, &l4, &hlen, &v6) != 0 ||
        v6 != (gso_type == TAP_GSO_TCPV6) || hlen >= flen)
        return tap_vnet_drop(p, h, &st->rx_gso_bad_headers);
    /* the checksum to complete can only be TCP's */
    if (needs_csum && (v.csum_start != l4 || v.csum_offset != 16))
        return tap_vnet_drop(p, h, &st->rx_csum_bad_offset);
    if ((uint64_t)hlen + v.gso_size > p->size)
        return tap_vnet_drop(p, h, &st->rx_gso_too_big);
    g->len = (uint32_t)flen;
    g->l3 = l3;
    g->l4 = l4;
    g->hlen = hlen;
    g->v6 = v6;
    g->gso_size = v.gso_size;
    g->next = hlen;
    g->seg = 0;
    st->rx_gso_frames++;
    return tap_gso_emit(t, p, h, handles, lengths, n);
}

/* Feed pkt[0 .. len) (a virtio_net_hdr then a frame) through the receive
 * path as if one read had returned it: the frame is copied into a buffer of
 * p (and the scratch area past p->size bytes), then tap_vnet_input.
 * Returns the frames handed out; pending segments follow from
 * tap_rx_pending.  For replaying captured frames and for tests. */
static inline size_t tap_vnet_inject(tap_t *t, bufpool_t *p, const uint8_t *pkt, size_t len,
                                     uint64_t *handles, uint32_t *lengths, size_t n)
{
    tap_stats_t *st = &t->st;
    size_t hl = t->vnet_hdr_len;
    if (n == 0 || hl == 0 || t->gso.buf == NULL)
        return 0;
    if (len < hl + TAP_ETH_HLEN) {
        st->rx_vnet_truncated++;
        return 0;
    }
    size_t flen = len - hl;
    size_t tail = p->size < TAP_GSO_BUF ? TAP_GSO_BUF - p->size : 0;
    if (flen > p->size + tail) {
        st->rx_oversize++;
        return 0;
    }
    uint64_t h;
    if (!bufpool_alloc(p, &h)) {
        st->rx_no_buffer++;
        return 0;
    }
    size_t head = flen < p->size ? flen : p->size;
    memcpy(buf_ptr(p, h), pkt + hl, head);
    if (flen > head)
        memcpy(t->gso.buf + p->size, pkt + hl + head, flen - head);
    return tap_vnet_input(t, p, pkt, h, flen, handles, lengths, n);
}

/* Up to n more segments of a pending super-frame (0 if none pending). */
static inline size_t tap_rx_pending(tap_t *t, bufpool_t *p, uint64_t *handles, uint32_t *lengths,
                                    size_t n)
{
    if (n == 0 || t->gso.next >= t->gso.len)
        return 0;
    return tap_gso_emit(t, p, TAP_NO_HANDLE, handles, lengths, n);
}

/* A failed read in an rx loop, errno e: 1 to try again (EINTR), 0 to stop
 * (nothing queued, or an error after frames were taken: counted in
 * rx_errors), or -e to return (an error before any frame). */
static inline int tap_rx_error(tap_stats_t *st, int e, size_t got)
{
    if (e == EINTR)
        return 1;
    if (e == EAGAIN)
        return 0;
    st->rx_errors++;
    return got == 0 ? -e : 0;
}

/* No free pool buffer for the next frame: dequeue it into ``spill`` (one
 * read is one frame on a TAP fd: a short read still takes all of it) and
 * count it in rx_no_buffer, the drop at the FIFO.  Returns as
 * tap_rx_error: 1 to go on, 0 to stop, -e to return. */
static inline int tap_rx_drop_no_buffer(tap_t *t, uint8_t *spill, size_t spill_len, size_t got)
{
    if (read(t->fd, spill, spill_len) >= 0) {
        t->st.rx_no_buffer++;
        return 1;
    }
    return tap_rx_error(&t->st, errno, got);
}

/* tap_rx_batch with offloads on: pending segments first, then at most n
 * reads, each a virtio_net_hdr, a pool buffer, the scratch area past a
 * buffer's length (where a super-frame's tail lands) and a spill byte. */
static inline ssize_t tap_rx_batch_vnet(tap_t *t, bufpool_t *p, uint64_t *handles,
                                        uint32_t *lengths, size_t n)
{
    tap_stats_t *st = &t->st;
    tap_gso_t *g = &t->gso;
    uint8_t raw[16];
    uint8_t spill[64];
    size_t got = 0, tries = 0;
    size_t hl = t->vnet_hdr_len;
    size_t tail = p->size < TAP_GSO_BUF ? TAP_GSO_BUF - p->size : 0;
    while (got < n) {
        if (g->next < g->len) {
            got += tap_gso_emit(t, p, TAP_NO_HANDLE, handles + got, lengths + got, n - got);
            continue;
        }
        if (tries++ >= n)
            break;
        uint64_t h;
        ssize_t r;
        if (!bufpool_alloc(p, &h)) {
            int a = tap_rx_drop_no_buffer(t, spill, sizeof spill, got);
            if (a > 0)
                continue;
            if (a < 0)
                return a;
            break;
        }
        struct iovec iov[4] = {
            { .iov_base = raw, .iov_len = hl },
            { .iov_base = buf_ptr(p, h), .iov_len = p->size },
            { .iov_base = g->buf + (tail ? p->size : 0), .iov_len = tail },
            { .iov_base = spill, .iov_len = 1 },
        };
        r = readv(t->fd, iov, 4);
        if (r < 0) {
            int a = tap_rx_error(st, errno, got);
            bufpool_free(p, h);
            if (a > 0)
                continue;
            if (a < 0)
                return a;
            break;
        }
        if ((size_t)r < hl + TAP_ETH_HLEN) {
            tap_vnet_drop(p, h, &st->rx_vnet_truncated);
            continue;
        }
        size_t flen = (size_t)r - hl;
        if (flen > p->size + tail) {
            tap_vnet_drop(p, h, &st->rx_oversize);
            continue;
        }
        got += tap_vnet_input(t, p, raw, h, flen, handles + got, lengths + got, n - got);
    }
    return (ssize_t)got;
}

/* Read one frame into buf (cap bytes); its length, 0 if none is queued, or
 * -errno.  A frame longer than cap is dropped (rx_oversize) and the next
 * one tried.  Counts rx_frames/rx_bytes.  Offloads off only (-EOPNOTSUPP
 * otherwise: a super-frame needs pool buffers for its segments). */
static inline ssize_t tap_rx_copy(tap_t *t, uint8_t *buf, size_t cap)
{
    if (t->vnet_hdr_len)
        return -EOPNOTSUPP;
    for (;;) {
        uint8_t spill;
        struct iovec iov[2] = {
            { .iov_base = buf, .iov_len = cap },
            { .iov_base = &spill, .iov_len = 1 },
        };
        ssize_t r = readv(t->fd, iov, 2);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                return 0;
            t->st.rx_errors++;
            return -errno;
        }
        if ((size_t)r > cap || r == 0) {
            t->st.rx_oversize++;
            continue;
        }
        t->st.rx_frames++;
        t->st.rx_bytes += (uint64_t)r;
        return r;
    }
}

/* Read and drop up to max queued frames, counting rx_dropped_down (the
 * interface went down: a NIC resets its rings).  Returns how many. */
static inline size_t tap_rx_drop_queued(tap_t *t, size_t max)
{
    uint8_t spill[64];
    size_t dropped = 0;
    while (dropped < max) {
        ssize_t r = read(t->fd, spill, sizeof spill);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        dropped++;
    }
    /* a half-cut super-frame goes too */
    dropped += tap_gso_pending(t);
    t->gso.next = t->gso.len;
    t->st.rx_dropped_down += dropped;
    return dropped;
}

/* Read up to n frames, each into a buffer allocated from p: frame i is
 * buf_ptr(p, handles[i])[0 .. lengths[i]).  At most n reads are made, so a
 * flood cannot keep the caller here: a frame dropped for want of a buffer
 * (rx_no_buffer) or for being longer than a buffer (rx_oversize) uses one
 * of them.  EAGAIN (nothing queued) ends the batch.
 *
 * Returns the frames received, or -errno if the first read failed with a
 * hard error (counted in rx_errors); a hard error later in the batch ends it
 * and shows on the next call.  With offloads (vnet_hdr_len != 0, scratch
 * area allocated) see tap_rx_batch_vnet: super-frames arrive as segments. */
static inline ssize_t tap_rx_batch(tap_t *t, bufpool_t *p, uint64_t *handles, uint32_t *lengths,
                                   size_t n)
{
    if (t->vnet_hdr_len)
        return tap_rx_batch_vnet(t, p, handles, lengths, n);
    tap_stats_t *st = &t->st;
    /* Lands the byte past a full buffer, which tells a frame that exactly
     * fills a buffer from a longer one the kernel cut short.  Also the sink
     * for frames dropped without a buffer: a short read still dequeues
     * the whole frame (one read is one frame on a TAP fd). */
    uint8_t spill[64];
    size_t got = 0;
    uint64_t bytes = 0;
    for (size_t tries = 0; tries < n; tries++) {
        uint64_t h;
        ssize_t r;
        if (!bufpool_alloc(p, &h)) {
            int a = tap_rx_drop_no_buffer(t, spill, sizeof spill, got);
            if (a > 0)
                continue;
            if (a < 0)
                return a;
            break;
        }
        struct iovec iov[2] = {
            { .iov_base = buf_ptr(p, h), .iov_len = p->size },
            { .iov_base = spill, .iov_len = 1 },
        };
        r = readv(t->fd, iov, 2);
        if (r < 0) {
            int a = tap_rx_error(st, errno, got);
            bufpool_free(p, h);
            if (a > 0)
                continue;
            if (a < 0)
                return a;
            break;
        }
        if ((uint64_t)r > p->size || r == 0) {
            /* r == 0 cannot happen on a TAP fd (frames are >= 14 bytes);
             * counted with the cut-short frames rather than passed on. */
            bufpool_free(p, h);
            st->rx_oversize++;
            continue;
        }
        handles[got] = h;
        lengths[got] = (uint32_t)r;
        bytes += (uint64_t)r;
        got++;
    }
    st->rx_frames += got;
    st->rx_bytes += bytes;
    return (ssize_t)got;
}

/* writev of iov[0 .. cnt) with EINTR retried; 1 written, 0 failed. */
static inline int tap_writev(tap_t *t, const struct iovec *iov, int cnt)
{
    for (;;) {
        if (writev(t->fd, iov, cnt) >= 0)
            return 1;
        if (errno != EINTR)
            return 0;
    }
}

static inline int tap_tx_gso(tap_t *t, const uint8_t *frame, size_t len, uint32_t mss);

/* Write one frame; 1 sent, 0 rejected (counted under its reason).  With
 * offloads on it goes after a zeroed virtio_net_hdr (GSO_NONE, checksum
 * complete), and a TCP frame longer than max_frame goes as a super-frame
 * for the kernel to segment (tap_tx_gso with the MSS the MTU allows). */
static inline int tap_tx_one(tap_t *t, const uint8_t *frame, size_t len)
{
    static const uint8_t zero_hdr[16];
    tap_stats_t *st = &t->st;
    if (len < TAP_ETH_HLEN) {
        st->tx_runt++;
        st->tx_errors++;
        return 0;
    }
    if (len > t->max_frame) {
        if (t->vnet_hdr_len)
            return tap_tx_gso(t, frame, len, 0);
        st->tx_oversize++;
        st->tx_errors++;
        return 0;
    }
    struct iovec iov[2] = {
        { .iov_base = (void *)zero_hdr, .iov_len = t->vnet_hdr_len },
        { .iov_base = (void *)frame, .iov_len = len },
    };
    if (tap_writev(t, t->vnet_hdr_len ? iov : iov + 1, t->vnet_hdr_len ? 2 : 1)) {
        st->tx_frames++;
        st->tx_bytes += len;
        return 1;
    }
    st->tx_write_failed++;
    st->tx_errors++;
    return 0;
}

/* Write a TCP frame of any length up to an IP datagram's 65535 bytes for the
 * kernel to cut into segments of mss payload bytes (0: the MTU's, max_frame
 * - 18 - IP and TCP header) and to checksum: offloads must be on.  The
 * frame is Ethernet (at most one 802.1Q tag) + IPv4 (header checksum
 * correct, total length covering the frame) or IPv6 + TCP; its TCP
 * checksum field is ignored: the virtio_net_hdr says NEEDS_CSUM and the
 * field goes out holding the pseudo-header sum (RFC 9293 section 3.1), so
 * the frame itself is written unchanged, without a copy.  A frame whose
 * payload fits one segment goes as GSO_NONE.  1 sent, 0 rejected
 * (tx_gso_bad, tx_write_failed; both in tx_errors). */
static inline int tap_tx_gso(tap_t *t, const uint8_t *frame, size_t len, uint32_t mss)
{
    tap_stats_t *st = &t->st;
    uint32_t l3, l4, hlen, v6;
    if (t->vnet_hdr_len == 0 || tap_tcp_headers(frame, len, &l3, &l4, &hlen, &v6) != 0) {
        st->tx_gso_bad++;
        st->tx_errors++;
        return 0;
    }
    if (mss == 0) {
        /* max_frame is the MTU + Ethernet header + one VLAN tag */
        uint32_t mtu = t->max_frame > 18 ? t->max_frame - 18 : 0;
        mss = mtu > hlen - l3 ? mtu - (hlen - l3) : 0;
    }
    if (mss == 0 || mss > 0xffff) {
        st->tx_gso_bad++;
        st->tx_errors++;
        return 0;
    }
    size_t payload = len - hlen;
    tap_vnet_hdr_t v = {
        .flags = TAP_VNET_F_NEEDS_CSUM, .gso_type = TAP_GSO_NONE, .hdr_len = (uint16_t)hlen,
        .gso_size = 0, .csum_start = (uint16_t)l4, .csum_offset = 16,
    };
    if (payload > mss) {
        v.gso_type = v6 ? TAP_GSO_TCPV6 : TAP_GSO_TCPV4;
        /* a CWR in the headers must reach the first segment only */
        if (frame[l4 + 13] & TAP_TCP_CWR)
            v.gso_type |= TAP_GSO_ECN;
        v.gso_size = (uint16_t)mss;
    }
    uint8_t raw[16];
    tap_vnet_encode(raw, &v);
    uint32_t tlen = (uint32_t)(len - l4);
    uint32_t sum = v6 ? csum_pseudo_v6(frame + l3 + 8, frame + l3 + 24, TAP_IPPROTO_TCP, tlen)
                      : csum_pseudo_v4(frame + l3 + 12, frame + l3 + 16, TAP_IPPROTO_TCP,
                                       (uint16_t)tlen);
    uint8_t check[2];
    tap_put16(check, csum_fold(sum));
    struct iovec iov[4] = {
        { .iov_base = raw, .iov_len = t->vnet_hdr_len },
        { .iov_base = (void *)frame, .iov_len = l4 + 16 },
        { .iov_base = check, .iov_len = 2 },
        { .iov_base = (void *)(frame + l4 + 18), .iov_len = len - l4 - 18 },
    };
    if (tap_writev(t, iov, 4)) {
        st->tx_frames++;
        st->tx_bytes += len;
        if (v.gso_type != TAP_GSO_NONE)
            st->tx_gso_frames++;
        return 1;
    }
    st->tx_write_failed++;
    st->tx_errors++;
    return 0;
}

/* Most segments one coalesced write carries (iovecs: header, headers, payloads). */
#define TAP_TX_RUN_MAX 64

/* How many of frames[0 .. n) form a run one super-frame can carry (1 if
 * none): consecutive segments of one TCP connection, each (but the last,
 * which may be shorter) with the first's payload length, sequence numbers
 * contiguous, every header byte equal but the IP length, identification
 * and checksum, the TCP sequence number and checksum, and PSH/FIN on the
 * last segment.  Such a run is what a TSO sender hands a NIC as one
 * segment (RFC 9293 section 3.8.6.2 leaves the cut to the sender), so the
 * kernel receives the same bytes in order either way.  SYN, RST, URG and
 * CWR segments go alone. */
static inline size_t tap_tx_run(const uint8_t *const *frames, const size_t *lens, size_t n)
{
    uint32_t l3, l4, hlen, v6;
    if (n < 2 || tap_tcp_headers(frames[0], lens[0], &l3, &l4, &hlen, &v6) != 0)
        return 1;
    const uint8_t *f0 = frames[0];
    size_t mss = lens[0] - hlen;
    /* FIN or PSH on the first segment ends the run there */
    if (mss == 0 || (f0[l4 + 13] & (TAP_TCP_FIN | TAP_TCP_PSH | 0x02 | 0x04 | 0x20 | TAP_TCP_CWR)))
        return 1;
    size_t total = lens[0] - l3;
    uint32_t next_seq = tap_get32(f0 + l4 + 4) + (uint32_t)mss;
    size_t k = 1;
    while (k < n && k < TAP_TX_RUN_MAX) {
        const uint8_t *f = frames[k];
        size_t len = lens[k];
        uint32_t a3, a4, ah, av6;
        if (len <= hlen || len - hlen > mss || total + (len - hlen) > 0xffff ||
            tap_tcp_headers(f, len, &a3, &a4, &ah, &av6) != 0 || ah != hlen || a4 != l4)
            break;
        /* Ethernet, then IP but for the fields that differ per segment */
        if (memcmp(f, f0, l3) != 0)
            break;
        if (v6) {
            if (memcmp(f + l3, f0 + l3, 4) != 0 || memcmp(f + l3 + 6, f0 + l3 + 6, 34) != 0)
                break;
        } else {
            if (f[l3] != f0[l3] || f[l3 + 1] != f0[l3 + 1] ||
                memcmp(f + l3 + 6, f0 + l3 + 6, 4) != 0 ||
                memcmp(f + l3 + 12, f0 + l3 + 12, l4 - l3 - 12) != 0)
                break;
        }
        /* TCP: ports, then acknowledgment, offset, window, urgent pointer, options */
        if (memcmp(f + l4, f0 + l4, 4) != 0 || tap_get32(f + l4 + 4) != next_seq ||
            memcmp(f + l4 + 8, f0 + l4 + 8, 5) != 0 || memcmp(f + l4 + 14, f0 + l4 + 14, 2) != 0 ||
            memcmp(f + l4 + 18, f0 + l4 + 18, hlen - l4 - 18) != 0)
            break;
        uint8_t extra = f[l4 + 13] ^ f0[l4 + 13];
        if (extra & (uint8_t)~(TAP_TCP_FIN | TAP_TCP_PSH))
            break;
        total += len - hlen;
        next_seq += (uint32_t)(len - hlen);
        k++;
        /* only the last segment may be short or carry PSH/FIN */
        if (extra || len - hlen < mss)
            break;
    }
    return k;
}

/* Write frames[0 .. k) (a run from tap_tx_run, k >= 2) as one super-frame:
 * the first frame's headers with the IP length and header checksum for the
 * whole run and the last frame's flags, then every payload, gathered by
 * writev without a copy; the kernel cuts it at the first payload's length
 * and completes the TCP checksum.  Returns k if the kernel took it (each
 * frame counts in tx_frames), else 0 (each frame in tx_write_failed and
 * tx_errors). */
static inline size_t tap_tx_coalesced(tap_t *t, const uint8_t *const *frames, const size_t *lens,
                                      size_t k)
{
    tap_stats_t *st = &t->st;
    uint32_t l3 = 0, l4 = 0, hlen = 0, v6 = 0;
    /* tap_tx_run parsed this frame already */
    (void)tap_tcp_headers(frames[0], lens[0], &l3, &l4, &hlen, &v6);
    uint8_t hdr[TAP_ETH_HLEN + 4 + 60 + 60];
    struct iovec iov[TAP_TX_RUN_MAX + 2];
    uint8_t raw[16];
    size_t payload = 0;
    uint64_t bytes = 0;
    for (size_t i = 0; i < k; i++) {
        iov[2 + i].iov_base = (void *)(frames[i] + hlen);
        iov[2 + i].iov_len = lens[i] - hlen;
        payload += lens[i] - hlen;
        bytes += lens[i];
    }
    memcpy(hdr, frames[0], hlen);
    uint32_t ip_len = (uint32_t)(hlen - l3 + payload);
    if (v6) {
        tap_put16(hdr + l3 + 4, ip_len - 40);
    } else {
        tap_put16(hdr + l3 + 2, ip_len);
        tap_put16(hdr + l3 + 10, 0);
        tap_put16(hdr + l3 + 10, csum_compute(hdr + l3, l4 - l3, 0));
    }
    hdr[l4 + 13] = frames[k - 1][l4 + 13];
    uint32_t tlen = (uint32_t)(hlen - l4 + payload);
    uint32_t sum = v6 ? csum_pseudo_v6(hdr + l3 + 8, hdr + l3 + 24, TAP_IPPROTO_TCP, tlen)
                      : csum_pseudo_v4(hdr + l3 + 12, hdr + l3 + 16, TAP_IPPROTO_TCP,
                                       (uint16_t)tlen);
    tap_put16(hdr + l4 + 16, csum_fold(sum));
    tap_vnet_hdr_t v = {
        .flags = TAP_VNET_F_NEEDS_CSUM, .gso_type = v6 ? TAP_GSO_TCPV6 : TAP_GSO_TCPV4,
        .hdr_len = (uint16_t)hlen, .gso_size = (uint16_t)(lens[0] - hlen),
        .csum_start = (uint16_t)l4, .csum_offset = 16,
    };
    tap_vnet_encode(raw, &v);
    iov[0].iov_base = raw;
    iov[0].iov_len = t->vnet_hdr_len;
    iov[1].iov_base = hdr;
    iov[1].iov_len = hlen;
    if (tap_writev(t, iov, (int)k + 2)) {
        st->tx_frames += k;
        st->tx_bytes += bytes;
        st->tx_gso_frames++;
        st->tx_gso_segments += k;
        return k;
    }
    st->tx_write_failed += k;
    st->tx_errors += k;
    return 0;
}

/* Write frames[i][0 .. lens[i]) for each i; returns how many were sent.
 * Rejected frames are counted and skipped; the rest still go.  With
 * offloads, runs of segments of one TCP connection (tap_tx_run) go as one
 * super-frame each. */
static inline size_t tap_tx_vec(tap_t *t, const uint8_t *const *frames, const size_t *lens, size_t n)
{
    size_t sent = 0;
    for (size_t i = 0; i < n;) {
        size_t k = t->vnet_hdr_len ? tap_tx_run(frames + i, lens + i, n - i) : 1;
        if (k >= 2) {
            sent += tap_tx_coalesced(t, frames + i, lens + i, k);
        } else {
            sent += (size_t)tap_tx_one(t, frames[i], lens[i]);
            k = 1;
        }
        i += k;
    }
    return sent;
}

/* Write buffer handles[i] of p, lengths[i] bytes, for each i, straight from
 * the pool (no copy); returns how many were sent.  The buffers stay
 * allocated: the caller frees them.  A handle that is not an allocated
 * buffer, or a length past its buffer, is counted (tx_bad_handle) and
 * skipped, never read. */
static inline size_t tap_tx_batch(tap_t *t, bufpool_t *p, const uint64_t *handles,
                                  const uint32_t *lengths, size_t n)
{
    size_t sent = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t h = handles[i];
        if (h >= p->count || !buf_is_allocated(p, h) || lengths[i] > p->size) {
            t->st.tx_bad_handle++;
            t->st.tx_errors++;
            continue;
        }
        sent += (size_t)tap_tx_one(t, buf_ptr(p, h), lengths[i]);
    }
    return sent;
}

#endif
