# C-level PCQ API, for cimport by the receive path (all nogil).
#
#     from fastproto._core.pcq cimport PCQ, pcq_t, pcq_put
#     cdef pcq_t *q = (<PCQ>queue).q
#     with nogil:
#         if not pcq_put(q, handle):
#             drops += 1          # full: the caller counts the drop
#
# Keep a reference to the PCQ object for as long as its pcq_t is used.
# Many producers may call pcq_put/pcq_put_many at once; pcq_get, pcq_get_many
# and pcq_peek belong to ONE consumer at a time (see src/pcq.h).  Python-level
# get/get_many/peek hold the GIL throughout, so Python threads never break
# that rule among themselves; a nogil consumer must be the only consumer.

from libc.stdint cimport uint64_t


cdef extern from "pcq.h" nogil:
    ctypedef struct pcq_t:
        pass

    uint64_t PCQ_MAXLEN

    # NULL if maxlen is not in 1..PCQ_MAXLEN or memory is short
    pcq_t *pcq_create(uint64_t maxlen)
    void pcq_destroy(pcq_t *q)
    uint64_t pcq_maxlen(const pcq_t *q)

    # producers (any number, concurrently)
    # 1: put; 0: full, nothing changed (counted in pcq_rejected)
    bint pcq_put(pcq_t *q, uint64_t item)
    # a hint before pcq_put: bring the tail and its slot into cache
    void pcq_prefetch(pcq_t *q)
    # how many of the leading items[0..n) were put, in order
    size_t pcq_put_many(pcq_t *q, const uint64_t *items, size_t n)

    # the consumer (one at a time)
    # 1: oldest item taken into *out; 0: none ready
    bint pcq_get(pcq_t *q, uint64_t *out)
    # 1: oldest item copied into *out and left in the queue; 0: none ready
    bint pcq_peek(pcq_t *q, uint64_t *out)
    # up to n items, oldest first, into out; returns how many
    size_t pcq_get_many(pcq_t *q, uint64_t *out, size_t n)

    # anyone
    uint64_t pcq_len(pcq_t *q)
    uint64_t pcq_rejected(pcq_t *q)


cdef class PCQ:
    cdef pcq_t *q
    cdef readonly Py_ssize_t maxlen
    cdef object __weakref__
