/*
 * A one-word reader/writer spin lock, writer-preferring, for pcbtable buckets.
 *
 * Bit layout of the 32-bit lock word:
 *
 *     bit 0       RW_WRITER   a writer holds the lock
 *     bit 1       RW_WAITING  some writer wants the lock: new readers stay out
 *     bits 2..31  readers     number of readers inside, counted in RW_READER (4)
 *
 * Readers:  fetch_add(RW_READER, acquire).  If the old word had neither
 *           RW_WRITER nor RW_WAITING, the reader is in.  Otherwise it takes
 *           its increment back (fetch_sub, relaxed: it read nothing) and spins
 *           on plain loads until both bits are clear, then retries.
 *           Unlock is fetch_sub(RW_READER, release).
 * Writers:  when the word is 0 or exactly RW_WAITING (no reader inside, no
 *           writer), CAS it to RW_WRITER (acquire).  Otherwise set RW_WAITING
 *           (relaxed; it only keeps new readers out) and spin.  Unlock is
 *           fetch_sub(RW_WRITER, release): the reader bits may hold transient
 *           increments of readers about to back off, and RW_WAITING may have
 *           been set by another writer, so the word is not simply zeroed.
 *
 * Why it is correct:
 *   - Mutual exclusion: a writer enters only by a CAS from a word with a zero
 *     reader count and no writer, and sets RW_WRITER in the same atomic step.
 *     A reader whose fetch_add comes after that CAS in the word's
 *     modification order sees RW_WRITER and backs off; one whose fetch_add
 *     came before made the count non-zero, so the CAS could not succeed.
 *   - Visibility: the writer's release fetch_sub and every later RMW on the
 *     word form a release sequence, so a reader's acquire fetch_add that
 *     enters after the writer left sees everything the writer wrote under
 *     the lock.  Symmetrically, a reader's release fetch_sub is read by the
 *     writer's acquire CAS, so the reader's loads happen before the writer's
 *     stores: an entry unlinked under the writer lock may be freed at once,
 *     no reader can still be looking at it.
 *   - Writer preference: RW_WAITING turns new readers away, so a stream of
 *     readers cannot starve a writer; the readers already inside finish in
 *     bounded time (the table holds a bucket lock only while scanning one
 *     bucket).  Two writers may both set RW_WAITING; the one whose CAS wins
 *     clears it, the other sets it again on its next spin.
 *   - No ABA: the word is a count and two flags, never a pointer; a CAS that
 *     succeeds after other changes still observes "no reader, no writer",
 *     which is all it needs.
 *
 * Rules for holders (what keeps this deadlock-free): a bucket lock is a leaf
 * lock held for a bounded time.  Hold at most one at a time, and never block,
 * take the GIL or wait for another thread while holding it.
 */
#ifndef FASTPROTO_RWLOCK_H
#define FASTPROTO_RWLOCK_H

#include <stdint.h>
#include <sched.h>

#define RW_WRITER  1u
#define RW_WAITING 2u
#define RW_READER  4u

typedef uint32_t rwlock_t;

/* Spins before a waiter yields the CPU: the machine may have fewer cores than
 * runnable threads, and the holder may be descheduled. */
#define RW_SPINS_BEFORE_YIELD 128

static inline void rw_pause(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static inline void rw_backoff(unsigned *spins)
{
    if (++*spins < RW_SPINS_BEFORE_YIELD) {
        rw_pause();
    } else {
        *spins = 0;
        sched_yield();
    }
}

static inline void rw_init(rwlock_t *l)
{
    __atomic_store_n(l, 0u, __ATOMIC_RELAXED);
}

static inline void rw_rdlock(rwlock_t *l)
{
    unsigned spins = 0;
    for (;;) {
        uint32_t old = __atomic_fetch_add(l, RW_READER, __ATOMIC_ACQUIRE);
        if (__builtin_expect(!(old & (RW_WRITER | RW_WAITING)), 1))
            return;
        __atomic_fetch_sub(l, RW_READER, __ATOMIC_RELAXED);
        while (__atomic_load_n(l, __ATOMIC_RELAXED) & (RW_WRITER | RW_WAITING))
            rw_backoff(&spins);
    }
}

static inline void rw_rdunlock(rwlock_t *l)
{
    __atomic_fetch_sub(l, RW_READER, __ATOMIC_RELEASE);
}

static inline int rw_trywrlock(rwlock_t *l)
{
    uint32_t old = __atomic_load_n(l, __ATOMIC_RELAXED);
    if (old & ~RW_WAITING)
        return 0;
    return __atomic_compare_exchange_n(l, &old, RW_WRITER, 0,
                                       __ATOMIC_ACQUIRE, __ATOMIC_RELAXED);
}

static inline void rw_wrlock(rwlock_t *l)
{
    unsigned spins = 0;
    for (;;) {
        uint32_t old = __atomic_load_n(l, __ATOMIC_RELAXED);
        if (!(old & ~RW_WAITING)) {
            if (__atomic_compare_exchange_n(l, &old, RW_WRITER, 0,
                                            __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
                return;
            continue;
        }
        if (!(old & RW_WAITING))
            __atomic_fetch_or(l, RW_WAITING, __ATOMIC_RELAXED);
        rw_backoff(&spins);
    }
}

static inline void rw_wrunlock(rwlock_t *l)
{
    __atomic_fetch_sub(l, RW_WRITER, __ATOMIC_RELEASE);
}

#endif /* FASTPROTO_RWLOCK_H */
