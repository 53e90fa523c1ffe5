/* Linux TAP devices: open, configure, and move batches of Ethernet frames
 * between the device's file descriptor and a buffer pool.
 *
 * The batch loops run without the GIL and never allocate.  A batch's caller
 * holds the interface's serializer, so exactly one thread updates a
 * tap_stats_t at a time; readers in other threads may see a counter a batch
 * behind (aligned 64-bit loads and stores never tear on x86-64).
 *
 * Frame layout on the file descriptor: the device is opened IFF_NO_PI, so
 * each read(2)/write(2) is exactly one Ethernet frame without FCS.  A future
 * IFF_VNET_HDR mode prepends a struct virtio_net_hdr to each frame: its
 * length goes in tap_t.vnet_hdr_len (always 0 today), and the header
 * becomes a first iovec in tap_rx_batch's readv and a writev in tap_tx_one,
 * so frames in the pool stay plain Ethernet.
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
#include <linux/if_tun.h>

#include "buffers.h"

#define TAP_ETH_HLEN 14          /* shortest frame the kernel accepts on write */
#define TAP_MAX_FRAME 65535      /* longest frame one read can carry */

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
} tap_stats_t;

typedef struct {
    int fd;                      /* non-blocking /dev/net/tun descriptor, -1 when closed */
    int wake_fd;                 /* eventfd that ends a tap_wait early, -1 when closed */
    uint32_t max_frame;          /* longest frame transmitted: MTU + Ethernet + one 802.1Q tag */
    uint32_t vnet_hdr_len;       /* bytes of virtio_net_hdr before each frame; 0 (no offloads) */
    tap_stats_t st;
} tap_t;

/* -- control path (called with the GIL; results 0 or an errno value) ----- */

/* Open /dev/net/tun as a TAP device named `name` (IFF_TAP | IFF_NO_PI,
 * non-blocking, close-on-exec) in the calling thread's network namespace.
 * The kernel's name for it (it expands "%d") goes to `out_name`
 * (IFNAMSIZ bytes).  Returns the fd, or -errno. */
static inline int tap_open(const char *name, char *out_name)
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
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
        int e = errno;
        close(fd);
        return -e;
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

/* Read one frame into buf (cap bytes); its length, 0 if none is queued, or
 * -errno.  A frame longer than cap is dropped (rx_oversize) and the next
 * one tried.  Counts rx_frames/rx_bytes. */
static inline ssize_t tap_rx_copy(tap_t *t, uint8_t *buf, size_t cap)
{
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
 * and shows on the next call. */
static inline ssize_t tap_rx_batch(tap_t *t, bufpool_t *p, uint64_t *handles, uint32_t *lengths,
                                   size_t n)
{
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
            r = read(t->fd, spill, sizeof spill);
            if (r >= 0) {
                st->rx_no_buffer++;
                continue;
            }
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN)
                break;
            st->rx_errors++;
            if (got == 0)
                return -errno;
            break;
        }
        struct iovec iov[2] = {
            { .iov_base = buf_ptr(p, h), .iov_len = p->size },
            { .iov_base = spill, .iov_len = 1 },
        };
        r = readv(t->fd, iov, 2);
        if (r < 0) {
            int e = errno;
            bufpool_free(p, h);
            if (e == EINTR)
                continue;
            if (e == EAGAIN)
                break;
            st->rx_errors++;
            if (got == 0)
                return -e;
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

/* Write one frame; 1 sent, 0 rejected (counted under its reason). */
static inline int tap_tx_one(tap_t *t, const uint8_t *frame, size_t len)
{
    tap_stats_t *st = &t->st;
    if (len < TAP_ETH_HLEN) {
        st->tx_runt++;
        st->tx_errors++;
        return 0;
    }
    if (len > t->max_frame) {
        st->tx_oversize++;
        st->tx_errors++;
        return 0;
    }
    for (;;) {
        ssize_t r = write(t->fd, frame, len);
        if (r >= 0) {
            st->tx_frames++;
            st->tx_bytes += len;
            return 1;
        }
        if (errno != EINTR)
            break;
    }
    st->tx_write_failed++;
    st->tx_errors++;
    return 0;
}

/* Write frames[i][0 .. lens[i]) for each i; returns how many were sent.
 * Rejected frames are counted and skipped; the rest still go. */
static inline size_t tap_tx_vec(tap_t *t, const uint8_t *const *frames, const size_t *lens, size_t n)
{
    size_t sent = 0;
    for (size_t i = 0; i < n; i++)
        sent += (size_t)tap_tx_one(t, frames[i], lens[i]);
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
