"""The stack's TCP layer: ports, pcbs, timers and IP output for its TCP sockets.

:class:`fastproto.tcp_socket.TCPSocket` runs one socket; this runs what they
share: the TCP port space (apart from UDP's), the pcbtable entries
(``(6, laddr, lport, None, 0)`` for a listener, the full 4-tuple for a
connection), RFC 6528 initial sequence numbers, the SYN-cookie secret, one
continuation queue (and worker thread) for every socket's timers, the
connection settings (:class:`TcpConfig`, one per address family) and the
counters every connection and listener adds to.  It also answers segments
that reach no socket (RFC 9293 3.10.7.1: a reset) and builds the IP packets
of what the sockets send.
"""
from __future__ import annotations

import errno
import ipaddress
import functools
import random
import threading
import time
from typing import TYPE_CHECKING, Any, Optional, Sequence

from fastproto._core.frames import FrameBatch
from fastproto._core.parse import Flag
from fastproto._core.pcq import PCQ
from fastproto._core.tcpseg import tcp_checksum_ok
from fastproto._core.tso import tcp_frames, tcp_frames_many
from fastproto.proto.syncookie import SynCookies
from fastproto.proto.tcp_isn import IsnGenerator
from fastproto.proto.tcp_listen import Listener, ListenConfig
from fastproto.proto.tcp_timers import TcpConfig, count
from fastproto.sched.continuation import ContinuationQueue
from fastproto.socket import AF_INET, AF_INET6, _oserror, ephemeral_port
from fastproto.tcp_socket import TCPSocket
from fastproto.wire.ip import ipv4 as ipv4_packet
from fastproto.wire.ip import ipv6 as ipv6_packet
from fastproto.wire.tcp import (ACK, FIN, RST, SYN, TcpRejected, build_tcp, parse_tcp_checked,
                               pseudo_sum, tcp_options, timestamps_option)
from fastproto.proto.tcp_states import ESTABLISHED

#: a row whose TCP checksum the demux left to the copy into the receive buffer
_DEFERRED = int(Flag.L4_CSUM_DEFERRED)

if TYPE_CHECKING:  # pragma: no cover - imports for annotations only
    from fastproto.stack import Stack

IPPROTO_TCP = 6
MASK = 0xFFFFFFFF
_IP_DF = 0x4000
#: EtherType of IPv4 (IEEE 802.3), after the MAC addresses of a frame
_ETH_IPV4 = b"\x08\x00"
#: payload bytes up to which a lone segment goes to the device as bytes, not a FrameBatch
_SMALL = 1024
#: bytes of one large send handed to the core's segmentation (as a NIC's 64 KiB TSO)
_TSO_MAX = 65536


#: the fewest packets a connection's PCQ holds
_PCQ_MIN = 256


