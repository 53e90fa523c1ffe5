"""The core's per-datagram UDP work: frames built from a flow's template agree
with scapy, and datagrams taken off a PCQ are the ones the demux put there."""
import ipaddress
import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from demux_rig import demux_rig
from fastproto import BufferPool
from fastproto._core.udp import ETH_MIN_FRAME, UDP4_HEADERS, udp4_frame, udp4_template, udp_take
from fastproto.wire import ETH_P_IP, ETH_P_IPV6, ethernet, ipv4, ipv6, udp

LOCAL, PEER = "198.18.0.2", "198.18.0.1"
LOCAL6, PEER6 = "2001:2::2", "2001:2::1"
MAC_L, MAC_P = bytes.fromhex("020000000002"), bytes.fromhex("020000000001")


def _packed(addr):
    return ipaddress.ip_address(addr).packed


def _template(sport=4000, dport=53, ttl=64):
    return udp4_template(MAC_P, MAC_L, _packed(LOCAL), _packed(PEER), sport, dport, ttl)


# -- udp4_frame ------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(payload=st.binary(max_size=1472), ident=st.integers(0, 0xFFFF),
       sport=st.integers(1, 0xFFFF), dport=st.integers(1, 0xFFFF), ttl=st.integers(1, 255))
def test_frame_matches_scapy(payload, ident, sport, dport, ttl):
    frame = udp4_frame(_template(sport, dport, ttl), payload, ident)
    # scapy recomputes both checksums from scratch: equal frames, equal sums.
    want = bytes(Ether(dst=MAC_P, src=MAC_L) /
                 IP(src=LOCAL, dst=PEER, id=ident, ttl=ttl, flags=0) /
                 UDP(sport=sport, dport=dport) / payload)
    want += bytes(max(0, ETH_MIN_FRAME - len(want)))
    assert frame == want


def test_zero_checksum_goes_out_as_all_ones():
    # RFC 768: a computed zero is sent as 0xFFFF (zero means "no checksum").
    for value in range(0x10000):
        payload = value.to_bytes(2, "big")
        frame = udp4_frame(_template(), payload, 0)
        if Ether(frame)[UDP].chksum == 0xFFFF:
            assert UDP(bytes(Ether(frame)[UDP]))  # parses
            break
    else:
        pytest.fail("no two-byte payload sums to zero")
    assert frame[UDP4_HEADERS - 2:UDP4_HEADERS] == b"\xff\xff"


def test_short_frames_are_padded_to_the_ethernet_minimum():
    frame = udp4_frame(_template(), b"", 7)
    assert len(frame) == ETH_MIN_FRAME and frame[UDP4_HEADERS:] == bytes(ETH_MIN_FRAME - UDP4_HEADERS)
    assert Ether(frame)[IP].len == 28


def test_payload_may_be_any_contiguous_buffer():
    data = bytearray(b"abc" * 30)
    assert udp4_frame(_template(), memoryview(data), 1) == udp4_frame(_template(), bytes(data), 1)


def test_oversized_payload_is_refused():
    with pytest.raises(ValueError):
        udp4_frame(_template(), bytes(65508), 0)


def test_template_of_the_wrong_length_is_refused():
    with pytest.raises(ValueError):
        udp4_frame(_template()[:-1], b"x", 0)


@pytest.mark.parametrize("args", [
    (MAC_P[:5], MAC_L, _packed(LOCAL), _packed(PEER)),
    (MAC_P, MAC_L, _packed(LOCAL6), _packed(PEER)),
    (MAC_P, MAC_L, _packed(LOCAL), b"\x01\x02\x03"),
])
def test_template_with_bad_address_lengths_is_refused(args):
    with pytest.raises(ValueError):
        udp4_template(*args, 1, 2)


# -- udp_take --------------------------------------------------------------------

