"""TAP offloads: the receive path that cuts GSO super-frames into segments and
completes partial checksums (fed from memory through VnetReceiver, the same C
code TapPort.rx_batch runs), checked against scapy; every malformed
virtio_net_hdr dropped under its reason; and super-frames sent with tx_gso
reaching a Linux socket byte-exact."""
import struct

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1Q, Ether

from fastproto._core.buffers import BufferPool
from fastproto._core.tap import STAT_NAMES, VNET_HDR_LEN, VnetReceiver, tx_runs

from netns import run_json

MAC_K, MAC_S = "02:00:00:00:00:01", "02:00:00:00:00:02"
SRC4, DST4 = "198.18.0.1", "198.18.0.2"
SRC6, DST6 = "2001:2::1", "2001:2::2"
NEEDS_CSUM, DATA_VALID = 1, 2
GSO_NONE, GSO_TCPV4, GSO_UDP, GSO_TCPV6, GSO_ECN = 0, 1, 3, 4, 0x80
FIN, PSH, ACK, CWR, ECE = 0x01, 0x08, 0x10, 0x80, 0x40
DROP_REASONS = ("rx_no_buffer", "rx_oversize", "rx_vnet_truncated", "rx_gso_bad_type",
                "rx_gso_zero_size", "rx_gso_bad_hdr_len", "rx_csum_bad_offset",
                "rx_gso_bad_headers", "rx_gso_too_big")
FLAG_BITS = [0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80]


def vnet(flags=0, gso_type=0, hdr_len=0, gso_size=0, csum_start=0, csum_offset=0) -> bytes:
    """struct virtio_net_hdr (virtio 1.x section 5.1.6), little-endian fields."""
    return struct.pack("<BBHHHH", flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)


def ones_sum(data: bytes) -> int:
    """RFC 1071 one's complement sum of 16-bit big-endian words, folded, not complemented."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def pseudo_sum(ip, l4_len: int, proto: int) -> int:
    """The pseudo-header partial sum Linux leaves in the checksum field of a NEEDS_CSUM frame."""
    if IP in ip:
        raw = bytes(ip[IP])
        hdr = raw[12:20] + struct.pack("!BBH", 0, proto, l4_len)
    else:
        raw = bytes(ip[IPv6])
        hdr = raw[8:40] + struct.pack("!IxxxB", l4_len, proto)
    return ones_sum(hdr)


def tcp_options(ts):
    return [("NOP", None), ("NOP", None), ("Timestamp", ts)] if ts is not None else []


def tcp_frame(v6, payload, seq, flags, ip_id=0x1234, ts=None, vlan=None):
    """An Ethernet/IP/TCP frame with correct checksums (scapy)."""
    eth = Ether(src=MAC_K, dst=MAC_S)
    if vlan is not None:
        eth = eth / Dot1Q(vlan=vlan)
    ip = (IPv6(src=SRC6, dst=DST6, tc=0, fl=0x12345, hlim=64) if v6
          else IP(src=SRC4, dst=DST4, id=ip_id, flags="DF", ttl=64, tos=0x02))
    tcp = TCP(sport=40000, dport=5001, seq=seq, ack=0x01020304, flags=flags, window=501,
              options=tcp_options(ts))
    return Ether(bytes(eth / ip / tcp / payload))


def expected_segments(v6, payload, gso_size, seq, flags, ip_id, ts, vlan=None):
    """What a NIC's TSO would put on the wire for the super-frame: scapy-built, checksummed."""
    out = []
    pieces = [payload[i:i + gso_size] for i in range(0, len(payload), gso_size)]
    for i, piece in enumerate(pieces):
        f = flags
        if i != len(pieces) - 1:
            f &= ~(FIN | PSH)
        if i != 0:
            f &= ~CWR
        out.append(bytes(tcp_frame(v6, piece, (seq + i * gso_size) & 0xFFFFFFFF, f,
                                   (ip_id + i) & 0xFFFF, ts, vlan)))
    return out


def super_frame(v6, payload, seq, flags, ip_id=0x1234, ts=None, csum_field=None, vlan=None):
    """(frame bytes, csum_start): a super-frame whose TCP checksum field holds
    ``csum_field`` (default: the pseudo-header sum, as Linux leaves it)."""
    pkt = tcp_frame(v6, payload, seq, flags, ip_id, ts, vlan)
    raw = bytearray(bytes(pkt))
    l4 = len(raw) - len(bytes(pkt[TCP]))
    if csum_field is None:
        csum_field = pseudo_sum(pkt, len(bytes(pkt[TCP])), 6)
    struct.pack_into("!H", raw, l4 + 16, csum_field)
    return bytes(raw), l4


