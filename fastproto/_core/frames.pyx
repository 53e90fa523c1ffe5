# cython: always_allow_keywords=False, binding=False
"""Frame batches: many Ethernet frames in one buffer, no Python object per frame.

A :class:`FrameBatch` is what a NIC's transmit descriptor ring points at: the
frames back to back in one allocation, with each frame's offset and length.
The transmit path fills one (``tso.tcp_frames`` writes a large send's frames
straight into it), a device carries it as one object, and the receive side
copies its frames into pool buffers in one call (:func:`store_frames`).
Once sealed (by a device's ``transmit``, or by taking a slice) a batch never
changes, so the wire, the receiver and any slices share it without copying.
See ``frames.pxd`` for the C-level API and ``docs/phy.md``.
"""
import collections.abc as _abc

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.ref cimport PyObject
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, realloc
from libc.string cimport memcpy

cdef extern from "stdlib.h" nogil:
    int posix_memalign(void **memptr, size_t alignment, size_t size)

cimport numpy as cnp

from fastproto._core.buffers cimport (BufferPool, buf_ptr, bufpool_alloc, bufpool_t,
                                      handle_outputs_room)

cnp.import_array()

cdef enum:
    #: the least a first allocation takes (a batch of one small frame, an
    #: ACK, stays small: a ring full of them must not pin much memory)
    _FIRST_BYTES = 2048
    _FIRST_FRAMES = 16
    #: copies into the pool at least this long run without the GIL: the
    #: other threads' Python work goes on meanwhile (shorter ones cost less
    #: than the hand-off)
    _NOGIL_BYTES = 64 * 1024

cdef size_t _LEN_MAX = 0xFFFFFFFF


cdef int fb_reserve(FrameBatch b, size_t nbytes, Py_ssize_t nframes) noexcept nogil:
    cdef size_t want, newcap
    cdef Py_ssize_t fwant, newn
    cdef uint8_t *nb
    cdef size_t *no
    cdef uint32_t *nl
    if b.frozen or b.busy or nframes < 0:
        return -1
    want = b.used + nbytes + <size_t>nframes * (FB_ALIGN - 1)
    if want < b.used:
        return -1
    if want > b.cap:
        newcap = b.cap * 2 if b.cap * 2 > want else want
        if b.cap == 0 and newcap < _FIRST_BYTES:
            newcap = _FIRST_BYTES
        # Aligned (frame i at an aligned address, not only offset): a fresh
        # block and a copy rather than realloc, which keeps only malloc's 16.
        if posix_memalign(<void **>&nb, FB_ALIGN, newcap) != 0:
            return -1
        if b.used:
            memcpy(nb, b.buf, b.used)
        free(b.buf)
        b.buf = nb
        b.cap = newcap
    fwant = b.n + nframes
    if fwant > b.ncap:
        newn = b.ncap * 2 if b.ncap * 2 > fwant else fwant
        if newn < _FIRST_FRAMES:
            newn = _FIRST_FRAMES
        no = <size_t *>realloc(b.offs, <size_t>newn * sizeof(size_t))
        if no == NULL:
            return -1
        b.offs = no
        nl = <uint32_t *>realloc(b.lens, <size_t>newn * sizeof(uint32_t))
        if nl == NULL:
            return -1
        b.lens = nl
        b.ncap = newn
    return 0


