/*
 * Packet buffer pool: `count` buffers of `size` bytes in one block of memory
 * (a NumPy array owned by the Python object), named by handles 0..count-1
 * (the row numbers of that array).
 *
 * Free handles are kept on a lock-free LIFO stack (Treiber's), so the buffer
 * freed last is the one handed out next: a receive path that frees a batch's
 * buffers and takes the next batch's gets the same, cache-hot memory back,
 * as Linux's page_pool recycles pages, instead of cycling through the whole
 * pool (a FIFO of 4096 2 KiB buffers walks 8 MiB: past the L2 cache every
 * time).
 *
 *     next[h]  the free handle under h on the stack (BUF_NIL: none).  Written
 *              only by the thread that owns h: the one pushing it (before
 *              the CAS that publishes it) or, while h is on the stack,
 *              nobody.
 *     top      (tag << 32) | the handle on top (BUF_NIL: empty).  Every
 *              successful CAS, push or pop, adds one to the tag.
 *
 * pop (alloc): old = top (acquire); nx = next[old.handle]; CAS(top, old,
 * (old.tag + 1, nx)).  push (free): next[h] = old.handle; CAS(top, old,
 * (old.tag + 1, h)) (release).
 *
 * No ABA: a pop whose load of top is followed by a pop and a push of the
 * same handle (so that next[h] changed) meets a different tag and retries.
 * The tag is 32 bits: a thread would have to be held between its load and
 * its CAS while 2**32 other operations went by.  A stale read of next[h]
 * (h popped and pushed again meanwhile) is harmless for the same reason:
 * the CAS that would use it fails.  alloc_many walks k handles down from the
 * top and takes them with one CAS: with the tag unchanged nothing was pushed
 * or popped since the load, so the chain it walked is the stack's.
 *
 * Memory orders: the push's release CAS pairs with the pop's acquire load
 * of top (and the acquire of a failed CAS, which reloads it): next[h], and
 * whatever the freeing thread wrote into the buffer, happen before the
 * allocating thread reads them.  next[] is read and written with relaxed
 * atomics (a racing read only feeds a CAS that fails).
 *
 * Allocation state.  Each buffer has an atomic byte, BUF_FREE or
 * BUF_ALLOCATED.  alloc() stores BUF_ALLOCATED after taking the handle;
 * free() first CASes BUF_ALLOCATED -> BUF_FREE and only then pushes the
 * handle.  A second free of the same handle fails that CAS and is refused
 * (BUF_EFREE) without touching the stack, so no handle is ever on the stack
 * twice: the pool cannot hand one buffer to two owners because of a double
 * free.  (A free of a handle someone else now owns, after it was freed and
 * allocated again, cannot be told apart from a legitimate free: owners must
 * not free what they no longer own.)
 *
 * nfree counts the handles on the stack for bufpool_available: added to
 * after a push and taken from after a pop, so a snapshot taken while other
 * threads work may be briefly off by what they are doing.
 */
#ifndef FASTPROTO_BUFFERS_H
#define FASTPROTO_BUFFERS_H

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

/* no handle: the end of the free stack */
#define BUF_NIL 0xFFFFFFFFu

typedef struct bufpool {
    /* read-only after bufpool_create */
    uint8_t *data;        /* count * size bytes, row h at data + h * size */
    uint64_t size;        /* bytes per buffer */
    uint64_t count;       /* number of buffers */
    uint8_t *state;       /* BUF_FREE / BUF_ALLOCATED per buffer */
    uint32_t *next;       /* the free stack's links, one per buffer */
    char _pad0[BUF_LINE - 3 * sizeof(uint64_t) - 2 * sizeof(void *)];
    uint64_t top;         /* (tag << 32) | top handle */
    char _pad1[BUF_LINE - sizeof(uint64_t)];
    int64_t nfree;        /* handles on the stack (see above) */
    char _pad2[BUF_LINE - sizeof(int64_t)];
} bufpool_t;

static inline uint64_t buf_top(uint64_t tag, uint32_t handle)
{
    return (tag << 32) | handle;
}

/* A pool over data (count * size bytes, owned by the caller), all buffers
 * free and handed out in order 0, 1, 2, ... at first.  NULL if count is 0 or
 * too large, size is 0, or memory is short. */
