# cython: always_allow_keywords=False, binding=False
"""Socket buffers that keep their memory (BSD's ``struct sockbuf``).

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

``SendBuf`` is the send side: bytes appended by the application at the tail
and dropped from the head as the peer acknowledges them, in one allocation
made on the first byte; the output descriptors' payloads are views of it
that stay valid whatever the buffer does next.  See docs/tcp.md ("Send
buffer").
"""

from cpython.buffer cimport (
    PyBUF_FORMAT, PyBUF_ND, PyBUF_SIMPLE, PyBUF_STRIDES, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer,
)
from cpython.object cimport PyObject
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


# ---------------------------------------------------------------------------
# Send buffer

cdef extern from "Python.h":
    Py_ssize_t Py_REFCNT(PyObject *o)


cdef class SendBlock:
    """The memory of a :class:`SendBuf`: one allocation, freed when the
    buffer and every view exported from it are gone (each view holds a
    reference to the block, not to the buffer)."""

    def __dealloc__(self):
        free(self.data)

    @property
    def capacity(self):
        """Bytes the allocation holds."""
        return self.cap


cdef SendBlock _send_block(Py_ssize_t cap):
    cdef SendBlock blk = SendBlock.__new__(SendBlock)
    blk.data = <char *>malloc(<size_t>cap)
    if blk.data == NULL:
        raise MemoryError()
    blk.cap = cap
    return blk


cdef SendBlock _empty_block = _send_block(1)


cdef inline bint _block_seen(SendBuf sb) noexcept:
    # A view exported from the block holds a reference to it: more than the
    # buffer's own one means some view is alive (the cast takes no reference).
    return Py_REFCNT(<PyObject *>sb.block) > 1


