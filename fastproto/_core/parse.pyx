"""Batch parsing of received Ethernet frames into a NumPy structured array.

One row of :data:`PARSED_DTYPE` per frame: Ethernet II with 802.1Q / 802.1ad
tags, ARP, IPv4 (options, fragments), IPv6 (extension headers), ICMP, ICMPv6,
UDP and TCP (options).  Every row has a ``status``: :attr:`Status.OK` or the
named reason the frame is rejected, so every drop can be counted
(:func:`status_counts`).  The whole batch is parsed in C without the GIL; the
same parser is declared in ``parse.pxd`` for the receive path.  See
``docs/parse.md``.
"""
from enum import IntEnum as _IntEnum, IntFlag as _IntFlag

import numpy as _np

cimport numpy as cnp
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

cnp.import_array()


cdef list _names(const char *const *table, int n):
    return [(<bytes>table[i]).decode("ascii") for i in range(n)]


#: Why a frame was rejected (``OK`` = 0 when it was not); the row's ``status``.
Status = _IntEnum("Status", [(name, i) for i, name in
                              enumerate(_names(parse_status_names, PARSE_NSTATUS))],
                  module=__name__)
Status.__doc__ = "Why a frame was rejected (OK = 0 when it was not); a row's ``status``."

#: Bits of a row's ``flags``.
Flag = _IntFlag("Flag", [(name, 1 << i) for i, name in
                          enumerate(_names(parse_flag_names, PARSE_NFLAGS))],
                module=__name__)
Flag.__doc__ = "Bits of a row's ``flags``: what a frame has beside its headers' fields."

#: parse(..., verify_l4=True) in C terms
VERIFY_L4 = PARSE_VERIFY_L4
#: IPv6 extension headers walked before IPV6_EXT_TOO_MANY
IPV6_MAX_EXT = PARSE_IPV6_MAX_EXT

# (name, format, offset): the C struct parsed_t field by field
_FIELDS = [
    ("src", ("u1", (16,)), 0),
    ("dst", ("u1", (16,)), 16),
    ("flags", "u4", 32),
    ("frag_id", "u4", 36),
    ("src_mac", ("u1", (6,)), 40),
    ("dst_mac", ("u1", (6,)), 46),
    ("ethertype", "u2", 52),
    ("vlan_tci", "u2", 54),
    ("svlan_tci", "u2", 56),
    ("l3_off", "u2", 58),
    ("l4_off", "u2", 60),
    ("payload_off", "u2", 62),
    ("payload_len", "u2", 64),
    ("sport", "u2", 66),
    ("dport", "u2", 68),
    ("frag_off", "u2", 70),
    ("status", "u1", 72),
    ("ip_version", "u1", 73),
    ("ttl", "u1", 74),
    ("proto", "u1", 75),
    ("tclass", "u1", 76),
    ("tcp_wscale", "u1", 77),
    ("tcp_flags", "u2", 78),
    # TCP view of bytes 80..127
    ("tcp_seq", "u4", 80),
    ("tcp_ack", "u4", 84),
    ("tcp_window", "u2", 88),
    ("tcp_urgent", "u2", 90),
    ("tcp_mss", "u2", 92),
    ("tcp_sack_count", "u1", 94),
    ("tcp_doff", "u1", 95),
    ("tcp_sack", ("u4", (4, 2)), 96),
    ("tcp_tsval", "u4", 120),
    ("tcp_tsecr", "u4", 124),
    # ICMP / ICMPv6 view
    ("icmp_type", "u1", 80),
    ("icmp_code", "u1", 81),
    ("icmp_id", "u2", 82),
    ("icmp_seq", "u2", 84),
    # ARP view
    ("arp_op", "u2", 80),
    ("arp_sha", ("u1", (6,)), 82),
    ("arp_tha", ("u1", (6,)), 88),
]

