# cython: always_allow_keywords=False, binding=False
"""TCP segmentation offload: one large send cut into MSS-sized frames.

The connection hands over one descriptor (sequence number, ACK, flags,
window, options and a payload of up to 64 KiB); :func:`tcp_frames` cuts the
payload into pieces of at most ``mss`` bytes and lays out, for each, the
link header (when given), the IPv4 or IPv6 header and the TCP header, with
the lengths, the sequence number (advancing by the bytes before it) and both
checksums filled in, straight into the new frame: the payload is read once,
copied and summed in the same pass.  As a NIC's TSO does, PSH and FIN go only
on the last frame (RFC 9293 3.9.1: PSH marks the end of the data the
application pushed; the FIN's sequence number follows the last byte).

The frames go to a list (one ``bytes`` each) or, with no object per frame,
into a :class:`fastproto._core.frames.FrameBatch`, written in place (without
the GIL for sends of 16 KiB or more); :func:`tcp_frames_many` cuts a whole
batch of sends in one call.

IPv4 packets have DF set, identification 0 (atomic datagrams, RFC 6864 4.1)
and TTL 64; IPv6 packets hop limit 64.  Frames with a link header shorter
than 60 bytes are zero-padded to the Ethernet minimum (IEEE 802.3, without
the FCS).  See ``tso.pxd`` for the C-level API and ``docs/tcp.md``.
"""
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.list cimport PyList_Append
from libc.stdint cimport uint8_t, uint16_t, uint32_t
from libc.string cimport memcpy, memset

from fastproto._core.checksum cimport csum_finish, csum_fold, csum_partial, csum_partial_copy
from fastproto._core.frames cimport FrameBatch, fb_push, fb_reserve, fb_tail

cdef enum:
    _IPPROTO_TCP = 6
    _ETH_MIN = 60
    _TTL = 64
    #: the most frames one call may make (a 64 KiB send at an MSS of 536
    #: makes 123; this bounds the work of a bad mss)
    _MAX_FRAMES = 65536
    #: sends at least this long are cut into a FrameBatch without the GIL:
    #: other threads' Python work goes on meanwhile
    _NOGIL_BYTES = 16384


cdef inline void _put16(uint8_t *p, uint32_t v) noexcept nogil:
    p[0] = <uint8_t>((v >> 8) & 0xFF)
    p[1] = <uint8_t>(v & 0xFF)


cdef inline void _put32(uint8_t *p, uint32_t v) noexcept nogil:
    p[0] = <uint8_t>(v >> 24)
    p[1] = <uint8_t>((v >> 16) & 0xFF)
    p[2] = <uint8_t>((v >> 8) & 0xFF)
    p[3] = <uint8_t>(v & 0xFF)


cdef int tso_tmpl_init(tso_tmpl_t *t, const uint8_t *l2, size_t l2len, const uint8_t *src,
                       const uint8_t *dst, size_t alen, uint16_t sport, uint16_t dport,
                       uint32_t ack, uint16_t window, const uint8_t *opts,
                       size_t olen) noexcept nogil:
    """Fill ``t``; -1 if a length is not one the wire allows (alen 4 or 16,
    l2len 0 or 14, olen a multiple of 4 up to 40), else 0."""
    cdef uint8_t fixed[60]
    if (alen != 4 and alen != 16) or (l2len != 0 and l2len != 14) or olen % 4 or olen > 40:
        return -1
    memset(t, 0, sizeof(tso_tmpl_t))
    if l2len:
        memcpy(t.l2, l2, 14)
    t.l2len = <uint8_t>l2len
    t.v4 = alen == 4
    memcpy(t.src, src, alen)
    memcpy(t.dst, dst, alen)
    t.sport = sport
    t.dport = dport
    t.ack = ack
    t.window = window
    if olen:
        memcpy(t.opts, opts, olen)
    t.olen = <uint8_t>olen
    # The words every frame's checksum covers alike: the pseudo-header's
    # addresses and protocol, then the ports, ACK, window and options.  Each
    # frame adds its lengths, sequence number, offset+flags.
    cdef uint32_t s = csum_partial(src, alen, 0)
    s = csum_partial(dst, alen, s) + _IPPROTO_TCP
    _put16(fixed, sport)
    _put16(fixed + 2, dport)
    _put32(fixed + 4, ack)
    _put16(fixed + 8, window)
    fixed[10] = 0
    fixed[11] = 0
    if olen:
        memcpy(fixed + 12, opts, olen)
    t.fixed_sum = csum_partial(fixed, 12 + olen, s)
    return 0


cdef size_t tso_frame_len(const tso_tmpl_t *t, size_t plen) noexcept nogil:
    """Bytes of the frame carrying ``plen`` payload bytes (padding included)."""
    cdef size_t n = t.l2len + (20 if t.v4 else 40) + 20 + t.olen + plen
    if t.l2len and n < _ETH_MIN:
        n = _ETH_MIN
    return n


