# cython: always_allow_keywords=False, binding=False
"""Packet buffers: a pool of fixed-size buffers in one NumPy array, and batches.

A packet handle is a row number of ``BufferPool.data`` (uint64, like PCQ
items).  A batch is a handles array and a lengths array (uint32): packet i is
``data[handles[i], :lengths[i]]``, which is the ``(frames2d, handles,
lengths)`` triple the parser takes.  Allocation and free are lock-free and
may run in many threads at once, from Python or without the GIL
(``buffers.pxd``).  See ``docs/buffers.md`` and ``src/buffers.h``.
"""
import operator as _operator

import numpy as _np

cimport numpy as cnp
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_GET_SIZE, PyBytes_FromStringAndSize
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy
from cpython.pyport cimport PY_SSIZE_T_MAX

from fastproto._core.pcq import as_items as _as_u64

cnp.import_array()

# rows start on this boundary (cache lines; also what SIMD loads like)
cdef enum:
    _ALIGN = 64


cdef void _fault_in(volatile uint8_t *p, size_t n) noexcept nogil:
    """Touch every page of ``p[0:n]`` (all zero already): a pool is faulted
    in when it is made, as a driver fills its receive ring before the link
    comes up, so the first frames it takes do not pay the page faults
    (with transparent huge pages, 2 MiB zeroed by each)."""
    cdef size_t i
    for i in range(0, n, 4096):
        p[i] = 0


cdef uint64_t _handle_of(object handle) except? 0xFFFFFFFFFFFFFFFF:
    """The uint64 value of a handle; ValueError for negative ones."""
    ix = _operator.index(handle)
    if ix < 0:
        raise ValueError(f"handle {ix} is negative")
    if ix > 0xFFFFFFFFFFFFFFFF:
        raise ValueError(f"handle {ix} out of range")
    return <uint64_t>ix


