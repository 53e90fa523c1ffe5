/*
 * tcb.h: the hot part of a TCP connection's TCB, shared by the demux (C,
 * without the GIL) and the socket layer (Python), and the immediate ACK the
 * demux sends for in-sequence data (RFC 9293 3.8.6.3, RFC 1122 4.2.3.2).
 *
 * Who writes what.
 *   - `lock` is a try-lock word (0 free, 1 held).  Every field below it is
 *     read and written only by its holder.  The demux only ever *tries* it:
 *     it never waits for Python, which may be descheduled while holding it.
 *     Python takes it with tcb_lock (spinning, then yielding): the demux
 *     holds it for a few dozen instructions.
 *   - `armed` is set by Python, holding the lock, when the connection is
 *     ESTABLISHED with no out-of-order data, no FIN, and nothing left on its
 *     PCQ (so `rcv_nxt` can be the engine's).  The demux clears it, with or
 *     without the lock (a plain store: a lost clear only loses a chance, see
 *     the invariant), whenever a segment does not fit the fast path.
 *   - The invariant that makes the ACKs right: every octet below `rcv_nxt`
 *     is either in the engine's receive buffer or in a segment on the
 *     socket's PCQ, ahead of anything later.  The demux advances `rcv_nxt`
 *     only past a segment it has just put on the PCQ; Python sets it to the
 *     engine's RCV.NXT only when the PCQ is empty.  A segment the demux put
 *     but could not account for (lock busy) leaves `rcv_nxt` behind it, so
 *     the next segment does not match and disarms.
 *   - Memory order: tcb_trylock is an acquire exchange and tcb_unlock a
 *     release store, so everything written under the lock is seen by the
 *     next holder.  `armed` is read without the lock as a hint only, and
 *     read again under it before anything is decided.
 */
#ifndef FASTPROTO_TCB_H
#define FASTPROTO_TCB_H

#include <stdint.h>
#include <string.h>
#include <sched.h>
#include <time.h>

#define TCB_TMPL_MAX 96     /* Ethernet + IPv4 + TCP + NOP NOP TS, with room */
#define TCB_TCP_OFF 34      /* the template's TCP header: Ethernet 14 + IPv4 20 */

typedef struct {
    uint32_t lock;          /* try-lock word */
    uint32_t armed;         /* fast path on */
    uint32_t rcv_nxt;       /* next octet expected, as queued in order */
    uint32_t rcv_edge;      /* RCV.NXT + RCV.WND as the engine offered it */
    uint32_t last_ack;      /* Last.ACK.sent by either side (RFC 7323 4.3) */
    uint32_t core_ack;      /* the last ACK number the demux sent ... */
    uint32_t core_edge;     /* ... with this right window edge */
    uint32_t core_valid;    /* core_ack/core_edge hold an ACK sent */
    uint32_t unacked;       /* octets in order since the last ACK */
    uint32_t mss;           /* receive MSS: a full-sized segment */
    uint32_t snd_nxt;       /* our sequence number for a pure ACK (SND.MAX) */
    uint32_t ts_recent;     /* TS.Recent (RFC 7323 4.3) */
    uint32_t ts_offset;     /* TSval = monotonic ms + ts_offset */
    uint32_t psum;          /* pseudo-header sum of the template's TCP segment */
    uint8_t  ts_ok;         /* timestamps agreed: the template has NOP NOP TS */
    uint8_t  wscale;        /* our receive window shift */
    uint16_t tmpl_len;      /* bytes of tmpl; 0: none */
    uint32_t acks;          /* ACKs this connection's demux sent */
    uint32_t ack_bytes;     /* an ACK once this many octets are unacknowledged */
    uint32_t pending;       /* octets arrived in order since the last ACK: one
                               is sent at the end of the batch (tcb_flush) */
    uint32_t ts_max;        /* the newest TSval the engine may hold as TS.Recent
                               when it reaches the next segment: its TS.Recent
                               when armed and every TSval queued since, pure
                               ACKs included.  A segment older than this could
                               fail the engine's PAWS test (RFC 7323 5.3) after
                               the demux acknowledged it, so it disarms. */
    uint8_t  tmpl[TCB_TMPL_MAX];
} tcb_t;

/* Disarm reasons and other events, for the demux's counters. */
enum {
    TCB_C_ACKS,             /* immediate ACKs built */
    TCB_C_SEGMENTS,         /* in-sequence segments accounted */
    TCB_C_OUT_OF_ORDER,     /* disarmed: not at rcv_nxt */
    TCB_C_FLAGS,            /* disarmed: SYN/FIN/RST/URG/ECE/CWR or no ACK */
    TCB_C_BUSY,             /* disarmed: Python held the lock */
    TCB_C_WINDOW,           /* disarmed: beyond the offered window */
    TCB_C_TIMESTAMPS,       /* disarmed: TS missing or older than TS.Recent */
    TCB_C_FRAGMENT,         /* disarmed: TCP in IP fragments */
    TCB_C_AREA_FULL,        /* disarmed: no room for the ACK frame */
    TCB_C_ACK_UNSENT,       /* disarmed: acknowledges data we never sent */
    TCB_NCOUNTERS
};

