# C-level serializer API, for cimport by the receive path and drivers (nogil).
#
#     from fastproto._core.serializer cimport Serializer, serializer_t, serializer_enter, serializer_exit
#     cdef serializer_t *s = (<Serializer>ser).s
#     with nogil:
#         serializer_enter(s)
#         ... rx path ...
#         serializer_exit(s)
#
# Results are 0 (SER_OK) or an errno value, as pthread_mutex_* do.  Keep a
# reference to the Serializer object for as long as its serializer_t is used.
# Python's enter() waits without the GIL, so a nogil holder may take the GIL
# inside its critical section without deadlocking against a Python waiter.

from libc.stdint cimport int64_t, uint64_t


cdef extern from "serializer.h" nogil:
    ctypedef struct serializer_t:
        pass

    int SER_OK
    int SER_EBUSY          # try_enter: held by another thread
    int SER_EDEADLK        # enter: already held by the calling thread
    int SER_EPERM          # exit: not held by the calling thread
    int SER_ETIMEDOUT      # enter_timed: still held after the timeout

    serializer_t *serializer_create()
    void serializer_destroy(serializer_t *s)

    # SER_OK or SER_EDEADLK; waits (spins, then sleeps) while held elsewhere
    int serializer_enter(serializer_t *s)
    # SER_OK, SER_EDEADLK or SER_ETIMEDOUT
    int serializer_enter_timed(serializer_t *s, int64_t timeout_ns)
    # SER_OK, SER_EBUSY or SER_EDEADLK; never waits
    int serializer_try_enter(serializer_t *s)
    # SER_OK or SER_EPERM
    int serializer_exit(serializer_t *s)
    bint serializer_held_by_me(const serializer_t *s)
    bint serializer_is_held(const serializer_t *s)
    uint64_t serializer_contended(const serializer_t *s)


cdef class Serializer:
    cdef serializer_t *s
    cdef readonly str name
    cdef object __weakref__
    cdef str _label(self)
    cdef int _enter(self) except -1
    cdef int _exit(self) except -1
