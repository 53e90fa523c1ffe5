/*
 * PCQ: a bounded, lock-free queue of uint64_t items for many producers and
 * one consumer (after NetBSD's pcq(9)).  Every uint64_t value, 0 included,
 * is a valid item: emptiness is told by per-slot sequence numbers, never by
 * the item.
 *
 * The algorithm is D. Vyukov's bounded queue with a sequence number per slot.
 *
 * Positions.  Each item gets a position when its slot is claimed.  With
 * stride = the least power of two >= cap, position p lives in slot
 * p & (stride - 1); positions go 0, 1, ..., cap-1, then jump to stride,
 * stride+1, ..., stride+cap-1, then 2*stride, and so on (pcq_next), so a slot
 * index is a mask even when cap is not a power of two, and the position of
 * the same slot one lap later is p + stride.  Positions only grow.  The
 * number of items before p is pcq_count(p) = (p / stride) * cap +
 * p % stride.  Two 64-bit positions:
 *
 *     tail  next position a producer will claim.  Written only by producers,
 *           with a CAS (many producers), so each position has one producer.
 *     head  next position the consumer will read.  Written only by the one
 *           consumer (a plain atomic store, no CAS); read by producers in
 *           pcq_put_many and by pcq_len.
 *
 * Slot states.  A slot's seq tells who may touch it for position p of the
 * lap it is on.  Values are doubled so that "free for p+1" and "holds p"
 * differ even when cap == 1 (the undoubled scheme needs cap >= 2):
 *
 *     seq == 2p          free: the producer that claims p may write it
 *     seq == 2p + 1      full: holds the item of position p
 *     seq == 2(p + stride)  released by the consumer: free for the position
 *                           of this slot on the next lap
 *
 * Producer (pcq_put): pos = tail; load slot seq (acquire).  seq == 2pos:
 * the slot is free for pos, claim pos with CAS(tail, pos, next(pos)).  seq <
 * 2pos: the slot still holds the item of the previous lap, not yet consumed:
 * the queue is full.  seq > 2pos: pos is stale (others claimed it), reload
 * and retry.
 * After a successful claim the producer writes the item (a plain store) and
 * publishes it with store(seq, 2pos + 1, release).
 *
 * Consumer (pcq_get): pos = head; load slot seq (acquire).  seq == 2pos + 1:
 * read the item, store(seq, 2(pos + stride), release), then store(head,
 * next(pos), release).  Anything else: no item is ready at pos (the queue is
 * empty, or the producer that claimed pos has not published yet; items
 * behind it wait, so each producer's items come out in the order it put
 * them).
 *
 * Memory orders and what they order:
 *   - producer's release store of seq  -> consumer's acquire load of seq:
 *     the item store happens before the consumer's item load.
 *   - consumer's release store of seq  -> producer's acquire load of seq:
 *     the consumer's item load of lap k happens before the producer's item
 *     store of lap k + 1, so a slot is never overwritten while being read.
 *   - consumer's release store of head -> acquire load of head (put_many,
 *     len): every position below head has been released, so a producer may
 *     fill the cap - (count(tail) - count(head)) positions from tail on
 *     without looking at their seqs.
 *   - the tail CAS is relaxed: it only hands out positions; the data it
 *     guards is ordered by the seq acquire/release pairs above.
 *
 * No ABA: positions are 64-bit and only grow (by less than 2 per item, and
 * seqs are doubled: at 10^9 items/s they would wrap after 146 years), so a
 * CAS of tail from a
 * stale pos can never succeed, and a slot's seq names the lap as well as the
 * state, so a producer whose pos is laps behind sees seq > 2pos and retries.
 *
 * Single-consumer contract: pcq_get, pcq_get_many and pcq_peek must not run
 * concurrently with each other on one queue (the consumer owns head without
 * a CAS).  Producers may run concurrently with anything.
 *
 * Progress: producers are lock-free (a failed CAS means another producer
 * claimed a position).  A producer descheduled between its claim and its
 * publish holds up the consumer at that position (the queue is lock-free for
 * producers, not for the consumer); later positions are kept, not lost.
 */
#ifndef FASTPROTO_PCQ_H
#define FASTPROTO_PCQ_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Distance between the producers' and the consumer's counters: two cache
 * lines, since adjacent-line prefetch pairs 64-byte lines. */
#define PCQ_LINE 128

typedef struct pcq_slot {
    uint64_t seq;
    uint64_t item;
} pcq_slot;

