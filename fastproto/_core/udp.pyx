# cython: always_allow_keywords=False, binding=False
"""Per-datagram UDP work in the core: what ``udp_input`` and ``udp_output`` do
once per datagram, in one compiled call each.

- :func:`udp_take` is the body of ``udp_input``: datagrams off a socket's
  PCQ, each payload copied out of its buffer and the buffer freed, the
  source address and port read from the demux row.
- :func:`udp4_frame` is the body of ``udp_output`` for a datagram that fits
  the MTU: an Ethernet/IPv4/UDP frame built from a per-destination header
  template, lengths, identification and both checksums filled in.

See docs/stack.md (the receive and send paths).
"""
cimport numpy as cnp
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_Append
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy, memset

from fastproto._core.buffers cimport BufferPool, bufpool_free, buf_ptr
from fastproto._core.checksum cimport (csum_finish, csum_fold, csum_partial, csum_partial_copy,
                                      csum_pseudo_v4, csum_pseudo_v6)
from fastproto._core.parse cimport parsed_t, PF_FRAGMENT, PF_L4_CSUM_NONE, PF_L4_CSUM_OK
from fastproto._core.pcq cimport PCQ, pcq_get_many

cnp.import_array()

#: bytes of the header template :func:`udp4_frame` takes: Ethernet 14, IPv4 20, UDP 8
UDP4_HEADERS = 42
#: the shortest Ethernet frame without its FCS; shorter frames are zero-padded
ETH_MIN_FRAME = 60

cdef enum:
    _CHUNK = 64          # handles taken off the PCQ per pcq_get_many
    _IP = 14             # offset of the IPv4 header in the frame
    _UDP = 34            # offset of the UDP header in the frame
    _HEADERS = 42


cdef inline uint16_t _be16(const uint8_t *p) noexcept nogil:
    return (<uint16_t>p[0] << 8) | p[1]


cdef inline void _put16(uint8_t *p, uint16_t v) noexcept nogil:
    p[0] = v >> 8
    p[1] = v & 0xFF


cdef inline bint _copy_verified(char *dst, const parsed_t *row, const uint8_t *buf) noexcept nogil:
    """Copy the payload of the whole datagram in ``buf`` to ``dst`` and verify
    its UDP checksum in the same pass (RFC 768; RFC 8200 8.1 for IPv6): the
    pseudo-header, the 8-byte header (its checksum field included) and the
    payload must sum to all ones."""
    cdef uint16_t ulen = row.payload_len + 8
    cdef uint32_t s
    if row.ip_version == 4:
        s = csum_pseudo_v4(row.src + 12, row.dst + 12, 17, ulen)
    else:
        s = csum_pseudo_v6(row.src, row.dst, 17, ulen)
    s = csum_fold(s) + csum_partial(buf + row.payload_off - 8, 8, 0)
    return csum_finish(csum_partial_copy(dst, buf + row.payload_off, row.payload_len,
                                         csum_fold(s))) == 0


cdef inline bint _listed(const uint8_t *item, object blob, Py_ssize_t width) noexcept:
    """Whether the ``width`` bytes at ``item`` are one of the entries of the
    bytes ``blob`` (entries of ``width`` bytes, end to end; a handful)."""
    cdef const uint8_t *p = <const uint8_t *>PyBytes_AS_STRING(blob)
    cdef Py_ssize_t off = 0, n = PyBytes_GET_SIZE(blob)
    while off + width <= n:
        if memcmp(item, p + off, width) == 0:
            return True
        off += width
    return False


cdef inline bint _bad_source(const parsed_t *row) noexcept nogil:
    """A source no datagram may come from: multicast or the limited broadcast
    (RFC 1122 3.2.1.3), IPv6 multicast (RFC 4291 2.7)."""
    if row.ip_version == 6:
        return row.src[0] == 0xFF
    return (row.src[12] & 0xF0) == 0xE0 or (row.src[12] == 0xFF and row.src[13] == 0xFF
                                             and row.src[14] == 0xFF and row.src[15] == 0xFF)


cdef inline void _count(dict drops, str reason):
    drops[reason] = drops.get(reason, 0) + 1


