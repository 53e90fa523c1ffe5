"""Frame batches (fastproto._core.frames): many frames in one buffer, carried
whole by a LinkPair's ring, taken in part, copied into pool buffers, and
accepted by every device and wrapper as the sequence of its frames."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether

from fastproto import BufferPool
from fastproto._core.frames import FrameBatch, checked_frames, store_frames
from fastproto._core.tso import tcp_frames, tcp_frames_many
from fastproto.phy.capture import PcapCapture, PcapReplay
from fastproto.phy.fault_injector import FaultInjector
from fastproto.phy.generator import GeneratorDevice, udp_frame
from fastproto.phy.link import LinkPair
from fastproto.phy.pcap import PcapReader
from fastproto.proto.arp import ArpCache
from fastproto.stack import Stack
from fastproto.wire.tcp import ACK, FIN, PSH

SRC4, DST4 = bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2])
SRC6 = bytes.fromhex("20010002000000000000000000000001")
DST6 = bytes.fromhex("20010002000000000000000000000002")
MAC_A, MAC_B = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")


def frames_of(lengths: list[int], tag: int = 0) -> list[bytes]:
    """Distinct frames of the given lengths (byte j of frame i: (tag + i * 31 + j) & 0xFF)."""
    return [bytes((tag + i * 31 + j) & 0xFF for j in range(n)) for i, n in enumerate(lengths)]


def pool_and_outputs(count: int = 256, size: int = 2048):
    return BufferPool(count, size), np.zeros(count, np.uint64), np.zeros(count, np.uint32)


def drain_into(dev, pool, hs, ls, per_call: int) -> list[bytes]:
    """Every frame waiting on ``dev``, taken ``per_call`` at a time into ``pool``."""
    out = []
    while True:
        n = dev.receive_into(pool, hs[:per_call], ls[:per_call])
        if n == 0:
            return out
        out += [pool.data[h, :k].tobytes() for h, k in zip(hs[:n].tolist(), ls[:n].tolist())]
        pool.free_many(hs[:n])


# -- the batch itself -------------------------------------------------------------------


def test_batch_is_a_sequence_of_its_frames():
    frames = frames_of([60, 0, 1514, 7])
    b = FrameBatch(frames)
    assert len(b) == 4 and list(b) == frames and b.frames() == frames
    assert b[0] == frames[0] and b[-1] == frames[-1] and b[1] == b""
    assert b.nbytes == sum(map(len, frames)) and b.max_len == 1514
    assert b.lengths() == [60, 0, 1514, 7]
    assert not b.sealed
    with pytest.raises(IndexError):
        b[4]
    with pytest.raises(IndexError):
        b[-5]


def test_append_copies_any_bytes_like_frame():
    src = bytearray(b"abcdef")
    b = FrameBatch()
    b.append(src)
    b.append(memoryview(b"xyz"))
    src[0] = 0
    assert b.frames() == [b"abcdef", b"xyz"]
    with pytest.raises(TypeError):
        b.append(12)


def test_a_slice_shares_memory_seals_the_batch_and_counts_its_own_frames():
    frames = frames_of([10, 20, 30, 40, 50])
    b = FrameBatch(frames)
    s = b[1:4]
    assert b.sealed and s.sealed
    assert s.frames() == frames[1:4] and s.nbytes == 90 and s.max_len == 40
    assert s[1:].frames() == frames[2:4] and s[5:].frames() == [] and len(b[3:1]) == 0
    with pytest.raises(ValueError):
        b.append(b"late")
    with pytest.raises(ValueError):
        b[::2]
    del b
    assert s.frames() == frames[1:4]          # the view keeps the memory alive


def test_reserve_makes_room_and_refuses_bad_sizes_and_sealed_batches():
    b = FrameBatch()
    b.reserve(1 << 20, 700)
    b.extend(frames_of([1500] * 700))
    assert len(b) == 700 and b.nbytes == 700 * 1500
    with pytest.raises(ValueError):
        b.reserve(-1)
    b.seal()
    with pytest.raises(ValueError):
        b.reserve(10)


def test_empty_batch_has_no_longest_frame():
    b = FrameBatch()
    assert len(b) == 0 and b.nbytes == 0 and b.max_len == 0 and b.frames() == []


def test_checked_frames_returns_the_list_itself_when_all_fit():
    frames = frames_of([60, 100])
    kept, nbytes, oversize = checked_frames(frames, 100)
    assert kept is frames and nbytes == 160 and oversize == 0
    kept, nbytes, oversize = checked_frames([bytearray(5), b"x" * 101, memoryview(b"ab")], 100)
    assert kept == [bytes(5), b"ab"] and all(type(f) is bytes for f in kept)
    assert (nbytes, oversize) == (7, 1)


def test_store_frames_copies_bytes_and_batches_in_order():
    pool, hs, ls = pool_and_outputs(8, 64)
    frames = frames_of([10, 64, 65, 3, 0])
    entries = [frames[0], FrameBatch(frames[1:4]), frames[4]]
    stored, oversize, nbytes = store_frames(pool, entries, hs, ls)
    assert (stored, oversize, nbytes) == (4, 1, 77)
    got = [pool.data[h, :k].tobytes() for h, k in zip(hs[:4].tolist(), ls[:4].tolist())]
    assert got == [frames[0], frames[1], frames[3], frames[4]]


def test_store_frames_stops_when_the_pool_or_outputs_run_out():
    pool, hs, ls = pool_and_outputs(3, 64)
    assert store_frames(pool, [FrameBatch(frames_of([5] * 5))], hs, ls)[:2] == (3, 0)
    pool2, hs2, ls2 = pool_and_outputs(8, 64)
    assert store_frames(pool2, [FrameBatch(frames_of([5] * 5))], hs2[:2], ls2[:2])[0] == 2
    assert pool2.available == 6


def test_store_frames_rejects_other_entries_and_bad_outputs():
    pool, hs, ls = pool_and_outputs(4, 64)
    with pytest.raises(TypeError):
        store_frames(pool, [b"ok", bytearray(b"no")], hs, ls)
    with pytest.raises(ValueError):
        store_frames(pool, [b"ok"], hs.astype(np.int64), ls)
    assert pool.available == 4


# -- through a LinkPair ---------------------------------------------------------------------


def test_batch_arrives_byte_identical_to_the_list_path():
    frames = frames_of([60, 1514, 200, 61, 1000])
    a, b = LinkPair(rx_ring_size=64)
    assert a.transmit(FrameBatch(frames)) == 5
    assert a.transmit(frames) == 5
    pool, hs, ls = pool_and_outputs()
    assert drain_into(b, pool, hs, ls, 64) == frames + frames
    s = a.stats()
    assert s["tx_frames"] == 10 and s["tx_bytes"] == 2 * sum(map(len, frames))
    sb = b.stats()
    assert sb["rx_frames"] == 10 and sb["rx_bytes"] == 2 * sum(map(len, frames))


def test_transmit_seals_the_batch():
    a, b = LinkPair()
    batch = FrameBatch(frames_of([60, 60]))
    a.transmit(batch)
    assert batch.sealed
    with pytest.raises(ValueError):
        batch.append(bytes(60))
    assert b.receive(8) == frames_of([60, 60])


def test_partial_takes_leave_the_rest_of_a_batch_first_on_the_ring():
    frames = frames_of([64 + i for i in range(10)])
    a, b = LinkPair()
    a.transmit(frames[:1])
    a.transmit(FrameBatch(frames[1:8]))
    a.transmit(frames[8:])
    pool, hs, ls = pool_and_outputs()
    assert b.receive_into(pool, hs[:3], ls[:3]) == 3
    assert [pool.data[h, :k].tobytes() for h, k in zip(hs[:3].tolist(), ls[:3].tolist())] \
        == frames[:3]
    assert b.stats()["rx_ring_queued"] == 7
    assert b.receive(2) == frames[3:5]
    assert drain_into(b, pool, hs, ls, 2) == frames[5:]
    s = b.stats()
    assert s["rx_frames"] == 10 and s["rx_ring_queued"] == 0
    assert s["rx_bytes"] == sum(map(len, frames))


def test_first_partial_take_copies_the_first_frames():
    frames = frames_of([70, 71, 72, 73])
    a, b = LinkPair()
    a.transmit(FrameBatch(frames))
    pool, hs, ls = pool_and_outputs()
    assert b.receive_into(pool, hs[:3], ls[:3]) == 3
    assert [pool.data[h, :k].tobytes() for h, k in zip(hs[:3].tolist(), ls[:3].tolist())] \
        == frames[:3]
    assert b.receive(10) == frames[3:]


def test_a_full_ring_cuts_a_batch_and_counts_the_rest():
    frames = frames_of([100] * 12)
    a, b = LinkPair(rx_ring_size=8)
    a.transmit(FrameBatch(frames[:5]))
    a.transmit(FrameBatch(frames[5:]))
    s = b.stats()
    assert s["rx_ring_full"] == 4 and s["rx_ring_queued"] == 8
    assert b.receive(100) == frames[:8]
    assert a.stats()["tx_frames"] == 12      # the wire took them; the ring dropped


def test_oversize_frames_in_a_batch_are_counted_and_the_rest_sent():
    a, b = LinkPair(mtu=1500)
    frames = frames_of([1518, 1519, 60])
    assert a.transmit(FrameBatch(frames)) == 2
    s = a.stats()
    assert s["tx_oversize"] == 1 and s["tx_frames"] == 2 and s["tx_bytes"] == 1578
    assert b.receive(10) == [frames[0], frames[2]]


def test_frames_longer_than_a_pool_buffer_count_rx_oversize():
    a, b = LinkPair()
    frames = frames_of([100, 1500, 200])
    a.transmit(FrameBatch(frames))
    pool, hs, ls = pool_and_outputs(8, 1024)
    assert b.receive_into(pool, hs, ls) == 2
    assert b.stats()["rx_oversize"] == 1 and b.stats()["rx_frames"] == 2


def test_a_pool_running_out_counts_rx_no_buffer():
    a, b = LinkPair()
    a.transmit(FrameBatch(frames_of([100] * 6)))
    pool = BufferPool(4, 256)
    assert b.receive_into(pool, np.zeros(6, np.uint64), np.zeros(6, np.uint32)) == 4
    assert b.stats()["rx_no_buffer"] == 2 and b.stats()["rx_ring_queued"] == 0


def test_down_ends_count_batch_frames():
    a, b = LinkPair()
    a.down()
    assert a.transmit(FrameBatch(frames_of([60] * 3))) == 0
    assert a.stats()["tx_dropped_down"] == 3
    a.up()
    b.down()
    a.transmit(FrameBatch(frames_of([60] * 4)))
    assert b.stats()["rx_dropped_down"] == 4
    b.up()
    a.transmit(FrameBatch(frames_of([60] * 5)))
    b.down()
    assert b.stats()["rx_dropped_down"] == 9 and b.stats()["rx_ring_queued"] == 0


def test_a_ring_with_a_batch_wakes_a_waiter_and_is_ready():
    a, b = LinkPair()
    assert not b.rx_ready()
    a.transmit(FrameBatch(frames_of([60])))
    assert b.rx_ready() and b.wait(0)


@settings(max_examples=60, deadline=None)
@given(sends=st.lists(st.tuples(st.booleans(), st.lists(st.integers(0, 1600), max_size=12)),
                      max_size=10),
       ring=st.integers(1, 40), takes=st.lists(st.integers(1, 9), min_size=1, max_size=8),
       pool_size=st.sampled_from([1024, 2048]))
def test_any_mix_of_batches_and_lists_arrives_as_a_plain_fifo_would_deliver(
        sends, ring, takes, pool_size):
    """Oracle: a bounded FIFO of frames in plain Python (drop at the transmitter
    above max_frame_len, at the ring when full, at the pool when too long)."""
    a, b = LinkPair(rx_ring_size=ring, mtu=1500)
    limit = a.max_frame_len
    fifo: list[bytes] = []
    tx_oversize = ring_full = tag = 0
    for as_batch, lengths in sends:
        frames = frames_of(lengths, tag)
        tag += 1
        a.transmit(FrameBatch(frames) if as_batch else frames)
        for f in frames:
            if len(f) > limit:
                tx_oversize += 1
            elif len(fifo) < ring:
                fifo.append(f)
            else:
                ring_full += 1
    pool, hs, ls = pool_and_outputs(64, pool_size)
    got: list[bytes] = []
    expect: list[bytes] = []
    for i, k in enumerate(takes * 4):
        if i % 2:
            got += b.receive(k)
            expect += fifo[:k]
        else:
            n = b.receive_into(pool, hs[:k], ls[:k])
            got += [pool.data[h, :m].tobytes() for h, m in zip(hs[:n].tolist(), ls[:n].tolist())]
            pool.free_many(hs[:n])
            expect += [f for f in fifo[:k] if len(f) <= pool_size]
        del fifo[:k]
    assert got == expect
    sa, sb = a.stats(), b.stats()
    assert sa["tx_oversize"] == tx_oversize and sb["rx_ring_full"] == ring_full
    assert sb["rx_ring_queued"] == len(fifo)
    assert sb["rx_frames"] == sum(1 for f in expect) and sb["rx_bytes"] == sum(map(len, expect))


# -- wrappers and other devices -----------------------------------------------------------


def test_fault_injector_treats_a_batch_as_its_frames():
    frames = frames_of([60 + i for i in range(40)])
    outs = []
    for make in (FrameBatch, list):
        link = LinkPair(rx_ring_size=256)
        f = FaultInjector(link.a, seed=7, loss=0.2, duplicate=0.2, corrupt=0.2, reorder=0.2,
                          reorder_hold=0.0)
        f.transmit(make(frames))
        f.flush()
        outs.append((link.b.receive(256), {k: v for k, v in f.stats().items()
                                          if k.startswith("fault_")}))
    assert outs[0] == outs[1] and outs[0][1]["fault_lost"] > 0


def test_fault_injector_without_impairments_passes_a_batch_on():
    link = LinkPair()
    f = FaultInjector(link.a)
    frames = frames_of([60, 70])
    assert f.transmit(FrameBatch(frames)) == 2
    assert link.b.receive(4) == frames


def test_pcap_capture_records_a_batch_frame_by_frame(tmp_path):
    link = LinkPair()
    path = tmp_path / "tx.pcap"
    frames = frames_of([60, 1514, 99])
    with PcapCapture(link.a, path, clock=lambda: 1.5) as cap:
        assert cap.transmit(FrameBatch(frames)) == 3
        assert cap.stats()["capture_tx"] == 3
    assert [f for _, f in PcapReader(path)] == frames
    assert link.b.receive(8) == frames


def test_pcap_replay_discards_a_batch(tmp_path):
    path = tmp_path / "empty.pcap"
    PcapCapture(LinkPair().a, path).close()
    replay = PcapReplay(path)
    assert replay.transmit(FrameBatch(frames_of([60, 60]))) == 2
    assert replay.stats()["tx_discarded"] == 2


def test_generator_device_counts_a_batch():
    with GeneratorDevice(udp_frame(9), rate_pps=1.0) as gen:
        frames = frames_of([60, 100, 2000])
        assert gen.transmit(FrameBatch(frames[:2])) == 2
        assert gen.transmit(FrameBatch(frames)) == 2
        s = gen.stats()
        assert s["tx_frames"] == 4 and s["tx_bytes"] == 320 and s["tx_oversize"] == 1


# -- TSO into a batch ----------------------------------------------------------------------


def _checksums_ok(frame: bytes) -> bool:
    """scapy recomputes both checksums of a copy with them cleared: equal means valid."""
    pkt = Ether(frame)
    ip = pkt[IP] if IP in pkt else pkt[IPv6]
    again = ip.copy()
    if IP in pkt:
        del again[IP].chksum
    del again[TCP].chksum
    again = again.__class__(bytes(again))
    ok = again[TCP].chksum == pkt[TCP].chksum
    if IP in pkt:
        ok = ok and again[IP].chksum == ip.chksum
    return ok


@settings(max_examples=40, deadline=None)
@given(plens=st.lists(st.integers(0, 70_000), min_size=1, max_size=3),
       mss=st.integers(536, 1460), v6=st.booleans(), seq=st.integers(0, 2**32 - 1),
       fin=st.booleans())
def test_tso_into_a_batch_equals_tso_into_a_list(plens, mss, v6, seq, fin):
    src, dst = (SRC6, DST6) if v6 else (SRC4, DST4)
    l2 = MAC_B + MAC_A + (b"\x86\xdd" if v6 else b"\x08\x00")
    opts = bytes([1, 1, 8, 10]) + bytes(8)
    as_list: list[bytes] = []
    batch = FrameBatch()
    for i, plen in enumerate(plens):
        payload = bytes((i + j * 13) & 0xFF for j in range(plen))
        flags = ACK | PSH | (FIN if fin else 0)
        s = (seq + 100_000 * i) & 0xFFFFFFFF
        n1 = tcp_frames(l2, src, dst, 40000, 80, s, 7, flags, 1000, opts, payload, mss, as_list)
        n2 = tcp_frames(l2, src, dst, 40000, 80, s, 7, flags, 1000, opts, payload, mss, batch)
        assert n1 == n2
    assert batch.frames() == as_list
    assert batch.nbytes == sum(map(len, as_list)) and len(batch) == len(as_list)
    for frame in batch.frames()[:: max(1, len(batch) // 5)] + [batch[-1]]:
        assert _checksums_ok(frame)


@settings(max_examples=30, deadline=None)
@given(sends=st.lists(st.tuples(st.integers(0, 30_000), st.integers(0, 8)), min_size=1, max_size=4),
       mss=st.integers(536, 1460), into_batch=st.booleans())
def test_tso_of_many_sends_equals_one_call_per_send(sends, mss, into_batch):
    """Oracle: tcp_frames per send, at the MSS less the options beyond 12 bytes' room."""
    room = 1500 - 40
    items = []
    for i, (plen, nopts) in enumerate(sends):
        opts = bytes([1]) * (4 * nopts)
        items.append((1000 * i, 7, ACK | PSH, 500, opts, bytes((i + j) & 0xFF for j in range(plen))))
    expect: list[bytes] = []
    for seq, ack, flags, window, opts, payload in items:
        tcp_frames(MAC_B + MAC_A + b"\x08\x00", SRC4, DST4, 1, 2, seq, ack, flags, window, opts,
                   payload, min(mss, room - len(opts)), expect)
    out = FrameBatch() if into_batch else []
    n = tcp_frames_many(MAC_B + MAC_A + b"\x08\x00", SRC4, DST4, 1, 2, items, room, mss, out)
    assert n == len(expect) == len(out)
    assert (out.frames() if into_batch else out) == expect


