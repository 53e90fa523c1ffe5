"""An IPv4/UDP host stack on one interface, with a choice of dispatch model.

The receive path: the interface's "interrupt" (``Device.wait``) wakes the
puller thread, which takes a batch off the rx ring into the stack's
:class:`BufferPool` (``receive_into``) and runs :meth:`Demux.input` on it
without the GIL: parse, pcbtable lookup, ``pcq_put`` on each socket's PCQ.
Then, per batch, in Python: frames for no socket in particular (ARP, ICMP,
IPv4 fragments) go to their handlers, UDP for a closed port is answered with a
rate-limited ICMP port unreachable, and the woken sockets are handed to the
dispatch model (:mod:`fastproto.dispatch`), which decides who runs their
protocol input and when.  Every buffer not handed on is freed.

The transmit path: socket -> UDP header (RFC 768) -> IPv4 (RFC 791),
fragmented above the MTU -> ARP resolution (RFC 826; packets held while it
resolves) -> ``interface.transmit``.

``stats()`` accounts for every drop by the place it happened.
"""
from __future__ import annotations

import errno
import ipaddress
import itertools
import os
import resource
import struct
import threading
import time
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

from fastproto import BufferPool, Demux, PCBTable
from fastproto._core.parse import Flag
from fastproto._core.pcq import PCQ
from fastproto.checksum import internet_checksum, pseudo_header_sum
from fastproto.dispatch import MODELS, Dispatch, make_dispatch
from fastproto.proto.arp import ArpCache
from fastproto.proto.icmp import (IcmpRejected, dest_unreachable, echo_reply_packet,
                                  icmp_checksum_bad, parse_icmp_error)
from fastproto.proto.ratelimit import TokenBucket
from fastproto.proto.reassembly import Reassembler, fragment_ipv4, ipv4_fragment
from fastproto.socket import (AF_INET, SOCK_DGRAM, SOCK_RAW, DatagramSocket, RawSocket,
                              UDPSocket, _oserror)
from fastproto.wire.ethernet import ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, ethernet, mac_bytes
from fastproto.wire.ip import ipv4 as ipv4_packet
from fastproto.wire.l4 import icmp_echo, udp

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
_BROADCAST_MAC = b"\xff" * 6
_ANY = "0.0.0.0"
# ICMP Destination Unreachable codes (RFC 792) and the errno a connected socket sees.
_UNREACH_ERRNO = {0: errno.ENETUNREACH, 1: errno.EHOSTUNREACH, 2: errno.ECONNREFUSED,
                  3: errno.ECONNREFUSED, 4: errno.EMSGSIZE}
_ICMP_PORT_UNREACH = 3
_ICMP_PROTO_UNREACH = 2
#: seconds between runs of the ARP and reassembly timers
_TIMER_INTERVAL = 0.05


