"""TCP states, event bits, and the sequence-space constants shared by the engine's modules."""
from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Tuple

from fastproto.wire.tcp import ACK, FIN, RST, SYN, URG

if TYPE_CHECKING:
    from fastproto._core.sockbuf import SendBuf, SockBuf
    from fastproto.proto.tcp_reassembly import OutOfOrderQueue
    from fastproto.proto.tcp_sack import SackScoreboard
    from fastproto.proto.tcp_timers import TcpConfig

MASK = 0xFFFFFFFF
HALF = 0x80000000

# RFC 9293 3.3.2: the eleven states.
(CLOSED, LISTEN, SYN_SENT, SYN_RECEIVED, ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, CLOSE_WAIT,
 CLOSING, LAST_ACK, TIME_WAIT) = range(11)
STATE_NAMES = ("CLOSED", "LISTEN", "SYN_SENT", "SYN_RECEIVED", "ESTABLISHED", "FIN_WAIT_1",
               "FIN_WAIT_2", "CLOSE_WAIT", "CLOSING", "LAST_ACK", "TIME_WAIT")

# on_event mask bits
EV_READABLE = 1
EV_WRITABLE = 2
EV_STATE = 4
EV_ERROR = 8

SHUT_RD, SHUT_WR, SHUT_RDWR = 0, 1, 2

#: errno -> the exception the socket layer raises for it
ERROR_EXCEPTIONS = {
    errno.ECONNRESET: ConnectionResetError,
    errno.ECONNREFUSED: ConnectionRefusedError,
    errno.EPIPE: BrokenPipeError,
    errno.ETIMEDOUT: TimeoutError,
}

# States in which our side may still send data or a FIN (RFC 9293 3.10.7.4 "seventh").
SENDING = frozenset((ESTABLISHED, CLOSE_WAIT, FIN_WAIT_1, CLOSING, LAST_ACK))
RECEIVING = frozenset((ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2))
NO_TEXT_FLAGS = SYN | FIN | RST | URG | ACK   # header prediction: only ACK (and PSH) set
DUPTHRESH = 3   # RFC 5681 3.2


class TcpFields:
    """The transmission control block's fields (RFC 9293 3.3.1 names where it has them).

    Plain slot attributes: the hot ones (``state``, ``rcv_nxt``, ``rcv_wnd``,
    ``snd_una``, ``snd_nxt``, ``snd_wnd``) are read and written directly.
    ``snd_max`` is the highest sequence number sent (SND.NXT of RFC 9293 when
    no retransmission is under way); ``snd_nxt`` moves back to ``snd_una`` after
    a retransmission timeout.
    """

    __slots__ = (
        # hot fields (RFC 9293 3.3.1 names), plain attributes
        "state", "rcv_nxt", "rcv_wnd", "snd_una", "snd_nxt", "snd_wnd",
        "snd_max", "snd_wl1", "snd_wl2", "iss", "irs", "max_snd_wnd",
        "config", "clock", "output", "on_event", "counters", "local", "remote",
        "error", "nodelay", "keepalive", "snd_mss", "rcv_mss",
        "_snd_wscale", "_rcv_wscale", "_ws_ok", "_ts_ok", "ts_recent", "_ts_offset", "_sack_ok",
        "_passive", "_sndbuf", "_fin_queued", "_wr_shut", "_rd_shut", "_orphan",
        "_rcvbuf", "_ooo", "_fin_rcvd", "_ooo_fin", "_unacked_bytes", "_ack_now",
        "_last_ack_sent", "srtt", "rttvar", "rto", "_retries", "_rtt_seq", "_rtt_time",
        "cwnd", "ssthresh", "_dupacks", "_recover", "_in_recovery", "_sackboard", "_lt_sent",
        "_ack_credit", "_quickack",
        "_t_rexmt", "_t_persist", "_t_delack", "_t_keep", "_t_2msl",
        "_persist_shift", "_keep_probes", "_last_rcv", "_events",
        # () -> (ack, right window edge) of the last ACK sent for us by the
        # core's demux, or None (see docs/tcp.md, "Immediate ACKs from the demux")
        "core_acked",
    )

    state: int
    rcv_nxt: int
    rcv_wnd: int
    snd_una: int
    snd_nxt: int
    snd_wnd: int
    snd_max: int
    snd_wl1: int
    snd_wl2: int
    iss: int
    irs: int
    max_snd_wnd: int
    config: TcpConfig
    clock: Callable[[], float]
    output: Callable[[Tuple[Any, ...]], Any]
    on_event: Optional[Callable[[Any, int], Any]]
    counters: Dict[str, int]
    local: Optional[Tuple[str, int]]
    remote: Optional[Tuple[str, int]]
    error: Optional[int]
    nodelay: bool
    keepalive: bool
    snd_mss: int
    rcv_mss: int
    _snd_wscale: int
    _rcv_wscale: int
    _ws_ok: bool
    _ts_ok: bool
    ts_recent: int
    _ts_offset: int
    _sack_ok: bool
    _passive: bool
    _sndbuf: Optional[SendBuf]
    _fin_queued: bool
    _wr_shut: bool
    _rd_shut: bool
    _orphan: bool
    _rcvbuf: Optional[SockBuf]
    _ooo: Optional[OutOfOrderQueue]
    _fin_rcvd: bool
    _ooo_fin: Optional[int]
    _unacked_bytes: int
    _ack_now: bool
    _last_ack_sent: int
    core_acked: Any
    srtt: Optional[float]
    rttvar: float
    rto: float
    _retries: int
    _rtt_seq: Optional[int]
    _rtt_time: float
    cwnd: int
    ssthresh: int
    _dupacks: int
    _recover: int
    _in_recovery: bool
    _sackboard: Optional[SackScoreboard]
    _lt_sent: int
    _t_rexmt: Optional[float]
    _t_persist: Optional[float]
    _t_delack: Optional[float]
    _t_keep: Optional[float]
    _t_2msl: Optional[float]
    _persist_shift: int
    _keep_probes: int
    _last_rcv: float
    _events: int