def test_tso_of_many_sends_refuses_bad_options():
    with pytest.raises(ValueError):
        tcp_frames_many(b"", SRC4, DST4, 1, 2, [(0, 0, ACK, 0, b"\x01", b"x")], 1460, 1460, [])


def test_tso_refuses_a_sealed_batch_and_other_outputs():
    batch = FrameBatch()
    batch.seal()
    with pytest.raises(ValueError):
        tcp_frames(b"", SRC4, DST4, 1, 2, 0, 0, ACK, 0, b"", b"x" * 100, 50, batch)
    assert len(batch) == 0
    with pytest.raises(TypeError):
        tcp_frames(b"", SRC4, DST4, 1, 2, 0, 0, ACK, 0, b"", b"x" * 100, 50, ())


# -- the link header kept per connection ----------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _arp_reply(ip: str, mac: str, to_ip: str, to_mac: bytes) -> bytes:
    return bytes(Ether(dst=to_mac, src=mac) / ARP(op=2, psrc=ip, hwsrc=mac, pdst=to_ip,
                                                   hwdst=to_mac))


def test_arp_generation_moves_on_every_change_of_the_resolved_entries():
    clock = Clock()
    c = ArpCache("02:00:00:00:00:01", "10.0.0.1", clock=clock, timeout=10.0, max_entries=1)
    g = c.generation
    c.input(_arp_reply("10.0.0.2", "02:00:00:00:00:02", "10.0.0.1", bytes.fromhex("020000000001")))
    assert c.generation > g and c.lookup_entry("10.0.0.2") == (bytes.fromhex("020000000002"), 1010.0)
    g = c.generation
    c.lookup("10.0.0.2")
    assert c.generation == g                     # a look changes nothing
    c.input(_arp_reply("10.0.0.3", "02:00:00:00:00:03", "10.0.0.1", bytes.fromhex("020000000001")))
    assert c.generation > g and c.lookup("10.0.0.2") is None      # evicted
    g = c.generation
    clock.now += 11
    assert c.lookup_entry("10.0.0.3") is None and c.generation > g   # expired