typedef struct pcq {
    /* read-only after pcq_create */
    uint64_t cap;               /* maxlen */
    uint64_t stride;            /* least power of two >= cap */
    uint64_t mask;              /* stride - 1 */
    unsigned shift;             /* log2(stride) */
    char _pad0[PCQ_LINE - 3 * sizeof(uint64_t) - sizeof(unsigned)];
    /* producers' line */
    uint64_t tail;
    uint64_t rejected;          /* items refused because the queue was full */
    char _pad1[PCQ_LINE - 2 * sizeof(uint64_t)];
    /* consumer's line */
    uint64_t head;
    char _pad2[PCQ_LINE - sizeof(uint64_t)];
    pcq_slot slots[];           /* stride slots; those at index >= cap unused */
} pcq_t;

/* Largest capacity pcq_create accepts: keeps the allocation size and the
 * doubled sequence numbers far from overflow. */
#define PCQ_MAXLEN ((uint64_t)1 << 40)

/* The position after pos. */
static inline uint64_t pcq_next(const pcq_t *q, uint64_t pos)
{
    return ((pos & q->mask) + 1 == q->cap) ? (pos | q->mask) + 1 : pos + 1;
}

/* How many positions come before pos. */
static inline uint64_t pcq_count(const pcq_t *q, uint64_t pos)
{
    return (pos >> q->shift) * q->cap + (pos & q->mask);
}

/* The position with count n before it. */
static inline uint64_t pcq_position(const pcq_t *q, uint64_t n)
{
    return ((n / q->cap) << q->shift) + n % q->cap;
}

/* A queue for maxlen items (1 <= maxlen <= PCQ_MAXLEN); NULL if maxlen is
 * out of range or memory is short. */
static inline pcq_t *pcq_create(uint64_t maxlen)
{
    if (maxlen < 1 || maxlen > PCQ_MAXLEN)
        return NULL;
    unsigned shift = 0;
    while (((uint64_t)1 << shift) < maxlen)
        shift++;
    uint64_t stride = (uint64_t)1 << shift;
    void *mem = NULL;
    size_t bytes = sizeof(pcq_t) + (size_t)stride * sizeof(pcq_slot);
    if (posix_memalign(&mem, PCQ_LINE, bytes) != 0)
        return NULL;
    pcq_t *q = (pcq_t *)mem;
    memset(q, 0, sizeof(pcq_t));
    q->cap = maxlen;
    q->stride = stride;
    q->mask = stride - 1;
    q->shift = shift;
    for (uint64_t i = 0; i < stride; i++) {
        q->slots[i].seq = 2 * i;        /* free for position i of lap 0 */
        q->slots[i].item = 0;
    }
    /* the creating thread hands q to others through some synchronising step
     * (a lock, a thread start), which publishes these plain stores */
    return q;
}

static inline void pcq_destroy(pcq_t *q)
{
    free(q);
}

static inline uint64_t pcq_maxlen(const pcq_t *q)
{
    return q->cap;
}

/* Bring the queue's tail and the slot the next put will most likely take
 * into this CPU's cache, for loops that put to many queues in turn.  Only a
 * hint: it reads the tail without claiming anything. */
static inline void pcq_prefetch(pcq_t *q)
{
    uint64_t pos = __atomic_load_n(&q->tail, __ATOMIC_RELAXED);
    __builtin_prefetch(&q->slots[pos & q->mask], 1, 3);
}

