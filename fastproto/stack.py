"""A host stack on one interface, with a choice of dispatch model.

The receive path: the interface's "interrupt" (``Device.wait``) wakes the
puller thread (or, under ``lrp``, a receiver blocked in ``recv`` pulls
itself), which takes a batch off the rx ring into the stack's
:class:`BufferPool` (``receive_into``) and runs :meth:`Demux.input` on it
without the GIL: parse, pcbtable lookup, ``pcq_put`` on each socket's PCQ.
Then, per batch, in Python: frames for no socket in particular (ARP, ICMP,
fragments, NDP) go to their handlers, UDP or TCP for no socket is answered
(rate-limited ICMP port unreachable, RST), and the woken sockets are handed
to the dispatch model (:mod:`fastproto.dispatch`), which decides who runs
their protocol input and when.  Every buffer not handed on is freed.

This module holds the stack's life cycle, threads, receive path, sockets
and counters; the protocols' parts of it are in :mod:`fastproto.iface`
(``ipv4``, ``ipv6``, ``udp``, which :class:`Stack` inherits) and TCP in
:mod:`fastproto.tcp_layer`.  ``stats()`` accounts for every drop by the
place it happened.
"""
from __future__ import annotations

import errno
import ipaddress
import itertools
import os
import resource
import threading
import time
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

from fastproto import BufferPool, Demux, PCBTable
from fastproto._core.counters import count
from fastproto._core.parse import Flag
from fastproto._core.pcq import PCQ
from fastproto.dispatch import MODELS, Dispatch, make_dispatch
from fastproto.iface.ipv4 import (_ANY, _ICMP_PORT_UNREACH, IPPROTO_ICMP, IPPROTO_TCP,
                                  IPPROTO_UDP, StackIpv4)
from fastproto.iface.ipv6 import IPPROTO_ICMPV6, StackIpv6
from fastproto.iface.udp import StackUdp
from fastproto.proto.arp import ArpCache
from fastproto.proto.ratelimit import TokenBucket
from fastproto.proto.reassembly import Reassembler
from fastproto.socket import (_ANY6, AF_INET, AF_INET6, SOCK_DGRAM, SOCK_RAW, SOL_SOCKET,
                              DatagramSocket, RawSocket, UDPSocket, _oserror)
from fastproto.tcp_layer import TcpLayer
from fastproto.tcp_socket import SO_REUSEADDR, SOCK_STREAM, TCPSocket
from fastproto.wire.ethernet import ETH_P_IP, ETH_P_IPV6, mac_bytes
from fastproto.wire.l4 import icmp_echo

#: seconds between runs of the ARP and reassembly timers
_TIMER_INTERVAL = 0.05


#: no batch indices (the demux's answer when no frame was handed back)
_NO_INDEX = np.zeros(0, dtype=np.uint32)
_NO_INDEX.flags.writeable = False