class Stack:
    """A host stack on ``interface`` (any :class:`fastproto.phy.device.Device`).

    ``ipv4``: address and prefix (``"a.b.c.d/len"``); ``mac``: source MAC
    (the interface's by default); ``dispatch``: one of
    :data:`fastproto.dispatch.MODELS`; ``pool_size`` buffers in the pool;
    ``batch``: frames per pull; ``kcont_delay`` (s) and ``workers`` for the
    ``kcont``/``lrp`` models; ``clock``: seconds, for ARP, reassembly, the
    ICMP rate limit and continuations.  ``pcq_len``: packets a socket's PCQ
    holds; ``netisr_qlen``: frames the netisr input queue holds;
    ``icmp_rate``/``icmp_burst``: ICMP errors per second and burst
    (RFC 1812 4.3.2.8).

    Threads start at construction and stop in :meth:`close` (or on leaving
    ``with``), which joins every one of them.
    """

    def __init__(self, interface: Any, ipv4: str = "198.18.0.2/24", mac: Optional[Union[str, bytes]] = None,
                 dispatch: str = "lrp", pool_size: int = 4096, batch: int = 256,
                 kcont_delay: float = 0.0005, workers: int = 1,
                 clock: Callable[[], float] = time.monotonic, pcq_len: int = 1024,
                 netisr_qlen: int = 1024, icmp_rate: float = 100.0, icmp_burst: int = 10,
                 max_sockets: int = 4096) -> None:
        if dispatch not in MODELS:
            raise ValueError(f"unknown dispatch model {dispatch!r}; one of {', '.join(MODELS)}")
        if batch < 1:
            raise ValueError(f"batch must be at least 1, not {batch}")
        self.interface = interface
        self.name = str(getattr(interface, "name", "if"))
        self.clock = clock
        self.iface = ipaddress.IPv4Interface(ipv4)
        self.ip = str(self.iface.ip)
        self.ip_bytes = self.iface.ip.packed
        self.broadcast = str(self.iface.network.broadcast_address)
        self.mac = mac_bytes(mac) if mac is not None else bytes(interface.mac)
        self.mtu = int(interface.mtu)
        self.batch = batch
        self.pcq_len = pcq_len
        self.max_sockets = max_sockets
        # A buffer holds the longest frame the interface carries.
        size = max(2048, (int(interface.max_frame_len) + 63) // 64 * 64)
        self.pool = BufferPool(pool_size, size)
        self.table = PCBTable(nbuckets=1024)
        self.demux = Demux(self.pool, self.table, max_sockets=max_sockets, capacity=batch,
                           verify_l4=True)
        self.arp = ArpCache(self.mac, self.ip, clock=clock, max_pending_per_ip=64)
        self.reassembler = Reassembler(clock=clock)
        self.icmp_limit = TokenBucket(icmp_rate, icmp_burst, clock=clock)
        # Who holds which lock: _demux_lock, the one caller of Demux.input and
        # of attach/detach (the demux requires that they never overlap); the
        # protocol helpers below are plain Python objects, each behind its own.
        self._demux_lock = threading.Lock()
        self._arp_lock = threading.Lock()
        self._reasm_lock = threading.Lock()
        self._icmp_lock = threading.Lock()
        self._ports_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._sel_cv = threading.Condition(threading.Lock())
        self._sel_gen = 0
        #: threads in select() now (the lrp model wakes them to run socket work)
        self._selecting = 0
        self._socks: dict[int, UDPSocket] = {}
        self._free_ids: list[int] = []
        self._next_id = 0
        self._binds: dict[int, list[UDPSocket]] = {}
        # Raw sockets: replaced whole under _ports_lock, read without a lock.
        self._raw: tuple[RawSocket, ...] = ()
        self._ident = itertools.count(int.from_bytes(os.urandom(2), "big"))
        self._ping_ident = int.from_bytes(os.urandom(2), "big")
        self._ping_seq = itertools.count(1)
        self._pings: dict[tuple[int, int], list[Any]] = {}
        self._c: dict[str, int] = {}
        #: the last exception a frame handler raised (counted as ip.handler_error_<name>)
        self.last_error: Optional[BaseException] = None
        self._handles = np.zeros(batch, dtype=np.uint64)
        self._lengths = np.zeros(batch, dtype=np.uint32)
        self._next_timer = 0.0
        self._stopping = False
        self._closed = False
        self.dispatch: Dispatch = make_dispatch(dispatch, self, kcont_delay, workers, netisr_qlen)
        self.dispatch.start()
        self._puller = threading.Thread(target=self._pull, name=f"{self.name}-puller", daemon=True)
        self._puller.start()

    def __repr__(self) -> str:
        return f"<Stack {self.iface} on {self.name}, {self.dispatch.name}>"

    # -- life cycle -----------------------------------------------------------

    def __enter__(self) -> "Stack":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop and join every thread, close every socket, free every buffer held."""
        if self._closed:
            return
        self._closed = True
        self._stopping = True
        self.interface.wakeup()
        self._puller.join()
        self.dispatch.stop()
        for sock in list(self._socks.values()):
            sock.close()
        for raw in self._raw:
            raw.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def threads(self) -> list[threading.Thread]:
        """The stack's threads still alive (none after :meth:`close`)."""
        out = self.dispatch.threads()
        if self._puller.is_alive():
            out.append(self._puller)
        return out

    # -- counters -------------------------------------------------------------

    def _count(self, name: str, n: int = 1) -> None:
        with self._count_lock:
            self._c[name] = self._c.get(name, 0) + n

    def stats(self) -> dict[str, int]:
        """Every counter of the stack in one dict, ``netstat -s`` style.

        Keys are ``section.counter``: ``demux.*`` (every frame the core saw,
        each drop by reason), ``if.*`` (the interface), ``drop.*`` (drops by
        place: rx ring, no pool buffer, netisr queue, socket PCQ, socket
        receive buffer), ``arp.*``, ``reasm.*``, ``icmp.*``, ``ip.*``,
        ``udp.*``, ``wakeup.*`` (thread wake-ups), the dispatch model's own
        (``netisr.*``, ``kcont.*``), and ``rusage.nvcsw``/``rusage.nivcsw``,
        the process's voluntary and involuntary context switches so far.
        """
        out: dict[str, int] = {}
        demux = self.demux.counters()
        for k, v in demux.items():
            out[f"demux.{k}"] = v
        iface = self.interface.stats()
        for k, v in iface.items():
            out[f"if.{k}"] = v
        with self._count_lock:
            own = dict(self._c)
        for k in ("wakeup.puller", "wakeup.reader", "ip.rx_batches", "ip.rx_frames",
                  "udp.delivered", "udp.rcvbuf_drops"):
            own.setdefault(k, 0)
        out.update(own)
        with self._arp_lock:
            arp = self.arp.stats()
        out.update({f"arp.{k.removeprefix('arp_')}": v for k, v in arp.items()})
        with self._reasm_lock:
            reasm = self.reassembler.stats()
        out.update({f"reasm.{k.removeprefix('reasm_')}": v for k, v in reasm.items()})
        with self._icmp_lock:
            out["icmp.ratelimit_allowed"] = self.icmp_limit.allowed
            out["icmp.ratelimit_denied"] = self.icmp_limit.denied
        disp = self.dispatch.stats()
        out.update(disp)
        out["drop.rx_ring"] = iface.get("rx_ring_full", 0)
        out["drop.rx_no_buffer"] = iface.get("rx_no_buffer", 0)
        out["drop.netisr_queue"] = disp.get("netisr.queue_drops", 0)
        out["drop.socket_pcq"] = demux.get("pcq_full", 0)
        out["drop.socket_rcvbuf"] = own["udp.rcvbuf_drops"] + own.get("raw.rcvbuf_drops", 0)
        out["pool.available"] = self.pool.available
        ru = resource.getrusage(resource.RUSAGE_SELF)
        out["rusage.nvcsw"] = ru.ru_nvcsw
        out["rusage.nivcsw"] = ru.ru_nivcsw
        return out

    # -- the puller and the receive path --------------------------------------

    def _pull(self) -> None:
        """The puller thread: sleep in the interface's wait, pull batches, hand them on."""
        iface = self.interface
        dispatch = self.dispatch
        handles, lengths = self._handles, self._lengths
        while not self._stopping:
            ready = iface.wait(_TIMER_INTERVAL)
            if self._stopping:
                break
            if ready:
                self._count("wakeup.puller")
            self._timers()
            while not self._stopping:
                n = iface.receive_into(self.pool, handles, lengths)
                if n == 0:
                    break
                self._count("ip.rx_frames", n)
                dispatch.rx_batch(handles[:n], lengths[:n])
                if not dispatch.drain_ring:
                    break

    def _timers(self) -> None:
        """ARP retries and expiry, reassembly timeouts, when due."""
        now = self.clock()
        if now < self._next_timer:
            return
        self._next_timer = now + _TIMER_INTERVAL
        with self._arp_lock:
            frames = self.arp.tick()
        if frames:
            self.interface.transmit(frames)
        with self._reasm_lock:
            # Timed-out datagrams are counted by the reassembler (reasm.timeout).
            self.reassembler.expire()

    def _input(self, handles: np.ndarray, lengths: np.ndarray) -> None:
        """One received batch (the caller's buffers become the stack's): demux,
        the small handlers, then the woken sockets to the dispatch model."""
        with self._demux_lock:
            _, woken, other, unmatched = self.demux.input(handles, lengths)
            self._count("ip.rx_batches")
            if len(other) or len(unmatched):
                rows = self.demux.rows
                try:
                    for i in other.tolist():
                        h = int(handles[i])
                        self._guarded(self._other_input, h, int(lengths[i]), rows[h])
                    for i in unmatched.tolist():
                        h = int(handles[i])
                        self._guarded(self._unmatched_input, h, int(lengths[i]), rows[h])
                finally:
                    self.pool.free_many(np.concatenate((handles[other], handles[unmatched])))
            socks = [self._socks.get(sid) for sid in woken.tolist()]
        wake = self.dispatch.wake
        for sock in socks:
            if sock is not None:
                wake(sock)

    def _guarded(self, fn: Callable[..., None], *args: Any) -> None:
        # One bad frame must not stop the batch: count the failure by name.
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - counted, never silent
            self._count(f"ip.handler_error_{type(exc).__name__}")
            self.last_error = exc

    def _packet(self, h: int, row: Any) -> bytes:
        """The IPv4 packet in buffer ``h`` (from its header to its total length)."""
        l3 = int(row["l3_off"])
        data = self.pool.data[h]
        total = (int(data[l3 + 2]) << 8) | int(data[l3 + 3])
        return data[l3:l3 + total].tobytes()

    def _for_us(self, dst: bytes) -> bool:
        return dst == self.ip_bytes or dst == b"\xff\xff\xff\xff" or \
            dst == self.iface.network.broadcast_address.packed

    def _other_input(self, h: int, length: int, row: Any) -> None:
        """A frame for no socket in particular: ARP, ICMP, IPv4 fragments."""
        ethertype = int(row["ethertype"])
        if ethertype == ETH_P_ARP:
            self._count("arp.input")
            with self._arp_lock:
                frames = self.arp.input(row)
            if frames:
                self.interface.transmit(frames)
            return
        if ethertype == ETH_P_IPV6:
            self._count("ip6.unsupported")
            return
        if ethertype != ETH_P_IP:
            self._count("l2.unknown_ethertype")
            return
        packet = self._whole_ip_packet(h, row)
        if packet is None:
            return
        taken = self._rip_input(packet)
        if int(row["proto"]) == IPPROTO_ICMP:
            self._icmp_input(packet)
        elif not taken:
            self._count("ip.proto_unreachable")
            self._send_icmp_unreach(packet, _ICMP_PROTO_UNREACH, self._l2_broadcast(row))

    def _whole_ip_packet(self, h: int, row: Any) -> Optional[bytes]:
        """The IPv4 packet in buffer ``h`` if it is for us and not a fragment;
        None when it was counted as not for us or went to reassembly."""
        if not self._for_us(row["dst"].tobytes()[12:]):
            self._count("ip.not_for_us")
            return None
        packet = self._packet(h, row)
        if int(row["flags"]) & Flag.FRAGMENT:
            self._fragment_input(packet)
            return None
        return packet

    def _unmatched_input(self, h: int, length: int, row: Any) -> None:
        """UDP or TCP with no socket: ICMP port unreachable (RFC 1122 4.1.3.1)."""
        if int(row["ethertype"]) != ETH_P_IP:
            self._count("ip6.unsupported")
            return
        # The first fragment of a datagram for no socket is answered once whole.
        packet = self._whole_ip_packet(h, row)
        if packet is None:
            return
        self._rip_input(packet)
        proto = int(row["proto"])
        if proto == IPPROTO_TCP:
            self._count("tcp.no_socket")
            return
        self._count("udp.no_port")
        self._send_icmp_unreach(packet, _ICMP_PORT_UNREACH, self._l2_broadcast(row))

    @staticmethod
    def _l2_broadcast(row: Any) -> bool:
        return bool(int(row["flags"]) & (Flag.L2_BROADCAST | Flag.L2_MULTICAST))

    def _send_icmp_unreach(self, packet: bytes, code: int, l2_broadcast: bool = False) -> None:
        """A rate-limited Destination Unreachable about ``packet``; none about a
        broadcast, link-level or subnet-directed (RFC 1122 3.2.2)."""
        if l2_broadcast or packet[16:20] == self.iface.network.broadcast_address.packed:
            self._count("icmp.error_suppressed_to_broadcast")
            return
        with self._icmp_lock:
            allowed = self.icmp_limit.allow()
        if not allowed:
            self._count("icmp.ratelimited")
            return
        try:
            error = dest_unreachable(packet, code, self.ip)
        except IcmpRejected as exc:
            self._count(f"icmp.error_suppressed_{exc.reason}")
            return
        self._count("icmp.dest_unreach_sent")
        self._send_packets(packet[12:16], [error])

    def _fragment_input(self, packet: bytes) -> None:
        try:
            frag = ipv4_fragment(packet)
        except ValueError:
            self._count("ip.fragment_malformed")
            return
        with self._reasm_lock:
            data = self.reassembler.input(frag.src, frag.dst, frag.proto, frag.ident,
                                          frag.offset_bytes, frag.more_fragments, frag.payload,
                                          frag.header if frag.offset_bytes == 0 else None)
        if data is None:
            return
        self._count("ip.reassembled")
        taken = False
        if self._raw:
            taken = self._rip_input(ipv4_packet(frag.src, frag.dst, frag.proto, data,
                                                flags_frag=0))
        if frag.proto == IPPROTO_UDP:
            self._udp_datagram_input(frag.src, frag.dst, data)
        elif frag.proto == IPPROTO_ICMP:
            self._icmp_input(ipv4_packet(frag.src, frag.dst, IPPROTO_ICMP, data, flags_frag=0))
        elif not taken:
            self._count("ip.proto_unreachable")
            self._send_icmp_unreach(ipv4_packet(frag.src, frag.dst, frag.proto, data,
                                                flags_frag=0), _ICMP_PROTO_UNREACH)

    def _rip_input(self, packet: bytes) -> bool:
        """rip_input: a copy of a whole IPv4 ``packet`` (header included) to each
        raw socket of its protocol whose bound and connected addresses match;
        True if one took it."""
        raws = self._raw
        if not raws:
            return False
        proto = packet[9]
        src = str(ipaddress.IPv4Address(packet[12:16]))
        dst = str(ipaddress.IPv4Address(packet[16:20]))
        taken = False
        for raw in raws:
            if raw.proto != proto or raw._closed:
                continue
            if raw._laddr != _ANY and raw._laddr != dst:
                continue
            if raw._peer is not None and raw._peer[0] != src:
                continue
            raw._deliver([(packet, (src, 0))])
            taken = True
        if taken:
            self._count("raw.input")
        return taken

    def _udp_datagram_input(self, src: bytes, dst: bytes, segment: bytes) -> None:
        """A reassembled UDP datagram: check it (RFC 768) and queue it on its socket."""
        if len(segment) < 8:
            self._count("udp.truncated")
            return
        sport, dport, ulen, csum = struct.unpack_from("!HHHH", segment)
        if ulen != len(segment):
            self._count("udp.bad_length")
            return
        if csum and internet_checksum(segment, pseudo_header_sum(src, dst, IPPROTO_UDP, ulen)):
            self._count("udp.bad_checksum")
            return
        sid = self.table.lookup(IPPROTO_UDP, dst, dport, src, sport)
        sock = self._socks.get(sid) if sid is not None else None
        if sock is None:
            self._count("udp.no_port")
            self._send_icmp_unreach(ipv4_packet(src, dst, IPPROTO_UDP, segment, flags_frag=0),
                                    _ICMP_PORT_UNREACH)
            return
        sock._deliver([(segment[8:], (str(ipaddress.IPv4Address(src)), sport))])

    def _icmp_input(self, packet: bytes) -> None:
        """An ICMP message to us (RFC 792, RFC 1122 3.2.2)."""
        ihl = (packet[0] & 0x0F) * 4
        message = packet[ihl:]
        if len(message) < 8:
            self._count("icmp.truncated")
            return
        kind = message[0]
        if kind == 8:
            self._count("icmp.echo_requests")
            try:
                reply = echo_reply_packet(packet, self.ip)
            except IcmpRejected as exc:
                self._count(f"icmp.echo_rejected_{exc.reason}")
                return
            self._count("icmp.echo_replies_sent")
            self._send_ip(packet[12:16], IPPROTO_ICMP, reply[20:])
            return
        if icmp_checksum_bad(message):
            self._count("icmp.bad_checksum")
            return
        if kind == 0:
            ident, seq = struct.unpack_from("!HH", message, 4)
            waiter = self._pings.pop((ident, seq), None)
            if waiter is None:
                self._count("icmp.echo_reply_unexpected")
                return
            self._count("icmp.echo_replies_received")
            waiter[1] = self.clock()
            waiter[0].set()
            return
        try:
            err = parse_icmp_error(message, 4)
        except IcmpRejected as exc:
            self._count(f"icmp.rejected_{exc.reason}")
            return
        self._count("icmp.errors_received")
        if err.proto != IPPROTO_UDP or err.src != self.ip_bytes:
            self._count("icmp.errors_not_udp")
            return
        sid = self.table.lookup(IPPROTO_UDP, err.src, err.sport, err.dst, err.dport)
        sock = self._socks.get(sid) if sid is not None else None
        code = _UNREACH_ERRNO.get(err.code) if err.type == 3 else None
        # RFC 1122 4.1.3.3: pass errors to the application; like BSD and Linux,
        # only a connected socket hears of them (the error names its one peer).
        if sock is None or sock._peer is None or code is None:
            self._count("icmp.errors_ignored")
            return
        self._count("icmp.errors_delivered")
        sock._set_error(code)

    # -- protocol input of one socket (run by the dispatch model) ---------------

    def _udp_input(self, sock: UDPSocket) -> None:
        """udp_input for ``sock``: take its PCQ's packets, copy each payload and
        source out, free the buffers, queue the datagrams, wake the readers."""
        with sock._in_lock:
            if sock._closed:
                return
            rows_all = self.demux.rows
            data = self.pool.data
            items: list[tuple[bytes, tuple[str, int]]] = []
            frags: list[bytes] = []
            raw_copies: list[bytes] = []
            raw_udp = any(r.proto == IPPROTO_UDP for r in self._raw)
            names: dict[bytes, str] = {}
            while True:
                hs = sock.pcq.get_many(256)
                if not len(hs):
                    break
                rows = rows_all[hs]
                flags = rows["flags"].tolist()
                offs = rows["payload_off"].tolist()
                lens = rows["payload_len"].tolist()
                sports = rows["sport"].tolist()
                srcs = rows["src"][:, 12:]
                for k, h in enumerate(hs.tolist()):
                    if flags[k] & Flag.FRAGMENT:
                        # A first fragment: its datagram is whole only after reassembly.
                        frags.append(self._packet(h, rows[k]))
                        continue
                    if raw_udp:
                        raw_copies.append(self._packet(h, rows[k]))
                    src = srcs[k].tobytes()
                    name = names.get(src)
                    if name is None:
                        name = names[src] = str(ipaddress.IPv4Address(src))
                    off = offs[k]
                    items.append((data[h, off:off + lens[k]].tobytes(), (name, sports[k])))
                self.pool.free_many(hs)
            self._count("udp.input_runs")
        for packet in raw_copies:
            self._rip_input(packet)
        if items:
            sock._deliver(items)
        for packet in frags:
            self._fragment_input(packet)

    # -- sockets ----------------------------------------------------------------

    def socket(self, family: int = AF_INET, type: int = SOCK_DGRAM,
               proto: int = 0) -> DatagramSocket:
        """A new socket: ``AF_INET``/``SOCK_DGRAM`` (a :class:`UDPSocket`) or
        ``AF_INET``/``SOCK_RAW`` with a protocol 1..254 (a :class:`RawSocket`)."""
        if self._closed:
            raise _oserror(errno.ENETDOWN)
        if family != AF_INET:
            raise _oserror(errno.EAFNOSUPPORT)
        if type == SOCK_RAW:
            # 0 names no protocol; 255 (IPPROTO_RAW) is send-only with IP_HDRINCL.
            if not 1 <= proto <= 254:
                raise _oserror(errno.EPROTONOSUPPORT)
            with self._demux_lock:
                raw = RawSocket(self, self._new_id(), proto)
            with self._ports_lock:
                self._raw = self._raw + (raw,)
            return raw
        if type != SOCK_DGRAM or proto not in (0, IPPROTO_UDP):
            raise _oserror(errno.EPROTONOSUPPORT)
        with self._demux_lock:
            sid = self._new_id()
            sock = UDPSocket(self, sid, PCQ(self.pcq_len))
            sock._cont = self.dispatch.continuation(sock)
            # Attached before its pcb enters the table (the demux's rule).
            self.demux.attach(sid, sock.pcq)
            self._socks[sid] = sock
        return sock

    def _new_id(self) -> int:
        """A free socket id (under the demux lock)."""
        if self._free_ids:
            return self._free_ids.pop()
        if self._next_id < self.max_sockets:
            self._next_id += 1
            return self._next_id - 1
        raise _oserror(errno.EMFILE)

    def sockets(self) -> list[DatagramSocket]:
        """The open sockets."""
        return [*self._socks.values(), *self._raw]

    def _raw_bind(self, sock: RawSocket, host: str) -> None:
        if host not in (_ANY, self.ip):
            raise _oserror(errno.EADDRNOTAVAIL)
        sock._laddr = host

    def _raw_connect(self, sock: RawSocket, host: str) -> None:
        self._check_route(host)
        sock._peer = (host, 0)

    def _raw_output(self, sock: RawSocket, host: str, payload: bytes) -> None:
        self._check_route(host)
        self._count("raw.sent")
        self._send_ip(ipaddress.IPv4Address(host).packed, sock.proto, payload)

    def _raw_close(self, sock: RawSocket) -> None:
        with self._ports_lock:
            self._raw = tuple(r for r in self._raw if r is not sock)
        with self._demux_lock:
            self._free_ids.append(sock.id)

    def _pcb_key(self, sock: UDPSocket) -> tuple[int, str, int, Optional[str], int]:
        peer = sock._peer
        return (IPPROTO_UDP, sock._laddr, sock._lport, peer[0] if peer else None,
                peer[1] if peer else 0)

    def _udp_bind(self, sock: UDPSocket, host: str, port: int) -> None:
        if host not in (_ANY, self.ip):
            raise _oserror(errno.EADDRNOTAVAIL)
        with self._ports_lock:
            if port == 0:
                port = self._ephemeral_port()
            for other in self._binds.get(port, ()):
                if other._laddr == _ANY or host == _ANY or other._laddr == host:
                    raise _oserror(errno.EADDRINUSE)
            self.table.insert(IPPROTO_UDP, host, port, None, 0, sock.id)
            self._binds.setdefault(port, []).append(sock)
            sock._laddr, sock._lport = host, port

    def _ephemeral_port(self) -> int:
        lo, hi = 49152, 65535
        start = lo + int.from_bytes(os.urandom(2), "big") % (hi - lo + 1)
        for i in range(hi - lo + 1):
            port = lo + (start - lo + i) % (hi - lo + 1)
            if port not in self._binds:
                return port
        raise _oserror(errno.EAGAIN)

    def _check_route(self, host: str) -> None:
        addr = ipaddress.IPv4Address(host)
        if addr not in self.iface.network and host != "255.255.255.255":
            # One interface and no gateway: only the attached network is reachable.
            self._count("ip.no_route")
            raise _oserror(errno.ENETUNREACH)

    def _udp_connect(self, sock: UDPSocket, host: str, port: int) -> None:
        self._check_route(host)
        with self._ports_lock:
            old = self._pcb_key(sock)
            # connect() fixes the source address (RFC 1122 4.1.3.4).
            laddr = self.ip if sock._laddr == _ANY else sock._laddr
            self.table.insert(IPPROTO_UDP, laddr, sock._lport, host, port, sock.id)
            self.table.remove(*old)
            sock._laddr, sock._peer = laddr, (host, port)
            sock._error = 0

    def _udp_close(self, sock: UDPSocket) -> None:
        with self._ports_lock:
            if sock._lport:
                self.table.remove(*self._pcb_key(sock))
                users = self._binds.get(sock._lport, [])
                if sock in users:
                    users.remove(sock)
                if not users:
                    self._binds.pop(sock._lport, None)
        with self._demux_lock:
            # Detached after its pcb left the table (the demux's rule).
            self.demux.detach(sock.id)
            self._socks.pop(sock.id, None)
        if sock._cont is not None:
            sock._cont.cancel()
        with sock._in_lock:
            sock._closed = True
            while True:
                hs = sock.pcq.get_many(256)
                if not len(hs):
                    break
                self._count("udp.closed_drops", len(hs))
                self.pool.free_many(hs)
        with self._demux_lock:
            self._free_ids.append(sock.id)

    def _udp_output(self, sock: UDPSocket, host: str, port: int, payload: bytes) -> None:
        self._check_route(host)
        if host in ("255.255.255.255", self.broadcast) and not sock.broadcast:
            # As in BSD and Linux: broadcasting needs SO_BROADCAST.
            raise _oserror(errno.EACCES, PermissionError)
        src = self.ip if sock._laddr == _ANY else sock._laddr
        dst = ipaddress.IPv4Address(host).packed
        self._count("udp.sent")
        self._send_ip(dst, IPPROTO_UDP, udp(src, dst, sock._lport, port, payload))

    # -- output -----------------------------------------------------------------

    def _send_ip(self, dst: bytes, proto: int, payload: bytes) -> None:
        """Send ``payload`` to ``dst`` as one IPv4 datagram, in fragments above the MTU."""
        packets = fragment_ipv4(self.ip_bytes, dst, proto, payload, self.mtu,
                                next(self._ident) & 0xFFFF)
        if len(packets) > 1:
            self._count("ip.fragments_sent", len(packets))
        self._send_packets(dst, packets)

    def _send_packets(self, dst: bytes, packets: Sequence[bytes]) -> None:
        """Frame IPv4 packets for next hop ``dst`` (ARP, packets held while it
        resolves) and transmit them."""
        self._count("ip.out_packets", len(packets))
        if dst == b"\xff\xff\xff\xff" or dst == self.iface.network.broadcast_address.packed:
            frames = [ethernet(_BROADCAST_MAC, self.mac, ETH_P_IP, p) for p in packets]
        else:
            frames = []
            with self._arp_lock:
                for p in packets:
                    frames += self.arp.resolve(dst, p)
        if frames:
            self.interface.transmit(frames)

    # -- ping and readiness -----------------------------------------------------

    def ping(self, host: str, payload: bytes = b"", timeout: float = 1.0) -> float:
        """Send an ICMP Echo Request to ``host``; the round trip in seconds of
        ``clock``; TimeoutError when no reply came within ``timeout`` seconds."""
        self._check_route(host)
        dst = ipaddress.IPv4Address(host).packed
        seq = next(self._ping_seq) & 0xFFFF
        key = (self._ping_ident, seq)
        waiter: list[Any] = [threading.Event(), None]
        self._pings[key] = waiter
        start = self.clock()
        self._count("icmp.echo_requests_sent")
        self._send_ip(dst, IPPROTO_ICMP, icmp_echo(self._ping_ident, seq, payload))
        if not waiter[0].wait(timeout):
            self._pings.pop(key, None)
            raise TimeoutError("timed out")
        return float(waiter[1] - start)

    def _readiness_changed(self) -> None:
        with self._sel_cv:
            self._sel_gen += 1
            self._sel_cv.notify_all()

    def select(self, rlist: Sequence[DatagramSocket], wlist: Sequence[DatagramSocket] = (),
               timeout: Optional[float] = None
               ) -> tuple[list[DatagramSocket], list[DatagramSocket]]:
        """``(readable, writable)``: the sockets of ``rlist`` with a datagram, an
        error or end of input to report, and those of ``wlist`` that can send (a
        UDP socket always can).  Waits up to ``timeout`` seconds (None: until
        one is ready; 0: a poll)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        lazy = self.dispatch.lazy_receiver
        with self._sel_cv:
            # Counted for the whole call, so the lrp wake-up of a socket
            # scheduled after the receiver_run below still reaches this thread.
            self._selecting += 1
        try:
            while True:
                for sock in rlist:
                    # Lazy receiver processing, as in recv.
                    self.dispatch.receiver_run(sock)
                with self._sel_cv:
                    gen = self._sel_gen
                    readable = [s for s in rlist if s._readable()]
                    writable = [s for s in wlist if not s._closed and not s._shut_wr]
                    if readable or writable:
                        return readable, writable
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return [], []
                    if lazy and any(s._cont is not None and s._cont.pending for s in rlist):
                        # Work is pending (or running in another thread): look
                        # again shortly rather than sleep through it.
                        remaining = 0.001 if remaining is None else min(remaining, 0.001)
                    self._sel_cv.wait_for(lambda: self._sel_gen != gen, remaining)
        finally:
            with self._sel_cv:
                self._selecting -= 1
