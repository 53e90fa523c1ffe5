"""LinkPair and the Device contract: ordering, drops and their counters, wait, the serializer."""
import threading

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fastproto import BufferPool
from fastproto.phy import Device, LinkPair, max_frame_len
from fastproto.phy.link import LinkEnd


def frames_of(n, size=60, tag=0):
    return [bytes([tag, i & 0xFF, i >> 8]) + bytes(size - 3) for i in range(n)]


def test_link_ends_are_devices_with_distinct_local_macs():
    link = LinkPair()
    a, b = link
    assert isinstance(a, Device) and isinstance(b, Device)
    assert a.mac != b.mac
    for mac in (a.mac, b.mac):
        assert len(mac) == 6 and mac[0] & 0x02 and not mac[0] & 0x01
    assert a.mtu == 1500 and a.max_frame_len == 1518 and a.is_up


def test_same_seed_same_macs_and_explicit_macs_used():
    assert LinkPair(seed=7).a.mac == LinkPair(seed=7).a.mac
    link = LinkPair(macs=[b"\x02" * 6, b"\x06" * 6])
    assert (link.a.mac, link.b.mac) == (b"\x02" * 6, b"\x06" * 6)


@pytest.mark.parametrize("bad", [dict(mtu=67), dict(rx_ring_size=0), dict(macs=[b"\x02" * 5, b"\x02" * 6]),
                                 dict(macs=[b"\x02" * 6])])
def test_bad_parameters_are_refused(bad):
    with pytest.raises(ValueError):
        LinkPair(**bad)


def test_frames_cross_both_ways_in_order_and_byte_exact():
    a, b = LinkPair()
    there, back = frames_of(50, tag=1), frames_of(30, size=1514, tag=2)
    assert a.transmit(there) == 50
    assert b.transmit(back) == 30
    assert b.receive(100) == there
    assert a.receive(100) == back
    assert a.receive(10) == [] and b.receive(10) == []
    assert a.stats()["tx_frames"] == 50 and b.stats()["rx_frames"] == 50
    assert a.stats()["rx_bytes"] == 30 * 1514


def test_transmit_copies_so_the_sender_may_reuse_its_buffer():
    a, b = LinkPair()
    buf = bytearray(b"\x01" * 60)
    a.transmit([buf, memoryview(buf)])
    buf[:] = bytes(60)
    assert b.receive(2) == [b"\x01" * 60] * 2


def test_receive_takes_at_most_max_frames_oldest_first():
    a, b = LinkPair()
    sent = frames_of(10)
    a.transmit(sent)
    assert b.receive(3) == sent[:3]
    assert b.receive(0) == []
    assert b.receive(100) == sent[3:]


def test_full_rx_ring_drops_the_excess_and_counts_it():
    a, b = LinkPair(rx_ring_size=8)
    sent = frames_of(20)
    assert a.transmit(sent[:5]) == 5
    assert a.transmit(sent[5:]) == 15  # the wire took them; the ring dropped some
    assert b.stats()["rx_ring_full"] == 12
    assert b.stats()["rx_ring_queued"] == 8
    assert b.receive(100) == sent[:8]


def test_down_device_drops_transmitted_and_arriving_frames():
    a, b = LinkPair()
    a.down()
    assert not a.is_up
    assert a.transmit(frames_of(4)) == 0
    assert a.stats()["tx_dropped_down"] == 4 and a.stats()["tx_frames"] == 0
    b.transmit(frames_of(3))
    assert a.stats()["rx_dropped_down"] == 3
    a.up()
    assert a.receive(10) == []
    a.transmit(frames_of(2))
    assert len(b.receive(10)) == 2


def test_going_down_flushes_the_rx_ring_and_counts_it():
    a, b = LinkPair()
    a.transmit(frames_of(5))
    b.down()
    b.up()
    assert b.receive(10) == []
    assert b.stats()["rx_dropped_down"] == 5


def test_oversize_frames_are_dropped_and_counted():
    a, b = LinkPair(mtu=100)
    limit = max_frame_len(100)
    ok, big = bytes(limit), bytes(limit + 1)
    assert a.transmit([ok, big, ok]) == 2
    assert a.stats()["tx_oversize"] == 1
    assert b.receive(10) == [ok, ok]


def test_receive_into_copies_frames_into_pool_rows():
    a, b = LinkPair()
    pool = BufferPool(64, 2048)
    sent = frames_of(10, size=60) + frames_of(5, size=1514, tag=3) + [b""]
    a.transmit(sent)
    handles = np.zeros(32, np.uint64)
    lengths = np.zeros(32, np.uint32)
    n = b.receive_into(pool, handles, lengths)
    assert n == len(sent)
    got = [bytes(pool.data[h, :length]) for h, length in zip(handles[:n], lengths[:n])]
    assert got == sent
    assert all(pool.is_allocated(int(h)) for h in handles[:n])
    assert pool.available == 64 - n
    assert b.stats()["rx_frames"] == n


