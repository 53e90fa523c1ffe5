/*
 * pcbtable: (proto, local addr, local port, foreign addr, foreign port) ->
 * 64-bit value (a socket id), hashed with a keyed SipHash-1-3, one
 * reader/writer lock per bucket.
 *
 * Addresses are 16 bytes; IPv4 is stored IPv4-mapped (::ffff:a.b.c.d,
 * RFC 4291 section 2.5.5.2), so a key carries its family in its addresses.
 * The unspecified address of a family (:: or ::ffff:0.0.0.0) is that
 * family's wildcard.  Ports and proto are host-order integers.
 *
 * Three kinds of entry, told apart by which fields are wildcards:
 *     PCB_EXACT  laddr, lport, faddr, fport all given       (connected)
 *     PCB_BOUND  faddr wildcard, fport 0                    (listener on laddr)
 *     PCB_ANY    laddr and faddr wildcards, fport 0         (listener on any)
 * A lookup returns the most specific match: EXACT, then BOUND, then ANY.
 *
 * Hashing.  Each kind hashes only the fields it specifies, as a byte string
 * (ports little-endian, as they sit in a host-order uint16 on x86; IPv4
 * addresses as their 4 bytes):
 *     EXACT  IPv6: laddr[16] faddr[16] lport[2] fport[2] proto  37 bytes
 *            IPv4: laddr[4] faddr[4] lport[2] fport[2] proto    13 bytes
 *     BOUND  IPv6: laddr[16] lport[2] proto                      19 bytes
 *            IPv4: laddr[4] lport[2] proto                        7 bytes
 *     ANY    lport[2] proto family(4 or 6)                        4 bytes
 * so an IPv4 connection costs two compressions, not five, and a lookup that
 * falls back to listeners spends one or two more per probe.  The lengths
 * differ, and SipHash puts the length in the last word, so no two kinds or
 * families share a message.  The bucket is the hash's low bits.
 *
 * Buckets.  A bucket is two 64-byte lines: the lock word, the entry count,
 * the overflow chain head and two inline entries.  At 1.5 entries per bucket
 * (100k entries in the default 64 Ki buckets) four in five entries sit
 * inline, nine in ten at 1 per bucket, so a probe usually touches only the
 * two lines that the batch lookup prefetched.  Entries beyond two live in
 * malloc'd nodes chained from the bucket.
 *
 * Locking (see rwlock.h).  A lookup probes up to three buckets, read-locking
 * each only while scanning it, so it never holds two locks.  insert and
 * remove write-lock one bucket.  An entry is only ever read under its
 * bucket's read lock, and only written, moved or unlinked under its write
 * lock; an unlinked node is freed right after the unlock, since no reader can
 * be inside the bucket that held it.  malloc and free happen outside locks.
 */
#ifndef FASTPROTO_PCBTABLE_H
#define FASTPROTO_PCBTABLE_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rwlock.h"
#include "siphash.h"

/* Keys are compared and hashed as little-endian words built from host-order
 * port fields. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "pcbtable.h assumes a little-endian host"
#endif

/* Return codes of insert/remove (0 is success). */
#define PCB_OK      0
#define PCB_EEXIST  1   /* insert: that exact key is already in the table */
#define PCB_ENOENT  2   /* remove: no entry with that key */
#define PCB_EINVAL  3   /* the key is not a valid entry (see pcb_key_kind) */
#define PCB_ENOMEM  4   /* allocation failed */

/* Entry kinds; pcb_key_kind returns one of these or a negative reason. */
#define PCB_EXACT   0
#define PCB_BOUND   1
#define PCB_ANY     2
#define PCB_BAD_FAMILY      (-1)  /* laddr and faddr are of different families */
#define PCB_BAD_FADDR_ONLY  (-2)  /* foreign address given but local wildcard */
#define PCB_BAD_FPORT_ONLY  (-3)  /* foreign port given without foreign address */

