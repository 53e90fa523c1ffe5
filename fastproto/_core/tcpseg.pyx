# cython: always_allow_keywords=False, binding=False
"""The fields TCP input takes from the parser's rows, in one compiled call.

:func:`tcp_fields` is what a TCP socket's protocol input reads per segment
(flags, sequence and acknowledgment numbers, window, payload place,
ports, timestamps) for a batch of handles off its PCQ: one tuple a
segment, instead of a NumPy gather of whole rows and a column read per
field.  See docs/tcp.md ("Fast path").
"""
cimport numpy as cnp
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.ref cimport Py_INCREF
from libc.stdint cimport uint64_t

from fastproto._core.parse cimport parsed_t

import numpy as _np

from fastproto._core.parse import PARSED_DTYPE

cnp.import_array()


cdef inline object _fields(const parsed_t *r):
    return (r.flags, r.tcp_flags, r.tcp_seq, r.tcp_ack, r.tcp_window, r.payload_off,
            r.payload_len, r.sport, r.dport, r.tcp_tsval, r.tcp_tsecr)


def tcp_fields(rows, handles):
    """For each handle of ``handles`` (uint64, 1-D) the row of that index of
    ``rows`` (the demux's C-contiguous 1-D PARSED_DTYPE array) as the tuple
    ``(flags, tcp_flags, seq, ack, window, payload_off, payload_len, sport,
    dport, tsval, tsecr)`` (ints; ``flags`` the parser's ``Flag`` bits).

    Raises ValueError for arrays of another kind and IndexError for a
    handle beyond ``rows`` (nothing is read then)."""
    cdef cnp.ndarray r = rows
    cdef cnp.ndarray h = handles
    if r.dtype != PARSED_DTYPE or r.ndim != 1 or not r.flags.c_contiguous:
        raise ValueError("rows must be a C-contiguous 1-D array of PARSED_DTYPE")
    if h.dtype != _np.uint64 or h.ndim != 1:
        raise ValueError("handles must be a 1-D uint64 array")
    cdef Py_ssize_t n = h.shape[0], k
    cdef uint64_t nrows = <uint64_t>r.shape[0], x
    cdef const parsed_t *rp = <const parsed_t *>cnp.PyArray_DATA(r)
    cdef const char *hp = <const char *>cnp.PyArray_DATA(h)
    cdef Py_ssize_t stride = h.strides[0]
    for k in range(n):
        x = (<const uint64_t *>(hp + k * stride))[0]
        if x >= nrows:
            raise IndexError(f"handle {x} beyond the {nrows} rows")
    cdef list out = PyList_New(n)
    cdef object item
    for k in range(n):
        item = _fields(rp + (<const uint64_t *>(hp + k * stride))[0])
        Py_INCREF(item)
        PyList_SET_ITEM(out, k, item)
    return out
