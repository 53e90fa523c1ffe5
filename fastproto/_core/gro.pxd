# C-level receive coalescing (GRO), for cimport by receive paths.
#
#     from fastproto._core.gro cimport gro_coalesce, gro_coalesce_handles, gro_stage
#     cdef Py_ssize_t nchunks
#     with nogil:
#         nchunks = gro_coalesce(rows, n, 65535, first, count, total)
#         nchunks = gro_coalesce_handles(table, handles, n, 65535, first, count, total)
#
# rows are parser rows (parse.pxd) of the frames one socket took off its PCQ,
# in order (or, with handles, rows table[handles[i]]: the demux's table by
# handle); chunk c is segments first[c] .. first[c]+count[c]-1, with total[c]
# payload bytes.  gro_stage copies pieces end to end while verifying the
# checksums the demux deferred (checksum on copy).  See docs/tcp.md
# ("Segmentation and coalescing", "Checksum on copy").

from libc.stdint cimport uint8_t, uint32_t, uint64_t

from fastproto._core.parse cimport parsed_t
from fastproto._core.sockbuf cimport SockBuf


cdef Py_ssize_t gro_coalesce(const parsed_t *rows, Py_ssize_t n, uint32_t max_bytes,
                             uint32_t *first, uint32_t *count, uint32_t *total) noexcept nogil
cdef Py_ssize_t gro_coalesce_handles(const parsed_t *table, const uint64_t *handles, Py_ssize_t n,
                                     uint32_t max_bytes, uint32_t *first, uint32_t *count,
                                     uint32_t *total) noexcept nogil
# ACK coalescing: what gro_fold_acks needs of the connection.
ctypedef struct ack_tcb_t:
    uint32_t snd_una
    uint32_t snd_max
    uint32_t rcv_nxt
    uint32_t ts_recent
    bint ts_ok

# keep[i] = 0 for the pure ACKs of table[handles[0..n-1]] that the next segment
# covers (folded into it), 1 for the rest; returns how many are folded.
cdef Py_ssize_t gro_fold_acks(const parsed_t *table, const uint64_t *handles, Py_ssize_t n,
                              const ack_tcb_t *tcb, uint8_t *keep) noexcept nogil
# Pieces 0..n-1: lens[i] bytes at base + offs[i], parsed as rows[i]; copied
# end to end to dst (NULL: verified only), each deferred checksum verified on
# the way.  Returns the number of pieces before the first bad one (n: all good).
cdef Py_ssize_t gro_stage(unsigned char *dst, const unsigned char *base,
                          const unsigned long long *offs, const unsigned int *lens,
                          const parsed_t *const *rows, Py_ssize_t n) noexcept nogil


cdef class Chunk:
    cdef object _owner              # keeps the pool's memory alive
    cdef object _rows_owner         # keeps the parser rows' memory alive
    cdef const unsigned char *_base  # the pool's first byte
    cdef unsigned long long *_offs  # piece i: _offs[i] bytes from _base ...
    cdef unsigned int *_lens        # ... _lens[i] bytes long ...
    cdef const parsed_t **_rowp     # ... parsed as *_rowp[i] (one malloc with _offs)
    cdef Py_ssize_t _n
    cdef Py_ssize_t _total
    cdef bytes _flat                # the pieces joined, made on first buffer request
    cdef SockBuf _staged            # the buffer stage_into put the payload on, or None
    cdef Py_ssize_t _at             # ... at this stream offset (sockbuf_t.appended)
    cdef readonly bint committed    # append_to took the staged bytes as they were
    cdef readonly int flags         # TCP flags of the chunk: ACK, and PSH if any had it
    cdef readonly unsigned int ts_ecr   # TSecr of the last segment
    cdef readonly Py_ssize_t segments
    cdef readonly Py_ssize_t half  # payload bytes of the first segments // 2 segments
    cdef readonly Py_ssize_t deferred  # segments whose checksum is still to be verified
    cdef readonly Py_ssize_t reread    # payload bytes of segments the demux verified
    cdef int _alloc(self, Py_ssize_t n) except -1
    cdef void _summarise(self, Py_ssize_t n) noexcept
