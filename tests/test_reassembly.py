"""Fragment reassembly (RFC 791, RFC 8200 4.5, RFC 5722) and fragmentation."""
import random

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP, defragment, fragment
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, defragment6, fragment6

from fastproto.proto.reassembly import (
    Reassembler,
    fragment_ipv4,
    fragment_ipv6,
    ipv4_fragment,
    ipv6_fragment,
)

SRC, DST = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
SRC6, DST6 = bytes.fromhex("20010db8" + "00" * 11 + "01"), bytes.fromhex("20010db8" + "00" * 11 + "02")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def feed(r, packets, v6=False):
    out = None
    for p in packets:
        f = ipv6_fragment(p) if v6 else ipv4_fragment(p)
        res = r.input(*f)
        if res is not None:
            assert out is None
            out = res
    return out


def test_in_order_fragments_reassemble():
    data = bytes(range(256)) * 20
    r = Reassembler(Clock())
    assert feed(r, fragment_ipv4(SRC, DST, 17, data, 576, 7)) == data
    assert len(r) == 0 and r.bytes_held == 0 and r.stats()["reasm_ok"] == 1


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=1, max_size=4000), st.integers(28, 1500), st.randoms(use_true_random=False),
       st.integers(0, 3))
def test_any_order_with_duplicates_reassembles_byte_exact(data, mtu, rnd, dups):
    frags = fragment_ipv4(SRC, DST, 6, data, mtu, 99)
    rnd.shuffle(frags)
    # Duplicates of all but the last-arriving fragment, anywhere before it: the datagram
    # completes exactly at the last one.
    body = frags[:-1] + [rnd.choice(frags[:-1]) for _ in range(dups if len(frags) > 1 else 0)]
    rnd.shuffle(body)
    r = Reassembler(Clock())
    results = [r.input(*ipv4_fragment(p)) for p in body + frags[-1:]]
    assert results[-1] == data
    assert results[:-1] == [None] * len(body)
    assert r.stats()["reasm_duplicate"] == len(body) - (len(frags) - 1)


@settings(max_examples=30, deadline=None)
@given(st.binary(min_size=1, max_size=6000), st.randoms(use_true_random=False))
def test_ipv6_any_order_reassembles(data, rnd):
    frags = fragment_ipv6(SRC6, DST6, 17, data, 1280, 0xDEADBEEF)
    rnd.shuffle(frags)
    r = Reassembler(Clock())
    assert feed(r, frags, v6=True) == data


def test_scapy_fragments_reassemble():
    pkt = IP(src="10.0.0.1", dst="10.0.0.2", id=5) / UDP(sport=1, dport=2) / (b"z" * 3000)
    frags = [bytes(f) for f in fragment(pkt, fragsize=600)]
    r = Reassembler(Clock())
    assert feed(r, reversed(frags)) == bytes(pkt[UDP])


def test_our_ipv4_fragments_defragment_in_scapy():
    data = bytes(UDP(sport=1, dport=2) / (b"q" * 2500))
    frags = fragment_ipv4("10.0.0.1", "10.0.0.2", 17, data, 1000, 321)
    assert all(len(f) <= 1000 for f in frags)
    parsed = [IP(f) for f in frags]
    assert all(p.frag * 8 % 8 == 0 for p in parsed)
    assert [p.flags.MF for p in parsed] == [1] * (len(frags) - 1) + [0]
    whole = defragment(parsed)
    assert len(whole) == 1 and bytes(whole[0][IP].payload) == data
    for f in frags:   # header checksums verify
        p = IP(f)
        c = p.chksum
        del p.chksum
        assert IP(bytes(p)).chksum == c


def test_our_ipv6_fragments_defragment_in_scapy():
    data = bytes(UDP(sport=1, dport=2) / (b"q" * 3000))
    frags = fragment_ipv6(SRC6, DST6, 17, data, 1280, 77)
    assert all(len(f) <= 1280 for f in frags)
    parsed = [IPv6(f) for f in frags]
    assert all(p[IPv6ExtHdrFragment].id == 77 for p in parsed)
    whole = defragment6(parsed)
    assert bytes(whole[IPv6].payload) == data


def test_scapy_ipv6_fragments_reassemble():
    pkt = IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrFragment(id=9) / UDP() / (b"k" * 3000)
    frags = [bytes(f) for f in fragment6(pkt, 1280)]
    r = Reassembler(Clock())
    assert feed(r, frags[::-1], v6=True) == bytes(pkt[UDP])


def test_small_payload_is_one_unfragmented_packet():
    (p,) = fragment_ipv4(SRC, DST, 17, b"abc", 1500, 1)
    assert IP(p).flags == 0 and IP(p).frag == 0 and bytes(IP(p).payload) == b"abc"


def test_overlapping_fragment_discards_datagram_and_later_fragments():
    r = Reassembler(Clock())
    assert r.input(SRC, DST, 17, 1, 0, True, b"a" * 16) is None
    assert r.input(SRC, DST, 17, 1, 8, True, b"b" * 16) is None
    assert len(r) == 0 and r.stats()["reasm_overlap"] == 1
    assert r.input(SRC, DST, 17, 1, 16, False, b"c" * 8) is None
    assert r.stats()["reasm_discarded_late"] == 1


