"""FaultInjector: each impairment does what it says, is counted, and is reproducible from the seed."""
import threading

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fastproto import BufferPool
from fastproto.phy import Device, FaultInjector, LinkPair


def numbered(n, size=64):
    return [i.to_bytes(4, "big") + bytes(size - 4) for i in range(n)]


def number(frame):
    return int.from_bytes(frame[:4], "big")


class FakeClock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


def through(seed=0, **impair):
    link = LinkPair(rx_ring_size=1 << 20)
    return FaultInjector(link.a, seed=seed, **impair), link.b


def test_without_impairments_frames_pass_unchanged():
    f, b = through()
    sent = numbered(100)
    assert f.transmit(sent) == 100
    assert b.receive(1000) == sent
    assert isinstance(f, Device)
    assert (f.name, f.mtu, f.mac) == (f.inner.name, f.inner.mtu, f.inner.mac)


@pytest.mark.parametrize("bad", [dict(loss=-0.1), dict(duplicate=1.5), dict(corrupt=2), dict(reorder=-1),
                                 dict(delay=-1), dict(rate=0), dict(rate_queue_bytes=-1)])
def test_bad_parameters_are_refused(bad):
    with pytest.raises(ValueError):
        FaultInjector(LinkPair().a, **bad)


def test_loss_rate_is_near_the_setting_over_10k_frames():
    f, b = through(seed=3, loss=0.1)
    f.transmit(numbered(10_000))
    got = b.receive(20_000)
    lost = f.stats()["fault_lost"]
    assert 800 <= lost <= 1200
    assert len(got) == 10_000 - lost
    nums = [number(x) for x in got]
    assert nums == sorted(nums)  # loss alone never reorders


def test_same_seed_gives_the_same_loss_pattern():
    runs = []
    for _ in range(2):
        f, b = through(seed=42, loss=0.3)
        f.transmit(numbered(500))
        runs.append([number(x) for x in b.receive(1000)])
    assert runs[0] == runs[1]
    f, b = through(seed=43, loss=0.3)
    f.transmit(numbered(500))
    assert [number(x) for x in b.receive(1000)] != runs[0]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 20), min_size=1, max_size=10), st.integers(0, 2**32))
def test_output_does_not_depend_on_how_frames_are_batched(splits, seed):
    impair = dict(loss=0.2, duplicate=0.2, corrupt=0.2, reorder=0.0)
    frames = numbered(sum(splits), size=16)
    f1, b1 = through(seed, **impair)
    f1.transmit(frames)
    f2, b2 = through(seed, **impair)
    i = 0
    for k in splits:
        f2.transmit(frames[i:i + k])
        i += k
    assert b1.receive(1000) == b2.receive(1000)


def test_duplicates_are_delivered_twice_and_counted():
    f, b = through(seed=1, duplicate=0.25)
    f.transmit(numbered(2000))
    got = [number(x) for x in b.receive(10_000)]
    dups = f.stats()["fault_duplicated"]
    assert 300 < dups < 700
    assert len(got) == 2000 + dups
    assert sorted(set(got)) == list(range(2000))
    assert sum(1 for i in range(1, len(got)) if got[i] == got[i - 1]) == dups


def test_corruption_flips_one_to_three_bits_and_keeps_the_length():
    f, b = through(seed=5, corrupt=1.0)
    sent = numbered(200, size=100)
    f.transmit(sent)
    got = b.receive(1000)
    assert len(got) == 200 and f.stats()["fault_corrupted"] == 200
    for s, g in zip(sent, got):
        assert len(g) == len(s)
        flipped = bin(int.from_bytes(s, "big") ^ int.from_bytes(g, "big")).count("1")
        assert 1 <= flipped <= 3


def test_empty_frames_cannot_be_corrupted_and_are_not_counted():
    f, b = through(corrupt=1.0)
    f.transmit([b""])
    assert b.receive(2) == [b""]
    assert f.stats()["fault_corrupted"] == 0


def test_reorder_changes_the_order_but_loses_nothing():
    clock = FakeClock()
    f, b = through(seed=9, reorder=0.2, clock=clock)
    f.transmit(numbered(1000))
    clock.t += 1  # past reorder_hold: a frame held at the end leaves too
    f.flush()
    got = [number(x) for x in b.receive(10_000)]
    assert sorted(got) == list(range(1000))
    assert got != list(range(1000))
    assert f.stats()["fault_reordered"] > 100 and f.stats()["fault_held"] == 0


