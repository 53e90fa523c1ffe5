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

Checksum on copy (docs/tcp.md): when the demux left the segments' checksums
to the payload copy, :meth:`Chunk.stage_into` copies the payload onto the
receive buffer and verifies every piece in the same pass, before the
connection sees the chunk; the connection's :meth:`Chunk.append_to` then
takes the staged bytes as they are.  A piece with a bad checksum ends the
chunk there: the good pieces before it stay, the rest are given up.
:func:`stage_segment` does the same for a segment on its own.

ACK coalescing (:func:`fold_acks`), as FreeBSD's LRO compresses ACKs: a
sender takes a batch of its peer's ACKs at once, and a pure ACK that the
next segment of the batch acknowledges beyond tells the connection nothing
that one does not, so the connection runs once for the pair.  Folded only:
ACK flag alone, no payload, no options but the timestamps, checksum
verified; at RCV.NXT; SND.UNA < ACK < next ACK =< SND.MAX (a duplicate ACK,
a loss signal, is never folded; nor an ACK whose successor would be
dropped); TSval at least TS.Recent and never going back.  The window field
the connection keeps is the later segment's, as RFC 9293 3.10.7.4 would.
"""
cimport numpy as cnp
from cpython.buffer cimport PyBuffer_FillInfo
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport int32_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcmp, memcpy

from fastproto._core.parse cimport (parsed_t, PF_FRAGMENT, PF_L4, PF_L4_CSUM_DEFERRED, PF_L4_CSUM_OK,
                                    PF_TCP_MSS, PF_TCP_OPT_IGNORED, PF_TCP_SACK, PF_TCP_SACK_PERM,
                                    PF_TCP_TS, PF_TCP_WSCALE)
from fastproto._core.sockbuf cimport (SockBuf, sb_cut_at, sb_tail_commit, sb_tail_cut,
                                      sb_tail_reserve, sockbuf_t)
from fastproto._core.tcpseg cimport tcpseg_copy_verified, tcpseg_csum_ok

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


cdef inline const parsed_t *_row(const parsed_t *rows, const uint64_t *handles,
                                 Py_ssize_t i) noexcept nogil:
    return &rows[handles[i]] if handles != NULL else &rows[i]


cdef inline Py_ssize_t _coalesce(const parsed_t *rows, const uint64_t *handles, Py_ssize_t n,
                                 uint32_t max_bytes, uint32_t *first, uint32_t *count,
                                 uint32_t *total) noexcept nogil:
    cdef Py_ssize_t i, c = -1
    cdef const parsed_t *head = NULL
    cdef const parsed_t *last = NULL
    cdef const parsed_t *r
    cdef bint open_ = False
    for i in range(n):
        r = _row(rows, handles, i)
        if open_ and _mergeable(r) and total[c] + r.payload_len <= max_bytes \
                and _follows(head, last, r, total[c]):
            count[c] += 1
            total[c] += r.payload_len
            last = r
            continue
        c += 1
        first[c] = <uint32_t>i
        count[c] = 1
        total[c] = r.payload_len
        head = last = r
        open_ = _mergeable(r)
    return c + 1


cdef Py_ssize_t gro_coalesce(const parsed_t *rows, Py_ssize_t n, uint32_t max_bytes,
                             uint32_t *first, uint32_t *count, uint32_t *total) noexcept nogil:
    """Split rows 0..n-1 into chunks (see the module docstring); returns how many."""
    return _coalesce(rows, NULL, n, max_bytes, first, count, total)


cdef Py_ssize_t gro_coalesce_handles(const parsed_t *table, const uint64_t *handles, Py_ssize_t n,
                                     uint32_t max_bytes, uint32_t *first, uint32_t *count,
                                     uint32_t *total) noexcept nogil:
    """Split the segments whose rows are table[handles[0..n-1]] into chunks."""
    return _coalesce(table, handles, n, max_bytes, first, count, total)


cdef inline bint _pure_ack(const parsed_t *r) noexcept nogil:
    """A verified TCP segment that only acknowledges: no payload, flags ACK
    alone, no options but the timestamps."""
    return (r.proto == _IPPROTO_TCP and (r.flags & PF_L4) and (r.flags & PF_L4_CSUM_OK)
            and not (r.flags & (PF_FRAGMENT | PF_L4_CSUM_DEFERRED | _OTHER_OPTIONS))
            and r.payload_len == 0 and r.tcp_flags == _ACK)


cdef inline bint _ack_folds(const parsed_t *r, const parsed_t *nxt,
                            const ack_tcb_t *tcb) noexcept nogil:
    """May pure ACK ``r`` be folded into the ACK ``nxt`` that follows it?"""
    if not (_pure_ack(r) and _pure_ack(nxt)):
        return False
    # Both acceptable as they stand (RFC 9293 3.10.7.4 "first"): at RCV.NXT.
    if r.tcp_seq != tcb.rcv_nxt or nxt.tcp_seq != tcb.rcv_nxt:
        return False
    # SND.UNA < r.ACK < nxt.ACK =< SND.MAX: ``r`` is new (a duplicate ACK is
    # a loss signal of its own and is never folded, RFC 5681 3.2), and
    # ``nxt`` covers it and is acceptable (an ACK of unsent data is dropped,
    # and would take ``r`` with it).
    if <int32_t>(r.tcp_ack - tcb.snd_una) <= 0 or <int32_t>(nxt.tcp_ack - r.tcp_ack) <= 0 \
            or <int32_t>(nxt.tcp_ack - tcb.snd_max) > 0:
        return False
    if r.sport != nxt.sport or r.dport != nxt.dport or r.ip_version != nxt.ip_version:
        return False
    if tcb.ts_ok:
        # Both pass PAWS (RFC 7323 5.3) if ``r`` does: TSval never goes back.
        if not (r.flags & nxt.flags & PF_TCP_TS):
            return False
        if <int32_t>(r.tcp_tsval - tcb.ts_recent) < 0 or <int32_t>(nxt.tcp_tsval - r.tcp_tsval) < 0:
            return False
    elif (r.flags | nxt.flags) & PF_TCP_TS:
        return False
    return memcmp(r.src, nxt.src, 16) == 0 and memcmp(r.dst, nxt.dst, 16) == 0


cdef Py_ssize_t gro_fold_acks(const parsed_t *table, const uint64_t *handles, Py_ssize_t n,
                              const ack_tcb_t *tcb, uint8_t *keep) noexcept nogil:
    """Mark in ``keep`` (n bytes) the segments table[handles[i]] that stand on
    their own (1) and the pure ACKs the next segment covers (0); returns how
    many are folded."""
    cdef Py_ssize_t i, folded = 0
    for i in range(n - 1):
        keep[i] = not _ack_folds(&table[handles[i]], &table[handles[i + 1]], tcb)
        folded += not keep[i]
    if n > 0:
        keep[n - 1] = 1
    return folded


cdef Py_ssize_t gro_stage(unsigned char *dst, const unsigned char *base,
                          const unsigned long long *offs, const unsigned int *lens,
                          const parsed_t *const *rows, Py_ssize_t n) noexcept nogil:
    """Copy pieces 0..n-1 (``lens[i]`` bytes at ``base + offs[i]``, parsed as
    ``rows[i]``) end to end to ``dst`` (NULL: verify only, copy nothing),
    verifying on the way the TCP checksum of each piece whose row says it
    was deferred (PF_L4_CSUM_DEFERRED); returns how many pieces came before
    the first bad one (n: all good).  The bad piece's bytes may be written."""
    cdef Py_ssize_t i
    cdef const unsigned char *frame
    for i in range(n):
        frame = base + offs[i] - rows[i].payload_off
        if rows[i].flags & PF_L4_CSUM_DEFERRED:
            if dst != NULL:
                if not tcpseg_copy_verified(dst, rows[i], frame):
                    return i
            elif not tcpseg_csum_ok(rows[i], frame):
                return i
        elif dst != NULL:
            memcpy(dst, base + offs[i], lens[i])
        if dst != NULL:
            dst += lens[i]
    return n


