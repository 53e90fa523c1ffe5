"""ICMP/ICMPv6 echo replies and errors (RFC 792, RFC 1122 3.2.2, RFC 1812 4.3.2, RFC 4443),
and the token bucket that rate-limits errors."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, UDPerror
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6PacketTooBig,
    IPv6,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
)
from scapy.layers.l2 import Dot1Q, Ether

from fastproto.proto.icmp import (
    IcmpRejected,
    dest_unreachable,
    echo_reply,
    echo_reply_packet,
    error_suppressed,
    packet_too_big,
    parse_icmp_error,
    time_exceeded,
)
from fastproto.proto.ratelimit import TokenBucket

A_MAC, B_MAC = "02:00:00:00:00:0a", "02:00:00:00:00:0b"


def rechecked(pkt, layer, field="chksum"):
    """The checksum scapy computes for a copy of ``pkt`` with ``layer``'s checksum cleared."""
    copy = pkt.__class__(bytes(pkt))
    delattr(copy[layer], field)
    return copy.__class__(bytes(copy))[layer].getfieldval(field)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.binary(max_size=200))
def test_echo_reply_v4_matches_scapy(ident, seq, data):
    req = Ether(src=A_MAC, dst=B_MAC) / IP(src="10.0.0.1", dst="10.0.0.2") / \
        ICMP(type=8, id=ident, seq=seq) / data
    rep = Ether(echo_reply(bytes(req)))
    assert (rep.src, rep.dst) == (B_MAC, A_MAC)
    assert (rep[IP].src, rep[IP].dst) == ("10.0.0.2", "10.0.0.1")
    assert (rep[ICMP].type, rep[ICMP].code, rep[ICMP].id, rep[ICMP].seq) == (0, 0, ident, seq)
    assert bytes(rep[ICMP].payload)[:len(data)] == data
    assert rep[ICMP].chksum == rechecked(rep[IP], ICMP)
    assert rep[IP].chksum == rechecked(rep[IP], IP)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.binary(max_size=200))
def test_echo_reply_v6_matches_scapy(ident, seq, data):
    req = Ether(src=A_MAC, dst=B_MAC) / IPv6(src="2001:db8::1", dst="2001:db8::2") / \
        ICMPv6EchoRequest(id=ident, seq=seq, data=data)
    rep = Ether(echo_reply(bytes(req)))
    assert (rep[IPv6].src, rep[IPv6].dst) == ("2001:db8::2", "2001:db8::1")
    r = rep[ICMPv6EchoReply]
    assert (r.id, r.seq, r.data) == (ident, seq, data)
    assert r.cksum == rechecked(rep[IPv6], ICMPv6EchoReply, "cksum")


def test_echo_reply_keeps_vlan():
    req = Ether(src=A_MAC, dst=B_MAC) / Dot1Q(vlan=5) / IP(src="10.0.0.1", dst="10.0.0.2") / ICMP()
    assert Ether(echo_reply(bytes(req)))[Dot1Q].vlan == 5


def test_echo_to_broadcast_needs_our_address():
    req = Ether(src=A_MAC, dst="ff:ff:ff:ff:ff:ff") / IP(src="10.0.0.1", dst="255.255.255.255") / ICMP()
    with pytest.raises(IcmpRejected) as e:
        echo_reply(bytes(req))
    assert e.value.reason == "multicast_echo"
    rep = Ether(echo_reply(bytes(req), my_mac=B_MAC, my_address="10.0.0.2"))
    assert rep.src == B_MAC and rep[IP].src == "10.0.0.2"


def test_echo_rejections_are_named():
    reply = bytes(Ether(src=A_MAC, dst=B_MAC) / IP(src="10.0.0.1", dst="10.0.0.2") / ICMP(type=0))
    with pytest.raises(IcmpRejected) as e:
        echo_reply(reply)
    assert e.value.reason == "not_echo_request"
    bad = bytearray(bytes(IP(src="10.0.0.1", dst="10.0.0.2") / ICMP(type=8) / b"abcd"))
    bad[-1] ^= 1
    with pytest.raises(IcmpRejected) as e:
        echo_reply_packet(bytes(bad))
    assert e.value.reason == "bad_checksum"
    with pytest.raises(IcmpRejected) as e:
        echo_reply(b"\x00" * 5)
    assert e.value.reason == "malformed"
    with pytest.raises(IcmpRejected):
        echo_reply_packet(b"")