def test_a_held_frame_leaves_after_the_next_frame():
    f, b = through(seed=0, reorder=1.0, clock=FakeClock())
    f.reorder = 0.0
    f.transmit(numbered(1))
    f.reorder = 1.0
    # Every frame is held; nothing follows, so nothing leaves yet.
    f.transmit(numbered(3)[1:2])
    assert b.receive(10) == numbered(1)
    assert f.stats()["fault_held"] == 1
    f.reorder = 0.0
    f.transmit(numbered(3)[2:])
    assert [number(x) for x in b.receive(10)] == [2, 1]


def test_delay_holds_frames_until_due():
    clock = FakeClock()
    f, b = through(delay=0.5, clock=clock)
    f.transmit(numbered(3))
    assert b.receive(10) == []
    assert f.stats()["fault_pending"] == 3
    clock.t += 0.25
    f.flush()
    assert b.receive(10) == []
    f.transmit(numbered(5)[3:])
    clock.t += 0.25
    f.receive(10)  # any entry point sends what is due
    assert [number(x) for x in b.receive(10)] == [0, 1, 2]
    clock.t += 0.25
    f.flush()
    assert [number(x) for x in b.receive(10)] == [3, 4]
    assert f.stats()["fault_delayed"] == 5 and f.stats()["fault_pending"] == 0


def test_rate_limit_paces_frames_and_drops_when_its_queue_is_full():
    clock = FakeClock()
    # 8000 bits/s = 1000 bytes/s; 100-byte frames take 0.1 s each; room for 3 waiting.
    f, b = through(rate=8000, rate_queue_bytes=300, clock=clock)
    assert f.transmit(numbered(5, size=100)) == 3
    s = f.stats()
    assert s["rate_dropped"] == 2 and s["rate_queued"] == 2
    assert b.receive(10) == []
    clock.t += 0.1
    f.flush()
    assert [number(x) for x in b.receive(10)] == [0]
    clock.t += 0.2
    f.flush()
    assert [number(x) for x in b.receive(10)] == [1, 2]


def test_rate_limit_throughput_matches_the_rate():
    clock = FakeClock()
    f, b = through(rate=1e6, rate_queue_bytes=10**9, clock=clock)
    f.transmit(numbered(1000, size=125))  # 1000 bits each: 1 ms per frame
    clock.t += 0.5
    f.flush()
    assert len(b.receive(10_000)) == 500


def test_going_down_drops_waiting_frames_and_counts_them():
    clock = FakeClock()
    f, b = through(delay=1.0, clock=clock)
    f.transmit(numbered(4))
    f.down()
    assert not f.is_up
    assert f.stats()["fault_dropped_down"] == 4
    assert f.transmit(numbered(2)) == 0
    assert f.stats()["tx_dropped_down"] == 2
    f.up()
    clock.t += 2
    f.flush()
    assert b.receive(10) == []


def test_received_frames_pass_untouched_and_zero_copy_into_the_pool():
    link = LinkPair()
    f = FaultInjector(link.a, loss=1.0)
    link.b.transmit(numbered(5))
    pool = BufferPool(8)
    handles, lengths = np.zeros(8, np.uint64), np.zeros(8, np.uint32)
    assert f.receive_into(pool, handles, lengths) == 5
    assert [bytes(pool.data[h, :n]) for h, n in zip(handles[:5], lengths[:5])] == numbered(5)


def test_wait_sends_delayed_frames_when_due():
    link = LinkPair()
    f = FaultInjector(link.a, delay=0.02)
    f.transmit(numbered(1))
    # The peer answers from another thread once the delayed frame reaches it.
    echo = threading.Thread(target=lambda: link.b.wait(30) and link.b.transmit(link.b.receive(1)))
    echo.start()
    assert f.wait(30) is True
    echo.join(30)
    assert f.receive(1) == numbered(1)


def test_wait_times_out_with_nothing_pending():
    f, _ = through()
    assert f.wait(0.01) is False
