/*
 * Packet buffer pool: `count` buffers of `size` bytes in one block of memory
 * (a NumPy array owned by the Python object), named by handles 0..count-1
 * (the row numbers of that array).
 *
 * Free handles live in a bounded lock-free queue for many producers and many
 * consumers: the algorithm of src/pcq.h (D. Vyukov's per-slot sequence
 * numbers) with a CAS on the head too, since any thread may allocate.
 *
 *     tail  next position a free() fills.  Written by freeing threads (CAS).
 *     head  next position an alloc() takes.  Written by allocating threads (CAS).
 *     slot seq, doubled as in pcq.h:
 *         2p          free for the free() that claims position p
 *         2p + 1      holds the handle freed at position p
 *         2(p + cap)  taken by the alloc() of position p; free for p + cap
 *
 * alloc(): pos = head; slot seq == 2pos + 1 (acquire): CAS(head, pos, pos+1)
 * claims it, read the handle, store(seq, 2(pos + cap), release).  seq <
 * 2pos + 1: nothing freed at pos yet (empty).  seq > 2pos + 1: pos is stale.
 * free() is pcq_put with its ring sized so that it is never full (below).
 *
 * Memory orders: the seq release/acquire pairs order a handle's write before
 * its read, and an alloc's read of slot lap k before the free() that
 * overwrites it on lap k + 1.  They also hand the buffer's bytes over: what
 * the freeing thread wrote into a buffer happens before the allocating
 * thread's first access.  The head/tail CASes are relaxed: they only hand
 * out positions.
 *
 * No ABA: positions are 64-bit and only grow, so a CAS from a stale
 * position fails; a slot's seq names its lap.  (A Treiber stack of handles
 * would need a tag against ABA; this queue has none to need.)
 *
 * Allocation state.  Each buffer has an atomic byte, BUF_FREE or
 * BUF_ALLOCATED.  alloc() stores BUF_ALLOCATED after taking the handle;
 * free() first CASes BUF_ALLOCATED -> BUF_FREE and only then queues the
 * handle.  A second free of the same handle fails that CAS and is refused
 * (BUF_EFREE) without touching the queue, so at most `count` handles are ever
 * queued and no handle is queued twice: the pool cannot hand one buffer to
 * two owners because of a double free.  (A free of a handle someone else now
 * owns, after it was freed and allocated again, cannot be told apart from a
 * legitimate free: owners must not free what they no longer own.)
 *
 * Ring size.  cap is a power of two >= 2 * count.  Queued handles are at
 * most count, so a free() finds its slot still occupied only if an alloc()
 * that claimed the position cap earlier has not yet read it, while count
 * later allocs went by: a thread descheduled inside alloc().  free() then
 * waits for it (sched_yield), which is rare and bounded by that thread's
 * next time slice; free() never fails for want of room.
 */
#ifndef FASTPROTO_BUFFERS_H
#define FASTPROTO_BUFFERS_H

#include <sched.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define BUF_LINE 128

#define BUF_FREE      0
#define BUF_ALLOCATED 1

/* results of bufpool_free / bufpool_free_many */
#define BUF_OK      0
#define BUF_ERANGE  1   /* handle >= count */
#define BUF_EFREE   2   /* handle is not allocated (double free) */

/* largest count accepted: handles fit 32 bits with room to spare */
#define BUF_MAXCOUNT ((uint64_t)1 << 31)

typedef struct buf_slot {
    uint64_t seq;
    uint64_t handle;
} buf_slot;

typedef struct bufpool {
    /* read-only after bufpool_create */
    uint8_t *data;        /* count * size bytes, row h at data + h * size */
    uint64_t size;        /* bytes per buffer */
    uint64_t count;       /* number of buffers */
    uint64_t mask;        /* ring cap - 1 */
    uint8_t *state;       /* BUF_FREE / BUF_ALLOCATED per buffer */
    buf_slot *ring;
    char _pad0[BUF_LINE - 4 * sizeof(uint64_t) - 2 * sizeof(void *)];
    uint64_t tail;        /* free() side */
    char _pad1[BUF_LINE - sizeof(uint64_t)];
    uint64_t head;        /* alloc() side */
    char _pad2[BUF_LINE - sizeof(uint64_t)];
} bufpool_t;

static inline void buf_pause(unsigned *spins)
{
    if (++*spins < 64) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    } else {
        *spins = 0;
        sched_yield();
    }
}