def udp_take(PCQ pcq not None, cnp.ndarray rows not None, BufferPool pool not None,
             Py_ssize_t max_items=256, bint with_packet=False, tuple accept=None):
    """Take up to ``max_items`` datagrams off ``pcq``, oldest first.

    ``rows`` is the demux's row array (PARSED_DTYPE, indexed by handle).  A
    datagram whose checksum the parser left to the copy (``PARSE_DEFER_UDP``:
    a row with neither ``L4_CSUM_OK`` nor ``L4_CSUM_NONE``) is verified while
    its payload is copied, in one pass.  ``accept``: None, or ``(IPv4
    addresses, IPv6 addresses, MAC addresses)``, each a ``bytes`` of 4-, 16-
    and 6-byte entries end to end: a datagram whose destination address or
    MAC is not listed is dropped (a wildcard socket sees every destination
    the link brings).  Datagrams from a multicast or broadcast source are
    always dropped.

    Returns ``(datagrams, held, bytes_read, drops)``: ``datagrams`` a list of
    ``(payload bytes, source address bytes (4 for IPv4, 16 for IPv6),
    source port)``, with ``with_packet`` also the whole IP packet (for raw
    sockets); ``held`` the handles of first fragments (their datagram is
    whole only after reassembly), left allocated for the caller, who frees
    them; ``bytes_read`` the payload bytes of the delivered datagrams read,
    counting a checksum verified by the parser as a read of its own (so
    twice the payload for verify-then-copy, once for checksum-on-copy);
    ``drops`` None, or ``{reason: datagrams}`` for ``bad_checksum``,
    ``not_for_us``, ``bad_source`` and ``bad_handle`` (a handle the rows or
    the pool do not cover: a caller's bug, never a peer's).  Every buffer
    but the held ones is freed.
    """
    if cnp.PyArray_NDIM(rows) != 1 or cnp.PyArray_ITEMSIZE(rows) != sizeof(parsed_t) \
            or not cnp.PyArray_IS_C_CONTIGUOUS(rows):
        raise ValueError("rows must be the demux's 1-D array of parse rows")
    cdef object addrs4 = None, addrs6 = None, macs = None
    if accept is not None:
        addrs4, addrs6, macs = accept
        if type(addrs4) is not bytes or type(addrs6) is not bytes or type(macs) is not bytes:
            raise TypeError("accept is (IPv4 addresses, IPv6 addresses, MACs), each bytes")
    cdef const parsed_t *table = <const parsed_t *>cnp.PyArray_DATA(rows)
    cdef uint64_t nrows = <uint64_t>cnp.PyArray_DIM(rows, 0)
    cdef uint64_t hs[_CHUNK]
    cdef size_t k, i, want
    cdef uint64_t h
    cdef const parsed_t *row
    cdef const uint8_t *buf
    cdef list datagrams = []
    cdef list held = []
    cdef dict drops = None
    cdef Py_ssize_t taken = 0, nread = 0, plen
    cdef object payload, src
    while taken < max_items:
        want = <size_t>min(<Py_ssize_t>_CHUNK, max_items - taken)
        k = pcq_get_many(pcq.q, hs, want)
        taken += <Py_ssize_t>k
        for i in range(k):
            h = hs[i]
            if h >= nrows or h >= <uint64_t>pool.count:
                if drops is None:
                    drops = {}
                _count(drops, "bad_handle")
                continue
            row = &table[h]
            if _bad_source(row) or (accept is not None and (
                    not _listed(row.dst_mac, macs, 6) or
                    not (_listed(row.dst + 12, addrs4, 4) if row.ip_version == 4
                         else _listed(row.dst, addrs6, 16)))):
                if drops is None:
                    drops = {}
                _count(drops, "bad_source" if _bad_source(row) else "not_for_us")
                bufpool_free(pool.pool, h)
                continue
            if row.flags & PF_FRAGMENT:
                PyList_Append(held, h)
                continue
            buf = buf_ptr(pool.pool, h)
            # The parser bounded payload_off + payload_len by the frame's
            # length, and a frame never exceeds its buffer.
            payload = PyBytes_FromStringAndSize(NULL, row.payload_len)
            if row.flags & (PF_L4_CSUM_OK | PF_L4_CSUM_NONE):
                memcpy(PyBytes_AS_STRING(payload), buf + row.payload_off, row.payload_len)
                nread += row.payload_len * (2 if row.flags & PF_L4_CSUM_OK else 1)
            elif _copy_verified(PyBytes_AS_STRING(payload), row, buf):
                nread += row.payload_len
            else:
                if drops is None:
                    drops = {}
                _count(drops, "bad_checksum")
                bufpool_free(pool.pool, h)
                continue
            if row.ip_version == 4:
                src = PyBytes_FromStringAndSize(<const char *>row.src + 12, 4)
            else:
                src = PyBytes_FromStringAndSize(<const char *>row.src, 16)
            if with_packet:
                # To the IP length the parser checked against the frame: what
                # follows is link padding.
                if row.ip_version == 4:
                    plen = _be16(buf + row.l3_off + 2)
                else:
                    plen = 40 + _be16(buf + row.l3_off + 4)
                PyList_Append(datagrams, (payload, src, row.sport, PyBytes_FromStringAndSize(
                    <const char *>buf + row.l3_off, plen)))
            else:
                PyList_Append(datagrams, (payload, src, row.sport))
            bufpool_free(pool.pool, h)
        if k < want:
            break
    return datagrams, held, nread, drops


