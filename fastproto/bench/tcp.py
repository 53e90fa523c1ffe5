"""tcp cases: the per-segment cost of the established fast path of ``TcpConnection``.

- receive: in-order 1448-byte data segments (timestamps on) into an
  ESTABLISHED connection, an ACK every second segment, as a bulk receiver sees
  them; 64 segments a call, after which the connection is rewound (sequence
  space, buffer) so every call starts alike.
- send: a bulk sender with 64 segments in flight: each ACK for 1448 bytes
  frees the window for one new 1448-byte segment, which goes out (descriptor
  with its timestamps option and a memoryview of the send buffer); 64 ACKs a
  call, plus the ``send()`` that refills the buffer.

Baseline: the same segments through the full RFC 9293 3.10.7.4 processing
(``_input_slow``): what header prediction saves.

Between two stacks on a :class:`~fastproto.phy.link.LinkPair` (each call
starts both stacks and stops them, joining their threads, so nothing is left
running between calls):

- bulk transfer: 16 MiB from a socket of one stack to a socket of the other,
  MSS 1460 (1448 data bytes a segment with the timestamps option), default
  buffers (256 KiB), the receiver reading with ``recv_into``; goodput in
  Gbit/s, timed as iperf does from ``connect`` to the receiver's end of
  stream (handshake, slow start and FIN included; starting the two stacks,
  which Linux has done before its figure starts, is not).  Both stacks and
  both application threads run on one CPU (:func:`fastproto.sched.cpu.one_cpu`),
  the "one core" of the goal: their Python work is serialized by the GIL
  anyway, and on two CPUs each hand-off between sender and receiver is a
  wake-up across CPUs with the data in the other core's cache.
- bulk against Linux: the same transfer beside Linux's own TCP over
  loopback (Python sockets, ``sendall``/``recv_into``, timed the same way,
  on one CPU as well: Linux too moves more there, 34-38 Gbit/s against
  31-34 on two),
  the TOE path's goal of 10 Gbit/s and half of Linux.
- request/response: 1,000 transactions of 64 bytes each way on one
  connection (``TCP_NODELAY``), after 100 untimed ones, an echo thread on the
  other stack; the median transaction, as transactions/s.  The baseline is
  the same loop over Linux TCP on loopback with Python sockets, measured in
  the same run.  Both run on one CPU without wake-up preemption
  (:func:`fastproto.sched.cpu.one_cpu`; see docs/stack.md, "Round trips").
- 10,000 established connections between two stacks: the Python heap each
  connection endpoint holds (tracemalloc), against a 4 KiB budget; the RSS
  growth is measured beside it for information.

The bulk baseline.  PyTCP cannot run a TCP transfer between two of its stacks
in one process: a stack is the module-level singletons of ``pytcp.lib.stack``
(timer, rx and tx rings, ARP cache, packet handler, socket table) that its
TCP sessions reach by import, so a process holds one; its rings read and write
a TAP file descriptor, its timer thread ticks every millisecond, and starting
it probes ARP and IPv6 DAD with sleeps of seconds.  Two instances would need
the package loaded twice under different module names and a fake TAP pair;
two processes would need TAP devices and root, and time the kernel's TAP path
too.  The baseline is therefore PyTCP's own per-segment code driven the
shortest way: the sender builds each segment with PyTCP's assemblers
(``TcpAssembler`` with NOP, NOP, timestamps, ``Ip4Assembler``,
``EtherAssembler``: headers and both checksums in Python), the receiver
parses it with PyTCP's parsers (``PacketRx``, ``EtherParser``,
``Ip4Parser``, ``TcpParser``: header checks and both checksums), takes the
payload when it is the next in order, acknowledges every second segment the
same way, and the sender parses the ACKs; a 256 KiB window, the application
reading the receive buffer out.  No threads, locks, timers, congestion
control or socket calls: less work per segment than either stack does, so the
ratio is a floor of what the real PyTCP gives.  A second bulk case runs the
same loop with a lean codec (``struct`` headers, the RFC 1071 sum as one big
integer modulo 0xFFFF): what hand-tuned Python does for the same segments.
"""
from __future__ import annotations

import errno
import gc
import os
import statistics
import struct
import threading
import time
from types import SimpleNamespace
from typing import Any, Callable, List, Optional, Tuple

from fastproto.bench import Case
from fastproto.sched.cpu import one_cpu