cdef class Chunk:
    """The payload of coalesced segments: pieces of packet buffers, in order.

    ``segments`` is how many segments it merged, ``half`` the payload bytes
    of the first ``segments // 2`` of them (where a receiver may acknowledge
    the first half), ``deferred`` how many of them still have their checksum
    to be verified (:meth:`stage_into`, :meth:`verify`), ``reread`` the
    payload bytes of the others that were verified before (by the demux).
    ``len()`` is the payload's length; :meth:`append_to` copies it onto a
    receive buffer (sockbuf.pyx); ``bytes()``/``memoryview()`` give it joined (a copy made on the
    first request).  Valid while the packet buffers are: the receive path
    frees them once the connection ran.
    """

    def __cinit__(self):
        self._offs = NULL
        self._lens = NULL
        self._rowp = NULL
        self._staged = None
        self.committed = False

    def __dealloc__(self):
        free(self._offs)

    def ack_points(self, Py_ssize_t every=2):
        """The payload byte offsets at which a receiver acknowledging every
        ``every``-th segment would send an ACK, before the chunk's end: after
        segments ``every``, ``2 * every``, ... (a list of ints, increasing)."""
        if every < 1:
            raise ValueError(f"every must be at least 1, not {every}")
        cdef list out = []
        cdef Py_ssize_t j, at = 0
        for j in range(self._n - 1):
            at += self._lens[j]
            if (j + 1) % every == 0:
                out.append(at)
        return out

    def __len__(self):
        return self._total

    cdef int _alloc(self, Py_ssize_t n) except -1:
        # one block: offsets, row pointers (both 8 bytes), then lengths
        self._offs = <unsigned long long *>malloc(n * (2 * sizeof(unsigned long long)
                                                       + sizeof(unsigned int)))
        if self._offs == NULL:
            raise MemoryError()
        self._rowp = <const parsed_t **>(self._offs + n)
        self._lens = <unsigned int *>(self._offs + 2 * n)
        self._n = n
        return 0

    cdef void _summarise(self, Py_ssize_t n) noexcept:
        """Keep pieces 0..n-1 (n >= 1) and work out what the chunk reports
        from their rows: the fields of its last piece are its own."""
        cdef Py_ssize_t j
        cdef int fl = 0
        cdef const parsed_t *r
        self._n = n
        self._total = 0
        self.half = 0
        self.deferred = 0
        self.reread = 0
        for j in range(n):
            r = self._rowp[j]
            self._total += self._lens[j]
            fl |= r.tcp_flags
            if j < n // 2:
                self.half += self._lens[j]
            if r.flags & PF_L4_CSUM_DEFERRED:
                self.deferred += 1
            elif r.flags & PF_L4_CSUM_OK:
                self.reread += self._lens[j]
        self.flags = fl
        self.ts_ecr = self._rowp[n - 1].tcp_tsecr
        self.segments = n
        self._flat = None

    def stage_into(self, SockBuf buf not None):
        """Copy the payload onto the tail of ``buf``, verifying in the same
        pass the checksum of each segment the demux left unverified; stop at
        the first bad one.  Returns how many segments were good: the chunk now
        holds only those (``len``, ``segments``, ``flags``, ``ts_ecr``,
        ``half`` as if it had merged just them) and their payload is what was
        added to ``buf``; 0: nothing was added and the chunk is unchanged.
        The bytes stay *staged*: :meth:`append_to` onto ``buf`` right after
        them takes them as they are (``committed``), :meth:`unstage` takes
        them back off."""
        if self._staged is not None:
            raise ValueError("chunk already staged")
        cdef sockbuf_t *sb = &buf.sb
        cdef Py_ssize_t good, j, kept = 0
        cdef unsigned char *dst = <unsigned char *>sb_tail_reserve(sb, self._total)
        if dst == NULL:
            raise MemoryError()
        # With the GIL held: 64 KiB take a few microseconds, less than
        # taking the GIL back would when another thread got it meanwhile.
        good = gro_stage(dst, self._base, self._offs, self._lens, self._rowp, self._n)
        if good == 0:
            return 0     # (what was written past the tail is not part of the buffer)
        for j in range(good):
            kept += self._lens[j]
        if good < self._n:
            self._summarise(good)
        sb_tail_commit(sb, kept)
        self._staged = buf
        self._at = sb.appended - kept
        self.committed = False
        return good

    def verify(self):
        """Verify the checksum of each segment the demux left unverified, up to
        the first bad one (nothing is copied).  Returns how many segments were
        good: the chunk now holds only those (0: the chunk is unchanged)."""
        cdef Py_ssize_t good = gro_stage(NULL, self._base, self._offs, self._lens, self._rowp,
                                         self._n)
        if 0 < good < self._n:
            self._summarise(good)
        return good

    def unstage(self):
        """Take the bytes :meth:`stage_into` added back off its buffer, unless
        :meth:`append_to` committed them (or the buffer lost them since)."""
        cdef SockBuf buf = self._staged
        if buf is None:
            return
        self._staged = None
        if self.committed:
            return
        cdef sockbuf_t *sb = &buf.sb
        cdef Py_ssize_t start = sb.appended - (sb.tail - sb.head)   # stream offset of the head
        if self._at < start or self._at + self._total > sb.appended:
            return       # read, dropped or cut since
        if self._at + self._total == sb.appended:
            sb_tail_cut(sb, self._total)
        else:
            sb_cut_at(sb, self._at - start, self._total)    # bytes were appended after them

    def append_to(self, SockBuf buf not None):
        """Append the payload to ``buf``: the staged bytes when they are its last
        ones (nothing copied; ``committed`` becomes True), else a copy."""
        cdef sockbuf_t *sb = &buf.sb
        cdef Py_ssize_t i
        cdef char *dst
        if (buf is self._staged and not self.committed and sb.appended == self._at + self._total
                and sb.tail - sb.head >= self._total):
            self.committed = True
            return
        dst = sb_tail_reserve(sb, self._total)
        if dst == NULL:
            raise MemoryError()
        for i in range(self._n):
            memcpy(dst, self._base + self._offs[i], self._lens[i])
            dst += self._lens[i]
        sb_tail_commit(sb, self._total)

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


