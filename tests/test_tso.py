"""TCP segmentation offload: the core's cutting of one large send into frames
(fastproto._core.tso), checked against scapy, and the connection's large sends."""
import os

import pytest
from hypothesis import given, settings, strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from fastproto._core.tso import tcp_frames
from fastproto.proto.tcp_timers import TcpConfig
from fastproto.wire.tcp import ACK, FIN, PSH, timestamps_option

from tcp_harness import Wire, transfer

SRC4, DST4 = bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2])
SRC6 = bytes.fromhex("20010002000000000000000000000001")
DST6 = bytes.fromhex("20010002000000000000000000000002")
MAC_A, MAC_B = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
L2 = MAC_B + MAC_A + b"\x08\x00"
L2_6 = MAC_B + MAC_A + b"\x86\xdd"


def _checksums_ok(pkt) -> bool:
    """scapy recomputes the checksums of a copy with them cleared: equal means valid."""
    ip = pkt[IP] if IP in pkt else pkt[IPv6]
    tcp = pkt[TCP]
    again = ip.copy()
    if IP in pkt:
        del again[IP].chksum
    del again[TCP].chksum
    again = again.__class__(bytes(again))
    ok = again[TCP].chksum == tcp.chksum
    if IP in pkt:
        ok = ok and again[IP].chksum == ip.chksum
    return ok


@settings(max_examples=60, deadline=None)
@given(plen=st.integers(0, 20_000), mss=st.integers(1, 1460), v6=st.booleans(),
       seq=st.integers(0, 2**32 - 1), ack=st.integers(0, 2**32 - 1),
       push=st.booleans(), fin=st.booleans(), nopts=st.integers(0, 10),
       window=st.integers(0, 0xFFFF), seed=st.integers(0, 2**16))
def test_frames_match_scapy(plen, mss, v6, seq, ack, push, fin, nopts, window, seed):
    payload = bytes((seed + i * 7) & 0xFF for i in range(plen))
    opts = bytes([1]) * (4 * nopts)   # NOPs: any 4-byte multiple up to 40
    flags = ACK | (PSH if push else 0) | (FIN if fin else 0)
    src, dst, l2 = (SRC6, DST6, L2_6) if v6 else (SRC4, DST4, L2)
    if plen > 2000:
        mss = max(mss, plen // 64)    # keeps the example small
    out: list = []
    n = tcp_frames(l2, src, dst, 40000, 80, seq, ack, flags, window, opts, payload, mss, out)
    assert n == len(out) == (max(1, -(-plen // mss)))
    got = b""
    for i, frame in enumerate(out):
        pkt = Ether(frame)
        tcp = pkt[TCP]
        piece = bytes(tcp.payload)
        if not v6 and len(frame) == 60:
            piece = piece[:pkt[IP].len - 40 - len(opts)]   # Ethernet padding
        assert len(frame) >= 60
        assert _checksums_ok(pkt)
        if v6:
            assert pkt[IPv6].hlim == 64 and pkt[IPv6].plen == 20 + len(opts) + len(piece)
        else:
            ip = pkt[IP]
            assert ip.flags == "DF" and ip.id == 0 and ip.ttl == 64 and ip.frag == 0
            assert ip.len == 20 + 20 + len(opts) + len(piece)
        assert tcp.seq == (seq + len(got)) & 0xFFFFFFFF and tcp.ack == ack
        assert tcp.window == window and tcp.dataofs == 5 + nopts
        last = i == n - 1
        assert bool(tcp.flags & PSH) == (push and last)
        assert bool(tcp.flags & FIN) == (fin and last)
        assert tcp.flags & ACK
        assert len(piece) == (mss if not last else plen - len(got)) or plen == 0
        got += piece
    assert got == payload


def test_bare_ip_packets_without_a_link_header():
    out: list = []
    payload = os.urandom(3000)
    tcp_frames(b"", SRC4, DST4, 1, 2, 100, 7, ACK | PSH, 9, timestamps_option(5, 6), payload,
               1448, out)
    assert [len(p) for p in out] == [20 + 32 + 1448, 20 + 32 + 1448, 20 + 32 + 104]
    assert b"".join(bytes(IP(p)[TCP].payload) for p in out) == payload
    assert all(_checksums_ok(IP(p)) for p in out)


def test_a_pure_ack_is_one_padded_frame():
    out: list = []
    assert tcp_frames(L2, SRC4, DST4, 1, 2, 5, 6, ACK, 100, b"", b"", 1460, out) == 1
    assert len(out[0]) == 60 and out[0][54:] == bytes(6)
    assert _checksums_ok(Ether(out[0]))


def test_sequence_numbers_wrap():
    out: list = []
    tcp_frames(L2, SRC4, DST4, 1, 2, 2**32 - 1000, 0, ACK, 0, b"", bytes(3000), 1000, out)
    assert [Ether(f)[TCP].seq for f in out] == [2**32 - 1000, 0, 1000]


@pytest.mark.parametrize("kwargs, message", [
    (dict(mss=0), "mss"),
    (dict(options=b"\x01\x01\x01"), "multiple of 4"),
    (dict(options=bytes(44)), "multiple of 4"),
    (dict(l2=b"\x00" * 5), "l2"),
    (dict(dst=DST6), "both"),
    (dict(src=b"\x01\x02", dst=b"\x01\x02"), "addresses"),
    (dict(window=0x10000), "range"),
    (dict(sport=-1), "range"),
    (dict(flags=0x1000), "range"),
    (dict(payload=bytes(70_000), mss=66_000), "fit an IP packet"),
])
def test_bad_arguments_are_refused(kwargs, message):
    args = dict(l2=L2, src=SRC4, dst=DST4, sport=1, dport=2, seq=0, ack=0, flags=ACK, window=0,
                options=b"", payload=b"abc", mss=1460)
    args.update(kwargs)
    out: list = []
    with pytest.raises(ValueError, match=message):
        tcp_frames(args["l2"], args["src"], args["dst"], args["sport"], args["dport"],
                   args["seq"], args["ack"], args["flags"], args["window"], args["options"],
                   args["payload"], args["mss"], out)
    assert out == []


def test_tso_setting_is_checked():
    with pytest.raises(ValueError, match="tso"):
        TcpConfig(tso=65537)
    with pytest.raises(ValueError, match="tso"):
        TcpConfig(tso=-1)


def _sizes_sent(tso: int) -> list:
    wire = Wire(seed=3, config_a=TcpConfig(tso=tso), config_b=TcpConfig())
    sizes = []
    out = wire.a.output

    def record(desc):
        sizes.append(len(desc[5]))
        out(desc)
    wire.a.output = record
    data = os.urandom(400_000)
    _, got_b = transfer(wire, data, b"")
    assert got_b == data
    return [s for s in sizes if s], wire.a.snd_mss


def test_large_sends_are_whole_segments_up_to_the_offload_size():
    sizes, mss = _sizes_sent(65536)
    assert max(sizes) > mss
    assert all(s <= 65536 for s in sizes)
    # Only the last bytes of the stream may make a short send.
    assert all(s % mss == 0 for s in sizes if s > mss)


def test_without_offload_every_send_is_one_segment():
    sizes, mss = _sizes_sent(0)
    assert max(sizes) == mss


def test_large_sends_survive_a_lossy_wire():
    wire = Wire(seed=9, loss=0.05, dup=0.05, reorder=0.2, config_a=TcpConfig(tso=65536),
                config_b=TcpConfig(tso=65536))
    ab, ba = os.urandom(1 << 20), os.urandom(300_000)
    got_a, got_b = transfer(wire, ab, ba)
    assert got_b == ab and got_a == ba