static inline int tcb_trylock(tcb_t *t)
{
    /* acquire: the holder sees what the previous holder wrote */
    return __atomic_exchange_n(&t->lock, 1u, __ATOMIC_ACQUIRE) == 0;
}

static inline void tcb_lock(tcb_t *t)
{
    /* Only Python waits, and the demux holds the lock briefly. */
    unsigned spins = 0;
    while (!tcb_trylock(t)) {
        while (__atomic_load_n(&t->lock, __ATOMIC_RELAXED)) {
            if (++spins > 1000) {
                sched_yield();
                spins = 0;
            }
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
        }
    }
}

static inline void tcb_unlock(tcb_t *t)
{
    /* release: what was written under the lock is visible before it is free */
    __atomic_store_n(&t->lock, 0u, __ATOMIC_RELEASE);
}

static inline void tcb_disarm(tcb_t *t)
{
    __atomic_store_n(&t->armed, 0u, __ATOMIC_RELAXED);
}

/* Milliseconds of CLOCK_MONOTONIC, rounded exactly as Python's
 * int(time.monotonic() * 1000.0), so the demux's TSvals and the engine's
 * never disagree by a tick (the peer's PAWS check, RFC 7323 5.3). */
static inline uint32_t tcb_clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
    double d = (double)ns;
    d /= 1e9;
    return (uint32_t)(int64_t)(d * 1000.0);
}

static inline int32_t tcb_seq_diff(uint32_t a, uint32_t b)
{
    return (int32_t)(a - b);
}

static inline void tcb_put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);  p[3] = (uint8_t)v;
}

static inline uint32_t tcb_get32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* The sum of the IPv4 pseudo-header of the template's TCP segment
 * (RFC 9293 3.1): addresses, protocol, TCP length. */
static inline uint32_t tcb_pseudo_sum(const uint8_t *ip, uint32_t tcp_len)
{
    uint32_t s = 0;
    for (int i = 12; i < 20; i += 2)
        s += ((uint32_t)ip[i] << 8) | ip[i + 1];
    return s + 6u + tcp_len;
}

/* The window field for an ACK of `ack`: the engine's rule (RCV.WND >> shift,
 * at most 0xFFFF), so an engine ACK for the same state is the same. */
static inline uint32_t tcb_window_field(const tcb_t *t, uint32_t ack)
{
    int32_t w = tcb_seq_diff(t->rcv_edge, ack);
    if (w <= 0)
        return 0;
    uint32_t f = (uint32_t)w >> t->wscale;
    return f < 0xFFFF ? f : 0xFFFF;
}

/* Write into `out` the pure ACK <SEQ=snd_nxt><ACK=rcv_nxt> from the
 * template with the window, TSval/TSecr and the TCP checksum; its length.
 * The IPv4 header (length, identification 0, checksum) is the template's. */
static inline uint32_t tcb_build_ack(const tcb_t *t, uint8_t *out, uint32_t tsval)
{
    uint32_t n = t->tmpl_len;
    memcpy(out, t->tmpl, n);
    uint8_t *tcp = out + TCB_TCP_OFF;
    /* the segment itself: a short frame's Ethernet padding is not summed */
    uint32_t tcp_len = (uint32_t)(tcp[12] >> 4) * 4;
    tcb_put32(tcp + 4, t->snd_nxt);
    tcb_put32(tcp + 8, t->rcv_nxt);
    uint32_t win = tcb_window_field(t, t->rcv_nxt);
    tcp[14] = (uint8_t)(win >> 8);
    tcp[15] = (uint8_t)win;
    if (t->ts_ok) {
        tcb_put32(tcp + 24, tsval);
        tcb_put32(tcp + 28, t->ts_recent);
    }
    tcp[16] = tcp[17] = 0;
    uint32_t s = t->psum;
    for (uint32_t i = 0; i + 1 < tcp_len; i += 2)
        s += ((uint32_t)tcp[i] << 8) | tcp[i + 1];
    while (s >> 16)
        s = (s & 0xFFFF) + (s >> 16);
    s = ~s & 0xFFFF;
    tcp[16] = (uint8_t)(s >> 8);
    tcp[17] = (uint8_t)s;
    return n;
}

#define TCB_ACK 0x10
#define TCB_PSH 0x08

/* The ACK of everything up to rcv_nxt, built into out (lock held). */
static inline void tcb_ack_now(tcb_t *t, uint8_t *out, uint32_t *out_len, uint64_t *cnt)
{
    uint32_t tsnow = t->ts_ok ? tcb_clock_ms() + t->ts_offset : 0;
    *out_len = tcb_build_ack(t, out, tsnow);
    t->last_ack = t->core_ack = t->rcv_nxt;
    t->core_edge = t->rcv_edge;
    t->core_valid = 1;
    t->unacked = 0;
    t->acks++;
    cnt[TCB_C_ACKS]++;
}