cdef inline Chunk _new_chunk(object d, object rows_owner, Py_ssize_t n):
    cdef Chunk ch = Chunk.__new__(Chunk)
    ch._owner = d
    ch._rows_owner = rows_owner
    ch._base = <const unsigned char *>cnp.PyArray_DATA(d)
    ch._alloc(n)
    return ch


cdef int _check_pool(cnp.ndarray d) except -1:
    if d.ndim != 2 or d.dtype != _np.uint8 or not d.flags.c_contiguous:
        raise ValueError("pool_data must be a C-contiguous 2-D uint8 array")
    return 0


def coalesce(rows, handles, pool_data, Py_ssize_t max_bytes=_MAX_BYTES, bint by_handle=False):
    """Coalesce the segments ``handles`` (uint64, in PCQ order) in buffers of
    ``pool_data`` (the pool's 2-D uint8 array).  Their parser rows are
    ``rows`` (PARSED_DTYPE), one per handle, or with ``by_handle`` the
    demux's whole table, row ``h`` for handle ``h`` (nothing gathered).

    Returns ``(heads, chunks)``: for each chunk the index of its first
    segment, and a :class:`Chunk` where it merged two or more segments, else
    None (the segment goes on alone).  ``max_bytes``: payload bytes a chunk
    may hold, 1..65535.
    """
    if not 1 <= max_bytes <= 65535:
        raise ValueError(f"max_bytes must be in 1..65535, not {max_bytes}")
    cdef cnp.ndarray r = rows if by_handle else _np.ascontiguousarray(rows)
    cdef cnp.ndarray h = _np.ascontiguousarray(handles, dtype=_np.uint64)
    cdef cnp.ndarray d = pool_data
    if r.dtype != PARSED_DTYPE or r.ndim != 1 or not r.flags.c_contiguous:
        raise ValueError("rows must be a C-contiguous 1-D array of PARSED_DTYPE")
    if h.ndim != 1 or (not by_handle and h.shape[0] != r.shape[0]):
        raise ValueError("handles must be 1-D, one per row")
    _check_pool(d)
    cdef Py_ssize_t n = h.shape[0], nc, c, k, j
    cdef Py_ssize_t nbuf = d.shape[0], size = d.shape[1]
    cdef uint64_t nrows = <uint64_t>r.shape[0]
    cdef const parsed_t *rp = <const parsed_t *>cnp.PyArray_DATA(r)
    cdef const uint64_t *hp = <const uint64_t *>cnp.PyArray_DATA(h)
    cdef const uint64_t *byh = hp if by_handle else NULL
    cdef const parsed_t *row
    for k in range(n):
        if by_handle and hp[k] >= nrows:
            raise ValueError(f"segment {k}: handle beyond the rows")
        row = _row(rp, byh, k)
        if hp[k] >= <uint64_t>nbuf or row.payload_off + row.payload_len > size:
            raise ValueError(f"segment {k}: handle or payload outside the pool")
    cdef uint32_t *first = <uint32_t *>malloc(3 * sizeof(uint32_t) * (n if n else 1))
    if first == NULL:
        raise MemoryError()
    cdef uint32_t *count = first + n
    cdef uint32_t *total = first + 2 * n
    cdef Chunk ch
    heads = []
    chunks = []
    try:
        # (a few ns a segment: releasing the GIL would cost more, as taking it
        # back waits for whichever thread got it meanwhile)
        nc = _coalesce(rp, byh, n, <uint32_t>max_bytes, first, count, total)
        for c in range(nc):
            k = first[c]
            heads.append(k)
            if count[c] == 1:
                chunks.append(None)
                continue
            ch = _new_chunk(d, r, count[c])
            for j in range(count[c]):
                row = _row(rp, byh, k + j)
                ch._rowp[j] = row
                ch._offs[j] = hp[k + j] * <uint64_t>size + row.payload_off
                ch._lens[j] = row.payload_len
            ch._summarise(count[c])
            chunks.append(ch)
    finally:
        free(first)
    return heads, chunks