#: One row per frame (128 bytes, host byte order; addresses as network bytes).
PARSED_DTYPE = _np.dtype({
    "names": [f[0] for f in _FIELDS],
    "formats": [f[1] for f in _FIELDS],
    "offsets": [f[2] for f in _FIELDS],
    "itemsize": sizeof(parsed_t),
})


cdef dict _c_offsets():
    cdef parsed_t r
    cdef char *b = <char *>&r
    return {
        "src": <char *>&r.src[0] - b, "dst": <char *>&r.dst[0] - b,
        "flags": <char *>&r.flags - b, "frag_id": <char *>&r.frag_id - b,
        "src_mac": <char *>&r.src_mac[0] - b, "dst_mac": <char *>&r.dst_mac[0] - b,
        "ethertype": <char *>&r.ethertype - b, "vlan_tci": <char *>&r.vlan_tci - b,
        "svlan_tci": <char *>&r.svlan_tci - b, "l3_off": <char *>&r.l3_off - b,
        "l4_off": <char *>&r.l4_off - b, "payload_off": <char *>&r.payload_off - b,
        "payload_len": <char *>&r.payload_len - b, "sport": <char *>&r.sport - b,
        "dport": <char *>&r.dport - b, "frag_off": <char *>&r.frag_off - b,
        "status": <char *>&r.status - b, "ip_version": <char *>&r.ip_version - b,
        "ttl": <char *>&r.ttl - b, "proto": <char *>&r.proto - b,
        "tclass": <char *>&r.tclass - b, "tcp_wscale": <char *>&r.tcp_wscale - b,
        "tcp_flags": <char *>&r.tcp_flags - b, "tcp_seq": <char *>&r.tcp_seq - b,
        "tcp_ack": <char *>&r.tcp_ack - b, "tcp_window": <char *>&r.tcp_window - b,
        "tcp_urgent": <char *>&r.tcp_urgent - b, "tcp_mss": <char *>&r.tcp_mss - b,
        "tcp_sack_count": <char *>&r.tcp_sack_count - b, "tcp_doff": <char *>&r.tcp_doff - b,
        "tcp_sack": <char *>&r.tcp_sack[0][0] - b, "tcp_tsval": <char *>&r.tcp_tsval - b,
        "tcp_tsecr": <char *>&r.tcp_tsecr - b, "icmp_type": <char *>&r.icmp_type - b,
        "icmp_code": <char *>&r.icmp_code - b, "icmp_id": <char *>&r.icmp_id - b,
        "icmp_seq": <char *>&r.icmp_seq - b, "arp_op": <char *>&r.arp_op - b,
        "arp_sha": <char *>&r.arp_sha[0] - b, "arp_tha": <char *>&r.arp_tha[0] - b,
    }


def _check_layout():
    """The dtype and the C struct must agree byte for byte."""
    offsets = _c_offsets()
    if PARSED_DTYPE.itemsize != sizeof(parsed_t) or set(offsets) != set(PARSED_DTYPE.names):
        raise ImportError("PARSED_DTYPE does not match parsed_t")
    for name in PARSED_DTYPE.names:
        if PARSED_DTYPE.fields[name][1] != offsets[name]:
            raise ImportError(f"PARSED_DTYPE.{name} is not at parsed_t's offset")


_check_layout()

cdef object _DESCR = PARSED_DTYPE


cdef int _length_kind(cnp.ndarray a):
    """The parse_len_kind of a contiguous 1-D lengths array, or -1."""
    if a.ndim != 1 or (a.shape[0] > 1 and a.strides[0] != a.itemsize):
        return -1
    cdef int t = cnp.PyArray_TYPE(a)
    cdef int size = a.itemsize
    if cnp.PyTypeNum_ISUNSIGNED(t):
        if size == 2:
            return PARSE_LEN_U16
        if size == 4:
            return PARSE_LEN_U32
        if size == 8:
            return PARSE_LEN_U64
    elif cnp.PyTypeNum_ISINTEGER(t):
        if size == 4:
            return PARSE_LEN_I32
        if size == 8:
            return PARSE_LEN_I64
    return -1


