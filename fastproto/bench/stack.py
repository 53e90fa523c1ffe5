"""stack cases: the receive path from an rx batch into 1,000 sockets' PCQs.

fastproto: ``Demux.input`` on batches of 256 minimum-size (60-byte, 64 with
the FCS) UDP frames for 1,000 bound sockets, each with a 512-deep PCQ, then
the woken sockets' PCQs are emptied (``PCQDrainer``, standing in for the
receivers) so every round starts alike.  The frames are spread over 16
batches so the parse reads buffers that are not all in L1.

Baselines, each on the same frames:

- PyTCP, the pure-Python stack on PyPI (``pip install -e '.[bench]'``): its
  own Ethernet, IPv4 and UDP parsers (``PacketRx`` and the ``*Parser``
  classes), its ``UdpMetadata`` socket patterns looked up in a dict of
  sockets keyed as its ``stack.sockets`` is, and a deque per socket.  Its
  packet handler itself is bound to a global stack object and a TAP device,
  so this drives the same per-packet steps without them.
- a lean demux written in plain Python for the comparison (Ethernet type,
  IPv4 header checks and checksum, UDP ports, a dict of sockets with the same
  wildcard fallback, a deque per socket): what hand-tuned Python can do.

The echo cases time request/response round trips of a 32-byte datagram
between two stacks on a LinkPair, beside the same exchange over Linux's
loopback with Python sockets, and report the median as round trips/s.  Both
sides run on one CPU without wake-up preemption (``fastproto.sched.cpu.one_cpu``:
the GIL serializes the exchange anyway) and, for comparison, as the kernel
places them.
"""
from __future__ import annotations

import collections
import contextlib
import statistics
import struct
import time

import numpy as np

from fastproto.bench import Case
from fastproto.sched.cpu import one_cpu

SOCKETS = 1000
BATCH = 256
ROUNDS = 16
LOCAL, PEER = "198.18.0.2", "198.18.0.1"
BASE_PORT = 10000


def _frames(rng: np.random.Generator, n: int) -> list[bytes]:
    from fastproto.wire import ETH_P_IP, ethernet, ipv4, udp

    return [
        ethernet("02:00:5e:12:00:02", "02:00:5e:12:00:01", ETH_P_IP,
                 ipv4(PEER, LOCAL, 17, udp(PEER, LOCAL, 20000 + i % 30000,
                                           BASE_PORT + int(rng.integers(SOCKETS)), bytes(18))))
        for i in range(n)
    ]


def _python_demux(sockets: dict, queues: list):
    """A receive path in plain Python: the comparison's baseline."""
    eth = struct.Struct("!6s6sH")
    ip = struct.Struct("!BBHHHBBH4s4s")
    ports = struct.Struct("!HH")

    def ip_checksum_ok(header: bytes) -> bool:
        total = sum(struct.unpack("!10H", header))
        while total >> 16:
            total = (total & 0xFFFF) + (total >> 16)
        return total == 0xFFFF

    def demux(frames: list[bytes]) -> int:
        delivered = 0
        for frame in frames:
            if len(frame) < 34:
                continue
            _, _, ethertype = eth.unpack_from(frame)
            if ethertype != 0x0800:
                continue
            vihl, _, total, _, _, _, proto, _, src, dst = ip.unpack_from(frame, 14)
            ihl = (vihl & 0xF) * 4
            if vihl >> 4 != 4 or ihl < 20 or total < ihl or 14 + total > len(frame):
                continue
            if not ip_checksum_ok(frame[14:34]):
                continue
            if proto != 17:
                continue
            sport, dport = ports.unpack_from(frame, 14 + ihl)
            sock = (sockets.get((proto, dst, dport, src, sport))
                    or sockets.get((proto, dst, dport, None, 0))
                    or sockets.get((proto, None, dport, None, 0)))
            if sock is not None:
                queues[sock].append(frame)
                delivered += 1
        return delivered

    return demux


def _pytcp_demux(queues: list):
    """PyTCP's per-packet receive steps for UDP, or None if PyTCP is missing."""
    try:
        from pytcp.lib.packet import PacketRx
        from pytcp.protocols.ether.fpp import EtherParser
        from pytcp.protocols.ip4.fpp import Ip4Parser
        from pytcp.protocols.udp.fpp import UdpParser
        from pytcp.protocols.udp.metadata import UdpMetadata
    except ImportError:
        return None
    sockets = {f"AF_INET4/SOCK_DGRAM/{LOCAL}/{BASE_PORT + s}/0.0.0.0/0": s for s in range(SOCKETS)}

    def demux(frames: list[bytes]) -> int:
        delivered = 0
        for frame in frames:
            packet = PacketRx(frame)
            EtherParser(packet)
            if packet.parse_failed:
                continue
            Ip4Parser(packet)
            if packet.parse_failed:
                continue
            UdpParser(packet)
            if packet.parse_failed:
                continue
            md = UdpMetadata(local_ip_address=packet.ip.dst, local_port=packet.udp.dport,
                             remote_ip_address=packet.ip.src, remote_port=packet.udp.sport,
                             data=bytes(packet.udp.data))
            for pattern in md.socket_patterns:
                sock = sockets.get(pattern)
                if sock is not None:
                    queues[sock].append(md)
                    delivered += 1
                    break
        return delivered

    return demux


