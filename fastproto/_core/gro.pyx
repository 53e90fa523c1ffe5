# cython: always_allow_keywords=False, binding=False
"""Receive coalescing (GRO): in-order TCP segments of one flow as one chunk.

A socket's protocol input takes its segments off the PCQ in batches; before
the connection sees them, :func:`coalesce` merges runs of segments that a
receiver may treat as one (as Linux's GRO does):

- the same flow (addresses, ports, IP version), each carrying data;
- flags ACK, or ACK and PSH, and nothing else (a SYN, FIN, RST, URG, ECE,
  CWR ends the run and travels alone);
- each starting where the one before ended (anything out of order ends it);
- the same ACK number and window field (the chunk reports them once);
- the same options, but for the timestamps, which may move forward (TSval
  and TSecr never backwards, RFC 7323 5.3); any other option (SACK blocks,
  MSS, window scale, unknown ones) ends the run;
- at most ``max_bytes`` of payload (64 KiB by default, like an IP datagram).

A run's segments become one :class:`Chunk`: the list of the payload pieces
in their packet buffers (nothing is copied), its flags (ACK, plus PSH when
any segment had it), the first segment's TSval (the one RFC 7323 4.3 takes
for TS.Recent, as it covers the last ACK sent) and the last one's TSecr.
The connection then runs once per chunk and copies it into its receive
buffer in one pass (:meth:`Chunk.append_to`).
"""
cimport numpy as cnp
from cpython.buffer cimport PyBuffer_FillInfo
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcmp, memcpy

from fastproto._core.parse cimport (parsed_t, PF_FRAGMENT, PF_L4, PF_TCP_MSS, PF_TCP_OPT_IGNORED,
                                    PF_TCP_SACK, PF_TCP_SACK_PERM, PF_TCP_TS, PF_TCP_WSCALE)

import numpy as _np

from fastproto._core.parse import PARSED_DTYPE

cnp.import_array()

cdef enum:
    _IPPROTO_TCP = 6
    _ACK = 0x10
    _PSH = 0x08
    _MAX_BYTES = 65535

# options other than the timestamps: a segment with any of them stands alone
cdef uint32_t _OTHER_OPTIONS = PF_TCP_MSS | PF_TCP_WSCALE | PF_TCP_SACK_PERM | PF_TCP_SACK \
    | PF_TCP_OPT_IGNORED


cdef inline bint _mergeable(const parsed_t *r) noexcept nogil:
    """May this segment be part of a chunk at all (TCP data, ACK[+PSH] only)?"""
    return (r.proto == _IPPROTO_TCP and (r.flags & PF_L4) and not (r.flags & PF_FRAGMENT)
            and not (r.flags & _OTHER_OPTIONS) and r.payload_len > 0
            and (r.tcp_flags & ~(<uint16_t>_PSH)) == _ACK)


cdef inline bint _follows(const parsed_t *head, const parsed_t *last, const parsed_t *r,
                          uint32_t total) noexcept nogil:
    """Does ``r`` continue the chunk that starts at ``head`` and ends at ``last``?"""
    if r.tcp_seq != <uint32_t>(head.tcp_seq + total):
        return False
    if r.tcp_ack != head.tcp_ack or r.tcp_window != head.tcp_window:
        return False
    if r.sport != head.sport or r.dport != head.dport or r.ip_version != head.ip_version:
        return False
    if (r.flags & PF_TCP_TS) != (head.flags & PF_TCP_TS):
        return False
    if r.flags & PF_TCP_TS:
        # RFC 7323 5.3: a TSval older than the one before would fail PAWS alone.
        if <int32_t>(r.tcp_tsval - last.tcp_tsval) < 0 or \
                <int32_t>(r.tcp_tsecr - last.tcp_tsecr) < 0:
            return False
    return memcmp(r.src, head.src, 16) == 0 and memcmp(r.dst, head.dst, 16) == 0


cdef Py_ssize_t gro_coalesce(const parsed_t *rows, Py_ssize_t n, uint32_t max_bytes,
                             uint32_t *first, uint32_t *count, uint32_t *total) noexcept nogil:
    """Split rows 0..n-1 into chunks (see the module docstring); returns how many."""
    cdef Py_ssize_t i, c = -1
    cdef const parsed_t *head = NULL
    cdef const parsed_t *r
    cdef bint open_ = False
    for i in range(n):
        r = &rows[i]
        if open_ and _mergeable(r) and total[c] + r.payload_len <= max_bytes \
                and _follows(head, &rows[i - 1], r, total[c]):
            count[c] += 1
            total[c] += r.payload_len
            continue
        c += 1
        first[c] = <uint32_t>i
        count[c] = 1
        total[c] = r.payload_len
        head = r
        open_ = _mergeable(r)
    return c + 1


