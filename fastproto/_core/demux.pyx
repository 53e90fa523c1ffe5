# cython: always_allow_keywords=False
"""The receive path of one batch, as the fast-demultiplexing proposal draws it.

For every frame, without the GIL: parse and validate L2/L3/L4; for UDP and TCP
look the socket up in the pcbtable under the bucket's *reader* lock and
``pcq_put`` the packet handle on the socket's receive PCQ without touching the
socket itself; then release the bucket.  A socket that got packets is put on
the batch's wake list once, so wake-ups are per socket per batch, never per
packet.  What the loop cannot place is handed back by batch index:

- ``other``: frames for no socket in particular (ARP, ICMP, NDP, fragments),
  for their own small handlers;
- ``unmatched``: UDP/TCP with no pcb, for the protocol's answer (RST, ICMP
  port unreachable), which the caller rate-limits.

Frames that are malformed, or whose socket's PCQ is full, are dropped right
there: their buffers go back to the pool and the drop is counted under its
reason.  Nothing vanishes uncounted.
"""
import numpy as _np

cimport numpy as cnp
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memset

from fastproto._core.buffers cimport BufferPool, bufpool_free, bufpool_t, buf_ptr
from fastproto._core.parse cimport (parsed_t, parse_frame, parse_status_names, PARSE_OK,
                                    PARSE_NSTATUS, PARSE_VERIFY_L4, PARSE_DEFER_UDP, PARSE_DEFER_TCP,
                                    PARSE_L4_BAD_CHECKSUM, PF_L4, PF_FRAG_LATER, PF_L4_CSUM_DEFERRED,
                                    PF_L4_CSUM_OK)
from fastproto._core.pcbtable cimport (PCBTable, pcb_bucket, pcb_key, pcb_lookup,
                                       pcbtable_lookup_finish_hold, pcbtable_lookup_start,
                                       pcbtable_release)
from fastproto._core.pcq cimport PCQ, pcq_len, pcq_prefetch, pcq_put
from fastproto._core.tcb cimport (tcb_t, tcb_lock, tcb_unlock, tcb_disarm, tcb_segment, tcb_flush,
                                  tcb_seq_diff, tcb_pseudo_sum, tcb_clock_ms, TCB_TMPL_MAX,
                                  TCB_TCP_OFF, TCB_NCOUNTERS)
from fastproto._core.parse cimport PF_TCP_TS, PF_FRAGMENT
from fastproto._core.tcpseg cimport tcpseg_csum_ok

cdef extern from *:
    void prefetch "__builtin_prefetch"(const void *p) noexcept nogil
    # Counters are also bumped from socket threads (count_bad_checksum):
    # relaxed atomic adds, on drop paths only, so no update is lost.
    uint64_t atomic_add "__atomic_fetch_add"(uint64_t *p, uint64_t v, int order) noexcept nogil
    int RELAXED "__ATOMIC_RELAXED"

from fastproto._core.parse import PARSED_DTYPE

cnp.import_array()

# Counter slots after the parser's statuses (which count malformed frames).
cdef enum:
    C_DELIVERED = PARSE_NSTATUS     # put on a socket's PCQ
    C_PCQ_FULL                      # dropped: the socket's PCQ was full
    C_NO_SOCKET                     # handed back: L4 with no pcb
    C_OTHER                         # handed back: for no socket in particular
    C_BAD_HANDLE                    # dropped: handle or length outside the pool
    C_NCOUNTERS

cdef enum:
    # frames per block of the demux loop: enough to overlap the misses,
    # few enough that prefetched lines are still in L1 when used
    _BLOCK = 16
    _IPPROTO_TCP = 6
    _IPPROTO_UDP = 17

#: counter names beyond the parser's statuses, in slot order
_EXTRA = ("delivered", "pcq_full", "no_socket", "other", "bad_handle")