SEGMENTS = 64
MSS = 1448


def _noop(desc: object) -> None:
    return None


def _connection():
    from fastproto.proto.tcp import TcpConnection
    from fastproto.proto.tcp_timers import TcpConfig

    rec = SimpleNamespace(local=("198.18.0.2", 80), remote=("198.18.0.1", 40000), iss=1000,
                          irs=5000, snd_wnd=SEGMENTS * MSS, peer_mss=1460, snd_wscale=7,
                          rcv_wscale=7, ts_recent=100, sack_permitted=True)
    return TcpConnection.from_handshake(rec, TcpConfig(rcvbuf=8 << 20, sndbuf=8 << 20),
                                        lambda: 1000.0, _noop)


def _receive_case(slow: bool) -> Callable[[], None]:
    from fastproto.wire.tcp import ACK, TcpSegment

    conn = _connection()
    payload = memoryview(bytes(range(256)) * 6)[:MSS]
    base = conn.rcv_nxt
    window = conn.snd_wnd >> 7
    segs = [TcpSegment(40000, 80, (base + i * MSS) & 0xFFFFFFFF, conn.snd_una, ACK, window,
                       payload, ts_val=200 + i, ts_ecr=1) for i in range(SEGMENTS)]
    wnd = conn.rcv_wnd
    feed = conn._input_slow if slow else conn.input

    def run() -> None:
        conn.rcv_nxt = conn._last_ack_sent = base
        conn.rcv_wnd = wnd
        conn.ts_recent = 100
        if conn._rcvbuf is not None:
            conn._rcvbuf.clear()     # (kept, as a receiving connection keeps it)
        for seg in segs:
            feed(seg)

    run()
    assert conn.rcv_nxt == (base + SEGMENTS * MSS) & 0xFFFFFFFF
    return run


def _send_case(slow: bool) -> Callable[[], None]:
    from fastproto.wire.tcp import ACK, TcpSegment

    conn = _connection()
    conn.cwnd = 1 << 30
    conn.ssthresh = 1 << 30
    data = bytes(SEGMENTS * MSS)
    conn.send(data)                      # fills the window: 64 segments in flight
    assert (conn.snd_nxt - conn.snd_una) & 0xFFFFFFFF == SEGMENTS * MSS
    acks: List[TcpSegment] = [TcpSegment(40000, 80, conn.rcv_nxt, 0, ACK, conn.snd_wnd >> 7,
                                         b"", ts_val=300, ts_ecr=1) for _ in range(SEGMENTS)]
    feed = conn._input_slow if slow else conn.input

    def run() -> None:
        conn.send(data)
        una = conn.snd_una
        for i, seg in enumerate(acks):
            seg.ack = (una + (i + 1) * MSS) & 0xFFFFFFFF
            feed(seg)

    run()
    assert (conn.snd_nxt - conn.snd_una) & 0xFFFFFFFF == SEGMENTS * MSS
    return run


# -- between two stacks ------------------------------------------------------------

A_IP, B_IP = "198.18.0.1", "198.18.0.2"
A_MAC, B_MAC = "02:00:5e:12:00:01", "02:00:5e:12:00:02"
BULK_BYTES = 16 << 20
#: data bytes a full segment carries: MSS 1460 less the 12-byte timestamps option
SEGMENT_DATA = 1448
#: the baselines' window: the stacks' default receive buffer
WINDOW = 256 << 10
RR_TRANSACTIONS = 1000
#: bulk transfers timed, each side, the best taken (a shared machine only adds time)
BULK_REPEATS = 10
RR_WARMUP = 100
RR_SIZE = 64
MANY = 10_000
#: the Python-heap budget of one connection endpoint, bytes
CONNECTION_BUDGET = 4096