class Rx:
    """A VnetReceiver with a pool and arrays: feed packets, collect frames as bytes."""

    def __init__(self, count=1024, size=2048, slots=1024):
        self.pool = BufferPool(count, size)
        self.vr = VnetReceiver()
        self.h = np.zeros(slots, np.uint64)
        self.l = np.zeros(slots, np.uint32)

    def _take(self, n):
        frames = [bytes(self.pool.data[self.h[i], :self.l[i]]) for i in range(n)]
        self.pool.free_many(self.h[:n])
        return frames

    def feed(self, packet):
        return self._take(self.vr.input(self.pool, packet, self.h, self.l))

    def drain(self):
        return self._take(self.vr.drain(self.pool, self.h, self.l))

    @property
    def stats(self):
        return self.vr.stats()


@settings(max_examples=40, deadline=None)
@given(v6=st.booleans(), plen=st.integers(1, 65000), gso_size=st.integers(1, 1960),
       seq=st.integers(0, 2**32 - 1), ip_id=st.integers(0, 0xFFFF),
       flags=st.sets(st.sampled_from(FLAG_BITS)), ts=st.booleans(),
       csum_field=st.one_of(st.none(), st.integers(0, 0xFFFF)), seed=st.integers(0, 255))
def test_super_frame_segments_match_scapy(v6, plen, gso_size, seq, ip_id, flags, ts, csum_field,
                                          seed):
    gso_size = max(gso_size, plen // 150)         # at most ~150 segments per example
    payload = bytes((seed + i * 13) & 0xFF for i in range(plen))
    fl = sum(flags) | ACK
    tsval = (123456, 654321) if ts else None
    frame, l4 = super_frame(v6, payload, seq, fl, ip_id, tsval, csum_field)
    hlen = len(frame) - plen
    rx = Rx()
    hdr = vnet(NEEDS_CSUM, (GSO_TCPV6 if v6 else GSO_TCPV4) | (GSO_ECN if fl & CWR else 0),
               hlen, gso_size, l4, 16)
    got = rx.feed(hdr + frame)
    want = expected_segments(v6, payload, gso_size, seq, fl, ip_id, tsval)
    assert got == want
    s = rx.stats
    assert s["rx_gso_frames"] == 1
    assert s["rx_gso_segments"] == s["rx_frames"] == len(want)
    assert s["rx_bytes"] == sum(map(len, want))


def test_super_frame_with_a_vlan_tag_is_segmented():
    payload = bytes(range(256)) * 20
    frame, l4 = super_frame(False, payload, 1000, ACK | PSH, vlan=7)
    rx = Rx()
    got = rx.feed(vnet(NEEDS_CSUM, GSO_TCPV4, l4 + 20, 1000, l4, 16) + frame)
    assert got == expected_segments(False, payload, 1000, 1000, ACK | PSH, 0x1234, None, vlan=7)


def test_segments_beyond_the_arrays_stay_pending_until_drained():
    payload = bytes(range(256)) * 40                  # 10240 bytes: 11 segments of 1000
    frame, l4 = super_frame(True, payload, 5, ACK | FIN)
    rx = Rx(slots=4)
    first = rx.feed(vnet(NEEDS_CSUM, GSO_TCPV6, 0, 1000, l4, 16) + frame)
    assert len(first) == 4 and rx.vr.pending == 7
    rest = rx.drain() + rx.drain()
    assert rx.vr.pending == 0 and rx.drain() == []
    assert first + rest == expected_segments(True, payload, 1000, 5, ACK | FIN, 0, None)


def test_exhausted_pool_drops_segments_and_counts_rx_no_buffer():
    payload = bytes(10000)
    frame, l4 = super_frame(False, payload, 0, ACK)
    rx = Rx(count=3)
    got = rx.feed(vnet(NEEDS_CSUM, GSO_TCPV4, 0, 1000, l4, 16) + frame)
    assert len(got) == 3
    assert rx.stats["rx_no_buffer"] == 7 and rx.stats["rx_gso_segments"] == 3
    assert rx.vr.pending == 0


@settings(max_examples=40, deadline=None)
@given(v6=st.booleans(), udp=st.booleans(), plen=st.integers(0, 1400), seed=st.integers(0, 255))
def test_partial_checksum_is_completed_like_scapy(v6, udp, plen, seed):
    payload = bytes((seed * 7 + i) & 0xFF for i in range(plen))
    ip = IPv6(src=SRC6, dst=DST6) if v6 else IP(src=SRC4, dst=DST4, id=9)
    l4 = UDP(sport=4000, dport=5000) if udp else TCP(sport=4000, dport=5000, flags="PA", seq=77)
    want = bytes(Ether(src=MAC_K, dst=MAC_S) / ip / l4 / payload)
    pkt = Ether(want)
    layer = UDP if udp else TCP
    start = len(want) - len(bytes(pkt[layer]))
    offset = 6 if udp else 16
    raw = bytearray(want)
    struct.pack_into("!H", raw, start + offset, pseudo_sum(pkt, len(bytes(pkt[layer])), 17 if udp else 6))
    rx = Rx()
    (got,) = rx.feed(vnet(NEEDS_CSUM, GSO_NONE, 0, 0, start, offset) + bytes(raw))
    mine = struct.unpack_from("!H", got, start + offset)[0]
    theirs = struct.unpack_from("!H", want, start + offset)[0]
    # 0 and 0xffff are the same one's complement value; RFC 768 sends 0 as 0xffff
    assert got[:start + offset] == want[:start + offset]
    assert got[start + offset + 2:] == want[start + offset + 2:]
    assert mine == theirs or {mine, theirs} == {0, 0xFFFF}
    assert rx.stats["rx_csum_completed"] == 1


@pytest.mark.parametrize("flags", [0, DATA_VALID])
def test_frame_without_needs_csum_passes_unchanged(flags):
    frame = bytes(tcp_frame(False, b"hello", 1, ACK | PSH))
    rx = Rx()
    assert rx.feed(vnet(flags) + frame) == [frame]
    assert rx.stats["rx_csum_completed"] == 0 and rx.stats["rx_frames"] == 1


def test_vnet_header_length_is_ten_bytes():
    # struct virtio_net_hdr without num_buffers: mergeable receive buffers
    # are a virtio ring feature a TAP descriptor never uses
    assert VNET_HDR_LEN == 10 == len(vnet())


# -- malformed headers: each dropped and counted under its reason ------------

GOOD, GOOD_L4 = super_frame(False, bytes(5000), 1, ACK)
GOOD6, GOOD6_L4 = super_frame(True, bytes(5000), 1, ACK)


@pytest.mark.parametrize("packet, reason", [
    (b"", "rx_vnet_truncated"),
    (vnet()[:7], "rx_vnet_truncated"),
    (vnet() + bytes(13), "rx_vnet_truncated"),
    (vnet(NEEDS_CSUM, GSO_TCPV4, 0, 0, GOOD_L4, 16) + GOOD, "rx_gso_zero_size"),
    (vnet(NEEDS_CSUM, GSO_TCPV4, len(GOOD) + 1, 1000, GOOD_L4, 16) + GOOD, "rx_gso_bad_hdr_len"),
    (vnet(NEEDS_CSUM, GSO_TCPV4, 0, 1000, GOOD_L4 + 2, 16) + GOOD, "rx_csum_bad_offset"),
    (vnet(NEEDS_CSUM, GSO_TCPV4, 0, 1000, GOOD_L4, 6) + GOOD, "rx_csum_bad_offset"),
    (vnet(NEEDS_CSUM, GSO_NONE, 0, 0, 100, 0) + GOOD[:100], "rx_csum_bad_offset"),
    (vnet(NEEDS_CSUM, GSO_NONE, 0, 0, 90, 9) + GOOD[:100], "rx_csum_bad_offset"),
    (vnet(NEEDS_CSUM, GSO_UDP, 0, 1000, GOOD_L4, 16) + GOOD, "rx_gso_bad_type"),
    (vnet(NEEDS_CSUM, 5, 0, 1000, GOOD_L4, 16) + GOOD, "rx_gso_bad_type"),
    (vnet(NEEDS_CSUM, 2, 0, 1000, GOOD_L4, 16) + GOOD, "rx_gso_bad_type"),
    (vnet(NEEDS_CSUM, GSO_TCPV6, 0, 1000, GOOD_L4, 16) + GOOD, "rx_gso_bad_headers"),
    (vnet(NEEDS_CSUM, GSO_TCPV4, 0, 1000, GOOD6_L4, 16) + GOOD6, "rx_gso_bad_headers"),
    (vnet(NEEDS_CSUM, GSO_TCPV4, 0, 1000, GOOD_L4, 16) + GOOD[:-1], "rx_gso_bad_headers"),
    (vnet(NEEDS_CSUM, GSO_TCPV4, 0, 1000, 34, 16) + GOOD[:GOOD_L4 + 20], "rx_gso_bad_headers"),
    (vnet(0, GSO_TCPV4, 0, 1000) + bytes(GOOD[:12]) + b"\x08\x06" + GOOD[14:],
     "rx_gso_bad_headers"),
    (vnet(NEEDS_CSUM, GSO_TCPV4, 0, 2048 - 54 + 1, GOOD_L4, 16) + GOOD, "rx_gso_too_big"),
    (vnet() + GOOD, "rx_oversize"),
    (vnet(NEEDS_CSUM, GSO_TCPV4, 0, 1000) + bytes(200_000), "rx_oversize"),
])
def test_malformed_frame_is_dropped_and_counted(packet, reason):
    rx = Rx()
    assert rx.feed(packet) == []
    s = rx.stats
    assert s[reason] == 1
    assert sum(s[k] for k in STAT_NAMES) == 1, {k: v for k, v in s.items() if v}
    assert rx.pool.available == rx.pool.count       # no buffer leaked


def test_ip_fragment_is_not_segmented():
    raw = bytearray(GOOD)
    struct.pack_into("!H", raw, 20, 0x2000)           # MF set
    rx = Rx()
    assert rx.feed(vnet(NEEDS_CSUM, GSO_TCPV4, 0, 1000, GOOD_L4, 16) + bytes(raw)) == []
    assert rx.stats["rx_gso_bad_headers"] == 1


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=3000))
def test_random_bytes_never_crash_and_every_drop_has_a_reason(packet):
    rx = Rx()
    got = rx.feed(packet) + rx.drain()
    s = rx.stats
    assert len(got) == s["rx_frames"]
    if not got:
        assert sum(s[k] for k in DROP_REASONS) == 1
    assert rx.pool.available == rx.pool.count


