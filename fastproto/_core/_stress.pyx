# cython: always_allow_keywords=False
"""Drive the core's concurrent primitives from threads that do not hold the GIL.

For tests and benchmarks: each function runs its loop in C with the GIL
released, through the same ``.pxd`` declarations other Cython modules use,
so that Python threads calling these functions really run in parallel.
Items put by producer ``p`` are ``(p << 48) | sequence number``.
"""
import numpy as _np

cimport numpy as cnp
from libc.stdint cimport uint32_t, uint64_t
from libc.stdlib cimport free, malloc

from fastproto._core.buffers cimport (
    BUF_OK, BufferPool, buf_ptr, bufpool_alloc, bufpool_alloc_many, bufpool_free,
    bufpool_free_many, bufpool_t,
)
from fastproto._core.pcq cimport PCQ, pcq_get, pcq_get_many, pcq_put, pcq_put_many, pcq_t
from fastproto._core.serializer cimport (
    SER_OK, Serializer, serializer_enter, serializer_exit, serializer_t, serializer_try_enter,
)

cnp.import_array()

cdef extern from "<sched.h>" nogil:
    int sched_yield()

cdef extern from "<pthread.h>" nogil:
    ctypedef unsigned long pthread_t
    int pthread_create(pthread_t *thread, const void *attr,
                       void *(*start)(void *) noexcept nogil, void *arg)
    int pthread_join(pthread_t thread, void **retval)

cdef extern from *:
    """
    #include <time.h>
    /* accesses the compiler may not merge or drop: the serializer test's
     * counter must really be read, then written, inside the lock */
    static inline uint64_t stress_load(uint64_t *p) { return *(volatile uint64_t *)p; }
    static inline void stress_store(uint64_t *p, uint64_t v) { *(volatile uint64_t *)p = v; }
    static inline int stress_claim(uint32_t *p, uint32_t owner)
    {
        uint32_t expect = 0;
        return __atomic_compare_exchange_n(p, &expect, owner, 0,
                                           __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
    }
    static inline int stress_release(uint32_t *p, uint32_t owner)
    {
        uint32_t expect = owner;
        return __atomic_compare_exchange_n(p, &expect, 0, 0,
                                           __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
    }
    static inline void stress_pause(void)
    {
    #if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
    #endif
    }
    static inline double stress_now(void)
    {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec + ts.tv_nsec * 1e-9;
    }
    /* a small xorshift generator for batch sizes */
    static inline uint64_t stress_rand(uint64_t *s)
    {
        uint64_t x = *s;
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        return *s = x;
    }
    """
    uint64_t stress_load(uint64_t *p) nogil
    void stress_store(uint64_t *p, uint64_t v) nogil
    bint stress_claim(uint32_t *p, uint32_t owner) nogil
    bint stress_release(uint32_t *p, uint32_t owner) nogil
    void stress_pause() nogil
    double stress_now() nogil
    uint64_t stress_rand(uint64_t *s) nogil

#: bits of an item below the producer number
SEQ_BITS = 48
cdef uint64_t _SEQ_MASK = (<uint64_t>1 << 48) - 1


def pcq_produce(PCQ q not None, unsigned int producer, uint64_t count, size_t batch=1):
    """Put ``count`` items ``(producer << 48) | i``, i = 0.., without the GIL.

    ``batch`` 1 uses pcq_put; larger uses pcq_put_many with run lengths drawn
    from 1..batch.  A full queue makes the producer yield the CPU and retry.
    Returns how many times it found the queue full.
    """
    if batch < 1:
        raise ValueError("batch must be >= 1")
    if producer >= (1 << 16) or count > _SEQ_MASK:
        raise ValueError("producer or count too large for the item encoding")
    cdef pcq_t *c = q.q
    cdef uint64_t base = (<uint64_t>producer) << 48
    cdef uint64_t i = 0, full = 0, rng = 0x9E3779B97F4A7C15 ^ producer, want, j
    cdef size_t got
    cdef uint64_t *buf = <uint64_t *>malloc(batch * sizeof(uint64_t))
    if buf == NULL:
        raise MemoryError()
    with nogil:
        while i < count:
            if batch == 1:
                if pcq_put(c, base | i):
                    i += 1
                else:
                    full += 1
                    sched_yield()
                continue
            want = 1 + stress_rand(&rng) % batch
            if want > count - i:
                want = count - i
            for j in range(want):
                buf[j] = base | (i + j)
            got = pcq_put_many(c, buf, want)
            i += got
            if got < want:
                full += 1
                sched_yield()
    free(buf)
    return full


