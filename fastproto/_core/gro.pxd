# C-level receive coalescing (GRO), for cimport by receive paths.
#
#     from fastproto._core.gro cimport gro_coalesce
#     cdef Py_ssize_t nchunks
#     with nogil:
#         nchunks = gro_coalesce(rows, n, 65535, first, count, total)
#
# rows are parser rows (parse.pxd) of the frames one socket took off its PCQ,
# in order; chunk c is rows first[c] .. first[c]+count[c]-1, with total[c]
# payload bytes.  See docs/tcp.md ("Segmentation and coalescing").

from libc.stdint cimport uint32_t

from fastproto._core.parse cimport parsed_t


cdef Py_ssize_t gro_coalesce(const parsed_t *rows, Py_ssize_t n, uint32_t max_bytes,
                             uint32_t *first, uint32_t *count, uint32_t *total) noexcept nogil


cdef class Chunk:
    cdef object _owner              # keeps the pool's memory alive
    cdef const unsigned char *_base  # the pool's first byte
    cdef unsigned long long *_offs  # piece i: _offs[i] bytes from _base ...
    cdef unsigned int *_lens        # ... _lens[i] bytes long
    cdef Py_ssize_t _n
    cdef Py_ssize_t _total
    cdef bytes _flat                # the pieces joined, made on first buffer request
    cdef readonly int flags         # TCP flags of the chunk: ACK, and PSH if any had it
    cdef readonly unsigned int ts_ecr   # TSecr of the last segment
    cdef readonly Py_ssize_t segments
    cdef readonly Py_ssize_t half  # payload bytes of the first segments // 2 segments