def _bulk_payload(size: int) -> bytes:
    return bytes(range(256)) * (size // 256) + bytes(size % 256)


def _stack_bulk(data: bytes) -> Callable[[], float]:
    """One call: two stacks on a LinkPair, ``data`` from one to the other;
    the seconds per bit from ``connect`` to the receiver's end of stream."""
    from fastproto.phy.link import LinkPair
    from fastproto.socket import SHUT_WR
    from fastproto.stack import Stack

    def run() -> float:
        link = LinkPair()
        received: list = [0, 0.0]
        with one_cpu(), Stack(link.a, f"{A_IP}/24") as a, Stack(link.b, f"{B_IP}/24") as b:
            server = b.create_server(("", 5001))
            server.settimeout(30.0)

            def sink() -> None:
                conn, _ = server.accept()
                conn.settimeout(30.0)
                buf = bytearray(1 << 20)
                n = 0
                while k := conn.recv_into(buf):
                    n += k
                received[:] = [n, time.perf_counter()]
                conn.close()

            t = threading.Thread(target=sink, name="bench-sink")
            t.start()
            try:
                t0 = time.perf_counter()
                client = a.create_connection((B_IP, 5001), timeout=30.0)
                client.sendall(data)
                client.shutdown(SHUT_WR)
            finally:
                t.join(60.0)
            client.close()
            server.close()
        return _goodput_seconds(received, t0, len(data))

    return run


def _goodput_seconds(received: list, t0: float, size: int) -> float:
    """Seconds per bit of a transfer of ``size`` bytes started at ``t0``,
    whose receiver got ``received[0]`` bytes by ``received[1]``."""
    if received[0] != size:
        raise RuntimeError(f"bulk transfer delivered {received[0]} of {size} bytes")
    return (received[1] - t0) / (8 * size)


def _per_bit(fn: Callable[[], object], size: int) -> Callable[[], float]:
    """``fn``, which moves ``size`` bytes, timed whole: seconds per bit."""
    def run() -> float:
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) / (8 * size)
    return run


def _loopback_bulk(data: bytes) -> Callable[[], float]:
    """The same transfer over Linux TCP on loopback, Python sockets (the
    kernel's own TCP: segmentation and coalescing offloads, 64 KiB MTU),
    timed the same way."""
    import socket

    def run() -> float:
        received: list = [0, 0.0]
        with one_cpu(), socket.create_server(("127.0.0.1", 0)) as server:
            server.settimeout(30.0)

            def sink() -> None:
                conn, _ = server.accept()
                with conn:
                    buf = bytearray(1 << 20)
                    n = 0
                    while k := conn.recv_into(buf):
                        n += k
                    received[:] = [n, time.perf_counter()]

            t = threading.Thread(target=sink, name="bench-sink")
            t.start()
            try:
                t0 = time.perf_counter()
                with socket.create_connection(server.getsockname(), timeout=30.0) as client:
                    client.sendall(data)
                    client.shutdown(socket.SHUT_WR)
            finally:
                t.join(60.0)
        return _goodput_seconds(received, t0, len(data))

    return run


Codec = Tuple[Callable[..., Any], Callable[[Any], Optional[Tuple[int, int, int, Any]]]]


def _in_order_transfer(forward: Codec, backward: Codec, data: bytes) -> Callable[[], None]:
    """One call: ``data`` over a minimal TCP data path, each segment built by
    ``forward[0]`` and parsed by ``forward[1]``, the ACKs by ``backward``.

    The sender keeps up to WINDOW bytes in flight; the receiver takes a segment
    whose sequence number is RCV.NXT (in order: the wire loses nothing),
    acknowledges every second one (RFC 5681 4.2) and the application reads the
    receive buffer out in 1 MiB reads after each flight."""
    build, parse = forward
    build_ack, parse_ack = backward
    size = len(data)
    view = memoryview(data)

    def run() -> None:
        iss, irs = 1000, 5000
        snd_una = snd_nxt = iss
        rcv_nxt = iss
        rcvbuf = bytearray()
        out = bytearray(1 << 20)
        got = 0
        while snd_una - iss < size:
            wire = []
            while snd_nxt - iss < size and snd_nxt - snd_una < WINDOW:
                off = snd_nxt - iss
                chunk = bytes(view[off:off + SEGMENT_DATA])
                wire.append(build(snd_nxt, irs, 2048, snd_nxt & 0xFFFFFFFF, chunk))
                snd_nxt += len(chunk)
            acks = []
            pending = 0
            for frame in wire:
                seg = parse(frame)
                if seg is None or seg[0] != rcv_nxt:
                    continue
                rcvbuf += seg[3]
                rcv_nxt += len(seg[3])
                pending += 1
                if pending == 2:
                    acks.append(build_ack(irs, rcv_nxt, 2048, rcv_nxt & 0xFFFFFFFF, b""))
                    pending = 0
            if pending:
                acks.append(build_ack(irs, rcv_nxt, 2048, rcv_nxt & 0xFFFFFFFF, b""))
            while rcvbuf:
                n = min(len(rcvbuf), len(out))
                out[:n] = rcvbuf[:n]
                del rcvbuf[:n]
                got += n
            for frame in acks:
                seg = parse_ack(frame)
                if seg is not None and 0 < seg[1] - snd_una <= snd_nxt - snd_una:
                    snd_una = seg[1]
        if got != size:
            raise RuntimeError(f"in-order transfer delivered {got} of {size} bytes")

    return run