def test_receive_into_fills_at_most_the_output_arrays():
    a, b = LinkPair()
    pool = BufferPool(64)
    sent = frames_of(10)
    a.transmit(sent)
    handles, lengths = np.zeros(4, np.uint64), np.zeros(4, np.uint32)
    assert b.receive_into(pool, handles, lengths) == 4
    assert [bytes(pool.data[h, :n]) for h, n in zip(handles, lengths)] == sent[:4]
    assert b.receive(100) == sent[4:]


def test_receive_into_with_exhausted_pool_drops_and_counts_rx_no_buffer():
    a, b = LinkPair()
    pool = BufferPool(3)
    held = pool.alloc_many(1)
    a.transmit(frames_of(5))
    handles, lengths = np.zeros(8, np.uint64), np.zeros(8, np.uint32)
    assert b.receive_into(pool, handles, lengths) == 2
    assert b.stats()["rx_no_buffer"] == 3
    assert pool.available == 0
    a.transmit(frames_of(1))
    assert b.receive_into(pool, handles, lengths) == 0
    assert b.stats()["rx_no_buffer"] == 4
    pool.free_many(held)


def test_receive_into_drops_frames_longer_than_the_pool_buffers():
    a, b = LinkPair()
    pool = BufferPool(8, 64)
    a.transmit([bytes(60), bytes(100), bytes(64)])
    handles, lengths = np.zeros(8, np.uint64), np.zeros(8, np.uint32)
    assert b.receive_into(pool, handles, lengths) == 2
    assert list(lengths[:2]) == [60, 64]
    assert b.stats()["rx_oversize"] == 1
    assert pool.available == 6


def test_wait_times_out_when_nothing_arrives():
    a, b = LinkPair()
    assert b.wait(0.01) is False
    assert b.wait(0) is False


def test_wait_returns_at_once_when_frames_are_queued():
    a, b = LinkPair()
    a.transmit(frames_of(1))
    assert b.wait(None) is True


def test_wait_wakes_when_a_frame_arrives_from_another_thread():
    a, b = LinkPair()
    started = threading.Event()
    result = []

    def puller():
        started.set()
        result.append(b.wait(30))

    t = threading.Thread(target=puller)
    t.start()
    started.wait()
    a.transmit(frames_of(1))
    t.join(30)
    assert not t.is_alive() and result == [True]


def test_wakeup_ends_a_wait_without_frames():
    a, b = LinkPair()
    result = []
    t = threading.Thread(target=lambda: result.append(b.wait(None)))
    t.start()
    while not t.is_alive():
        pass
    while t.is_alive():
        b.wakeup()
        t.join(0.01)
    assert result == [False]


class CheckedEnd(LinkEnd):
    """A link end whose hooks assert that the serializer is held."""

    checked = 0

    def _tx(self, frames):
        self.serializer.assert_held()
        CheckedEnd.checked += 1
        super()._tx(frames)

    def _refill(self):
        self.serializer.assert_held()
        CheckedEnd.checked += 1


def test_serializer_is_held_inside_transmit_and_receive():
    a = CheckedEnd("a", 1500, b"\x02" * 6, 16)
    b = CheckedEnd("b", 1500, b"\x06" * 6, 16)
    a.peer, b.peer = b, a
    a.transmit(frames_of(2))
    b.receive(1)
    b.receive_into(BufferPool(4), np.zeros(4, np.uint64), np.zeros(4, np.uint32))
    assert CheckedEnd.checked == 3
    assert not a.serializer.locked and not b.serializer.locked


def test_entry_points_wait_for_the_serializer():
    a, b = LinkPair()
    done = threading.Event()
    with b.serializer:
        t = threading.Thread(target=lambda: (b.receive(1), done.set()))
        t.start()
        assert not done.wait(0.05)
    t.join(30)
    assert done.is_set()
    assert b.serializer.contended >= 1


def test_two_threads_transmitting_to_each_other_lose_nothing():
    a, b = LinkPair(rx_ring_size=100_000)
    n = 2000

    def send(dev, tag):
        for chunk in range(0, n, 50):
            dev.transmit(frames_of(50, tag=tag))

    ts = [threading.Thread(target=send, args=(a, 1)), threading.Thread(target=send, args=(b, 2))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert len(b.receive(n + 1)) == n and len(a.receive(n + 1)) == n


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.binary(max_size=1518), max_size=12), max_size=8), st.integers(1, 40))
def test_ring_keeps_the_oldest_frames_up_to_its_size(batches, ring):
    """Oracle: a plain list that tail-drops beyond ``ring`` entries."""
    a, b = LinkPair(rx_ring_size=ring)
    expect, dropped = [], 0
    for batch in batches:
        a.transmit(batch)
        room = ring - len(expect)
        expect += batch[:room]
        dropped += max(0, len(batch) - room)
    pool = BufferPool(64)
    handles, lengths = np.zeros(64, np.uint64), np.zeros(64, np.uint32)
    n = b.receive_into(pool, handles, lengths)
    assert [bytes(pool.data[h, :k]) for h, k in zip(handles[:n], lengths[:n])] == expect
    assert b.stats()["rx_ring_full"] == dropped