# -- transmit: which frames go out together as one super-frame ---------------

def stream(n, size=1000, v6=False, seq=100, last_flags=ACK | PSH, ts=(1, 2)):
    """n consecutive full-size segments of one connection (scapy), the last with last_flags."""
    return [bytes(tcp_frame(v6, bytes([i]) * size, seq + i * size,
                            last_flags if i == n - 1 else ACK, 0, ts)) for i in range(n)]


@pytest.mark.parametrize("v6", [False, True])
def test_consecutive_segments_of_one_connection_form_one_run(v6):
    assert tx_runs(stream(10, v6=v6)) == [10]


def test_last_segment_may_be_short():
    frames = stream(4)
    frames[-1] = bytes(tcp_frame(False, b"z" * 10, 100 + 3000, ACK | PSH | FIN, 0, (1, 2)))
    assert tx_runs(frames) == [4]


@pytest.mark.parametrize("change, runs", [
    # PSH in the middle ends a run after that segment
    (lambda f: f.__setitem__(3, bytes(tcp_frame(False, bytes([3]) * 1000, 3100, ACK | PSH, 0, (1, 2)))),
     [4, 6]),
    # a short segment in the middle ends a run
    (lambda f: f.__setitem__(3, bytes(tcp_frame(False, b"x" * 500, 3100, ACK, 0, (1, 2)))), [4, 6]),
    # a gap in the sequence numbers (after which the stream goes on elsewhere)
    (lambda f: f.__setitem__(5, bytes(tcp_frame(False, bytes([5]) * 1000, 9999, ACK, 0, (1, 2)))),
     [5, 1, 4]),
    # another timestamp option value
    (lambda f: f.__setitem__(5, bytes(tcp_frame(False, bytes([5]) * 1000, 5100, ACK, 0, (7, 2)))),
     [5, 1, 4]),
    # a pure ACK
    (lambda f: f.insert(5, bytes(tcp_frame(False, b"", 5100, ACK, 0, (1, 2)))), [5, 1, 5]),
    # something not TCP
    (lambda f: f.insert(5, bytes(Ether() / IP(src=SRC4, dst=DST4) / UDP() / (b"u" * 1000))),
     [5, 1, 5]),
])
def test_runs_break_where_the_segments_stop_being_one_stream(change, runs):
    frames = stream(10, last_flags=ACK)
    change(frames)
    assert tx_runs(frames) == runs