static inline bufpool_t *bufpool_create(uint8_t *data, uint64_t count, uint64_t size)
{
    if (count < 1 || count > BUF_MAXCOUNT || size < 1)
        return NULL;
    void *mem = NULL;
    if (posix_memalign(&mem, BUF_LINE, sizeof(bufpool_t)) != 0)
        return NULL;
    bufpool_t *p = (bufpool_t *)mem;
    memset(p, 0, sizeof(*p));
    p->state = (uint8_t *)calloc(count, 1);
    p->next = (uint32_t *)malloc(count * sizeof(uint32_t));
    if (p->state == NULL || p->next == NULL) {
        free(p->state);
        free(p->next);
        free(p);
        return NULL;
    }
    for (uint64_t i = 0; i < count; i++)
        p->next[i] = i + 1 < count ? (uint32_t)(i + 1) : BUF_NIL;
    p->data = data;
    p->size = size;
    p->count = count;
    p->top = buf_top(0, 0);
    p->nfree = (int64_t)count;
    return p;
}

static inline void bufpool_destroy(bufpool_t *p)
{
    if (p) {
        free(p->state);
        free(p->next);
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

/* Take up to n free handles into out[0..k), the most recently freed first;
 * returns k (0 if none is free).  One CAS takes them all. */
static inline size_t bufpool_alloc_many(bufpool_t *p, uint64_t *out, size_t n)
{
    if (n == 0)
        return 0;
    uint64_t old = __atomic_load_n(&p->top, __ATOMIC_ACQUIRE);
    size_t k;
    for (;;) {
        uint32_t h = (uint32_t)old;
        k = 0;
        while (k < n && h != BUF_NIL) {
            out[k++] = h;
            h = __atomic_load_n(&p->next[h], __ATOMIC_RELAXED);
        }
        if (k == 0)
            return 0;
        if (__atomic_compare_exchange_n(&p->top, &old, buf_top((old >> 32) + 1, h), 1,
                                        __ATOMIC_ACQUIRE, __ATOMIC_ACQUIRE))
            break;
    }
    for (size_t i = 0; i < k; i++)
        __atomic_store_n(&p->state[out[i]], BUF_ALLOCATED, __ATOMIC_RELAXED);
    __atomic_fetch_sub(&p->nfree, (int64_t)k, __ATOMIC_RELAXED);
    return k;
}

/* Take one free buffer's handle into *h; 0 if none is free. */
static inline int bufpool_alloc(bufpool_t *p, uint64_t *h)
{
    return bufpool_alloc_many(p, h, 1) == 1;
}

/* Push handles whose state was already moved to BUF_FREE, hs[0] on top. */
static inline void buf_push(bufpool_t *p, const uint64_t *hs, size_t n)
{
    if (n == 0)
        return;
    /* the chain is ours until the CAS publishes it */
    for (size_t i = 0; i + 1 < n; i++)
        __atomic_store_n(&p->next[hs[i]], (uint32_t)hs[i + 1], __ATOMIC_RELAXED);
    uint64_t old = __atomic_load_n(&p->top, __ATOMIC_RELAXED);
    do {
        __atomic_store_n(&p->next[hs[n - 1]], (uint32_t)old, __ATOMIC_RELAXED);
    } while (!__atomic_compare_exchange_n(&p->top, &old, buf_top((old >> 32) + 1, (uint32_t)hs[0]),
                                          1, __ATOMIC_RELEASE, __ATOMIC_RELAXED));
    __atomic_fetch_add(&p->nfree, (int64_t)n, __ATOMIC_RELAXED);
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
    buf_push(p, &h, 1);
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
            /* undo: these handles are not on the stack yet, so nobody else
             * can have taken them; a concurrent free of one of them is itself
             * a double free and was refused */
            for (size_t j = 0; j < i; j++)
                __atomic_store_n(&p->state[hs[j]], BUF_ALLOCATED, __ATOMIC_RELAXED);
            *bad = i;
            return BUF_EFREE;
        }
    }
    buf_push(p, hs, n);
    return BUF_OK;
}

/* Free buffers right now (a snapshot when other threads are at work). */
static inline uint64_t bufpool_available(bufpool_t *p)
{
    int64_t n = __atomic_load_n(&p->nfree, __ATOMIC_ACQUIRE);
    if (n <= 0)
        return 0;
    return (uint64_t)n > p->count ? p->count : (uint64_t)n;
}

#endif /* FASTPROTO_BUFFERS_H */