#: the immediate-ACK counters (src/tcb.h), in slot order
_TCB_COUNTERS = ("acks", "segments", "disarm_out_of_order", "disarm_flags", "disarm_busy",
                 "disarm_window", "disarm_timestamps", "disarm_fragment", "disarm_area_full",
                 "disarm_ack_unsent")

#: a hot TCB (src/tcb.h tcb_t) as NumPy sees it
TCB_DTYPE = _np.dtype([
    ("lock", "<u4"), ("armed", "<u4"), ("rcv_nxt", "<u4"), ("rcv_edge", "<u4"),
    ("last_ack", "<u4"), ("core_ack", "<u4"), ("core_edge", "<u4"), ("core_valid", "<u4"),
    ("unacked", "<u4"), ("mss", "<u4"), ("snd_nxt", "<u4"), ("ts_recent", "<u4"),
    ("ts_offset", "<u4"), ("psum", "<u4"), ("ts_ok", "u1"), ("wscale", "u1"),
    ("tmpl_len", "<u2"), ("acks", "<u4"), ("ack_bytes", "<u4"), ("pending", "<u4"),
    ("ts_max", "<u4"), ("tmpl", "u1", (96,))])


def clock_ms():
    """The demux's timestamp clock: int(time.monotonic() * 1000) as a uint32."""
    return tcb_clock_ms()


cdef inline bint _settle_tcp_checksum(parsed_t *row, const uint8_t *frame) noexcept nogil:
    """Verify here a TCP checksum the parser deferred (the segment will not
    reach a payload copy that verifies, or must not be ACKed unverified);
    the row then says verified.  Whether it is right."""
    if not tcpseg_csum_ok(row, frame):
        return False
    row.flags = (row.flags & ~(<uint32_t>PF_L4_CSUM_DEFERRED)) | PF_L4_CSUM_OK
    return True


cdef int _check_id(Demux d, Py_ssize_t sock_id) except -1:
    if sock_id < 0 or sock_id >= d.max_sockets:
        raise ValueError(f"socket id {sock_id} not in 0..{d.max_sockets - 1}")
    return 0


