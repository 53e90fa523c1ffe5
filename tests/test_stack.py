"""Two stacks on one in-process wire, for every dispatch model."""
from __future__ import annotations

import errno
import ipaddress
import socket
import threading
from typing import Iterator

import pytest
from scapy.layers.inet import ICMP, IP, UDP, UDPerror
from scapy.layers.l2 import ARP, Ether

from concurrency import wait_until
from fastproto.dispatch import MODELS
from fastproto.phy.link import LinkPair
from fastproto.stack import Stack

A_IP, B_IP = "198.18.0.1", "198.18.0.2"



@pytest.fixture(params=MODELS)
def model(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def link() -> LinkPair:
    return LinkPair()


@pytest.fixture
def pair(model: str, link: LinkPair) -> Iterator[tuple[Stack, Stack]]:
    with Stack(link.a, f"{A_IP}/24", dispatch=model) as a, \
            Stack(link.b, f"{B_IP}/24", dispatch=model) as b:
        yield a, b
    # Every buffer went back to its pool, whatever path its frame took.
    assert a.pool.available == a.pool.count
    assert b.pool.available == b.pool.count


def test_udp_echo_both_ways_is_byte_exact(pair: tuple[Stack, Stack]) -> None:
    a, b = pair
    with a.socket() as sa, b.socket() as sb:
        sb.bind(("", 7))
        sa.settimeout(5)
        sb.settimeout(5)
        message = bytes(range(256)) * 4 + b"\x00tail"
        sa.sendto(message, (B_IP, 7))
        data, addr = sb.recvfrom(4096)
        assert data == message
        assert addr == (A_IP, sa.getsockname()[1])
        sb.sendto(data[::-1], addr)
        assert sa.recvfrom(4096) == (message[::-1], (B_IP, 7))


def test_many_datagrams_to_many_sockets_arrive_in_order(pair: tuple[Stack, Stack]) -> None:
    a, b = pair
    _warm_up(a, b, 1)  # a burst before ARP resolves would overflow the ARP hold queue
    receivers = [b.socket() for _ in range(8)]
    for i, s in enumerate(receivers):
        s.bind((B_IP, 5000 + i))
        s.settimeout(5)
    sender = a.socket()
    for n in range(40):
        for i in range(len(receivers)):
            sender.sendto(f"{i}:{n}".encode(), (B_IP, 5000 + i))
    for i, s in enumerate(receivers):
        assert [s.recv(64) for _ in range(40)] == [f"{i}:{n}".encode() for n in range(40)]
    stats = b.stats()
    assert stats["udp.delivered"] == 320 + 1
    assert stats["drop.socket_pcq"] == 0 and stats["drop.socket_rcvbuf"] == 0


def test_60000_byte_datagram_is_fragmented_and_reassembled(pair: tuple[Stack, Stack]) -> None:
    a, b = pair
    with a.socket() as sa, b.socket() as sb:
        sb.bind(("", 9000))
        sb.settimeout(5)
        payload = bytes((i * 7 + 3) & 0xFF for i in range(60000))
        sa.sendto(payload, (B_IP, 9000))
        assert sb.recv(65536) == payload
        assert a.stats()["ip.fragments_sent"] == -(-60008 // 1480)
        assert b.stats()["reasm.ok"] == 1


def test_ping_gets_an_echo_reply(pair: tuple[Stack, Stack]) -> None:
    a, b = pair
    assert a.ping(B_IP, b"abc" * 10, timeout=5) >= 0
    assert b.stats()["icmp.echo_replies_sent"] == 1
    assert a.stats()["icmp.echo_replies_received"] == 1


def test_ping_of_a_fragmented_echo_request_is_answered(pair: tuple[Stack, Stack]) -> None:
    a, b = pair
    assert a.ping(B_IP, bytes(4000), timeout=5) >= 0
    assert b.stats()["reasm.ok"] == 1
    assert a.stats()["reasm.ok"] == 1


def test_ping_of_a_silent_address_times_out(pair: tuple[Stack, Stack]) -> None:
    a, _ = pair
    with pytest.raises(TimeoutError):
        a.ping("198.18.0.77", timeout=0.05)


def test_closed_port_makes_connected_recv_raise_connection_refused(
        pair: tuple[Stack, Stack]) -> None:
    a, b = pair
    with a.socket() as sa:
        sa.settimeout(5)
        sa.connect((B_IP, 9))
        sa.send(b"anyone?")
        with pytest.raises(ConnectionRefusedError):
            sa.recv(100)
    stats = b.stats()
    assert stats["udp.no_port"] == 1 and stats["icmp.dest_unreach_sent"] == 1
    assert a.stats()["icmp.errors_delivered"] == 1


def test_unconnected_socket_does_not_hear_of_port_unreachable(pair: tuple[Stack, Stack]) -> None:
    a, b = pair
    with a.socket() as sa:
        sa.sendto(b"x", (B_IP, 9))
        assert wait_until(lambda: a.stats().get("icmp.errors_ignored", 0) == 1)
        sa.setblocking(False)
        with pytest.raises(BlockingIOError):
            sa.recv(10)


def test_icmp_errors_are_rate_limited(link: LinkPair) -> None:
    with Stack(link.a, f"{A_IP}/24", dispatch="inline") as a, \
            Stack(link.b, f"{B_IP}/24", dispatch="inline", icmp_rate=0, icmp_burst=2) as b:
        s = a.socket()
        for _ in range(5):
            s.sendto(b"x", (B_IP, 9))
        assert wait_until(lambda: b.stats().get("udp.no_port", 0) == 5)
        stats = b.stats()
        assert stats["icmp.dest_unreach_sent"] == 2
        assert stats["icmp.ratelimited"] == 3


def test_full_receive_buffer_counts_its_drops(pair: tuple[Stack, Stack]) -> None:
    a, b = pair
    sb = b.socket()
    sb.bind(("", 6000))
    sb.setsockopt(1, 8, 1000)  # SOL_SOCKET, SO_RCVBUF
    sa = a.socket()
    for i in range(20):
        sa.sendto(bytes([i]) * 100, (B_IP, 6000))
    assert wait_until(lambda: b.stats()["udp.delivered"] + b.stats()["drop.socket_rcvbuf"] == 20)
    assert b.stats()["drop.socket_rcvbuf"] == 10
    assert sb.stats()["rcvbuf_drops"] == 10
    sb.setblocking(False)
    assert [sb.recv(200) for _ in range(10)] == [bytes([i]) * 100 for i in range(10)]
    with pytest.raises(BlockingIOError):
        sb.recv(200)


def _warm_up(a: Stack, b: Stack, port: int) -> None:
    """One datagram each way so ARP is resolved before a burst."""
    s = a.socket()
    r = b.socket()
    r.bind(("", port))
    r.settimeout(5)
    s.sendto(b"warm", (B_IP, port))
    assert r.recv(10) == b"warm"
    s.close()
    r.close()


def test_full_socket_pcq_counts_its_drops(model: str, link: LinkPair) -> None:
    with Stack(link.a, f"{A_IP}/24", dispatch=model) as a, \
            Stack(link.b, f"{B_IP}/24", dispatch=model, pcq_len=4) as b:
        _warm_up(a, b, 1)
        sb = b.socket()
        sb.bind(("", 6001))
        sa = a.socket()
        # Keep the puller out of the driver so the burst arrives as one batch.
        with link.b.serializer:
            for i in range(20):
                sa.sendto(bytes([i]), (B_IP, 6001))
        assert wait_until(lambda: b.stats()["demux.pcq_full"] == 16)
        assert b.stats()["drop.socket_pcq"] == 16
        sb.settimeout(5)
        assert [sb.recv(10) for _ in range(4)] == [bytes([i]) for i in range(4)]


def test_full_rx_ring_counts_its_drops(link: LinkPair) -> None:
    small = LinkPair(rx_ring_size=8)
    with Stack(small.a, f"{A_IP}/24", dispatch="puller") as a, \
            Stack(small.b, f"{B_IP}/24", dispatch="puller") as b:
        _warm_up(a, b, 1)
        sb = b.socket()
        sb.bind(("", 6002))
        sa = a.socket()
        with small.b.serializer:
            for i in range(20):
                sa.sendto(bytes([i]), (B_IP, 6002))
        assert wait_until(lambda: b.stats()["udp.delivered"] == 8 + 1)
        assert b.stats()["drop.rx_ring"] == 12


def test_full_netisr_queue_counts_its_drops(link: LinkPair) -> None:
    with Stack(link.a, f"{A_IP}/24", dispatch="netisr") as a, \
            Stack(link.b, f"{B_IP}/24", dispatch="netisr", netisr_qlen=8) as b:
        _warm_up(a, b, 1)
        sb = b.socket()
        sb.bind(("", 6003))
        sa = a.socket()
        with link.b.serializer:
            for i in range(30):
                sa.sendto(bytes([i]), (B_IP, 6003))
        assert wait_until(lambda: b.stats()["drop.netisr_queue"] == 22)
        sb.settimeout(5)
        assert [sb.recv(10) for _ in range(8)] == [bytes([i]) for i in range(8)]
        assert b.stats()["udp.delivered"] == 8 + 1


def test_threads_are_gone_after_close(model: str, link: LinkPair) -> None:
    before = set(threading.enumerate())
    a = Stack(link.a, f"{A_IP}/24", dispatch=model, workers=2)
    b = Stack(link.b, f"{B_IP}/24", dispatch=model, workers=2)
    assert a.threads() and b.threads()
    s = b.socket()
    s.bind(("", 1234))
    a.socket().sendto(b"x", (B_IP, 1234))
    s.settimeout(5)
    assert s.recv(10) == b"x"
    a.close()
    b.close()
    assert a.threads() == [] and b.threads() == []
    assert set(threading.enumerate()) <= before
    assert s.closed
    assert b.pool.available == b.pool.count


def test_stats_has_every_section(pair: tuple[Stack, Stack]) -> None:
    a, b = pair
    stats = b.stats()
    for key in ("demux.delivered", "demux.ip_bad_checksum", "if.rx_frames", "drop.rx_ring",
                "drop.rx_no_buffer", "drop.netisr_queue", "drop.socket_pcq",
                "drop.socket_rcvbuf", "arp.requests_sent", "reasm.ok",
                "icmp.ratelimit_denied", "wakeup.puller", "wakeup.reader",
                "rusage.nvcsw", "rusage.nivcsw"):
        assert isinstance(stats[key], int), key


def test_malformed_frame_is_counted_not_delivered(link: LinkPair) -> None:
    with Stack(link.b, f"{B_IP}/24", dispatch="inline") as b:
        bad = bytearray(bytes(Ether(dst=link.b.mac, src=link.a.mac) /
                              IP(src=A_IP, dst=B_IP) / UDP(sport=1, dport=2) / b"hi"))
        bad[14 + 10] ^= 0xFF  # break the IPv4 header checksum
        link.a.transmit([bytes(bad)])
        assert wait_until(lambda: b.stats()["demux.ip_bad_checksum"] == 1)
        assert b.pool.available == b.pool.count


def test_frames_on_the_wire_check_out_with_scapy(link: LinkPair) -> None:
    """Stack A against a hand-driven peer: ARP, UDP and ICMP checked by scapy."""
    peer = link.b
    with Stack(link.a, f"{A_IP}/24", dispatch="inline") as a:
        s = a.socket()
        s.bind(("", 4000))
        s.settimeout(5)
        s.sendto(b"to the peer", (B_IP, 53))
        assert wait_until(lambda: peer.stats()["rx_ring_queued"] >= 1)
        (request,) = peer.receive(10)
        arp = Ether(request)[ARP]
        assert arp.op == 1 and arp.pdst == B_IP and arp.psrc == A_IP
        peer.transmit([bytes(Ether(dst=link.a.mac, src=peer.mac) /
                             ARP(op=2, hwsrc=peer.mac, psrc=B_IP, hwdst=link.a.mac, pdst=A_IP))])
        assert wait_until(lambda: peer.stats()["rx_ring_queued"] >= 1)
        (frame,) = peer.receive(10)
        pkt = Ether(frame)
        assert pkt.dst == ":".join(f"{x:02x}" for x in peer.mac)
        udp = pkt[UDP]
        assert (udp.sport, udp.dport, udp.load) == (4000, 53, b"to the peer")
        # scapy recomputes the checksum over the pseudo-header: it must agree.
        rebuilt = Ether(frame)
        del rebuilt[UDP].chksum
        assert Ether(bytes(rebuilt))[UDP].chksum == udp.chksum != 0
        # An answer from the peer reaches the socket; a datagram to a closed port
        # draws a port unreachable quoting it.
        peer.transmit([bytes(Ether(dst=link.a.mac, src=peer.mac) / IP(src=B_IP, dst=A_IP) /
                             UDP(sport=53, dport=4000) / b"answer")])
        assert s.recvfrom(100) == (b"answer", (B_IP, 53))
        peer.transmit([bytes(Ether(dst=link.a.mac, src=peer.mac) / IP(src=B_IP, dst=A_IP) /
                             UDP(sport=53, dport=4001) / b"nobody")])
        assert wait_until(lambda: peer.stats()["rx_ring_queued"] >= 1)
        (frame,) = peer.receive(10)
        icmp = Ether(frame)[ICMP]
        assert (icmp.type, icmp.code) == (3, 3)
        assert icmp[UDPerror].dport == 4001 and icmp[UDPerror].load == b"nobody"
        assert ipaddress.IPv4Address(Ether(frame)[IP].dst) == ipaddress.IPv4Address(B_IP)


def test_unknown_dispatch_model_is_refused(link: LinkPair) -> None:
    with pytest.raises(ValueError):
        Stack(link.a, dispatch="interrupts")


# -- raw IP sockets (rip_input) ------------------------------------------------

def test_raw_icmp_sockets_see_echo_request_and_reply(pair: tuple[Stack, Stack]) -> None:
    a, b = pair
    with a.socket(socket.AF_INET, socket.SOCK_RAW, 1) as ra, \
            b.socket(socket.AF_INET, socket.SOCK_RAW, 1) as rb:
        ra.settimeout(5)
        rb.settimeout(5)
        a.ping(B_IP, b"raw!", timeout=5)   # the stack still answers
        request, src = rb.recvfrom(2048)
        assert src == (A_IP, 0)
        ip = IP(request)
        assert (ip.src, ip.dst, ip[ICMP].type, ip[ICMP].load) == (A_IP, B_IP, 8, b"raw!")
        reply, src = ra.recvfrom(2048)
        assert src == (B_IP, 0) and IP(reply)[ICMP].type == 0


def test_raw_socket_of_its_own_protocol_both_ways(pair: tuple[Stack, Stack]) -> None:
    a, b = pair
    with a.socket(socket.AF_INET, socket.SOCK_RAW, 253) as ra, \
            b.socket(socket.AF_INET, socket.SOCK_RAW, 253) as rb:
        rb.settimeout(5)
        payload = bytes(range(256)) * 16   # 4096 bytes: fragmented on the way
        ra.sendto(payload, (B_IP, 0))
        packet = rb.recv(8192)
        assert packet[9] == 253 and packet[20:] == payload and len(packet) == 20 + len(payload)
        ra.connect((B_IP, 0))
        ra.send(b"small")
        assert rb.recv(100)[20:] == b"small"
    assert b.stats().get("ip.proto_unreachable", 0) == 0


def test_protocol_without_a_raw_socket_is_unreachable(pair: tuple[Stack, Stack]) -> None:
    a, b = pair
    with a.socket(socket.AF_INET, socket.SOCK_RAW, 253) as ra, \
            a.socket(socket.AF_INET, socket.SOCK_RAW, 1) as icmp:
        icmp.settimeout(5)
        ra.sendto(b"anyone?", (B_IP, 0))
        error = IP(icmp.recv(2048))[ICMP]
        assert (error.type, error.code) == (3, 2)
    assert b.stats()["ip.proto_unreachable"] == 1


def test_raw_udp_socket_gets_copies_of_every_udp_datagram(pair: tuple[Stack, Stack]) -> None:
    a, b = pair
    with b.socket(socket.AF_INET, socket.SOCK_RAW, 17) as raw, a.socket() as tx:
        raw.settimeout(5)
        rx = b.socket()
        rx.bind(("", 7000))
        rx.settimeout(5)
        tx.sendto(b"bound", (B_IP, 7000))
        assert rx.recv(100) == b"bound"
        tx.sendto(b"closed", (B_IP, 7001))
        copies = [IP(raw.recv(2048)) for _ in range(2)]
        assert [(p[UDP].dport, p[UDP].load) for p in copies] == [(7000, b"bound"),
                                                                  (7001, b"closed")]


def test_raw_socket_filters_by_bound_and_connected_address(pair: tuple[Stack, Stack]) -> None:
    a, b = pair
    with b.socket(socket.AF_INET, socket.SOCK_RAW, 1) as elsewhere, \
            b.socket(socket.AF_INET, socket.SOCK_RAW, 1) as mine:
        elsewhere.connect(("198.18.0.200", 0))
        mine.bind((B_IP, 0))
        with pytest.raises(OSError) as info:
            b.socket(socket.AF_INET, socket.SOCK_RAW, 1).bind(("198.18.0.200", 0))
        assert info.value.errno == errno.EADDRNOTAVAIL
        a.ping(B_IP, timeout=5)
        assert IP(mine.recv(2048))[ICMP].type == 8
        elsewhere.setblocking(False)
        with pytest.raises(BlockingIOError):
            elsewhere.recv(2048)


def test_raw_socket_needs_a_protocol(link: LinkPair) -> None:
    with Stack(link.a, f"{A_IP}/24", dispatch="inline") as a:
        for proto in (0, 255):
            with pytest.raises(OSError) as info:
                a.socket(socket.AF_INET, socket.SOCK_RAW, proto)
            assert info.value.errno == errno.EPROTONOSUPPORT


def test_mac_may_be_given_as_text_or_bytes():
    link = LinkPair()
    with Stack(link.a, "198.18.0.1/24", mac="02:00:5e:00:00:07") as a, \
            Stack(link.b, "198.18.0.2/24", mac=bytes.fromhex("02005e000008")) as b:
        assert a.mac == bytes.fromhex("02005e000007") and b.mac == bytes.fromhex("02005e000008")
