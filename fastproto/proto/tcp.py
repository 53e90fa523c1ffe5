"""The TCP connection engine (RFC 9293), sans-IO.

A :class:`TcpConnection` is one transmission control block.  It has no
threads, locks or sockets: the socket layer serialises calls into it.

- segments in: ``input(seg)`` with a :class:`fastproto.wire.tcp.TcpSegment`
  whose checksum the IP layer already checked, or ``input_fields(...)`` with
  its fields when its only option is timestamps (the socket's receive path);
- segments out: ``output(desc)`` is called with a descriptor
  ``(seq, ack, flags, window, options, payload)``; ``window`` is the 16-bit
  field (already scaled), ``options`` bytes (a multiple of 4 long), ``payload``
  a memoryview over the send buffer that the caller copies once while building
  the frame (``fastproto.wire.tcp.build_tcp``) and should not keep;
- time: ``clock()`` (seconds) given at construction; ``next_timeout()`` gives
  the absolute time of the next timer and ``on_timer(now)`` runs what expired;
- the application: ``send``, ``recv``, ``recv_into``, ``shutdown``, ``close``,
  ``abort``; ``on_event(conn, mask)`` reports EV_READABLE / EV_WRITABLE /
  EV_STATE / EV_ERROR once per call into the connection.

Sequence numbers are the 32-bit wire values; comparisons are made on
differences modulo 2**32 (RFC 9293 3.4).  See ``docs/tcp.md``.
"""
from __future__ import annotations

import errno
import random
import time
from typing import Any, Callable, Dict, Optional, Tuple

from fastproto._core.gro import Chunk
from fastproto._core.sockbuf import SendBuf, SockBuf
from fastproto.proto.tcp_ack import TcpAck
from fastproto.proto.tcp_output import TcpOutput
from fastproto.proto.tcp_reassembly import OutOfOrderQueue
from fastproto.proto.tcp_sack import SackScoreboard
from fastproto.proto.tcp_states import (  # noqa: F401  (re-exported)
    CLOSE_WAIT, CLOSED, CLOSING, DUPTHRESH, ERROR_EXCEPTIONS, ESTABLISHED, EV_ERROR, EV_READABLE,
    EV_STATE, EV_WRITABLE, FIN_WAIT_1, FIN_WAIT_2, HALF, LAST_ACK, LISTEN, MASK, NO_TEXT_FLAGS,
    RECEIVING, SENDING, SHUT_RD, SHUT_RDWR, SHUT_WR, STATE_NAMES, SYN_RECEIVED, SYN_SENT, TIME_WAIT,
)
from fastproto.proto.tcp_timers import TcpConfig, TcpTimers, count, initial_cwnd
from fastproto.wire.tcp import ACK, FIN, PSH, RST, SYN, URG, TcpRejected, TcpSegment, parse_tcp

#: in-order data acknowledged every second segment when a connection starts,
#: in receive buffers' worth (the sender's slow start: _input_fast)
QUICKACK_BUFFERS = 2


