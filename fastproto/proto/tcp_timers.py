# mypy: disable-error-code="attr-defined"
"""TCP configuration, round-trip estimation and the RFC 5961 challenge-ACK limit.

Kept apart from the connection engine (``fastproto.proto.tcp``) because they
hold no per-segment logic: values computed once per connection or once per
RTT sample.
"""
from __future__ import annotations

import errno
from typing import Dict, Optional

# Connections of different sockets share counter dicts
# (``TcpConfig.counters``), each running under its own socket's lock in
# whichever thread: ``count`` adds in one compiled call, atomic under the GIL,
# so no increment is lost and none takes a lock (fastproto._core.counters).
from fastproto._core.counters import count  # noqa: F401  (the TCP modules' count)
from fastproto.proto.tcp_states import (
    TcpFields,
    CLOSE_WAIT, ESTABLISHED, FIN_WAIT_2, MASK, SENDING, SYN_RECEIVED, SYN_SENT, TIME_WAIT,
)
from fastproto.wire.tcp import ACK, FIN

#: RFC 9293 3.7.1: the MSS assumed when the peer sends no MSS option
DEFAULT_MSS_IPV4 = 536
DEFAULT_MSS_IPV6 = 1220
#: RFC 6298 4: the clock granularity G the RTO formula adds at least
CLOCK_GRANULARITY = 0.001

class ChallengeAckLimit:
    """At most ``per_second`` challenge ACKs a second, shared by every connection
    of a stack (RFC 5961 7: a system-wide limit stops them being used as an
    amplifier).  Times are passed in (seconds)."""

    __slots__ = ("per_second", "_window_start", "_sent")

    def __init__(self, per_second: int = 1000) -> None:
        self.per_second = per_second
        self._window_start = float("-inf")
        self._sent = 0

    def allow(self, now: float) -> bool:
        """True when one more challenge ACK may go out at time ``now``."""
        if now - self._window_start >= 1.0 or now < self._window_start:
            self._window_start = now
            self._sent = 0
        if self._sent >= self.per_second:
            return False
        self._sent += 1
        return True