#define PCB_INLINE 2
#define PCB_BATCH_BLOCK 64

typedef struct pcb_key {
    uint8_t laddr[16];
    uint8_t faddr[16];
    uint16_t lport;
    uint16_t fport;
    uint8_t proto;
    uint8_t pad[3];         /* ignored on input; zero inside the table */
} __attribute__((aligned(8))) pcb_key;

typedef struct pcb_entry {
    pcb_key key;
    uint64_t value;
} pcb_entry;

typedef struct pcb_node {
    pcb_entry e;
    struct pcb_node *next;
} pcb_node;

typedef struct pcb_bucket {
    rwlock_t lock;
    uint32_t n;                     /* entries: min(n, 2) inline, rest chained */
    pcb_node *overflow;
    pcb_entry slot[PCB_INLINE];
} __attribute__((aligned(128))) pcb_bucket;

typedef struct pcbtable {
    pcb_bucket *buckets;
    uint64_t mask;                  /* nbuckets - 1 */
    sip_key key;
    uint64_t count;                 /* entries; atomic, relaxed */
    /* Entries of each kind (PCB_EXACT, PCB_BOUND, PCB_ANY); atomic, relaxed.
     * A two-step lookup skips the probes of kinds the table has none of,
     * which saves a SipHash and a cache miss per packet on, say, a UDP
     * server with only bound sockets.  Read without a lock, a count may lag
     * an insert running at the same time: such a lookup is ordered before
     * the insert, as it would be had it started a moment earlier. */
    uint64_t nkind[3];
} pcbtable;

/* A key as the five little-endian words that hashing and comparison use. */
typedef struct pcb_kw {
    uint64_t la0, la1, fa0, fa1;
    uint64_t tail;                  /* lport | fport << 16 | proto << 32 */
} pcb_kw;

/* Low 32 bits of the second address word of an IPv4-mapped address:
 * bytes 8..11 are 00 00 ff ff. */
#define PCB_V4MAP_LO 0xffff0000ULL

static inline int pcb_words_v4(uint64_t w0, uint64_t w1)
{
    return w0 == 0 && (uint32_t)w1 == (uint32_t)PCB_V4MAP_LO;
}

/* Unspecified address of the family: :: or ::ffff:0.0.0.0 */
static inline int pcb_words_any(uint64_t w0, uint64_t w1)
{
    return w0 == 0 && (w1 == 0 || w1 == PCB_V4MAP_LO);
}

static inline pcb_kw pcb_kw_of(const pcb_key *k)
{
    pcb_kw w;
    w.la0 = sip_load_le64(k->laddr);
    w.la1 = sip_load_le64(k->laddr + 8);
    w.fa0 = sip_load_le64(k->faddr);
    w.fa1 = sip_load_le64(k->faddr + 8);
    w.tail = (uint64_t)k->lport | ((uint64_t)k->fport << 16) | ((uint64_t)k->proto << 32);
    return w;
}

static inline void pcb_key_of(pcb_key *k, const pcb_kw *w)
{
    uint64_t t;
    memcpy(k->laddr, &w->la0, 8);
    memcpy(k->laddr + 8, &w->la1, 8);
    memcpy(k->faddr, &w->fa0, 8);
    memcpy(k->faddr + 8, &w->fa1, 8);
    t = w->tail;
    k->lport = (uint16_t)t;
    k->fport = (uint16_t)(t >> 16);
    k->proto = (uint8_t)(t >> 32);
    k->pad[0] = k->pad[1] = k->pad[2] = 0;
}