class Stack(StackIpv4, StackIpv6, StackUdp):
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
    ``checksum_on_copy``: the checksum of a whole UDP datagram, and of a TCP
    segment carrying data, is verified while its payload is copied out of the
    buffer, in one pass (else the demux verifies it and the copy reads the
    payload again).

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
                           verify_l4=True, defer_udp_checksum=checksum_on_copy,
                           defer_tcp_checksum=checksum_on_copy)
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
        #: a device whose frames come from outside the process (TAP): the
        #: pulling receiver sleeps on it (``rx_sleep``) instead of the bell,
        #: and news for it ends that sleep (``rx_kick``); None otherwise
        self._rx_sleep: Optional[Callable[[float, int], bool]] = getattr(interface, "rx_sleep", None)
        self._rx_kick: Optional[Callable[[], None]] = \
            getattr(interface, "rx_kick", None) if self._rx_sleep is not None else None
        #: a receiver waits to pull (``_pull_begin``): the puller thread
        #: hands over after its batch
        self._pull_wanted = False
        #: wake-ups of pulling receivers by the doorbell (part of
        #: ``wakeup.reader``): written only under _pull_lock, so without a lock
        self._pulling_wakeups = 0
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
        #: views of a one-frame batch in the pull buffers, made once: one frame
        #: is the common pull in request/response traffic (a slice costs more)
        self._one_frame = (self._handles[:1], self._lengths[:1])
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
        All are counts but ``udp.payload_reads_per_byte`` and
        ``tcp.payload_reads_per_byte``, ratios: payload bytes read per payload
        byte delivered to UDP sockets / TCP connections (1.0 with
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
        own["wakeup.reader"] += self._pulling_wakeups
        tcp_ip_out = self.tcp.ip_out_packets()
        if tcp_ip_out:
            own["ip.out_packets"] = own.get("ip.out_packets", 0) + tcp_ip_out
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
        delivered = out.get("tcp.delivered_bytes", 0)
        out["tcp.payload_reads_per_byte"] = \
            out.get("tcp.payload_bytes_read", 0) / delivered if delivered else 0.0
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
            if self._pulling_sock is not None and (not ready or self._rx_sleep is not None):
                # A receiver pulls the interface and runs the timers itself:
                # nothing to take over, so no reason to queue for its lock.
                # (A device the receiver sleeps on keeps this thread's wait
                # off its frames until the hand-back, which wakes it.)
                continue
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
                    if not dispatch.drain_ring or self._pull_wanted:
                        self._pull_wanted = False
                        break
            finally:
                pull_lock.release()

    # -- a receiver pulling the interface itself (lrp) ---------------------------

    def _pull_begin(self, sock: DatagramSocket, timeout: float = 0.0) -> bool:
        """Make the calling thread, blocked in ``sock``'s recv, the one that pulls
        the interface (the puller thread stays asleep: the interrupt is routed
        to ``sock``'s readers); False if another thread pulls or the device
        cannot route its interrupt.  ``timeout`` (seconds; a device the
        receiver sleeps on only): how long to wait for the puller thread to
        finish its batch and hand over, with ``sock``'s lock released."""
        if not self._rx_routable:
            return False
        if not self._pull_lock.acquire(False):
            if timeout <= 0 or self._rx_sleep is None:
                return False
            # Asks the puller thread to stop after its batch rather than drain
            # the ring: the frames are this receiver's to take.
            self._pull_wanted = True
            lock: Any = sock._lock   # (a TCP socket's: re-entrant)
            saved = lock._release_save()    # (the puller's demux takes it)
            try:
                got = self._pull_lock.acquire(True, timeout)
            finally:
                lock._acquire_restore(saved)
            if not got:
                return False
        self._pulling_sock = sock
        notify = getattr(self.interface, "rx_notify", None)
        if notify is None or not notify(self._rx_interrupt):
            self._pulling_sock = None
            self._rx_routable = False
            self._pull_lock.release()
            return False
        # (_count_puller inline: once per blocking receive)
        c = self._c
        c["lrp.receiver_pulling"] = c.get("lrp.receiver_pulling", 0) + 1
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
            kick = self._rx_kick
            if kick is not None:
                kick()      # the sleeper polls the device (see _receiver_sleep)
                return
            try:
                self._bell.release()
            except RuntimeError:
                pass  # released already by a concurrent ring: one wake is enough

    def _receiver_sleep(self, sock: DatagramSocket, timeout: float) -> bool:
        """Sleep, as the pulling receiver of ``sock``, until a frame arrives, the
        socket has news or ``timeout`` seconds pass; True if woken by a ring.
        Returns False at once if there is something to do already."""
        cont = sock._cont
        rx_sleep = self._rx_sleep
        # A device fed by the kernel (TAP) is slept on through its
        # descriptor, so a frame wakes this thread with no other one in
        # between; its token is read before arming: a kick after it ends
        # the sleep.  Other devices ring the doorbell.
        token = self.interface.rx_sleep_token() if rx_sleep is not None else None
        self._bell_armed = True
        try:
            # Looked at only after arming: anything that changes what is seen
            # here afterwards rings (under the GIL these steps are ordered).
            # (Frames already on a TAP end its sleep at once: no look there.)
            if sock._readable() or (cont is not None and cont.pending) or \
                    (rx_sleep is None and self.interface.rx_ready()):
                return False
            if rx_sleep is not None:
                woken = rx_sleep(timeout, token)
            else:
                woken = self._bell.acquire(True, timeout)     # (positional: keywords parse slowly)
        finally:
            self._bell_armed = False
        if woken:
            sock.reader_wakeups += 1
            self._pulling_wakeups += 1
        # Not woken by the doorbell: a ring may still come (it saw the arming
        # before the finally above); the lock is then left released and the
        # next sleep returns at once, a harmless extra look.
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
        if n == 1:
            handles, lengths = self._one_frame
        else:
            handles, lengths = self._handles[:n], self._lengths[:n]
        self.dispatch.receiver_batch(sock, handles, lengths)
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
            # (with the immediate ACKs the demux built for in-sequence data,
            # docs/tcp.md)
            woken, other, unmatched, acks = self.demux.input_woken(handles, lengths)
            # One writer at a time (the demux lock's holder): no counter lock.
            c = self._c
            c["ip.rx_batches"] = c.get("ip.rx_batches", 0) + 1
            if other is not None or unmatched is not None:
                if other is None:
                    other = _NO_INDEX
                if unmatched is None:
                    unmatched = _NO_INDEX
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
            socks = list(map(self._socks.get, woken))
        if acks:
            tcp_counters = self.tcp.counters
            count(tcp_counters, "tcp.core_acks", len(acks))
            # (the stack's counter, kept with TCP's: see TcpLayer.ip_out_packets)
            count(tcp_counters, "ip.out_packets", len(acks))
            self.interface.transmit(acks)
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

    # -- protocol input of one socket (run by the dispatch model) ---------------

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

    def _pcb_key(self, sock: UDPSocket) -> tuple[int, str, int, Optional[str], int]:
        peer = sock._peer
        return (IPPROTO_UDP, sock._laddr, sock._lport, peer[0] if peer else None,
                peer[1] if peer else 0)

    def _is_local(self, family: int, host: str) -> bool:
        """Whether ``host`` (text) is the wildcard or one of our addresses of ``family``."""
        if family == AF_INET6:
            return host == _ANY6 or ipaddress.IPv6Address(host).packed in self._ip6_mine
        return host in (_ANY, self.ip)

    def _source_address(self, family: int, host: str) -> str:
        """Our address (text) for talking to ``host``: the IPv4 one, or the IPv6
        one of the same scope (RFC 6724 5)."""
        if family == AF_INET6:
            return str(ipaddress.IPv6Address(self._source6(ipaddress.IPv6Address(host).packed)))
        return self.ip

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

    # -- output -----------------------------------------------------------------

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

    # -- UDP over IPv6 sockets ----------------------------------------------------