def stage_segment(cnp.ndarray rows not None, uint64_t handle, cnp.ndarray pool_data not None,
                  SockBuf buf not None):
    """The payload of the segment in buffer ``handle`` of ``pool_data``, parsed
    as row ``handle`` of ``rows`` (the demux's table), copied onto the end of
    ``buf`` and its checksum verified in the same pass when the demux left it
    (:meth:`Chunk.stage_into`): a one-segment staged :class:`Chunk`, or None
    when the checksum is bad (``buf`` is then unchanged)."""
    if rows.dtype != PARSED_DTYPE or rows.ndim != 1 or not rows.flags.c_contiguous:
        raise ValueError("rows must be a C-contiguous 1-D array of PARSED_DTYPE")
    _check_pool(pool_data)
    if handle >= <uint64_t>rows.shape[0] or handle >= <uint64_t>pool_data.shape[0]:
        raise IndexError(f"handle {handle} beyond the rows or the pool")
    cdef const parsed_t *row = (<const parsed_t *>cnp.PyArray_DATA(rows)) + handle
    cdef Py_ssize_t size = pool_data.shape[1]
    if row.payload_off + row.payload_len > size or row.proto != _IPPROTO_TCP \
            or not (row.flags & PF_L4) or (row.flags & PF_FRAGMENT) \
            or row.payload_off < row.l4_off + 20:
        raise ValueError(f"row {handle} is not a whole TCP segment within its buffer")
    cdef Chunk ch = _new_chunk(pool_data, rows, 1)
    ch._rowp[0] = row
    ch._offs[0] = handle * <uint64_t>size + row.payload_off
    ch._lens[0] = row.payload_len
    ch._summarise(1)
    return ch if ch.stage_into(buf) else None