cdef class FrameBatch:
    """FrameBatch(frames=()): Ethernet frames in one buffer, in order.

    A sequence of frames: ``len(b)``, ``b[i]`` (a copy, bytes), iteration,
    ``b[i:j]`` (a sealed batch sharing the memory, no copy).  ``append`` and
    ``extend`` add copies of bytes-like frames until the batch is sealed
    (``seal()``, which a device's ``transmit`` does: the wire then carries the
    batch itself, so it must not change).  ``nbytes``: the frames' total
    length; ``max_len``: the longest frame's (0 when empty).
    """

    def __cinit__(self, frames=None):
        self.base = None

    def __init__(self, frames=None):
        if frames is not None:
            self.extend(frames)

    def __dealloc__(self):
        if self.base is None:
            free(self.buf)
            free(self.offs)
            free(self.lens)

    cdef int _check_idle(self) except -1:
        if self.busy:
            raise ValueError("the batch is being filled by another thread")
        return 0

    cdef int _check_open(self) except -1:
        self._check_idle()
        if self.frozen:
            raise ValueError("the batch is sealed: it may be on a wire already")
        return 0

    cdef FrameBatch _view(self, Py_ssize_t lo, Py_ssize_t hi):
        self._check_idle()
        cdef FrameBatch v = FrameBatch.__new__(FrameBatch)
        cdef Py_ssize_t i
        cdef uint32_t k
        self.frozen = True
        v.base = self if self.base is None else self.base
        v.buf = self.buf
        v.offs = self.offs + lo
        v.lens = self.lens + lo
        v.n = hi - lo
        v.frozen = True
        for i in range(v.n):
            k = v.lens[i]
            v.total += k
            if k > v.longest:
                v.longest = k
        return v

    def append(self, frame):
        """Add a copy of ``frame`` (bytes-like).  ValueError once sealed."""
        cdef Py_buffer pb
        self._check_open()
        PyObject_GetBuffer(frame, &pb, PyBUF_SIMPLE)
        try:
            if <size_t>pb.len > _LEN_MAX:
                raise ValueError(f"a frame of {pb.len} bytes is too long")
            if fb_reserve(self, <size_t>pb.len, 1) != 0:
                raise MemoryError()
            if pb.len:
                memcpy(fb_tail(self), pb.buf, <size_t>pb.len)
            fb_push(self, <size_t>pb.len)
        finally:
            PyBuffer_Release(&pb)

    def extend(self, frames):
        """Add a copy of each frame of ``frames`` (bytes-like), in order."""
        for f in frames:
            self.append(f)

    def reserve(self, Py_ssize_t nbytes, Py_ssize_t nframes=0):
        """Make room for ``nbytes`` more bytes in ``nframes`` more frames at
        once (the batch grows as needed anyway: this saves the regrowth).
        ValueError once sealed or for a negative size."""
        self._check_open()
        if nbytes < 0 or nframes < 0:
            raise ValueError("sizes must be >= 0")
        if fb_reserve(self, <size_t>nbytes, nframes) != 0:
            raise MemoryError()

    def seal(self):
        """Freeze the batch: no more frames (idempotent)."""
        self._check_idle()
        self.frozen = True

    @property
    def sealed(self):
        """True once no frame may be added."""
        return self.frozen

    @property
    def nbytes(self):
        """Total bytes of the frames."""
        return self.total

    @property
    def max_len(self):
        """The longest frame's length in bytes; 0 for an empty batch."""
        return self.longest

    def lengths(self):
        """Each frame's length in bytes, as a list."""
        cdef Py_ssize_t i
        self._check_idle()
        return [self.lens[i] for i in range(self.n)]

    def frames(self):
        """The frames, each copied into a bytes object, as a list."""
        cdef Py_ssize_t i
        self._check_idle()
        return [PyBytes_FromStringAndSize(<char *>self.buf + self.offs[i], self.lens[i])
                for i in range(self.n)]

    def __len__(self):
        return self.n

    def __iter__(self):
        return iter(self.frames())

    def __getitem__(self, index):
        cdef Py_ssize_t i, lo, hi, step
        if isinstance(index, slice):
            lo, hi, step = index.indices(self.n)
            if step != 1:
                raise ValueError("a batch slice takes consecutive frames (step 1)")
            if hi < lo:
                hi = lo
            return self._view(lo, hi)
        self._check_idle()
        i = index
        if i < 0:
            i += self.n
        if not 0 <= i < self.n:
            raise IndexError(f"frame {index} of a batch of {self.n}")
        return PyBytes_FromStringAndSize(<char *>self.buf + self.offs[i], self.lens[i])

    def __repr__(self):
        return (f"<FrameBatch {self.n} frames, {self.total} bytes"
                f"{', sealed' if self.frozen else ''}>")


# A sequence of frames as far as callers can tell (isinstance too).
_abc.Sequence.register(FrameBatch)


def checked_frames(frames, Py_ssize_t limit):
    """The frames (a sequence of bytes-like) that are at most ``limit`` bytes long,
    as a list of ``bytes`` (copies of the others): ``(kept, nbytes, oversize)``.

    The list given comes back itself when every frame is ``bytes`` and fits;
    the caller may reuse it (the ring keeps the frames, not the list)."""
    cdef Py_ssize_t i, n = len(frames), k, nbytes = 0, oversize = 0
    cdef bint as_is = type(frames) is list
    cdef object f
    cdef list out
    if as_is:
        for i in range(n):
            f = <object>PyList_GET_ITEM(frames, i)
            if not PyBytes_CheckExact(f):
                as_is = False
                break
            k = PyBytes_GET_SIZE(f)
            if k > limit:
                as_is = False
                break
            nbytes += k
        if as_is:
            return frames, nbytes, 0
        nbytes = 0
    out = []
    for f in frames:
        if not PyBytes_CheckExact(f):
            f = bytes(f)
        k = PyBytes_GET_SIZE(f)
        if k > limit:
            oversize += 1
            continue
        nbytes += k
        out.append(f)
    return out, nbytes, oversize


