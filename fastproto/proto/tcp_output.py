# mypy: disable-error-code="attr-defined"
"""Segment output of a TCP connection: what to send and how each segment is laid out.

A mixin of :class:`fastproto.proto.tcp.TcpConnection` (which owns the slots);
kept apart so each file stays readable.  Rules cited per RFC section.
"""
from __future__ import annotations

import struct
from typing import Any

from fastproto.proto.tcp_states import CLOSED, HALF, LISTEN, MASK, SENDING, SYN_SENT, TcpFields
from fastproto.wire.tcp import (ACK, FIN, OPT_NOP, OPT_TIMESTAMPS, PSH, RST, SYN, TcpSegment,
                                tcp_options)

#: NOP NOP TIMESTAMPS (RFC 7323 appendix A layout): ``timestamps_option`` without its call
_TS_OPTION = struct.Struct("!BBBBII")
_ts_option = _TS_OPTION.pack
_ACK_PSH = ACK | PSH


class TcpOutput(TcpFields):
    """Sending: data within the windows, SYNs, ACKs, RSTs, and their options."""

    __slots__ = ()

    def _output(self, now: float) -> None:
        """Send what the windows, Nagle and sender SWS avoidance allow (RFC 9293 3.7.4, 3.8.6.2.1)."""
        if self.state not in SENDING:
            return
        buf = self._sndbuf
        una = self.snd_una
        if self.snd_max != una or self.snd_nxt != una or self._fin_queued:
            self._output_all(now)
            return
        if not buf:
            # Nothing queued, nothing in flight (an ACK just took the last of
            # it): nothing to send and no timer to arm.
            return
        blen = len(buf)
        wnd = self.snd_wnd if self.snd_wnd < self.cwnd else self.cwnd
        if blen > self.snd_mss or blen > wnd or self._t_persist is not None:
            self._output_all(now)
            return
        # Nothing in flight and one segment's worth queued that the windows
        # take (a request or a reply): what _output_all does for it, neither
        # Nagle nor sender SWS avoidance holding back a segment that takes
        # all there is with nothing unacknowledged.
        rcv_nxt = self.rcv_nxt
        wfield = self.rcv_wnd >> self._rcv_wscale
        if wfield > 0xFFFF:
            wfield = 0xFFFF
        if self._rtt_seq is None and not self._ts_ok:
            self._rtt_seq = (una + blen) & MASK          # time this segment (RFC 6298 3)
            self._rtt_time = now
        # (the payload is all of the buffer: a view of it, not a slice)
        self.output((una, rcv_nxt, _ACK_PSH, wfield, self._opts(now), memoryview(buf)))
        self.snd_nxt = self.snd_max = (una + blen) & MASK
        if self._t_rexmt is None:
            self._t_rexmt = now + self.rto              # RFC 6298 5.1
        # The segment carried the ACK: nothing is left to acknowledge.
        self._last_ack_sent = rcv_nxt
        self._ack_now = False
        self._unacked_bytes = 0
        self._t_delack = None

    def _output_all(self, now: float) -> None:
        """:meth:`_output` in general: every segment the windows and rules allow."""
        buf = self._sndbuf
        una = self.snd_una
        blen = len(buf) if buf is not None else 0
        mss = self.snd_mss
        # The most one descriptor carries: whole segments up to the offload size.
        big = self.config.tso // mss * mss
        if big < mss:
            big = mss
        wnd = self.snd_wnd if self.snd_wnd < self.cwnd else self.cwnd
        fin_q = self._fin_queued
        view = None
        opts = b""
        rcv_nxt = self.rcv_nxt
        wfield = 0
        sent = False
        # SND.NXT and SND.MAX in locals (written back as they move): only
        # this loop changes them while it runs.
        nxt = self.snd_nxt
        snd_max = self.snd_max
        output = self.output
        while True:
            off = (nxt - una) & MASK
            if off > blen:
                break                    # the FIN is already sent
            avail = blen - off
            usable = wnd - off
            n = avail if avail < big else big
            if n > usable:
                n = usable if usable > 0 else 0
            if n > mss:
                # Only whole segments in a large send: a short rest follows the
                # rules below on the next round, as it would segment by segment.
                n -= n % mss
            fin = fin_q and off + n == blen and usable > n
            if n == 0 and not fin:
                break
            new_data = nxt == snd_max
            if n < mss and not fin and new_data:
                # New data in a short segment (retransmissions are exempt):
                if n < avail:
                    # window-limited: sender SWS avoidance waits for at least half the
                    # largest window offered (RFC 9293 3.8.6.2.1); persist forces it.
                    if n * 2 < self.max_snd_wnd:
                        break
                elif not self.nodelay and snd_max != una:
                    break                # Nagle: data unacknowledged (RFC 9293 3.7.4)
            if not sent:
                # Options, window and ACK are the same for every segment of this call.
                sent = True
                opts = self._opts(now)
                wfield = self.rcv_wnd >> self._rcv_wscale
                if wfield > 0xFFFF:
                    wfield = 0xFFFF
                if blen:
                    view = memoryview(buf)   # type: ignore[arg-type]
            end = off + n
            if fin:
                flags = ACK | PSH | FIN
            elif end == blen:
                flags = ACK | PSH
            else:
                flags = ACK
            if not new_data:
                self._count("tcp.retransmitted_segments", (n + mss - 1) // mss if n else 1)
            elif self._rtt_seq is None and not self._ts_ok:
                self._rtt_seq = (nxt + n) & MASK          # time this segment (RFC 6298 3)
                self._rtt_time = now
            output((nxt, rcv_nxt, flags, wfield, opts, view[off:end] if n else b""))  # type: ignore[index]
            nxt = self.snd_nxt = (nxt + n + (1 if fin else 0)) & MASK
            if ((nxt - snd_max) & MASK) < HALF:
                self.snd_max = snd_max = nxt
            if self._t_rexmt is None and self._t_persist is None:
                self._t_rexmt = now + self.rto          # RFC 6298 5.1
            if fin:
                break
        if sent:
            # Every segment carried the ACK: nothing is left to acknowledge.
            self._last_ack_sent = rcv_nxt
            self._ack_now = False
            self._unacked_bytes = 0
            self._t_delack = None
        # Data waiting, nothing in flight and the window does not let it go: persist
        # (RFC 9293 3.8.6.1) instead of the retransmission timer.
        if self._t_persist is None:
            una_max = self.snd_max == una
            if (self.snd_nxt == una and (blen or (fin_q and una_max))
                    and (una_max or self.snd_wnd == 0)):
                self._t_rexmt = None
                self._arm_persist(now)
            elif not una_max and self._t_rexmt is None:
                self._t_rexmt = now + self.rto

    def _send_data(self, seq: int, off: int, n: int, now: float, fin: bool = False,
                   advance: bool = True) -> None:
        """Emit bytes [off, off+n) of the send buffer at ``seq`` (plus FIN)."""
        payload = memoryview(self._sndbuf)[off:off + n]   # type: ignore[arg-type]
        flags = ACK | PSH | FIN if fin else (ACK | PSH if off + n == len(self._sndbuf) else ACK)  # type: ignore[arg-type]
        if ((seq - self.snd_max) & MASK) >= HALF:
            self._count("tcp.retransmitted_segments")
        self._emit(seq, self.rcv_nxt, flags, self._wnd_field(), self._opts(now), payload)
        if advance:
            if self._rtt_seq is None and not self._ts_ok and seq == self.snd_max:
                self._rtt_seq = (seq + n) & MASK
                self._rtt_time = now
            self.snd_nxt = seq
            self._advance_nxt(n + (1 if fin else 0))
            if self._t_rexmt is None and self._t_persist is None:
                self._t_rexmt = now + self.rto

    def _advance_nxt(self, n: int) -> None:
        nxt = self.snd_nxt = (self.snd_nxt + n) & MASK
        if ((nxt - self.snd_max) & MASK) < HALF:
            self.snd_max = nxt

    def _send_syn(self, ack_flag: int, now: float) -> None:
        """Our SYN (or SYN,ACK) with the options we offer (RFC 9293 3.7.1, RFC 7323, RFC 2018)."""
        cfg = self.config
        if ack_flag:
            # Answering a SYN: offer only what the peer offered.
            wscale = self._rcv_wscale if self._ws_ok else None
            ts = (self._ts_now(now), self.ts_recent) if self._ts_ok else None
            sack = self._sack_ok
        else:
            wscale = self._rcv_wscale if cfg.window_scaling else None
            ts = (self._ts_now(now), 0) if cfg.timestamps else None
            sack = cfg.sack
        opts = tcp_options(mss=cfg.mss, wscale=wscale, sack_permitted=sack, ts=ts)
        self._emit(self.iss, self.rcv_nxt if ack_flag else 0, SYN | ack_flag,
                   min(self.rcv_wnd, 0xFFFF), opts, b"")
        self.snd_nxt = (self.iss + 1) & MASK
        if ((self.snd_nxt - self.snd_max) & MASK) < HALF:
            self.snd_max = self.snd_nxt
        if self._retries == 0 and not cfg.timestamps:
            self._rtt_seq = self.snd_nxt
            self._rtt_time = now
        self._t_rexmt = now + self.rto

    def _rtt_sample_syn(self, seg: TcpSegment, now: float) -> None:
        if self._ts_ok and seg.ts_ecr:
            r = (self._ts_now(now) - seg.ts_ecr) & MASK
            if r < HALF and self._retries == 0:
                self._rtt_update(r / 1000.0)
        elif self._rtt_seq is not None:
            self._rtt_update(now - self._rtt_time)
        self._rtt_seq = None

    def _send_ack(self, now: float) -> None:
        """A pure ACK <SEQ=SND.NXT><ACK=RCV.NXT> (clears any delayed ACK)."""
        if self.state in (CLOSED, LISTEN, SYN_SENT):
            self._ack_now = False
            return
        # While retransmitting (SND.NXT < SND.MAX) a segment without text still carries the
        # next new sequence number: an older one would be outside the peer's window.
        self._emit(self.snd_max, self.rcv_nxt, ACK, self._wnd_field(), self._opts(now), b"")

    def _core_covered(self) -> bool:
        """Whether the core's demux already sent an ACK at least as new as the
        one due for in-order data, offering the same window edge or more: ours
        would then be a duplicate ACK (RFC 5681 2, same number and window),
        which the peer counts toward a fast retransmit.  If so the pending
        ACK is cleared and counted (``tcp.acks_covered_by_core``).  Replies to
        old or out-of-window segments never ask: the peer may have lost the
        core's ACK."""
        got = self.core_acked()  # type: ignore[misc]
        if got is None:
            return False
        ack, edge = got
        nxt = self.rcv_nxt
        if ((ack - nxt) & MASK) >= HALF or ((edge - nxt - self.rcv_wnd) & MASK) >= HALF:
            return False
        self._count("tcp.acks_covered_by_core")
        self._unacked_bytes = 0
        self._t_delack = None
        return True

    def _challenge_ack(self, now: float) -> None:
        """RFC 5961 3.2 / 4.2 / 5.2: an ACK so a genuine peer can resynchronise, rate-limited (RFC 5961 7)."""
        if self.config.challenge_limit.allow(now):
            self._count("tcp.challenge_acks")
            self._send_ack(now)
        else:
            self._count("tcp.challenge_acks_limited")

    def _emit(self, seq: int, ack: int, flags: int, window: int, options: bytes, payload: Any) -> None:
        if flags & ACK:
            self._last_ack_sent = ack
            self._ack_now = False
            self._unacked_bytes = 0
            self._t_delack = None
        self.output((seq, ack, flags, window, options, payload))

    def _opts(self, now: float) -> bytes:
        """Options of a non-SYN segment: timestamps (RFC 7323 3.2), SACK blocks (RFC 2018 4)."""
        ooo = self._ooo
        if self._ts_ok:
            # (_ts_now and timestamps_option inline: every segment carries it)
            ts = _ts_option(OPT_NOP, OPT_NOP, OPT_TIMESTAMPS, 10,
                            (int(now * 1000.0) + self._ts_offset) & MASK, self.ts_recent)
            if ooo is None or not self._sack_ok:
                return ts
            return ts + tcp_options(sack_blocks=ooo.sack_blocks(3))
        if ooo is not None and self._sack_ok:
            return tcp_options(sack_blocks=ooo.sack_blocks(4))
        return b""

    def _wnd_field(self) -> int:
        w = self.rcv_wnd >> self._rcv_wscale
        return w if w < 0xFFFF else 0xFFFF

    def _ts_now(self, now: float) -> int:
        return (int(now * 1000.0) + self._ts_offset) & MASK

    def _reset_for(self, seg: TcpSegment) -> None:
        """The RST answering a segment for no connection (RFC 9293 3.10.7.1)."""
        if seg.flags & RST:
            return
        if seg.flags & ACK:
            self._emit(seg.ack, 0, RST, 0, b"", b"")
        else:
            seg_len = len(seg.payload) + (1 if seg.flags & SYN else 0) + (1 if seg.flags & FIN else 0)
            self._emit(0, (seg.seq + seg_len) & MASK, RST | ACK, 0, b"", b"")


    def _retransmit_first(self, now: float) -> None:
        """Send the segment at SND.UNA again, without moving SND.NXT."""
        buf = self._sndbuf
        blen = len(buf) if buf is not None else 0
        una = self.snd_una
        n = min(blen, self.snd_mss)
        if n:
            self._send_data(una, 0, n, now, advance=False)
        elif self._fin_queued:
            self._emit(una, self.rcv_nxt, ACK | FIN, self._wnd_field(), self._opts(now), b"")
        self._t_rexmt = now + self.rto