def _pytcp_codec(src_mac: str, dst_mac: str, src_ip: str, dst_ip: str,
                 sport: int, dport: int) -> Optional[Codec]:
    """Segments built and parsed by PyTCP's own assemblers and parsers, or None
    if PyTCP is missing."""
    try:
        from pytcp.lib.ip4_address import Ip4Address
        from pytcp.lib.mac_address import MacAddress
        from pytcp.lib.packet import PacketRx
        from pytcp.protocols.ether.fpa import EtherAssembler
        from pytcp.protocols.ether.fpp import EtherParser
        from pytcp.protocols.ip4.fpa import Ip4Assembler
        from pytcp.protocols.ip4.fpp import Ip4Parser
        from pytcp.protocols.tcp.fpa import TcpAssembler, TcpOptNop, TcpOptTimestamp
        from pytcp.protocols.tcp.fpp import TcpParser
    except ImportError:
        return None
    smac, dmac = MacAddress(src_mac), MacAddress(dst_mac)
    sip, dip = Ip4Address(src_ip), Ip4Address(dst_ip)

    def build(seq: int, ack: int, win: int, ts: int, data: bytes) -> bytearray:
        tcp = TcpAssembler(sport=sport, dport=dport, seq=seq, ack=ack, flag_ack=True, win=win,
                           options=[TcpOptNop(), TcpOptNop(), TcpOptTimestamp(ts, ts)],
                           data=data)
        eth = EtherAssembler(src=smac, dst=dmac,
                             carried_packet=Ip4Assembler(src=sip, dst=dip, flag_df=True,
                                                         carried_packet=tcp))
        frame = bytearray(len(eth))
        eth.assemble(memoryview(frame))
        return frame

    def parse(frame: Any) -> Optional[Tuple[int, int, int, Any]]:
        packet = PacketRx(frame)
        EtherParser(packet)
        if packet.parse_failed:
            return None
        Ip4Parser(packet)
        if packet.parse_failed:
            return None
        TcpParser(packet)
        if packet.parse_failed:
            return None
        tcp = packet.tcp
        return tcp.seq, tcp.ack, tcp.win, tcp.data

    return build, parse


def _lean_codec(src_mac: str, dst_mac: str, src_ip: str, dst_ip: str,
                sport: int, dport: int) -> Codec:
    """Segments built and parsed in plain Python: ``struct`` for the headers,
    the RFC 1071 sum as one integer modulo 0xFFFF (2**16 = 1 mod 0xFFFF, so
    the folded one's-complement sum of the 16-bit words is the whole buffer,
    read as a big-endian integer, modulo 0xFFFF)."""
    import ipaddress

    from fastproto.wire import mac_bytes

    head = struct.Struct("!6s6sH BBHHHBBH4s4s HHIIBBHHH BBBBII")
    smac, dmac = mac_bytes(src_mac), mac_bytes(dst_mac)
    sip, dip = ipaddress.IPv4Address(src_ip).packed, ipaddress.IPv4Address(dst_ip).packed
    from_bytes = int.from_bytes
    pseudo = from_bytes(sip, "big") + from_bytes(dip, "big") + 6   # + the TCP length

    def fold(data: Any, initial: int = 0) -> int:
        if len(data) & 1:
            data = bytes(data) + b"\0"
        return (from_bytes(data, "big") + initial) % 0xFFFF

    def build(seq: int, ack: int, win: int, ts: int, data: bytes) -> bytearray:
        tlen = 32 + len(data)
        frame = bytearray(head.pack(dmac, smac, 0x0800, 0x45, 0, 20 + tlen, 0, 0x4000, 64, 6, 0,
                                    sip, dip, sport, dport, seq, ack, 8 << 4, 0x10, win, 0, 0,
                                    1, 1, 8, 10, ts, ts))
        frame += data
        frame[24:26] = (0xFFFF - fold(frame[14:34])).to_bytes(2, "big")
        frame[50:52] = (0xFFFF - fold(frame[34:], pseudo + tlen)).to_bytes(2, "big")
        return frame

    def parse(frame: Any) -> Optional[Tuple[int, int, int, Any]]:
        if len(frame) < 54:
            return None
        (_, _, ethertype, vihl, _, total, _, _, _, proto, _, src, dst, _, _, seq, ack, offset,
         _, win, *_) = head.unpack_from(frame)
        if ethertype != 0x0800 or vihl != 0x45 or proto != 6 or 14 + total > len(frame):
            return None
        if fold(frame[14:34]):
            return None        # a good header sums to 0xFFFF, which is 0 modulo 0xFFFF
        if fold(frame[34:14 + total], from_bytes(src, "big") + from_bytes(dst, "big") + 6
                + total - 20):
            return None
        return seq, ack, win, memoryview(frame)[34 + (offset >> 4) * 4:14 + total]

    return build, parse


