"""TCP wire format: builder and parser checked against scapy."""
from __future__ import annotations

import struct

import pytest
from hypothesis import assume, given, settings, strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6

from fastproto.wire.tcp import (
    ACK, FIN, PSH, REJECT_REASONS, RST, SYN, TcpRejected, build_tcp, parse_tcp, parse_tcp_checked,
    pseudo_sum, tcp_options, timestamps_option,
)

V4 = ("192.0.2.1", "198.51.100.7")
V6 = ("2001:db8::1", "2001:db8::2")


def _scapy_tcp(raw: bytes, v6: bool, src: str, dst: str):
    pkt = (IPv6(src=src, dst=dst, nh=6) if v6 else IP(src=src, dst=dst, proto=6)) / raw
    return (IPv6 if v6 else IP)(bytes(pkt))[TCP]


@pytest.mark.parametrize("v6", [False, True])
def test_build_checksum_matches_scapy(v6):
    src, dst = V6 if v6 else V4
    raw = bytes(build_tcp(src, dst, 40000, 80, 123456789, 987654321, ACK | PSH, 5000,
                          timestamps_option(1, 2), b"hello world!"))
    tcp = _scapy_tcp(raw, v6, src, dst)
    sent = tcp.chksum
    del tcp.chksum
    pkt = (IPv6(src=src, dst=dst) if v6 else IP(src=src, dst=dst)) / tcp
    rebuilt = (IPv6 if v6 else IP)(bytes(pkt))[TCP]
    assert rebuilt.chksum == sent
    assert bytes(tcp.payload) == b"hello world!"
    assert tcp.seq == 123456789 and tcp.ack == 987654321 and tcp.window == 5000


@pytest.mark.parametrize("v6", [False, True])
def test_cached_pseudo_sum_gives_the_same_segment(v6):
    src, dst = V6 if v6 else V4
    a = build_tcp(src, dst, 1, 2, 3, 4, ACK, 100, b"", b"x" * 1001)
    b = build_tcp(src, dst, 1, 2, 3, 4, ACK, 100, b"", b"x" * 1001, pseudo=pseudo_sum(src, dst))
    assert a == b
    parse_tcp_checked(a, src, dst)


def test_checked_parse_rejects_a_flipped_bit():
    raw = bytearray(build_tcp(*V4, 1000, 2000, 1, 2, ACK, 10, b"", b"data"))
    raw[-1] ^= 0x01
    with pytest.raises(TcpRejected) as e:
        parse_tcp_checked(raw, *V4)
    assert e.value.reason == "bad_checksum"


def test_parse_scapy_syn_options():
    raw = bytes(TCP(sport=1234, dport=80, seq=7, flags="S", window=29200,
                    options=[("MSS", 1460), ("SAckOK", b""), ("Timestamp", (111, 0)),
                             ("NOP", None), ("WScale", 7)]))
    seg = parse_tcp(raw)
    assert (seg.sport, seg.dport, seg.seq, seg.flags, seg.window) == (1234, 80, 7, SYN, 29200)
    assert seg.mss == 1460 and seg.sack_permitted and seg.wscale == 7
    assert (seg.ts_val, seg.ts_ecr) == (111, 0)
    assert seg.sack_blocks is None and len(seg.payload) == 0


def test_parse_sack_blocks_and_payload_view_without_copy():
    raw = bytearray(bytes(TCP(sport=1, dport=2, flags="A",
                              options=[("NOP", None), ("NOP", None),
                                       ("SAck", (100, 200, 300, 400))]) / b"abc"))
    seg = parse_tcp(raw)
    assert seg.sack_blocks == ((100, 200), (300, 400))
    assert isinstance(seg.payload, memoryview) and bytes(seg.payload) == b"abc"
    raw[-1] = ord("z")
    assert bytes(seg.payload) == b"abz"


def test_wscale_above_14_is_clamped():
    raw = bytes(TCP(sport=1, dport=2, flags="S", options=[("WScale", 20)]))
    assert parse_tcp(raw).wscale == 14