cdef class BufferPool:
    """BufferPool(count, size=2048): ``count`` buffers of ``size`` bytes.

    ``data`` is the (count, size) uint8 array holding them all; a handle is a
    row number.  ``alloc``/``free`` are safe from any number of threads.
    """

    def __cinit__(self, Py_ssize_t count, Py_ssize_t size=2048):
        if count < 1:
            raise ValueError(f"count must be >= 1, not {count}")
        if <uint64_t>count > BUF_MAXCOUNT:
            raise ValueError(f"count must be <= {BUF_MAXCOUNT}, not {count}")
        if size < 1:
            raise ValueError(f"size must be >= 1, not {size}")
        if size > (PY_SSIZE_T_MAX - _ALIGN) // count:
            raise MemoryError(f"a pool of {count} buffers of {size} bytes is too large")
        raw = _np.zeros(count * size + _ALIGN, dtype=_np.uint8)
        cdef size_t addr = <size_t>cnp.PyArray_DATA(<cnp.ndarray>raw)
        _fault_in(<volatile uint8_t *>addr, count * size + _ALIGN)
        cdef Py_ssize_t skip = (-addr) & (_ALIGN - 1)
        data = raw[skip:skip + count * size].reshape(count, size)
        self.pool = bufpool_create(<uint8_t *>cnp.PyArray_DATA(<cnp.ndarray>data),
                                   <uint64_t>count, <uint64_t>size)
        if self.pool == NULL:
            raise MemoryError(f"no memory for a pool of {count} buffers")
        self.data = data
        self._flat = memoryview(data.reshape(-1))
        self.count = count
        self.size = size

    def __dealloc__(self):
        if self.pool != NULL:
            bufpool_destroy(self.pool)
            self.pool = NULL

    cdef int _raise_free(self, int rc, uint64_t h) except -1:
        if rc == BUF_ERANGE:
            raise ValueError(f"handle {h} out of range for a pool of {self.count} buffers")
        raise ValueError(f"buffer {h} is not allocated (double free?)")

    cdef uint64_t _checked(self, object handle) except? 0xFFFFFFFFFFFFFFFF:
        """A handle in range that is allocated, else ValueError."""
        cdef uint64_t h = _handle_of(handle)
        if h >= <uint64_t>self.count:
            raise ValueError(f"handle {h} out of range for a pool of {self.count} buffers")
        if not buf_is_allocated(self.pool, h):
            raise ValueError(f"buffer {h} is not allocated")
        return h

    def alloc(self):
        """Take a free buffer; its handle, or None if none is free."""
        cdef uint64_t h
        if bufpool_alloc(self.pool, &h):
            return h
        return None

    def free(self, handle):
        """Return an allocated buffer.  ValueError if out of range or not allocated."""
        cdef uint64_t h = _handle_of(handle)
        cdef int rc = bufpool_free(self.pool, h)
        if rc != BUF_OK:
            self._raise_free(rc, h)

    def alloc_many(self, Py_ssize_t n):
        """Take up to ``n`` free buffers; their handles as a uint64 array (shorter if fewer are free)."""
        cdef cnp.npy_intp dims[1]
        if n < 0:
            raise ValueError(f"n must be >= 0, not {n}")
        dims[0] = <cnp.npy_intp>min(<uint64_t>n, bufpool_available(self.pool))
        cdef cnp.ndarray out = cnp.PyArray_EMPTY(1, dims, cnp.NPY_UINT64, 0)
        cdef size_t k = bufpool_alloc_many(self.pool, <uint64_t *>cnp.PyArray_DATA(out), <size_t>dims[0])
        return out if k == <size_t>dims[0] else out[:k]

    def free_many(self, handles):
        """Return many buffers, all or none.

        ValueError (and nothing freed) if any handle is out of range, not
        allocated, or given twice.
        """
        cdef cnp.ndarray arr = <cnp.ndarray>_as_u64(handles)
        cdef const uint64_t *hs = <const uint64_t *>cnp.PyArray_DATA(arr)
        cdef size_t bad = 0
        cdef int rc = bufpool_free_many(self.pool, hs, <size_t>cnp.PyArray_DIM(arr, 0), &bad)
        if rc != BUF_OK:
            self._raise_free(rc, hs[bad])

    def is_allocated(self, handle):
        """True if ``handle`` names a buffer currently allocated."""
        cdef uint64_t h = _handle_of(handle)
        return buf_is_allocated(self.pool, h)

    def view(self, handle, length=None):
        """The first ``length`` bytes (default: all) of an allocated buffer.

        A writable memoryview into ``data``: no copy, writes go to the pool.
        """
        cdef uint64_t h = self._checked(handle)
        cdef Py_ssize_t n = self.size if length is None else length
        if n < 0 or n > self.size:
            raise ValueError(f"length {n} not in 0..{self.size}")
        cdef Py_ssize_t start = <Py_ssize_t>h * self.size
        return self._flat[start:start + n]

    def store(self, list frames not None, cnp.ndarray handles_out not None,
              cnp.ndarray lengths_out not None):
        """Copy frames (``bytes``) into newly allocated buffers, in order: frame
        i's handle and length go to the next free slot of ``handles_out``
        (uint64) and ``lengths_out`` (uint32).  Frames longer than a buffer
        are skipped; copying stops when the outputs are full or the pool runs
        out.  Returns ``(stored, oversize, stored_bytes)``: the caller counts
        ``len(frames) - stored - oversize`` frames as dropped for want of a
        buffer (or of room in the outputs).  The receive path of a device
        whose ring holds ``bytes``: one call per batch, however small.
        TypeError (nothing stored) if a frame is not ``bytes``."""
        cdef Py_ssize_t room = handle_outputs_room(handles_out, lengths_out)
        cdef uint64_t *hs = <uint64_t *>cnp.PyArray_DATA(handles_out)
        cdef uint32_t *ls = <uint32_t *>cnp.PyArray_DATA(lengths_out)
        cdef Py_ssize_t stored = 0, oversize = 0, nbytes = 0, n
        cdef uint64_t h
        for f in frames:
            if not PyBytes_CheckExact(f):
                raise TypeError(f"frames must be bytes, not {type(f).__name__}")
        for f in frames:
            n = PyBytes_GET_SIZE(f)
            if n > self.size:
                oversize += 1
                continue
            if stored >= room or not bufpool_alloc(self.pool, &h):
                break
            memcpy(buf_ptr(self.pool, h), PyBytes_AS_STRING(f), n)
            hs[stored] = h
            ls[stored] = <uint32_t>n
            stored += 1
            nbytes += n
        return stored, oversize, nbytes

    def batch_from_frames(self, frames):
        """A Batch holding a copy of each frame (bytes-like) in its own buffer.

        ValueError if a frame is longer than ``size``; BufferError if the
        pool has fewer free buffers than frames.  Nothing is allocated then.
        """
        frames = list(frames)
        cdef Py_ssize_t n = len(frames)
        cdef Py_ssize_t i
        views = []
        for i in range(n):
            f = frames[i]
            if not PyBytes_CheckExact(f):
                f = memoryview(f).cast("B")
            if len(f) > self.size:
                raise ValueError(f"frame {i} is {len(f)} bytes, longer than the buffers ({self.size})")
            views.append(f)
        cdef Batch batch = Batch(self, max(n, 1))
        cdef size_t bad = 0
        cdef size_t got = bufpool_alloc_many(self.pool, batch.handle_ptr, <size_t>n)
        if got < <size_t>n:
            if got:
                bufpool_free_many(self.pool, batch.handle_ptr, got, &bad)
            raise BufferError(f"pool exhausted: {n} buffers needed, {got} were free")
        cdef const uint8_t[::1] mv
        for i in range(n):
            f = views[i]
            if PyBytes_CheckExact(f):
                memcpy(buf_ptr(self.pool, batch.handle_ptr[i]), PyBytes_AS_STRING(f), PyBytes_GET_SIZE(f))
                batch.length_ptr[i] = <uint32_t>PyBytes_GET_SIZE(f)
            else:
                mv = f
                if mv.shape[0]:
                    memcpy(buf_ptr(self.pool, batch.handle_ptr[i]), &mv[0], mv.shape[0])
                batch.length_ptr[i] = <uint32_t>mv.shape[0]
        batch.count = n
        return batch

    @property
    def available(self):
        """Buffers free right now (a snapshot while other threads work)."""
        return bufpool_available(self.pool)

    def __repr__(self):
        return (f"BufferPool(count={self.count}, size={self.size}) "
                f"<{bufpool_available(self.pool)} free>")