def pcq_consume(PCQ q not None, unsigned int nproducers, uint64_t total,
                size_t batch=1, double timeout=60.0):
    """Take ``total`` items without the GIL and check each producer's order.

    ``batch`` 1 uses pcq_get; larger uses pcq_get_many with up to ``batch``
    items at a time.  Gives up after ``timeout`` seconds without an item.
    Returns ``(next_seq, disorder, foreign, received)``: ``next_seq[p]`` is
    one past the last sequence number seen from producer p, ``disorder`` how
    many items were not the next one expected from their producer (a loss, a
    duplicate or a reordering), ``foreign`` how many named no producer.
    """
    if batch < 1:
        raise ValueError("batch must be >= 1")
    next_seq = _np.zeros(max(nproducers, 1), dtype=_np.uint64)
    cdef uint64_t *nxt = <uint64_t *>cnp.PyArray_DATA(<cnp.ndarray>next_seq)
    cdef pcq_t *c = q.q
    cdef uint64_t received = 0, disorder = 0, foreign = 0, v, pid, seq, idle = 0
    cdef size_t n, k, want
    cdef double last = 0.0
    cdef uint64_t *buf = <uint64_t *>malloc(batch * sizeof(uint64_t))
    if buf == NULL:
        raise MemoryError()
    with nogil:
        last = stress_now()
        while received < total:
            want = batch if total - received > batch else <size_t>(total - received)
            if batch == 1:
                n = pcq_get(c, buf)
            else:
                n = pcq_get_many(c, buf, want)
            if n == 0:
                idle += 1
                if idle % 256 == 0 and stress_now() - last > timeout:
                    break
                sched_yield()
                continue
            last = stress_now() if idle else last
            idle = 0
            for k in range(n):
                v = buf[k]
                pid = v >> 48
                seq = v & _SEQ_MASK
                if pid >= nproducers:
                    foreign += 1
                    continue
                if seq != nxt[pid]:
                    disorder += 1
                nxt[pid] = seq + 1
            received += n
    free(buf)
    return next_seq[:nproducers], disorder, foreign, received


cdef struct _transfer:
    pcq_t *q
    uint64_t n
    size_t batch


cdef void *_transfer_producer(void *arg) noexcept nogil:
    cdef _transfer *t = <_transfer *>arg
    cdef uint64_t i = 0, j, want
    cdef uint64_t buf[256]
    cdef size_t batch = t.batch if t.batch <= 256 else 256
    while i < t.n:
        if batch == 1:
            if pcq_put(t.q, i):
                i += 1
            else:
                sched_yield()
            continue
        want = batch if t.n - i > batch else t.n - i
        for j in range(want):
            buf[j] = i + j
        j = pcq_put_many(t.q, buf, want)
        i += j
        if j < want:
            sched_yield()
    return NULL


def pcq_transfer(PCQ q not None, uint64_t n, size_t batch=256):
    """Move items 0..n-1 from a producer thread to the calling thread, no GIL.

    Starts a native producer thread (pcq_put, or pcq_put_many in runs of
    ``batch`` <= 256), consumes in the calling thread with pcq_get_many, and
    joins the producer before returning the sum of the items received (which
    is n(n-1)/2 when nothing was lost or duplicated).
    """
    if batch < 1:
        raise ValueError("batch must be >= 1")
    cdef _transfer t
    t.q = q.q
    t.n = n
    t.batch = batch
    cdef pthread_t th
    cdef uint64_t got = 0, total = 0
    cdef size_t k, i
    cdef uint64_t buf[256]
    cdef size_t want = batch if batch <= 256 else 256
    if pthread_create(&th, NULL, _transfer_producer, &t) != 0:
        raise OSError("cannot start a producer thread")
    with nogil:
        while got < n:
            k = pcq_get_many(t.q, buf, want)
            if k == 0:
                sched_yield()
                continue
            for i in range(k):
                total += buf[i]
            got += k
        pthread_join(th, NULL)
    return total


