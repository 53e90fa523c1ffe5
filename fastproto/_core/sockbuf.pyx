# cython: always_allow_keywords=False, binding=False
"""A socket receive buffer that keeps its memory (BSD's ``struct sockbuf``).

The bytes a connection received and the application has not read yet, in
one allocation made on the first byte and kept for the buffer's life: appends
go at the tail, reads take from the head.  When the tail reaches the end of
the allocation the live bytes move to the front (a reader keeps them few, so
the move is short); a larger allocation replaces it only when the live bytes
themselves need more room than ``capacity``, which a TCP receiver's window
prevents (``grows`` counts it).  An allocation that stays put means no page
is faulted in twice and no memory is returned to the system and taken back
while a transfer runs, which a ``bytearray`` resized at both ends does.

Receive paths in Cython write straight into the tail (sockbuf.pxd:
``sb_tail_reserve``, ``sb_tail_commit``, ``sb_tail_cut``): the checksum on
copy of gro.pyx copies and verifies a payload in one pass onto the buffer.
See docs/tcp.md ("Receive buffer").
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memmove

cdef extern from "Python.h":
    const Py_ssize_t PY_SSIZE_T_MAX


cdef char *sb_tail_reserve(sockbuf_t *sb, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t live = sb.tail - sb.head
    cdef Py_ssize_t cap
    cdef char *d
    if n < 0 or n > PY_SSIZE_T_MAX - live:
        return NULL
    if sb.cap - sb.tail >= n and sb.data != NULL:
        return sb.data + sb.tail
    if sb.data != NULL and live + n <= sb.cap:
        # Room at the front, left by reads: move the live bytes there.
        memmove(sb.data, sb.data + sb.head, live)
        sb.head = 0
        sb.tail = live
        sb.compactions += 1
        return sb.data + live
    cap = sb.cap
    if sb.data != NULL or live + n > cap:
        # The live bytes need more than the capacity: a larger allocation
        # (doubling, so that a stream of such appends copies each byte O(1) times).
        cap = cap * 2 if cap <= PY_SSIZE_T_MAX // 2 else PY_SSIZE_T_MAX
        if cap < live + n:
            cap = live + n
    if cap < 1:
        cap = 1
    d = <char *>malloc(<size_t>cap)
    if d == NULL:
        return NULL
    if sb.data != NULL:
        memcpy(d, sb.data + sb.head, live)
        free(sb.data)
        sb.grows += 1
    elif cap != sb.cap:
        sb.grows += 1
    sb.data = d
    sb.cap = cap
    sb.head = 0
    sb.tail = live
    return d + live


cdef void sb_tail_commit(sockbuf_t *sb, Py_ssize_t n) noexcept nogil:
    sb.tail += n
    sb.appended += n


cdef void sb_tail_cut(sockbuf_t *sb, Py_ssize_t n) noexcept nogil:
    sb.tail -= n
    sb.appended -= n
    if sb.tail == sb.head:
        sb.head = sb.tail = 0


cdef void sb_cut_at(sockbuf_t *sb, Py_ssize_t off, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t at = sb.head + off
    memmove(sb.data + at, sb.data + at + n, sb.tail - at - n)
    sb_tail_cut(sb, n)


cdef void sb_drop(sockbuf_t *sb, Py_ssize_t n) noexcept nogil:
    sb.head += n
    if sb.head == sb.tail:
        # Empty: start again at the front, where the pages are warm.
        sb.head = sb.tail = 0


cdef class SockBuf:
    """Received bytes not read yet: appended at the tail, read from the head.

    ``SockBuf(capacity)``: the allocation, made on the first append, holds
    ``capacity`` bytes (for a TCP connection: its receive buffer size plus
    room for one coalesced chunk).  ``len()`` is the number of live bytes,
    ``space`` how many more fit without a larger allocation.  ``compactions``
    counts moves of the live bytes to the front, ``grows`` larger
    allocations (each one a sign the sender overran the advertised window or
    the capacity was set too small)."""

    def __cinit__(self, Py_ssize_t capacity):
        if capacity < 1:
            raise ValueError("capacity must be at least 1 byte")
        self.sb.data = NULL
        self.sb.cap = capacity
        self.sb.head = self.sb.tail = self.sb.appended = 0
        self.sb.compactions = self.sb.grows = 0

    def __dealloc__(self):
        free(self.sb.data)

    def __len__(self):
        return self.sb.tail - self.sb.head

    @property
    def capacity(self):
        """Bytes the allocation holds (made or still to be made)."""
        return self.sb.cap

    @property
    def space(self):
        """Bytes that can be appended without a larger allocation."""
        return self.sb.cap - (self.sb.tail - self.sb.head)

    @property
    def allocated(self):
        """Whether the allocation is made (it is on the first append)."""
        return self.sb.data != NULL

    @property
    def compactions(self):
        """Times the live bytes moved to the front to make room at the tail."""
        return self.sb.compactions

    @property
    def grows(self):
        """Times the allocation was replaced by a larger one."""
        return self.sb.grows

    cdef int _append(self, const char *src, Py_ssize_t n) except -1:
        cdef char *dst = sb_tail_reserve(&self.sb, n)
        if dst == NULL:
            raise MemoryError()
        memcpy(dst, src, n)
        sb_tail_commit(&self.sb, n)
        return 0

    def append(self, data):
        """Append the bytes of ``data`` (bytes or any C-contiguous buffer)."""
        cdef Py_buffer view
        if type(data) is bytes:
            self._append(PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
            return
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            self._append(<const char *>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)

    def read(self, Py_ssize_t n):
        """Take up to ``n`` bytes off the head (fewer when fewer are there)."""
        if n < 0:
            raise ValueError("n must not be negative")
        cdef Py_ssize_t live = self.sb.tail - self.sb.head
        if n > live:
            n = live
        out = PyBytes_FromStringAndSize(self.sb.data + self.sb.head if n else NULL, n)
        sb_drop(&self.sb, n)
        return out

    def read_into(self, buffer, Py_ssize_t nbytes=0):
        """Move up to ``nbytes`` bytes (0: as many as fit) off the head into
        the writable ``buffer``; returns how many were moved."""
        cdef Py_buffer view
        cdef Py_ssize_t n
        if nbytes < 0:
            raise ValueError("nbytes must not be negative")
        PyObject_GetBuffer(buffer, &view, PyBUF_WRITABLE)
        try:
            n = view.len
            if 0 < nbytes < n:
                n = nbytes
            if n > self.sb.tail - self.sb.head:
                n = self.sb.tail - self.sb.head
            if n:
                memcpy(view.buf, self.sb.data + self.sb.head, n)
                sb_drop(&self.sb, n)
        finally:
            PyBuffer_Release(&view)
        return n

    def drop(self, Py_ssize_t n):
        """Discard the first ``n`` live bytes (``0 <= n <= len``)."""
        if n < 0 or n > self.sb.tail - self.sb.head:
            raise ValueError(f"cannot drop {n} of {self.sb.tail - self.sb.head} bytes")
        sb_drop(&self.sb, n)

    def cut(self, Py_ssize_t n):
        """Take the last ``n`` live bytes back off (``0 <= n <= len``)."""
        if n < 0 or n > self.sb.tail - self.sb.head:
            raise ValueError(f"cannot cut {n} of {self.sb.tail - self.sb.head} bytes")
        sb_tail_cut(&self.sb, n)

    def clear(self):
        """Discard every live byte (the allocation stays)."""
        sb_drop(&self.sb, self.sb.tail - self.sb.head)

    def tobytes(self):
        """A copy of the live bytes."""
        cdef Py_ssize_t n = self.sb.tail - self.sb.head
        return PyBytes_FromStringAndSize(self.sb.data + self.sb.head if n else NULL, n)

    def __bytes__(self):
        return self.tobytes()

    def __repr__(self):
        return (f"<SockBuf {self.sb.tail - self.sb.head} of {self.sb.cap} bytes, "
                f"{self.sb.compactions} compactions, {self.sb.grows} grows>")