/* The kind of entry a key describes, or a negative PCB_BAD_* reason. */
static inline int pcb_kw_kind(const pcb_kw *w)
{
    int la_v4 = pcb_words_v4(w->la0, w->la1);
    int fa_v4 = pcb_words_v4(w->fa0, w->fa1);
    int la_any = pcb_words_any(w->la0, w->la1);
    int fa_any = pcb_words_any(w->fa0, w->fa1);
    uint16_t fport = (uint16_t)(w->tail >> 16);
    if (la_v4 != fa_v4)
        return PCB_BAD_FAMILY;
    if (fa_any) {
        if (fport != 0)
            return PCB_BAD_FPORT_ONLY;
        return la_any ? PCB_ANY : PCB_BOUND;
    }
    if (la_any)
        return PCB_BAD_FADDR_ONLY;
    return PCB_EXACT;
}

static inline int pcb_key_kind(const pcb_key *k)
{
    pcb_kw w = pcb_kw_of(k);
    return pcb_kw_kind(&w);
}

/* ---- hashing ---------------------------------------------------------- */

/* The IPv4 address in the last four bytes of an IPv4-mapped address. */
static inline uint64_t pcb_v4_of(uint64_t w1)
{
    return w1 >> 32;
}

static inline uint64_t pcb_hash_exact(sip_key key, const pcb_kw *w)
{
    sip_state s = sip_init(key);
    if (pcb_words_v4(w->la0, w->la1)) {
        sip13_word(&s, pcb_v4_of(w->la1) | (pcb_v4_of(w->fa1) << 32));
        sip13_word(&s, w->tail | (13ULL << 56));
    } else {
        sip13_word(&s, w->la0);
        sip13_word(&s, w->la1);
        sip13_word(&s, w->fa0);
        sip13_word(&s, w->fa1);
        sip13_word(&s, w->tail | (37ULL << 56));
    }
    return sip13_final(&s);
}

static inline uint64_t pcb_hash_bound(sip_key key, uint64_t la0, uint64_t la1, uint64_t tail)
{
    sip_state s = sip_init(key);
    uint64_t port_proto = (tail & 0xffff) | (((tail >> 32) & 0xff) << 16);
    if (pcb_words_v4(la0, la1)) {
        sip13_word(&s, pcb_v4_of(la1) | (port_proto << 32) | (7ULL << 56));
    } else {
        sip13_word(&s, la0);
        sip13_word(&s, la1);
        sip13_word(&s, port_proto | (19ULL << 56));
    }
    return sip13_final(&s);
}

static inline uint64_t pcb_hash_any(sip_key key, int v4, uint64_t tail)
{
    sip_state s = sip_init(key);
    uint64_t fam = v4 ? 4 : 6;
    sip13_word(&s, (tail & 0xffff) | (((tail >> 32) & 0xff) << 16) | (fam << 24) | (4ULL << 56));
    return sip13_final(&s);
}

/* Hash of a valid entry key of the given kind. */
static inline uint64_t pcb_hash_kind(sip_key key, const pcb_kw *w, int kind)
{
    switch (kind) {
    case PCB_EXACT:
        return pcb_hash_exact(key, w);
    case PCB_BOUND:
        return pcb_hash_bound(key, w->la0, w->la1, w->tail);
    default:
        return pcb_hash_any(key, pcb_words_v4(w->la0, w->la1), w->tail);
    }
}

/* ---- buckets ---------------------------------------------------------- */

static inline int pcb_entry_is(const pcb_entry *e, const pcb_kw *w)
{
    const uint8_t *k = (const uint8_t *)&e->key;
    uint64_t d = (sip_load_le64(k) ^ w->la0) | (sip_load_le64(k + 8) ^ w->la1)
               | (sip_load_le64(k + 16) ^ w->fa0) | (sip_load_le64(k + 24) ^ w->fa1)
               | (sip_load_le64(k + 32) ^ w->tail);
    return d == 0;
}

/* The value of the entry with exactly these words; caller holds the lock. */
static inline int pcb_bucket_find(const pcb_bucket *b, const pcb_kw *w, uint64_t *value)
{
    uint32_t n = b->n;
    uint32_t ni = n < PCB_INLINE ? n : PCB_INLINE;
    uint32_t i;
    const pcb_node *node;
    for (i = 0; i < ni; i++) {
        if (pcb_entry_is(&b->slot[i], w)) {
            *value = b->slot[i].value;
            return 1;
        }
    }
    for (node = b->overflow; node != NULL; node = node->next) {
        if (pcb_entry_is(&node->e, w)) {
            *value = node->e.value;
            return 1;
        }
    }
    return 0;
}