/*
 * One TCP segment just put on the socket's PCQ (its parse: seq, flags,
 * payload length, TSval when `has_ts`).  Returns 1 when an ACK frame was
 * written to `out` (its length in *out_len), else 0.  `room`: whether `out`
 * may be written.  `cnt`: the counters (TCB_NCOUNTERS).
 */
static inline int tcb_segment(tcb_t *t, uint32_t seq, uint32_t ack, uint32_t tcp_flags,
                              uint32_t plen, int has_ts, uint32_t tsval, int fragment, int room,
                              uint8_t *out, uint32_t *out_len, uint64_t *cnt)
{
    if (!__atomic_load_n(&t->armed, __ATOMIC_RELAXED))
        return 0;
    if ((tcp_flags & 0xFFF & ~(uint32_t)(TCB_ACK | TCB_PSH)) || !(tcp_flags & TCB_ACK)) {
        /* SYN, FIN, RST, URG, ECE, CWR: the engine's (RFC 9293 3.10.7.4) */
        tcb_disarm(t);
        cnt[TCB_C_FLAGS]++;
        return 0;
    }
    if (fragment) {
        tcb_disarm(t);
        cnt[TCB_C_FRAGMENT]++;
        return 0;
    }
    if (!tcb_trylock(t)) {
        /* Python is changing this TCB: the segment is left to the engine. */
        tcb_disarm(t);
        cnt[TCB_C_BUSY]++;
        return 0;
    }
    int sent = 0;
    int ts_older = t->ts_ok && has_ts && tcb_seq_diff(tsval, t->ts_max) < 0;
    if (t->ts_ok && has_ts && !ts_older)
        t->ts_max = tsval;
    if (!t->armed) {
        /* disarmed since the hint was read */
    } else if (plen == 0) {
        /* a pure ACK: nothing to acknowledge (its TSval is in ts_max) */
    } else if (seq != t->rcv_nxt) {
        t->armed = 0;
        cnt[TCB_C_OUT_OF_ORDER]++;
    } else if (tcb_seq_diff(t->rcv_edge, seq + plen) < 0) {
        t->armed = 0;
        cnt[TCB_C_WINDOW]++;
    } else if (tcb_seq_diff(ack, t->snd_nxt) > 0) {
        /* RFC 9293 3.10.7.4: the engine drops it, data and all */
        t->armed = 0;
        cnt[TCB_C_ACK_UNSENT]++;
    } else if (t->ts_ok && (!has_ts || ts_older || tcb_seq_diff(tsval, t->ts_recent) < 0)) {
        /* RFC 7323 3.2 (timestamps on every segment) and 5.3 (PAWS) */
        t->armed = 0;
        cnt[TCB_C_TIMESTAMPS]++;
    } else {
        int due = t->unacked + plen >= t->ack_bytes;
        if (due && !room) {
            t->armed = 0;
            cnt[TCB_C_AREA_FULL]++;
        } else {
            /* RFC 7323 4.3: TS.Recent from the segment at Last.ACK.sent */
            if (t->ts_ok && seq == t->last_ack)
                t->ts_recent = tsval;
            t->rcv_nxt = seq + plen;
            t->unacked += plen;
            cnt[TCB_C_SEGMENTS]++;
            if (due) {
                /* RFC 9293 3.8.6.3 / RFC 1122 4.2.3.2: at least every second
                 * full-sized segment */
                tcb_ack_now(t, out, out_len, cnt);
                sent = 1;
            } else {
                t->pending = 1;
            }
        }
    }
    tcb_unlock(t);
    return sent;
}

/*
 * At the end of a batch, for a socket that got segments in it: the ACK of
 * what arrived in order since the last one, if any, so that every batch's
 * data is acknowledged at once rather than after the delayed-ACK time (the
 * receive-offload way: one ACK per coalesced run).  Same return as
 * tcb_segment.  A busy lock disarms: the engine then acknowledges.
 */
static inline int tcb_flush(tcb_t *t, int room, uint8_t *out, uint32_t *out_len, uint64_t *cnt)
{
    if (!__atomic_load_n(&t->pending, __ATOMIC_RELAXED))
        return 0;
    if (!tcb_trylock(t)) {
        tcb_disarm(t);
        cnt[TCB_C_BUSY]++;
        return 0;
    }
    int sent = 0;
    if (t->armed && t->pending && t->unacked) {
        if (!room) {
            t->armed = 0;
            cnt[TCB_C_AREA_FULL]++;
        } else {
            tcb_ack_now(t, out, out_len, cnt);
            sent = 1;
        }
    }
    t->pending = 0;
    tcb_unlock(t);
    return sent;
}

#endif