def test_port_unreachable_v4_quotes_header_and_data_within_576():
    offending = bytes(IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1234, dport=53) / (b"d" * 1000))
    err = IP(dest_unreachable(offending, 3, src="10.0.0.2"))
    assert (err.src, err.dst) == ("10.0.0.2", "10.0.0.1")
    assert (err[ICMP].type, err[ICMP].code) == (3, 3)
    assert len(bytes(err)) == 576
    assert err[IPerror].src == "10.0.0.1" and err[UDPerror].dport == 53
    assert err[ICMP].chksum == rechecked(err, ICMP)


def test_short_packet_is_quoted_whole():
    offending = bytes(IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2) / b"hi")
    err = dest_unreachable(offending, 3, src="10.0.0.2")
    assert err[28:] == offending


def test_frag_needed_carries_next_hop_mtu():
    offending = bytes(IP(src="10.0.0.1", dst="10.0.0.2", flags="DF") / TCP() / (b"d" * 100))
    err = IP(dest_unreachable(offending, 4, src="10.0.0.2", mtu=1400))
    assert err[ICMP].nexthopmtu == 1400


def test_v6_unreachable_fits_in_1280():
    offending = bytes(IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=5, dport=6) / (b"x" * 1400))
    out = dest_unreachable(offending, 4, src="2001:db8::2")
    assert len(out) == 1280
    err = IPv6(out)
    assert (err[ICMPv6DestUnreach].type, err[ICMPv6DestUnreach].code) == (1, 4)
    assert err[ICMPv6DestUnreach].cksum == rechecked(err, ICMPv6DestUnreach, "cksum")


@pytest.mark.parametrize("pkt,reason", [
    (IP(src="10.0.0.1", dst="10.0.0.2") / ICMP(type=3) / IP() / UDP(), "about_icmp_error"),
    (IP(src="10.0.0.1", dst="255.255.255.255") / UDP(), "to_broadcast"),
    (IP(src="10.0.0.1", dst="224.0.0.1") / UDP(), "to_broadcast"),
    (IP(src="0.0.0.0", dst="10.0.0.2") / UDP(), "bad_source"),
    (IP(src="10.0.0.1", dst="10.0.0.2", frag=10) / (b"x" * 8), "non_first_fragment"),
    (IPv6(src="2001:db8::1", dst="ff02::1") / UDP(), "to_multicast"),
    (IPv6(src="::", dst="2001:db8::2") / UDP(), "bad_source"),
    (IPv6(src="2001:db8::1", dst="2001:db8::2") / ICMPv6DestUnreach() / IPv6(), "about_icmp_error"),
])
def test_errors_are_never_sent_about(pkt, reason):
    assert error_suppressed(bytes(pkt)) == reason
    with pytest.raises(IcmpRejected) as e:
        dest_unreachable(bytes(pkt), 3, src="10.0.0.2" if pkt.version == 4 else "2001:db8::2")
    assert e.value.reason == reason


def test_echo_request_may_get_an_error_and_link_broadcast_may_not():
    echo = bytes(IP(src="10.0.0.1", dst="10.0.0.2") / ICMP(type=8))
    assert error_suppressed(echo) is None
    assert error_suppressed(echo, link_broadcast=True) == "to_broadcast"
    assert error_suppressed(b"\x45") == "truncated"


def test_packet_too_big_allowed_for_multicast():
    pkt = bytes(IPv6(src="2001:db8::1", dst="ff0e::1") / UDP() / (b"x" * 1400))
    err = IPv6(packet_too_big(pkt, 1280, src="2001:db8::2"))
    assert err[ICMPv6PacketTooBig].mtu == 1280