def bufpool_churn(BufferPool pool not None, unsigned int worker, uint64_t rounds,
                  size_t batch, uint32_t[::1] owner not None):
    """Allocate and free buffers ``rounds`` times without the GIL, checking ownership.

    Each round takes up to ``batch`` buffers (bufpool_alloc for 1, else
    bufpool_alloc_many), marks each as ours in ``owner`` (an atomic claim that
    fails if another worker holds it), stamps our number into the buffer,
    checks the stamp and the mark, then frees them all (bufpool_free /
    bufpool_free_many).  Returns the number of violations seen: a buffer
    handed to two workers at once, a stamp overwritten, a refused free.
    """
    if batch < 1 or batch > 4096:
        raise ValueError("batch must be in 1..4096")
    if <uint64_t>owner.shape[0] < pool.pool.count:
        raise ValueError("owner must have one entry per buffer")
    cdef bufpool_t *p = pool.pool
    cdef uint32_t me = worker + 1
    cdef uint64_t errors = 0, r, h
    cdef size_t k, i, bad = 0
    cdef uint64_t *hs = <uint64_t *>malloc(batch * sizeof(uint64_t))
    cdef char *ours = <char *>malloc(batch)
    cdef uint32_t *own = &owner[0]
    if hs == NULL or ours == NULL:
        free(hs)
        free(ours)
        raise MemoryError()
    with nogil:
        for r in range(rounds):
            if batch == 1:
                k = bufpool_alloc(p, hs)
            else:
                k = bufpool_alloc_many(p, hs, batch)
            if k == 0:
                sched_yield()
                continue
            for i in range(k):
                h = hs[i]
                ours[i] = h < p.count and stress_claim(&own[h], me)
                if not ours[i]:
                    errors += 1
                elif p.size >= 4:
                    (<uint32_t *>buf_ptr(p, h))[0] = me
            for i in range(k):
                if not ours[i]:
                    continue
                h = hs[i]
                if p.size >= 4 and (<uint32_t *>buf_ptr(p, h))[0] != me:
                    errors += 1
                if not stress_release(&own[h], me):
                    errors += 1
            # the pool handed these out to us: they go back in any case
            if batch == 1:
                if bufpool_free(p, hs[0]) != BUF_OK:
                    errors += 1
            elif bufpool_free_many(p, hs, k, &bad) != BUF_OK:
                errors += 1
    free(hs)
    free(ours)
    return errors


def serializer_count(Serializer ser not None, uint64_t[::1] counter not None,
                     uint64_t n, bint use_try=False):
    """Add 1 to ``counter[0]`` ``n`` times inside the serializer, without the GIL.

    The increment is a separate load and store with pauses between, so two
    threads inside at once would lose updates.  ``use_try`` enters with
    serializer_try_enter in a yield loop instead of serializer_enter.
    Returns how many enters had to retry (``use_try``).
    """
    cdef serializer_t *s = ser.s
    cdef uint64_t *cnt = &counter[0]
    cdef uint64_t i, v, retries = 0
    cdef int spin
    with nogil:
        for i in range(n):
            if use_try:
                while serializer_try_enter(s) != SER_OK:
                    retries += 1
                    sched_yield()
            else:
                serializer_enter(s)
            v = stress_load(cnt)
            for spin in range(4):
                stress_pause()
            stress_store(cnt, v + 1)
            serializer_exit(s)
    return retries


def serializer_cycle(Serializer ser not None, uint64_t n):
    """Enter and exit ``n`` times in a row without the GIL (to time the uncontended path)."""
    cdef serializer_t *s = ser.s
    cdef uint64_t i
    with nogil:
        for i in range(n):
            serializer_enter(s)
            serializer_exit(s)


def bufpool_cycle(BufferPool pool not None, uint64_t n, size_t batch=1):
    """Allocate and free ``batch`` buffers ``n`` times without the GIL (to time them)."""
    if batch < 1 or batch > 4096:
        raise ValueError("batch must be in 1..4096")
    cdef bufpool_t *p = pool.pool
    cdef uint64_t i
    cdef size_t k, bad = 0
    cdef uint64_t *hs = <uint64_t *>malloc(batch * sizeof(uint64_t))
    if hs == NULL:
        raise MemoryError()
    with nogil:
        for i in range(n):
            if batch == 1:
                if bufpool_alloc(p, hs):
                    bufpool_free(p, hs[0])
            else:
                k = bufpool_alloc_many(p, hs, batch)
                bufpool_free_many(p, hs, k, &bad)
    free(hs)


cdef class PCQDrainer:
    """PCQDrainer(pcqs): takes everything off the given PCQs without the GIL.

    Stands in for the receivers in the demux benchmarks: ``drain(ids)``
    empties the PCQs numbered ``ids`` (e.g. the wake list of a batch) with
    ``pcq_get_many`` and returns how many items it took.
    """
    cdef pcq_t **qs
    cdef list _refs
    cdef Py_ssize_t n

    def __cinit__(self, pcqs):
        self._refs = list(pcqs)
        self.n = len(self._refs)
        self.qs = <pcq_t **>malloc(max(self.n, 1) * sizeof(pcq_t *))
        if self.qs == NULL:
            raise MemoryError()
        cdef Py_ssize_t i
        for i in range(self.n):
            self.qs[i] = (<PCQ?>self._refs[i]).q

    def __dealloc__(self):
        free(self.qs)

    def drain(self, const uint32_t[::1] ids not None):
        cdef uint64_t scratch[256]
        cdef uint64_t total = 0
        cdef size_t k
        cdef Py_ssize_t i
        for i in range(ids.shape[0]):
            if ids[i] >= self.n:
                raise IndexError(f"no PCQ number {ids[i]}")
        with nogil:
            for i in range(ids.shape[0]):
                while True:
                    k = pcq_get_many(self.qs[ids[i]], scratch, 256)
                    total += k
                    if k < 256:
                        break
        return total
