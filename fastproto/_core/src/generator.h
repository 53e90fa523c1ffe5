/*
 * A traffic generator standing in for a NIC under load: one thread offers
 * copies of a template frame at a set rate into a bounded rx ring (the
 * NIC's receive FIFO); a full ring drops the frame at once and counts it
 * (rx_ring_full), with no work spent on it beyond the count.  The stack
 * takes frames off the ring in batches, copying them into its buffer pool
 * as a NIC's DMA would, and sleeps for the "interrupt" on an eventfd that
 * the generator signals at most once per sleep.
 *
 * The ring has one producer (the generator thread) and one consumer (the
 * device's receive and flush, which the interface's serializer keeps to one
 * thread at a time):
 *
 *     head  next position the producer fills.  Written by the producer only.
 *     tail  next position the consumer takes.  Written by the consumer only.
 *     head - tail (0..size) frames are queued; positions are 64-bit and
 *     only grow, slot = position % size.
 *
 * Memory orders.  The producer writes a slot's bytes, then stores head
 * (release); the consumer loads head (acquire) before reading those bytes.
 * The consumer copies a slot out, then stores tail (release); the producer
 * loads tail (acquire) before overwriting that slot on the next lap.
 *
 * The interrupt.  `armed` is 1 while the consumer sleeps (or is about to).
 * The producer, after publishing frames, exchanges `armed` with 0 and
 * signals the eventfd only if it was 1: one interrupt per sleep, however
 * many frames arrive.  The consumer stores armed = 1 and only then looks at
 * head; the producer stores head and only then exchanges armed.  Both are
 * seq_cst, so at least one side sees the other's store (the store-load
 * pattern of Dekker's algorithm): either the consumer sees the frames and
 * does not sleep, or the producer sees armed and signals.  A signal left
 * over from an earlier sleep only makes a later wait look at the ring once
 * more (gen_wait loops on an empty ring).
 *
 * Pacing.  The producer keeps the due time of its next frame (ns, CLOCK_MONOTONIC)
 * and sleeps until it, or for GEN_SLEEP_MIN_NS if that is later, with
 * clock_nanosleep(TIMER_ABSTIME) (timer slack set to 1 us for this thread).
 * On waking it offers every frame due by now, up to `burst` at once; frames due beyond that bound are not offered at all
 * (counted as lag_frames), and the schedule restarts from now, so the
 * achieved rate, offered / elapsed, says honestly what the wire carried.
 */
#ifndef FASTPROTO_GENERATOR_H
#define FASTPROTO_GENERATOR_H

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "buffers.h"

#define GEN_MAX_FRAME 9216

typedef struct {
    /* -- set before the thread starts (rate may change while it runs) -- */
    uint8_t *slots;              /* size * slot_len bytes */
    uint32_t size;               /* ring slots */
    uint32_t slot_len;           /* bytes per slot (template length, rounded up) */
    uint32_t frame_len;          /* bytes of the template */
    int32_t sport_off;           /* UDP source port offset; -1: the port stays */
    int32_t csum_off;            /* UDP checksum offset; -1: none to update */
    uint32_t sport_span;         /* source ports cycled: base .. base + span - 1 */
    uint16_t sport_base;
    uint16_t csum_base;          /* the template's UDP checksum */
    uint64_t burst;              /* most frames offered at one wake */
    uint64_t limit;              /* stop after offering this many (0: no limit) */
    uint64_t rate_bits;          /* frames per second, a double's bits (atomic) */
    uint8_t tmpl[GEN_MAX_FRAME];

    /* -- shared ---------------------------------------------------------- */
    uint64_t head;               /* producer's (see above) */
    uint64_t tail;               /* consumer's */
    int armed;                   /* consumer asleep: signal it */
    int up;                      /* 0: frames arriving are dropped (rx_dropped_down) */
    int stop;                    /* ask the thread to end */
    int irq_fd;                  /* eventfd: the interrupt */
    int routed;                  /* 1: the interrupt goes to notify_fd instead */
    int notify_armed;            /* the notify_fd listener wants the next arrival */
    int notify_fd;               /* eventfd: the routed interrupt */
    int wake_fd;                 /* eventfd: ends a wait early (stopping a puller) */
    pthread_t thread;
    int running;                 /* thread created and not yet joined (owner's only) */

    /* -- the producer's counters (one writer; others load them relaxed) -- */
    uint64_t offered;            /* frames put on the wire, dropped or not */
    uint64_t ring_full;          /* dropped: the ring was full */
    uint64_t dropped_down;       /* dropped: the interface was down */
    uint64_t interrupts;         /* signals of irq_fd */
    uint64_t notifies;           /* signals of notify_fd (routed interrupts) */
    uint64_t lag_frames;         /* due but never offered: the thread fell behind */
    uint64_t wakes;              /* times the thread woke to offer */
    uint64_t cpu_ns;             /* the thread's CPU time so far */
    uint64_t start_ns, end_ns;   /* CLOCK_MONOTONIC of the first and last offer round */
    uint64_t tid;                /* the thread's kernel id (0 before it runs) */

    /* -- the consumer's counters (serialized by the interface) ----------- */
    uint64_t rx_frames, rx_bytes, rx_no_buffer, rx_oversize, rx_flushed_down;
} gen_t;

