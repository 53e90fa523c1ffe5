# mypy: disable-error-code="attr-defined"
"""ACK processing and congestion control of a TCP connection (RFC 9293 3.10.7.4
"fifth", RFC 5681, RFC 6582, RFC 3042, RFC 6675, RFC 6298).

A mixin of :class:`fastproto.proto.tcp.TcpConnection` (which owns the slots).
"""
from __future__ import annotations

from typing import Optional

from fastproto.proto.tcp_sack import SackScoreboard
from fastproto.proto.tcp_states import (
    CLOSING, DUPTHRESH, EV_WRITABLE, FIN_WAIT_1, FIN_WAIT_2, HALF, LAST_ACK, MASK, TcpFields,
)
from fastproto.wire.tcp import FIN, SYN, TcpSegment


class TcpAck(TcpFields):
    """What an acceptable ACK does: window update, freed data, RTT, congestion window, loss recovery."""

    __slots__ = ()

    def _process_ack(self, seg: TcpSegment, seq: int, ack: int, plen: int, flags: int,
                     now: float) -> bool:
        """RFC 9293 3.10.7.4 "fifth" for the synchronized states; False when the segment is dropped."""
        una = self.snd_una
        acked = (ack - una) & MASK
        outstanding = (self.snd_max - una) & MASK
        if acked >= HALF:
            # An old ACK: ignored when within MAX.SND.WND, else dropped and ACKed (RFC 5961 5.2).
            if (una - ack) & MASK > self.max_snd_wnd:
                self._count("tcp.ack_too_old")
                self._challenge_ack(now)
                return False
            return True
        if acked > outstanding:
            # RFC 9293 3.10.7.4 / RFC 5961 5.2: an ACK of data never sent.
            self._count("tcp.ack_unsent")
            self._challenge_ack(now)
            return False
        if seg.sack_blocks and self._sack_ok and outstanding:
            # RFC 2018 / RFC 6675: remember what the peer holds above SND.UNA.
            sb = self._sackboard
            if sb is None:
                sb = self._sackboard = SackScoreboard(una)
                if self._in_recovery:
                    sb.rexmit_hi = (una + self.snd_mss) & MASK   # SND.UNA's segment went already
            if sb.update(una, self.snd_max, seg.sack_blocks):
                self._count("tcp.sack_blocks_invalid")
        wnd = seg.window << self._snd_wscale
        # RFC 5681 2: the definition of a duplicate ACK.
        # Answers to zero-window probes are not loss signals: no dupacks while persisting.
        if (acked == 0 and plen == 0 and not flags & (SYN | FIN) and outstanding
                and wnd == self.snd_wnd and wnd and self._t_persist is None):
            self._on_dupack(now)
        # Window update (RFC 9293 3.10.7.4, SND.WL1/SND.WL2 rule).
        wl1d = (seq - self.snd_wl1) & MASK
        if (wl1d and wl1d < HALF) or (wl1d == 0 and ((ack - self.snd_wl2) & MASK) < HALF):
            if wnd != self.snd_wnd:
                self.snd_wnd = wnd
                if wnd > self.max_snd_wnd:
                    self.max_snd_wnd = wnd
                if wnd and self._t_persist is not None:
                    self._t_persist = None
                    self._persist_shift = 0
                    # The window opened: the probe octet goes again with what follows it.
                    self.snd_nxt = self.snd_una
            self.snd_wl1 = seq
            self.snd_wl2 = ack
        if acked:
            fin_acked = self._ack_advance(ack, acked, seg.ts_ecr, now)
            if fin_acked:
                st = self.state
                if st == FIN_WAIT_1:
                    self._set_state(FIN_WAIT_2)
                    self._t_rexmt = None
                    if self._orphan:
                        self._t_2msl = now + self.config.fin_wait2_timeout
                elif st == CLOSING:
                    self._enter_time_wait(now)
                elif st == LAST_ACK:
                    self._drop(None)
                    return False
        return True

    def _ack_advance(self, ack: int, acked: int, ts_ecr: Optional[int], now: float) -> bool:
        """SND.UNA moves to ``ack``: free the acknowledged bytes, take an RTT sample, grow the
        congestion window; True when our FIN is now acknowledged."""
        buf = self._sndbuf
        blen = len(buf) if buf is not None else 0
        # RTT sample: timestamps (RFC 7323 4.1) or the timed segment (RFC 6298 3, Karn).
        if self._ts_ok and ts_ecr:
            # One sample a round trip (RFC 6298 3 asks for at least that much): the ACK
            # that passes the end of the data sent at the previous sample.
            rs = self._rtt_seq
            if rs is None or ((ack - rs) & MASK) < HALF:
                # (our timestamp clock, _ts_now, inline: once per round trip)
                r = (int(now * 1000.0) + self._ts_offset - ts_ecr) & MASK
                if r < HALF:
                    self._rtt_update(r / 1000.0)
                self._rtt_seq = self.snd_max
        elif self._rtt_seq is not None and ((ack - self._rtt_seq) & MASK) < HALF:
            self._rtt_update(now - self._rtt_time)
            self._rtt_seq = None
        if blen and acked:
            # (buf is not None: blen counts its bytes; views of them stay intact)
            buf.drop(acked if acked <= blen else blen)   # type: ignore[union-attr]
            if blen >= self.config.sndbuf:
                self._events |= EV_WRITABLE     # a writer may be waiting for room
        mss = self.snd_mss
        if self._in_recovery:
            if ((ack - self._recover) & MASK) < HALF:
                # RFC 6582 3.2 step 3: full acknowledgment ends fast recovery.
                self._in_recovery = False
                self._sackboard = None
                flight = (self.snd_max - ack) & MASK
                self.cwnd = min(self.ssthresh, max(flight, mss) + mss)
            else:
                # RFC 6582 3.2 step 4: partial acknowledgment: retransmit the next hole,
                # deflate by the amount acked, re-inflate by one SMSS.
                self.snd_una = ack
                sb = self._sackboard
                ahead = (sb.rexmit_hi - ack) & MASK if sb is not None else 0
                if sb is not None and 0 < ahead < HALF:
                    # With SACK, a hole already retransmitted in this recovery is left
                    # to the timer; the next unretransmitted one goes (RFC 6675 5).
                    self._sack_retransmit(now)
                else:
                    self._retransmit_first(now)
                    if sb is not None:
                        sb.rexmit_hi = (ack + self.snd_mss) & MASK
                self.cwnd = max(self.cwnd - acked + (mss if acked >= mss else 0), mss)
        else:
            cwnd = self.cwnd
            if cwnd < self.ssthresh:
                # RFC 5681 3.1 eq. 2 with appropriate byte counting (RFC 3465 2.2,
                # L = 2): an ACK for a coalesced run or a delayed ACK covers several
                # segments, and slow start should not slow down for it.  ACKs
                # folded into this one (acks_folded) count as the ACKs they were.
                limit = 2 * mss * (1 + self._ack_credit)
                self.cwnd = cwnd + (acked if acked < limit else limit)
            else:
                # RFC 5681 3.1 eq. 3, counting bytes (RFC 3465 2.1): about one SMSS
                # per window acknowledged, however few ACKs that took.
                inc = mss * (acked if acked < cwnd else cwnd) // cwnd
                self.cwnd = cwnd + (inc if inc > 1 else 1)
        self._dupacks = 0
        self._lt_sent = 0
        self._ack_credit = 0
        self.snd_una = ack
        if ((self.snd_nxt - ack) & MASK) >= HALF:
            self.snd_nxt = ack
        if self._retries:
            self._retries = 0
            if self.srtt is not None:
                self.rto = self._rto_from_srtt()
        if ack == self.snd_max:
            self._t_rexmt = None                 # RFC 6298 5.2
        elif self._t_persist is None:
            self._t_rexmt = now + self.rto       # RFC 6298 5.3
        return acked > blen

    def acks_folded(self, k: int) -> None:
        """``k`` pure ACKs of the batch being input were folded into the ACKs
        after them (ACK coalescing, fastproto._core.gro.fold_acks): the next
        one that advances SND.UNA also counts for them in slow start."""
        self._ack_credit += k

    def _on_dupack(self, now: float) -> None:
        """A duplicate ACK: fast retransmit / NewReno fast recovery (RFC 5681 3.2, RFC 6582 3.2)."""
        self._dupacks += 1
        self._count("tcp.dup_acks")
        mss = self.snd_mss
        if self._in_recovery:
            self.cwnd += mss     # RFC 6582 3.2 step 3 (RFC 5681 step 4): inflate
            self._sack_retransmit(now)
            return
        if self._dupacks < DUPTHRESH:
            # RFC 3042 Limited Transmit: each of the first two duplicate ACKs lets one new
            # segment out (outstanding data up to cwnd + 2*SMSS), so a small window still
            # gathers the three duplicates fast retransmit needs instead of timing out.
            extra = self._dupacks * mss
            before = self.snd_max
            self.cwnd += extra
            self._output(now)
            self.cwnd -= extra
            self._lt_sent += (self.snd_max - before) & MASK
            return
        if self._dupacks != DUPTHRESH:
            return
        # RFC 6582 3.2 step 2: only when the ACK covers more than "recover".
        if ((self.snd_una - self._recover) & MASK) >= HALF:
            self._count("tcp.fast_retransmit_suppressed")
            return
        # RFC 5681 3.2 step 2: FlightSize without what Limited Transmit sent.
        flight = ((self.snd_max - self.snd_una) & MASK) - self._lt_sent
        self.ssthresh = max(flight // 2, 2 * mss)
        self._recover = self.snd_max
        self._in_recovery = True
        self._count("tcp.fast_retransmits")
        self._rtt_seq = None
        self._retransmit_first(now)
        if self._sackboard is not None:
            self._sackboard.rexmit_hi = (self.snd_una + self.snd_mss) & MASK
        self.cwnd = self.ssthresh + 3 * mss

    def _sack_retransmit(self, now: float) -> None:
        """In fast recovery, each duplicate ACK (one segment left the network) lets
        the next hole the peer's SACK blocks reveal be retransmitted (RFC 6675 5, NextSeg rule 1)."""
        sb = self._sackboard
        buf = self._sndbuf
        if sb is None or buf is None:
            return
        una = self.snd_una
        hole = sb.next_hole(una, self.snd_mss)
        if hole is None:
            return
        off, n = hole
        n = min(n, len(buf) - off)
        if n <= 0:
            return
        self._count("tcp.sack_retransmits")
        self._send_data((una + off) & MASK, off, n, now, advance=False)
        sb.rexmit_hi = (una + off + n) & MASK