class TcpConfig:
    """Settings shared by the connections of a stack (times in seconds, sizes in bytes).

    ``counters`` is the dict every connection using this config counts into
    (netstat-style names such as ``tcp.retransmits``); the stack sums it into
    its ``stats()``.
    """

    __slots__ = ("mtu", "ipv6", "rcvbuf", "sndbuf", "window_scaling", "timestamps", "sack",
                 "time_wait", "fin_wait2_timeout", "delack", "rto_initial", "rto_min", "rto_max", "max_retries",
                 "syn_retries", "persist_min", "persist_max", "keepalive", "keep_idle",
                 "keep_intvl", "keep_cnt", "nodelay", "initial_window", "ooo_max_blocks",
                 "challenge_limit", "tso", "gro", "core_ack", "core_ack_bytes", "counters")

    #: bytes of a receive or send buffer unless told otherwise
    DEFAULT_BUF = 262144

    def __init__(self, mtu: int = 1500, ipv6: bool = False, rcvbuf: int = DEFAULT_BUF,
                 sndbuf: int = DEFAULT_BUF, window_scaling: bool = True, timestamps: bool = True,
                 sack: bool = True, time_wait: float = 60.0, fin_wait2_timeout: float = 60.0,
                 delack: float = 0.040,
                 rto_initial: float = 1.0, rto_min: float = 1.0, rto_max: float = 60.0,
                 max_retries: int = 15, syn_retries: int = 6, persist_min: float = 1.0,
                 persist_max: float = 60.0, keepalive: bool = False, keep_idle: float = 7200.0,
                 keep_intvl: float = 75.0, keep_cnt: int = 9, nodelay: bool = False,
                 initial_window: Optional[int] = None, ooo_max_blocks: int = 256,
                 challenge_acks_per_second: int = 1000, tso: int = 0, gro: bool = True,
                 core_ack: bool = False, core_ack_bytes: int = 0,
                 counters: Optional[Dict[str, int]] = None) -> None:
        if rcvbuf < 1 or sndbuf < 1 or mtu < 68:
            raise ValueError("rcvbuf and sndbuf must be positive and mtu at least 68")
        if not 0 <= tso <= 65536:
            raise ValueError(f"tso is 0 (off) or the bytes of one send up to 65536, not {tso}")
        self.mtu = mtu
        self.ipv6 = ipv6
        self.rcvbuf = rcvbuf
        self.sndbuf = sndbuf
        self.window_scaling = window_scaling
        self.timestamps = timestamps
        self.sack = sack
        self.time_wait = time_wait          # 2*MSL (RFC 9293 3.4.2), seconds
        # A closed socket's connection waits this long in FIN_WAIT_2 for the peer's FIN;
        # RFC 9293 sets no limit, but nobody can read or close it any more.
        self.fin_wait2_timeout = fin_wait2_timeout
        self.delack = delack                # RFC 9293 3.8.6.3: under 0.5 s
        self.rto_initial = rto_initial      # RFC 6298 2.1
        self.rto_min = rto_min              # RFC 6298 2.4
        self.rto_max = rto_max              # RFC 6298 2.5
        self.max_retries = max_retries      # RFC 9293 3.8.3 R2, data
        self.syn_retries = syn_retries      # RFC 9293 3.8.3 R2 for SYN
        self.persist_min = persist_min
        self.persist_max = persist_max
        self.keepalive = keepalive          # RFC 9293 3.8.4: off unless asked for
        self.keep_idle = keep_idle          # RFC 9293 3.8.4: no less than two hours by default
        self.keep_intvl = keep_intvl
        self.keep_cnt = keep_cnt
        self.nodelay = nodelay
        self.initial_window = initial_window
        self.ooo_max_blocks = ooo_max_blocks
        self.challenge_limit = ChallengeAckLimit(challenge_acks_per_second)
        # Segmentation offload: data goes out in output descriptors of up to
        # this many bytes (whole MSS-sized segments), which the IP layer cuts
        # into segments; 0: one descriptor per segment.
        self.tso = tso
        # Receive coalescing: a socket hands its connection runs of in-order
        # segments as one (fastproto._core.gro); False: segment by segment.
        self.gro = gro
        # Immediate ACKs from the core's demux for in-sequence data, where a
        # stack runs the connection (docs/tcp.md: off by default, as bulk
        # transfers between two stacks in one process measured slower with
        # them); the engine alone ignores it.
        self.core_ack = core_ack
        # The demux ACKs once this many octets are unacknowledged (0: two
        # full-sized segments, RFC 9293 3.8.6.3), and what is left of each
        # receive batch at its end.
        if not 0 <= core_ack_bytes <= 0xFFFFFFFF:
            raise ValueError(f"core_ack_bytes must be in 0..2**32-1, not {core_ack_bytes}")
        self.core_ack_bytes = core_ack_bytes
        self.counters: Dict[str, int] = {} if counters is None else counters

    @property
    def mss(self) -> int:
        """The MSS we announce: the MTU less the IP and TCP fixed headers (RFC 9293 3.7.1)."""
        return self.mtu - (60 if self.ipv6 else 40)

    @property
    def default_peer_mss(self) -> int:
        """The send MSS when the peer sent no MSS option (RFC 9293 3.7.1)."""
        return DEFAULT_MSS_IPV6 if self.ipv6 else DEFAULT_MSS_IPV4

    @property
    def rcv_wscale(self) -> int:
        """Our window shift: the smallest that lets the whole receive buffer be offered (RFC 7323 2.3)."""
        if not self.window_scaling:
            return 0
        shift = 0
        while (self.rcvbuf >> shift) > 0xFFFF and shift < 14:
            shift += 1
        return shift