class TcpConnection(TcpAck, TcpOutput, TcpTimers):
    """One TCP connection's state (the TCB) and its protocol rules."""

    __slots__ = ()

    def __init__(self, config: Optional[TcpConfig] = None,
                 clock: Callable[[], float] = time.monotonic,
                 output: Optional[Callable[[Tuple[Any, ...]], Any]] = None,
                 on_event: Optional[Callable[["TcpConnection", int], Any]] = None,
                 local: Optional[Tuple[str, int]] = None,
                 remote: Optional[Tuple[str, int]] = None) -> None:
        cfg = config if config is not None else TcpConfig()
        self.config = cfg
        self.clock = clock
        self.output = output if output is not None else _discard
        self.on_event = on_event
        self.counters = cfg.counters
        self.local = local
        self.remote = remote
        self.state = CLOSED
        self.error: Optional[int] = None
        self.nodelay = cfg.nodelay
        self.keepalive = cfg.keepalive
        self.iss = self.irs = 0
        self.snd_una = self.snd_nxt = self.snd_max = self.snd_wl1 = self.snd_wl2 = 0
        self.rcv_nxt = 0
        self.snd_wnd = self.max_snd_wnd = 0
        self._rcv_wscale = cfg.rcv_wscale
        self._snd_wscale = 0
        self._ws_ok = False
        self.rcv_wnd = min(cfg.rcvbuf, 0xFFFF << self._rcv_wscale)
        self.snd_mss = cfg.default_peer_mss
        self.rcv_mss = cfg.mss
        self._ts_ok = False
        self.ts_recent = 0
        self._ts_offset = random.getrandbits(32)   # RFC 7323 5.4: a random offset per connection
        self._sack_ok = False
        self._passive = False
        self._sndbuf: Optional[SendBuf] = None     # made on first send (idle connections stay small)
        self._rcvbuf: Optional[SockBuf] = None     # made on first data (_rcvbuf_make)
        self._ooo: Optional[OutOfOrderQueue] = None
        self._fin_queued = self._wr_shut = self._rd_shut = self._orphan = False
        self._fin_rcvd = False
        self._ooo_fin: Optional[int] = None
        self._unacked_bytes = 0
        self._ack_now = False
        self._last_ack_sent = 0
        self.srtt: Optional[float] = None
        self.rttvar = 0.0
        self.rto = cfg.rto_initial
        self._retries = 0
        self._rtt_seq: Optional[int] = None
        self._rtt_time = 0.0
        self.cwnd = 0
        self.ssthresh = 0x7FFFFFFF   # RFC 5681 3.1: arbitrarily high at first
        self._dupacks = 0
        self._recover = 0
        self._in_recovery = False
        self._sackboard: Optional[SackScoreboard] = None
        self._lt_sent = 0
        self._ack_credit = 0
        self._quickack = QUICKACK_BUFFERS * cfg.rcvbuf
        self._t_rexmt: Optional[float] = None
        self._t_persist: Optional[float] = None
        self._t_delack: Optional[float] = None
        self._t_keep: Optional[float] = None
        self._t_2msl: Optional[float] = None
        self._persist_shift = 0
        self._keep_probes = 0
        self._last_rcv = 0.0
        self._events = 0
        self.core_acked: Optional[Callable[[], Optional[Tuple[int, int]]]] = None

    # ------------------------------------------------------------------ opening

    def connect(self, iss: Optional[int] = None) -> None:
        """Active open (RFC 9293 3.10.1): send a SYN and enter SYN_SENT.

        ``iss`` is the initial send sequence number (the stack supplies RFC 6528
        ISNs); a random 32-bit number without it.
        """
        if self.state != CLOSED:
            raise OSError(errno.EISCONN, "connection already in use")
        now = self.clock()
        self.iss = (random.getrandbits(32) if iss is None else iss) & MASK
        self.snd_una = self.snd_nxt = self.snd_max = self.iss
        self._recover = self.iss
        self._set_state(SYN_SENT)
        self._send_syn(0, now)
        self._flush()

    def listen(self, iss: Optional[int] = None) -> None:
        """Passive open of a single connection (RFC 9293 3.10.1); the first SYN moves it to SYN_RECEIVED.

        Listening sockets with backlogs and SYN cookies do not use this: their
        completed handshakes become connections through :meth:`from_handshake`.
        """
        if self.state != CLOSED:
            raise OSError(errno.EISCONN, "connection already in use")
        self.iss = (random.getrandbits(32) if iss is None else iss) & MASK
        self._passive = True
        self._set_state(LISTEN)
        self._flush()

    @classmethod
    def from_handshake(cls, record: Any, config: Optional[TcpConfig] = None,
                       clock: Callable[[], float] = time.monotonic,
                       output: Optional[Callable[[Tuple[Any, ...]], Any]] = None,
                       on_event: Optional[Callable[["TcpConnection", int], Any]] = None
                       ) -> "TcpConnection":
        """An ESTABLISHED connection from a handshake a listener completed.

        ``record`` has ``local``, ``remote``, ``iss``, ``irs``, ``snd_wnd`` (the
        peer's window from its final ACK, scaled), ``peer_mss``, ``snd_wscale``
        and ``rcv_wscale`` (None: no scaling, RFC 7323 2.2), ``ts_recent``
        (None: no timestamps) and ``sack_permitted``.
        """
        conn = cls(config, clock, output, on_event, record.local, record.remote)
        cfg = conn.config
        conn._passive = True
        conn.iss = record.iss & MASK
        conn.irs = record.irs & MASK
        conn.snd_una = conn.snd_nxt = conn.snd_max = conn._recover = (conn.iss + 1) & MASK
        conn.snd_wl2 = conn.snd_una
        conn.rcv_nxt = conn._last_ack_sent = conn.snd_wl1 = (conn.irs + 1) & MASK
        if record.snd_wscale is None or record.rcv_wscale is None:
            conn._snd_wscale = conn._rcv_wscale = 0
        else:
            conn._snd_wscale = min(record.snd_wscale, 14)
            conn._rcv_wscale = min(record.rcv_wscale, 14)
        conn.rcv_wnd = min(cfg.rcvbuf, 0xFFFF << conn._rcv_wscale)
        conn.snd_wnd = conn.max_snd_wnd = record.snd_wnd
        conn._ts_ok = record.ts_recent is not None
        conn.ts_recent = record.ts_recent or 0
        conn._sack_ok = bool(record.sack_permitted)
        conn._set_mss(record.peer_mss)
        conn.state = ESTABLISHED
        now = clock()
        conn._last_rcv = now
        conn._arm_keepalive(now)
        return conn

    # ------------------------------------------------------------------ app side

    @property
    def readable(self) -> bool:
        """recv() would not block: data, end of stream or an error."""
        return bool(self._rcvbuf) or self.eof or self.error is not None

    @property
    def writable(self) -> bool:
        """send() would take bytes now, or would raise (error, closed for writing)."""
        if self.error is not None or self._wr_shut:
            return True
        if self.state not in (ESTABLISHED, CLOSE_WAIT):
            return self.state == CLOSED
        buf = self._sndbuf
        return buf is None or len(buf) < self.config.sndbuf

    @property
    def eof(self) -> bool:
        """No more bytes will ever be readable: the peer's FIN was read (or reading shut, or closed)."""
        if self._rcvbuf:
            return False
        return self._fin_rcvd or self._rd_shut or self.state == CLOSED or self.state == TIME_WAIT

    @property
    def state_name(self) -> str:
        """The RFC 9293 name of the current state."""
        return STATE_NAMES[self.state]

    def take_error(self) -> Optional[int]:
        """The pending errno, cleared (SO_ERROR); later send() gives EPIPE."""
        err = self.error
        if err is not None:
            self.error = None
            if self.state == CLOSED:
                self._wr_shut = True
        return err

    def send(self, data: Any) -> int:
        """Queue bytes for sending; returns how many were taken (0 when the send buffer is full).

        Raises BrokenPipeError after a reset, shutdown(SHUT_WR)/close() or on a
        closed connection (the reset itself stays pending for recv()/take_error());
        the mapped exception of another pending error (TimeoutError, ConnectionRefusedError).
        """
        st = self.state
        if st != ESTABLISHED or self.error is not None or self._wr_shut:
            err = self.error
            if err is not None and err != errno.ECONNRESET:
                raise ERROR_EXCEPTIONS.get(err, OSError)(err, errno.errorcode.get(err, "error"))
            if self._wr_shut or st not in (ESTABLISHED, CLOSE_WAIT, SYN_SENT, SYN_RECEIVED):
                raise BrokenPipeError(errno.EPIPE, "connection closed for sending")
            if st != ESTABLISHED and st != CLOSE_WAIT:
                return 0     # not yet synchronized: nothing may be sent (RFC 9293 3.10.2 queues; we refuse)
        buf = self._sndbuf
        if buf is None:
            # Twice the limit: a move of the unacknowledged bytes to the
            # front then frees at least as much room as it copies.
            buf = self._sndbuf = SendBuf(2 * self.config.sndbuf)
        room = self.config.sndbuf - len(buf)
        if room <= 0:
            return 0
        # (output descriptors' payload views of earlier bytes stay intact: sockbuf.pyx SendBuf)
        n = buf.append(data, room)
        self._output(self.clock())
        if self._events:
            self._flush()
        return n

    def recv(self, n: int) -> bytes:
        """Up to ``n`` received bytes; b"" at end of stream.

        Raises BlockingIOError when nothing is there yet, or the mapped exception
        of a pending error (connection reset, refused, timed out).
        """
        buf = self._rcvbuf
        if buf:
            data = buf.read(n)
            self._after_read()
            return data
        return self._recv_empty(b"")

    def recv_into(self, buffer: Any, nbytes: int = 0) -> int:
        """Copy up to ``nbytes`` (default: len(buffer)) received bytes into ``buffer``; 0 at end of stream."""
        buf = self._rcvbuf
        if buf:
            n = buf.read_into(buffer, nbytes)
            self._after_read()
            return n
        return self._recv_empty(0)

    def _recv_empty(self, empty: Any) -> Any:
        err = self.error
        if err is not None and err != errno.EPIPE:
            self.error = None
            raise ERROR_EXCEPTIONS.get(err, OSError)(err, errno.errorcode.get(err, "error"))
        if self.eof or self.state == CLOSED:
            return empty
        raise BlockingIOError(errno.EAGAIN, "no data yet")

    def _after_read(self) -> None:
        """Open the receive window after the application read (RFC 9293 3.8.6.2.2)."""
        if self._fin_rcvd and not self._rcvbuf:
            self._rcvbuf = None      # read up to the FIN: no more data can come
        st = self.state
        if (st in RECEIVING or st == SYN_RECEIVED) and self._window_grows():
            self._ack_now = True
            now = self.clock()
            self._output(now)
            if self._ack_now:
                self._send_ack(now)
        if self._events:
            self._flush()

    def _window_grows(self) -> bool:
        """Raise RCV.WND to the free buffer space when that gains at least
        min(RCV.BUFF/2, Eff.snd.MSS) (receiver SWS avoidance, RFC 9293 3.8.6.2.2)."""
        # (min() spelt out: this runs after every read)
        rcvbuf = self.config.rcvbuf
        buf = self._rcvbuf
        free = rcvbuf - len(buf) if buf is not None else rcvbuf
        most = 0xFFFF << self._rcv_wscale
        if free > most:
            free = most
        old = self.rcv_wnd
        gain = rcvbuf // 2
        mss = self.rcv_mss
        if free - old >= (gain if gain < mss else mss):
            self.rcv_wnd = free
            # The update rides on the next ACK unless the window at least doubled:
            # then it is worth a segment of its own (a zero or small window opened).
            if free >= 2 * old:
                self._count("tcp.window_updates")
                return True
        return False

    def shutdown(self, how: int) -> None:
        """SHUT_RD: stop reading (later data is acknowledged and discarded);
        SHUT_WR: send a FIN after the queued data (half-close, RFC 9293 3.10.4)."""
        if how not in (SHUT_RD, SHUT_WR, SHUT_RDWR):
            raise ValueError("how must be SHUT_RD, SHUT_WR or SHUT_RDWR")
        if how in (SHUT_RD, SHUT_RDWR):
            self._rd_shut = True
            self._rcvbuf = None      # later data is discarded: its memory goes now
            self._events |= EV_READABLE
        if how in (SHUT_WR, SHUT_RDWR):
            self._shut_wr()
        self._flush()

    def _shut_wr(self) -> None:
        if self._wr_shut:
            return
        self._wr_shut = True
        st = self.state
        if st in (CLOSED, LISTEN, SYN_SENT):
            # RFC 9293 3.10.4: CLOSE in LISTEN or SYN-SENT deletes the TCB.
            self._drop(None)
            return
        self._fin_queued = True
        if st == SYN_RECEIVED:
            return    # the FIN goes out once ESTABLISHED (RFC 9293 3.10.4)
        if st == ESTABLISHED:
            self._set_state(FIN_WAIT_1)
        elif st == CLOSE_WAIT:
            self._set_state(LAST_ACK)
        else:
            return
        self._output(self.clock())

    def close(self) -> None:
        """Graceful close: FIN after the queued data.  Unread received data
        makes it an abort with RST instead (RFC 9293 3.10.4, RFC 2525 2.17)."""
        if self._rcvbuf:
            self._count("tcp.close_unread_rst")
            self.abort()
            return
        self._orphan = True
        self._rd_shut = True
        self._shut_wr()
        if self.state == FIN_WAIT_2 and self._t_2msl is None:
            self._t_2msl = self.clock() + self.config.fin_wait2_timeout
        self._flush()

    def abort(self) -> None:
        """Reset the connection (RFC 9293 3.10.5; SO_LINGER 0): RST to the peer, CLOSED."""
        st = self.state
        if st in (SYN_RECEIVED, ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, CLOSE_WAIT):
            self._emit(self.snd_nxt, 0, RST, 0, b"", b"")
            self._count("tcp.aborts")
        self._wr_shut = True
        self._rd_shut = True
        self._drop(None)
        self._flush()

    # ------------------------------------------------------------------ input

    def input(self, seg: TcpSegment) -> None:
        """Process one received segment (RFC 9293 3.10.7); replies go to ``output``."""
        if not self._input_fast(seg.seq, seg.ack, seg.flags, seg.window, seg.payload,
                                seg.ts_val, seg.ts_ecr, seg.sack_blocks):
            self._input_slow(seg)
        self._flush()

    def input_fields(self, sport: int, dport: int, seq: int, ack: int, flags: int, window: int,
                     payload: Any, ts_val: Optional[int], ts_ecr: Optional[int]) -> None:
        """:meth:`input` of the segment with these fields whose only option is
        timestamps (``ts_val`` None: none): the receive path's entry, which
        makes a :class:`TcpSegment` only when header prediction misses."""
        if not self._input_fast(seq, ack, flags, window, payload, ts_val, ts_ecr, None):
            seg = TcpSegment(sport, dport, seq, ack, flags, window, payload)
            if ts_val is not None:
                seg.ts_val = ts_val
                seg.ts_ecr = ts_ecr
            self._input_slow(seg)
        self._flush()

    def _input_fast(self, seq: int, ack: int, flags: int, window: int, payload: Any,
                    ts: Optional[int], ts_ecr: Optional[int], sack_blocks: Any) -> bool:
        """Header prediction: process an in-order segment of the common kinds
        and return True, else change nothing and return False."""
        # Header prediction (RFC 9293 3.10.7.4 in-order case; Van Jacobson): ESTABLISHED,
        # only ACK(+PSH), the expected sequence number, unchanged window, no retransmission.
        # Also taken: a segment that acknowledges new data and moves the window
        # (request/response traffic: the peer's window shrinks by what it holds
        # unread), when RFC 9293 3.10.7.4 "fifth" would update SND.WND from it
        # (SND.WL1/SND.WL2 rule) and nothing else hangs on the window (no
        # persist timer, no SACK blocks).
        # (Attributes read once each, cheapest tests first: this runs for
        # every segment.)
        if seq != self.rcv_nxt or flags & NO_TEXT_FLAGS != ACK or self.state != ESTABLISHED:
            return False
        snd_max = self.snd_max
        if self.snd_nxt != snd_max or self._in_recovery:
            return False
        una = self.snd_una
        acked = (ack - una) & MASK
        in_flight = (snd_max - una) & MASK
        wnd = window << self._snd_wscale
        if wnd != self.snd_wnd:
            # Only a segment that acknowledges new data, with a window that
            # RFC 9293 3.10.7.4 "fifth" takes as is: SND.WL1 < SEG.SEQ, or
            # SND.WL1 = SEG.SEQ and SND.WL2 =< SEG.ACK; no persist timer to
            # stop, no SACK blocks to record.
            if self._t_persist is not None or sack_blocks:
                return False
            if not 0 < acked <= in_flight:
                return False
            wl1d = (seq - self.snd_wl1) & MASK
            if (wl1d >= HALF) if wl1d else (((ack - self.snd_wl2) & MASK) >= HALF):
                return False
        if self._ts_ok and (ts is None or ((ts - self.ts_recent) & MASK) >= HALF):
            return False
        plen = len(payload)
        if plen == 0:
            if not (0 < acked <= in_flight and self._dupacks == 0):
                return False
        elif (acked > in_flight or plen > self.rcv_wnd or self._ooo is not None
                or self._rd_shut):
            return False
        # Predicted: from here the segment is processed, pure ACK or data.
        now = self.clock()
        self._last_rcv = now
        if wnd != self.snd_wnd:
            # (for data checked above: acked > 0 and the rule holds)
            self.snd_wnd = wnd
            if wnd > self.max_snd_wnd:
                self.max_snd_wnd = wnd
        if ts is not None and self.rcv_nxt == self._last_ack_sent:
            self.ts_recent = ts          # RFC 7323 4.3
        if plen == 0:
            self.snd_wl1 = seq
            self.snd_wl2 = ack
            self._ack_advance(ack, acked, ts_ecr, now)
            if self._sndbuf or self._fin_queued or self.snd_max != ack:
                self._output(now)    # (else nothing queued, nothing in flight: no-op)
            return True
        buf = self._rcvbuf
        if buf is None:
            buf = self._rcvbuf_make()
        run_end = False
        if payload.__class__ is Chunk:
            payload.append_to(buf)      # coalesced: one gathering copy
            if payload.segments > 2:
                # An ACK for the first half of the run too: one per run
                # (what receive offload gives) would leave the sender's
                # ACK clock to a single segment, and a lost one to the
                # retransmission timer (RFC 9293 3.8.6.3 asks for one per
                # two full-sized segments).  While the first buffers' worth
                # comes in, one per two segments, as RFC 9293 asks: the
                # sender's slow start grows by at most two segments an ACK
                # (RFC 3465 2.2), and doubles its window a round trip only
                # with that many.  (Until the peer fills our window: then
                # that, not its congestion window, is what holds it back.)
                nxt = self.rcv_nxt
                wnd = self.rcv_wnd
                if self._quickack > 0:
                    self._quickack -= plen
                    if plen + self.rcv_mss >= wnd:
                        self._quickack = 0
                    points = payload.ack_points(2)
                else:
                    points = (payload.half,)
                opts = self._opts(now)     # (the same for each: no gap, one clock)
                for at in points:
                    self.rcv_nxt = (nxt + at) & MASK
                    self.rcv_wnd = wnd - at
                    if self.core_acked is None or not self._core_covered():
                        self._emit(self.snd_max, self.rcv_nxt, ACK, self._wnd_field(), opts, b"")
                plen -= points[-1]
                run_end = True      # and one for the rest, whatever its size
        else:
            buf.append(payload)
        self.rcv_nxt = (self.rcv_nxt + plen) & MASK
        self.rcv_wnd -= plen
        self._unacked_bytes += plen
        self._events |= EV_READABLE
        # In order and no older than SND.UNA, the segment passes the
        # SND.WL1/SND.WL2 rule (RFC 9293 3.10.7.4 "fifth"): record it
        # even without new data acknowledged, or a receive-only
        # connection's SND.WL1 would fall 2**31 behind and refuse
        # later window updates.
        self.snd_wl1 = seq
        self.snd_wl2 = ack
        if acked:
            # The data also acknowledges ours: free it and send what the
            # window now allows (those segments carry our ACK).
            self._ack_advance(ack, acked, ts_ecr, now)
            if self._sndbuf or self._fin_queued or self.snd_max != ack:
                self._output(now)    # (else nothing queued, nothing in flight: no-op)
        # RFC 9293 3.8.6.3 / RFC 5681 4.2: ACK at least every second
        # full-sized segment, else within the delayed-ACK time.
        if run_end or self._unacked_bytes >= 2 * self.rcv_mss:
            if self.core_acked is None or not self._core_covered():
                self._send_ack(now)
        elif self._unacked_bytes and self._t_delack is None:
            self._t_delack = now + self.config.delack
        return True

    def _input_slow(self, seg: TcpSegment) -> None:
        st = self.state
        now = self.clock()
        if st == CLOSED:
            self._count("tcp.segment_to_closed")
            self._reset_for(seg)           # RFC 9293 3.10.7.1
            return
        if st == LISTEN:
            self._input_listen(seg, now)
            return
        if st == SYN_SENT:
            self._input_syn_sent(seg, now)
            return
        self._last_rcv = now
        self._keep_probes = 0
        flags = seg.flags
        seq = seg.seq
        payload = seg.payload
        segments = 1
        if payload.__class__ is Chunk:
            segments = payload.segments
            payload = memoryview(payload)   # coalesced segments, joined for trimming and queueing
        plen = len(payload)
        # Simultaneous open: the peer's SYN,ACK in SYN_RECEIVED acknowledges our SYN
        # (RFC 9293 3.5 figure 7): take it as the final ACK of the handshake.
        if (st == SYN_RECEIVED and flags & SYN and flags & ACK and seq == self.irs
                and seg.ack == self.snd_nxt):
            flags &= ~SYN
            seq = (seq + 1) & MASK
        # RFC 7323 5.3 R1: PAWS rejects a segment whose TSval is older than TS.Recent.
        if (self._ts_ok and seg.ts_val is not None and not flags & RST
                and ((seg.ts_val - self.ts_recent) & MASK) >= HALF):
            self._count("tcp.paws_drops")
            self._send_ack(now)
            return
        seg_len = plen + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
        wnd = self.rcv_wnd
        off = (seq - self.rcv_nxt) & MASK
        if off >= HALF:
            off -= 1 << 32
        # RFC 9293 3.10.7.4 "first": the acceptability test.
        if seg_len == 0:
            ok = off == 0 if wnd == 0 else 0 <= off < wnd
        elif wnd == 0:
            # Zero window: data is not acceptable, but the ACK of an in-sequence
            # segment (a window probe) is processed (RFC 9293 3.10.7.4 note).
            ok = off == 0
            if ok:
                self._count("tcp.rcv_zero_window_drops")
                payload = b""
                plen = 0
                flags &= ~FIN
                self._ack_now = True
        else:
            ok = 0 <= off < wnd or 0 <= off + seg_len - 1 < wnd
        if not ok:
            if flags & RST:
                self._count("tcp.rst_out_of_window")
                return
            self._count("tcp.rcv_out_of_window")
            if st == TIME_WAIT and flags & FIN:
                self._t_2msl = now + self.config.time_wait     # RFC 9293 3.10.7.4 eighth
            self._send_ack(now)
            return
        # Trim to the window (RFC 9293 3.10.7.4: "trimmed to only the data within the window").
        if off < 0:
            cut = -off
            if flags & SYN:
                flags &= ~SYN
                cut -= 1
            payload = payload[cut:]
            plen = len(payload)
            seq = self.rcv_nxt
            off = 0
        if off + plen > wnd:
            payload = payload[:max(wnd - off, 0)]
            plen = len(payload)
            flags &= ~FIN
            self._count("tcp.rcv_trimmed")
        # RFC 7323 4.3: TS.Recent follows the segment that covers the last ACK we sent.
        if self._ts_ok and seg.ts_val is not None and ((seg.ts_val - self.ts_recent) & MASK) < HALF:
            d = (seg.seq - self._last_ack_sent) & MASK
            if d == 0 or d >= HALF:
                self.ts_recent = seg.ts_val
        # "second": RST (RFC 5961 3.2: only an exact match resets; others in window are challenged).
        if flags & RST:
            if seq == self.rcv_nxt:
                self._count("tcp.rst_received")
                if st == SYN_RECEIVED:
                    if self._passive:
                        self._reset_to_listen()
                    else:
                        self._drop(errno.ECONNREFUSED)
                elif st in (ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, CLOSE_WAIT):
                    self._drop(errno.ECONNRESET)
                else:
                    self._drop(None)
            else:
                self._count("tcp.rst_challenged")
                self._challenge_ack(now)
            return
        # "fourth": a SYN in a synchronized state (RFC 5961 4.2): challenge ACK, drop.
        if flags & SYN:
            self._count("tcp.syn_challenged")
            self._challenge_ack(now)
            return
        # "fifth": the ACK field.
        if not flags & ACK:
            self._count("tcp.no_ack_dropped")
            return
        ack = seg.ack
        if st == SYN_RECEIVED:
            acked = (ack - self.snd_una) & MASK
            if 0 < acked <= ((self.snd_max - self.snd_una) & MASK):
                self.snd_una = ack
                self.snd_wnd = self.max_snd_wnd = seg.window << self._snd_wscale
                self.snd_wl1 = seq
                self.snd_wl2 = ack
                self._t_rexmt = None
                self._retries = 0
                self._rtt_sample_syn(seg, now)
                self._established(now)
                st = self.state
            else:
                self._count("tcp.bad_ack_syn_received")
                self._emit(ack, 0, RST, 0, b"", b"")
                return
        if st == TIME_WAIT:
            pass
        elif not self._process_ack(seg, seq, ack, plen, flags, now):
            return
        st = self.state
        if st == CLOSED:
            return
        if flags & URG:
            # "sixth": urgent data is delivered inline (RFC 6093 4: SO_OOBINLINE behaviour).
            self._count("tcp.urgent_inline")
        # "seventh": segment text.
        if plen:
            if st in RECEIVING:
                if self._orphan:
                    # Data for a closed socket: nobody will read it (RFC 9293 3.10.7.4, RFC 1122 4.2.2.13).
                    self._count("tcp.data_after_close")
                    self._emit(self.snd_max, 0, RST, 0, b"", b"")
                    self._drop(None)
                    return
                ahead = seq != self.rcv_nxt
                self._receive(seq, payload, now, bool(flags & PSH))
                if ahead and segments > 1:
                    # RFC 5681 4.2: a duplicate ACK for each out-of-order segment, as
                    # if they had come apart, so the sender's fast retransmit (three
                    # duplicates) does not wait for coalesced ones; the last goes below.
                    for _ in range(segments - 1):
                        self._send_ack(now)
                    self._ack_now = True
            else:
                self._count("tcp.data_after_fin")
        # "eighth": FIN.
        if flags & FIN:
            fin_seq = (seq + plen) & MASK
            if fin_seq == self.rcv_nxt:
                self._receive_fin(now)
            elif self.state in RECEIVING:
                self._ooo_fin = fin_seq
                self._ack_now = True
        if self.state in SENDING:
            self._output(now)
        if self._ack_now:
            self._send_ack(now)

    def _input_listen(self, seg: TcpSegment, now: float) -> None:
        """RFC 9293 3.10.7.2."""
        flags = seg.flags
        if flags & RST:
            self._count("tcp.listen_rst_ignored")
            return
        if flags & ACK:
            self._count("tcp.listen_bad_ack")
            self._emit(seg.ack, 0, RST, 0, b"", b"")
            return
        if not flags & SYN:
            self._count("tcp.listen_no_syn")
            return
        self.irs = seg.seq
        self.rcv_nxt = self._last_ack_sent = (seg.seq + 1) & MASK
        self._take_syn_options(seg, True)
        self.snd_una = self.snd_nxt = self.snd_max = self._recover = self.iss
        self.snd_wnd = self.max_snd_wnd = seg.window
        self._set_state(SYN_RECEIVED)
        self._send_syn(ACK, now)

    def _input_syn_sent(self, seg: TcpSegment, now: float) -> None:
        """RFC 9293 3.10.7.3."""
        flags = seg.flags
        ack = seg.ack
        if flags & ACK:
            # first: an ACK that does not acknowledge our SYN.
            if ack == self.iss or ((ack - self.iss) & MASK) > ((self.snd_max - self.iss) & MASK):
                if not flags & RST:
                    self._count("tcp.syn_sent_bad_ack")
                    self._emit(ack, 0, RST, 0, b"", b"")
                else:
                    self._count("tcp.rst_out_of_window")
                return
        if flags & RST:
            if flags & ACK:
                self._count("tcp.connection_refused")
                self._drop(errno.ECONNREFUSED)
            else:
                self._count("tcp.rst_without_ack")    # RFC 5961 3.2 / RFC 9293: drop it
            return
        if not flags & SYN:
            self._count("tcp.syn_sent_no_syn")
            return
        self.irs = seg.seq
        self.rcv_nxt = self._last_ack_sent = (seg.seq + 1) & MASK
        self._take_syn_options(seg, False)
        self._last_rcv = now
        if len(seg.payload):
            # Data on a SYN is not queued: the peer retransmits it after our ACK.
            self._count("tcp.syn_data_ignored")
        if flags & ACK:
            self.snd_una = ack
            self._t_rexmt = None
            self._retries = 0
            self._rtt_sample_syn(seg, now)
            # RFC 7323 2.2: the window of a SYN is never scaled.
            self.snd_wnd = self.max_snd_wnd = seg.window
            self.snd_wl1 = seg.seq
            self.snd_wl2 = ack
            self._established(now)
            self._ack_now = True
            self._output(now)
            if self._ack_now:
                self._send_ack(now)
        else:
            # Simultaneous open (RFC 9293 3.5 figure 7).
            self._count("tcp.simultaneous_open")
            self.snd_wnd = self.max_snd_wnd = seg.window
            self._set_state(SYN_RECEIVED)
            self._send_syn(ACK, now)

    def _take_syn_options(self, seg: TcpSegment, passive: bool) -> None:
        """Negotiate from the peer's SYN: window scale, timestamps, SACK (each only when both offer it), MSS."""
        cfg = self.config
        self._ws_ok = seg.wscale is not None and cfg.window_scaling
        if seg.wscale is not None and self._ws_ok:
            self._snd_wscale = seg.wscale
        else:
            self._snd_wscale = 0
            self._rcv_wscale = 0        # RFC 7323 2.2: both directions or neither
        self.rcv_wnd = min(cfg.rcvbuf, 0xFFFF << self._rcv_wscale)
        self._ts_ok = cfg.timestamps and seg.ts_val is not None
        if seg.ts_val is not None and self._ts_ok:
            self.ts_recent = seg.ts_val
        self._sack_ok = cfg.sack and seg.sack_permitted
        self._set_mss(seg.mss)

    def _set_mss(self, peer_mss: Optional[int]) -> None:
        """Eff.snd.MSS (RFC 9293 3.7.1): the smaller MSS, less the options every segment carries."""
        cfg = self.config
        base = min(cfg.mss, peer_mss if peer_mss else cfg.default_peer_mss)
        opt = 12 if self._ts_ok else 0
        self.snd_mss = max(base - opt, 1)
        self.rcv_mss = max(min(cfg.mss, peer_mss or cfg.mss) - opt, 1)
        self.cwnd = initial_cwnd(self.snd_mss, cfg.initial_window)

    def _established(self, now: float) -> None:
        self._set_state(ESTABLISHED)
        self._events |= EV_WRITABLE
        self._arm_keepalive(now)
        self.rcv_wnd = min(self.config.rcvbuf, 0xFFFF << self._rcv_wscale)
        if self._fin_queued:
            self._set_state(FIN_WAIT_1)

    def _receive(self, seq: int, payload: Any, now: float, push: bool) -> None:
        """Deliver in-order data, queue out-of-order data (RFC 9293 3.10.7.4 "seventh")."""
        plen = len(payload)
        if seq == self.rcv_nxt:
            self._append(payload)
            ooo = self._ooo
            if ooo is not None:
                # The segment filled (part of) a gap: ACK at once (RFC 5681 4.2).
                while True:
                    chunk = ooo.pop_ready(self.rcv_nxt)
                    if chunk is None:
                        break
                    self._append(chunk)
                if not ooo.blocks:
                    self._ooo = None
                self._ack_now = True
                if self._ooo_fin is not None and self._ooo_fin == self.rcv_nxt:
                    self._ooo_fin = None
                    self._receive_fin(now)
            else:
                self._unacked_bytes += plen
                if self._unacked_bytes >= 2 * self.rcv_mss:
                    if self.core_acked is None or not self._core_covered():
                        self._ack_now = True
                elif self._t_delack is None:
                    self._t_delack = now + self.config.delack
        else:
            ooo = self._ooo
            if ooo is None:
                ooo = self._ooo = OutOfOrderQueue(self.config.ooo_max_blocks)
            added = ooo.insert(self.rcv_nxt, seq, payload)
            if added < 0:
                self._count("tcp.ooo_dropped")
            else:
                self._count("tcp.ooo_queued")
            if not ooo.blocks:
                self._ooo = None
            # Out-of-order data is ACKed at once (duplicate ACK, RFC 5681 4.2, RFC 9293 3.8.6.3).
            self._ack_now = True

    def _append(self, data: Any) -> None:
        n = len(data)
        if not self._rd_shut:
            buf = self._rcvbuf
            if data.__class__ is memoryview and data.obj.__class__ is Chunk and n == len(data.obj):
                data = data.obj      # a whole chunk the full path joined: its own append
            if data.__class__ is Chunk:
                # One gathering copy; none when the receive path already
                # copied it onto the buffer while verifying its checksum
                # (docs/tcp.md, "Checksum on copy"): those bytes are committed.
                if buf is None:
                    buf = self._rcvbuf_make()
                data.append_to(buf)
            else:
                if buf is None:
                    buf = self._rcvbuf_make()
                buf.append(data)
            self._events |= EV_READABLE
        else:
            self._count("tcp.rcv_after_shutdown")
        self.rcv_nxt = (self.rcv_nxt + n) & MASK
        self.rcv_wnd -= n
        if self._rd_shut:
            self._window_grows()

    def _rcvbuf_make(self) -> SockBuf:
        """The receive buffer, made on the first data: RCV.BUFF plus room for
        one coalesced chunk, so that staging a chunk the window admits never
        needs a larger allocation (docs/tcp.md, "Receive buffer")."""
        buf = self._rcvbuf = SockBuf(self.config.rcvbuf + 65536)
        return buf

    def _receive_fin(self, now: float) -> None:
        """RFC 9293 3.10.7.4 "eighth": the FIN takes one sequence number; the state moves on."""
        self.rcv_nxt = (self.rcv_nxt + 1) & MASK
        self._fin_rcvd = True
        self._ack_now = True
        self._events |= EV_READABLE
        st = self.state
        if st in (SYN_RECEIVED, ESTABLISHED):
            self._set_state(CLOSE_WAIT)
        elif st == FIN_WAIT_1:
            self._count("tcp.simultaneous_close")
            self._set_state(CLOSING)
        elif st == FIN_WAIT_2:
            self._enter_time_wait(now)
        elif st == TIME_WAIT:
            self._t_2msl = now + self.config.time_wait

    def _enter_time_wait(self, now: float) -> None:
        self._set_state(TIME_WAIT)
        self._t_rexmt = self._t_persist = self._t_keep = None
        self._t_2msl = now + self.config.time_wait
        self._sndbuf = None
        self._ooo = None
        if self._rcvbuf is not None and not self._rcvbuf:
            self._rcvbuf = None      # no more data can come: free the empty buffer

    # ------------------------------------------------------------------ state changes

    def _set_state(self, state: int) -> None:
        if state != self.state:
            self.state = state
            self._events |= EV_STATE

    def _reset_to_listen(self) -> None:
        """RFC 9293 3.10.7.4 "second": a passive open goes back to LISTEN on RST in SYN_RECEIVED."""
        self._t_rexmt = None
        self._retries = 0
        self.irs = 0
        self._set_state(LISTEN)

    def _drop(self, err: Optional[int]) -> None:
        """Enter CLOSED, freeing buffers; ``err`` becomes the pending error."""
        if err is not None:
            self.error = err
            self._events |= EV_ERROR | EV_READABLE | EV_WRITABLE
            if self._rcvbuf is not None and err != errno.ETIMEDOUT:
                # RFC 9293 3.10.7.4: on RST, queued data is flushed.
                self._rcvbuf = None
        self._t_rexmt = self._t_persist = self._t_delack = self._t_keep = self._t_2msl = None
        self._sndbuf = None
        if self._rcvbuf is not None and not self._rcvbuf:
            self._rcvbuf = None
        self._ooo = None
        self._ack_now = False
        self._set_state(CLOSED)
        self._events |= EV_READABLE | EV_WRITABLE

    def _count(self, name: str, n: int = 1) -> None:
        count(self.counters, name, n)

    def _flush(self) -> None:
        ev = self._events
        if ev:
            self._events = 0
            cb = self.on_event
            if cb is not None:
                cb(self, ev)

    def accepts_new_syn(self, seg: TcpSegment) -> bool:
        """Whether a SYN arriving for this TIME_WAIT connection may open a new one
        (RFC 9293 3.10.7.4 note / RFC 6191 2): its timestamp is newer than the last
        one seen, or without timestamps its sequence number is beyond RCV.NXT.
        The stack then drops this TCB and hands the SYN to the listener."""
        if self.state != TIME_WAIT or not seg.flags & SYN or seg.flags & (ACK | RST):
            return False
        if self._ts_ok and seg.ts_val is not None:
            d = (seg.ts_val - self.ts_recent) & MASK
            return 0 < d < HALF
        d = (seg.seq - self.rcv_nxt) & MASK
        return 0 < d < HALF

    def __repr__(self) -> str:
        return (f"<TcpConnection {STATE_NAMES[self.state]} snd_una={self.snd_una} "
                f"snd_nxt={self.snd_nxt} rcv_nxt={self.rcv_nxt}>")



def _discard(desc: Tuple[Any, ...]) -> None:
    """The output of a connection given none: segments go nowhere."""


def parse_segment(data: Any, counters: Dict[str, int]) -> Optional[TcpSegment]:
    """Parse a TCP segment (checksum already checked), or count
    ``tcp.bad_segment.<reason>`` in ``counters`` and return None."""
    try:
        return parse_tcp(data)
    except TcpRejected as e:
        name = "tcp.bad_segment." + e.reason
        count(counters, name)
        return None