def _codecs(make: Callable[..., Any]) -> Tuple[Any, Any]:
    return (make(A_MAC, B_MAC, A_IP, B_IP, 40000, 5001),
            make(B_MAC, A_MAC, B_IP, A_IP, 5001, 40000))


# -- request/response ---------------------------------------------------------------

def _echo(listener: Any, nodelay: int) -> Callable[[], None]:
    """Accept one connection on ``listener`` and echo RR_SIZE-byte messages until EOF."""
    def serve() -> None:
        conn, _ = listener.accept()
        conn.setsockopt(6, nodelay, 1)
        conn.settimeout(30.0)
        try:
            while True:
                msg = conn.recv(RR_SIZE)
                while msg and len(msg) < RR_SIZE:
                    more = conn.recv(RR_SIZE - len(msg))
                    if not more:
                        return
                    msg += more
                if not msg:
                    return
                conn.sendall(msg)
        finally:
            conn.close()

    return serve


def _transactions(client: Any, n: int) -> float:
    """``n`` transactions of RR_SIZE bytes each way on ``client``, after
    RR_WARMUP untimed ones; the median seconds of one."""
    msg = bytes(RR_SIZE)
    times = []
    clock = time.perf_counter
    for k in range(RR_WARMUP + n):
        t0 = clock()
        client.sendall(msg)
        got = 0
        while got < RR_SIZE:
            part = client.recv(RR_SIZE - got)
            if not part:
                raise RuntimeError("echo connection closed early")
            got += len(part)
        if k >= RR_WARMUP:
            times.append(clock() - t0)
    return statistics.median(times)


def _stack_rr(n: int) -> Callable[[], float]:
    """One call: two stacks on a LinkPair, on one CPU (``one_cpu``), ``n``
    transactions on one connection; the median seconds of one."""
    from fastproto.phy.link import LinkPair
    from fastproto.stack import Stack
    from fastproto.tcp_socket import TCP_NODELAY

    def run() -> float:
        link = LinkPair()
        with one_cpu(), Stack(link.a, f"{A_IP}/24") as a, Stack(link.b, f"{B_IP}/24") as b:
            server = b.create_server(("", 7))
            server.settimeout(30.0)
            t = threading.Thread(target=_echo(server, TCP_NODELAY), name="bench-echo")
            t.start()
            try:
                client = a.create_connection((B_IP, 7), timeout=30.0)
                client.setsockopt(6, TCP_NODELAY, 1)
                median = _transactions(client, n)
                client.close()
            finally:
                t.join(30.0)
            server.close()
        return median

    return run


def _loopback_rr(n: int) -> Callable[[], float]:
    """The same over Linux TCP on loopback (Python sockets, TCP_NODELAY)."""
    import socket

    def run() -> float:
        with one_cpu(), socket.create_server(("127.0.0.1", 0)) as server:
            server.settimeout(30.0)
            t = threading.Thread(target=_echo(server, socket.TCP_NODELAY), name="bench-echo")
            t.start()
            try:
                with socket.create_connection(server.getsockname(), timeout=30.0) as client:
                    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    median = _transactions(client, n)
            finally:
                t.join(30.0)
        return median

    return run


# -- many connections ---------------------------------------------------------------