/* Put one item; 0 (and nothing changes but the rejected counter) if full. */
static inline int pcq_put(pcq_t *q, uint64_t item)
{
    uint64_t pos = __atomic_load_n(&q->tail, __ATOMIC_RELAXED);
    for (;;) {
        pcq_slot *s = &q->slots[pos & q->mask];
        uint64_t seq = __atomic_load_n(&s->seq, __ATOMIC_ACQUIRE);
        int64_t dif = (int64_t)(seq - 2 * pos);
        if (dif == 0) {
            /* on failure the CAS reloads pos */
            if (__atomic_compare_exchange_n(&q->tail, &pos, pcq_next(q, pos), 1,
                                            __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
                s->item = item;
                __atomic_store_n(&s->seq, 2 * pos + 1, __ATOMIC_RELEASE);
                return 1;
            }
        } else if (dif < 0) {
            __atomic_fetch_add(&q->rejected, 1, __ATOMIC_RELAXED);
            return 0;
        } else {
            pos = __atomic_load_n(&q->tail, __ATOMIC_RELAXED);
        }
    }
}

/* Put the leading items of items[0..n): all of them, or as many as there
 * is room for.  Returns how many were put (they occupy consecutive
 * positions, in order).  One CAS claims the whole run. */
static inline size_t pcq_put_many(pcq_t *q, const uint64_t *items, size_t n)
{
    if (n == 0)
        return 0;
    uint64_t pos = __atomic_load_n(&q->tail, __ATOMIC_RELAXED);
    size_t k;
    for (;;) {
        uint64_t head = __atomic_load_n(&q->head, __ATOMIC_ACQUIRE);
        /* the cap positions from head on are free but for those already
         * claimed (head .. pos): their previous laps are below head and
         * were released before head was stored.  If pos is stale the CAS
         * fails; if it is stale and the room looks empty, the current tail
         * is further still, so the queue is full. */
        uint64_t used = pcq_count(q, pos) - pcq_count(q, head);
        if ((int64_t)used < 0)
            used = 0;                   /* pos is stale, behind head */
        uint64_t room = used < q->cap ? q->cap - used : 0;
        if (room == 0) {
            __atomic_fetch_add(&q->rejected, n, __ATOMIC_RELAXED);
            return 0;
        }
        k = n < room ? n : (size_t)room;
        uint64_t end = pcq_position(q, pcq_count(q, pos) + k);
        if (__atomic_compare_exchange_n(&q->tail, &pos, end, 1,
                                        __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            break;
    }
    for (size_t i = 0; i < k; i++) {
        pcq_slot *s = &q->slots[pos & q->mask];
        s->item = items[i];
        __atomic_store_n(&s->seq, 2 * pos + 1, __ATOMIC_RELEASE);
        pos = pcq_next(q, pos);
    }
    if (k < n)
        __atomic_fetch_add(&q->rejected, n - k, __ATOMIC_RELAXED);
    return k;
}

/* Consumer only.  Take the oldest ready item into *out; 0 if none. */
static inline int pcq_get(pcq_t *q, uint64_t *out)
{
    uint64_t pos = __atomic_load_n(&q->head, __ATOMIC_RELAXED);
    pcq_slot *s = &q->slots[pos & q->mask];
    if (__atomic_load_n(&s->seq, __ATOMIC_ACQUIRE) != 2 * pos + 1)
        return 0;
    *out = s->item;
    __atomic_store_n(&s->seq, 2 * (pos + q->stride), __ATOMIC_RELEASE);
    __atomic_store_n(&q->head, pcq_next(q, pos), __ATOMIC_RELEASE);
    return 1;
}

/* Consumer only.  The oldest ready item into *out, left in the queue. */
static inline int pcq_peek(pcq_t *q, uint64_t *out)
{
    uint64_t pos = __atomic_load_n(&q->head, __ATOMIC_RELAXED);
    pcq_slot *s = &q->slots[pos & q->mask];
    if (__atomic_load_n(&s->seq, __ATOMIC_ACQUIRE) != 2 * pos + 1)
        return 0;
    *out = s->item;
    return 1;
}

/* Consumer only.  Take up to n ready items, oldest first, into out[0..k);
 * returns k.  Stops at the first position not yet published. */
static inline size_t pcq_get_many(pcq_t *q, uint64_t *out, size_t n)
{
    uint64_t pos = __atomic_load_n(&q->head, __ATOMIC_RELAXED);
    size_t k = 0;
    while (k < n) {
        pcq_slot *s = &q->slots[pos & q->mask];
        if (__atomic_load_n(&s->seq, __ATOMIC_ACQUIRE) != 2 * pos + 1)
            break;
        out[k++] = s->item;
        __atomic_store_n(&s->seq, 2 * (pos + q->stride), __ATOMIC_RELEASE);
        pos = pcq_next(q, pos);
    }
    if (k)
        __atomic_store_n(&q->head, pos, __ATOMIC_RELEASE);
    return k;
}

/* Number of claimed positions not yet consumed (0..maxlen).  Exact when no
 * other thread is working on the queue; otherwise a snapshot that may count
 * items claimed but not yet published. */
static inline uint64_t pcq_len(pcq_t *q)
{
    /* head first: with acquire, the tail read after it is at least head
     * (every position below head was claimed before head passed it). */
    uint64_t head = __atomic_load_n(&q->head, __ATOMIC_ACQUIRE);
    uint64_t tail = __atomic_load_n(&q->tail, __ATOMIC_RELAXED);
    if (tail <= head)
        return 0;
    uint64_t n = pcq_count(q, tail) - pcq_count(q, head);
    return n > q->cap ? q->cap : n;
}

/* Items refused so far because the queue was full (put and put_many). */
static inline uint64_t pcq_rejected(pcq_t *q)
{
    return __atomic_load_n(&q->rejected, __ATOMIC_RELAXED);
}

#endif /* FASTPROTO_PCQ_H */