static inline pcb_bucket *pcb_bucket_of(const pcbtable *t, uint64_t h)
{
    return &t->buckets[h & t->mask];
}

static inline void pcb_prefetch(const pcb_bucket *b)
{
    /* write intent for the line with the lock word: the reader's fetch_add
     * needs it exclusive anyway */
    __builtin_prefetch((const char *)b, 1, 3);
    __builtin_prefetch((const char *)b + 64, 0, 3);
}

/* Probe one bucket under its read lock. */
static inline int pcb_probe(pcb_bucket *b, const pcb_kw *w, uint64_t *value)
{
    int hit;
    rw_rdlock(&b->lock);
    hit = pcb_bucket_find(b, w, value);
    rw_rdunlock(&b->lock);
    return hit;
}

/* ---- table ------------------------------------------------------------ */

/* A new empty table, or NULL (errno EINVAL: nbuckets not a power of two;
 * ENOMEM). */
static inline pcbtable *pcbtable_create(size_t nbuckets, const uint8_t key[16])
{
    pcbtable *t;
    void *mem = NULL;
    if (nbuckets == 0 || (nbuckets & (nbuckets - 1)) != 0
        || nbuckets > ((size_t)1 << 40) / sizeof(pcb_bucket)) {
        errno = EINVAL;
        return NULL;
    }
    t = (pcbtable *)calloc(1, sizeof(*t));
    if (t == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    if (posix_memalign(&mem, sizeof(pcb_bucket), nbuckets * sizeof(pcb_bucket)) != 0) {
        free(t);
        errno = ENOMEM;
        return NULL;
    }
    memset(mem, 0, nbuckets * sizeof(pcb_bucket));
    t->buckets = (pcb_bucket *)mem;
    t->mask = nbuckets - 1;
    t->key = sip_key_from_bytes(key);
    t->count = 0;
    return t;
}

/* Free the table; no other thread may be using it. */
static inline void pcbtable_destroy(pcbtable *t)
{
    size_t i;
    if (t == NULL)
        return;
    for (i = 0; i <= t->mask; i++) {
        pcb_node *node = t->buckets[i].overflow;
        while (node != NULL) {
            pcb_node *next = node->next;
            free(node);
            node = next;
        }
    }
    free(t->buckets);
    free(t);
}

static inline size_t pcbtable_count(const pcbtable *t)
{
    return (size_t)__atomic_load_n(&t->count, __ATOMIC_RELAXED);
}

static inline size_t pcbtable_nbuckets(const pcbtable *t)
{
    return (size_t)t->mask + 1;
}

/* Add an entry.  Wildcard fields must be the unspecified address of the
 * family of laddr (and fport 0).  Returns PCB_OK, PCB_EEXIST, PCB_EINVAL or
 * PCB_ENOMEM. */
static inline int pcbtable_insert(pcbtable *t, const pcb_key *key, uint64_t value)
{
    pcb_kw w = pcb_kw_of(key);
    int kind = pcb_kw_kind(&w);
    pcb_bucket *b;
    pcb_node *spare = NULL;
    uint32_t i, n;
    pcb_node *node;
    if (kind < 0)
        return PCB_EINVAL;
    b = pcb_bucket_of(t, pcb_hash_kind(t->key, &w, kind));
    for (;;) {
        rw_wrlock(&b->lock);
        n = b->n;
        for (i = 0; i < (n < PCB_INLINE ? n : PCB_INLINE); i++) {
            if (pcb_entry_is(&b->slot[i], &w))
                goto exists;
        }
        for (node = b->overflow; node != NULL; node = node->next) {
            if (pcb_entry_is(&node->e, &w))
                goto exists;
        }
        if (n < PCB_INLINE) {
            pcb_key_of(&b->slot[n].key, &w);
            b->slot[n].value = value;
            break;
        }
        if (spare != NULL) {
            pcb_key_of(&spare->e.key, &w);
            spare->e.value = value;
            spare->next = b->overflow;
            b->overflow = spare;
            spare = NULL;
            break;
        }
        /* the bucket is full inline: allocate outside the lock, then retry
         * (the bucket may have changed meanwhile) */
        rw_wrunlock(&b->lock);
        spare = (pcb_node *)malloc(sizeof(pcb_node));
        if (spare == NULL)
            return PCB_ENOMEM;
    }
    b->n = n + 1;
    rw_wrunlock(&b->lock);
    __atomic_fetch_add(&t->count, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&t->nkind[kind], 1, __ATOMIC_RELAXED);
    free(spare);
    return PCB_OK;
exists:
    rw_wrunlock(&b->lock);
    free(spare);
    return PCB_EEXIST;
}

/* Remove the entry with exactly this key.  Returns PCB_OK (and the removed
 * value in *value if not NULL), PCB_ENOENT or PCB_EINVAL. */
static inline int pcbtable_remove(pcbtable *t, const pcb_key *key, uint64_t *value)
{
    pcb_kw w = pcb_kw_of(key);
    int kind = pcb_kw_kind(&w);
    pcb_bucket *b;
    pcb_node *dead = NULL, **link;
    uint32_t i, n;
    uint64_t v = 0;
    if (kind < 0)
        return PCB_EINVAL;
    b = pcb_bucket_of(t, pcb_hash_kind(t->key, &w, kind));
    rw_wrlock(&b->lock);
    n = b->n;
    for (i = 0; i < (n < PCB_INLINE ? n : PCB_INLINE); i++) {
        if (pcb_entry_is(&b->slot[i], &w)) {
            v = b->slot[i].value;
            /* keep the inline slots dense: refill from the chain, else from
             * the last inline slot */
            if (b->overflow != NULL) {
                dead = b->overflow;
                b->slot[i] = dead->e;
                b->overflow = dead->next;
            } else if (i != n - 1) {
                b->slot[i] = b->slot[n - 1];
            }
            goto found;
        }
    }
    for (link = &b->overflow; *link != NULL; link = &(*link)->next) {
        if (pcb_entry_is(&(*link)->e, &w)) {
            dead = *link;
            v = dead->e.value;
            *link = dead->next;
            goto found;
        }
    }
    rw_wrunlock(&b->lock);
    return PCB_ENOENT;
found:
    b->n = n - 1;
    rw_wrunlock(&b->lock);
    /* unlinked under the write lock: no reader can hold a pointer to it */
    free(dead);
    __atomic_fetch_sub(&t->count, 1, __ATOMIC_RELAXED);
    __atomic_fetch_sub(&t->nkind[kind], 1, __ATOMIC_RELAXED);
    if (value != NULL)
        *value = v;
    return PCB_OK;
}

/* The value of the entry with exactly this key (no wildcard fallback). */
static inline int pcbtable_get(pcbtable *t, const pcb_key *key, uint64_t *value)
{
    pcb_kw w = pcb_kw_of(key);
    int kind = pcb_kw_kind(&w);
    if (kind < 0)
        return 0;
    return pcb_probe(pcb_bucket_of(t, pcb_hash_kind(t->key, &w, kind)), &w, value);
}

/* Lookup key words for the two listener probes, derived from the packet's. */
static inline pcb_kw pcb_kw_bound(const pcb_kw *w)
{
    pcb_kw b;
    int v4 = pcb_words_v4(w->la0, w->la1);
    b.la0 = w->la0;
    b.la1 = w->la1;
    b.fa0 = 0;
    b.fa1 = v4 ? PCB_V4MAP_LO : 0;
    b.tail = w->tail & 0xff0000ffffULL;     /* proto, lport; fport = 0 */
    return b;
}

static inline pcb_kw pcb_kw_any(const pcb_kw *w)
{
    pcb_kw a = pcb_kw_bound(w);
    a.la0 = 0;
    a.la1 = a.fa1;
    return a;
}

/*
 * Most specific match for a packet's key (laddr = its destination, faddr =
 * its source): the connected entry, else the listener bound to laddr, else
 * the listener bound to any address of laddr's family.  A probe that cannot
 * match (wildcard laddr or faddr in the packet) is skipped.  Returns 1 and
 * sets *value, or 0.
 */
static inline int pcbtable_lookup(pcbtable *t, const pcb_key *key, uint64_t *value)
{
    pcb_kw w = pcb_kw_of(key);
    int la_any = pcb_words_any(w.la0, w.la1);
    pcb_kw p;
    if (!la_any) {
        if (!pcb_words_any(w.fa0, w.fa1)
            && pcb_probe(pcb_bucket_of(t, pcb_hash_exact(t->key, &w)), &w, value))
            return 1;
        p = pcb_kw_bound(&w);
        if (pcb_probe(pcb_bucket_of(t, pcb_hash_bound(t->key, p.la0, p.la1, p.tail)), &p, value))
            return 1;
    }
    p = pcb_kw_any(&w);
    return pcb_probe(pcb_bucket_of(t, pcb_hash_any(t->key, pcb_words_v4(w.la0, w.la1), p.tail)),
                     &p, value);
}

/*
 * As pcbtable_lookup, but on a match return with the matching bucket still
 * read-locked: the entry (and whatever the caller keeps alive by keeping the
 * entry in the table) cannot be removed until pcbtable_release(bucket).
 * Returns the locked bucket, or NULL (nothing matched, no lock held).  The
 * caller must not block, take the GIL or take another bucket lock before
 * releasing.
 */
static inline pcb_bucket *pcb_probe_hold(pcb_bucket *b, const pcb_kw *w, uint64_t *value)
{
    rw_rdlock(&b->lock);
    if (pcb_bucket_find(b, w, value))
        return b;
    rw_rdunlock(&b->lock);
    return NULL;
}

static inline pcb_bucket *pcbtable_lookup_hold(pcbtable *t, const pcb_key *key, uint64_t *value)
{
    pcb_kw w = pcb_kw_of(key);
    pcb_kw p;
    pcb_bucket *b;
    if (!pcb_words_any(w.la0, w.la1)) {
        if (!pcb_words_any(w.fa0, w.fa1)
            && (b = pcb_probe_hold(pcb_bucket_of(t, pcb_hash_exact(t->key, &w)), &w, value)))
            return b;
        p = pcb_kw_bound(&w);
        if ((b = pcb_probe_hold(pcb_bucket_of(t, pcb_hash_bound(t->key, p.la0, p.la1, p.tail)),
                                &p, value)))
            return b;
    }
    p = pcb_kw_any(&w);
    return pcb_probe_hold(pcb_bucket_of(t, pcb_hash_any(t->key, pcb_words_v4(w.la0, w.la1), p.tail)),
                          &p, value);
}

static inline void pcbtable_release(pcb_bucket *b)
{
    rw_rdunlock(&b->lock);
}

/*
 * A lookup in two steps, for loops that look up many packets: step one
 * (pcbtable_lookup_start) hashes the key and prefetches the buckets of its
 * probes, in order of specificity; step two (pcbtable_lookup_finish_hold)
 * runs them, by which time the buckets are in cache if enough other work
 * came in between.  Step two may run more than once on one start (the
 * hashes do not change, the table may): each run is a whole lookup.
 */
typedef struct pcb_lookup {
    pcb_kw w[3];                    /* the probes' keys ... */
    pcb_bucket *b[3];               /* ... and their buckets */
    int n;                          /* how many probes */
} pcb_lookup;

static inline void pcbtable_lookup_start(pcbtable *t, const pcb_key *key, pcb_lookup *l)
{
    pcb_kw w = pcb_kw_of(key);
    int v4 = pcb_words_v4(w.la0, w.la1);
    int n = 0;
    if (!pcb_words_any(w.la0, w.la1)) {
        if (!pcb_words_any(w.fa0, w.fa1) && __atomic_load_n(&t->nkind[PCB_EXACT], __ATOMIC_RELAXED)) {
            l->w[n] = w;
            l->b[n++] = pcb_bucket_of(t, pcb_hash_exact(t->key, &w));
        }
        if (__atomic_load_n(&t->nkind[PCB_BOUND], __ATOMIC_RELAXED)) {
            l->w[n] = pcb_kw_bound(&w);
            l->b[n] = pcb_bucket_of(t, pcb_hash_bound(t->key, l->w[n].la0, l->w[n].la1,
                                                      l->w[n].tail));
            n++;
        }
    }
    if (__atomic_load_n(&t->nkind[PCB_ANY], __ATOMIC_RELAXED)) {
        l->w[n] = pcb_kw_any(&w);
        l->b[n] = pcb_bucket_of(t, pcb_hash_any(t->key, v4, l->w[n].tail));
        n++;
    }
    l->n = n;
    for (int i = 0; i < n; i++)
        pcb_prefetch(l->b[i]);
}

/* Step two: as pcbtable_lookup_hold (the matching bucket stays read-locked). */
static inline pcb_bucket *pcbtable_lookup_finish_hold(const pcb_lookup *l, uint64_t *value)
{
    for (int i = 0; i < l->n; i++) {
        pcb_bucket *b = pcb_probe_hold(l->b[i], &l->w[i], value);
        if (b != NULL)
            return b;
    }
    return NULL;
}

/*
 * Batch lookup of up to PCB_BATCH_BLOCK keys given as words.  All exact
 * hashes are computed and their buckets prefetched before the first probe,
 * so the cache misses of the block overlap instead of following one another;
 * the keys that miss get their listener hashes and prefetches the same way.
 * Writes values[i] (0 when not found) and found[i] (1/0); returns the number
 * found.
 */
static inline size_t pcb_lookup_block(pcbtable *t, const pcb_kw *w, size_t n,
                                      uint64_t *values, uint8_t *found)
{
    pcb_bucket *b1[PCB_BATCH_BLOCK], *b2[PCB_BATCH_BLOCK], *b3[PCB_BATCH_BLOCK];
    uint8_t pend[PCB_BATCH_BLOCK];
    size_t i, j, npend = 0, nfound = 0;
    const sip_key key = t->key;

    for (i = 0; i < n; i++) {
        b1[i] = NULL;
        if (!pcb_words_any(w[i].la0, w[i].la1) && !pcb_words_any(w[i].fa0, w[i].fa1)) {
            b1[i] = pcb_bucket_of(t, pcb_hash_exact(key, &w[i]));
            pcb_prefetch(b1[i]);
        }
    }
    for (i = 0; i < n; i++) {
        uint64_t v = 0;
        if (b1[i] != NULL && pcb_probe(b1[i], &w[i], &v)) {
            values[i] = v;
            found[i] = 1;
            nfound++;
        } else {
            pend[npend++] = (uint8_t)i;
        }
    }
    if (npend == 0)
        return nfound;
    for (j = 0; j < npend; j++) {
        const pcb_kw *k = &w[pend[j]];
        int v4 = pcb_words_v4(k->la0, k->la1);
        b2[j] = NULL;
        if (!pcb_words_any(k->la0, k->la1)) {
            b2[j] = pcb_bucket_of(t, pcb_hash_bound(key, k->la0, k->la1, k->tail));
            pcb_prefetch(b2[j]);
        }
        b3[j] = pcb_bucket_of(t, pcb_hash_any(key, v4, k->tail));
        pcb_prefetch(b3[j]);
    }
    for (j = 0; j < npend; j++) {
        const pcb_kw *k = &w[pend[j]];
        uint64_t v = 0;
        pcb_kw p = pcb_kw_bound(k);
        int hit = b2[j] != NULL && pcb_probe(b2[j], &p, &v);
        if (!hit) {
            p = pcb_kw_any(k);
            hit = pcb_probe(b3[j], &p, &v);
        }
        values[pend[j]] = hit ? v : 0;
        found[pend[j]] = (uint8_t)hit;
        nfound += (size_t)hit;
    }
    return nfound;
}

/* Batch lookup of n keys; see pcb_lookup_block.  Returns the number found. */
static inline size_t pcbtable_lookup_many(pcbtable *t, const pcb_key *keys, size_t n,
                                          uint64_t *values, uint8_t *found)
{
    pcb_kw w[PCB_BATCH_BLOCK];
    size_t done = 0, nfound = 0, i, m;
    while (done < n) {
        m = n - done < PCB_BATCH_BLOCK ? n - done : PCB_BATCH_BLOCK;
        for (i = 0; i < m; i++)
            w[i] = pcb_kw_of(&keys[done + i]);
        nfound += pcb_lookup_block(t, w, m, values + done, found + done);
        done += m;
    }
    return nfound;
}

/*
 * Batch lookup over columns with arbitrary byte strides (e.g. the fields of a
 * structured array of parsed frames): proto uint8, laddr/faddr 16 bytes each
 * (byte stride 1 within an address), lport/fport host-order uint16.  values
 * and found are written with their own strides.  Returns the number found.
 */
typedef struct pcb_columns {
    const uint8_t *proto;  ptrdiff_t proto_stride;
    const uint8_t *laddr;  ptrdiff_t laddr_stride;
    const uint8_t *lport;  ptrdiff_t lport_stride;
    const uint8_t *faddr;  ptrdiff_t faddr_stride;
    const uint8_t *fport;  ptrdiff_t fport_stride;
} pcb_columns;

static inline size_t pcbtable_lookup_columns(pcbtable *t, const pcb_columns *c, size_t n,
                                             uint8_t *values, ptrdiff_t values_stride,
                                             uint8_t *found, ptrdiff_t found_stride)
{
    pcb_kw w[PCB_BATCH_BLOCK];
    uint64_t v[PCB_BATCH_BLOCK];
    uint8_t f[PCB_BATCH_BLOCK];
    size_t done = 0, nfound = 0, i, m;
    while (done < n) {
        m = n - done < PCB_BATCH_BLOCK ? n - done : PCB_BATCH_BLOCK;
        for (i = 0; i < m; i++) {
            ptrdiff_t r = (ptrdiff_t)(done + i);
            const uint8_t *la = c->laddr + r * c->laddr_stride;
            const uint8_t *fa = c->faddr + r * c->faddr_stride;
            uint16_t lport, fport;
            memcpy(&lport, c->lport + r * c->lport_stride, 2);
            memcpy(&fport, c->fport + r * c->fport_stride, 2);
            w[i].la0 = sip_load_le64(la);
            w[i].la1 = sip_load_le64(la + 8);
            w[i].fa0 = sip_load_le64(fa);
            w[i].fa1 = sip_load_le64(fa + 8);
            w[i].tail = (uint64_t)lport | ((uint64_t)fport << 16)
                      | ((uint64_t)c->proto[r * c->proto_stride] << 32);
        }
        nfound += pcb_lookup_block(t, w, m, v, f);
        for (i = 0; i < m; i++) {
            ptrdiff_t r = (ptrdiff_t)(done + i);
            memcpy(values + r * values_stride, &v[i], 8);
            found[r * found_stride] = f[i];
        }
        done += m;
    }
    return nfound;
}

#endif /* FASTPROTO_PCBTABLE_H */