def store_frames(BufferPool pool not None, entries, cnp.ndarray handles_out not None,
                 cnp.ndarray lengths_out not None):
    """Copy the frames of ``entries`` (each ``bytes`` or a :class:`FrameBatch`,
    in order) into newly allocated buffers of ``pool``: frame i's handle and
    length go to the next slot of ``handles_out`` (uint64) and ``lengths_out``
    (uint32).  Frames longer than a buffer are skipped; copying stops when the
    outputs are full or the pool runs out.  Returns ``(stored, oversize,
    stored_bytes)``; the caller counts the rest of the frames as dropped for
    want of a buffer.  TypeError (nothing stored) for another kind of entry.
    The receive path of a device whose ring holds bytes and batches: one call
    however many frames, long copies without the GIL."""
    cdef Py_ssize_t room = handle_outputs_room(handles_out, lengths_out)
    if type(entries) is not list:
        entries = list(entries)
    cdef uint64_t *hs = <uint64_t *>cnp.PyArray_DATA(handles_out)
    cdef uint32_t *ls = <uint32_t *>cnp.PyArray_DATA(lengths_out)
    cdef Py_ssize_t ne = PyList_GET_SIZE(entries), i, j, nf = 0, nsrc = 0
    cdef size_t total = 0
    cdef object e
    cdef FrameBatch b
    for i in range(ne):
        e = <object>PyList_GET_ITEM(entries, i)
        if PyBytes_CheckExact(e):
            nf += 1
            total += <size_t>PyBytes_GET_SIZE(e)
        elif type(e) is FrameBatch:
            (<FrameBatch>e)._check_idle()
            nf += (<FrameBatch>e).n
            total += (<FrameBatch>e).total
        else:
            raise TypeError(f"entries must be bytes or FrameBatch, not {type(e).__name__}")
    if nf == 0:
        return 0, 0, 0
    # Every frame's address and length, gathered with the GIL: the list holds
    # the bytes and the (sealed, unchanging) batches while the copy runs.
    cdef const uint8_t **src = <const uint8_t **>PyMem_Malloc(<size_t>nf * sizeof(uint8_t *))
    cdef size_t *slen = <size_t *>PyMem_Malloc(<size_t>nf * sizeof(size_t))
    if src == NULL or slen == NULL:
        PyMem_Free(<void *>src)
        PyMem_Free(slen)
        raise MemoryError()
    for i in range(ne):
        e = <object>PyList_GET_ITEM(entries, i)
        if PyBytes_CheckExact(e):
            src[nsrc] = <const uint8_t *>PyBytes_AS_STRING(e)
            slen[nsrc] = <size_t>PyBytes_GET_SIZE(e)
            nsrc += 1
        else:
            b = <FrameBatch>e
            for j in range(b.n):
                src[nsrc] = b.buf + b.offs[j]
                slen[nsrc] = b.lens[j]
                nsrc += 1
    cdef bufpool_t *p = pool.pool
    cdef Py_ssize_t stored = 0, oversize = 0
    cdef size_t nbytes = 0
    try:
        if total >= _NOGIL_BYTES:
            with nogil:
                _copy_in(p, src, slen, nf, hs, ls, room, &stored, &oversize, &nbytes)
        else:
            _copy_in(p, src, slen, nf, hs, ls, room, &stored, &oversize, &nbytes)
    finally:
        PyMem_Free(<void *>src)
        PyMem_Free(slen)
    return stored, oversize, nbytes


cdef void _copy_in(bufpool_t *p, const uint8_t **src, const size_t *slen, Py_ssize_t nf,
                   uint64_t *hs, uint32_t *ls, Py_ssize_t room, Py_ssize_t *stored,
                   Py_ssize_t *oversize, size_t *nbytes) noexcept nogil:
    """The copy loop of store_frames."""
    cdef Py_ssize_t i
    cdef uint64_t h
    cdef size_t n
    for i in range(nf):
        n = slen[i]
        if n > p.size:
            oversize[0] += 1
            continue
        if stored[0] >= room or not bufpool_alloc(p, &h):
            break
        memcpy(buf_ptr(p, h), src[i], n)
        hs[stored[0]] = h
        ls[stored[0]] = <uint32_t>n
        stored[0] += 1
        nbytes[0] += n