def open_connections(a: Any, b: Any, n: int, port: int = 80, batch: int = 256,
                     timeout: float = 30.0) -> Tuple[List[Any], List[Any]]:
    """``n`` established connections from stack ``a`` to a listener on ``b``:
    (client sockets, accepted sockets), in the same order.  Non-blocking
    ``connect_ex`` for a batch, then the listener accepts the batch."""
    from fastproto.proto.tcp import ESTABLISHED
    from fastproto.socket import AF_INET
    from fastproto.tcp_socket import SOCK_STREAM

    server = b.create_server(("", port), backlog=max(batch, 128))
    server.settimeout(timeout)
    clients: List[Any] = []
    accepted: List[Any] = []
    try:
        while len(clients) < n:
            for _ in range(min(batch, n - len(clients))):
                sock = a.socket(AF_INET, SOCK_STREAM)
                sock.setblocking(False)
                code = sock.connect_ex((b.ip, port))
                if code not in (0, errno.EINPROGRESS):
                    sock.close()
                    raise OSError(code, os.strerror(code))
                clients.append(sock)
            while len(accepted) < len(clients):
                accepted.append(server.accept()[0])
        deadline = time.monotonic() + timeout
        # The client ends become ESTABLISHED when the SYN-ACKs are processed.
        while any(c.conn.state != ESTABLISHED for c in clients):
            if time.monotonic() > deadline:
                raise TimeoutError("connections not established")
            time.sleep(0.005)
    finally:
        server.close()
    by_peer = {s.getpeername(): s for s in accepted}
    return clients, [by_peer[c.getsockname()] for c in clients]


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def connection_memory(n: int = MANY) -> dict:
    """Memory of ``n`` established connections between two stacks in this process.

    ``python_bytes``: Python heap growth (tracemalloc) while they are opened,
    per connection endpoint (each stack holds one: socket, TCB, pcb, timers),
    so the total divided by 2n; ``rss_bytes``: the resident set's growth per
    endpoint, less tracemalloc's own bookkeeping (C memory too: the PCQs)."""
    import tracemalloc

    from fastproto.phy.link import LinkPair
    from fastproto.stack import Stack

    link = LinkPair(rx_ring_size=4096)
    # Small PCQs: an idle connection's PCQ needs a window's worth of segments,
    # not 256; the listener's own is deeper (TcpLayer.listen_pcq_len).
    kw: dict = dict(max_sockets=n + 16, tcp=dict(pcq_len=16))
    with Stack(link.a, f"{A_IP}/24", **kw) as a, Stack(link.b, f"{B_IP}/24", **kw) as b:
        gc.collect()
        tracing = tracemalloc.is_tracing()
        if not tracing:
            tracemalloc.start()
        try:
            rss0, own0 = _rss(), tracemalloc.get_tracemalloc_memory()
            heap0 = tracemalloc.get_traced_memory()[0]
            clients, servers = open_connections(a, b, n)
            gc.collect()
            heap1 = tracemalloc.get_traced_memory()[0]
            rss1, own1 = _rss(), tracemalloc.get_tracemalloc_memory()
        finally:
            if not tracing:
                tracemalloc.stop()
        for sock in clients + servers:
            sock.close()
    return {"python_bytes": (heap1 - heap0) / (2 * n),
            "rss_bytes": ((rss1 - rss0) - (own1 - own0)) / (2 * n), "connections": n}


def _memory_case() -> Case:
    """Python heap per connection endpoint against CONNECTION_BUDGET.

    A self-timed case whose callable returns its figure, bytes per endpoint,
    in place of seconds (so that ``work / figure`` is the figure's inverse,
    shown with ``scale``): measured once (opening 10,000 connections under
    tracemalloc takes seconds, and the figure is the same each time), then
    returned again for the repeats."""
    measured: dict = {}

    def figure() -> float:
        if not measured:
            measured.update(connection_memory(MANY))
            case.note = (f"{measured['python_bytes']:,.0f} B of Python heap and "
                         f"{measured['rss_bytes']:,.0f} B of RSS per connection endpoint, "
                         f"{MANY:,} connections between two stacks")
        return 1.0 / measured["python_bytes"]

    case = Case(group="tcp", name=f"{MANY:,} established connections, Python heap each",
                fastproto=figure, work=1, unit="B", scale=1024, scale_name="KiB",
                self_timed=True, goal_max=CONNECTION_BUDGET / 1024)
    return case