cdef class SendBuf:
    """Bytes queued for sending and not yet acknowledged: appended at the
    tail, dropped from the head as they are acknowledged.

    ``SendBuf(capacity)``: the allocation, made on the first append, holds
    ``capacity`` bytes (for a TCP connection: twice its send buffer size, so
    that a move of the live bytes to the front frees at least as much room
    as it copies).  ``len()`` is the number of live bytes.

    The buffer exports its live bytes read-only (``memoryview(buf)``): the
    view is a plain ``memoryview`` that holds the memory block, not the
    buffer, so it keeps reading the bytes it was taken over whatever the
    buffer does next.  Appends and drops never touch bytes a view can see;
    a move to the front (``compactions``) happens in place only when no view
    is alive, else the live bytes are copied into a new block of the same
    size (``relocations``) and the old one is left to its views.  ``grows``
    counts larger allocations (live bytes beyond the capacity)."""

    def __cinit__(self, Py_ssize_t capacity):
        if capacity < 1:
            raise ValueError("capacity must be at least 1 byte")
        self.block = None
        self.cap = capacity
        self.head = self.tail = 0
        self.n_compactions = self.n_relocations = self.n_grows = 0

    def __len__(self):
        return self.tail - self.head

    @property
    def capacity(self):
        """Bytes the allocation holds (made or still to be made)."""
        return self.cap

    @property
    def allocated(self):
        """Whether the allocation is made (it is on the first append)."""
        return self.block is not None

    @property
    def shared(self):
        """Whether a view exported from the current allocation is alive."""
        return self.block is not None and _block_seen(self)

    @property
    def compactions(self):
        """Times the live bytes moved to the front of the allocation in place."""
        return self.n_compactions

    @property
    def relocations(self):
        """Times the live bytes moved to a new allocation of the same size
        because views of the old one were alive."""
        return self.n_relocations

    @property
    def grows(self):
        """Times the allocation was replaced by a larger one."""
        return self.n_grows

    cdef char *_tail_reserve(self, Py_ssize_t n) except NULL:
        """Room for ``n`` more bytes at the tail, never over bytes a view can see."""
        cdef Py_ssize_t live = self.tail - self.head
        cdef Py_ssize_t cap = self.cap
        cdef SendBlock new
        if n > PY_SSIZE_T_MAX - live:
            raise MemoryError()
        if self.block is not None and cap - self.tail >= n:
            return self.block.data + self.tail
        if self.block is not None and live + n <= cap and not _block_seen(self):
            # Room at the front, left by acknowledged bytes, and no view
            # of them alive: move the live bytes there.
            memmove(self.block.data, self.block.data + self.head, live)
            self.n_compactions += 1
        else:
            if live + n > cap:
                # (doubling: a stream of such appends copies each byte O(1) times)
                if self.block is not None:
                    cap = cap * 2 if cap <= PY_SSIZE_T_MAX // 2 else PY_SSIZE_T_MAX
                if cap < live + n:
                    cap = live + n
            new = _send_block(cap)
            if self.block is not None:
                memcpy(new.data, self.block.data + self.head, live)
                if cap != self.cap:
                    self.n_grows += 1
                else:
                    self.n_relocations += 1
            # (the old block stays alive while views of it are)
            self.block = new
            self.cap = cap
        self.head = 0
        self.tail = live
        return self.block.data + live

    cdef Py_ssize_t _append(self, const char *src, Py_ssize_t n) except -1:
        cdef char *dst
        if n > 0:
            dst = self._tail_reserve(n)
            memcpy(dst, src, n)
            self.tail += n
        return n

    def append(self, data, Py_ssize_t limit=PY_SSIZE_T_MAX):
        """Append the bytes of ``data`` (bytes or any C-contiguous buffer),
        at most ``limit`` of them; returns how many were appended."""
        cdef Py_buffer view
        cdef Py_ssize_t n
        if limit < 0:
            raise ValueError("limit must not be negative")
        if type(data) is bytes:
            n = PyBytes_GET_SIZE(data)
            return self._append(PyBytes_AS_STRING(data), n if n < limit else limit)
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            n = view.len if view.len < limit else limit
            return self._append(<const char *>view.buf, n)
        finally:
            PyBuffer_Release(&view)

    def drop(self, Py_ssize_t n):
        """Discard the first ``n`` live bytes (``0 <= n <= len``); moves nothing."""
        if n < 0 or n > self.tail - self.head:
            raise ValueError(f"cannot drop {n} of {self.tail - self.head} bytes")
        self.head += n
        if self.head == self.tail and self.block is not None and not _block_seen(self):
            # Empty and unseen: start again at the front, where the pages are warm.
            self.head = self.tail = 0

    def clear(self):
        """Discard every live byte (the allocation stays)."""
        self.drop(self.tail - self.head)

    def tobytes(self):
        """A copy of the live bytes."""
        cdef Py_ssize_t n = self.tail - self.head
        if n == 0:
            return b""
        return PyBytes_FromStringAndSize(self.block.data + self.head, n)

    def __bytes__(self):
        return self.tobytes()

    def __getbuffer__(self, Py_buffer *buffer, int flags):
        # The live bytes, read-only; the view's owner is the block, so that
        # it outlives moves of this buffer to another block.
        cdef SendBlock blk = self.block
        if flags & PyBUF_WRITABLE:
            raise BufferError("a send buffer's views are read-only")
        if blk is None:
            blk = _empty_block      # (nothing appended yet: no allocation for no bytes)
        buffer.buf = blk.data + self.head
        buffer.obj = blk
        buffer.len = self.tail - self.head
        buffer.readonly = 1
        buffer.itemsize = 1
        buffer.format = NULL
        if flags & PyBUF_FORMAT:
            buffer.format = b"B"
        buffer.ndim = 1
        buffer.shape = NULL
        buffer.strides = NULL
        if flags & PyBUF_ND:
            buffer.shape = &buffer.len
        if flags & PyBUF_STRIDES:
            buffer.strides = &buffer.itemsize
        buffer.suboffsets = NULL
        buffer.internal = NULL

    def __repr__(self):
        return (f"<SendBuf {self.tail - self.head} of {self.cap} bytes, "
                f"{self.n_compactions} compactions, {self.n_relocations} relocations, "
                f"{self.n_grows} grows>")