def pcq_len_for(rcvbuf: int, sndbuf: int) -> int:
    """Packets a connection's PCQ holds for buffers of ``rcvbuf`` and
    ``sndbuf`` bytes: the peer may send a receive window of data segments
    (and ACK a send buffer of ours) before the input runs again; a segment
    of 1 KiB or more each, with room for the control segments besides.
    Smaller segments filling a large window overflow it, each overflow
    counted (``drop.socket_pcq``) and recovered by TCP."""
    return max(_PCQ_MIN, max(rcvbuf, sndbuf) // 1024 + 64)


class TcpLayer:
    """TCP for ``stack``.  ``syn_queue_len``: half-open connections a listener
    keeps before it answers with SYN cookies; ``pcq_len``: packets a TCP
    socket's PCQ holds; ``listen_pcq_len``: packets a listening socket's PCQ
    holds (default: the larger of ``pcq_len`` and ``syn_queue_len``);
    ``config``: keyword settings for :class:`TcpConfig` (``rcvbuf``,
    ``sndbuf``, ``time_wait``, ``delack``, ``rto_min``...).

    ``pcq_len`` None sizes a connection's PCQ by its buffers (see
    :func:`pcq_len_for`), so that a window's worth of segments, or the ACKs
    for a send buffer's worth, fits between two runs of its input."""

    def __init__(self, stack: "Stack", syn_queue_len: int = 1024, pcq_len: Optional[int] = None,
                 listen_pcq_len: Optional[int] = None, **config: Any) -> None:
        self.stack = stack
        self.syn_queue_len = syn_queue_len
        if pcq_len is None:
            pcq_len = pcq_len_for(config.get("rcvbuf", TcpConfig.DEFAULT_BUF),
                                  config.get("sndbuf", TcpConfig.DEFAULT_BUF))
        self.pcq_len = pcq_len
        # Every SYN and handshake-completing ACK of a burst of connections
        # lands on the listener's PCQ, while a connection's own PCQ only needs
        # its window's worth of segments: many connections can keep small ones.
        self.listen_pcq_len = (max(pcq_len, syn_queue_len) if listen_pcq_len is None
                               else listen_pcq_len)
        self.counters: dict[str, int] = {}
        self._config_args = config
        self._configs: dict[int, TcpConfig] = {}
        self.isn = IsnGenerator(stack.clock)
        self.cookies = SynCookies(stack.clock)
        # One timestamp clock for listeners and their connections, so that our
        # TSvals never go backwards from the SYN-ACK on (RFC 7323 5.3, 5.4).
        self.ts_offset = random.getrandbits(32)
        self.timerq = ContinuationQueue(clock=stack.clock)
        self._timer_thread_started = False
        self._lock = threading.Lock()
        #: (family, port) -> sockets using it (a dict for its order and O(1)
        #: removal: a listener's port has one entry per accepted connection)
        self._ports: dict[tuple[int, int], dict[TCPSocket, None]] = {}
        self._listeners: list[Listener] = []
        #: address text -> packed address, for the connections' routes
        self._packed_addrs: dict[str, bytes] = {}
        #: the pool's buffers as one flat byte view: payloads are slices of it
        self.pool_flat = memoryview(stack.pool.data.reshape(-1))

    # -- settings -------------------------------------------------------------------

    def config(self, family: int) -> TcpConfig:
        """The connection settings for ``family`` (shared by its connections)."""
        cfg = self._configs.get(family)
        if cfg is None:
            # Large sends by default: output() cuts them in the core (tso.pyx).
            args = dict(self._config_args)
            args.setdefault("tso", _TSO_MAX)
            cfg = TcpConfig(mtu=self.stack.mtu, ipv6=family == AF_INET6, counters=self.counters,
                            **args)
            self._configs[family] = cfg
        return cfg

    def ts_clock(self) -> int:
        """Our RFC 7323 timestamp: milliseconds, offset."""
        return (int(self.stack.clock() * 1000.0) + self.ts_offset) & MASK

    # -- sockets ----------------------------------------------------------------------

    def socket(self, family: int) -> TCPSocket:
        """A new TCP socket of ``family``, attached to the demux."""
        stack = self.stack
        if family == AF_INET6 and getattr(stack, "nd", None) is None:
            raise _oserror(errno.EAFNOSUPPORT)
        if not self._timer_thread_started:
            with self._lock:
                if not self._timer_thread_started:
                    self.timerq.start(1)
                    self._timer_thread_started = True
        with stack._demux_lock:
            sid = stack._new_id()
            sock = TCPSocket(stack, sid, PCQ(self.pcq_len), family)
            sock._cont = stack.dispatch.continuation(sock)
            # Attached before its pcb enters the table (the demux's rule).
            stack.demux.attach(sid, sock.pcq)
            # A new connection on a reused id starts with a clean hot TCB.
            stack.demux.tcb_reset(sid)
            stack._socks[sid] = sock
        return sock

    def bind(self, sock: TCPSocket, host: str, port: int) -> None:
        """Reserve ``(host, port)`` for ``sock`` (port 0: an ephemeral one)."""
        if not self.stack._is_local(sock.family, host):
            raise _oserror(errno.EADDRNOTAVAIL)
        with self.stack._ports_lock:
            if port == 0:
                port = ephemeral_port(lambda p: (sock.family, p) in self._ports, errno.EADDRNOTAVAIL)
            for other in self._ports.get((sock.family, port), ()):
                if other._laddr == sock._any or host == sock._any or other._laddr == host:
                    # SO_REUSEADDR lets a listener take a port whose old
                    # connections linger (TIME_WAIT), as on Linux.
                    if not (sock._reuseaddr and other._closed):
                        raise _oserror(errno.EADDRINUSE)
            self._ports.setdefault((sock.family, port), {})[sock] = None
            sock._laddr, sock._lport = host, port

    def listener(self, sock: TCPSocket, backlog: int) -> Listener:
        """Start ``sock`` listening: its Listener, and its pcb in the table."""
        cfg = self.config(sock.family)
        listen_cfg = ListenConfig(mss=cfg.mss, window=min(cfg.rcvbuf, 0xFFFF),
                                  rcv_wscale=cfg.rcv_wscale, sack=cfg.sack,
                                  timestamps=cfg.timestamps, synack_rto=cfg.rto_initial)
        lst = Listener((sock._laddr, sock._lport), backlog, self.syn_queue_len, listen_cfg,
                       self.stack.clock, self.isn, self.cookies, sock._out.append, self.ts_clock)
        if self.listen_pcq_len > sock.pcq.maxlen:
            # Not in the table yet, so its PCQ is empty: swap in a deeper one.
            stack = self.stack
            with stack._demux_lock:
                sock.pcq = PCQ(self.listen_pcq_len)
                stack.demux.attach(sock.id, sock.pcq)
        self._hash(sock, (IPPROTO_TCP, sock._laddr, sock._lport, None, 0))
        self._listeners.append(lst)
        return lst

    def connect(self, sock: TCPSocket, host: str, port: int) -> None:
        """Give ``sock`` a route, a source address and port, and its connected pcb."""
        stack = self.stack
        stack._check_route(host)
        if port == 0:
            raise _oserror(errno.ECONNREFUSED, ConnectionRefusedError)
        if not sock._lport:
            self.bind(sock, sock._any, 0)
        if sock._laddr == sock._any:
            sock._laddr = stack._source_address(sock.family, host)
        sock._peer = (host, port)
        self._route(sock)
        self._hash(sock, (IPPROTO_TCP, sock._laddr, sock._lport, host, port))

    def _hash(self, sock: TCPSocket, key: tuple[int, str, int, Optional[str], int]) -> None:
        """Put ``sock``'s pcb in the table under ``key``; EADDRINUSE if taken."""
        with self.stack._ports_lock:
            try:
                self.stack.table.insert(*key, sock.id)
            except (KeyError, ValueError):
                raise _oserror(errno.EADDRINUSE) from None
            sock._hashed = key

    def _route(self, sock: TCPSocket) -> None:
        """Cache what every segment of ``sock``'s connection is built from:
        ``[src, dst, pseudo-header sum, sport, dport, link]``, addresses
        packed; ``link`` is what :meth:`_link_header` last found (None until
        then)."""
        peer = sock._peer
        assert peer is not None
        src, dst = self._packed(sock._laddr), self._packed(peer[0])
        sock._route = [src, dst, pseudo_sum(src, dst), sock._lport, peer[1], None]

    def _link_header(self, route: list[Any]) -> bytes:
        """The Ethernet header of frames to ``route``'s peer (IPv4), or b"" when
        its address is not resolved (the packets then go through ARP).  Kept
        in the route while the ARP cache's entry stands: its generation
        unchanged (nothing learned, changed, evicted or expired since) and
        its expiry time not reached.  (A kept entry is not marked recently
        used at each send: with more neighbours than the cache holds it may
        be evicted, and is then looked up afresh.)"""
        stack = self.stack
        arp = stack.arp
        link = route[5]
        if link is not None and link[0] is arp and link[1] == arp.generation \
                and stack.clock() < link[2]:
            return link[3]  # type: ignore[no-any-return]
        with stack._arp_lock:
            found = arp.lookup_entry(route[1])
            generation = arp.generation
        if found is None:
            route[5] = None
            return b""
        l2 = found[0] + stack.mac + _ETH_IPV4
        route[5] = (arp, generation, found[1], l2)
        return l2

    def _packed(self, host: str) -> bytes:
        """``host``'s packed address, one bytes object shared by the connections
        that use it (thousands of connections often have one or two peers)."""
        packed = self._packed_addrs.get(host)
        if packed is None:
            if len(self._packed_addrs) >= 4096:
                self._packed_addrs.clear()
            packed = self._packed_addrs[host] = ipaddress.ip_address(host).packed
        return packed

    def child(self, parent: TCPSocket, record: Any) -> TCPSocket:
        """The socket of a connection ``parent``'s listener completed, with its pcb."""
        child = self.socket(parent.family)
        child._laddr, child._lport = record.local
        child._peer = record.remote
        child._parent = parent
        child._nodelay = parent._nodelay
        child._keepalive = parent._keepalive
        with self.stack._ports_lock:
            self._ports.setdefault((child.family, child._lport), {})[child] = None
        self._route(child)
        self._hash(child, (IPPROTO_TCP, child._laddr, child._lport, record.remote[0],
                           record.remote[1]))
        return child

    def isn_for(self, laddr: str, lport: int, raddr: str, rport: int) -> int:
        return self.isn.isn(laddr, lport, raddr, rport)

    # -- leaving ----------------------------------------------------------------------

    def unhash(self, sock: TCPSocket) -> None:
        """Take ``sock``'s pcb out of the table (its connection is CLOSED): from
        now on segments for it are answered with a reset."""
        with self.stack._ports_lock:
            if sock._hashed is None:
                return
            self.stack.table.remove(*sock._hashed)
            sock._hashed = None

    def release(self, sock: TCPSocket) -> None:
        """Give back everything ``sock`` held: pcb, port, PCQ, id."""
        stack = self.stack
        self.unhash(sock)
        stack.demux.tcb_disarm(sock.id)
        if sock.listener is not None:
            self._reset_queued(sock)
        with stack._ports_lock:
            users = self._ports.get((sock.family, sock._lport))
            if users is not None and sock in users:
                del users[sock]
                if not users:
                    del self._ports[(sock.family, sock._lport)]
            if sock.listener is not None and sock.listener in self._listeners:
                self._listeners.remove(sock.listener)
                # Its counters outlive it.
                for k, v in sock.listener.stats().items():
                    count(self.counters, k, v)
        stack._release_socket(sock, "tcp.closed_drops")

    def _reset_queued(self, sock: TCPSocket) -> None:
        """Answer the segments still on the PCQ of listener ``sock``, whose pcb
        just left the table, as the ones after them will be: they reached no
        socket, so a reset (RFC 9293 3.10.7.1; ``tcp.closed_resets``).  A
        handshake's final ACK that was queued when its listener closed thus
        resets the peer's connection instead of leaving it open.  (What is
        left on a connection's PCQ after TIME_WAIT is dropped and counted,
        ``tcp.closed_drops``.)"""
        stack = self.stack
        rows = stack.demux.rows
        with sock._in_lock:
            while True:
                hs = sock.pcq.get_many(256)
                if not len(hs):
                    break
                try:
                    for h in hs.tolist():
                        row = rows[h]
                        if int(row["flags"]) & _DEFERRED and \
                                not tcp_checksum_ok(rows, h, stack.pool.data):
                            # Its checksum was left to the copy: a corrupted
                            # segment gets no answer (RFC 9293 3.10.7.1 resets
                            # only what arrived intact).
                            stack.demux.count_bad_checksum(1)
                            continue
                        self.count("tcp.closed_resets")
                        stack._tcp_reset_for(h, row)
                finally:
                    stack.pool.free_many(hs)

    def release_now(self, sock: TCPSocket) -> None:
        """Release ``sock`` whatever its connection's state (the stack is closing)."""
        with sock._lock:
            if sock._released:
                return
            sock._released = True
            sock._timer.cancel()
        self.release(sock)

    def close(self) -> None:
        """Stop the timer thread (the stack is closing)."""
        if self._timer_thread_started:
            self.timerq.stop()

    # -- immediate ACKs from the demux (docs/tcp.md) ---------------------------------------

    def core_ack_after_call(self, sock: TCPSocket) -> None:
        """Arm the demux's immediate ACKs for ``sock`` with its connection's
        state, or disarm them, after a call into the connection (both locks
        are taken inside ``tcb_arm``; ``sock``'s lock is held).  Armed only in
        ESTABLISHED with nothing out of order, no FIN, reading not shut down,
        and nothing left on the PCQ (checked by the demux)."""
        conn = sock.conn
        demux = self.stack.demux
        if (conn is None or conn.state != ESTABLISHED or conn._ooo is not None
                or conn._fin_rcvd or conn._rd_shut or not conn.config.core_ack):
            if sock._tcb is not None:
                demux.tcb_disarm(sock.id)
            return
        tmpl = sock._tcb
        if tmpl is not None and demux.tcb_window(sock.id, (conn.rcv_nxt + conn.rcv_wnd) & MASK):
            # Still on: the demux followed every segment since it was armed;
            # its ACKs carry the window the application's reads opened.
            return
        if tmpl is None:
            tmpl = self._ack_template(sock)
            if tmpl is None:
                return
            sock._tcb = tmpl
            conn.core_acked = functools.partial(demux.tcb_acked, sock.id)
        demux.tcb_arm(sock.id, conn.rcv_nxt, conn.rcv_wnd, conn._last_ack_sent, conn.rcv_mss,
                      conn.config.core_ack_bytes, conn.snd_max, conn.ts_recent, conn._ts_offset, conn._rcv_wscale,
                      conn._ts_ok, tmpl)

    def _ack_template(self, sock: TCPSocket) -> Optional[bytes]:
        """The frame of a pure ACK of ``sock``'s connection, for the demux to
        fill in, or None when it cannot send one: IPv4 over Ethernet with the
        next hop resolved, and our TSvals on the demux's clock (the stack's
        clock is ``time.monotonic``)."""
        stack = self.stack
        conn = sock.conn
        if sock.family != AF_INET or sock._route is None or stack.clock is not time.monotonic:
            return None
        src, dst, _, sport, dport, _ = sock._route
        l2 = self._link_header(sock._route)
        if not l2:
            return None
        opts = timestamps_option(0, 0) if conn._ts_ok else b""  # type: ignore[union-attr]
        frames: list[bytes] = []
        tcp_frames(l2, src, dst, sport, dport, 0, 0, ACK, 0, opts, b"", 0xFFFF, frames)
        return frames[0]

    def _core_ack_output(self, sock: TCPSocket, items: Sequence[Any]) -> Sequence[Any]:
        """``items`` with their ACK numbers raised to the demux's last one where
        they are behind it (the peer ignores an ACK older than one it has, and
        with it a window update), and the demux told what they offer.  A pure
        ACK that would then say nothing the demux's did not is left out
        (``tcp.acks_covered_by_core``): the peer would count it as a duplicate
        ACK (RFC 5681 2)."""
        conn = sock.conn
        last = None
        for item in items:
            if item[2] & ACK and not item[2] & RST:
                last = item
        if last is None or conn is None:
            return items
        shift = conn._rcv_wscale
        edge = (conn.rcv_nxt + conn.rcv_wnd) & MASK
        raise_to = self.stack.demux.tcb_sent(sock.id, last[1], edge, conn.snd_max)
        if raise_to < 0:
            return items
        wnd = ((edge - raise_to) & MASK)
        wnd = 0 if wnd >= 0x80000000 else min(wnd >> shift, 0xFFFF)
        acked = self.stack.demux.tcb_acked(sock.id)
        core_edge = acked[1] if acked is not None else raise_to
        stale_edge = ((edge - core_edge) & MASK) - 1 >= 0x7FFFFFFF    # edge <= core_edge
        out = []
        for item in items:
            seq, ack, flags, window, opts, payload = item
            if flags & ACK and not flags & RST and ((raise_to - ack) & MASK) - 1 < 0x7FFFFFFF:
                if flags == ACK and not len(payload) and stale_edge:
                    self.count("tcp.acks_covered_by_core")
                    self.count("tcp.out_segments", -1)
                    continue
                item = (seq, raise_to, flags, wnd, opts, payload)
            out.append(item)
        return out

    # -- output -----------------------------------------------------------------------

    def output(self, sock: TCPSocket, items: Sequence[Any]) -> None:
        """Send the segments ``sock`` produced: a connection's descriptors
        ``(seq, ack, flags, window, options, payload)``, one batch to its peer, or
        a listener's Segments (SYN-ACKs, resets), each to its own peer."""
        v4 = sock.family == AF_INET
        if sock._route is None:
            self.count("tcp.out_segments", len(items))
            for item in items:
                src = ipaddress.ip_address(item.src_ip).packed
                dst = ipaddress.ip_address(item.dst_ip).packed
                o = item.options
                seg = build_tcp(src, dst, item.src_port, item.dst_port, item.seq, item.ack,
                                item.flags, item.window, tcp_options(o.mss, o.wscale,
                                                                     o.sack_permitted, o.ts))
                self._send(v4, dst, [self._packet(v4, src, dst, seg)])
            return
        route = sock._route
        src, dst, _, sport, dport, _ = route
        conn = sock.conn
        counted = 0
        if sock._tcb is not None:
            # (the pure ACKs the demux sent already are taken back off the count)
            self.count("tcp.out_segments", len(items))
            items = self._core_ack_output(sock, items)
            if not items:
                return
            counted = len(items)
        mss = conn.snd_mss if conn is not None else 0xFFFF
        stack = self.stack
        # IP and TCP headers without options
        room = stack.mtu - (40 if v4 else 60)
        l2 = b""
        if v4:
            # (_link_header's kept entry looked at here: once per send)
            link = route[5]
            arp = stack.arp
            if link is not None and link[0] is arp and link[1] == arp.generation \
                    and stack.clock() < link[2]:
                l2 = link[3]
            else:
                l2 = self._link_header(route)
        # Framed (the next hop is resolved): the frames go to the device in
        # one buffer, no object per frame; else as IP packets through ARP.
        # One small segment (a request, a reply, an ACK) is one frame, which
        # costs less as bytes than as a batch of one.
        frames: Any = [] if not l2 or (len(items) == 1 and len(items[0][5]) <= _SMALL) \
            else FrameBatch()
        # Each descriptor of up to 64 KiB cut by the core into frames of the
        # MSS, less what options beyond the timestamps take (SACK blocks).
        tcp_frames_many(l2, src, dst, sport, dport, items, room, mss, frames)
        n = len(frames)
        counters = self.counters
        count(counters, "tcp.out_segments", n - counted)
        if l2:
            # The stack's counter, kept here without its lock (Stack.stats adds it).
            count(counters, "ip.out_packets", n)
            stack.interface.transmit(frames)
        else:
            self._send(v4, dst, frames)

    @staticmethod
    def _packet(v4: bool, src: bytes, dst: bytes, segment: bytes) -> bytes:
        """``segment`` in an IP packet; IPv4 with DF set and identification 0, an
        atomic datagram (RFC 6864 4.1)."""
        if v4:
            return ipv4_packet(src, dst, IPPROTO_TCP, segment, ident=0)
        return ipv6_packet(src, dst, IPPROTO_TCP, segment)

    def _send(self, v4: bool, dst: Any, packets: list[bytes]) -> None:
        if v4:
            self.stack._send_packets(dst, packets)
        else:
            self.stack._send_ip6_packets(dst, packets)

    def reset_for(self, src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int,
                  flags: int, seg_len: int) -> None:
        """Answer a segment that reached no socket (RFC 9293 3.10.7.1, CLOSED):
        never a reset for a reset; for an ACK, ``<SEQ=SEG.ACK><CTL=RST>``; else
        ``<SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>``.  Addresses are the
        received segment's (4 or 16 bytes)."""
        if flags & RST:
            self.count("tcp.rst_ignored_no_socket")
            return
        if flags & ACK:
            rst = build_tcp(dst, src, dport, sport, ack, 0, RST, 0)
        else:
            length = seg_len + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
            rst = build_tcp(dst, src, dport, sport, 0, (seq + length) & MASK, RST | ACK, 0)
        self.count("tcp.rst_no_socket")
        v4 = len(src) == 4
        self._send(v4, src, [self._packet(v4, dst, src, rst)])

    # -- input that is not a socket's PCQ --------------------------------------------

    @staticmethod
    def addresses(row: Any, family: int) -> tuple[str, str]:
        """Source and destination of a parsed row as text."""
        src, dst = row["src"].tobytes(), row["dst"].tobytes()
        if family == AF_INET:
            return str(ipaddress.IPv4Address(src[12:])), str(ipaddress.IPv4Address(dst[12:]))
        return str(ipaddress.IPv6Address(src)), str(ipaddress.IPv6Address(dst))

    def fragment(self, h: int, row: Any) -> None:
        """A first fragment of a TCP segment found on a socket's PCQ: to reassembly
        (the segment comes back whole through :meth:`datagram_input`)."""
        stack = self.stack
        if int(row["ip_version"]) == 4:
            stack._fragment_input(stack._packet(h, row))
        else:
            stack._fragment6_input(stack._packet(h, row))

    def datagram_input(self, src: bytes, dst: bytes, data: bytes) -> None:
        """A TCP segment that arrived in IP fragments, now whole: check it, find
        its socket and hand it over (or answer with a reset)."""
        try:
            seg = parse_tcp_checked(data, src, dst)
        except TcpRejected as exc:
            self.count(f"tcp.bad_segment_{exc.reason}")
            return
        sid = self.stack.table.lookup(IPPROTO_TCP, dst, seg.dport, src, seg.sport)
        sock = self.stack._socks.get(sid) if sid is not None else None
        if not isinstance(sock, TCPSocket):
            self.reset_for(src, dst, seg.sport, seg.dport, seg.seq, seg.ack, seg.flags,
                           len(seg.payload))
            return
        text = (lambda a: str(ipaddress.ip_address(a)))
        sock._segment_input(seg, text(src), text(dst))

    # -- counters ---------------------------------------------------------------------

    def count(self, name: str, n: int = 1) -> None:
        # Sockets output from any thread, each under its own lock only.
        count(self.counters, name, n)

    def ip_out_packets(self) -> int:
        """IP packets of TCP segments and immediate ACKs handed to the
        interface framed, counted here rather than under the stack's counter
        lock: part of the stack's ``ip.out_packets``."""
        return self.counters.get("ip.out_packets", 0)

    def stats(self) -> dict[str, int]:
        """``tcp.*`` counters: every connection's and listener's, summed."""
        out = dict(self.counters)
        # (the IP packets sent framed: the stack's, see ip_out_packets)
        out.pop("ip.out_packets", None)
        with self.stack._ports_lock:
            listeners = list(self._listeners)
        for lst in listeners:
            for k, v in lst.stats().items():
                out[k] = out.get(k, 0) + v
        for k, v in self.cookies.stats().items():
            out[f"tcp.cookie_{k}"] = v
        return out


__all__ = ["TcpLayer", "IPPROTO_TCP"]
