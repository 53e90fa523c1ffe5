"""The passive-open side of a listening TCP socket (RFC 9293 3.5, 3.10.7.2;
RFC 4987 for SYN flooding).

A ``Listener`` handles the segments that reach a listening socket and no
connection: a SYN creates a lightweight request (not a connection) in a
bounded SYN queue and is answered with a SYN-ACK, retransmitted with backoff;
the handshake's final ACK completes the request into a ``SynRecord``, from
which the connection engine builds the connection. When the SYN queue is
full, SYN cookies (``SynCookies``) answer without keeping state. The accept
queue (connections completed, not yet accepted) belongs to the socket; the
listener only counts it, to refuse completions beyond ``backlog``.

Nothing here does I/O: segments to send go to ``output(Segment)``, and time
comes from ``clock`` (seconds).
"""
from __future__ import annotations

import heapq
import ipaddress
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

from fastproto.proto.syncookie import COUNTER_PERIOD, MAX_AGE_PERIODS, MAX_WSCALE, SynCookies
from fastproto.proto.tcp_isn import IsnGenerator

FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80

#: RFC 9293 3.7.1: the MSS assumed when a SYN carries no MSS option
DEFAULT_MSS_V4 = 536
DEFAULT_MSS_V6 = 1220     # IPv6 minimum MTU 1280 - 60 (RFC 8200 5)

_COUNTERS = (
    "tcp.syn_recv",                # SYNs that created a request
    "tcp.syn_duplicate",           # SYNs for an existing request (SYN-ACK resent)
    "tcp.syn_data_ignored",        # SYNs carrying data or FIN, the data not queued
    "tcp.synack_sent",             # SYN-ACKs sent for requests (not cookies), retransmissions included
    "tcp.synack_retrans",          # of which retransmissions
    "tcp.syn_recv_expired",        # requests dropped after the last SYN-ACK retransmission
    "tcp.syn_recv_reset",          # requests dropped by the peer's RST
    "tcp.syncookies_sent",
    "tcp.syncookies_ok",
    "tcp.syncookies_failed",
    "tcp.syn_queue_full_drops",    # SYNs dropped: SYN queue full and cookies off
    "tcp.listen_overflows",        # SYNs or final ACKs dropped: accept queue full
    "tcp.listen_drops",            # every connection attempt dropped at the listener
    "tcp.established",             # requests completed into records
    "tcp.rst_sent",
    "tcp.rst_ignored",             # RSTs in LISTEN or not matching a request
    "tcp.listen_bad_ack",          # ACKs acknowledging neither a request's SYN nor a cookie
    "tcp.listen_bad_seq",          # segments for a request outside its receive window
    "tcp.listen_no_flags",         # segments with none of SYN/ACK/RST (RFC 9293 3.10.7.2)
    "tcp.listen_ts_missing",       # final ACKs without the agreed timestamps (RFC 7323 3.2)
    "tcp.listen_not_ours",         # segments for another address or port
    "tcp.listen_bad_address",      # broadcast/multicast/unspecified source or destination, port 0
    "tcp.listen_bad_options",      # options that are not a valid MSS/WS/SACK-permitted/TS
    "tcp.listen_bad_segment",      # header fields out of range
)


class TcpOptions(NamedTuple):
    """The SYN-time options of a segment. ``ts`` is ``(tsval, tsecr)``."""
    mss: int | None = None
    wscale: int | None = None
    sack_permitted: bool = False
    ts: tuple[int, int] | None = None


class Segment(NamedTuple):
    """A segment to send. Addresses are text, ``window`` the 16-bit header field."""
    src_ip: str
    src_port: int
    dst_ip: str
    dst_port: int
    seq: int
    ack: int
    flags: int
    window: int
    options: TcpOptions


@dataclass(slots=True)
class SynRecord:
    """A completed passive open, from which the connection is built.

    ``local``/``remote``: (ip text, port); ``iss``: our ISN; ``irs``: the
    peer's; ``snd_wnd``: the peer's window from the final ACK in bytes (scaled
    by ``snd_wscale``); ``peer_mss``: its MSS option, None when absent;
    ``snd_wscale``/``rcv_wscale``: the peer's and our window shifts, None when
    window scaling was not agreed (both None or both set); ``ts_recent``: the
    peer's last TSval, None without timestamps; ``sack_permitted``: SACK agreed.
    """
    local: tuple[str, int]
    remote: tuple[str, int]
    iss: int
    irs: int
    snd_wnd: int
    peer_mss: int | None
    snd_wscale: int | None
    rcv_wscale: int | None
    ts_recent: int | None
    sack_permitted: bool