#define GEN_LOAD(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define GEN_STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)

static inline uint64_t gen_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline uint64_t gen_thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* One's-complement 16-bit add (RFC 1071). */
static inline uint32_t gen_csum_fold(uint32_t s)
{
    while (s >> 16)
        s = (s & 0xFFFF) + (s >> 16);
    return s;
}

/* The UDP checksum after the source port went from `old` to `new` (RFC 1624
 * eqn. 3: HC' = ~(~HC + ~m + m')).  A zero checksum means "none" for UDP
 * over IPv4 (RFC 768) and stays zero; a computed zero is sent as 0xFFFF. */
static inline uint16_t gen_udp_csum_update(uint16_t hc, uint16_t old, uint16_t new_)
{
    if (hc == 0)
        return 0;
    uint32_t s = (uint16_t)~hc;
    s += (uint16_t)~old;
    s += new_;
    uint16_t r = (uint16_t)~gen_csum_fold(s);
    return r == 0 ? 0xFFFF : r;
}

/* 0, or an errno value.  `g` must be zeroed, with the configuration filled. */
static inline int gen_init(gen_t *g)
{
    g->irq_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (g->irq_fd < 0)
        return errno;
    g->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (g->wake_fd < 0) {
        int e = errno;
        close(g->irq_fd);
        g->irq_fd = -1;
        return e;
    }
    g->notify_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (g->notify_fd < 0) {
        int e = errno;
        close(g->irq_fd);
        close(g->wake_fd);
        g->irq_fd = g->wake_fd = -1;
        return e;
    }
    size_t bytes = (size_t)g->size * g->slot_len;
    if (posix_memalign((void **)&g->slots, 64, bytes) != 0) {
        close(g->irq_fd);
        close(g->wake_fd);
        close(g->notify_fd);
        g->irq_fd = g->wake_fd = g->notify_fd = -1;
        g->slots = NULL;
        return ENOMEM;
    }
    memset(g->slots, 0, bytes);
    g->up = 1;
    return 0;
}

/* Put `n` frames on the wire: into the ring while it has room, the rest
 * dropped and counted.  Producer only. */