cdef cnp.ndarray _check_out(object out, cnp.npy_intp n):
    if not isinstance(out, _np.ndarray):
        raise TypeError("out: expected a NumPy array of PARSED_DTYPE")
    cdef cnp.ndarray a = <cnp.ndarray>out
    if a.dtype is not _DESCR and a.dtype != _DESCR:
        raise TypeError(f"out: expected dtype PARSED_DTYPE, got {a.dtype}")
    if a.ndim != 1 or not cnp.PyArray_IS_C_CONTIGUOUS(a):
        raise ValueError("out: expected a contiguous 1-D array")
    if not cnp.PyArray_ISWRITEABLE(a):
        raise ValueError("out: array is read-only")
    if a.shape[0] < n:
        raise ValueError(f"out: {a.shape[0]} rows, need {n}")
    return a


def parse(frames, lengths, handles=None, out=None, bint verify_l4=False):
    """Parse a batch of frames held in the rows of ``frames``; one row out per frame.

    ``frames`` is a 2-D uint8 array (rows are packet buffers, their bytes
    contiguous), ``lengths`` the frame lengths in bytes (any integer dtype),
    ``handles`` the row of each frame (uint64; None means rows 0..n-1).  The
    frame length, not the row size, bounds every read.  ``out`` is an
    optional contiguous array of :data:`PARSED_DTYPE` with at least n rows;
    its first n rows are filled and returned.  With ``verify_l4`` the
    TCP/UDP/ICMP/ICMPv6 checksums of unfragmented datagrams are checked too
    (the IPv4 header checksum always is).  Runs without the GIL.

    Raises IndexError for a handle that is not a row, ValueError for a
    length that is negative or longer than a row.
    """
    if not isinstance(frames, _np.ndarray):
        raise TypeError("frames: expected a 2-D uint8 NumPy array")
    cdef cnp.ndarray a_frames = <cnp.ndarray>frames
    if cnp.PyArray_TYPE(a_frames) != cnp.NPY_UINT8 or a_frames.ndim != 2:
        raise TypeError(f"frames: expected a 2-D uint8 array, got {frames.dtype} with {frames.ndim} dimensions")
    cdef size_t nrows = a_frames.shape[0]
    cdef size_t row_size = a_frames.shape[1]
    if row_size > 1 and a_frames.strides[1] != 1:
        raise ValueError("frames: the bytes of a row must be contiguous")

    cdef cnp.ndarray a_len
    if isinstance(lengths, _np.ndarray):
        a_len = <cnp.ndarray>lengths
    else:
        a_len = _np.asarray(lengths)
    cdef int kind = _length_kind(a_len)
    if kind < 0:
        if a_len.ndim != 1:
            raise ValueError("lengths: expected a 1-D array")
        if a_len.size and not _np.issubdtype(a_len.dtype, _np.integer):
            raise TypeError(f"lengths: expected integers, got {a_len.dtype}")
        a_len = _np.ascontiguousarray(a_len, dtype=_np.int64)
        kind = PARSE_LEN_I64
    cdef cnp.npy_intp n = a_len.shape[0]

    cdef cnp.ndarray a_handles = None
    cdef const uint64_t *p_handles = NULL
    if handles is not None:
        if (isinstance(handles, _np.ndarray) and cnp.PyArray_TYPE(<cnp.ndarray>handles) == cnp.NPY_UINT64
                and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>handles)):
            a_handles = <cnp.ndarray>handles
        else:
            a_handles = _np.asarray(handles)
            if a_handles.size and not _np.issubdtype(a_handles.dtype, _np.integer):
                raise TypeError(f"handles: expected integers, got {a_handles.dtype}")
            if a_handles.size and a_handles.min() < 0:
                raise IndexError("handles: negative handle")
            a_handles = _np.ascontiguousarray(a_handles, dtype=_np.uint64)
        if a_handles.ndim != 1 or a_handles.shape[0] != n:
            raise ValueError(f"handles: expected shape ({n},), got {(<object>a_handles).shape}")
        p_handles = <const uint64_t *>cnp.PyArray_DATA(a_handles)

    cdef cnp.ndarray a_out
    if out is None:
        a_out = _np.empty(n, dtype=PARSED_DTYPE)
    else:
        a_out = _check_out(out, n)

    cdef const uint8_t *base = <const uint8_t *>cnp.PyArray_DATA(a_frames)
    cdef ptrdiff_t row_stride = a_frames.strides[0]
    cdef const void *p_len = cnp.PyArray_DATA(a_len)
    cdef parsed_t *rows = <parsed_t *>cnp.PyArray_DATA(a_out)
    cdef int opts = PARSE_VERIFY_L4 if verify_l4 else 0
    cdef ptrdiff_t bad
    with nogil:
        bad = parse_batch(base, nrows, row_size, row_stride, p_handles, p_len, kind,
                          <size_t>n, rows, opts)
    if bad >= 0:
        h = int(a_handles[bad]) if a_handles is not None else bad
        if h >= <Py_ssize_t>nrows:
            raise IndexError(f"handles[{bad}] = {h}: frames has {nrows} rows")
        raise ValueError(f"lengths[{bad}] = {int(a_len[bad])}: not within a row of {row_size} bytes")
    if a_out.shape[0] == n:
        return a_out
    return a_out[:n]


