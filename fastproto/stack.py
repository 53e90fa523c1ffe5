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
from fastproto._core.udp import udp4_frame, udp4_template, udp_take
from fastproto.checksum import internet_checksum, pseudo_header_sum
from fastproto.dispatch import MODELS, Dispatch, make_dispatch
from fastproto.proto.arp import ArpCache
from fastproto.proto.icmp import (IcmpRejected, dest_unreachable, echo_reply_packet,
                                  error_suppressed, icmp_checksum_bad, icmp_error,
                                  icmpv6_checksum_bad, parse_icmp_error)
from fastproto.proto.ndp import ALL_NODES, NeighborCache
from fastproto.proto.ratelimit import TokenBucket
from fastproto.proto.reassembly import (Reassembler, fragment_ipv4, fragment_ipv6,
                                        ipv4_fragment, ipv6_fragment)
from fastproto.socket import (_ANY6, AF_INET, AF_INET6, SOCK_DGRAM, SOCK_RAW, DatagramSocket,
                              RawSocket, UDP6Socket, UDPSocket, _oserror)
from fastproto.wire.ethernet import ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, ethernet, mac_bytes
from fastproto.wire.icmp import (ICMPV6_DEST_UNREACH, ICMPV6_PARAMETER_PROBLEM,
                                 icmpv6_message, ipv6_multicast_mac, solicited_node)
from fastproto.wire.ip import ipv4 as ipv4_packet
from fastproto.wire.ip import ipv6 as ipv6_packet
from fastproto.wire.ip import link_local_address
from fastproto.wire.l4 import icmp_echo, udp
from fastproto.tcp_layer import TcpLayer
from fastproto.socket import SOL_SOCKET, ephemeral_port
from fastproto.tcp_socket import SO_REUSEADDR, SOCK_STREAM, TCPSocket

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
IPPROTO_ICMPV6 = 58
IPPROTO_NONE = 59
# ICMPv6 errors a connected UDP socket hears of, as Linux reports them (the "hard"
# errors of RFC 4443 3.1 and 3.4): (type, code or None for any) -> errno.
_ICMP6_ERRNO = {(1, 1): errno.EACCES, (1, 4): errno.ECONNREFUSED, (1, 5): errno.EACCES,
                (1, 6): errno.EACCES, (4, None): errno.EPROTO}
_ICMP6_TYPE_NAMES = {1: "dest_unreach", 2: "pkt_too_big", 3: "time_exceeded",
                     4: "param_problem"}
