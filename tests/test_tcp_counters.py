"""TCP counters shared by connections in many threads lose no increment, and
``fastproto.wire.tcp`` names the TCP wire module however it is imported."""
from __future__ import annotations

import importlib
import threading

from concurrency import run_switching_often
from fastproto.proto.tcp import TcpConnection
from fastproto.proto.tcp_timers import TcpConfig, count


def _hammer(fn, threads: int = 4, per_thread: int = 20_000) -> None:
    run_switching_often([lambda: [fn() for _ in range(per_thread)]] * threads)


def test_count_from_many_threads_loses_no_increment():
    counters: dict[str, int] = {}
    _hammer(lambda: count(counters, "tcp.x", 3))
    assert counters == {"tcp.x": 4 * 20_000 * 3}


def test_connections_sharing_a_config_count_every_event():
    cfg = TcpConfig()
    conns = [TcpConnection(cfg) for _ in range(4)]
    it = iter(conns)
    lock = threading.Lock()

    # each thread drives its own connection, as each socket does under its own lock
    def worker() -> None:
        with lock:
            mine = next(it)
        for _ in range(20_000):
            mine._count("tcp.dup_acks")

    run_switching_often([worker] * len(conns))
    assert cfg.counters["tcp.dup_acks"] == 4 * 20_000


def test_tcp_layer_count_from_many_threads_loses_no_increment():
    from fastproto.phy.link import LinkPair
    from fastproto.stack import Stack

    with Stack(LinkPair().a, "198.18.0.1/24") as stack:
        _hammer(lambda: stack.tcp.count("tcp.out_segments", 2))
        assert stack.stats()["tcp.out_segments"] == 4 * 20_000 * 2


def test_wire_tcp_is_the_module_however_imported():
    import fastproto.wire as wire
    import fastproto.wire.tcp as by_import_as
    from fastproto.wire import tcp as by_from_import

    module = importlib.import_module("fastproto.wire.tcp")
    assert by_import_as is module and by_from_import is module and wire.tcp is module
    assert callable(module.build_tcp) and callable(module.parse_tcp)


def test_the_packages_segment_builder_is_tcp_segment():
    from scapy.layers.inet import IP, TCP

    from fastproto.wire import ipv4, tcp_segment

    seg = tcp_segment("198.18.0.1", "198.18.0.2", 4000, 80, 7, 0, 0x02, payload=b"hi")
    pkt = IP(ipv4("198.18.0.1", "198.18.0.2", 6, seg))
    chk = pkt[TCP].chksum
    del pkt[TCP].chksum
    assert IP(bytes(pkt))[TCP].chksum == chk          # scapy recomputes the same checksum
    assert (pkt[TCP].sport, pkt[TCP].dport, pkt[TCP].seq, pkt[TCP].flags) == (4000, 80, 7, "S")
    assert bytes(pkt[TCP].payload) == b"hi"