def fold_acks(rows, handles, uint32_t snd_una, uint32_t snd_max, uint32_t rcv_nxt,
              bint ts_ok=False, uint32_t ts_recent=0):
    """ACK coalescing: the segments ``handles`` (uint64, in PCQ order) of one
    connection, parsed as rows ``handles[i]`` of ``rows`` (the demux's table),
    without the pure ACKs that the segment right after them acknowledges
    beyond (see the module docstring).  The connection's SND.UNA, SND.MAX,
    RCV.NXT, whether it uses timestamps and its TS.Recent decide which are
    safe to fold.

    Returns ``(kept, folded)``: the handles that stand on their own, in
    order (a new uint64 array), and how many were folded; or None when none
    was.  Raises ValueError for arrays of another kind and IndexError for a
    handle beyond ``rows`` (nothing is read then)."""
    cdef cnp.ndarray r = rows
    cdef cnp.ndarray h = _np.ascontiguousarray(handles, dtype=_np.uint64)
    if r.dtype != PARSED_DTYPE or r.ndim != 1 or not r.flags.c_contiguous:
        raise ValueError("rows must be a C-contiguous 1-D array of PARSED_DTYPE")
    if h.ndim != 1:
        raise ValueError("handles must be 1-D")
    cdef Py_ssize_t n = h.shape[0], i, j
    if n < 2:
        return None
    cdef uint64_t nrows = <uint64_t>r.shape[0]
    cdef const uint64_t *hp = <const uint64_t *>cnp.PyArray_DATA(h)
    for i in range(n):
        if hp[i] >= nrows:
            raise IndexError(f"handle {hp[i]} beyond the {nrows} rows")
    cdef ack_tcb_t tcb
    tcb.snd_una = snd_una
    tcb.snd_max = snd_max
    tcb.rcv_nxt = rcv_nxt
    tcb.ts_recent = ts_recent
    tcb.ts_ok = ts_ok
    cdef uint8_t *keep = <uint8_t *>malloc(<size_t>n)
    if keep == NULL:
        raise MemoryError()
    cdef Py_ssize_t folded
    cdef cnp.ndarray out
    cdef uint64_t *op
    try:
        folded = gro_fold_acks(<const parsed_t *>cnp.PyArray_DATA(r), hp, n, &tcb, keep)
        if not folded:
            return None
        out = _np.empty(n - folded, dtype=_np.uint64)
        op = <uint64_t *>cnp.PyArray_DATA(out)
        j = 0
        for i in range(n):
            if keep[i]:
                op[j] = hp[i]
                j += 1
    finally:
        free(keep)
    return out, folded