cdef class Demux:
    """Demux(pool, table, max_sockets=65536, capacity=1024, verify_l4=False, defer_udp_checksum=False, defer_tcp_checksum=False)

    ``table`` maps flows to socket ids (0 .. max_sockets-1); ``attach(id, pcq)``
    gives socket ``id`` its receive PCQ.  ``input(handles, lengths)`` runs one
    batch of at most ``capacity`` frames of ``pool``.  ``verify_l4``: L4
    checksums are verified here, except, with ``defer_udp_checksum``, those
    of whole UDP datagrams, left to the payload copy (``udp_take``), and with
    ``defer_tcp_checksum`` those of TCP segments carrying data (row flag
    ``L4_CSUM_DEFERRED``), left to the copy into the connection's receive
    buffer (docs/tcp.md, "Checksum on copy").  A deferred segment is still
    verified here when it has no socket (it is answered with a reset) or its
    socket's immediate ACKs are on (an ACK must not cover it unverified).
    """

    def __cinit__(self, BufferPool pool not None, PCBTable table not None,
                  Py_ssize_t max_sockets=65536, Py_ssize_t capacity=1024, bint verify_l4=False,
                  bint defer_udp_checksum=False, bint defer_tcp_checksum=False):
        if max_sockets < 1 or max_sockets > 0xFFFFFFFF:
            raise ValueError(f"max_sockets must be in 1..2**32-1, not {max_sockets}")
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, not {capacity}")
        self.pool = pool
        self.table = table
        self.max_sockets = max_sockets
        self.capacity = capacity
        self.parse_flags = PARSE_VERIFY_L4 if verify_l4 else 0
        if verify_l4 and defer_udp_checksum:
            self.parse_flags |= PARSE_DEFER_UDP
        if verify_l4 and defer_tcp_checksum:
            self.parse_flags |= PARSE_DEFER_TCP
        self._pcq_refs = [None] * max_sockets
        self.pcqs = <pcq_t **>calloc(max_sockets, sizeof(pcq_t *))
        self.marked = <uint8_t *>calloc(max_sockets, 1)
        self.cnt = <uint64_t *>calloc(C_NCOUNTERS, sizeof(uint64_t))
        if self.pcqs == NULL or self.marked == NULL or self.cnt == NULL:
            raise MemoryError()
        # One row per buffer of the pool: a packet's parse travels with its
        # handle, so whoever takes the handle off a PCQ finds its headers.
        self._rows = _np.zeros(pool.count, dtype=PARSED_DTYPE)
        self.rowp = <parsed_t *>cnp.PyArray_DATA(<cnp.ndarray>self._rows)
        self._woken = _np.zeros(capacity, dtype=_np.uint32)
        self._other = _np.zeros(capacity, dtype=_np.uint32)
        self._unmatched = _np.zeros(capacity, dtype=_np.uint32)
        self._dropped = _np.zeros(capacity, dtype=_np.uint64)
        self.woken = <uint32_t *>cnp.PyArray_DATA(<cnp.ndarray>self._woken)
        self.other = <uint32_t *>cnp.PyArray_DATA(<cnp.ndarray>self._other)
        self.unmatched = <uint32_t *>cnp.PyArray_DATA(<cnp.ndarray>self._unmatched)
        self.dropped = <uint64_t *>cnp.PyArray_DATA(<cnp.ndarray>self._dropped)
        if TCB_DTYPE.itemsize != sizeof(tcb_t):
            raise RuntimeError("TCB_DTYPE does not match tcb_t")
        # zeros: calloc'd, so the pages of unused ids cost nothing
        self._tcb_arr = _np.zeros(max_sockets, dtype=TCB_DTYPE)
        self.tcbs = <tcb_t *>cnp.PyArray_DATA(<cnp.ndarray>self._tcb_arr)
        self._ack_arr = _np.zeros(capacity * TCB_TMPL_MAX, dtype=_np.uint8)
        self._acklen_arr = _np.zeros(capacity, dtype=_np.uint32)
        self.ackbuf = <uint8_t *>cnp.PyArray_DATA(<cnp.ndarray>self._ack_arr)
        self.acklen = <uint32_t *>cnp.PyArray_DATA(<cnp.ndarray>self._acklen_arr)
        self.nacks = 0
        self.tcb_cnt = <uint64_t *>calloc(TCB_NCOUNTERS, sizeof(uint64_t))
        if self.tcb_cnt == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self.pcqs)
        free(self.marked)
        free(self.cnt)
        free(self.tcb_cnt)

    def attach(self, Py_ssize_t sock_id, PCQ pcq not None):
        """Give socket ``sock_id`` its receive PCQ (replacing any before).

        Attach before the socket's pcb enters the table, detach after it left,
        and never while ``input`` runs in another thread: the socket array is
        written under the GIL and read by ``input`` without locks.
        """
        _check_id(self, sock_id)
        self._pcq_refs[sock_id] = pcq
        self.pcqs[sock_id] = pcq.q

    def detach(self, Py_ssize_t sock_id):
        """Forget socket ``sock_id``'s PCQ; its packets then count as ``no_socket``."""
        _check_id(self, sock_id)
        self.pcqs[sock_id] = NULL
        self._pcq_refs[sock_id] = None

    cdef Py_ssize_t input_c(self, const uint64_t *handles, const uint32_t *lengths,
                            Py_ssize_t n, Py_ssize_t *nwoken, Py_ssize_t *nother,
                            Py_ssize_t *nunmatched) noexcept nogil:
        """One batch (n <= capacity); returns how many frames were delivered.

        Frames go through in blocks of _BLOCK, each in three passes, so that
        the cache misses of a block overlap instead of following one another:
        parse and prefetch the pcbtable buckets; look up and prefetch the
        sockets' PCQs; look up again under the bucket's reader lock (now a
        cache hit) and put.
        """
        cdef Py_ssize_t base, i, j, m, ndropped = 0, delivered = 0
        cdef Py_ssize_t w = 0, o = 0, u = 0
        cdef Py_ssize_t ntcb = 0              # segments for armed TCBs
        cdef uint64_t h, sock
        cdef parsed_t *row
        cdef pcb_key key
        cdef pcb_lookup lk[_BLOCK]
        cdef uint8_t is_l4[_BLOCK]
        cdef pcb_bucket *bucket
        cdef pcq_t *q
        cdef bufpool_t *pool = self.pool.pool
        memset(key.pad, 0, sizeof(key.pad))
        base = 0
        while base < n:
            m = min(<Py_ssize_t>_BLOCK, n - base)
            # the next block's headers, while this one is worked on
            for j in range(min(<Py_ssize_t>_BLOCK, n - base - m)):
                if handles[base + m + j] < pool.count:
                    prefetch(buf_ptr(pool, handles[base + m + j]))
            # pass 1: parse; start the lookups of UDP and TCP
            for j in range(m):
                i = base + j
                h = handles[i]
                is_l4[j] = 0
                if h >= pool.count or lengths[i] > pool.size:
                    # Not ours to free: the caller handed a handle outside the pool.
                    self.cnt[C_BAD_HANDLE] += 1
                    continue
                row = &self.rowp[h]
                if parse_frame(buf_ptr(pool, h), lengths[i], row, self.parse_flags) != PARSE_OK:
                    atomic_add(&self.cnt[row.status], 1, RELAXED)
                    self.dropped[ndropped] = h
                    ndropped += 1
                    continue
                if (row.proto != _IPPROTO_UDP and row.proto != _IPPROTO_TCP) \
                        or not (row.flags & PF_L4) or (row.flags & PF_FRAG_LATER):
                    self.cnt[C_OTHER] += 1
                    self.other[o] = <uint32_t>i
                    o += 1
                    continue
                # Receive direction: the packet's destination is our local side.
                memcpy(key.laddr, row.dst, 16)
                memcpy(key.faddr, row.src, 16)
                key.lport = row.dport
                key.fport = row.sport
                key.proto = row.proto
                pcbtable_lookup_start(self.table.table, &key, &lk[j])
                is_l4[j] = 1
            # pass 2: which socket; bring its PCQ into cache
            for j in range(m):
                if is_l4[j]:
                    bucket = pcbtable_lookup_finish_hold(&lk[j], &sock)
                    if bucket != NULL:
                        if sock < <uint64_t>self.max_sockets and self.pcqs[sock] != NULL:
                            pcq_prefetch(self.pcqs[sock])
                        pcbtable_release(bucket)
            # pass 3: the proposal's step, under the bucket's reader lock
            for j in range(m):
                if not is_l4[j]:
                    continue
                i = base + j
                h = handles[i]
                bucket = pcbtable_lookup_finish_hold(&lk[j], &sock)
                q = NULL
                if bucket != NULL:
                    if sock < <uint64_t>self.max_sockets:
                        q = self.pcqs[sock]
                    if q == NULL:
                        pcbtable_release(bucket)
                row = &self.rowp[h]
                if row.flags & PF_L4_CSUM_DEFERRED and (q == NULL or self.tcbs[sock].armed):
                    # Answered with a reset, or ACKed by the demux: verified first.
                    # (``armed`` read once, here: a segment queued unverified
                    # is not accounted below, which disarms, src/tcb.h.)
                    if not _settle_tcp_checksum(row, buf_ptr(pool, h)):
                        if q != NULL:
                            pcbtable_release(bucket)
                        atomic_add(&self.cnt[<int>PARSE_L4_BAD_CHECKSUM], 1, RELAXED)
                        self.dropped[ndropped] = h
                        ndropped += 1
                        continue
                if q == NULL:
                    self.cnt[C_NO_SOCKET] += 1
                    self.unmatched[u] = <uint32_t>i
                    u += 1
                    continue
                # Put on the socket's PCQ under the bucket's reader lock, so
                # the pcb cannot be torn down between lookup and put, and
                # without locking the socket, so demultiplexing never blocks.
                if pcq_put(q, h):
                    pcbtable_release(bucket)
                    delivered += 1
                    if self.rowp[h].proto == _IPPROTO_TCP and self.tcbs[sock].armed \
                            and not (self.rowp[h].flags & PF_L4_CSUM_DEFERRED):
                        # In-sequence data on a fast-path connection: the
                        # immediate ACK, if one is due (src/tcb.h).
                        row = &self.rowp[h]
                        ntcb += 1
                        if tcb_segment(&self.tcbs[sock], row.tcp_seq, row.tcp_ack, row.tcp_flags,
                                       row.payload_len, (row.flags & PF_TCP_TS) != 0,
                                       row.tcp_tsval, (row.flags & PF_FRAGMENT) != 0,
                                       self.nacks < self.capacity,
                                       self.ackbuf + self.nacks * TCB_TMPL_MAX,
                                       &self.acklen[self.nacks], self.tcb_cnt):
                            self.nacks += 1
                    if not self.marked[sock]:
                        self.marked[sock] = 1
                        self.woken[w] = <uint32_t>sock
                        w += 1
                else:
                    pcbtable_release(bucket)
                    self.cnt[C_PCQ_FULL] += 1
                    self.dropped[ndropped] = h
                    ndropped += 1
            base += m
        for i in range(w):
            self.marked[self.woken[i]] = 0
            # the batch's immediate ACK of each fast-path socket that got data
            if ntcb and tcb_flush(&self.tcbs[self.woken[i]], self.nacks < self.capacity,
                                  self.ackbuf + self.nacks * TCB_TMPL_MAX,
                                  &self.acklen[self.nacks], self.tcb_cnt):
                self.nacks += 1
        for i in range(ndropped):
            bufpool_free(pool, self.dropped[i])
        self.cnt[C_DELIVERED] += delivered
        nwoken[0] = w
        nother[0] = o
        nunmatched[0] = u
        return delivered

    def input(self, handles, lengths):
        """Run one batch: frame i is ``pool.data[handles[i], :lengths[i]]``.

        Returns ``(delivered, woken, other, unmatched)``: how many frames went
        onto socket PCQs, the socket ids that got packets (each once, uint32),
        and the batch indices of frames handed back (see the module docstring);
        ``rows[handle]`` holds each frame's parse.  The arrays are views valid until
        the next call.  Malformed frames and PCQ overflows are freed to the pool.
        """
        cdef cnp.ndarray h = _np.ascontiguousarray(handles, dtype=_np.uint64)
        cdef cnp.ndarray l = _np.ascontiguousarray(lengths, dtype=_np.uint32)
        cdef Py_ssize_t n = cnp.PyArray_DIM(h, 0)
        if cnp.PyArray_NDIM(h) != 1 or cnp.PyArray_NDIM(l) != 1 or cnp.PyArray_DIM(l, 0) != n:
            raise ValueError("handles and lengths must be 1-D and of one length")
        if n > self.capacity:
            raise ValueError(f"batch of {n} frames exceeds capacity {self.capacity}")
        cdef Py_ssize_t w = 0, o = 0, u = 0, delivered
        cdef const uint64_t *hp = <const uint64_t *>cnp.PyArray_DATA(h)
        cdef const uint32_t *lp = <const uint32_t *>cnp.PyArray_DATA(l)
        with nogil:
            delivered = self.input_c(hp, lp, n, &w, &o, &u)
        return delivered, self._woken[:w], self._other[:o], self._unmatched[:u]

    def input_woken(self, handles, lengths):
        """``input`` for the stack's receive path: ``(woken, other, unmatched,
        acks)``, the socket ids that got packets as a list of ints (each
        once), the batch indices of frames handed back as in ``input`` (None
        when there are none), and the ACK frames built so far (what
        ``take_acks`` returns, taken).  The handles and lengths may be
        contiguous uint64 / uint32 arrays, used in place, or anything
        ``input`` takes."""
        cdef cnp.ndarray h, l
        if (type(handles) is cnp.ndarray and cnp.PyArray_TYPE(<cnp.ndarray>handles) == cnp.NPY_UINT64
                and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>handles)):
            h = <cnp.ndarray>handles
        else:
            h = _np.ascontiguousarray(handles, dtype=_np.uint64)
        if (type(lengths) is cnp.ndarray and cnp.PyArray_TYPE(<cnp.ndarray>lengths) == cnp.NPY_UINT32
                and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>lengths)):
            l = <cnp.ndarray>lengths
        else:
            l = _np.ascontiguousarray(lengths, dtype=_np.uint32)
        cdef Py_ssize_t n = cnp.PyArray_DIM(h, 0)
        if cnp.PyArray_NDIM(h) != 1 or cnp.PyArray_NDIM(l) != 1 or cnp.PyArray_DIM(l, 0) != n:
            raise ValueError("handles and lengths must be 1-D and of one length")
        if n > self.capacity:
            raise ValueError(f"batch of {n} frames exceeds capacity {self.capacity}")
        cdef Py_ssize_t i, w = 0, o = 0, u = 0
        cdef const uint64_t *hp = <const uint64_t *>cnp.PyArray_DATA(h)
        cdef const uint32_t *lp = <const uint32_t *>cnp.PyArray_DATA(l)
        with nogil:
            self.input_c(hp, lp, n, &w, &o, &u)
        woken = [self.woken[i] for i in range(w)]
        other = self._other[:o] if o else None
        unmatched = self._unmatched[:u] if u else None
        return woken, other, unmatched, self.take_acks()

    def count_bad_checksum(self, Py_ssize_t n=1):
        """Count ``n`` more segments whose deferred checksum (verified while
        their payload was copied) was bad, under the parser's
        ``l4_bad_checksum`` with the ones verified here.  Any thread."""
        if n < 0:
            raise ValueError(f"n must be >= 0, not {n}")
        atomic_add(&self.cnt[<int>PARSE_L4_BAD_CHECKSUM], <uint64_t>n, RELAXED)

    @property
    def rows(self):
        """The parse (PARSED_DTYPE) of the frame in each buffer of the pool,
        indexed by handle: valid while that buffer holds that frame."""
        return self._rows

    def counters(self):
        """{reason: frames} since creation, ``netstat -s`` style: the parser's
        rejection reasons (lower case) and delivered / pcq_full / no_socket /
        other / bad_handle."""
        out = {}
        cdef int i
        for i in range(1, PARSE_NSTATUS):
            out[parse_status_names[i].decode().lower()] = self.cnt[i]
        for i, name in enumerate(_EXTRA):
            out[name] = self.cnt[PARSE_NSTATUS + i]
        return out

    # -- immediate ACKs (src/tcb.h) ------------------------------------------------

    @property
    def tcb(self):
        """The hot TCBs (TCB_DTYPE), indexed by socket id: for reading; write
        only through the tcb_* methods, which take each TCB's lock."""
        return self._tcb_arr

    def tcb_arm(self, Py_ssize_t sock_id, uint32_t rcv_nxt, uint32_t rcv_wnd, uint32_t last_ack,
                uint32_t mss, uint32_t ack_bytes, uint32_t snd_nxt, uint32_t ts_recent, uint32_t ts_offset,
                int wscale, bint ts_ok, template):
        """Turn the fast path of socket ``sock_id`` on with the engine's state:
        RCV.NXT, RCV.WND (octets), Last.ACK.sent, the receive MSS, ``ack_bytes``
        (an ACK as soon as this many octets are unacknowledged; 0: two MSS,
        RFC 9293 3.8.6.3; the rest is acknowledged at the end of the batch), SND.MAX (the
        ACKs' sequence number), TS.Recent, the TSval clock's offset (TSval =
        ``clock_ms() + ts_offset``), the window shift, whether timestamps are
        on, and ``template``: a pure ACK frame (Ethernet, IPv4 without options,
        TCP with NOP NOP TIMESTAMPS when ``ts_ok``, else no options) whose
        sequence, acknowledgment, window, timestamps and TCP checksum the demux
        fills.  Only while the socket's PCQ is empty, since RCV.NXT must then
        cover everything queued: returns False (and disarms) otherwise.  Needs
        L4 checksums verified by the demux: an ACK must never cover a corrupted
        segment."""
        _check_id(self, sock_id)
        cdef const uint8_t[::1] tm = template
        cdef Py_ssize_t n = tm.shape[0]
        if not (self.parse_flags & PARSE_VERIFY_L4):
            raise ValueError("immediate ACKs need verify_l4=True")
        if wscale < 0 or wscale > 14 or mss == 0:
            raise ValueError("wscale must be in 0..14 and mss positive")
        if (n < TCB_TCP_OFF + (32 if ts_ok else 20) or n > TCB_TMPL_MAX
                or tm[12] != 0x08 or tm[13] != 0
                or tm[14] != 0x45 or tm[23] != _IPPROTO_TCP
                or tm[TCB_TCP_OFF + 12] >> 4 != (8 if ts_ok else 5)
                or (ts_ok and (tm[TCB_TCP_OFF + 20] != 1 or tm[TCB_TCP_OFF + 21] != 1
                               or tm[TCB_TCP_OFF + 22] != 8 or tm[TCB_TCP_OFF + 23] != 10))):
            raise ValueError("template is not an Ethernet/IPv4/TCP pure ACK with the options asked")
        cdef tcb_t *t = &self.tcbs[sock_id]
        cdef pcq_t *q = self.pcqs[sock_id]
        cdef bint ok
        tcb_lock(t)
        ok = q != NULL and pcq_len(q) == 0
        if ok:
            memcpy(t.tmpl, &tm[0], n)
            t.tmpl_len = <uint16_t>n
            t.psum = tcb_pseudo_sum(t.tmpl + 14, (32 if ts_ok else 20))
            t.rcv_nxt = rcv_nxt
            t.rcv_edge = rcv_nxt + rcv_wnd
            if not t.core_valid or tcb_seq_diff(last_ack, t.last_ack) > 0:
                t.last_ack = last_ack
            # octets in order since the last ACK either side sent
            t.unacked = <uint32_t>tcb_seq_diff(rcv_nxt, t.last_ack) \
                if tcb_seq_diff(rcv_nxt, t.last_ack) > 0 else 0
            t.mss = mss
            t.ack_bytes = ack_bytes if ack_bytes else 2 * mss
            t.pending = 0
            t.snd_nxt = snd_nxt
            t.ts_recent = ts_recent
            t.ts_max = ts_recent
            t.ts_offset = ts_offset
            t.wscale = <uint8_t>wscale
            t.ts_ok = ts_ok
            t.armed = 1
        else:
            t.armed = 0
        tcb_unlock(t)
        return ok

    def tcb_disarm(self, Py_ssize_t sock_id):
        """Turn the fast path of socket ``sock_id`` off (segments go to the engine alone)."""
        _check_id(self, sock_id)
        tcb_disarm(&self.tcbs[sock_id])

    def tcb_reset(self, Py_ssize_t sock_id):
        """Forget socket ``sock_id``'s hot TCB (a new connection on that id)."""
        _check_id(self, sock_id)
        cdef tcb_t *t = &self.tcbs[sock_id]
        tcb_lock(t)
        memset(<uint8_t *>t + sizeof(t.lock), 0, sizeof(tcb_t) - sizeof(t.lock))
        tcb_unlock(t)

    def tcb_acked(self, Py_ssize_t sock_id):
        """``(ack, right edge)`` of the last ACK the demux sent for socket
        ``sock_id`` (sequence numbers), or None when it sent none."""
        _check_id(self, sock_id)
        cdef tcb_t *t = &self.tcbs[sock_id]
        cdef uint32_t a, e, v
        tcb_lock(t)
        a = t.core_ack
        e = t.core_edge
        v = t.core_valid
        tcb_unlock(t)
        return (a, e) if v else None

    def tcb_window(self, Py_ssize_t sock_id, uint32_t edge):
        """The engine's receive window now reaches ``edge`` (RCV.NXT + RCV.WND,
        after the application read): the demux's ACKs offer it from now on.
        Whether the fast path is on (a hint: the demux may turn it off)."""
        _check_id(self, sock_id)
        cdef tcb_t *t = &self.tcbs[sock_id]
        if not t.armed:
            return False
        tcb_lock(t)
        if tcb_seq_diff(edge, t.rcv_edge) > 0:
            t.rcv_edge = edge
        tcb_unlock(t)
        return t.armed != 0

    def tcb_sent(self, Py_ssize_t sock_id, uint32_t ack, uint32_t edge, uint32_t snd_max):
        """The engine sends segments up to ``snd_max`` (SND.MAX after them),
        acknowledging ``ack`` and offering the window up to ``edge``: the ACK
        number they must carry instead, since acknowledgments never go back
        (the demux's last one, when that is ahead), or -1 to keep their own.
        The demux's ACKs go on from ``snd_max`` (a pure ACK behind data the
        peer has is outside its window, RFC 9293 3.10.7.4) and its window
        edge moves up to ``edge`` (a window is never shrunk, RFC 9293
        3.8.6.2.2)."""
        _check_id(self, sock_id)
        cdef tcb_t *t = &self.tcbs[sock_id]
        cdef int64_t out = -1
        tcb_lock(t)
        if tcb_seq_diff(snd_max, t.snd_nxt) > 0:
            t.snd_nxt = snd_max
        if t.core_valid and tcb_seq_diff(t.core_ack, ack) > 0:
            out = t.core_ack
        else:
            if tcb_seq_diff(ack, t.last_ack) >= 0:
                t.last_ack = ack
            if ack == t.rcv_nxt:
                t.unacked = 0
        if tcb_seq_diff(edge, t.rcv_edge) > 0:
            t.rcv_edge = edge
        tcb_unlock(t)
        return out

    def tcb_lock(self, Py_ssize_t sock_id):
        """Hold socket ``sock_id``'s TCB lock (waits while the demux has it): the
        demux then leaves that socket's segments to the engine and disarms.
        Release with ``tcb_unlock``; the ``tcb_*`` methods take it themselves."""
        _check_id(self, sock_id)
        tcb_lock(&self.tcbs[sock_id])

    def tcb_unlock(self, Py_ssize_t sock_id):
        """Release what ``tcb_lock`` took."""
        _check_id(self, sock_id)
        tcb_unlock(&self.tcbs[sock_id])

    def take_acks(self):
        """The ACK frames the demux built since the last call, as bytes (the
        caller transmits them).  Same thread or lock as ``input``."""
        cdef Py_ssize_t i, n = self.nacks
        out = [(<char *>(self.ackbuf + i * TCB_TMPL_MAX))[:self.acklen[i]] for i in range(n)]
        self.nacks = 0
        return out

    def tcb_counters(self):
        """{event: count} of the immediate-ACK path since creation: ``acks``
        built, in-sequence ``segments`` accounted, and why connections were
        disarmed (``disarm_*``)."""
        return {name: self.tcb_cnt[i] for i, name in enumerate(_TCB_COUNTERS)}
