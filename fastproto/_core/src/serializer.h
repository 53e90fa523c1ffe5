/*
 * Serializer: one non-recursive lock per interface that guards its receive
 * path and its driver entry points (start, init, ioctl), after DragonFly's
 * LWKT serializer.  Usable from threads that do not hold the GIL.
 *
 * Two words:
 *
 *     state  the lock proper, a futex word:
 *                SER_UNLOCKED (0)   free
 *                SER_LOCKED   (1)   held, nobody sleeping on it
 *                SER_CONTENDED(2)   held, some thread may be sleeping on it
 *     owner  pthread_self() of the holder, 0 when free.  Written only by the
 *            holder (set after entering, cleared before leaving); read by
 *            anyone for held-by-me checks.
 *
 * Enter: CAS state 0 -> 1 (acquire).  If that fails, spin a little (the
 * holder is usually on another core for a short while), then mark the lock
 * contended with exchange(state, 2, acquire) and sleep in futex_wait while
 * the exchange returns non-zero (U. Drepper, "Futexes Are Tricky", mutex 2).
 * Exit: owner = 0, then exchange(state, 0, release); if the old value was 2,
 * wake one sleeper.  The uncontended path is one CAS and one exchange.
 *
 * Memory orders: the release exchange on exit and the acquire CAS/exchange
 * on enter make everything done under the serializer happen before the next
 * holder's critical section.  owner accesses are relaxed: a thread only ever
 * compares owner with its own id, and the only thread that can have stored
 * its id there is itself, so it reads back its own latest store (its id
 * while it holds the serializer, 0 or another id after it left).  The
 * previous holder's "owner = 0" is sequenced before its release and the next
 * holder stores its id after its acquire, so a stale 0 never overwrites the
 * new owner.
 *
 * Not recursive: entering while already holding returns SER_EDEADLK instead
 * of deadlocking, and only the holder may exit (SER_EPERM otherwise).
 *
 * A thread that ends while holding a serializer leaves it held; its id may
 * later be reused by a new thread, which would then count as the holder.
 * Entry points must leave the serializer on every path (the Python API does,
 * with `with`).
 */
#ifndef FASTPROTO_SERIALIZER_H
#define FASTPROTO_SERIALIZER_H

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#define SER_UNLOCKED  0u
#define SER_LOCKED    1u
#define SER_CONTENDED 2u

/* results: 0 on success, else an errno value */
#define SER_OK        0
#define SER_EBUSY     EBUSY      /* try_enter: held by another thread */
#define SER_EDEADLK   EDEADLK    /* enter: already held by the calling thread */
#define SER_EPERM     EPERM      /* exit: not held by the calling thread */
#define SER_ETIMEDOUT ETIMEDOUT  /* enter_timed: still held by another */

/* Tries before a waiter sleeps: a critical section on another core is
 * usually over within this many pauses. */
#define SER_SPINS 200

typedef struct serializer {
    uint32_t state;
    uint32_t _pad0;
    uintptr_t owner;
    uint64_t contended;         /* enters that had to wait (statistics) */
    char _pad1[64 - 2 * sizeof(uint64_t) - sizeof(uintptr_t)];
} serializer_t;

static inline uintptr_t ser_self(void)
{
    return (uintptr_t)pthread_self();
}

static inline void ser_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Sleep while *addr == val, at most timeout_ns (< 0: no limit). */
static inline void ser_futex_wait(uint32_t *addr, uint32_t val, int64_t timeout_ns)
{
#ifdef __linux__
    struct timespec ts, *tsp = NULL;
    if (timeout_ns >= 0) {
        ts.tv_sec = (time_t)(timeout_ns / 1000000000);
        ts.tv_nsec = (long)(timeout_ns % 1000000000);
        tsp = &ts;
    }
    syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, val, tsp, NULL, 0);
#else
    (void)addr; (void)val; (void)timeout_ns;
    sched_yield();
#endif
}

static inline void ser_futex_wake_one(uint32_t *addr)
{
#ifdef __linux__
    syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
#else
    (void)addr;
#endif
}

static inline int64_t ser_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline serializer_t *serializer_create(void)
{
    void *mem = NULL;
    if (posix_memalign(&mem, 64, sizeof(serializer_t)) != 0)
        return NULL;
    memset(mem, 0, sizeof(serializer_t));
    return (serializer_t *)mem;
}

static inline void serializer_destroy(serializer_t *s)
{
    free(s);
}

/* Does the calling thread hold s? */
static inline int serializer_held_by_me(const serializer_t *s)
{
    return __atomic_load_n(&s->owner, __ATOMIC_RELAXED) == ser_self();
}