static inline void gen_offer(gen_t *g, uint64_t n, uint64_t *seq)
{
    GEN_STORE(&g->offered, g->offered + n);
    if (!__atomic_load_n(&g->up, __ATOMIC_RELAXED)) {
        GEN_STORE(&g->dropped_down, g->dropped_down + n);
        return;
    }
    uint64_t head = g->head;
    uint64_t tail = __atomic_load_n(&g->tail, __ATOMIC_ACQUIRE);
    uint64_t room = g->size - (head - tail);
    uint64_t k = n < room ? n : room;
    if (n > k)
        GEN_STORE(&g->ring_full, g->ring_full + (n - k));
    if (k == 0)
        return;
    const uint32_t len = g->frame_len;
    for (uint64_t i = 0; i < k; i++) {
        uint8_t *slot = g->slots + ((head + i) % g->size) * (size_t)g->slot_len;
        memcpy(slot, g->tmpl, len);
        if (g->sport_off >= 0) {
            uint16_t port = (uint16_t)(g->sport_base + (*seq % g->sport_span));
            (*seq)++;
            slot[g->sport_off] = (uint8_t)(port >> 8);
            slot[g->sport_off + 1] = (uint8_t)port;
            if (g->csum_off >= 0) {
                uint16_t c = gen_udp_csum_update(g->csum_base, g->sport_base, port);
                slot[g->csum_off] = (uint8_t)(c >> 8);
                slot[g->csum_off + 1] = (uint8_t)c;
            }
        }
    }
    __atomic_store_n(&g->head, head + k, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&g->routed, __ATOMIC_SEQ_CST)) {
        /* Routed (a receiver pulls the ring itself): tell the listener. */
        if (__atomic_exchange_n(&g->notify_armed, 0, __ATOMIC_SEQ_CST)) {
            uint64_t one = 1;
            ssize_t r = write(g->notify_fd, &one, sizeof one);
            (void)r;
            GEN_STORE(&g->notifies, g->notifies + 1);
        }
    } else if (__atomic_exchange_n(&g->armed, 0, __ATOMIC_SEQ_CST)) {
        uint64_t one = 1;
        ssize_t r = write(g->irq_fd, &one, sizeof one);
        (void)r;  /* EAGAIN only near 2^64 pending: readable anyway */
        GEN_STORE(&g->interrupts, g->interrupts + 1);
    }
}

/* Frames per second offered from now on (any thread, while running too). */
static inline void gen_set_rate(gen_t *g, double rate)
{
    uint64_t bits;
    memcpy(&bits, &rate, sizeof bits);
    __atomic_store_n(&g->rate_bits, bits, __ATOMIC_RELAXED);
}

/* Most frames offered at one wake from now on (any thread). */
static inline void gen_set_burst(gen_t *g, uint64_t burst)
{
    __atomic_store_n(&g->burst, burst ? burst : 1, __ATOMIC_RELAXED);
}

static inline double gen_rate(const gen_t *g)
{
    uint64_t bits = __atomic_load_n(&g->rate_bits, __ATOMIC_RELAXED);
    double rate;
    memcpy(&rate, &bits, sizeof rate);
    return rate;
}

/* Longest sleep between looks at the stop flag, ns. */
#define GEN_SLEEP_MAX_NS 10000000ull
/* Shortest sleep, ns: a sleep and wake costs some 10 us of CPU (more in a
 * VM), so at high rates the thread sleeps this long and offers what fell
 * due meanwhile as one burst, as a NIC coalesces its interrupts. */
#define GEN_SLEEP_MIN_NS 200000ull

