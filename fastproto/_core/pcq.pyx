# cython: always_allow_keywords=False, binding=False
"""PCQ: a bounded, lock-free queue of uint64 items, many producers, one consumer.

After NetBSD's pcq(9).  Items are packet handles (any value 0..2**64-1).
Producers may run concurrently with each other and with the consumer, from
Python or without the GIL (``pcq.pxd``); there is one consumer at a time.
Python-level ``get``/``get_many``/``peek`` hold the GIL for their whole run,
so Python threads cannot break the one-consumer rule among themselves.
See ``docs/pcq.md`` and ``src/pcq.h`` for the algorithm and its invariants.
"""
import operator as _operator

import numpy as _np

cimport numpy as cnp
from cpython.buffer cimport PyObject_CheckBuffer
from cpython.exc cimport PyErr_Clear, PyErr_Occurred
from cpython.long cimport PyLong_CheckExact, PyLong_FromUnsignedLongLong
from libc.stdint cimport uint64_t

cnp.import_array()

cdef extern from "Python.h":
    # raw conversion: returns (unsigned long long)-1 with an exception set on
    # failure; the caller checks, so the hot path pays one compare
    unsigned long long _as_ull "PyLong_AsUnsignedLongLong"(object) noexcept

cdef unsigned long long _ULL_MAX = <unsigned long long>-1

# Items are mostly packet handles, row numbers of a buffer pool: get() hands
# out shared int objects for the small ones instead of allocating an int per
# item (as CPython does for -5..256).  64 Ki objects, about 2.5 MB.
cdef enum:
    _NSHARED = 1 << 16
cdef tuple _SHARED_INTS = tuple(range(_NSHARED))


cdef inline object _item_obj(uint64_t v):
    """The Python int for item v."""
    if v < _NSHARED:
        return _SHARED_INTS[v]
    return PyLong_FromUnsignedLongLong(v)


cdef unsigned long long _item_slow(object item) except? <unsigned long long>-1:
    """An item that is not an exact int: ints' subclasses and __index__ types."""
    cdef object ix = _operator.index(item)   # TypeError for floats, str, None...
    cdef unsigned long long v = _as_ull(ix)
    if v == _ULL_MAX and PyErr_Occurred():
        PyErr_Clear()
        raise OverflowError(f"item {ix!r} is not in 0..2**64-1")
    return v


cdef inline bint _is_u64_array(object a, bint writable):
    """A 1-D, C-contiguous, aligned, native-order ndarray of 8-byte unsigned ints."""
    if not cnp.PyArray_Check(a):
        return False
    cdef cnp.ndarray arr = <cnp.ndarray>a
    if cnp.PyArray_NDIM(arr) != 1 or cnp.PyArray_ITEMSIZE(arr) != 8:
        return False
    if not cnp.PyArray_ISUNSIGNED(arr) or not cnp.PyArray_ISCARRAY_RO(arr):
        return False
    if not cnp.PyArray_ISNOTSWAPPED(arr):
        return False
    return cnp.PyArray_ISWRITEABLE(arr) or not writable


def as_items(items):
    """``items`` as a 1-D C-contiguous uint64 array (no copy when it is one).

    Accepts NumPy integer arrays, buffers and iterables of ints.  Negative or
    too large values raise OverflowError; non-integers raise TypeError.
    """
    if _is_u64_array(items, False):
        return items
    if not isinstance(items, _np.ndarray) and PyObject_CheckBuffer(items):
        items = _np.asarray(items)
    if isinstance(items, _np.ndarray):
        if items.ndim != 1:
            raise ValueError(f"items must be 1-D, not {items.ndim}-D")
        kind = items.dtype.kind
        if kind == "i":
            if items.size and items.min() < 0:
                raise OverflowError("items must be in 0..2**64-1: negative value")
        elif kind != "u":
            raise TypeError(f"items must be integers, not dtype {items.dtype}")
        return _np.ascontiguousarray(items, dtype=_np.uint64)
    return _np.array([_operator.index(x) for x in items], dtype=_np.uint64)