@pytest.fixture(params=["deferred", "verified first"])
def rx(request):
    return demux_rig((17, LOCAL, 53, None, 0), (17, LOCAL6, 53, None, 0), capacity=32,
                     verify_l4=True, defer_udp_checksum=request.param == "deferred")


def _deliver(pool, demux, frames):
    batch = pool.batch_from_frames(frames)
    delivered, _, _, _ = demux.input(batch.handles, batch.lengths)
    batch.clear()  # the buffers now belong to the sockets' PCQs
    return delivered


def _v4(payload, sport=4000, pad=False):
    frame = ethernet(MAC_L, MAC_P, ETH_P_IP, ipv4(PEER, LOCAL, 17, udp(PEER, LOCAL, sport, 53, payload)))
    return frame + bytes(60 - len(frame)) if pad and len(frame) < 60 else frame


def test_datagrams_come_out_in_order_with_source_and_buffers_freed(rx):
    pool, demux, pcq = rx
    payloads = [os.urandom(n) for n in (0, 1, 18, 500)]
    assert _deliver(pool, demux, [_v4(p, 4000 + i, pad=True) for i, p in enumerate(payloads)]) == 4
    datagrams, held, nread, drops = udp_take(pcq, demux.rows, pool)
    assert [d[0] for d in datagrams] == payloads  # padding is not payload
    assert [d[1:] for d in datagrams] == [(_packed(PEER), 4000 + i) for i in range(4)]
    assert held == [] and drops is None
    assert pool.available == pool.count and len(pcq) == 0


def test_ipv6_sources_are_sixteen_bytes(rx):
    pool, demux, pcq = rx
    frame = ethernet(MAC_L, MAC_P, ETH_P_IPV6,
                     ipv6(PEER6, LOCAL6, 17, udp(PEER6, LOCAL6, 9, 53, b"six")))
    assert _deliver(pool, demux, [frame]) == 1
    (datagram,), *_ = udp_take(pcq, demux.rows, pool)
    assert datagram == (b"six", _packed(PEER6), 9)


def test_with_packet_gives_the_ip_packet_without_link_padding(rx):
    pool, demux, pcq = rx
    assert _deliver(pool, demux, [_v4(b"ab", pad=True)]) == 1
    (datagram,), *_ = udp_take(pcq, demux.rows, pool, with_packet=True)
    packet = datagram[3]
    assert IP(packet).len == len(packet) == 20 + 8 + 2
    assert bytes(IP(packet)[UDP].payload) == b"ab"


def test_first_fragments_are_held_for_the_caller(rx):
    pool, demux, pcq = rx
    whole = ipv4(PEER, LOCAL, 17, udp(PEER, LOCAL, 4000, 53, bytes(100)))
    # First fragment: MF set, offset 0, 48 bytes of the UDP datagram.
    head = bytearray(whole[:20 + 48])
    head[2:4] = (20 + 48).to_bytes(2, "big")
    head[6:8] = (0x2000).to_bytes(2, "big")
    head[10:12] = b"\0\0"
    check = 0
    for i in range(0, 20, 2):
        check += (head[i] << 8) | head[i + 1]
    check = (check & 0xFFFF) + (check >> 16)
    head[10:12] = (~check & 0xFFFF).to_bytes(2, "big")
    assert _deliver(pool, demux, [ethernet(MAC_L, MAC_P, ETH_P_IP, bytes(head)), _v4(b"x")]) == 2
    datagrams, held, *_ = udp_take(pcq, demux.rows, pool)
    assert [d[0] for d in datagrams] == [b"x"]
    assert len(held) == 1 and pool.is_allocated(held[0])
    pool.free_many(held)


def test_max_items_bounds_one_take(rx):
    pool, demux, pcq = rx
    _deliver(pool, demux, [_v4(bytes([i])) for i in range(10)])
    first, *_ = udp_take(pcq, demux.rows, pool, 3)
    rest, *_ = udp_take(pcq, demux.rows, pool)
    assert [d[0] for d in first + rest] == [bytes([i]) for i in range(10)]
    assert len(first) == 3