#: round trips timed per call of an echo case, after WARMUP_ROUND_TRIPS untimed ones
ROUND_TRIPS = 2000
WARMUP_ROUND_TRIPS = 200


def _echo_round_trip(make_pair, pin: bool):
    """A callable returning the median seconds of a request/response round
    trip of a 32-byte datagram between a client socket and an echo thread on
    a server socket, both made (and torn down) by ``make_pair``, a context
    manager yielding (client socket connected to the server, server socket)."""
    from fastproto.demo import echoing

    def run() -> float:
        with (one_cpu() if pin else contextlib.nullcontext()), make_pair() as (client, server), \
                echoing(server):
            payload = b"x" * 32
            for _ in range(WARMUP_ROUND_TRIPS):
                client.send(payload)
                client.recv(2048)
            times = []
            clock = time.perf_counter
            for _ in range(ROUND_TRIPS):
                t0 = clock()
                client.send(payload)
                client.recv(2048)
                times.append(clock() - t0)
        return statistics.median(times)

    return run


def _stack_pair(model: str):

    from fastproto.demo import stack_pair

    @contextlib.contextmanager
    def pair():
        with stack_pair(model, server_timeout=0.05) as (_, _, client, server):
            yield client, server

    return pair


def _loopback_pair():
    import socket

    @contextlib.contextmanager
    def pair():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            server.bind(("127.0.0.1", 0))
            server.settimeout(0.05)
            client.settimeout(2.0)
            client.connect(server.getsockname())
            yield client, server

    return pair


def cases() -> list[Case]:
    import ipaddress

    from fastproto import BufferPool, Demux, PCBTable, PCQ
    from fastproto._core._stress import PCQDrainer

    rng = np.random.default_rng(7)
    frames = _frames(rng, BATCH * ROUNDS)

    pool = BufferPool(BATCH * ROUNDS)
    table = PCBTable()
    demux = Demux(pool, table, max_sockets=SOCKETS, capacity=BATCH)
    pcqs = [PCQ(512) for _ in range(SOCKETS)]
    for sock, q in enumerate(pcqs):
        demux.attach(sock, q)
        table.insert(17, LOCAL, BASE_PORT + sock, None, 0, sock)
    drainer = PCQDrainer(pcqs)
    batch = pool.batch_from_frames(frames)
    handles = [batch.handles[i * BATCH:(i + 1) * BATCH].copy() for i in range(ROUNDS)]
    lengths = [batch.lengths[i * BATCH:(i + 1) * BATCH].copy() for i in range(ROUNDS)]
    work = list(zip(handles, lengths))

    def fastproto_demux():
        for h, n in work:
            _, woken, _, _ = demux.input(h, n)
            drainer.drain(woken)

    local = ipaddress.ip_address(LOCAL).packed
    sockets = {(17, local, BASE_PORT + s, None, 0): s for s in range(SOCKETS)}
    queues = [collections.deque(maxlen=512) for _ in range(SOCKETS)]
    py_demux = _python_demux(sockets, queues)
    chunks = [frames[i * BATCH:(i + 1) * BATCH] for i in range(ROUNDS)]

    def python_demux():
        for chunk in chunks:
            py_demux(chunk)
        for q in queues:
            q.clear()

    out = []
    pytcp_demux = _pytcp_demux(queues)
    if pytcp_demux is not None:
        def pytcp():
            for chunk in chunks:
                pytcp_demux(chunk)
            for q in queues:
                q.clear()

        out.append(Case("stack", f"demux 64 B UDP x{BATCH} -> {SOCKETS} sockets", fastproto_demux,
                        BATCH * ROUNDS, "frames", baseline=pytcp, baseline_name="PyTCP",
                        goal_rate=10.0, goal_ratio=100.0, scale=1e6, scale_name="M frames/s"))
    else:
        out.append(Case("stack", f"demux 64 B UDP x{BATCH} -> {SOCKETS} sockets", fastproto_demux,
                        BATCH * ROUNDS, "frames", baseline_name="PyTCP not installed",
                        goal_rate=10.0, scale=1e6, scale_name="M frames/s"))
    out.append(Case("stack", f"demux 64 B UDP x{BATCH}, lean Python", fastproto_demux,
                    BATCH * ROUNDS, "frames", baseline=python_demux,
                    baseline_name="pure-Python demux", scale=1e6, scale_name="M frames/s"))
    # The median round trip, as its inverse (round trips/s): the goal of a
    # median under 50 us is 20 k/s.
    for model, pin in (("lrp", True), ("inline", True), ("lrp", False)):
        where = "one CPU" if pin else "any CPU"
        out.append(Case("stack", f"UDP echo median round trip, LinkPair, {model}, {where}",
                        _echo_round_trip(_stack_pair(model), pin), 1, "round trips",
                        baseline=_echo_round_trip(_loopback_pair(), pin),
                        baseline_name=f"Linux UDP over loopback, Python sockets, {where}",
                        goal_rate=20.0 if pin and model == "lrp" else None,
                        scale=1e3, scale_name="k round trips/s", self_timed=True))
    return out