@dataclass
class ListenConfig:
    """What the listener offers. ``mss``: our MSS (bytes we can receive);
    ``window``: our receive window in the SYN-ACK (bytes, never scaled there,
    RFC 7323 2.2); ``rcv_wscale``: our shift, offered when the peer offers one;
    ``sack``/``timestamps``: offer them when the peer does; ``synack_rto``:
    the first SYN-ACK retransmission timeout (s, RFC 6298 2.1), doubled
    each time up to ``synack_rto_max``; ``synack_retries``: retransmissions
    before the request is dropped; ``syncookies``: answer with cookies when
    the SYN queue is full (else drop the SYN)."""
    mss: int = 1460
    window: int = 65535
    rcv_wscale: int = 7
    sack: bool = True
    timestamps: bool = True
    synack_rto: float = 1.0
    synack_rto_max: float = 60.0
    synack_retries: int = 5
    syncookies: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.mss <= 0xFFFF or not 0 <= self.window <= 0xFFFF \
                or not 0 <= self.rcv_wscale <= MAX_WSCALE or self.synack_rto <= 0 \
                or self.synack_rto_max < self.synack_rto or self.synack_retries < 0:
            raise ValueError("invalid listener configuration")


class _Request:
    """A half-open connection in the SYN queue (SYN-RECEIVED without a TCB)."""
    __slots__ = ("local_ip", "irs", "iss", "peer_mss", "snd_wscale", "sack_permitted",
                 "ts_recent", "rto", "deadline", "retries")

    def __init__(self, local_ip: str, irs: int, iss: int, peer_mss: int | None,
                 snd_wscale: int | None, sack_permitted: bool, ts_recent: int | None,
                 rto: float, deadline: float) -> None:
        self.local_ip = local_ip
        self.irs = irs
        self.iss = iss
        self.peer_mss = peer_mss
        self.snd_wscale = snd_wscale
        self.sack_permitted = sack_permitted
        self.ts_recent = ts_recent
        self.rto = rto
        self.deadline = deadline
        self.retries = 0


Key = tuple[str, int, str, int]     # (remote ip, remote port, local ip, local port)


IpAddr = ipaddress.IPv4Address | ipaddress.IPv6Address
_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


def _ip(addr: Any) -> IpAddr:
    """An address (text, packed or an ipaddress object) as an ipaddress object;
    an IPv4-mapped IPv6 address becomes IPv4, so both forms name one endpoint."""
    if isinstance(addr, (bytes, bytearray)):
        addr = bytes(addr)
    ip = ipaddress.ip_address(addr)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _unicast(ip: IpAddr) -> bool:
    """Not multicast, broadcast or unspecified (RFC 1122 4.2.3.10)."""
    return not (ip.is_multicast or ip.is_unspecified or ip == _BROADCAST)


def _options(opts: Any) -> TcpOptions:
    """``opts`` (None, a TcpOptions, a mapping or an object with the same
    attribute names, or with ``ts_val``/``ts_ecr`` for the timestamps, as a
    parsed segment has) as a checked TcpOptions; ValueError when invalid."""
    if opts is None:
        return TcpOptions()
    if isinstance(opts, TcpOptions):
        mss, ws, sack, ts = opts
    elif isinstance(opts, Mapping):
        mss, ws, sack, ts = (opts.get("mss"), opts.get("wscale"),
                             opts.get("sack_permitted", False), opts.get("ts"))
    else:
        mss, ws, sack = (getattr(opts, "mss", None), getattr(opts, "wscale", None),
                         getattr(opts, "sack_permitted", False))
        ts = getattr(opts, "ts", None)
        if ts is None and getattr(opts, "ts_val", None) is not None:
            # a parsed segment names the timestamps ts_val / ts_ecr
            ts = (opts.ts_val, getattr(opts, "ts_ecr", None) or 0)
    if mss is not None and not (isinstance(mss, int) and 1 <= mss <= 0xFFFF):
        raise ValueError("mss")
    if ws is not None and not (isinstance(ws, int) and 0 <= ws <= 0xFF):
        raise ValueError("wscale")
    if ts is not None:
        if not (isinstance(ts, (tuple, list)) and len(ts) == 2
                and all(isinstance(v, int) and 0 <= v <= 0xFFFFFFFF for v in ts)):
            raise ValueError("ts")
        ts = (ts[0], ts[1])
    return TcpOptions(mss, ws, bool(sack), ts)