cdef class Chunk:
    """The payload of coalesced segments: pieces of packet buffers, in order.

    ``segments`` is how many segments it merged, ``half`` the payload bytes
    of the first ``segments // 2`` of them (where a receiver may acknowledge
    the first half).  ``len()`` is the payload's length; :meth:`append_to` copies it onto a
    bytearray; ``bytes()``/``memoryview()`` give it joined (a copy made on the
    first request).  Valid while the packet buffers are: the receive path
    frees them once the connection ran.
    """

    def __cinit__(self):
        self._offs = NULL
        self._lens = NULL

    def __dealloc__(self):
        free(self._offs)
        free(self._lens)

    def __len__(self):
        return self._total

    def append_to(self, bytearray buf not None):
        """Copy the payload onto the end of ``buf``."""
        cdef Py_ssize_t at = PyByteArray_GET_SIZE(buf)
        cdef Py_ssize_t i
        cdef char *dst
        PyByteArray_Resize(buf, at + self._total)
        dst = PyByteArray_AS_STRING(buf) + at
        for i in range(self._n):
            memcpy(dst, self._base + self._offs[i], self._lens[i])
            dst += self._lens[i]

    def tobytes(self):
        """The payload joined into one bytes object."""
        cdef Py_ssize_t i
        cdef char *dst
        if self._flat is None:
            self._flat = PyBytes_FromStringAndSize(NULL, self._total)
            dst = PyBytes_AS_STRING(self._flat)
            for i in range(self._n):
                memcpy(dst, self._base + self._offs[i], self._lens[i])
                dst += self._lens[i]
        return self._flat

    def __bytes__(self):
        return self.tobytes()

    def __getbuffer__(self, Py_buffer *view, int flags):
        flat = self.tobytes()
        PyBuffer_FillInfo(view, self, PyBytes_AS_STRING(flat), self._total, 1, flags)

    def __releasebuffer__(self, Py_buffer *view):
        pass

    def __repr__(self):
        return f"<Chunk {self.segments} segments, {self._total} bytes>"


def coalesce(rows, handles, pool_data, Py_ssize_t max_bytes=_MAX_BYTES):
    """Coalesce the segments ``handles`` (uint64, in PCQ order) whose parser
    rows are ``rows`` (PARSED_DTYPE, one per handle), in buffers of
    ``pool_data`` (the pool's 2-D uint8 array).

    Returns ``(heads, chunks)``: for each chunk the index of its first
    segment, and a :class:`Chunk` where it merged two or more segments, else
    None (the segment goes on alone).  ``max_bytes``: payload bytes a chunk
    may hold, 1..65535.
    """
    if not 1 <= max_bytes <= 65535:
        raise ValueError(f"max_bytes must be in 1..65535, not {max_bytes}")
    cdef cnp.ndarray r = _np.ascontiguousarray(rows)
    cdef cnp.ndarray h = _np.ascontiguousarray(handles, dtype=_np.uint64)
    cdef cnp.ndarray d = pool_data
    if r.dtype != PARSED_DTYPE or r.ndim != 1:
        raise ValueError("rows must be a 1-D array of PARSED_DTYPE")
    if h.ndim != 1 or h.shape[0] != r.shape[0]:
        raise ValueError("handles must be 1-D, one per row")
    if d.ndim != 2 or d.dtype != _np.uint8 or not d.flags.c_contiguous:
        raise ValueError("pool_data must be a C-contiguous 2-D uint8 array")
    cdef Py_ssize_t n = r.shape[0], nc, c, k, j
    cdef Py_ssize_t nbuf = d.shape[0], size = d.shape[1]
    cdef const parsed_t *rp = <const parsed_t *>cnp.PyArray_DATA(r)
    cdef const uint64_t *hp = <const uint64_t *>cnp.PyArray_DATA(h)
    for k in range(n):
        if hp[k] >= <uint64_t>nbuf or rp[k].payload_off + rp[k].payload_len > size:
            raise ValueError(f"segment {k}: handle or payload outside the pool")
    cdef uint32_t *first = <uint32_t *>malloc(3 * sizeof(uint32_t) * (n if n else 1))
    if first == NULL:
        raise MemoryError()
    cdef uint32_t *count = first + n
    cdef uint32_t *total = first + 2 * n
    cdef Chunk ch
    cdef int fl
    heads = []
    chunks = []
    try:
        with nogil:
            nc = gro_coalesce(rp, n, <uint32_t>max_bytes, first, count, total)
        for c in range(nc):
            k = first[c]
            heads.append(k)
            if count[c] == 1:
                chunks.append(None)
                continue
            ch = Chunk.__new__(Chunk)
            ch._owner = d
            ch._base = <const unsigned char *>cnp.PyArray_DATA(d)
            ch._n = count[c]
            ch._total = total[c]
            ch._offs = <unsigned long long *>malloc(count[c] * sizeof(unsigned long long))
            ch._lens = <unsigned int *>malloc(count[c] * sizeof(unsigned int))
            if ch._offs == NULL or ch._lens == NULL:
                raise MemoryError()
            fl = 0
            ch.half = 0
            for j in range(count[c]):
                ch._offs[j] = hp[k + j] * <uint64_t>size + rp[k + j].payload_off
                ch._lens[j] = rp[k + j].payload_len
                fl |= rp[k + j].tcp_flags
                if j < count[c] // 2:
                    ch.half += ch._lens[j]
            ch.flags = fl
            ch.ts_ecr = rp[k + count[c] - 1].tcp_tsecr
            ch.segments = count[c]
            chunks.append(ch)
    finally:
        free(first)
    return heads, chunks
