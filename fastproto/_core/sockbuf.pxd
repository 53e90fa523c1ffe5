# C-level socket receive buffer, for cimport by receive paths (all nogil).
#
#     from fastproto._core.sockbuf cimport SockBuf, sockbuf_t, sb_tail_reserve, sb_tail_commit
#     cdef sockbuf_t *sb = &(<SockBuf>buf).sb
#     with nogil:
#         dst = sb_tail_reserve(sb, n)      # NULL: out of memory (nothing changed)
#         ... write up to n bytes at dst ...
#         sb_tail_commit(sb, written)       # they become the buffer's last bytes
#
# One allocation holds the bytes; the live ones are data[head:tail].  Reads
# take from the head, appends go at the tail; when the tail lacks room the
# live bytes move to the front (``compactions``), and only when the live bytes
# themselves need more than ``cap`` is the allocation replaced (``grows``).
# ``appended`` counts every byte ever committed minus those cut back off, so
# ``appended - (tail - head)`` is the stream offset of the head: a writer can
# tell later whether bytes it committed are still there (gro.pyx Chunk).
# The functions take no lock: the owner serialises access (the socket lock).

cdef struct sockbuf_t:
    char *data              # the allocation (NULL until the first byte or reserve)
    Py_ssize_t cap          # its size in bytes
    Py_ssize_t head         # first live byte
    Py_ssize_t tail         # one past the last live byte (head <= tail <= cap)
    Py_ssize_t appended     # stream offset of tail (bytes committed - bytes cut)
    Py_ssize_t compactions  # times the live bytes moved to the front to make room
    Py_ssize_t grows        # times the allocation was replaced by a larger one


# Room for n more bytes at the tail: the address of the first, or NULL when
# the memory cannot be had (n < 0 or out of memory; nothing changed).
cdef char *sb_tail_reserve(sockbuf_t *sb, Py_ssize_t n) noexcept nogil
# The n bytes written at the tail (after sb_tail_reserve(n' >= n)) become live.
cdef void sb_tail_commit(sockbuf_t *sb, Py_ssize_t n) noexcept nogil
# Take the last n live bytes off (0 <= n <= tail - head).
cdef void sb_tail_cut(sockbuf_t *sb, Py_ssize_t n) noexcept nogil
# Take n live bytes off starting off bytes after the head; the bytes after
# them close the gap (0 <= off, off + n <= tail - head).
cdef void sb_cut_at(sockbuf_t *sb, Py_ssize_t off, Py_ssize_t n) noexcept nogil
# Take the first n live bytes off (0 <= n <= tail - head).
cdef void sb_drop(sockbuf_t *sb, Py_ssize_t n) noexcept nogil


cdef class SockBuf:
    cdef sockbuf_t sb
    cdef int _append(self, const char *src, Py_ssize_t n) except -1


# Send buffer (needs the GIL: its views are Python objects).  The live bytes
# are block.data[head:tail]; memoryview(SendBuf) exports them with the block
# as owner, so a view outlives moves of the buffer to another block.  The
# buffer writes over bytes only where no view can see them: appends go past
# the tail, and the live bytes move to the front of the same block only
# while the buffer holds the block's one reference (no view alive).

cdef class SendBlock:
    cdef char *data         # the allocation, freed with the block
    cdef Py_ssize_t cap     # its size in bytes


cdef class SendBuf:
    cdef SendBlock block            # None until the first append
    cdef Py_ssize_t cap             # size of the allocation (made or to be made)
    cdef Py_ssize_t head            # first live byte in block.data
    cdef Py_ssize_t tail            # one past the last live byte (head <= tail <= cap)
    cdef Py_ssize_t n_compactions   # moves of the live bytes to the front, in place
    cdef Py_ssize_t n_relocations   # moves to a new block of the same size (views alive)
    cdef Py_ssize_t n_grows         # moves to a larger block
    cdef char *_tail_reserve(self, Py_ssize_t n) except NULL
    cdef Py_ssize_t _append(self, const char *src, Py_ssize_t n) except -1