def initial_cwnd(smss: int, segments: Optional[int] = None) -> int:
    """The initial congestion window (RFC 5681 3.1, or ``segments`` * SMSS when given)."""
    if segments is not None:
        return segments * smss
    if smss > 2190:
        return 2 * smss
    if smss > 1095:
        return 3 * smss
    return 4 * smss


class TcpTimers(TcpFields):
    """The timers of a TCP connection (retransmission, persist, keep-alive, delayed ACK,
    TIME_WAIT) and RTT estimation: a mixin of :class:`fastproto.proto.tcp.TcpConnection`."""

    __slots__ = ()

    def next_timeout(self) -> Optional[float]:
        """The absolute time (clock units) of the next timer, or None."""
        # Unrolled: this runs after every call into the connection.
        best = self._t_rexmt
        t = self._t_persist
        if t is not None and (best is None or t < best):
            best = t
        t = self._t_delack
        if t is not None and (best is None or t < best):
            best = t
        t = self._t_keep
        if t is not None and (best is None or t < best):
            best = t
        t = self._t_2msl
        if t is not None and (best is None or t < best):
            best = t
        return best

    def on_timer(self, now: Optional[float] = None) -> None:
        """Run every timer whose time is at or before ``now``."""
        if now is None:
            now = self.clock()
        if self._t_2msl is not None and now >= self._t_2msl:
            # RFC 9293 3.10.8: the time-wait timeout deletes the TCB.
            self._t_2msl = None
            self._count("tcp.time_wait_expired" if self.state == TIME_WAIT else
                        "tcp.fin_wait2_expired")
            self._drop(None)
        if self._t_delack is not None and now >= self._t_delack:
            self._t_delack = None
            if self.core_acked is None or not self._core_covered():
                self._count("tcp.delayed_acks")
                self._send_ack(now)
        if self._t_rexmt is not None and now >= self._t_rexmt:
            self._t_rexmt = None
            self._on_rexmt(now)
        if self._t_persist is not None and now >= self._t_persist:
            self._t_persist = None
            self._on_persist(now)
        if self._t_keep is not None and now >= self._t_keep:
            self._t_keep = None
            self._on_keepalive(now)
        self._flush()

    def _on_rexmt(self, now: float) -> None:
        """Retransmission timeout (RFC 6298 5.4-5.7, RFC 5681 3.1, RFC 9293 3.8.3)."""
        st = self.state
        if st not in SENDING and st not in (SYN_SENT, SYN_RECEIVED):
            return
        self._retries += 1
        limit = self.config.syn_retries if st in (SYN_SENT, SYN_RECEIVED) else self.config.max_retries
        if self._retries > limit:
            self._count("tcp.timeouts")
            self._drop(errno.ETIMEDOUT)
            return
        self._count("tcp.retransmits")
        self.rto = min(self.rto * 2, self.config.rto_max)     # RFC 6298 5.5
        self._rtt_seq = None                                   # Karn: no sample from a retransmission
        if st == SYN_SENT:
            self._send_syn(0, now)
            return
        if st == SYN_RECEIVED:
            self._send_syn(ACK, now)
            return
        if self._retries == 1:
            # RFC 5681 3.1 eq. 4, and a loss window of one segment.
            flight = (self.snd_max - self.snd_una) & MASK
            self.ssthresh = max(flight // 2, 2 * self.snd_mss)
        self.cwnd = self.snd_mss
        self._recover = self.snd_max      # RFC 6582 4.2: no fast recovery for this loss
        self._in_recovery = False
        self._sackboard = None            # go back N: everything unacknowledged is resent
        self._dupacks = 0
        self._lt_sent = 0
        self.snd_nxt = self.snd_una       # go back N
        self._t_rexmt = now + self.rto
        self._output(now)

    def _on_persist(self, now: float) -> None:
        """Zero-window probe: one byte beyond the window, or the FIN (RFC 9293 3.8.6.1)."""
        if self.state not in SENDING:
            return
        buf = self._sndbuf
        blen = len(buf) if buf is not None else 0
        una = self.snd_una
        off = (self.snd_nxt - una) & MASK
        if off == 0 and self.snd_max == una and blen and self.snd_wnd > 0:
            # Not a closed window but one too small for sender SWS avoidance: the
            # override timeout sends what fits (RFC 9293 3.8.6.2.1); from here the
            # retransmission timer guards it.
            self._count("tcp.sws_override")
            self._persist_shift = 0
            n = min(blen, self.snd_wnd, self.cwnd, self.snd_mss)
            self._send_data(una, 0, n, now)
            return
        self._count("tcp.persist_probes")
        if off > 0 or self.snd_max != una:
            # An earlier probe is still unacknowledged: send the same octet (or FIN) again.
            if blen:
                self._send_data(una, 0, 1, now)
            else:
                self._emit(una, self.rcv_nxt, ACK | FIN, self._wnd_field(), self._opts(now), b"")
        elif blen:
            self._send_data(una, 0, 1, now)
        elif self._fin_queued:
            self._emit(una, self.rcv_nxt, ACK | FIN, self._wnd_field(), self._opts(now), b"")
            self._advance_nxt(1)
        self._persist_shift = min(self._persist_shift + 1, 16)
        self._t_rexmt = None     # the probe is not retransmitted by the RTO: persist never gives up
        self._arm_persist(now)

    def _on_keepalive(self, now: float) -> None:
        """Keep-alive (RFC 9293 3.8.4, RFC 1122 4.2.3.6): probe <SEQ=SND.UNA-1> after idle time."""
        if not self.keepalive or self.state not in (ESTABLISHED, CLOSE_WAIT, FIN_WAIT_2):
            return
        cfg = self.config
        idle = now - self._last_rcv
        if self._keep_probes == 0 and idle < cfg.keep_idle:
            self._t_keep = self._last_rcv + cfg.keep_idle
            return
        if self._keep_probes >= cfg.keep_cnt:
            self._count("tcp.keepalive_timeouts")
            self._drop(errno.ETIMEDOUT)
            return
        self._keep_probes += 1
        self._count("tcp.keepalive_probes")
        self._emit((self.snd_una - 1) & MASK, self.rcv_nxt, ACK, self._wnd_field(), self._opts(now), b"")
        self._t_keep = now + cfg.keep_intvl


    def _rtt_update(self, r: float) -> None:
        """RFC 6298 2.2/2.3."""
        if r < 0:
            return
        srtt = self.srtt
        if srtt is None:
            srtt = self.srtt = r
            rttvar = self.rttvar = r / 2
        else:
            d = srtt - r
            rttvar = self.rttvar = 0.75 * self.rttvar + 0.25 * (d if d >= 0 else -d)
            srtt = self.srtt = 0.875 * srtt + 0.125 * r
        # _rto_from_srtt, inline: this runs once per round trip
        cfg = self.config
        v = 4 * rttvar
        rto = srtt + (v if v > CLOCK_GRANULARITY else CLOCK_GRANULARITY)
        lo = cfg.rto_min
        if rto < lo:
            rto = lo
        hi = cfg.rto_max
        self.rto = rto if rto < hi else hi

    def _rto_from_srtt(self) -> float:
        cfg = self.config
        rto = self.srtt + max(CLOCK_GRANULARITY, 4 * self.rttvar)   # type: ignore[operator]
        return min(max(rto, cfg.rto_min), cfg.rto_max)

    def _arm_persist(self, now: float) -> None:
        cfg = self.config
        t = min(max(self.rto * (1 << self._persist_shift), cfg.persist_min), cfg.persist_max)
        self._t_persist = now + t

    def _arm_keepalive(self, now: float) -> None:
        if self.keepalive:
            self._t_keep = now + self.config.keep_idle

    def set_keepalive(self, on: bool) -> None:
        """SO_KEEPALIVE."""
        self.keepalive = on
        if on and self.state in (ESTABLISHED, CLOSE_WAIT, FIN_WAIT_2):
            self._arm_keepalive(self.clock())
        elif not on:
            self._t_keep = None