@pytest.mark.parametrize("raw, reason", [
    (b"\x00" * 19, "truncated"),
    (struct.pack("!HHIIBBHHH", 1, 2, 0, 0, 4 << 4, 0, 0, 0, 0), "bad_data_offset"),
    (struct.pack("!HHIIBBHHH", 1, 2, 0, 0, 6 << 4, 0, 0, 0, 0), "bad_data_offset"),
    (struct.pack("!HHIIBBHHH", 0, 2, 0, 0, 5 << 4, 0, 0, 0, 0), "bad_port"),
    (struct.pack("!HHIIBBHHH", 1, 2, 0, 0, 5 << 4, SYN | FIN, 0, 0, 0), "syn_fin"),
    (struct.pack("!HHIIBBHHH", 1, 2, 0, 0, 6 << 4, 0, 0, 0, 0) + b"\x01\x01\x01\x02", "option_truncated"),
    (struct.pack("!HHIIBBHHH", 1, 2, 0, 0, 6 << 4, 0, 0, 0, 0) + b"\x02\x01\x00\x00", "bad_option_length"),
    (struct.pack("!HHIIBBHHH", 1, 2, 0, 0, 6 << 4, 0, 0, 0, 0) + b"\x02\x03\x05\x00", "bad_option_length"),
    (struct.pack("!HHIIBBHHH", 1, 2, 0, 0, 6 << 4, 0, 0, 0, 0) + b"\x03\x04\x05\x00", "bad_wscale"),
    (struct.pack("!HHIIBBHHH", 1, 2, 0, 0, 6 << 4, 0, 0, 0, 0) + b"\x05\x04\x00\x00", "bad_sack_block"),
    (struct.pack("!HHIIBBHHH", 1, 2, 0, 0, 6 << 4, 0, 0, 0, 0) + b"\x02\x08\x00\x00", "option_truncated"),
])
def test_rejection_reasons(raw, reason):
    assert reason in REJECT_REASONS
    with pytest.raises(TcpRejected) as e:
        parse_tcp(raw)
    assert e.value.reason == reason


def test_unknown_option_is_skipped_by_length():
    raw = struct.pack("!HHIIBBHHH", 1, 2, 0, 0, 7 << 4, ACK, 0, 0, 0) + b"\x1e\x04\xaa\xbb\x02\x04\x05\xb4"
    seg = parse_tcp(raw)
    assert seg.mss == 1460


@given(st.binary(max_size=80))
@settings(max_examples=200, deadline=None)
def test_random_bytes_parse_or_reject_with_a_reason(data):
    try:
        seg = parse_tcp(data)
    except TcpRejected as e:
        assert e.reason in REJECT_REASONS
    else:
        assert len(seg.payload) <= len(data) - 20


@given(seq=st.integers(0, 2**32 - 1), ack=st.integers(0, 2**32 - 1),
       flags=st.sampled_from([ACK, ACK | PSH, SYN, SYN | ACK, FIN | ACK, RST, RST | ACK]),
       window=st.integers(0, 65535), mss=st.none() | st.integers(0, 65535),
       wscale=st.none() | st.integers(0, 14), sack_ok=st.booleans(),
       ts=st.none() | st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
       blocks=st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)), max_size=2),
       payload=st.binary(max_size=300), v6=st.booleans())
@settings(max_examples=60, deadline=None)
def test_build_parse_round_trip_against_scapy(seq, ack, flags, window, mss, wscale, sack_ok, ts,
                                              blocks, payload, v6):
    src, dst = V6 if v6 else V4
    opts = tcp_options(mss=mss, wscale=wscale, sack_permitted=sack_ok, ts=ts, sack_blocks=blocks)
    assume(len(opts) <= 40)
    raw = bytes(build_tcp(src, dst, 5555, 443, seq, ack, flags, window, opts, payload))
    seg = parse_tcp_checked(raw, src, dst)
    assert (seg.seq, seg.ack, seg.flags, seg.window) == (seq, ack, flags, window)
    assert (seg.mss, seg.wscale, seg.sack_permitted) == (mss, wscale, sack_ok)
    assert (None if seg.ts_val is None else (seg.ts_val, seg.ts_ecr)) == ts
    assert (seg.sack_blocks or ()) == tuple(blocks)
    assert bytes(seg.payload) == payload
    # scapy, independently: fields, options and a checksum it agrees with.
    tcp = _scapy_tcp(raw, v6, src, dst)
    assert (tcp.seq, tcp.ack, int(tcp.flags), tcp.window) == (seq, ack, flags, window)
    sopts = dict((k, v) for k, v in tcp.options if k != "NOP")
    if mss is not None:
        assert sopts["MSS"] == mss
    if ts is not None:
        assert tuple(sopts["Timestamp"]) == ts
    if blocks:
        assert tuple(sopts["SAck"]) == tuple(x for b in blocks for x in b)
    sent = tcp.chksum
    del tcp.chksum
    again = (IPv6 if v6 else IP)(bytes((IPv6(src=src, dst=dst) if v6 else IP(src=src, dst=dst)) / tcp))
    assert again[TCP].chksum == sent


def test_options_are_padded_and_limited():
    assert len(tcp_options(mss=1460, wscale=7)) % 4 == 0
    with pytest.raises(ValueError):
        build_tcp(*V4, 1, 2, 0, 0, ACK, 0, b"\x01\x01\x01")


def test_descriptor_builds_the_same_segment_as_its_fields():
    from fastproto.wire.tcp import build_from_descriptor

    desc = (7, 9, ACK | PSH, 300, timestamps_option(5, 6), memoryview(b"payload"))
    assert build_from_descriptor(*V4, 1, 2, desc) == build_tcp(*V4, 1, 2, 7, 9, ACK | PSH, 300,
                                                               timestamps_option(5, 6), b"payload")
