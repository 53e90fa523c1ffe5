# C-level buffer pool API, for cimport by the receive path (all nogil).
#
#     from fastproto._core.buffers cimport BufferPool, bufpool_t, bufpool_alloc, buf_ptr
#     cdef bufpool_t *p = (<BufferPool>pool).pool
#     cdef uint64_t h
#     with nogil:
#         if bufpool_alloc(p, &h):
#             memcpy(buf_ptr(p, h), frame, n)
#
# Keep a reference to the BufferPool object for as long as its bufpool_t is
# used: the buffers' memory is its NumPy array.  Any number of threads may
# alloc and free at once.

from libc.stdint cimport uint8_t, uint32_t, uint64_t
cimport numpy as cnp


cdef extern from "buffers.h" nogil:
    ctypedef struct bufpool_t:
        uint8_t *data           # count * size bytes; row h at data + h * size
        uint64_t size           # bytes per buffer
        uint64_t count          # number of buffers, handles 0..count-1

    # results of bufpool_free / bufpool_free_many
    int BUF_OK
    int BUF_ERANGE              # handle >= count
    int BUF_EFREE               # handle not allocated (double free)
    uint64_t BUF_MAXCOUNT

    bufpool_t *bufpool_create(uint8_t *data, uint64_t count, uint64_t size)
    void bufpool_destroy(bufpool_t *p)

    uint8_t *buf_ptr(const bufpool_t *p, uint64_t h)
    bint buf_is_allocated(const bufpool_t *p, uint64_t h)

    # 1: a free buffer's handle in *h (now allocated); 0: none free
    bint bufpool_alloc(bufpool_t *p, uint64_t *h)
    # up to n handles into out; returns how many
    size_t bufpool_alloc_many(bufpool_t *p, uint64_t *out, size_t n)
    # BUF_OK, BUF_ERANGE or BUF_EFREE (nothing changed)
    int bufpool_free(bufpool_t *p, uint64_t h)
    # all or nothing; on error *bad is the index in hs of the first bad handle
    int bufpool_free_many(bufpool_t *p, const uint64_t *hs, size_t n, size_t *bad)
    uint64_t bufpool_available(bufpool_t *p)


cdef class BufferPool:
    cdef bufpool_t *pool
    cdef readonly object data           # (count, size) uint8 ndarray
    cdef object _flat                   # 1-D writable memoryview of data
    cdef readonly Py_ssize_t count
    cdef readonly Py_ssize_t size
    cdef object __weakref__
    cdef int _raise_free(self, int rc, uint64_t h) except -1
    cdef uint64_t _checked(self, object handle) except? 0xFFFFFFFFFFFFFFFF


cdef class Batch:
    cdef readonly BufferPool pool
    cdef object _handles                # uint64[capacity]
    cdef object _lengths                # uint32[capacity]
    cdef uint64_t *handle_ptr           # == _handles' data
    cdef uint32_t *length_ptr           # == _lengths' data
    cdef readonly Py_ssize_t capacity
    cdef readonly Py_ssize_t count      # rows 0..count-1 are in use


# The slots of a receive call's outputs (uint64 handles, uint32 lengths):
# the shorter length; ValueError unless both are writable, 1-D, C-contiguous.
cdef Py_ssize_t handle_outputs_room(cnp.ndarray handles_out, cnp.ndarray lengths_out) except -1