static inline void *gen_main(void *arg)
{
    gen_t *g = (gen_t *)arg;
    /* Wake when asked, not up to 50 us later (the default slack). */
    prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
    GEN_STORE(&g->tid, (uint64_t)syscall(SYS_gettid));
    uint64_t seq = 0;
    uint64_t now = gen_now_ns();
    /* elapsed_ns runs from the first start: `offered` counts since then too. */
    if (!GEN_LOAD(&g->start_ns))
        GEN_STORE(&g->start_ns, now);
    GEN_STORE(&g->end_ns, now);
    double next = (double)now;     /* due time of the next frame */
    while (!__atomic_load_n(&g->stop, __ATOMIC_ACQUIRE)) {
        double rate = gen_rate(g);
        now = gen_now_ns();
        if (rate > 0) {
            double period = 1e9 / rate;
            if ((double)now >= next) {
                uint64_t due = (uint64_t)(((double)now - next) / period) + 1;
                uint64_t burst = GEN_LOAD(&g->burst);
                if (due > burst) {
                    GEN_STORE(&g->lag_frames, g->lag_frames + (due - burst));
                    due = burst;
                    next = (double)now + period;
                } else {
                    next += (double)due * period;
                }
                if (g->limit && g->offered + due > g->limit)
                    due = g->limit - g->offered;
                gen_offer(g, due, &seq);
                GEN_STORE(&g->wakes, g->wakes + 1);
                GEN_STORE(&g->end_ns, now);
                GEN_STORE(&g->cpu_ns, gen_thread_cpu_ns());
                if (g->limit && g->offered >= g->limit)
                    break;
            }
        } else {
            next = (double)now + (double)GEN_SLEEP_MAX_NS;
        }
        uint64_t until = (uint64_t)next;
        if (until < now + GEN_SLEEP_MIN_NS)
            until = now + GEN_SLEEP_MIN_NS;
        if (until > now + GEN_SLEEP_MAX_NS)
            until = now + GEN_SLEEP_MAX_NS;
        if (until > now) {
            struct timespec ts = {(time_t)(until / 1000000000ull), (long)(until % 1000000000ull)};
            while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
            }
        }
    }
    GEN_STORE(&g->cpu_ns, gen_thread_cpu_ns());
    return NULL;
}

/* Start the generator thread: 0 or an errno value. */
static inline int gen_start(gen_t *g)
{
    if (g->running)
        return EBUSY;
    __atomic_store_n(&g->stop, 0, __ATOMIC_RELEASE);
    int rc = pthread_create(&g->thread, NULL, gen_main, g);
    if (rc == 0)
        g->running = 1;
    return rc;
}

/* Stop the generator thread and wait for it to end (no-op when not running). */
static inline void gen_stop(gen_t *g)
{
    if (!g->running)
        return;
    __atomic_store_n(&g->stop, 1, __ATOMIC_RELEASE);
    pthread_join(g->thread, NULL);
    g->running = 0;
}


/* Frames queued on the ring now (a look: it may change at once). */
static inline uint64_t gen_rx_queued(const gen_t *g)
{
    return __atomic_load_n(&g->head, __ATOMIC_ACQUIRE) - __atomic_load_n(&g->tail, __ATOMIC_RELAXED);
}

/* Take up to n frames off the ring into buffers of `p` (copied, as a NIC's
 * DMA would); fill handles/lengths and return how many.  A frame finding no
 * free buffer is taken off the ring and dropped (rx_no_buffer), one longer
 * than a buffer too (rx_oversize).  Consumer only. */
static inline size_t gen_rx_batch(gen_t *g, bufpool_t *p, uint64_t *handles, uint32_t *lengths,
                                  size_t n)
{
    uint64_t tail = g->tail;
    uint64_t head = __atomic_load_n(&g->head, __ATOMIC_ACQUIRE);
    uint64_t k = head - tail;
    if (k > n)
        k = n;
    if (k == 0)
        return 0;
    const uint32_t len = g->frame_len;
    size_t got = 0;
    if (len > p->size) {
        g->rx_oversize += k;
    } else {
        got = bufpool_alloc_many(p, handles, (size_t)k);
        g->rx_no_buffer += k - got;
        for (size_t i = 0; i < got; i++) {
            const uint8_t *slot = g->slots + ((tail + i) % g->size) * (size_t)g->slot_len;
            memcpy(buf_ptr(p, handles[i]), slot, len);
            lengths[i] = len;
        }
        g->rx_frames += got;
        g->rx_bytes += (uint64_t)got * len;
    }
    __atomic_store_n(&g->tail, tail + k, __ATOMIC_RELEASE);
    return got;
}

/* Drop every queued frame (the interface went down); how many.  Consumer only. */
static inline uint64_t gen_rx_flush(gen_t *g)
{
    uint64_t head = __atomic_load_n(&g->head, __ATOMIC_ACQUIRE);
    uint64_t k = head - g->tail;
    g->rx_flushed_down += k;
    __atomic_store_n(&g->tail, head, __ATOMIC_RELEASE);
    return k;
}