def test_link_header_follows_the_arp_entry():
    clock = Clock()
    link = LinkPair()
    with Stack(link.a, "198.18.0.1/24", clock=clock, dispatch="inline") as a:
        route = [SRC4, DST4, 0, 1000, 80, None]
        assert a.tcp._link_header(route) == b""
        me = a.mac
        a.arp.input(_arp_reply("198.18.0.2", "02:00:00:00:00:22", "198.18.0.1", me))
        first = a.tcp._link_header(route)
        assert first == bytes.fromhex("020000000022") + me + b"\x08\x00"
        assert a.tcp._link_header(route) is first            # kept
        a.arp.input(_arp_reply("198.18.0.2", "02:00:00:00:00:33", "198.18.0.1", me))
        assert a.tcp._link_header(route)[:6] == bytes.fromhex("020000000033")
        clock.now += a.arp.timeout + 1
        assert a.tcp._link_header(route) == b""              # expired: through ARP again


def test_tap_sends_a_batch_in_place_byte_exact():
    """Oracle: the Linux UDP socket's view of each datagram of the batch."""
    from netns import run_json
    payloads = [bytes([i]) * (i * 97 % 1400) for i in range(12)]
    got = run_json(f"""
from fastproto._core.frames import FrameBatch
from fastproto.phy.tap import TapInterface
from fastproto.wire import ETH_P_IP, ethernet, ipv4, udp
payloads = [bytes.fromhex(p) for p in {[p.hex() for p in payloads]!r}]
with TapInterface("fp0") as tap:
    tap.up()
    kernel_side("fp0")
    linux = kernel_udp_socket(5555)
    batch = FrameBatch(ethernet(tap.mac, STACK_MAC, ETH_P_IP,
                                ipv4(STACK_ADDR, KERNEL_ADDR, 17,
                                     udp(STACK_ADDR, KERNEL_ADDR, 4242, 5555, p)))
                       for p in payloads)
    sent = tap.transmit(batch)
    report({{"sent": sent, "sealed": batch.sealed, "got": [linux.recv(2048).hex() for _ in range(sent)],
             "tx_bytes": tap.stats()["tx_bytes"], "batch_bytes": batch.nbytes}})
""")
    assert got["sent"] == len(payloads) and got["sealed"]
    assert got["got"] == [p.hex() for p in payloads]
    assert got["tx_bytes"] == got["batch_bytes"]