/* A pool over data (count * size bytes, owned by the caller), all buffers
 * free.  NULL if count is 0 or too large, size is 0, or memory is short. */
static inline bufpool_t *bufpool_create(uint8_t *data, uint64_t count, uint64_t size)
{
    if (count < 1 || count > BUF_MAXCOUNT || size < 1)
        return NULL;
    uint64_t cap = 2;
    while (cap < 2 * count)
        cap <<= 1;
    void *mem = NULL;
    if (posix_memalign(&mem, BUF_LINE, sizeof(bufpool_t)) != 0)
        return NULL;
    bufpool_t *p = (bufpool_t *)mem;
    memset(p, 0, sizeof(*p));
    p->ring = NULL;
    if (posix_memalign(&mem, BUF_LINE, cap * sizeof(buf_slot)) != 0) {
        free(p);
        return NULL;
    }
    p->ring = (buf_slot *)mem;
    p->state = (uint8_t *)calloc(count, 1);
    if (p->state == NULL) {
        free(p->ring);
        free(p);
        return NULL;
    }
    p->data = data;
    p->size = size;
    p->count = count;
    p->mask = cap - 1;
    /* positions 0..count-1 hold handles 0..count-1; the rest are free */
    for (uint64_t i = 0; i < cap; i++) {
        p->ring[i].seq = i < count ? 2 * i + 1 : 2 * i;
        p->ring[i].handle = i;
    }
    p->head = 0;
    p->tail = count;
    return p;
}

static inline void bufpool_destroy(bufpool_t *p)
{
    if (p) {
        free(p->state);
        free(p->ring);
        free(p);
    }
}

static inline uint8_t *buf_ptr(const bufpool_t *p, uint64_t h)
{
    return p->data + h * p->size;
}

static inline int buf_is_allocated(const bufpool_t *p, uint64_t h)
{
    return h < p->count && __atomic_load_n(&p->state[h], __ATOMIC_RELAXED) == BUF_ALLOCATED;
}