def test_same_offset_different_data_is_an_overlap():
    r = Reassembler(Clock())
    r.input(SRC, DST, 17, 1, 0, True, b"a" * 8)
    r.input(SRC, DST, 17, 1, 0, True, b"b" * 8)
    assert r.stats()["reasm_overlap"] == 1 and r.stats()["reasm_duplicate"] == 0


def test_total_over_65535_is_rejected():
    r = Reassembler(Clock())
    assert r.input(SRC, DST, 17, 1, 65512, False, b"x" * 8) is None
    assert r.stats()["reasm_too_long"] == 1
    assert r.input(SRC6, DST6, 17, 1, 65528, False, b"x" * 8) is None
    assert r.stats()["reasm_too_long"] == 2


def test_non_final_fragment_must_be_multiple_of_8():
    r = Reassembler(Clock())
    assert r.input(SRC, DST, 17, 1, 0, True, b"x" * 7) is None
    assert r.input(SRC, DST, 17, 1, 4, True, b"x" * 8) is None
    s = r.stats()
    assert (s["reasm_bad_length"], s["reasm_bad_offset"]) == (1, 1) and len(r) == 0


def test_conflicting_last_fragments_discard():
    r = Reassembler(Clock())
    r.input(SRC, DST, 17, 1, 16, False, b"x" * 8)
    r.input(SRC, DST, 17, 1, 32, False, b"x" * 8)
    assert r.stats()["reasm_inconsistent_end"] == 1 and len(r) == 0


def test_fragment_past_known_end_discards():
    r = Reassembler(Clock())
    r.input(SRC, DST, 17, 1, 8, False, b"x" * 8)
    r.input(SRC, DST, 17, 1, 16, True, b"x" * 8)
    assert r.stats()["reasm_inconsistent_end"] == 1 and len(r) == 0


def test_timeout_expires_with_first_fragment_quote():
    clock = Clock()
    r = Reassembler(clock, timeout=30.0)
    frags = fragment_ipv4(SRC, DST, 17, b"u" * 100, 68, 4)
    first = ipv4_fragment(frags[0])
    r.input(*first)
    r.input(*ipv4_fragment(frags[2]))
    r.input(SRC, DST, 17, 5, 8, True, b"v" * 8)   # a datagram without its first fragment
    clock.now = 29.9
    assert r.expire() == []
    clock.now = 30.0
    expired = r.expire()
    assert [e.key for e in expired] == [(SRC, DST, 17, 4), (SRC, DST, 17, 5)]
    assert expired[0].quote == first.header + first.payload[:8]
    assert expired[1].quote is None
    assert r.stats()["reasm_timeout"] == 2 and len(r) == 0 and r.bytes_held == 0


def test_memory_budget_drops_oldest_datagram():
    r = Reassembler(Clock(), max_bytes=100)
    r.input(SRC, DST, 17, 1, 0, True, b"a" * 64)
    r.input(SRC, DST, 17, 2, 0, True, b"b" * 64)
    assert len(r) == 1 and r.bytes_held == 64
    assert r.stats()["reasm_evicted_memory"] == 1
    assert r.input(SRC, DST, 17, 2, 64, False, b"c") == b"b" * 64 + b"c"


def test_datagram_count_is_bounded():
    r = Reassembler(Clock(), max_datagrams=2)
    for ident in range(3):
        r.input(SRC, DST, 17, ident, 0, True, b"a" * 8)
    assert len(r) == 2 and r.stats()["reasm_evicted_count"] == 1


def test_keys_separate_protocols_for_ipv4_but_not_ipv6():
    r = Reassembler(Clock())
    r.input(SRC, DST, 17, 1, 0, True, b"a" * 8)
    assert r.input(SRC, DST, 6, 1, 8, False, b"b") is None
    r.input(SRC6, DST6, 17, 1, 0, True, b"a" * 8)
    assert r.input(SRC6, DST6, 0, 1, 8, False, b"b") == b"a" * 8 + b"b"
    assert r.last_proto == 17   # the first fragment's Next Header (RFC 8200 4.5)


def test_fragment_mtu_limits():
    import pytest
    with pytest.raises(ValueError):
        fragment_ipv4(SRC, DST, 17, b"x" * 100, 27, 1)
    with pytest.raises(ValueError):
        fragment_ipv6(SRC6, DST6, 17, b"x" * 100, 1279, 1)
    with pytest.raises(ValueError):
        ipv4_fragment(b"\x45" + bytes(10))


def test_random_interleaving_of_two_datagrams():
    rnd = random.Random(1)
    a, b = bytes(range(200)) * 10, bytes(reversed(range(200))) * 9
    frags = [(x, 1) for x in fragment_ipv4(SRC, DST, 17, a, 300, 1)] + \
            [(x, 2) for x in fragment_ipv4(SRC, DST, 17, b, 400, 2)]
    rnd.shuffle(frags)
    r = Reassembler(Clock())
    done = {ident: out for p, ident in frags if (out := r.input(*ipv4_fragment(p))) is not None}
    assert done == {1: a, 2: b}