def test_time_exceeded_reassembly_code():
    pkt = bytes(IP(src="10.0.0.1", dst="10.0.0.2", flags="MF") / UDP() / (b"x" * 8))
    err = IP(time_exceeded(pkt, 1, src="10.0.0.2"))
    assert (err[ICMP].type, err[ICMP].code) == (11, 1)


def test_parse_icmp_error_v4_gives_quoted_five_tuple():
    ours = bytes(IP(src="10.0.0.2", dst="10.0.0.1") / UDP(sport=4000, dport=53) / b"q")
    message = bytes(ICMP(type=3, code=3) / ours)
    e = parse_icmp_error(message)
    assert (e.version, e.type, e.code) == (4, 3, 3)
    assert (e.src, e.dst, e.proto, e.sport, e.dport) == (
        bytes([10, 0, 0, 2]), bytes([10, 0, 0, 1]), 17, 4000, 53)


def test_parse_icmp_error_v6_walks_extension_headers():
    ours = bytes(IPv6(src="2001:db8::2", dst="2001:db8::1") / IPv6ExtHdrHopByHop() /
                 TCP(sport=80, dport=5555))
    msg = bytes(ICMPv6PacketTooBig(mtu=1300) / ours)
    e = parse_icmp_error(msg)
    assert (e.version, e.type, e.info, e.proto, e.sport, e.dport) == (6, 2, 1300, 6, 80, 5555)


def test_parse_icmp_error_our_own_output_round_trips():
    offending = bytes(IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=7, dport=8))
    err = dest_unreachable(offending, 4, src="2001:db8::2")
    e = parse_icmp_error(err[40:])
    assert (e.type, e.code, e.sport, e.dport) == (1, 4, 7, 8)


def test_parse_icmp_error_non_first_fragment_has_no_ports():
    ours = bytes(IPv6(src="2001:db8::2", dst="2001:db8::1") / IPv6ExtHdrFragment(offset=10, nh=17) /
                 (b"\x00" * 16))
    e = parse_icmp_error(bytes(ICMPv6DestUnreach() / ours))
    assert (e.proto, e.sport, e.dport) == (17, 0, 0)


def test_parse_icmp_error_rejects_queries_and_short_quotes():
    with pytest.raises(IcmpRejected) as e:
        parse_icmp_error(bytes(ICMP(type=8) / (b"\x45" + bytes(19))))
    assert e.value.reason == "not_an_error"
    with pytest.raises(IcmpRejected) as e:
        parse_icmp_error(bytes(ICMP(type=3) / b"\x45\x00"))
    assert e.value.reason == "truncated"
    with pytest.raises(IcmpRejected) as e:
        parse_icmp_error(bytes(ICMP(type=3)) + b"\x47" + bytes(19))
    assert e.value.reason == "bad_quote"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=120))
def test_garbage_never_crashes(data):
    for f in (parse_icmp_error, echo_reply_packet, error_suppressed):
        try:
            f(data)
        except IcmpRejected:
            pass
    try:
        dest_unreachable(data, 3, src="10.0.0.2" if data[:1] < b"\x60" else "2001:db8::2")
    except (IcmpRejected, ValueError):
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_allows_burst_then_rate():
    clock = Clock()
    b = TokenBucket(10.0, 3, clock)
    assert [b.allow() for _ in range(4)] == [True, True, True, False]
    clock.now += 0.1
    assert b.allow() and not b.allow()
    clock.now += 100
    assert b.tokens() == 3
    assert b.stats() == {"allowed": 4, "denied": 2}


def test_token_bucket_ignores_clock_stepping_back():
    clock = Clock()
    b = TokenBucket(1.0, 1, clock)
    assert b.allow()
    clock.now -= 50
    assert not b.allow()
    clock.now += 51
    assert b.allow()


def test_token_bucket_rejects_bad_parameters():
    with pytest.raises(ValueError):
        TokenBucket(-1, 1)
    with pytest.raises(ValueError):
        TokenBucket(1, 0)