cdef size_t tso_frame(uint8_t *out, const tso_tmpl_t *t, uint32_t seq, uint16_t flags,
                      const uint8_t *payload, size_t plen) noexcept nogil:
    """Write the frame for ``plen`` bytes at ``payload`` with sequence number
    ``seq`` and ``flags`` into ``out`` (tso_frame_len bytes); returns its length."""
    cdef size_t iplen = 20 if t.v4 else 40
    cdef size_t thl = 20 + t.olen
    cdef size_t seglen = thl + plen
    cdef size_t total = tso_frame_len(t, plen)
    cdef uint8_t *ip = out + t.l2len
    cdef uint8_t *th = ip + iplen
    cdef uint32_t s
    if t.l2len:
        memcpy(out, t.l2, 14)
    if t.v4:
        ip[0] = 0x45
        ip[1] = 0
        _put16(ip + 2, <uint32_t>(iplen + seglen))
        ip[4] = 0
        ip[5] = 0
        ip[6] = 0x40            # DF, fragment offset 0
        ip[7] = 0
        ip[8] = _TTL
        ip[9] = _IPPROTO_TCP
        ip[10] = 0
        ip[11] = 0
        memcpy(ip + 12, t.src, 4)
        memcpy(ip + 16, t.dst, 4)
        _put16(ip + 10, csum_finish(csum_partial(ip, 20, 0)))
    else:
        _put32(ip, 0x60000000)
        _put16(ip + 4, <uint32_t>seglen)
        ip[6] = _IPPROTO_TCP
        ip[7] = _TTL
        memcpy(ip + 8, t.src, 16)
        memcpy(ip + 24, t.dst, 16)
    _put16(th, t.sport)
    _put16(th + 2, t.dport)
    _put32(th + 4, seq)
    _put32(th + 8, t.ack)
    _put16(th + 12, <uint32_t>(((thl // 4) << 12) | (flags & 0x0FFF)))
    _put16(th + 14, t.window)
    th[16] = 0
    th[17] = 0
    th[18] = 0
    th[19] = 0
    if t.olen:
        memcpy(th + 20, t.opts, t.olen)
    # pseudo-header length (twice for IPv6's 32-bit field is the same sum),
    # sequence number, offset+flags: the words not in fixed_sum
    s = t.fixed_sum + <uint32_t>seglen + (seq >> 16) + (seq & 0xFFFF) \
        + (((thl // 4) << 12) | (flags & 0x0FFF))
    s = csum_fold(s)
    if plen:
        s = csum_partial_copy(th + thl, payload, plen, s)
    _put16(th + 16, csum_finish(s))
    if total > t.l2len + iplen + seglen:
        memset(ip + iplen + seglen, 0, total - (t.l2len + iplen + seglen))
    return total


def tcp_frames(bytes l2, bytes src, bytes dst, int sport, int dport, long long seq,
               long long ack, int flags, int window, options, payload, Py_ssize_t mss,
               out):
    """Append to ``out`` the frames of one large send; returns how many.

    ``out``: a list (each frame appended as a bytes object) or an unsealed
    :class:`fastproto._core.frames.FrameBatch` (the frames written straight
    into its buffer: no object per frame).

    ``l2``: the 14-byte Ethernet header to put first, or b"" for bare IP
    packets; ``src``/``dst``: 4-byte (IPv4) or 16-byte (IPv6) addresses;
    ``seq``: the sequence number of the first payload byte; ``flags``: the
    TCP flags (PSH and FIN go on the last frame only); ``window``: the 16-bit
    field; ``options``: bytes-like, a multiple of 4 long, at most 40;
    ``payload``: bytes-like (may be empty: one frame without data);
    ``mss``: payload bytes per frame (>= 1).  ValueError on a bad argument.
    """
    return _tcp_frames(l2, src, dst, sport, dport, seq, ack, flags, window, options, payload,
                       mss, out)


def tcp_frames_many(bytes l2, bytes src, bytes dst, int sport, int dport, items,
                    Py_ssize_t room, Py_ssize_t mss, out):
    """Append to ``out`` the frames of every send of ``items``, in order; returns how many.

    ``items``: a sequence of ``(seq, ack, flags, window, options, payload)``,
    each cut as :func:`tcp_frames` cuts one send, at ``min(mss, room -
    len(options))`` payload bytes per frame (``room``: what the MTU leaves
    after the IP and TCP headers without options).  Into a FrameBatch, room
    for all of them is made at once.
    """
    cdef Py_ssize_t total = 0, nitems = len(items), cut, nbytes = 0, nframes
    cdef Py_ssize_t i
    if type(out) is FrameBatch and nitems > 1 and mss >= 1:
        for i in range(nitems):
            nbytes += len(items[i][5])
        nframes = nbytes // mss + nitems
        (<FrameBatch>out)._check_open()
        # (at most 128 bytes of headers a frame: 14 + 40 + 20 + 40, padded)
        if fb_reserve(<FrameBatch>out, <size_t>(nbytes + 128 * nframes), nframes) != 0:
            raise MemoryError()
    for item in items:
        seq, ack, flags, window, options, payload = item
        cut = room - len(options)
        total += _tcp_frames(l2, src, dst, sport, dport, seq, ack, flags, window, options,
                             payload, mss if mss < cut else cut, out)
    return total


cdef Py_ssize_t _tcp_frames(bytes l2, bytes src, bytes dst, int sport, int dport, long long seq,
                            long long ack, int flags, int window, options, payload,
                            Py_ssize_t mss, out) except -1:
    """tcp_frames; the frames made."""
    cdef tso_tmpl_t t
    cdef Py_buffer ob, pb
    cdef Py_ssize_t plen, off, n, nframes, i
    cdef uint32_t seq_u
    cdef uint16_t f, last_only = 0x08 | 0x01     # PSH, FIN
    cdef size_t flen
    cdef const uint8_t *p
    cdef bytes frame
    cdef FrameBatch batch
    if mss < 1:
        raise ValueError(f"mss must be >= 1, not {mss}")
    if not (0 <= sport <= 0xFFFF and 0 <= dport <= 0xFFFF and 0 <= window <= 0xFFFF
            and 0 <= flags <= 0xFFF):
        raise ValueError("port, window or flags out of range")
    if len(src) != len(dst):
        raise ValueError("src and dst must both be IPv4 or both IPv6")
    PyObject_GetBuffer(options, &ob, PyBUF_SIMPLE)
    try:
        if tso_tmpl_init(&t, <const uint8_t *>PyBytes_AS_STRING(l2), len(l2),
                         <const uint8_t *>PyBytes_AS_STRING(src),
                         <const uint8_t *>PyBytes_AS_STRING(dst), len(src),
                         <uint16_t>sport, <uint16_t>dport, <uint32_t>(ack & 0xFFFFFFFF),
                         <uint16_t>window, <const uint8_t *>ob.buf, ob.len) != 0:
            raise ValueError("l2 must be 0 or 14 bytes, addresses 4 or 16, options a "
                             "multiple of 4 up to 40")
    finally:
        PyBuffer_Release(&ob)
    PyObject_GetBuffer(payload, &pb, PyBUF_SIMPLE)
    try:
        plen = pb.len
        nframes = (plen + mss - 1) // mss if plen else 1
        if nframes > _MAX_FRAMES:
            raise ValueError(f"{plen} bytes at mss {mss} make more than {_MAX_FRAMES} frames")
        # The IPv4 total length and the IPv6 payload length are 16 bits.
        if (mss if plen > mss else plen) + 20 + t.olen + (20 if t.v4 else 0) > 0xFFFF:
            raise ValueError("a frame's segment would not fit an IP packet: lower mss")
        p = <const uint8_t *>pb.buf
        seq_u = <uint32_t>(seq & 0xFFFFFFFF)
        if type(out) is FrameBatch:
            batch = <FrameBatch>out
            if nframes > 1:
                flen = (<size_t>(nframes - 1) * tso_frame_len(&t, <size_t>mss)
                        + tso_frame_len(&t, <size_t>(plen - (nframes - 1) * mss)))
            else:
                flen = tso_frame_len(&t, <size_t>plen)
            batch._check_open()
            if fb_reserve(batch, flen, nframes) != 0:
                raise MemoryError()
            if plen >= _NOGIL_BYTES:
                # Busy: no other thread may grow, seal or read it meanwhile.
                batch.busy = True
                with nogil:
                    _tso_into(batch, &t, seq_u, <uint16_t>flags, p, <size_t>plen, <size_t>mss,
                              nframes)
                batch.busy = False
            else:
                _tso_into(batch, &t, seq_u, <uint16_t>flags, p, <size_t>plen, <size_t>mss,
                          nframes)
            return nframes
        if type(out) is not list:
            raise TypeError(f"out must be a list or a FrameBatch, not {type(out).__name__}")
        off = 0
        for i in range(nframes):
            n = plen - off
            if n > mss:
                n = mss
            f = <uint16_t>flags
            if i != nframes - 1:
                f &= ~last_only
            flen = tso_frame_len(&t, <size_t>n)
            frame = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>flen)
            # The GIL stays held: one frame's copy is shorter than a hand-off.
            tso_frame(<uint8_t *>PyBytes_AS_STRING(frame), &t, <uint32_t>(seq_u + <uint32_t>off),
                      f, p + off, <size_t>n)
            PyList_Append(out, frame)
            off += n
        return nframes
    finally:
        PyBuffer_Release(&pb)


cdef void _tso_into(FrameBatch batch, const tso_tmpl_t *t, uint32_t seq, uint16_t flags,
                    const uint8_t *p, size_t plen, size_t mss, Py_ssize_t nframes) noexcept nogil:
    """The frames of ``plen`` bytes at ``p`` into ``batch`` (room reserved)."""
    cdef size_t off = 0, n
    cdef Py_ssize_t i
    cdef uint16_t f, last_only = 0x08 | 0x01     # PSH, FIN
    for i in range(nframes):
        n = plen - off
        if n > mss:
            n = mss
        f = flags
        if i != nframes - 1:
            f &= ~last_only
        fb_push(batch, tso_frame(fb_tail(batch), t, <uint32_t>(seq + <uint32_t>off), f, p + off, n))
        off += n
