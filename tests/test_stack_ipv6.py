"""IPv6 in the stack: Neighbor Discovery, ICMPv6, UDP over IPv6 sockets.

Two stacks on a LinkPair for the end-to-end behaviour (every dispatch model),
and one stack against a hand-driven link end whose frames scapy builds and
checks (an independent oracle for the wire formats).
"""
from __future__ import annotations

import errno
import ipaddress
import random
import socket
from typing import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import UDP
from scapy.layers.inet6 import (
    ICMPv6DestUnreach, ICMPv6EchoReply, ICMPv6EchoRequest, ICMPv6ND_NA, ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr, ICMPv6NDOptSrcLLAddr, ICMPv6ParamProblem, IPv6, IPv6ExtHdrFragment,
    defragment6, fragment6,
)
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils6 import in6_getnsma, in6_getnsmac, in6_mactoifaceid

from concurrency import wait_until
from fastproto.dispatch import MODELS
from fastproto.phy.link import LinkEnd, LinkPair
from fastproto.stack import Stack

A_IP, B_IP = "198.18.0.1", "198.18.0.2"
A6, B6 = "2001:2::1", "2001:2::2"
ALL_NODES_MAC = "33:33:00:00:00:01"



def mac(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


def solicited_mac(addr: str) -> str:
    return str(in6_getnsmac(in6_getnsma(socket.inet_pton(socket.AF_INET6, addr))))


def solicited_group(addr: str) -> str:
    return socket.inet_ntop(socket.AF_INET6, in6_getnsma(socket.inet_pton(socket.AF_INET6, addr)))


def frames_from(peer: LinkEnd, n: int = 1) -> list[bytes]:
    """The next ``n`` frames the stack sent to the hand-driven end."""
    assert wait_until(lambda: peer.stats()["rx_ring_queued"] >= n), peer.stats()
    return peer.receive(n)


def nothing_from(peer: LinkEnd, stack: Stack, counter: str, value: int = 1) -> None:
    """Wait for ``counter`` to reach ``value``, then check that no frame was sent."""
    assert wait_until(lambda: stack.stats().get(counter, 0) >= value), counter
    assert stack.stats().get(counter, 0) == value
    assert peer.stats()["rx_ring_queued"] == 0


@pytest.fixture(params=MODELS)
def pair(request: pytest.FixtureRequest) -> Iterator[tuple[Stack, Stack]]:
    link = LinkPair()
    with Stack(link.a, f"{A_IP}/24", dispatch=request.param, ipv6=f"{A6}/64") as a, \
            Stack(link.b, f"{B_IP}/24", dispatch=request.param, ipv6=f"{B6}/64") as b:
        yield a, b
    assert a.pool.available == a.pool.count
    assert b.pool.available == b.pool.count


@pytest.fixture
def solo() -> Iterator[tuple[Stack, LinkEnd]]:
    """A stack (2001:2::1) on ``link.a``; ``link.b`` is driven by the test."""
    link = LinkPair()
    with Stack(link.a, f"{A_IP}/24", dispatch="inline", ipv6=f"{A6}/64") as a:
        yield a, link.b
    assert a.pool.available == a.pool.count


def introduce(stack: Stack, peer: LinkEnd) -> None:
    """The peer (2001:2::2) solicits the stack with its link-layer address, so the
    stack knows it; the stack's advertisement is taken off the wire."""
    peer.transmit([bytes(Ether(dst=solicited_mac(A6), src=mac(peer.mac)) /
                         IPv6(src=B6, dst=solicited_group(A6), hlim=255) /
                         ICMPv6ND_NS(tgt=A6) / ICMPv6NDOptSrcLLAddr(lladdr=mac(peer.mac)))])
    (na,) = frames_from(peer)
    assert Ether(na)[ICMPv6ND_NA].tgt == A6


def to_stack(stack: Stack, peer: LinkEnd, l4, src: str = B6, dst: str = A6, hlim: int = 64):  # type: ignore[no-untyped-def]
    return Ether(dst=mac(stack.mac), src=mac(peer.mac)) / IPv6(src=src, dst=dst, hlim=hlim) / l4


# -- addresses ---------------------------------------------------------------------

def test_link_local_address_is_the_modified_eui64_of_the_mac() -> None:
    link = LinkPair()
    with Stack(link.a, f"{A_IP}/24", mac="02:00:00:00:00:02", ipv6=f"{A6}/64") as a:
        assert a.ll6 == str(ipaddress.IPv6Address(
            "fe80::" + in6_mactoifaceid("02:00:00:00:00:02")))
        assert a.ll6 == "fe80::ff:fe00:2"
        assert a.ip6 == A6


def test_ipv6_off_counts_frames_and_refuses_af_inet6_sockets() -> None:
    link = LinkPair()
    with Stack(link.a, f"{A_IP}/24", dispatch="inline") as a:
        with pytest.raises(OSError) as exc:
            a.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        assert exc.value.errno == errno.EAFNOSUPPORT
        link.b.transmit([bytes(to_stack(a, link.b, ICMPv6EchoRequest()))])
        assert wait_until(lambda: a.stats().get("ip6.unsupported") == 1)


def test_bad_ipv6_addresses_are_refused() -> None:
    link = LinkPair()
    for bad in ("ff02::1/64", "::/64", "::ffff:198.18.0.1/96"):
        with pytest.raises(ValueError):
            Stack(link.a, f"{A_IP}/24", ipv6=bad)


# -- Neighbor Discovery ---------------------------------------------------------------

def test_ping_resolves_the_neighbour_then_gets_a_reply(pair: tuple[Stack, Stack]) -> None:
    a, b = pair
    assert a.ping(B6, b"data", timeout=5) >= 0
    assert a.nd is not None and a.nd.lookup(B6) == b.mac
    sa, sb = a.stats(), b.stats()
    assert sa["nd.ns_sent"] == 1 and sa["nd.released"] == 1
    assert sb["nd.ns_received"] == 1 and sb["nd.na_sent"] == 1
    assert sb["icmp6.in_echo"] == sb["icmp6.out_echo_reply"] == 1
    assert sa["icmp6.in_echo_reply"] == 1
    # b learned a from the solicitation's source link-layer option: no NS of its own.
    assert sb["nd.ns_sent"] == 0 and sb["nd.learned"] == 1


def test_ping_to_link_local_and_with_fragmented_payload(pair: tuple[Stack, Stack]) -> None:
    a, b = pair
    assert b.ll6 is not None
    a.ping(b.ll6, timeout=5)
    a.ping(B6, bytes(range(256)) * 20, timeout=5)
    assert a.stats()["ip6.fragments_sent"] >= 4
    assert b.stats()["ip6.reassembled"] == 1


def test_solicitation_is_multicast_to_the_solicited_node_group(solo: tuple[Stack, LinkEnd]) -> None:
    a, peer = solo
    s = a.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    for i in range(3):
        s.sendto(b"held %d" % i, (B6, 53))
    (ns,) = frames_from(peer)
    pkt = Ether(ns)
    assert pkt.dst == solicited_mac(B6)
    assert pkt[IPv6].dst == solicited_group(B6) and pkt[IPv6].src == A6
    assert pkt[IPv6].hlim == 255
    assert pkt[ICMPv6ND_NS].tgt == B6
    assert pkt[ICMPv6NDOptSrcLLAddr].lladdr == mac(a.mac)
    rebuilt = Ether(ns)
    del rebuilt[ICMPv6ND_NS].cksum
    assert Ether(bytes(rebuilt))[ICMPv6ND_NS].cksum == pkt[ICMPv6ND_NS].cksum
    assert a.nd is not None and a.nd.pending(B6) == 3
    # The advertisement releases the held datagrams, in order.
    peer.transmit([bytes(Ether(dst=mac(a.mac), src=mac(peer.mac)) /
                         IPv6(src=B6, dst=A6, hlim=255) /
                         ICMPv6ND_NA(tgt=B6, R=0, S=1, O=1) /
                         ICMPv6NDOptDstLLAddr(lladdr=mac(peer.mac)))])
    frames = frames_from(peer, 3)
    assert [Ether(f)[UDP].load for f in frames] == [b"held 0", b"held 1", b"held 2"]
    assert all(Ether(f).dst == mac(peer.mac) for f in frames)
    s.close()


def test_solicitation_is_answered_and_its_source_learned(solo: tuple[Stack, LinkEnd]) -> None:
    a, peer = solo
    introduce(a, peer)
    s = a.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.sendto(b"direct", (B6, 53))
    (frame,) = frames_from(peer)   # no solicitation first: the address was learned
    assert Ether(frame)[UDP].load == b"direct"
    assert a.stats()["nd.ns_sent"] == 0
    s.close()


def test_solicited_advertisement_checks_out_with_scapy(solo: tuple[Stack, LinkEnd]) -> None:
    a, peer = solo
    peer.transmit([bytes(Ether(dst=solicited_mac(A6), src=mac(peer.mac)) /
                         IPv6(src=B6, dst=solicited_group(A6), hlim=255) /
                         ICMPv6ND_NS(tgt=A6) / ICMPv6NDOptSrcLLAddr(lladdr=mac(peer.mac)))])
    (frame,) = frames_from(peer)
    pkt = Ether(frame)
    assert pkt.dst == mac(peer.mac)
    assert (pkt[IPv6].src, pkt[IPv6].dst, pkt[IPv6].hlim) == (A6, B6, 255)
    na = pkt[ICMPv6ND_NA]
    assert (na.tgt, na.S, na.O, na.R) == (A6, 1, 1, 0)
    assert pkt[ICMPv6NDOptDstLLAddr].lladdr == mac(a.mac)
    rebuilt = Ether(frame)
    del rebuilt[ICMPv6ND_NA].cksum
    assert Ether(bytes(rebuilt))[ICMPv6ND_NA].cksum == na.cksum


def test_dad_probe_is_answered_to_all_nodes(solo: tuple[Stack, LinkEnd]) -> None:
    """RFC 4861 7.2.4: a solicitation from :: is answered to ff02::1, not solicited."""
    a, peer = solo
    assert a.ll6 is not None
    for target in (A6, a.ll6):
        peer.transmit([bytes(Ether(dst=solicited_mac(target), src=mac(peer.mac)) /
                             IPv6(src="::", dst=solicited_group(target), hlim=255) /
                             ICMPv6ND_NS(tgt=target))])
        (frame,) = frames_from(peer)
        pkt = Ether(frame)
        assert pkt.dst == ALL_NODES_MAC
        assert (pkt[IPv6].src, pkt[IPv6].dst, pkt[IPv6].hlim) == (target, "ff02::1", 255)
        na = pkt[ICMPv6ND_NA]
        assert (na.tgt, na.S, na.O) == (target, 0, 1)
    assert a.stats()["nd.dad_answered"] == 2


def test_solicitation_with_hop_limit_below_255_is_dropped_and_counted(
        solo: tuple[Stack, LinkEnd]) -> None:
    """RFC 4861 7.1.1: a hop limit below 255 means it crossed a router."""
    a, peer = solo
    peer.transmit([bytes(Ether(dst=solicited_mac(A6), src=mac(peer.mac)) /
                         IPv6(src=B6, dst=solicited_group(A6), hlim=254) /
                         ICMPv6ND_NS(tgt=A6) / ICMPv6NDOptSrcLLAddr(lladdr=mac(peer.mac)))])
    nothing_from(peer, a, "nd.bad_hop_limit")
    assert a.stats()["nd.na_sent"] == 0


@pytest.mark.parametrize("message, counter", [
    (ICMPv6ND_NS(tgt=A6) / Raw(b"\x01\x00" + bytes(6)), "nd.bad_option"),      # option length 0
    (ICMPv6ND_NS(tgt=A6) / Raw(b"\x01\x02" + bytes(6)), "nd.bad_option"),      # runs past the end
    (ICMPv6ND_NS(tgt=A6, code=1), "nd.bad_code"),
    (ICMPv6ND_NS(tgt="ff02::1"), "nd.bad_target"),
    (ICMPv6ND_NS(tgt="2001:2::99"), "nd.not_for_us"),
])
def test_malformed_neighbor_discovery_is_counted(solo: tuple[Stack, LinkEnd], message,  # type: ignore[no-untyped-def]
                                                 counter: str) -> None:
    a, peer = solo
    peer.transmit([bytes(Ether(dst=solicited_mac(A6), src=mac(peer.mac)) /
                         IPv6(src=B6, dst=solicited_group(A6), hlim=255) / message)])
    nothing_from(peer, a, counter)


def test_ndp_with_bad_checksum_is_dropped_by_the_core(solo: tuple[Stack, LinkEnd]) -> None:
    a, peer = solo
    peer.transmit([bytes(Ether(dst=solicited_mac(A6), src=mac(peer.mac)) /
                         IPv6(src=B6, dst=solicited_group(A6), hlim=255) /
                         ICMPv6ND_NS(tgt=A6, cksum=0x1234))])
    nothing_from(peer, a, "demux.l4_bad_checksum")


def test_frames_for_other_hosts_are_counted(solo: tuple[Stack, LinkEnd]) -> None:
    a, peer = solo
    peer.transmit([bytes(to_stack(a, peer, ICMPv6EchoRequest(), dst="2001:2::99"))])
    nothing_from(peer, a, "ip6.not_for_us")
    # a solicited-node group of another address, at its multicast MAC
    peer.transmit([bytes(Ether(dst=solicited_mac("2001:2::99"), src=mac(peer.mac)) /
                         IPv6(src=B6, dst=solicited_group("2001:2::99"), hlim=255) /
                         ICMPv6ND_NS(tgt="2001:2::99"))])
    nothing_from(peer, a, "ip6.l2_not_for_us")
    peer.transmit([bytes(to_stack(a, peer, ICMPv6EchoRequest(), src="ff02::5"))])
    nothing_from(peer, a, "ip6.bad_source")


# -- ICMPv6 ----------------------------------------------------------------------------

def test_echo_request_is_answered_with_a_valid_checksum(solo: tuple[Stack, LinkEnd]) -> None:
    a, peer = solo
    introduce(a, peer)
    peer.transmit([bytes(to_stack(a, peer, ICMPv6EchoRequest(id=7, seq=9, data=b"abc" * 10)))])
    (frame,) = frames_from(peer)
    pkt = Ether(frame)
    reply = pkt[ICMPv6EchoReply]
    assert (pkt[IPv6].src, pkt[IPv6].dst) == (A6, B6)
    assert (reply.id, reply.seq, reply.data) == (7, 9, b"abc" * 10)
    rebuilt = Ether(frame)
    del rebuilt[ICMPv6EchoReply].cksum
    assert Ether(bytes(rebuilt))[ICMPv6EchoReply].cksum == reply.cksum
    assert a.stats()["icmp6.in_echo"] == 1


def test_echo_request_to_all_nodes_is_answered_from_our_address(
        solo: tuple[Stack, LinkEnd]) -> None:
    a, peer = solo
    introduce(a, peer)
    peer.transmit([bytes(Ether(dst=ALL_NODES_MAC, src=mac(peer.mac)) /
                         IPv6(src=B6, dst="ff02::1") / ICMPv6EchoRequest(id=1, seq=1))])
    (frame,) = frames_from(peer)
    assert Ether(frame)[IPv6].src == A6
    assert Ether(frame).haslayer(ICMPv6EchoReply)


def test_unknown_next_header_draws_a_parameter_problem(solo: tuple[Stack, LinkEnd]) -> None:
    a, peer = solo
    introduce(a, peer)
    peer.transmit([bytes(Ether(dst=mac(a.mac), src=mac(peer.mac)) /
                         IPv6(src=B6, dst=A6, nh=253) / Raw(b"experimental"))])
    (frame,) = frames_from(peer)
    problem = Ether(frame)[ICMPv6ParamProblem]
    assert (problem.code, problem.ptr) == (1, 6)
    assert a.stats()["ip6.unknown_next_header"] == 1


# -- UDP over IPv6 -------------------------------------------------------------------

def test_udp6_echo_both_ways_up_to_the_largest_datagram(pair: tuple[Stack, Stack]) -> None:
    a, b = pair
    with a.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sa, \
            b.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sb:
        sb.bind(("", 7))
        sa.settimeout(5)
        sb.settimeout(5)
        port = None
        for size in (1, 1452, 1453, 8000, 65527):
            message = bytes(i % 251 for i in range(size))
            sa.sendto(message, (B6, 7))
            data, addr = sb.recvfrom(70000)
            assert data == message
            port = sa.getsockname()[1]
            assert addr == (A6, port, 0, 0)
            sb.sendto(data[::-1], addr)
            assert sa.recvfrom(70000) == (message[::-1], (B6, 7, 0, 0))
        assert sa.getsockname() == ("::", port, 0, 0)
        assert b.stats()["ip6.reassembled"] == 3


def test_connected_udp6_socket_hears_of_the_closed_port(pair: tuple[Stack, Stack]) -> None:
    a, b = pair
    with a.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s, \
            a.socket(socket.AF_INET6, socket.SOCK_DGRAM) as loose:
        s.connect((B6, 9))
        assert s.getpeername() == (B6, 9, 0, 0)
        assert s.getsockname()[0] == A6
        s.settimeout(5)
        s.send(b"anyone?")
        with pytest.raises(ConnectionRefusedError):
            s.recv(100)
        # in fragments: refused once whole
        s.send(bytes(3000))
        with pytest.raises(ConnectionRefusedError):
            s.recv(100)
        # an unconnected socket is not told (as on Linux)
        loose.sendto(b"anyone?", (B6, 9))
        assert wait_until(lambda: a.stats().get("icmp6.errors_ignored") == 1)
        loose.settimeout(0)
        with pytest.raises(BlockingIOError):
            loose.recv(100)
    assert b.stats()["udp6.no_port"] == 3


def test_port_unreachable_quotes_the_datagram(solo: tuple[Stack, LinkEnd]) -> None:
    a, peer = solo
    introduce(a, peer)
    peer.transmit([bytes(to_stack(a, peer, UDP(sport=53, dport=4001) / b"nobody"))])
    (frame,) = frames_from(peer)
    pkt = Ether(frame)
    unreach = pkt[ICMPv6DestUnreach]
    assert (unreach.type, unreach.code) == (1, 4)
    assert (pkt[IPv6].src, pkt[IPv6].dst) == (A6, B6)
    quoted = IPv6(bytes(unreach.payload))
    assert quoted[UDP].dport == 4001 and quoted[UDP].load == b"nobody"


def test_no_port_unreachable_about_multicast_or_errors(solo: tuple[Stack, LinkEnd]) -> None:
    """RFC 4443 2.4(e)."""
    a, peer = solo
    introduce(a, peer)
    peer.transmit([bytes(Ether(dst=ALL_NODES_MAC, src=mac(peer.mac)) /
                         IPv6(src=B6, dst="ff02::1") / UDP(sport=53, dport=4001) / b"x")])
    nothing_from(peer, a, "icmp6.error_suppressed_to_multicast")
    # an ICMPv6 error about a datagram of ours for nobody: nothing back
    inner = IPv6(src=A6, dst=B6) / UDP(sport=4000, dport=53) / b"y"
    peer.transmit([bytes(to_stack(a, peer, ICMPv6DestUnreach(code=4) / inner))])
    nothing_from(peer, a, "icmp6.errors_ignored")


def test_port_unreachable_is_rate_limited() -> None:
    link = LinkPair()
    peer = link.b
    with Stack(link.a, f"{A_IP}/24", dispatch="inline", ipv6=f"{A6}/64", icmp_rate=0.001,
               icmp_burst=2) as a:
        introduce(a, peer)
        peer.transmit([bytes(to_stack(a, peer, UDP(sport=53, dport=4001) / b"x"))
                       for _ in range(5)])
        assert wait_until(lambda: a.stats().get("icmp6.ratelimited") == 3)
        assert len(frames_from(peer, 2)) == 2
        assert a.stats()["icmp6.out_dest_unreach"] == 2


def test_zero_udp_checksum_is_dropped_and_counted(solo: tuple[Stack, LinkEnd]) -> None:
    """RFC 8200 8.1: by the core, for whole datagrams and first fragments alike."""
    a, peer = solo
    s = a.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.bind(("", 5000))
    peer.transmit([bytes(to_stack(a, peer, UDP(sport=53, dport=5000, chksum=0) / b"z"))])
    nothing_from(peer, a, "demux.udp_zero_checksum")
    packet = IPv6(src=B6, dst=A6) / IPv6ExtHdrFragment(id=5) / \
        UDP(sport=53, dport=5000, chksum=0) / bytes(3000)
    peer.transmit([bytes(Ether(dst=mac(a.mac), src=mac(peer.mac)) / f)
                   for f in fragment6(packet, 1280)])
    nothing_from(peer, a, "demux.udp_zero_checksum", 2)
    assert a.stats()["reasm.ok"] == 0
    s.settimeout(0)
    with pytest.raises(BlockingIOError):
        s.recv(10)
    s.close()


def test_scapy_fragments_are_reassembled_for_the_socket(solo: tuple[Stack, LinkEnd]) -> None:
    a, peer = solo
    s = a.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.bind((A6, 5000))
    s.settimeout(5)
    data = bytes(range(256)) * 40
    packet = IPv6(src=B6, dst=A6) / IPv6ExtHdrFragment(id=77) / UDP(sport=53, dport=5000) / data
    frags = fragment6(packet, 1280)
    assert len(frags) > 2
    peer.transmit([bytes(Ether(dst=mac(a.mac), src=mac(peer.mac)) / f)
                   for f in reversed(frags)])
    assert s.recvfrom(20000) == (data, (B6, 53, 0, 0))
    s.close()


def test_outgoing_fragments_reassemble_with_scapy(solo: tuple[Stack, LinkEnd]) -> None:
    a, peer = solo
    introduce(a, peer)
    s = a.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.bind(("", 4000))
    data = bytes(range(256)) * 40
    s.sendto(data, (B6, 53))
    n = (len(data) + 8 + 1447) // 1448    # (1500 - 40 - 8) // 8 * 8 bytes a fragment
    frames = frames_from(peer, n)
    assert all(len(f) <= 14 + 1500 for f in frames)
    whole = defragment6([Ether(f)[IPv6] for f in frames])
    udp = IPv6(bytes(whole))[UDP]
    assert (udp.sport, udp.dport, bytes(udp.payload)) == (4000, 53, data)
    rebuilt = IPv6(bytes(whole))
    del rebuilt[UDP].chksum
    assert IPv6(bytes(rebuilt))[UDP].chksum == udp.chksum != 0
    s.close()


def test_udp6_address_checks(solo: tuple[Stack, LinkEnd]) -> None:
    a, _ = solo
    s = a.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    with pytest.raises(OSError) as exc:
        s.bind(("2001:2::99", 0))
    assert exc.value.errno == errno.EADDRNOTAVAIL
    with pytest.raises(OSError) as exc:
        s.sendto(b"x", ("2001:3::1", 7))
    assert exc.value.errno == errno.ENETUNREACH
    with pytest.raises(socket.gaierror):
        s.sendto(b"x", (B_IP, 7))
    with pytest.raises(OverflowError):
        s.sendto(b"x", (B6, 7, 1 << 20, 0))
    with pytest.raises(TypeError):
        s.sendto(b"x", (B6,))
    with pytest.raises(OSError) as exc:
        s.sendto(bytes(65528), (B6, 7))
    assert exc.value.errno == errno.EMSGSIZE
    # IPv4 and IPv6 ports are separate (no dual stack)
    a.socket(socket.AF_INET6, socket.SOCK_DGRAM).bind(("", 7000))
    with a.socket() as s4:
        s4.bind(("", 7000))
    with pytest.raises(OSError) as exc:
        a.socket(socket.AF_INET6, socket.SOCK_DGRAM).bind(("", 7000))
    assert exc.value.errno == errno.EADDRINUSE
    # link-local: bound and reported with the interface's scope id
    ll = a.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    ll.bind((f"{a.ll6}%if", 0))
    name = ll.getsockname()
    assert name[0] == a.ll6 and name[2:] == (0, 1)
    with pytest.raises(OSError) as exc:
        a.socket(socket.AF_INET6, socket.SOCK_RAW, 58)
    assert exc.value.errno == errno.EPROTONOSUPPORT


def test_udp6_to_all_nodes_reaches_a_wildcard_socket(pair: tuple[Stack, Stack]) -> None:
    a, b = pair
    with a.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sa, \
            b.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sb:
        sb.bind(("", 5353))
        sb.settimeout(5)
        sa.bind(("", 5000))
        sa.sendto(b"to everyone", ("ff02::1", 5353))
        # from our link-local address (the group's scope), with the interface's scope id
        assert sb.recvfrom(100) == (b"to everyone", (a.ll6, 5000, 0, 1))
    assert a.stats()["nd.ns_sent"] == 0


@settings(max_examples=8, deadline=None)
@given(size=st.integers(0, 65527), seed=st.integers(0, 2**32 - 1),
       frag_size=st.integers(1280, 1500))
def test_datagrams_round_trip_through_scapy_fragmentation(size: int, seed: int,
                                                          frag_size: int) -> None:
    """The stack's fragments reassemble in scapy to the datagram sent; scapy's
    fragments (any size it picks) reassemble in the stack to the datagram sent."""
    data = random.Random(seed).randbytes(size)
    link = LinkPair()
    peer = link.b
    with Stack(link.a, f"{A_IP}/24", dispatch="inline", ipv6=f"{A6}/64") as a:
        introduce(a, peer)
        s = a.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.bind(("", 4000))
        s.settimeout(5)
        s.sendto(data, (B6, 53))
        n = 1 if 48 + size <= 1500 else (8 + size + 1447) // 1448
        frames = frames_from(peer, n)
        packets = [Ether(f)[IPv6] for f in frames]
        whole = defragment6(packets) if n > 1 else packets[0]
        udp = IPv6(bytes(whole))[UDP]
        assert (udp.sport, udp.dport, bytes(udp.payload)) == (4000, 53, data)
        rebuilt = IPv6(bytes(whole))
        del rebuilt[UDP].chksum
        assert IPv6(bytes(rebuilt))[UDP].chksum == udp.chksum
        # scapy builds the whole packet with its Fragment header before cutting it,
        # so its largest is 8 bytes short of ours.
        data = data[:65535 - 16]
        packet = IPv6(src=B6, dst=A6) / IPv6ExtHdrFragment(id=seed) / \
            UDP(sport=53, dport=4000) / data
        peer.transmit([bytes(Ether(dst=mac(a.mac), src=mac(peer.mac)) / f)
                       for f in fragment6(packet, frag_size)])
        assert s.recvfrom(70000) == (data, (B6, 53, 0, 0))
        s.close()
    assert a.pool.available == a.pool.count