/* Take one free buffer's handle into *h; 0 if none is free. */
static inline int bufpool_alloc(bufpool_t *p, uint64_t *h)
{
    uint64_t pos = __atomic_load_n(&p->head, __ATOMIC_RELAXED);
    for (;;) {
        buf_slot *s = &p->ring[pos & p->mask];
        uint64_t seq = __atomic_load_n(&s->seq, __ATOMIC_ACQUIRE);
        int64_t dif = (int64_t)(seq - (2 * pos + 1));
        if (dif == 0) {
            if (__atomic_compare_exchange_n(&p->head, &pos, pos + 1, 1,
                                            __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
                uint64_t handle = s->handle;
                __atomic_store_n(&s->seq, 2 * (pos + p->mask + 1), __ATOMIC_RELEASE);
                __atomic_store_n(&p->state[handle], BUF_ALLOCATED, __ATOMIC_RELAXED);
                *h = handle;
                return 1;
            }
        } else if (dif < 0) {
            return 0;
        } else {
            pos = __atomic_load_n(&p->head, __ATOMIC_RELAXED);
        }
    }
}

/* Take up to n free handles into out[0..k); returns k (0 if none is free).
 * One CAS claims each run of queued handles. */
static inline size_t bufpool_alloc_many(bufpool_t *p, uint64_t *out, size_t n)
{
    size_t got = 0;
    uint64_t pos = __atomic_load_n(&p->head, __ATOMIC_RELAXED);
    while (got < n) {
        /* count the ready run at pos (frees publish out of order, so each
         * slot is looked at) */
        size_t k = 0;
        while (got + k < n) {
            uint64_t seq = __atomic_load_n(&p->ring[(pos + k) & p->mask].seq, __ATOMIC_ACQUIRE);
            if (seq != 2 * (pos + k) + 1)
                break;
            k++;
        }
        if (k == 0) {
            uint64_t seq = __atomic_load_n(&p->ring[pos & p->mask].seq, __ATOMIC_ACQUIRE);
            if ((int64_t)(seq - (2 * pos + 1)) < 0)
                break;                      /* empty */
            pos = __atomic_load_n(&p->head, __ATOMIC_RELAXED);
            continue;                       /* stale pos */
        }
        /* the run's seqs cannot change before the CAS: only the alloc that
         * owns a position moves its slot on, and positions are owned via head */
        if (!__atomic_compare_exchange_n(&p->head, &pos, pos + k, 1,
                                         __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            continue;
        for (size_t i = 0; i < k; i++) {
            buf_slot *s = &p->ring[(pos + i) & p->mask];
            uint64_t handle = s->handle;
            __atomic_store_n(&s->seq, 2 * (pos + i + p->mask + 1), __ATOMIC_RELEASE);
            __atomic_store_n(&p->state[handle], BUF_ALLOCATED, __ATOMIC_RELAXED);
            out[got + i] = handle;
        }
        got += k;
        pos += k;
    }
    return got;
}

/* Queue handles whose state was already moved to BUF_FREE. */
static inline void buf_enqueue(bufpool_t *p, const uint64_t *hs, size_t n)
{
    unsigned spins = 0;
    uint64_t pos = __atomic_load_n(&p->tail, __ATOMIC_RELAXED);
    while (n) {
        size_t k = 0;
        while (k < n) {
            uint64_t seq = __atomic_load_n(&p->ring[(pos + k) & p->mask].seq, __ATOMIC_ACQUIRE);
            if (seq != 2 * (pos + k))
                break;
            k++;
        }
        if (k == 0) {
            uint64_t seq = __atomic_load_n(&p->ring[pos & p->mask].seq, __ATOMIC_ACQUIRE);
            if ((int64_t)(seq - 2 * pos) < 0)
                buf_pause(&spins);          /* an alloc of lap - 1 is mid-read */
            pos = __atomic_load_n(&p->tail, __ATOMIC_RELAXED);
            continue;
        }
        if (!__atomic_compare_exchange_n(&p->tail, &pos, pos + k, 1,
                                         __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            continue;
        for (size_t i = 0; i < k; i++) {
            buf_slot *s = &p->ring[(pos + i) & p->mask];
            s->handle = hs[i];
            __atomic_store_n(&s->seq, 2 * (pos + i) + 1, __ATOMIC_RELEASE);
        }
        hs += k;
        n -= k;
        pos += k;
    }
}

/* Return buffer h to the pool: BUF_OK, BUF_ERANGE or BUF_EFREE (h was not
 * allocated; nothing changes). */
static inline int bufpool_free(bufpool_t *p, uint64_t h)
{
    if (h >= p->count)
        return BUF_ERANGE;
    uint8_t expect = BUF_ALLOCATED;
    if (!__atomic_compare_exchange_n(&p->state[h], &expect, BUF_FREE, 0,
                                     __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        return BUF_EFREE;
    buf_enqueue(p, &h, 1);
    return BUF_OK;
}

/* Return n buffers, all or none: BUF_OK, or BUF_ERANGE / BUF_EFREE with
 * *bad = the index in hs of the first offending handle (a handle out of
 * range, not allocated, or given twice), and nothing freed. */
static inline int bufpool_free_many(bufpool_t *p, const uint64_t *hs, size_t n, size_t *bad)
{
    for (size_t i = 0; i < n; i++) {
        if (hs[i] >= p->count) {
            *bad = i;
            return BUF_ERANGE;
        }
    }
    for (size_t i = 0; i < n; i++) {
        uint8_t expect = BUF_ALLOCATED;
        if (!__atomic_compare_exchange_n(&p->state[hs[i]], &expect, BUF_FREE, 0,
                                         __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
            /* undo: these handles are not queued yet, so nobody else can
             * have taken them; a concurrent free of one of them is itself a
             * double free and was refused */
            for (size_t j = 0; j < i; j++)
                __atomic_store_n(&p->state[hs[j]], BUF_ALLOCATED, __ATOMIC_RELAXED);
            *bad = i;
            return BUF_EFREE;
        }
    }
    buf_enqueue(p, hs, n);
    return BUF_OK;
}

/* Free buffers right now (a snapshot when other threads are at work). */
static inline uint64_t bufpool_available(bufpool_t *p)
{
    uint64_t head = __atomic_load_n(&p->head, __ATOMIC_ACQUIRE);
    uint64_t tail = __atomic_load_n(&p->tail, __ATOMIC_ACQUIRE);
    if (tail <= head)
        return 0;
    return tail - head > p->count ? p->count : tail - head;
}

#endif /* FASTPROTO_BUFFERS_H */