cdef class PCQ:
    """PCQ(maxlen): a bounded queue of uint64 items (many producers, one consumer).

    ``maxlen`` is any capacity >= 1 (powers of two index with a mask, others
    with a division).  A full queue refuses items: ``put`` returns False and
    the item is not stored; ``rejected`` counts refused items.
    """

    def __cinit__(self, Py_ssize_t maxlen):
        if maxlen < 1:
            raise ValueError(f"maxlen must be >= 1, not {maxlen}")
        if <uint64_t>maxlen > PCQ_MAXLEN:
            raise ValueError(f"maxlen must be <= {PCQ_MAXLEN}, not {maxlen}")
        self.q = pcq_create(<uint64_t>maxlen)
        if self.q == NULL:
            raise MemoryError(f"no memory for a PCQ of {maxlen} items")
        self.maxlen = maxlen

    def __dealloc__(self):
        if self.q != NULL:
            pcq_destroy(self.q)
            self.q = NULL

    def put(self, item):
        """Put one item (int in 0..2**64-1); False if the queue is full."""
        cdef unsigned long long v
        if PyLong_CheckExact(item):
            v = item        # inline digit read; OverflowError when out of range
        else:
            v = _item_slow(item)
        return pcq_put(self.q, v)

    def get(self):
        """Take the oldest item; None if no item is ready."""
        cdef uint64_t v
        if pcq_get(self.q, &v):
            return _item_obj(v)
        return None

    def peek(self):
        """The oldest item, left in the queue; None if no item is ready."""
        cdef uint64_t v
        if pcq_peek(self.q, &v):
            return _item_obj(v)
        return None

    def put_many(self, items):
        """Put the leading items of a uint64 array (or iterable of ints).

        Returns how many were put: all of them, or as many as there was room
        for (the first ones, in order).  A uint64 ndarray is read in place.
        """
        cdef cnp.ndarray arr = <cnp.ndarray>(items if _is_u64_array(items, False) else as_items(items))
        return pcq_put_many(self.q, <const uint64_t *>cnp.PyArray_DATA(arr),
                            <size_t>cnp.PyArray_DIM(arr, 0))

    def get_many(self, Py_ssize_t n, out=None):
        """Take up to ``n`` items, oldest first, as a uint64 array.

        The array is shorter when fewer items are ready (empty when none).
        With ``out`` (a writable uint64 array of at least ``n`` items) the
        items are written there and ``out[:k]`` is returned, allocating no
        data buffer.
        """
        cdef cnp.npy_intp dims[1]
        cdef cnp.ndarray arr
        cdef size_t k
        if n < 0:
            raise ValueError(f"n must be >= 0, not {n}")
        if out is None:
            dims[0] = <cnp.npy_intp>min(<uint64_t>n, pcq_len(self.q))
            arr = cnp.PyArray_EMPTY(1, dims, cnp.NPY_UINT64, 0)
            k = pcq_get_many(self.q, <uint64_t *>cnp.PyArray_DATA(arr), <size_t>dims[0])
            return arr if k == <size_t>dims[0] else arr[:k]
        if not _is_u64_array(out, True):
            raise TypeError("out must be a writable 1-D C-contiguous uint64 array")
        arr = <cnp.ndarray>out
        if cnp.PyArray_DIM(arr, 0) < n:
            raise ValueError(f"out has {cnp.PyArray_DIM(arr, 0)} items, fewer than n={n}")
        k = pcq_get_many(self.q, <uint64_t *>cnp.PyArray_DATA(arr), <size_t>n)
        return arr[:k]

    def get_into(self, out):
        """Take up to ``len(out)`` items into ``out[:k]``; returns ``k``.

        ``out`` is a writable 1-D C-contiguous uint64 array; nothing is
        allocated.
        """
        if not _is_u64_array(out, True):
            raise TypeError("out must be a writable 1-D C-contiguous uint64 array")
        cdef cnp.ndarray arr = <cnp.ndarray>out
        return pcq_get_many(self.q, <uint64_t *>cnp.PyArray_DATA(arr),
                            <size_t>cnp.PyArray_DIM(arr, 0))

    @property
    def rejected(self):
        """Items refused so far because the queue was full."""
        return pcq_rejected(self.q)

    def __len__(self):
        return pcq_len(self.q)

    def __repr__(self):
        return f"PCQ(maxlen={self.maxlen}) <{pcq_len(self.q)} items>"