# Extension headers whose first byte is the Next Header field (RFC 8200 4).
_IPV6_EXT_HEADERS = {0: 8, 43: 8, 44: 8, 51: 4, 60: 8}
#: the interface index reported as the scope id of link-local addresses
IPV6_SCOPE_ID = 1
#: an IPv4 header without options followed by a UDP header (RFC 791, RFC 768)
#: an Ethernet header's length, and the MAC a frame built before ARP resolved carries
_ETH_HEADER = 14
_NO_MAC = bytes(6)
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
    (RFC 1812 4.3.2.8).  ``ipv6``: an IPv6 address and prefix
    (``"2001:2::2/64"``) to run IPv6 too, with the link-local address derived
    from the MAC; None (the default): IPv6 frames are counted and dropped.
    ``checksum_on_copy``: the checksum of a whole UDP datagram is verified
    while its payload is copied out of the buffer, in one pass (else the
    demux verifies it and the copy reads the payload again).

    Threads start at construction and stop in :meth:`close` (or on leaving
    ``with``), which joins every one of them.
    """

    def __init__(self, interface: Any, ipv4: str = "198.18.0.2/24", mac: Optional[Union[str, bytes]] = None,
                 dispatch: str = "lrp", pool_size: int = 4096, batch: int = 256,
                 kcont_delay: float = 0.0005, workers: int = 1,
                 clock: Callable[[], float] = time.monotonic, pcq_len: int = 1024,
                 netisr_qlen: int = 1024, icmp_rate: float = 100.0, icmp_burst: int = 10,
                 max_sockets: int = 4096, ipv6: Optional[str] = None,
                 busy_poll: int = 0, tcp: Optional[dict[str, Any]] = None,
                 checksum_on_copy: bool = True) -> None:
        if dispatch not in MODELS:
            raise ValueError(f"unknown dispatch model {dispatch!r}; one of {', '.join(MODELS)}")
        if batch < 1:
            raise ValueError(f"batch must be at least 1, not {batch}")
        if not isinstance(busy_poll, int) or busy_poll < 0:
            raise ValueError(f"busy_poll is microseconds >= 0, not {busy_poll!r}")
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
                           verify_l4=True, defer_udp_checksum=checksum_on_copy)
        self.arp = ArpCache(self.mac, self.ip, clock=clock, max_pending_per_ip=64)
        self.reassembler = Reassembler(clock=clock)
        self.icmp_limit = TokenBucket(icmp_rate, icmp_burst, clock=clock)
        self._ip6_setup(ipv6, clock, icmp_rate, icmp_burst)
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
        #: held by whoever takes batches off the rx ring: the puller thread, or
        #: (lrp) a receiver pulling while it waits in recv
        self._pull_lock = threading.Lock()
        #: False once the interface refused to route its interrupt to a receiver
        self._rx_routable = True
        #: the socket whose receiver pulls the interface now (under _pull_lock)
        self._pulling_sock: Optional[DatagramSocket] = None
        #: the pulling receiver's doorbell (see _rx_interrupt): locked unless rung
        self._bell = threading.Lock()
        self._bell.acquire()
        self._bell_armed = False
        #: microseconds a pulling receiver spins on the rx ring before sleeping
        #: (SO_BUSY_POLL's default for the stack's sockets)
        self.busy_poll = busy_poll
        #: destination text -> (packed address, broadcast?), for destinations
        #: already routed (the route never changes)
        self._routes: dict[str, tuple[bytes, bool]] = {}
        #: packed IPv4 source -> its text, for the receive path
        self._src_names: dict[bytes, Any] = {}
        #: the destinations a UDP datagram may have (``_udp_destinations``), once known
        self._udp_accept: Optional[tuple[bytes, bytes, bytes]] = None
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
        #: TCP: ports, pcbs, timers, settings (``tcp``: keywords for TcpLayer/TcpConfig)
        self.tcp = TcpLayer(self, **(tcp or {}))
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
            if isinstance(sock, TCPSocket):
                # Closing the stack ends its connections at once (RST), and
                # gives back what lingering ones hold.
                sock._linger = 0
                sock.close()
                self.tcp.release_now(sock)
            else:
                sock.close()
        for raw in self._raw:
            raw.close()
        self.tcp.close()

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

    def _count_puller(self, name: str, n: int = 1) -> None:
        """``_count`` for a counter only the thread holding ``_pull_lock``
        writes: one writer needs no lock (each dict operation is atomic under
        the GIL, and no other thread does a read-modify-write of this key)."""
        self._c[name] = self._c.get(name, 0) + n

    def stats(self) -> dict[str, float]:
        """Every counter of the stack in one dict, ``netstat -s`` style.

        Keys are ``section.counter``: ``demux.*`` (every frame the core saw,
        each drop by reason), ``if.*`` (the interface), ``drop.*`` (drops by
        place: rx ring, no pool buffer, netisr queue, socket PCQ, socket
        receive buffer), ``arp.*``, ``reasm.*``, ``icmp.*``, ``ip.*``,
        ``udp.*``, ``wakeup.*`` (thread wake-ups), the dispatch model's own
        (``netisr.*``, ``kcont.*``), and ``rusage.nvcsw``/``rusage.nivcsw``,
        the process's voluntary and involuntary context switches so far.
        All are counts but ``udp.payload_reads_per_byte``, a ratio: payload
        bytes read per payload byte delivered to UDP sockets (1.0 with
        checksum-on-copy, 2.0 when verified first and copied after).
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
        if self.nd is not None:
            with self._nd_lock:
                nd = self.nd.stats()
            out.update({f"nd.{k.removeprefix('nd_')}": v for k, v in nd.items()})
            with self._icmp_lock:
                out["icmp6.ratelimit_allowed"] = self.icmp6_limit.allowed
                out["icmp6.ratelimit_denied"] = self.icmp6_limit.denied
        disp = self.dispatch.stats()
        out.update(disp)
        out.update(self.tcp.stats())
        out["drop.rx_ring"] = iface.get("rx_ring_full", 0)
        out["drop.rx_no_buffer"] = iface.get("rx_no_buffer", 0)
        out["drop.netisr_queue"] = disp.get("netisr.queue_drops", 0)
        out["drop.socket_pcq"] = demux.get("pcq_full", 0)
        out["drop.socket_rcvbuf"] = own["udp.rcvbuf_drops"] + own.get("raw.rcvbuf_drops", 0)
        # Checksum-on-copy reads each delivered payload byte once; verifying
        # in the demux and copying afterwards, twice.
        delivered = own.get("udp.delivered_bytes", 0)
        out["udp.payload_reads_per_byte"] = \
            own.get("udp.payload_bytes_read", 0) / delivered if delivered else 0.0
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
        pull_lock = self._pull_lock
        while not self._stopping:
            ready = iface.wait(_TIMER_INTERVAL)
            if self._stopping:
                break
            # A receiver pulling the interface (lrp) holds the lock; the
            # interrupt then goes to it, so this only waits out its hand-back.
            if not pull_lock.acquire(timeout=_TIMER_INTERVAL):
                continue
            try:
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
            finally:
                pull_lock.release()

    # -- a receiver pulling the interface itself (lrp) ---------------------------

    def _pull_begin(self, sock: DatagramSocket) -> bool:
        """Make the calling thread, blocked in ``sock``'s recv, the one that pulls
        the interface (the puller thread stays asleep: the interrupt is routed
        to ``sock``'s readers); False if another thread pulls or the device
        cannot route its interrupt."""
        if not self._rx_routable or not self._pull_lock.acquire(False):
            return False
        self._pulling_sock = sock
        notify = getattr(self.interface, "rx_notify", None)
        if notify is None or not notify(self._rx_interrupt):
            self._pulling_sock = None
            self._rx_routable = False
            self._pull_lock.release()
            return False
        self._count_puller("lrp.receiver_pulling")
        return True

    def _pull_end(self) -> None:
        """Give pulling back to the puller thread (woken if frames are waiting)."""
        self.interface.rx_notify(None)
        self._pulling_sock = None
        self._pull_lock.release()

    # The pulling receiver sleeps on a doorbell: a plain lock, kept locked,
    # that a ring releases.  Cheaper than a threading.Condition, whose waker
    # holds the condition's lock while it notifies, so that the woken thread
    # must wait for that lock too (more switches per hand-off).

    def _rx_interrupt(self) -> None:
        """Wake the pulling receiver if it sleeps: the interface's rx interrupt
        while a receiver pulls (called under the ring lock), or news on the
        socket it reads (a datagram delivered by another thread, an error,
        shutdown, close)."""
        if self._bell_armed:
            # Armed before the sleeper's last look: whatever called this
            # happened after that look, so the sleeper must wake.
            self._bell_armed = False
            try:
                self._bell.release()
            except RuntimeError:
                pass  # released already by a concurrent ring: one wake is enough

    def _receiver_sleep(self, sock: DatagramSocket, timeout: float) -> bool:
        """Sleep, as the pulling receiver of ``sock``, until a frame arrives, the
        socket has news or ``timeout`` seconds pass; True if woken by a ring.
        Returns False at once if there is something to do already."""
        cont = sock._cont
        self._bell_armed = True
        try:
            # Looked at only after arming: anything that changes what is seen
            # here afterwards rings (under the GIL these steps are ordered).
            if sock._readable() or self.interface.rx_ready() or \
                    (cont is not None and cont.pending):
                return False
            woken = self._bell.acquire(timeout=timeout)
        finally:
            self._bell_armed = False
        if woken:
            sock.reader_wakeups += 1
            self._count("wakeup.reader")
        # Not woken: a ring may still come (it saw the arming before the
        # finally above); the lock is then left released and the next sleep
        # returns at once, a harmless extra look.
        return woken

    def _receiver_pull(self, sock: DatagramSocket) -> bool:
        """One batch off the rx ring, pulled by ``sock``'s receiver (which called
        :meth:`_pull_begin`): demux, other sockets' work to the dispatch model,
        ``sock``'s protocol input in this thread.  False if the ring was empty."""
        if self.clock() >= self._next_timer:
            self._timers()
        iface = self.interface
        # The interface's interrupt is routed to this thread: an empty ring
        # here is seen without taking the driver's lock.
        if not iface.rx_ready():
            return False
        n = iface.receive_into(self.pool, self._handles, self._lengths)
        if n == 0:
            return False
        c = self._c
        # Counters only the thread holding the pull lock writes (_count_puller).
        c["ip.rx_frames"] = c.get("ip.rx_frames", 0) + n
        c["lrp.receiver_pulls"] = c.get("lrp.receiver_pulls", 0) + 1
        self.dispatch.receiver_batch(sock, self._handles[:n], self._lengths[:n])
        return True

    def _busy_poll(self, seconds: float) -> bool:
        """Spin up to ``seconds`` for frames on the rx ring (SO_BUSY_POLL),
        yielding the GIL and the CPU between looks; True if frames came."""
        ready = self.interface.rx_ready
        end = time.perf_counter() + seconds
        spins = 0
        try:
            while not ready():
                if time.perf_counter() >= end:
                    return False
                spins += 1
                os.sched_yield()
            return True
        finally:
            self._count("lrp.busy_poll_spins", spins)

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
        if self.nd is not None:
            with self._nd_lock:
                frames = self.nd.tick()
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
            # One writer at a time (the demux lock's holder): no counter lock.
            self._c["ip.rx_batches"] = self._c.get("ip.rx_batches", 0) + 1
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
            socks = list(map(self._socks.get, woken.tolist()))
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
        """The IPv4 or IPv6 packet in buffer ``h`` (from its header to its total
        length, or to 40 + Payload Length: what follows is link padding)."""
        l3 = int(row["l3_off"])
        data = self.pool.data[h]
        if int(row["ip_version"]) == 6:
            total = 40 + ((int(data[l3 + 4]) << 8) | int(data[l3 + 5]))
        else:
            total = (int(data[l3 + 2]) << 8) | int(data[l3 + 3])
        return data[l3:l3 + total].tobytes()

    def _for_us(self, dst: bytes) -> bool:
        if len(dst) == 16:
            # Our unicast addresses and the groups we joined (RFC 4861 7.2.1).
            return dst in self._ip6_mine or dst in self._ip6_groups
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
            self._ip6_input(h, length, row, False)
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
        if int(row["ethertype"]) == ETH_P_IPV6:
            self._ip6_input(h, length, row, True)
            return
        if int(row["ethertype"]) != ETH_P_IP:
            self._count("l2.unknown_ethertype")
            return
        # The first fragment of a datagram for no socket is answered once whole.
        packet = self._whole_ip_packet(h, row)
        if packet is None:
            return
        self._rip_input(packet)
        proto = int(row["proto"])
        if proto == IPPROTO_TCP:
            self._count("tcp.no_socket")
            self._tcp_reset_for(h, row)
            return
        self._count("udp.no_port")
        self._send_icmp_unreach(packet, _ICMP_PORT_UNREACH, self._l2_broadcast(row))

    def _tcp_reset_for(self, h: int, row: Any) -> None:
        """A TCP segment that reached no socket: answered with a reset (RFC 9293 3.10.7.1)."""
        if int(row["flags"]) & (Flag.L2_BROADCAST | Flag.L2_MULTICAST):
            return
        src, dst = row["src"].tobytes(), row["dst"].tobytes()
        if int(row["ip_version"]) == 4:
            src, dst = src[12:], dst[12:]
        self.tcp.reset_for(src, dst, int(row["sport"]), int(row["dport"]), int(row["tcp_seq"]),
                           int(row["tcp_ack"]), int(row["tcp_flags"]), int(row["payload_len"]))

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
        elif frag.proto == IPPROTO_TCP:
            self.tcp.datagram_input(frag.src, frag.dst, data)
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
        """udp_input (udp6_input) for ``sock``: take its PCQ's packets, copy each
        payload and source out, free the buffers, queue the datagrams, wake
        the readers."""
        if sock.type == SOCK_STREAM:
            return sock._protocol_input()
        v6 = sock.family == AF_INET6
        with sock._in_lock:
            if sock._closed:
                return
            raws = self._raw
            raw_udp = not v6 and bool(raws) and any(r.proto == IPPROTO_UDP for r in raws)
            accept = self._udp_accept
            if accept is None:
                accept = self._udp_accept = self._udp_destinations()
            # Per datagram in the core: destination and source checked,
            # payload and source copied out of the buffer (the checksum
            # verified in the same pass), the buffer freed.  This is the hot
            # path: no per-datagram work in Python before naming the sources.
            datagrams, held, nread, drops = udp_take(
                sock.pcq, self.demux.rows, self.pool, sock.pcq.maxlen, raw_udp, accept)
            frags = []
            if held:
                frags = [self._packet(h, self.demux.rows[h]) for h in held]
                self.pool.free_many(held)
            with self._count_lock:
                c = self._c
                c["udp.input_runs"] = c.get("udp.input_runs", 0) + 1
                c["udp.payload_bytes_read"] = c.get("udp.payload_bytes_read", 0) + nread
                if drops:
                    section = "udp6." if v6 else "udp."
                    for reason, n in drops.items():
                        key = section + reason
                        c[key] = c.get(key, 0) + n
                if v6:
                    taken = len(datagrams) + len(held) + (sum(drops.values()) if drops else 0)
                    c["ip6.in_receives"] = c.get("ip6.in_receives", 0) + taken
        names = self._src_names
        items: list[tuple[bytes, Any]] = []
        for d in datagrams:
            name = names.get(d[1])
            if name is None:
                if len(names) >= 4096:
                    names.clear()
                if v6:
                    # RFC 4007 6: a link-local peer is named with its zone.
                    name = names[d[1]] = (str(ipaddress.IPv6Address(d[1])),
                                          IPV6_SCOPE_ID if _link_scope(d[1]) else 0)
                else:
                    name = names[d[1]] = str(ipaddress.IPv4Address(d[1]))
            items.append((d[0], (name[0], d[2], 0, name[1]) if v6 else (name, d[2])))
            if raw_udp:
                self._rip_input(d[3])
        if items:
            sock._deliver(items)
        for packet in frags:
            if v6:
                self._fragment6_input(packet)
            else:
                self._fragment_input(packet)

    def _udp_destinations(self) -> tuple[bytes, bytes, bytes]:
        """What a UDP datagram may be sent to and still be ours, as ``udp_take``
        takes it: our IPv4 address and the broadcasts, our IPv6 addresses and
        groups, and the MACs those arrive on."""
        v4 = self.ip_bytes + b"\xff\xff\xff\xff" + self.iface.network.broadcast_address.packed
        macs = self.mac + b"\xff" * 6 + b"".join(sorted(self._ip6_group_macs))
        v6 = b"".join(sorted(self._ip6_mine | self._ip6_groups))
        return v4, v6, macs

    def socket(self, family: int = AF_INET, type: int = SOCK_DGRAM,
               proto: int = 0) -> DatagramSocket:
        """A new socket: ``AF_INET``/``SOCK_DGRAM`` (a :class:`UDPSocket`) or
        ``AF_INET``/``SOCK_RAW`` with a protocol 1..254 (a :class:`RawSocket`)."""
        if self._closed:
            raise _oserror(errno.ENETDOWN)
        if type == SOCK_STREAM and family in (AF_INET, AF_INET6):
            if proto not in (0, IPPROTO_TCP):
                raise _oserror(errno.EPROTONOSUPPORT)
            return self.tcp.socket(family)  # type: ignore[return-value]
        if family == AF_INET6:
            return self._socket6(type, proto)
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

    def create_connection(self, address: tuple[str, int], timeout: Optional[float] = None,
                          source_address: Optional[tuple[str, int]] = None) -> TCPSocket:
        """A TCP socket connected to ``address`` (``socket.create_connection``):
        IPv6 when the host is an IPv6 address; ``timeout`` seconds for the connect
        and afterwards; bound to ``source_address`` first if given."""
        host = address[0]
        family = AF_INET6 if ":" in host else AF_INET
        sock = self.tcp.socket(family)
        try:
            if timeout is not None:
                sock.settimeout(timeout)
            if source_address is not None:
                sock.bind(source_address)
            sock.connect(address)
        except BaseException:
            sock.close()
            raise
        return sock

    def create_server(self, address: tuple[str, int], *, family: int = AF_INET,
                      backlog: Optional[int] = None, reuse_port: bool = False) -> TCPSocket:
        """A TCP socket bound to ``address`` and listening (``socket.create_server``;
        ``SO_REUSEADDR`` set, as there).  ``reuse_port`` is not supported."""
        if reuse_port:
            raise ValueError("SO_REUSEPORT not supported on this platform")
        sock = self.tcp.socket(family)
        try:
            sock.setsockopt(SOL_SOCKET, SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(128 if backlog is None else backlog)
        except BaseException:
            sock.close()
            raise
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

    def _is_local(self, family: int, host: str) -> bool:
        """Whether ``host`` (text) is the wildcard or one of our addresses of ``family``."""
        if family == AF_INET6:
            return host == _ANY6 or ipaddress.IPv6Address(host).packed in self._ip6_mine
        return host in (_ANY, self.ip)

    def _udp_bind(self, sock: UDPSocket, host: str, port: int) -> None:
        if not self._is_local(sock.family, host):
            raise _oserror(errno.EADDRNOTAVAIL)
        # IPv4 and IPv6 have separate port spaces (no dual stack).
        binds = self._binds6 if sock.family == AF_INET6 else self._binds
        with self._ports_lock:
            if port == 0:
                port = ephemeral_port(binds.__contains__, errno.EAGAIN)
            for other in binds.get(port, ()):
                if other._laddr == sock._any or host == sock._any or other._laddr == host:
                    raise _oserror(errno.EADDRINUSE)
            self.table.insert(IPPROTO_UDP, host, port, None, 0, sock.id)
            binds.setdefault(port, []).append(sock)
            sock._laddr, sock._lport = host, port

    def _check_route(self, host: str) -> None:
        if ":" in host:
            self._check_route6(host)
            return
        addr = ipaddress.IPv4Address(host)
        if addr not in self.iface.network and host != "255.255.255.255":
            # One interface and no gateway: only the attached network is reachable.
            self._count("ip.no_route")
            raise _oserror(errno.ENETUNREACH)

    def _source_address(self, family: int, host: str) -> str:
        """Our address (text) for talking to ``host``: the IPv4 one, or the IPv6
        one of the same scope (RFC 6724 5)."""
        if family == AF_INET6:
            return str(ipaddress.IPv6Address(self._source6(ipaddress.IPv6Address(host).packed)))
        return self.ip

    def _udp_connect(self, sock: UDPSocket, host: str, port: int) -> None:
        self._check_route(host)
        with self._ports_lock:
            old = self._pcb_key(sock)
            # connect() fixes the source address (RFC 1122 4.1.3.4).
            laddr = self._source_address(sock.family, host) if sock._laddr == sock._any \
                else sock._laddr
            self.table.insert(IPPROTO_UDP, laddr, sock._lport, host, port, sock.id)
            self.table.remove(*old)
            sock._laddr, sock._peer = laddr, (host, port)
            sock._error = 0

    def _udp_close(self, sock: UDPSocket) -> None:
        binds = self._binds6 if sock.family == AF_INET6 else self._binds
        with self._ports_lock:
            if sock._lport:
                self.table.remove(*self._pcb_key(sock))
                users = binds.get(sock._lport, [])
                if sock in users:
                    users.remove(sock)
                if not users:
                    binds.pop(sock._lport, None)
        self._release_socket(sock, "udp.closed_drops")

    def _release_socket(self, sock: Any, drops: str) -> None:
        """Give back a socket whose pcb already left the table: detach its PCQ,
        free (and count under ``drops``) the packets still on it, free its id."""
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
                self._count(drops, len(hs))
                self.pool.free_many(hs)
        with self._demux_lock:
            self._free_ids.append(sock.id)

    def _udp_output(self, sock: UDPSocket, host: str, port: int, payload: bytes) -> None:
        route = self._routes.get(host)
        if route is None:
            route = self._route(host)
        dst, broadcast = route
        if broadcast and not sock.broadcast:
            # As in BSD and Linux: broadcasting needs SO_BROADCAST.
            raise _oserror(errno.EACCES, PermissionError)
        laddr = sock._laddr
        if not broadcast and (laddr == _ANY or laddr == self.ip) and \
                28 + len(payload) <= self.mtu:
            self._udp_output_one(sock, dst, port, payload)
            return
        src = self.ip if laddr == _ANY else laddr
        self._count("udp.sent")
        self._send_ip(dst, IPPROTO_UDP, udp(src, dst, sock._lport, port, payload))

    def _route(self, host: str) -> tuple[bytes, bool]:
        """``(packed address, broadcast?)`` for IPv4
        destination ``host`` once it is known to be routable (raising as
        ``_check_route`` does otherwise), remembered for the next datagrams."""
        self._check_route(host)
        dst = ipaddress.IPv4Address(host).packed
        route = (dst, host in ("255.255.255.255", self.broadcast))
        if len(self._routes) >= 4096:
            self._routes.clear()
        self._routes[host] = route
        return route

    def _udp_output_one(self, sock: UDPSocket, dst: bytes, dport: int, payload: bytes) -> None:
        """One unicast UDP datagram that fits the MTU, from our address: built
        in the core from the socket's header template for this destination
        when the next hop is resolved (else through ``_send_packets``, to wait
        for ARP)."""
        with self._arp_lock:
            mac = self.arp.lookup(dst)
        sport = sock._lport
        ident = next(self._ident) & 0xFFFF
        if mac is None:
            self._count("udp.sent")
            self._send_packets(dst, [udp4_frame(
                udp4_template(_NO_MAC, _NO_MAC, self.ip_bytes, dst, sport, dport),
                payload, ident)[_ETH_HEADER:_ETH_HEADER + 28 + len(payload)]])
            return
        flow = sock._tx_flow
        if flow is None or flow[0] != dst or flow[1] != dport or flow[2] != mac:
            # The headers every datagram of this flow shares, built once.
            flow = sock._tx_flow = (dst, dport, mac,
                                    udp4_template(mac, self.mac, self.ip_bytes, dst, sport, dport))
        frame = udp4_frame(flow[3], payload, ident)
        with self._count_lock:
            c = self._c
            c["udp.sent"] = c.get("udp.sent", 0) + 1
            c["ip.out_packets"] = c.get("ip.out_packets", 0) + 1
        self.interface.transmit((frame,))

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
        ``clock``; TimeoutError when no reply came within ``timeout`` seconds.
        ``host`` may be IPv6 (ICMPv6 Echo Request, RFC 4443 4.1)."""
        self._check_route(host)
        v6 = ":" in host
        dst = ipaddress.ip_address(host.split("%", 1)[0]).packed
        seq = next(self._ping_seq) & 0xFFFF
        key = (self._ping_ident, seq)
        waiter: list[Any] = [threading.Event(), None]
        self._pings[key] = waiter
        start = self.clock()
        if v6:
            src = self._source6(dst)
            self._count("icmp6.out_echo")
            self._send_ip6(dst, IPPROTO_ICMPV6,
                           icmp_echo(self._ping_ident, seq, payload, v6_src=src, v6_dst=dst), src)
        else:
            self._count("icmp.echo_requests_sent")
            self._send_ip(dst, IPPROTO_ICMP, icmp_echo(self._ping_ident, seq, payload))
        if not waiter[0].wait(timeout):
            self._pings.pop(key, None)
            raise TimeoutError("timed out")
        return float(waiter[1] - start)

    def _readiness_changed(self) -> None:
        # A socket event (error, shutdown, close) for a receiver sleeping as
        # the puller; a spurious ring only makes it look again.
        self._rx_interrupt()
        if not self._selecting:
            # Nobody in select(): a select() starting now counts itself in
            # before it first looks at its sockets, so it sees this change.
            return
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
                    writable = [s for s in wlist if s._writable()]
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

    # -- IPv6 (RFC 8200), Neighbor Discovery (RFC 4861), ICMPv6 (RFC 4443) ------

    def _ip6_setup(self, ipv6: Optional[str], clock: Callable[[], float], icmp_rate: float,
                   icmp_burst: int) -> None:
        """The IPv6 side of the constructor: our addresses, the groups we join, the
        Neighbor Cache.  With ``ipv6`` None, IPv6 stays off."""
        self.iface6: Optional[ipaddress.IPv6Interface] = None
        self.ip6: Optional[str] = None
        self.ip6_bytes = b""
        #: the link-local address (fe80::/64, modified EUI-64 of the MAC)
        self.ll6: Optional[str] = None
        self.ll6_bytes = b""
        self.nd: Optional[NeighborCache] = None
        self._ip6_mine: frozenset[bytes] = frozenset()
        self._ip6_groups: frozenset[bytes] = frozenset()
        self._ip6_group_macs: frozenset[bytes] = frozenset()
        self._nd_lock = threading.Lock()
        self._binds6: dict[int, list[UDPSocket]] = {}
        self._ident6 = itertools.count(int.from_bytes(os.urandom(4), "big"))
        self.icmp6_limit = TokenBucket(icmp_rate, icmp_burst, clock=clock)
        if ipv6 is None:
            return
        iface6 = ipaddress.IPv6Interface(ipv6)
        ip = iface6.ip
        if ip.is_multicast or ip.is_unspecified or ip.is_loopback or ip.ipv4_mapped is not None:
            raise ValueError(f"{ip} cannot be an interface's unicast address")
        if self.mtu < 1280:
            # RFC 8200 5: every link carrying IPv6 has an MTU of at least 1280.
            raise ValueError(f"IPv6 needs an MTU of at least 1280, the interface has {self.mtu}")
        self.iface6 = iface6
        self.ip6 = str(ip)
        self.ip6_bytes = ip.packed
        self.ll6_bytes = link_local_address(self.mac)
        self.ll6 = str(ipaddress.IPv6Address(self.ll6_bytes))
        mine = [self.ip6_bytes] + ([self.ll6_bytes] if self.ll6_bytes != self.ip6_bytes else [])
        self._ip6_mine = frozenset(mine)
        # RFC 4861 7.2.1, RFC 4291 2.8: a node joins the all-nodes group and the
        # solicited-node group of each of its addresses; the NIC takes their
        # 33:33:xx:xx:xx:xx frames (RFC 2464 7).
        groups = {ALL_NODES} | {solicited_node(a) for a in mine}
        self._ip6_groups = frozenset(groups)
        self._ip6_group_macs = frozenset(ipv6_multicast_mac(g) for g in groups)
        self._udp_accept = None  # the accepted destinations changed
        # 64 held packets per neighbour: enough for the fragments of the largest datagram.
        self.nd = NeighborCache(self.mac, mine, clock=clock, max_pending_per_ip=64)

    def _source6(self, dst: bytes) -> bytes:
        """Our source address for ``dst``: the one of the same scope (RFC 6724 5, rule 2)."""
        if _link_scope(dst) or (dst[0] == 0xFF and dst[1] & 0x0F == 2):
            return self.ll6_bytes
        return self.ip6_bytes

    def _sockaddr6(self, host: str, port: int) -> tuple[str, int, int, int]:
        """An AF_INET6 socket address as Python gives it: (host, port, flowinfo, scope_id)."""
        scope = IPV6_SCOPE_ID if _link_scope(ipaddress.IPv6Address(host).packed) else 0
        return host, port, 0, scope

    def _check_route6(self, host: str) -> None:
        if self.iface6 is None:
            self._count("ip6.no_route")
            raise _oserror(errno.ENETUNREACH)
        addr = ipaddress.IPv6Address(host.split("%", 1)[0])
        # One interface, no router: the prefix and link-local scope are on-link
        # (RFC 4861 5.2); link-local multicast goes out on the one link.
        if addr in self.iface6.network or addr.is_link_local or \
                (addr.is_multicast and (addr.packed[1] & 0x0F) == 2):
            return
        self._count("ip6.no_route")
        raise _oserror(errno.ENETUNREACH)

    def _ip6_accepted(self, row: Any) -> bool:
        """Whether an IPv6 frame is for us: to our MAC or a group we joined, to one
        of our addresses or groups, from a source that is not multicast; each
        rejection counted."""
        dst_mac = row["dst_mac"].tobytes()
        if dst_mac != self.mac and dst_mac not in self._ip6_group_macs:
            self._count("ip6.l2_not_for_us")
            return False
        dst = row["dst"].tobytes()
        if dst not in self._ip6_mine and dst not in self._ip6_groups:
            self._count("ip6.not_for_us")
            return False
        if row["src"][0] == 0xFF:
            # RFC 4291 2.7: a multicast address is never a source.
            self._count("ip6.bad_source")
            return False
        return True

    def _ip6_input(self, h: int, length: int, row: Any, unmatched: bool) -> None:
        """An IPv6 frame the demux handed back: ICMPv6 and NDP, fragments, and
        (``unmatched``) UDP or TCP for no socket (RFC 8200 4, RFC 4443 3.1)."""
        if self.nd is None:
            self._count("ip6.unsupported")
            return
        self._count("ip6.in_receives")
        if not self._ip6_accepted(row):
            return
        packet = self._packet(h, row)
        flags = int(row["flags"])
        if flags & Flag.FRAGMENT:
            self._fragment6_input(packet)
            return
        proto = int(row["proto"])
        l2_multicast = bool(flags & (Flag.L2_MULTICAST | Flag.L2_BROADCAST))
        if unmatched:
            if proto == IPPROTO_UDP:
                self._count("udp6.no_port")
                self._send_icmp6_error(packet, ICMPV6_DEST_UNREACH, 4, l2_multicast)
            else:
                self._count("tcp6.no_socket")
                if proto == IPPROTO_TCP and not l2_multicast:
                    self._tcp_reset_for(h, row)
            return
        if proto == IPPROTO_ICMPV6:
            l4 = int(row["l4_off"]) - int(row["l3_off"])
            frame = self.pool.data[h, :length].tobytes() if flags & Flag.NDP else None
            self._icmp6_input(packet, l4, frame)
            return
        if proto == IPPROTO_NONE:
            self._count("ip6.no_next_header")
            return
        # RFC 8200 4: an unrecognised Next Header draws a Parameter Problem, code 1,
        # pointing at that Next Header field.
        self._count("ip6.unknown_next_header")
        self._send_icmp6_error(packet, ICMPV6_PARAMETER_PROBLEM, 1, l2_multicast,
                               _next_header_field(packet))

    def _fragment6_input(self, packet: bytes) -> None:
        """An IPv6 fragment: reassemble (RFC 8200 4.5) and hand the whole datagram on."""
        if packet[6] != 44:
            # Only a Fragment header right after the IPv6 header is reassembled.
            self._count("ip6.fragment_after_ext_header")
            return
        try:
            frag = ipv6_fragment(packet)
        except ValueError:
            self._count("ip6.fragment_malformed")
            return
        with self._reasm_lock:
            data = self.reassembler.input(frag.src, frag.dst, frag.proto, frag.ident,
                                          frag.offset_bytes, frag.more_fragments, frag.payload,
                                          frag.header if frag.offset_bytes == 0 else None)
            proto = self.reassembler.last_proto
        if data is None:
            return
        self._count("ip6.reassembled")
        if proto == IPPROTO_UDP:
            self._udp6_datagram_input(frag.src, frag.dst, data)
        elif proto == IPPROTO_TCP:
            self.tcp.datagram_input(frag.src, frag.dst, data)
        elif proto == IPPROTO_ICMPV6:
            self._icmp6_input(ipv6_packet(frag.src, frag.dst, IPPROTO_ICMPV6, data), 40, None)
        elif proto == IPPROTO_NONE:
            self._count("ip6.no_next_header")
        else:
            self._count("ip6.unknown_next_header")

    def _udp6_datagram_input(self, src: bytes, dst: bytes, segment: bytes) -> None:
        """A reassembled UDP datagram over IPv6: check it and queue it on its socket."""
        if len(segment) < 8:
            self._count("udp6.truncated")
            return
        sport, dport, ulen, csum = struct.unpack_from("!HHHH", segment)
        if ulen != len(segment):
            self._count("udp6.bad_length")
            return
        if csum == 0:
            # RFC 8200 8.1: the UDP checksum is mandatory over IPv6.
            self._count("udp6.zero_checksum")
            return
        if internet_checksum(segment, pseudo_header_sum(src, dst, IPPROTO_UDP, ulen)):
            self._count("udp6.bad_checksum")
            return
        sid = self.table.lookup(IPPROTO_UDP, dst, dport, src, sport)
        sock = self._socks.get(sid) if sid is not None else None
        if sock is None:
            self._count("udp6.no_port")
            self._send_icmp6_error(ipv6_packet(src, dst, IPPROTO_UDP, segment),
                                   ICMPV6_DEST_UNREACH, 4, False)
            return
        # The AF_INET6 4-tuple travels where the AF_INET pair does.
        peer: Any = self._sockaddr6(str(ipaddress.IPv6Address(src)), sport)
        sock._deliver([(segment[8:], peer)])

    def _icmp6_input(self, packet: bytes, l4: int, frame: Optional[bytes]) -> None:
        """An ICMPv6 message to us (RFC 4443, RFC 4861): ``l4`` is its offset in
        ``packet``; ``frame`` the whole frame of a Neighbor Discovery message (None
        when it came in fragments, which NDP never does, RFC 6980 5)."""
        plen = struct.unpack_from("!H", packet, 4)[0]
        message = packet[l4:40 + plen]
        if len(message) < 8:
            self._count("icmp6.truncated")
            return
        src, dst = packet[8:24], packet[24:40]
        if icmpv6_checksum_bad(src, dst, message):
            self._count("icmp6.bad_checksum")
            return
        self._count("icmp6.in_msgs")
        kind = message[0]
        if kind == 128:
            self._count("icmp6.in_echo")
            if src == bytes(16):
                self._count("icmp6.echo_rejected_unspecified_source")
                return
            # RFC 4443 4.2: same identifier, sequence and data; a request to a
            # group is answered from our unicast address of the same scope.
            reply_src = dst if dst in self._ip6_mine else self._source6(src)
            reply = icmpv6_message(reply_src, src, 129, 0, struct.unpack_from("!I", message, 4)[0],
                                   message[8:])
            self._count("icmp6.out_echo_reply")
            self._send_ip6(src, IPPROTO_ICMPV6, reply, reply_src)
            return
        if kind == 129:
            ident, seq = struct.unpack_from("!HH", message, 4)
            waiter = self._pings.pop((ident, seq), None)
            if waiter is None:
                self._count("icmp6.echo_reply_unexpected")
                return
            self._count("icmp6.in_echo_reply")
            waiter[1] = self.clock()
            waiter[0].set()
            return
        if 133 <= kind <= 137:
            self._count("icmp6.in_nd")
            if frame is None:
                self._count("icmp6.nd_fragmented")
                return
            # Hop limit 255, code, length and options are validated there (RFC 4861 7.1).
            with self._nd_lock:
                frames = self.nd.input(frame) if self.nd is not None else []
            if frames:
                self.interface.transmit(frames)
            return
        if kind in (130, 131, 132, 143):
            # Multicast Listener Discovery: we join only link-local groups and answer no queries.
            self._count("icmp6.in_mld_ignored")
            return
        if kind >= 128:
            # RFC 4443 2.4(b): unknown informational messages are discarded.
            self._count("icmp6.in_unknown_informational")
            return
        self._count(f"icmp6.in_{_ICMP6_TYPE_NAMES.get(kind, 'unknown_error')}")
        try:
            err = parse_icmp_error(message, 6)
        except IcmpRejected as exc:
            self._count(f"icmp6.rejected_{exc.reason}")
            return
        if err.proto != IPPROTO_UDP or err.src not in self._ip6_mine:
            self._count("icmp6.errors_not_udp")
            return
        sid = self.table.lookup(IPPROTO_UDP, err.src, err.sport, err.dst, err.dport)
        sock = self._socks.get(sid) if sid is not None else None
        code = _ICMP6_ERRNO.get((err.type, err.code), _ICMP6_ERRNO.get((err.type, None)))
        # RFC 4443 2.4(d), RFC 1122 4.1.3.3: a connected socket hears of it.
        if sock is None or sock._peer is None or code is None:
            self._count("icmp6.errors_ignored")
            return
        self._count("icmp6.errors_delivered")
        sock._set_error(code)

    def _send_icmp6_error(self, packet: bytes, kind: int, code: int, l2_multicast: bool,
                          info: int = 0) -> None:
        """A rate-limited ICMPv6 error about ``packet`` (RFC 4443 2.4(f)); none about
        an ICMPv6 error, a multicast destination or from an unspecified or multicast
        source (RFC 4443 2.4(e))."""
        reason = error_suppressed(packet, l2_multicast)
        if reason is not None:
            self._count(f"icmp6.error_suppressed_{reason}")
            return
        with self._icmp_lock:
            allowed = self.icmp6_limit.allow()
        if not allowed:
            self._count("icmp6.ratelimited")
            return
        dst = packet[24:40]
        src = dst if dst in self._ip6_mine else self._source6(packet[8:24])
        error = icmp_error(packet, kind, code, src, info, l2_multicast)
        self._count(f"icmp6.out_{_ICMP6_TYPE_NAMES[kind]}")
        self._send_ip6_packets(packet[8:24], [error])

    def _send_ip6(self, dst: bytes, proto: int, payload: bytes,
                  src: Optional[bytes] = None) -> None:
        """Send ``payload`` to ``dst`` as one IPv6 packet, in fragments (a Fragment
        header, RFC 8200 4.5) when it does not fit the MTU."""
        if src is None:
            src = self._source6(dst)
        if 40 + len(payload) <= self.mtu:
            packets = [ipv6_packet(src, dst, proto, payload)]
        else:
            packets = fragment_ipv6(src, dst, proto, payload, self.mtu,
                                    next(self._ident6) & 0xFFFFFFFF)
            self._count("ip6.fragments_sent", len(packets))
        self._send_ip6_packets(dst, packets)

    def _send_ip6_packets(self, dst: bytes, packets: Sequence[bytes]) -> None:
        """Frame IPv6 packets for neighbour ``dst`` (Neighbor Discovery; packets held
        while it resolves, RFC 4861 7.2.2) and transmit them."""
        self._count("ip6.out_packets", len(packets))
        if dst[0] == 0xFF:
            mac = ipv6_multicast_mac(dst)
            frames = [ethernet(mac, self.mac, ETH_P_IPV6, p) for p in packets]
        else:
            frames = []
            with self._nd_lock:
                assert self.nd is not None
                for p in packets:
                    frames += self.nd.resolve(dst, p)
        if frames:
            self.interface.transmit(frames)

    # -- UDP over IPv6 sockets ----------------------------------------------------

    def _socket6(self, type: int, proto: int) -> UDP6Socket:
        if self.nd is None:
            # IPv6 is off on this stack.
            raise _oserror(errno.EAFNOSUPPORT)
        if type != SOCK_DGRAM or proto not in (0, IPPROTO_UDP):
            raise _oserror(errno.EPROTONOSUPPORT)
        with self._demux_lock:
            sid = self._new_id()
            sock = UDP6Socket(self, sid, PCQ(self.pcq_len))
            sock._cont = self.dispatch.continuation(sock)
            # Attached before its pcb enters the table (the demux's rule).
            self.demux.attach(sid, sock.pcq)
            self._socks[sid] = sock
        return sock

    def _udp6_output(self, sock: UDPSocket, host: str, port: int, payload: bytes) -> None:
        self._check_route6(host)
        dst = ipaddress.IPv6Address(host).packed
        src = self._source6(dst) if sock._laddr == _ANY6 else \
            ipaddress.IPv6Address(sock._laddr).packed
        self._count("udp6.sent")
        # udp() always computes the checksum, sending a zero as 0xFFFF (RFC 8200 8.1).
        self._send_ip6(dst, IPPROTO_UDP, udp(src, dst, sock._lport, port, payload), src)


def _link_scope(addr: bytes) -> bool:
    """Whether an IPv6 address is link-local unicast, fe80::/10 (RFC 4291 2.5.6)."""
    return addr[0] == 0xFE and addr[1] & 0xC0 == 0x80


def _next_header_field(packet: bytes) -> int:
    """The offset in ``packet`` (IPv6) of the Next Header field naming its upper layer:
    6, or the first byte of the last extension header (RFC 8200 4)."""
    nh, field, off = packet[6], 6, 40
    for _ in range(8):
        unit = _IPV6_EXT_HEADERS.get(nh)
        if unit is None or off + 2 > len(packet):
            break
        step = 8 if nh == 44 else (packet[off + 1] + (2 if nh == 51 else 1)) * unit
        nh, field, off = packet[off], off, off + step
    return field