def test_handles_beyond_the_rows_are_counted_not_read(rx):
    pool, demux, pcq = rx
    pcq.put(10_000)
    assert udp_take(pcq, demux.rows, pool) == ([], [], 0, {"bad_handle": 1})


def _corrupt_payload(frame):
    """``frame`` (IPv4/UDP) with a bit of its first payload byte flipped."""
    out = bytearray(frame)
    out[UDP4_HEADERS] ^= 0x40
    return bytes(out)


def test_deferred_checksum_is_verified_on_copy_and_read_once():
    pool, demux, pcq = demux_rig((17, LOCAL, 53, None, 0), buffers=16, capacity=8,
                                 verify_l4=True, defer_udp_checksum=True)
    good = [_v4(b"hello"), _v4(b"world!")]
    assert _deliver(pool, demux, [good[0], _corrupt_payload(_v4(b"bad")), good[1]]) == 3
    datagrams, held, nread, drops = udp_take(pcq, demux.rows, pool)
    assert [d[0] for d in datagrams] == [b"hello", b"world!"]
    assert (nread, drops) == (11, {"bad_checksum": 1})
    assert pool.available == pool.count


def test_verified_first_reads_each_payload_twice_and_drops_in_the_demux():
    pool, demux, pcq = demux_rig((17, LOCAL, 53, None, 0), buffers=16, capacity=8,
                                 verify_l4=True)
    assert _deliver(pool, demux, [_v4(b"hello"), _corrupt_payload(_v4(b"bad"))]) == 1
    assert demux.counters()["l4_bad_checksum"] == 1
    datagrams, _, nread, drops = udp_take(pcq, demux.rows, pool)
    assert [d[0] for d in datagrams] == [b"hello"] and (nread, drops) == (10, None)