def udp4_template(bytes dst_mac not None, bytes src_mac not None, bytes src not None,
                  bytes dst not None, uint16_t sport, uint16_t dport, uint8_t ttl=64):
    """The 42-byte header template of :func:`udp4_frame` for one flow:
    Ethernet (``dst_mac``, ``src_mac``, IPv4), IPv4 (version 4, IHL 5, TOS 0,
    no fragment flags, ``ttl``, UDP, ``src`` -> ``dst``: RFC 791 3.1) and UDP
    ports; lengths, identification and checksums are left zero."""
    if len(dst_mac) != 6 or len(src_mac) != 6 or len(src) != 4 or len(dst) != 4:
        raise ValueError("MAC addresses are 6 bytes and IPv4 addresses 4")
    cdef bytes out = PyBytes_FromStringAndSize(NULL, _HEADERS)
    cdef uint8_t *p = <uint8_t *>PyBytes_AS_STRING(out)
    memset(p, 0, _HEADERS)
    memcpy(p, PyBytes_AS_STRING(dst_mac), 6)
    memcpy(p + 6, PyBytes_AS_STRING(src_mac), 6)
    p[12] = 0x08
    p[13] = 0x00
    p[_IP] = 0x45
    p[_IP + 8] = ttl
    p[_IP + 9] = 17
    memcpy(p + _IP + 12, PyBytes_AS_STRING(src), 4)
    memcpy(p + _IP + 16, PyBytes_AS_STRING(dst), 4)
    _put16(p + _UDP, sport)
    _put16(p + _UDP + 2, dport)
    return out


def udp4_frame(bytes template not None, const uint8_t[::1] payload, uint16_t ident):
    """One Ethernet frame carrying ``payload`` as a UDP datagram, from a
    :func:`udp4_template`: IPv4 total length, identification and header
    checksum, UDP length and checksum (RFC 768: over the pseudo-header, the
    header and the data; a zero result goes out as all ones), padded with
    zeros to the Ethernet minimum.  The caller keeps the datagram within the
    MTU; ValueError past the 16-bit length fields."""
    if PyBytes_GET_SIZE(template) != _HEADERS:
        raise ValueError(f"a UDP/IPv4 header template is {_HEADERS} bytes")
    cdef Py_ssize_t n = payload.shape[0]
    if n > 65535 - 28:
        raise ValueError(f"a UDP/IPv4 payload is at most 65507 bytes, not {n}")
    cdef Py_ssize_t total = _HEADERS + n
    cdef Py_ssize_t size = total if total >= ETH_MIN_FRAME else ETH_MIN_FRAME
    cdef bytes out = PyBytes_FromStringAndSize(NULL, size)
    cdef uint8_t *p = <uint8_t *>PyBytes_AS_STRING(out)
    cdef uint16_t udp_len = <uint16_t>(8 + n)
    cdef uint16_t check
    cdef const uint8_t *head = <const uint8_t *>PyBytes_AS_STRING(template)
    with nogil:
        memcpy(p, head, _HEADERS)
        if n:
            memcpy(p + _HEADERS, &payload[0], n)
        if size > total:
            memset(p + total, 0, size - total)
        _put16(p + _IP + 2, <uint16_t>(20 + udp_len))
        _put16(p + _IP + 4, ident)
        p[_IP + 10] = 0
        p[_IP + 11] = 0
        _put16(p + _IP + 10, csum_finish(csum_partial(p + _IP, 20, 0)))
        _put16(p + _UDP + 4, udp_len)
        p[_UDP + 6] = 0
        p[_UDP + 7] = 0
        check = csum_finish(csum_partial(p + _UDP, udp_len,
                                         csum_pseudo_v4(p + _IP + 12, p + _IP + 16, 17,
                                                        udp_len)))
        _put16(p + _UDP + 6, check if check else 0xFFFF)
    return out