cdef class Batch:
    """Batch(pool, capacity): up to ``capacity`` packets of ``pool``.

    ``handles`` (uint64) and ``lengths`` (uint32) are views of the first
    ``count`` rows: packet i is ``pool.data[handles[i], :lengths[i]]``.
    A batch does not own its buffers until told: ``free()`` returns them.
    """

    def __cinit__(self, BufferPool pool not None, Py_ssize_t capacity):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, not {capacity}")
        self.pool = pool
        self.capacity = capacity
        self._handles = _np.zeros(capacity, dtype=_np.uint64)
        self._lengths = _np.zeros(capacity, dtype=_np.uint32)
        self.handle_ptr = <uint64_t *>cnp.PyArray_DATA(<cnp.ndarray>self._handles)
        self.length_ptr = <uint32_t *>cnp.PyArray_DATA(<cnp.ndarray>self._lengths)
        self.count = 0

    @property
    def handles(self):
        """uint64 handles of the packets in the batch (a view, ``count`` long)."""
        return self._handles[:self.count]

    @property
    def lengths(self):
        """uint32 lengths in bytes of the packets in the batch (a view)."""
        return self._lengths[:self.count]

    def append(self, handle, Py_ssize_t length):
        """Add a packet: an allocated buffer's handle and its length in bytes."""
        cdef uint64_t h = self.pool._checked(handle)
        if self.count >= self.capacity:
            raise IndexError(f"batch is full ({self.capacity} packets)")
        if length < 0 or length > self.pool.size:
            raise ValueError(f"length {length} not in 0..{self.pool.size}")
        self.handle_ptr[self.count] = h
        self.length_ptr[self.count] = <uint32_t>length
        self.count += 1

    def frames(self):
        """The packets' bytes, copied, as a list."""
        cdef Py_ssize_t i
        cdef bufpool_t *p = self.pool.pool
        out = []
        for i in range(self.count):
            if self.handle_ptr[i] >= p.count or self.length_ptr[i] > p.size:
                raise ValueError(f"packet {i}: handle {self.handle_ptr[i]} / length "
                                 f"{self.length_ptr[i]} outside the pool")
            out.append(PyBytes_FromStringAndSize(<char *>buf_ptr(p, self.handle_ptr[i]),
                                                 self.length_ptr[i]))
        return out

    def free(self):
        """Return the batch's buffers to the pool (all or none) and empty it."""
        cdef size_t bad = 0
        cdef int rc = bufpool_free_many(self.pool.pool, self.handle_ptr, <size_t>self.count, &bad)
        if rc != BUF_OK:
            self.pool._raise_free(rc, self.handle_ptr[bad])
        self.count = 0

    def clear(self):
        """Forget the packets without freeing their buffers."""
        self.count = 0

    def __len__(self):
        return self.count

    def __repr__(self):
        return f"<Batch {self.count}/{self.capacity} packets>"


cdef Py_ssize_t handle_outputs_room(cnp.ndarray handles_out, cnp.ndarray lengths_out) except -1:
    """The slots of a receive call's outputs, ``handles_out`` (uint64) and
    ``lengths_out`` (uint32): the shorter length.  ValueError unless both
    are writable, 1-D and C-contiguous of those types."""
    if cnp.PyArray_TYPE(handles_out) != cnp.NPY_UINT64 or \
            cnp.PyArray_TYPE(lengths_out) != cnp.NPY_UINT32 or \
            cnp.PyArray_NDIM(handles_out) != 1 or cnp.PyArray_NDIM(lengths_out) != 1 or \
            not cnp.PyArray_IS_C_CONTIGUOUS(handles_out) or \
            not cnp.PyArray_IS_C_CONTIGUOUS(lengths_out) or \
            not cnp.PyArray_ISWRITEABLE(handles_out) or \
            not cnp.PyArray_ISWRITEABLE(lengths_out):
        raise ValueError("outputs must be writable 1-D contiguous uint64 and uint32 arrays")
    return min(cnp.PyArray_DIM(handles_out, 0), cnp.PyArray_DIM(lengths_out, 0))