def _seq_in(seq: int, start: int, size: int) -> bool:
    """start <= seq < start + size in sequence space (mod 2**32, RFC 9293 3.4)."""
    return (seq - start) & 0xFFFFFFFF < max(size, 1)


class Listener:
    """The LISTEN state of one socket bound to ``local`` = (ip, port); ip may
    be a wildcard ("", "0.0.0.0" for any IPv4, "::" for any address).

    ``backlog``: completed connections the socket may hold before accept();
    ``syn_queue_len``: requests held in SYN-RECEIVED; ``isn_gen``, ``cookies``:
    shared or per-listener (created when None); ``output(Segment)`` is called
    for every segment to send; ``ts_clock()`` gives our RFC 7323 timestamp
    clock (ms from ``clock`` by default).
    """

    def __init__(self, local: tuple[Any, int], backlog: int, syn_queue_len: int,
                 config: ListenConfig | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 isn_gen: IsnGenerator | None = None,
                 cookies: SynCookies | None = None,
                 output: Callable[[Segment], None] | None = None,
                 ts_clock: Callable[[], int] | None = None) -> None:
        ip, port = local
        if not isinstance(port, int) or not 1 <= port <= 0xFFFF:
            raise ValueError("the local port is 1..65535")
        if backlog < 0 or syn_queue_len < 0:
            raise ValueError("backlog and syn_queue_len are >= 0")
        self._any_v4 = ip == "0.0.0.0"
        #: None for a wildcard listener
        self.local_ip = None if ip in (None, "", "::", "0.0.0.0") else str(_ip(ip))
        self.local_port = port
        self.backlog = backlog
        self.syn_queue_len = syn_queue_len
        self.config = config if config is not None else ListenConfig()
        self._clock = clock
        self.isn_gen = isn_gen if isn_gen is not None else IsnGenerator(clock)
        self.cookies = cookies if cookies is not None else SynCookies(clock)
        self._output = output if output is not None else (lambda seg: None)
        self._ts_clock = ts_clock if ts_clock is not None else (
            lambda: int(clock() * 1000) & 0xFFFFFFFF)
        self._requests: dict[Key, _Request] = {}
        self._timers: list[tuple[float, int, Key]] = []   # (deadline, tie-break, key), lazily pruned
        self._timer_seq = 0
        self._pending = 0
        self._last_cookie: float | None = None
        self._stats = dict.fromkeys(_COUNTERS, 0)
        #: bytes of sequence space (data, plus 1 for FIN) the last completing
        #: final ACK carried: when > 0 the caller also hands that segment to
        #: the new connection
        self.last_segment_len = 0

    # -- queues and counters ---------------------------------------------------

    def __len__(self) -> int:
        """Requests in the SYN queue."""
        return len(self._requests)

    @property
    def established_pending(self) -> int:
        """Completed connections not yet accepted (the socket's accept queue)."""
        return self._pending

    def accept_queue_room(self) -> int:
        """How many more completions the accept queue takes."""
        return max(self.backlog - self._pending, 0)

    def accepted(self, n: int = 1) -> None:
        """The socket took ``n`` connections off its accept queue (accept(),
        or a queued connection that died before it)."""
        if not 0 <= n <= self._pending:
            raise ValueError(f"{n} connections leave an accept queue of {self._pending}")
        self._pending -= n

    def stats(self) -> dict[str, int]:
        """Counters, ``tcp.*`` (a copy)."""
        return dict(self._stats)

    def _count(self, name: str) -> None:
        self._stats[name] += 1

    # -- output ----------------------------------------------------------------

    def _send_rst(self, src: str, sport: int, dst: str, dport: int, seq: int) -> None:
        self._count("tcp.rst_sent")
        self._output(Segment(src, sport, dst, dport, seq & 0xFFFFFFFF, 0, RST, 0, TcpOptions()))

    def _synack_options(self, req: _Request) -> TcpOptions:
        cfg = self.config
        ts = None
        if req.ts_recent is not None:
            ts = (self._ts_clock() & 0xFFFFFFFF, req.ts_recent)
        return TcpOptions(cfg.mss, cfg.rcv_wscale if req.snd_wscale is not None else None,
                          req.sack_permitted, ts)

    def _send_synack(self, key: Key, req: _Request) -> None:
        self._count("tcp.synack_sent")
        self._output(Segment(key[2], key[3], key[0], key[1], req.iss, (req.irs + 1) & 0xFFFFFFFF,
                             SYN | ACK, self.config.window, self._synack_options(req)))

    def _arm(self, key: Key, deadline: float) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (deadline, self._timer_seq, key))
        if len(self._timers) > 2 * len(self._requests) + 64:
            # entries of completed or reset requests wait in the heap until their
            # deadline; rebuild so the heap stays proportional to the SYN queue
            self._timers[:] = [t for t in self._timers
                               if (r := self._requests.get(t[2])) is not None
                               and r.deadline == t[0]]
            heapq.heapify(self._timers)

    # -- input -----------------------------------------------------------------

    def input(self, src_ip: Any, src_port: int, dst_ip: Any, dst_port: int, seq: int, ack: int,
              flags: int, window: int, options: Any = None,
              payload_len: int = 0) -> SynRecord | None:
        """Process a segment that reached this listener and no connection.

        Returns a SynRecord when it is the handshake's final ACK and the
        accept queue has room (``last_segment_len`` then says whether the
        segment also carries data or FIN for the new connection); else None.
        """
        self.last_segment_len = 0
        try:
            src_addr = _ip(src_ip)
            dst_addr = _ip(dst_ip)
        except (ValueError, TypeError):
            self._count("tcp.listen_bad_address")
            return None
        src = str(src_addr)
        dst = str(dst_addr)
        if dst_port != self.local_port or (
                self.local_ip is not None and dst != self.local_ip) or (
                self._any_v4 and dst_addr.version != 4):
            self._count("tcp.listen_not_ours")
            return None
        if not (0 <= seq <= 0xFFFFFFFF and 0 <= ack <= 0xFFFFFFFF and 0 <= window <= 0xFFFF
                and 0 <= flags <= 0xFF and payload_len >= 0):
            self._count("tcp.listen_bad_segment")
            return None
        if not 1 <= src_port <= 0xFFFF or not _unicast(src_addr) or not _unicast(dst_addr):
            # RFC 1122 4.2.3.10: no connection with a broadcast/multicast address
            self._count("tcp.listen_bad_address")
            return None
        key = (src, src_port, dst, dst_port)
        req = self._requests.get(key)
        if flags & RST:
            self._on_rst(key, req, seq)
            return None
        if flags & ACK:
            try:
                opts = _options(options)
            except ValueError:
                self._count("tcp.listen_bad_options")
                return None
            if flags & SYN:
                # RFC 9293 3.10.7.2: any ACK in LISTEN is unacceptable
                self._count("tcp.listen_bad_ack")
                self._send_rst(dst, dst_port, src, src_port, ack)
                return None
            return self._on_ack(key, req, seq, ack, flags, window, opts, payload_len)
        if flags & SYN:
            try:
                opts = _options(options)
            except ValueError:
                self._count("tcp.listen_bad_options")
                return None
            self._on_syn(key, req, seq, opts, payload_len + (1 if flags & FIN else 0))
            return None
        # RFC 9293 3.10.7.2: other text or control must have an ACK; dropped
        self._count("tcp.listen_no_flags")
        return None

    def _on_rst(self, key: Key, req: _Request | None, seq: int) -> None:
        # RFC 9293 3.10.7.2: an RST in LISTEN is ignored. For a request
        # (SYN-RECEIVED) only an RST at exactly RCV.NXT resets it, as RFC 5961 3.2
        # asks, so a blind RST must guess the peer's ISN.
        if req is not None and seq == (req.irs + 1) & 0xFFFFFFFF:
            del self._requests[key]
            self._count("tcp.syn_recv_reset")
            return None
        self._count("tcp.rst_ignored")
        return None

    def _on_syn(self, key: Key, req: _Request | None, seq: int, opts: TcpOptions,
                extra_len: int) -> None:
        if extra_len:
            # data on a SYN may be kept for after the handshake (RFC 9293 3.10.7.2);
            # it is not: the peer retransmits it once established
            self._count("tcp.syn_data_ignored")
        if req is not None:
            # A retransmitted SYN: the SYN-ACK was lost. A SYN with another ISN is
            # an old duplicate or a restarted peer: the SYN-ACK acknowledging the
            # old ISN makes the peer send an RST that clears the request (RFC 9293 3.5).
            self._count("tcp.syn_duplicate")
            self._send_synack(key, req)
            return
        if self._pending >= self.backlog:
            # like Linux: a SYN is not answered when no completion could be queued
            self._count("tcp.listen_overflows")
            self._count("tcp.listen_drops")
            return
        cfg = self.config
        src, sport, dst, dport = key
        snd_wscale = min(opts.wscale, MAX_WSCALE) if opts.wscale is not None else None
        ts_recent = opts.ts[0] if opts.ts is not None and cfg.timestamps else None
        sack = opts.sack_permitted and cfg.sack
        if len(self._requests) < self.syn_queue_len:
            now = self._clock()
            iss = self.isn_gen.isn(dst, dport, src, sport)
            req = _Request(dst, seq, iss, opts.mss, snd_wscale, sack, ts_recent,
                           cfg.synack_rto, now + cfg.synack_rto)
            self._requests[key] = req
            self._arm(key, req.deadline)
            self._count("tcp.syn_recv")
            self._send_synack(key, req)
            return
        if not cfg.syncookies:
            self._count("tcp.syn_queue_full_drops")
            self._count("tcp.listen_drops")
            return
        # RFC 4987 3.6: the SYN queue is full; keep nothing, encode it in the ISN
        mss = opts.mss if opts.mss is not None else (
            DEFAULT_MSS_V6 if ":" in src else DEFAULT_MSS_V4)
        ts_now = self._ts_clock() if ts_recent is not None else None
        isn, tsval, _ = self.cookies.make((dst, dport), (src, sport), seq, mss,
                                          snd_wscale, sack, ts_now)
        if tsval is not None and ts_recent is not None:
            out_opts = TcpOptions(cfg.mss, cfg.rcv_wscale if snd_wscale is not None else None,
                                  sack, (tsval, ts_recent))
        else:
            # without timestamps the cookie cannot remember window scaling or SACK,
            # so neither is offered
            out_opts = TcpOptions(cfg.mss)
        self._last_cookie = self._clock()
        self._count("tcp.syncookies_sent")
        self._output(Segment(dst, dport, src, sport, isn, (seq + 1) & 0xFFFFFFFF, SYN | ACK,
                             cfg.window, out_opts))

    def _on_ack(self, key: Key, req: _Request | None, seq: int, ack: int, flags: int,
                window: int, opts: TcpOptions, payload_len: int) -> SynRecord | None:
        src, sport, dst, dport = key
        if req is None:
            return self._on_cookie_ack(key, seq, ack, flags, window, opts, payload_len)
        if not _seq_in(seq, (req.irs + 1) & 0xFFFFFFFF, self.config.window):
            # RFC 9293 3.10.7.3 first check: not acceptable -> <SEQ=SND.NXT><ACK=RCV.NXT><ACK>
            self._count("tcp.listen_bad_seq")
            self._output(Segment(dst, dport, src, sport, (req.iss + 1) & 0xFFFFFFFF,
                                 (req.irs + 1) & 0xFFFFFFFF, ACK, self.config.window,
                                 TcpOptions()))
            return None
        if ack != (req.iss + 1) & 0xFFFFFFFF:
            # RFC 9293 3.10.7.3 fifth check: unacceptable ACK -> <SEQ=SEG.ACK><CTL=RST>
            self._count("tcp.listen_bad_ack")
            self._send_rst(dst, dport, src, sport, ack)
            return None
        ts_recent = req.ts_recent
        if ts_recent is not None:
            if opts.ts is None:
                self._count("tcp.listen_ts_missing")
                return None
            ts_recent = opts.ts[0]
        if self._pending >= self.backlog:
            # Keep the request: the peer retransmits its ACK (or data) and may
            # find room then (Linux ListenOverflows).
            self._count("tcp.listen_overflows")
            self._count("tcp.listen_drops")
            return None
        del self._requests[key]
        snd_wscale = req.snd_wscale
        return self._complete(key, req.iss, req.irs, window, req.peer_mss, snd_wscale,
                              self.config.rcv_wscale if snd_wscale is not None else None,
                              ts_recent, req.sack_permitted,
                              payload_len + (1 if flags & FIN else 0))

    def _on_cookie_ack(self, key: Key, seq: int, ack: int, flags: int, window: int,
                       opts: TcpOptions, payload_len: int) -> SynRecord | None:
        src, sport, dst, dport = key
        now = self._clock()
        recent = (self._last_cookie is not None
                  and now - self._last_cookie < COUNTER_PERIOD * MAX_AGE_PERIODS)
        params = None
        if self.config.syncookies and recent:
            # an echoed timestamp holds cookie bits only if we offered timestamps
            tsecr = opts.ts[1] if opts.ts is not None and self.config.timestamps else None
            params = self.cookies.check((dst, dport), (src, sport), (ack - 1) & 0xFFFFFFFF,
                                        (seq - 1) & 0xFFFFFFFF, tsecr)
        if params is None:
            # RFC 9293 3.10.7.2: an ACK in LISTEN -> <SEQ=SEG.ACK><CTL=RST>. Cookies
            # are only checked while we have recently sent some, so they cannot
            # be guessed at leisure.
            if self.config.syncookies and recent:
                self._count("tcp.syncookies_failed")
            else:
                self._count("tcp.listen_bad_ack")
            self._send_rst(dst, dport, src, sport, ack)
            return None
        if self._pending >= self.backlog:
            self._count("tcp.listen_overflows")
            self._count("tcp.listen_drops")
            return None
        self._count("tcp.syncookies_ok")
        snd_wscale = params.wscale
        return self._complete(key, (ack - 1) & 0xFFFFFFFF, (seq - 1) & 0xFFFFFFFF, window,
                              params.mss, snd_wscale,
                              self.config.rcv_wscale if snd_wscale is not None else None,
                              opts.ts[0] if params.timestamps and opts.ts is not None else None,
                              params.sack_permitted,
                              payload_len + (1 if flags & FIN else 0))

    def _complete(self, key: Key, iss: int, irs: int, window: int, peer_mss: int | None,
                  snd_wscale: int | None, rcv_wscale: int | None, ts_recent: int | None,
                  sack: bool, seg_len: int) -> SynRecord:
        src, sport, dst, dport = key
        self._pending += 1
        self._count("tcp.established")
        self.last_segment_len = seg_len
        # RFC 7323 2.2: the window of a non-SYN segment is scaled by the sender's shift
        snd_wnd = window << snd_wscale if snd_wscale is not None else window
        return SynRecord((dst, dport), (src, sport), iss, irs, snd_wnd, peer_mss, snd_wscale,
                         rcv_wscale, ts_recent, sack)

    # -- timers ----------------------------------------------------------------

    def next_timeout(self) -> float | None:
        """When on_timer() is next due (clock seconds), None when nothing is pending."""
        timers = self._timers
        while timers:
            deadline, _, key = timers[0]
            req = self._requests.get(key)
            if req is not None and req.deadline == deadline:
                return deadline
            heapq.heappop(timers)     # the request is gone or was re-armed
        return None

    def on_timer(self, now: float | None = None) -> None:
        """Retransmit due SYN-ACKs (RFC 6298 5.5 backoff); drop requests whose
        last retransmission went unanswered (``tcp.syn_recv_expired``)."""
        if now is None:
            now = self._clock()
        cfg = self.config
        timers = self._timers
        while timers and timers[0][0] <= now:
            deadline, _, key = heapq.heappop(timers)
            req = self._requests.get(key)
            if req is None or req.deadline != deadline:
                continue
            if req.retries >= cfg.synack_retries:
                del self._requests[key]
                self._count("tcp.syn_recv_expired")
                self._count("tcp.listen_drops")
                continue
            req.retries += 1
            req.rto = min(req.rto * 2, cfg.synack_rto_max)
            req.deadline = now + req.rto
            self._arm(key, req.deadline)
            self._count("tcp.synack_retrans")
            self._send_synack(key, req)
