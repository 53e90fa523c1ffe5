# cython: always_allow_keywords=False, binding=False
"""The fields TCP input takes from the parser's rows, in one compiled call.

:func:`tcp_fields` is what a TCP socket's protocol input reads per segment
(flags, sequence and acknowledgment numbers, window, payload place,
ports, timestamps) for a batch of handles off its PCQ: one tuple a
segment, instead of a NumPy gather of whole rows and a column read per
field.  :func:`tcp_checksum_ok` verifies a segment whose checksum the demux
left to the payload copy, when it is not copied at once (see
``tcpseg.pxd`` for the copy that verifies).  See docs/tcp.md ("Fast path",
"Checksum on copy").
"""
cimport numpy as cnp
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.ref cimport Py_INCREF
from libc.stdint cimport uint8_t, uint64_t

from fastproto._core.parse cimport parsed_t, PF_FRAGMENT, PF_L4

import numpy as _np

from fastproto._core.parse import PARSED_DTYPE

cnp.import_array()


cdef inline object _fields(const parsed_t *r):
    return (r.flags, r.tcp_flags, r.tcp_seq, r.tcp_ack, r.tcp_window, r.payload_off,
            r.payload_len, r.sport, r.dport, r.tcp_tsval, r.tcp_tsecr)


def tcp_fields(rows, handles, list index=None):
    """For each handle of ``handles`` (uint64, 1-D) the row of that index of
    ``rows`` (the demux's C-contiguous 1-D PARSED_DTYPE array) as the tuple
    ``(flags, tcp_flags, seq, ack, window, payload_off, payload_len, sport,
    dport, tsval, tsecr)`` (ints; ``flags`` the parser's ``Flag`` bits).
    ``index``: only the handles at these positions, in this order (the
    heads of coalesced runs, say).

    Raises ValueError for arrays of another kind and IndexError for a
    handle beyond ``rows`` or a position beyond ``handles`` (nothing is
    read then)."""
    cdef cnp.ndarray r = rows
    cdef cnp.ndarray h = handles
    # (the checks at C level first: this runs for every segment of
    # request/response traffic, and the attribute reads cost more than the
    # fields)
    if not (<object>cnp.PyArray_DESCR(r) is PARSED_DTYPE and cnp.PyArray_NDIM(r) == 1
            and cnp.PyArray_IS_C_CONTIGUOUS(r)):
        if r.dtype != PARSED_DTYPE or r.ndim != 1 or not r.flags.c_contiguous:
            raise ValueError("rows must be a C-contiguous 1-D array of PARSED_DTYPE")
    if not (cnp.PyArray_TYPE(h) == cnp.NPY_UINT64 and cnp.PyArray_NDIM(h) == 1):
        if h.dtype != _np.uint64 or h.ndim != 1:
            raise ValueError("handles must be a 1-D uint64 array")
    cdef Py_ssize_t n = h.shape[0], k, m, pos
    cdef uint64_t nrows = <uint64_t>r.shape[0], x
    cdef const parsed_t *rp = <const parsed_t *>cnp.PyArray_DATA(r)
    cdef const char *hp = <const char *>cnp.PyArray_DATA(h)
    cdef Py_ssize_t stride = h.strides[0]
    for k in range(n):
        x = (<const uint64_t *>(hp + k * stride))[0]
        if x >= nrows:
            raise IndexError(f"handle {x} beyond the {nrows} rows")
    m = n if index is None else len(index)
    if index is not None:
        for k in range(m):
            pos = index[k]
            if pos < 0 or pos >= n:
                raise IndexError(f"position {pos} beyond the {n} handles")
    cdef list out = PyList_New(m)
    cdef object item
    for k in range(m):
        pos = k if index is None else <Py_ssize_t>index[k]
        item = _fields(rp + (<const uint64_t *>(hp + pos * stride))[0])
        Py_INCREF(item)
        PyList_SET_ITEM(out, k, item)
    return out


def tcp_checksum_ok(rows, uint64_t handle, pool_data):
    """Whether the TCP checksum of the segment in buffer ``handle`` of
    ``pool_data`` (the pool's C-contiguous 2-D uint8 array) is right, its
    parse being row ``handle`` of ``rows`` (the demux's PARSED_DTYPE array).

    Raises ValueError for arrays of another kind, a row that is not a whole
    TCP segment, or a segment outside its buffer; IndexError for a handle
    beyond the rows or the pool (nothing is read then)."""
    cdef cnp.ndarray r = rows
    cdef cnp.ndarray d = pool_data
    if r.dtype != PARSED_DTYPE or r.ndim != 1 or not r.flags.c_contiguous:
        raise ValueError("rows must be a C-contiguous 1-D array of PARSED_DTYPE")
    if d.ndim != 2 or d.dtype != _np.uint8 or not d.flags.c_contiguous:
        raise ValueError("pool_data must be a C-contiguous 2-D uint8 array")
    if handle >= <uint64_t>r.shape[0] or handle >= <uint64_t>d.shape[0]:
        raise IndexError(f"handle {handle} beyond the rows or the pool")
    cdef const parsed_t *row = (<const parsed_t *>cnp.PyArray_DATA(r)) + handle
    if row.proto != 6 or not (row.flags & PF_L4) or (row.flags & PF_FRAGMENT) \
            or row.payload_off < row.l4_off + 20:
        raise ValueError(f"row {handle} is not a whole TCP segment")
    if <Py_ssize_t>row.payload_off + row.payload_len > d.shape[1]:
        raise ValueError(f"segment {handle}: payload outside its buffer")
    cdef const uint8_t *frame = (<const uint8_t *>cnp.PyArray_DATA(d)) + handle * <uint64_t>d.shape[1]
    cdef bint ok
    with nogil:
        ok = tcpseg_csum_ok(row, frame)
    return ok