def test_syn_and_cwr_segments_go_alone():
    syn = bytes(tcp_frame(False, b"", 99, 0x02, 0, None))
    cwr = [bytes(tcp_frame(False, b"c" * 1000, 100 + i * 1000, ACK | CWR, 0, None)) for i in range(2)]
    assert tx_runs([syn] + cwr) == [1, 1, 1]


def test_a_run_stays_within_one_ip_datagram():
    # 1448-byte payloads: 45 of them make 65160 bytes of payload, 46 too many
    assert tx_runs(stream(50, size=1448)) == [45, 5]


# -- transmit: super-frames to Linux ----------------------------------------

@pytest.fixture(scope="module")
def gso_to_linux():
    """A hand-driven TCP connection to a Linux socket whose data goes as super-frames."""
    return run_json("""
import os, socket, struct, time
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from fastproto.phy.tap import TapInterface

out = {}
with TapInterface("fp0", offload=True, mac="02:00:00:00:00:01") as tap:
    tap.up()
    kernel_side("fp0")
    sh("ip", "neigh", "add", STACK_ADDR, "lladdr", "02:00:00:00:00:02", "dev", "fp0")
    ls = socket.socket()
    ls.bind((KERNEL_ADDR, 7000))
    ls.listen(1)
    eth = Ether(src="02:00:00:00:00:02", dst="02:00:00:00:00:01")
    ip = IP(src=STACK_ADDR, dst=KERNEL_ADDR, flags="DF")

    def seg(seq, ack, flags, payload=b""):
        return bytes(eth / ip / TCP(sport=41000, dport=7000, seq=seq, ack=ack, flags=flags,
                                    window=65535) / payload)

    def wait_for(pred):
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            tap.wait(0.1)
            for f in tap.receive(64):
                p = Ether(f)
                if TCP in p and pred(p[TCP]):
                    return p[TCP]
        return None

    tap.transmit([seg(1000, 0, "S")])
    synack = wait_for(lambda t: t.flags & 0x12 == 0x12)
    ack = synack.seq + 1
    tap.transmit([seg(1001, ack, "A")])
    conn, _ = ls.accept()
    conn.settimeout(TIMEOUT)
    a = os.urandom(40000)
    b = os.urandom(30000)
    out["gso_explicit"] = tap.transmit_gso(bytearray(seg(1001, ack, "PA", a)), 1000)
    out["gso_auto"] = tap.transmit([seg(1001 + len(a), ack, "PA", b)])
    out["not_tcp"] = tap.transmit([bytes(eth / ip / (b"x" * 3000))])
    c = os.urandom(12000)
    base = 1001 + len(a) + len(b)
    batch = [seg(base + i * 1000, ack, "PA" if i in (5, 11) else "A", c[i * 1000:(i + 1) * 1000])
             for i in range(12)]
    out["batch_sent"] = tap.transmit(batch)
    a, b = a, b + c
    got = b""
    while len(got) < len(a) + len(b):
        chunk = conn.recv(1 << 16)
        if not chunk:
            break
        got += chunk
    out["byte_exact"] = got == a + b
    acked = wait_for(lambda t: t.ack == 1001 + len(a) + len(b))
    out["linux_acked_all"] = acked is not None
    out["stats"] = tap.stats()
report(out)
""", timeout=30)


def test_super_frames_sent_with_tx_gso_reach_a_linux_socket_byte_exact(gso_to_linux):
    assert gso_to_linux["gso_explicit"] is True and gso_to_linux["gso_auto"] == 1
    assert gso_to_linux["byte_exact"] is True
    assert gso_to_linux["linux_acked_all"] is True
    assert gso_to_linux["stats"]["tx_gso_frames"] == 2 + 2


def test_a_batch_of_consecutive_segments_goes_as_super_frames(gso_to_linux):
    # PSH on the 6th and 12th segment: two runs of six
    assert gso_to_linux["batch_sent"] == 12
    assert gso_to_linux["stats"]["tx_gso_segments"] == 12


def test_long_frame_that_is_not_tcp_counts_tx_gso_bad(gso_to_linux):
    assert gso_to_linux["not_tcp"] == 0
    assert gso_to_linux["stats"]["tx_gso_bad"] == 1
    assert gso_to_linux["stats"]["tx_errors"] == 1