@settings(max_examples=100, deadline=None)
@given(payload=st.binary(max_size=1400), flip=st.integers(0, 8 * 1400 - 1), v6=st.booleans())
def test_checksum_on_copy_agrees_with_the_parser(payload, flip, v6):
    # The oracle: the demux's own verification (verify-then-copy) of the same frame.
    if v6:
        frame = ethernet(MAC_L, MAC_P, ETH_P_IPV6,
                         ipv6(PEER6, LOCAL6, 17, udp(PEER6, LOCAL6, 9, 53, payload)))
    else:
        frame = _v4(payload)
    if payload:
        out = bytearray(frame)
        bit = flip % (8 * len(payload))
        out[(62 if v6 else UDP4_HEADERS) + bit // 8] ^= 1 << (bit % 8)
        frame = bytes(out)
    results = []
    for defer in (True, False):
        pool, demux, pcq = demux_rig((17, LOCAL6 if v6 else LOCAL, 53, None, 0), buffers=4,
                                     capacity=4, verify_l4=True, defer_udp_checksum=defer)
        _deliver(pool, demux, [frame])
        results.append([d[0] for d in udp_take(pcq, demux.rows, pool)[0]])
        assert pool.available == pool.count
    # A single flipped bit always changes the one's complement sum.
    assert results[0] == results[1] == ([] if payload else [payload])


def _accept(v4=(LOCAL,), v6=(LOCAL6,), macs=(MAC_L,)):
    return (b"".join(_packed(a) for a in v4), b"".join(_packed(a) for a in v6), b"".join(macs))


def test_destinations_not_listed_are_dropped_as_not_for_us(rx):
    pool, demux, pcq = rx
    ours = _v4(b"ours")
    other_mac = ethernet(bytes.fromhex("020000000009"), MAC_P, ETH_P_IP,
                         ipv4(PEER, LOCAL, 17, udp(PEER, LOCAL, 1, 53, b"mac")))
    v6 = ethernet(MAC_L, MAC_P, ETH_P_IPV6, ipv6(PEER6, LOCAL6, 17, udp(PEER6, LOCAL6, 9, 53, b"6")))
    _deliver(pool, demux, [ours, other_mac, v6])
    datagrams, _, _, drops = udp_take(pcq, demux.rows, pool, accept=_accept(v6=()))
    assert [d[0] for d in datagrams] == [b"ours"]
    assert drops == {"not_for_us": 2}
    assert pool.available == pool.count


def test_multicast_and_broadcast_sources_are_dropped(rx):
    pool, demux, pcq = rx
    frames = [ethernet(MAC_L, MAC_P, ETH_P_IP, ipv4(src, LOCAL, 17, udp(src, LOCAL, 1, 53, b"x")))
              for src in ("224.0.0.1", "239.255.255.255", "255.255.255.255", PEER)]
    frames.append(ethernet(MAC_L, MAC_P, ETH_P_IPV6,
                           ipv6("ff02::1", LOCAL6, 17, udp("ff02::1", LOCAL6, 1, 53, b"y"))))
    _deliver(pool, demux, frames)
    datagrams, _, _, drops = udp_take(pcq, demux.rows, pool)
    assert [d[1] for d in datagrams] == [_packed(PEER)]
    assert drops == {"bad_source": 4}


def test_accept_must_be_three_bytes_objects(rx):
    pool, demux, pcq = rx
    with pytest.raises(TypeError):
        udp_take(pcq, demux.rows, pool, accept=("a", b"", b""))
    with pytest.raises(ValueError):
        udp_take(pcq, demux.rows, pool, accept=(b"", b""))


def test_rows_of_the_wrong_shape_are_refused(rx):
    pool, _, pcq = rx
    with pytest.raises(ValueError):
        udp_take(pcq, np.zeros(16, dtype=np.uint8), pool)


# -- BufferPool.store ---------------------------------------------------------------

def _outputs(n):
    return np.zeros(n, dtype=np.uint64), np.zeros(n, dtype=np.uint32)


def test_store_copies_each_frame_into_its_own_buffer():
    pool = BufferPool(8, size=64)
    frames = [b"a" * 10, b"", b"b" * 64]
    hs, ls = _outputs(4)
    assert pool.store(frames, hs, ls) == (3, 0, 74)
    assert [pool.view(int(h), int(n)).tobytes() for h, n in zip(hs[:3], ls[:3])] == frames
    assert pool.available == 5


def test_store_skips_oversize_frames_and_stops_when_the_pool_is_empty():
    pool = BufferPool(2, size=16)
    hs, ls = _outputs(8)
    stored, oversize, nbytes = pool.store([b"x" * 17, b"1", b"2", b"3"], hs, ls)
    assert (stored, oversize, nbytes) == (2, 1, 2)
    assert pool.available == 0


def test_store_stops_when_the_outputs_are_full():
    pool = BufferPool(8)
    hs, ls = _outputs(2)
    assert pool.store([b"1", b"2", b"3"], hs, ls)[0] == 2
    assert pool.available == 6


@pytest.mark.parametrize("bad", [
    (np.zeros(4, dtype=np.int64), np.zeros(4, dtype=np.uint32)),
    (np.zeros(4, dtype=np.uint64), np.zeros(4, dtype=np.uint16)),
    (np.zeros((2, 2), dtype=np.uint64), np.zeros(4, dtype=np.uint32)),
    (np.zeros(8, dtype=np.uint64)[::2], np.zeros(4, dtype=np.uint32)),
])
def test_store_refuses_outputs_of_the_wrong_kind(bad):
    pool = BufferPool(4)
    with pytest.raises(ValueError):
        pool.store([b"x"], *bad)
    assert pool.available == 4


def test_store_refuses_frames_that_are_not_bytes():
    pool = BufferPool(4)
    with pytest.raises(TypeError):
        pool.store([bytearray(b"x")], *_outputs(4))