def parse_frames(frames, bint verify_l4=False):
    """Parse a sequence of frames (bytes-like objects); one row of PARSED_DTYPE each.

    Each frame is first copied into a buffer of exactly its length, so the
    parser has nothing past the frame that it could read.
    """
    frames = [f if isinstance(f, bytes) else bytes(f) for f in frames]
    cdef cnp.npy_intp n = len(frames)
    cdef cnp.ndarray a_out = _np.zeros(n, dtype=PARSED_DTYPE)
    cdef parsed_t *rows = <parsed_t *>cnp.PyArray_DATA(a_out)
    cdef int opts = PARSE_VERIFY_L4 if verify_l4 else 0
    cdef Py_ssize_t i, size
    cdef uint8_t *buf
    cdef bytes b
    for i in range(n):
        b = frames[i]
        size = PyBytes_GET_SIZE(b)
        buf = <uint8_t *>malloc(size if size else 1)
        if buf == NULL:
            raise MemoryError()
        memcpy(buf, PyBytes_AS_STRING(b), size)
        parse_frame(buf, size, &rows[i], opts)
        free(buf)
    return a_out


def status_counts(parsed):
    """Rows per status name for a batch (netstat-style counters): {name: count}.

    ``parsed`` is an array of PARSED_DTYPE or its ``status`` column.  Every
    name is present, zero or not, in Status order.
    """
    status = parsed["status"] if getattr(parsed, "dtype", None) is not None and parsed.dtype.names else parsed
    status = _np.asarray(status).ravel()
    if status.size and status.min() < 0:
        raise ValueError(f"status {int(status.min())} is not a Status")
    counts = _np.bincount(status.astype(_np.intp, copy=False), minlength=PARSE_NSTATUS)
    if counts.shape[0] > PARSE_NSTATUS:
        bad = int(_np.flatnonzero(counts[PARSE_NSTATUS:])[0]) + PARSE_NSTATUS
        raise ValueError(f"status {bad} is not a Status")
    return {s.name: int(counts[s.value]) for s in Status}


def _checksum(data):
    """The folded one's-complement sum of ``data`` as the parser computes it (tests)."""
    cdef bytes b = bytes(data)
    return parse_sum_fold(parse_sum(<const uint8_t *>PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b), 0))