/* Make every gen_wait in progress return 2.  Any thread. */
static inline void gen_wake(const gen_t *g)
{
    uint64_t one = 1;
    ssize_t r = write(g->wake_fd, &one, sizeof one);
    (void)r;
}

static inline void gen_wake_clear(const gen_t *g)
{
    uint64_t v;
    ssize_t r = read(g->wake_fd, &v, sizeof v);
    (void)r;
}

/* Sleep up to timeout_ms (-1: no limit) for the interrupt.  1: frames are
 * queued; 2: gen_wake ended it; 0: timed out (or a stale interrupt found the
 * ring empty again: the caller looks at its clock and waits again). */
static inline int gen_wait(gen_t *g, int timeout_ms)
{
    __atomic_store_n(&g->armed, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&g->head, __ATOMIC_SEQ_CST) != __atomic_load_n(&g->tail, __ATOMIC_RELAXED)) {
        __atomic_store_n(&g->armed, 0, __ATOMIC_RELAXED);
        return 1;
    }
    struct pollfd fds[2] = {{g->irq_fd, POLLIN, 0}, {g->wake_fd, POLLIN, 0}};
    int rc = poll(fds, 2, timeout_ms);
    __atomic_store_n(&g->armed, 0, __ATOMIC_RELAXED);
    if (rc > 0 && (fds[0].revents & POLLIN)) {
        uint64_t v;
        ssize_t r = read(g->irq_fd, &v, sizeof v);
        (void)r;
    }
    if (gen_rx_queued(g))
        return 1;
    if (rc > 0 && (fds[1].revents & POLLIN))
        return 2;
    return 0;
}

/* Route the interrupt to notify_fd (1) or back to gen_wait (0).  Routed
 * back with frames queued, a sleeping gen_wait is signalled at once (the
 * arrivals it missed went to the listener). */
static inline void gen_set_routed(gen_t *g, int routed)
{
    if (routed) {
        __atomic_store_n(&g->notify_armed, 1, __ATOMIC_SEQ_CST);
        __atomic_store_n(&g->routed, 1, __ATOMIC_SEQ_CST);
        return;
    }
    __atomic_store_n(&g->routed, 0, __ATOMIC_SEQ_CST);
    if (gen_rx_queued(g) && __atomic_exchange_n(&g->armed, 0, __ATOMIC_SEQ_CST)) {
        uint64_t one = 1;
        ssize_t r = write(g->irq_fd, &one, sizeof one);
        (void)r;
    }
}

/* The listener of the routed interrupt: sleep up to timeout_ms for it.  1:
 * signalled since the last call (by an arrival or gen_notify_kick; the
 * listener is re-armed before returning, so an arrival during its handling
 * signals again: none is missed); 0: timed out. */
static inline int gen_notify_wait(gen_t *g, int timeout_ms)
{
    struct pollfd fd = {g->notify_fd, POLLIN, 0};
    int rc = poll(&fd, 1, timeout_ms);
    if (rc > 0 && (fd.revents & POLLIN)) {
        uint64_t v;
        ssize_t r = read(g->notify_fd, &v, sizeof v);
        (void)r;
        __atomic_store_n(&g->notify_armed, 1, __ATOMIC_SEQ_CST);
        return 1;
    }
    return 0;
}

/* End a gen_notify_wait in progress (to stop the listener).  Any thread. */
static inline void gen_notify_kick(const gen_t *g)
{
    uint64_t one = 1;
    ssize_t r = write(g->notify_fd, &one, sizeof one);
    (void)r;
}

/* Stop the thread, free the ring, close the eventfds.  Idempotent. */
static inline void gen_destroy(gen_t *g)
{
    gen_stop(g);
    if (g->irq_fd >= 0)
        close(g->irq_fd);
    if (g->wake_fd >= 0)
        close(g->wake_fd);
    if (g->notify_fd >= 0)
        close(g->notify_fd);
    g->irq_fd = g->wake_fd = g->notify_fd = -1;
    free(g->slots);
    g->slots = NULL;
}

#endif