/* Is s held by any thread (a snapshot)? */
static inline int serializer_is_held(const serializer_t *s)
{
    return __atomic_load_n(&s->state, __ATOMIC_RELAXED) != SER_UNLOCKED;
}

/* Enter without waiting: SER_OK, SER_EBUSY, or SER_EDEADLK. */
static inline int serializer_try_enter(serializer_t *s)
{
    uintptr_t me = ser_self();
    if (__atomic_load_n(&s->owner, __ATOMIC_RELAXED) == me)
        return SER_EDEADLK;
    uint32_t c = SER_UNLOCKED;
    if (!__atomic_compare_exchange_n(&s->state, &c, SER_LOCKED, 0,
                                     __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
        return SER_EBUSY;
    __atomic_store_n(&s->owner, me, __ATOMIC_RELAXED);
    return SER_OK;
}

/* The waiting part of enter; SER_OK or SER_ETIMEDOUT (timeout_ns >= 0). */
static inline int ser_enter_slow(serializer_t *s, int64_t timeout_ns)
{
    for (int i = 0; i < SER_SPINS; i++) {
        uint32_t c = __atomic_load_n(&s->state, __ATOMIC_RELAXED);
        if (c == SER_UNLOCKED &&
            __atomic_compare_exchange_n(&s->state, &c, SER_LOCKED, 0,
                                        __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
            return SER_OK;
        if (c == SER_CONTENDED)
            break;              /* others already sleep: join them */
        ser_cpu_relax();
    }
    __atomic_fetch_add(&s->contended, 1, __ATOMIC_RELAXED);
    int64_t deadline = timeout_ns >= 0 ? ser_now_ns() + timeout_ns : 0;
    /* Having set CONTENDED ourselves, we leave it set when we get the lock:
     * we cannot know whether others still sleep, so exit wakes one. */
    while (__atomic_exchange_n(&s->state, SER_CONTENDED, __ATOMIC_ACQUIRE) != SER_UNLOCKED) {
        int64_t left = -1;
        if (timeout_ns >= 0) {
            left = deadline - ser_now_ns();
            if (left <= 0)
                return SER_ETIMEDOUT;
        }
        ser_futex_wait(&s->state, SER_CONTENDED, left);
    }
    return SER_OK;
}

/* Enter, waiting as long as it takes: SER_OK or SER_EDEADLK. */
static inline int serializer_enter(serializer_t *s)
{
    uintptr_t me = ser_self();
    if (__atomic_load_n(&s->owner, __ATOMIC_RELAXED) == me)
        return SER_EDEADLK;
    uint32_t c = SER_UNLOCKED;
    if (!__atomic_compare_exchange_n(&s->state, &c, SER_LOCKED, 0,
                                     __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
        ser_enter_slow(s, -1);
    __atomic_store_n(&s->owner, me, __ATOMIC_RELAXED);
    return SER_OK;
}

/* Enter, waiting at most timeout_ns: SER_OK, SER_EDEADLK or SER_ETIMEDOUT. */
static inline int serializer_enter_timed(serializer_t *s, int64_t timeout_ns)
{
    uintptr_t me = ser_self();
    if (__atomic_load_n(&s->owner, __ATOMIC_RELAXED) == me)
        return SER_EDEADLK;
    uint32_t c = SER_UNLOCKED;
    if (!__atomic_compare_exchange_n(&s->state, &c, SER_LOCKED, 0,
                                     __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
        if (ser_enter_slow(s, timeout_ns < 0 ? 0 : timeout_ns) != SER_OK)
            return SER_ETIMEDOUT;
    }
    __atomic_store_n(&s->owner, me, __ATOMIC_RELAXED);
    return SER_OK;
}

/* Leave: SER_OK, or SER_EPERM if the calling thread does not hold s. */
static inline int serializer_exit(serializer_t *s)
{
    if (__atomic_load_n(&s->owner, __ATOMIC_RELAXED) != ser_self())
        return SER_EPERM;
    __atomic_store_n(&s->owner, (uintptr_t)0, __ATOMIC_RELAXED);
    if (__atomic_exchange_n(&s->state, SER_UNLOCKED, __ATOMIC_RELEASE) == SER_CONTENDED)
        ser_futex_wake_one(&s->state);
    return SER_OK;
}

/* Enters that had to wait, so far. */
static inline uint64_t serializer_contended(const serializer_t *s)
{
    return __atomic_load_n(&s->contended, __ATOMIC_RELAXED);
}

#endif /* FASTPROTO_SERIALIZER_H */