def cases() -> List[Case]:
    out = [
        Case(group="tcp", name="tcp receive fast path, 1448 B segments",
             fastproto=_receive_case(False), baseline=_receive_case(True),
             baseline_name="full RFC 9293 segment processing", work=SEGMENTS, unit="segments",
             scale=1e6, scale_name="M segments/s", goal_rate=0.4, goal_ratio=1.2),
        Case(group="tcp", name="tcp send fast path, ACK + next 1448 B segment",
             fastproto=_send_case(False), baseline=_send_case(True),
             baseline_name="full RFC 9293 segment processing", work=SEGMENTS, unit="segments",
             scale=1e6, scale_name="M segments/s", goal_rate=0.2,
             note="the output work is the same on both paths, so only the rate has a goal"),
    ]
    data = _bulk_payload(BULK_BYTES)
    bulk = _stack_bulk(data)
    name = f"TCP bulk {BULK_BYTES >> 20} MiB, two stacks on a LinkPair, MSS 1460"
    pytcp = _codecs(_pytcp_codec)
    if pytcp[0] is not None:
        out.append(Case(group="tcp", name=name, fastproto=bulk,
                        baseline=_per_bit(_in_order_transfer(pytcp[0], pytcp[1], data), BULK_BYTES),
                        baseline_name="PyTCP assemblers/parsers, in-order loop", work=1,
                        unit="bits", scale=1e9, scale_name="Gbit/s", goal_rate=2.0,
                        goal_ratio=50.0, self_timed=True, repeats=BULK_REPEATS,
                        note="PyTCP cannot run two stacks in one process: its own segment "
                             "code in a minimal in-order loop stands in (module docstring)"))
    else:
        out.append(Case(group="tcp", name=name, fastproto=bulk, work=1, unit="bits",
                        baseline_name="PyTCP not installed", scale=1e9, scale_name="Gbit/s",
                        goal_rate=2.0, self_timed=True, repeats=BULK_REPEATS))
    out.append(Case(group="tcp", name=f"TCP bulk {BULK_BYTES >> 20} MiB, against Linux's TCP",
                    fastproto=bulk, baseline=_loopback_bulk(data),
                    baseline_name="Linux TCP over loopback, Python sockets", work=1,
                    unit="bits", scale=1e9, scale_name="Gbit/s", goal_rate=10.0,
                    goal_ratio=0.5, self_timed=True, repeats=BULK_REPEATS,
                    note="the TOE path's goal: 10 Gbit/s and half of Linux's own TCP"))
    lean = _codecs(_lean_codec)
    out.append(Case(group="tcp", name=f"TCP bulk {BULK_BYTES >> 20} MiB, lean Python", fastproto=bulk,
                    baseline=_per_bit(_in_order_transfer(lean[0], lean[1], data), BULK_BYTES),
                    baseline_name="pure-Python in-order loop", work=1, unit="bits",
                    scale=1e9, scale_name="Gbit/s", self_timed=True, repeats=BULK_REPEATS))
    out.append(Case(group="tcp", name=f"TCP request/response {RR_SIZE} B, one connection, "
                    "median", fastproto=_stack_rr(RR_TRANSACTIONS),
                    baseline=_loopback_rr(RR_TRANSACTIONS),
                    baseline_name="Linux TCP over loopback, Python sockets, TCP_NODELAY",
                    work=1, unit="transactions", scale=1e3, scale_name="k transactions/s",
                    goal_rate=20.0, self_timed=True,
                    note="both on one CPU without wake-up preemption (one_cpu)"))
    out.append(_memory_case())
    return out


def idle_connection_bytes(n: int = 10000) -> float:
    """Python heap bytes per idle ESTABLISHED connection with empty buffers (tracemalloc)."""
    import gc
    import tracemalloc

    from fastproto.proto.tcp import TcpConnection
    from fastproto.proto.tcp_timers import TcpConfig

    cfg = TcpConfig()
    local = ("198.18.0.2", 80)
    records = [SimpleNamespace(local=local, remote=("198.18.%d.%d" % (i >> 8 & 255, i & 255), 1024 + i),
                               iss=0x12345678 + i * 7919, irs=0x9ABCDEF0 + i * 104729,
                               snd_wnd=64240 << 7, peer_mss=1460, snd_wscale=7, rcv_wscale=3,
                               ts_recent=123456789 + i, sack_permitted=True) for i in range(n)]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        conns = [TcpConnection.from_handshake(r, cfg, _clock, _noop) for r in records]
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(d.size_diff for d in after.compare_to(before, "filename"))
    return grown / len(conns)


def _clock() -> float:
    return 1000.0
