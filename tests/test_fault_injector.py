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


# -- the receive side -------------------------------------------------------------

def received_through(seed=0, **impair):
    """A FaultInjector on end a of a LinkPair, impairing what a receives; end b sends."""
    link = LinkPair(rx_ring_size=1 << 20)
    return FaultInjector(link.a, seed=seed, **impair), link.b


@pytest.mark.parametrize("bad", [dict(rx_loss=-0.1), dict(rx_duplicate=1.5), dict(rx_corrupt=2),
                                 dict(rx_reorder=-1), dict(reorder_hold=-1)])
def test_bad_receive_parameters_are_refused(bad):
    with pytest.raises(ValueError):
        FaultInjector(LinkPair().a, **bad)


@pytest.mark.parametrize("name", ["loss", "rx_loss", "rx_reorder", "rx_duplicate", "rx_corrupt"])
def test_a_probability_changed_later_is_checked_too(name):
    f = FaultInjector(LinkPair().a)
    setattr(f, name, 0.5)
    assert getattr(f, name) == 0.5
    with pytest.raises(ValueError):
        setattr(f, name, 1.5)
    assert getattr(f, name) == 0.5


def test_receive_loss_rate_is_near_the_setting_and_counted_apart_from_transmit():
    f, b = received_through(seed=3, rx_loss=0.1)
    b.transmit(numbered(10_000))
    got = f.receive(20_000)
    s = f.stats()
    assert 800 <= s["fault_rx_lost"] <= 1200
    assert len(got) == 10_000 - s["fault_rx_lost"]
    nums = [number(x) for x in got]
    assert nums == sorted(nums)
    # Transmit is not impaired by receive settings.
    f.transmit(numbered(100))
    assert len(b.receive(1000)) == 100 and s["fault_lost"] == 0


def test_one_wrapper_impairs_both_directions_with_separate_counters():
    f, b = received_through(seed=8, loss=0.2, rx_loss=0.3)
    f.transmit(numbered(2000))
    b.transmit(numbered(2000))
    sent_through = b.receive(10_000)
    received = f.receive(10_000)
    s = f.stats()
    assert len(sent_through) == 2000 - s["fault_lost"]
    assert len(received) == 2000 - s["fault_rx_lost"]
    assert 300 <= s["fault_lost"] <= 500 and 500 <= s["fault_rx_lost"] <= 700


def test_receive_pattern_is_reproducible_and_independent_of_transmit_traffic():
    runs = []
    for sent in (0, 0, 777):
        f, b = received_through(seed=42, loss=0.5, rx_loss=0.3, rx_corrupt=0.1)
        if sent:
            f.transmit(numbered(sent))  # draws from the transmit generators only
        b.transmit(numbered(500))
        runs.append(f.receive(1000))
    assert runs[0] == runs[1] == runs[2]
    f, b = received_through(seed=43, rx_loss=0.3, rx_corrupt=0.1)
    b.transmit(numbered(500))
    assert f.receive(1000) != runs[0]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 20), min_size=1, max_size=10), st.integers(0, 2**32))
def test_receive_output_does_not_depend_on_how_frames_are_taken(takes, seed):
    impair = dict(rx_loss=0.2, rx_duplicate=0.2, rx_corrupt=0.2)
    frames = numbered(sum(takes), size=16)
    f1, b1 = received_through(seed, **impair)
    b1.transmit(frames)
    whole = f1.receive(1000)
    f2, b2 = received_through(seed, **impair)
    b2.transmit(frames)
    pieces = []
    for k in takes:
        pieces += f2.receive(k)
    pieces += f2.receive(1000)  # duplicates that did not fit the last take
    assert pieces == whole


def test_receive_duplicates_corruption_and_reordering_are_counted():
    clock = FakeClock()
    f, b = received_through(seed=11, rx_duplicate=0.1, rx_corrupt=0.1, rx_reorder=0.1, clock=clock)
    sent = numbered(3000)
    b.transmit(sent)
    got = f.receive(10_000)
    clock.t += 1  # past reorder_hold: a frame held at the end is released too
    got += f.receive(10_000)
    s = f.stats()
    assert 200 < s["fault_rx_duplicated"] < 400
    assert 200 < s["fault_rx_corrupted"] < 400
    assert 200 < s["fault_rx_reordered"] < 400
    assert len(got) == 3000 + s["fault_rx_duplicated"]
    assert s["fault_rx_held"] == 0 and s["fault_rx_queued"] == 0
    intact = [number(x) for x in got if x in set(sent)]
    assert intact != sorted(intact)  # reordered
    assert sum(1 for x in got if x not in set(sent)) >= s["fault_rx_corrupted"]


def test_a_duplicate_beyond_the_take_waits_for_the_next_one():
    f, b = received_through(rx_duplicate=1.0)
    b.transmit(numbered(3))
    assert [number(x) for x in f.receive(3)] == [0, 0, 1]
    assert f.stats()["fault_rx_queued"] == 3
    assert [number(x) for x in f.receive(10)] == [1, 2, 2]


def test_a_held_received_frame_is_released_after_reorder_hold():
    clock = FakeClock()
    f, b = received_through(rx_reorder=1.0, clock=clock)
    b.transmit(numbered(2))
    assert f.receive(10) == []  # both held: nothing followed them
    assert f.stats()["fault_rx_held"] == 2
    clock.t += 0.005  # half of reorder_hold
    assert f.receive(10) == []
    clock.t += 0.01
    f.flush()
    assert [number(x) for x in f.receive(10)] == [0, 1]


def test_wait_wakes_for_a_held_received_frame():
    f, b = received_through(rx_reorder=1.0, reorder_hold=0.02)
    b.transmit(numbered(1))
    assert f.receive(10) == []  # taken off the ring and held
    assert f.wait(30) is True
    assert [number(x) for x in f.receive(10)] == [0]
    assert f.wait(0.01) is False


def test_impaired_receive_into_fills_the_pool():
    f, b = received_through(seed=2, rx_loss=0.5, rx_duplicate=0.2)
    b.transmit(numbered(64, size=100))
    pool = BufferPool(256)
    handles, lengths = np.zeros(256, np.uint64), np.zeros(256, np.uint32)
    n = f.receive_into(pool, handles, lengths)
    s = f.stats()
    assert n == 64 - s["fault_rx_lost"] + s["fault_rx_duplicated"]
    got = [bytes(pool.data[h, :k]) for h, k in zip(handles[:n], lengths[:n])]
    assert set(got) <= set(numbered(64, size=100))
    assert pool.available == 256 - n


def test_impaired_receive_into_counts_frames_finding_no_buffer_or_too_long():
    f, b = received_through(rx_duplicate=1.0)
    b.transmit([bytes(100), bytes(40), bytes(40)])  # six frames once duplicated
    pool = BufferPool(3, size=64)
    handles, lengths = np.zeros(8, np.uint64), np.zeros(8, np.uint32)
    assert f.receive_into(pool, handles, lengths) == 3
    s = f.stats()
    assert s["fault_rx_oversize"] == 2 and s["fault_rx_no_buffer"] == 1


def test_going_down_drops_held_and_queued_received_frames_and_counts_them():
    clock = FakeClock()
    f, b = received_through(rx_reorder=1.0, clock=clock)
    b.transmit(numbered(3))
    f.receive(10)
    f.down()
    assert f.stats()["fault_dropped_down"] == 3 and f.stats()["fault_rx_held"] == 0
    f.up()
    clock.t += 1
    assert f.receive(10) == []


def ones_complement_sum(data: bytes) -> int:
    """RFC 1071 sum of 16-bit big-endian words (an independent reference)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=200), st.integers(0, 2**32))
def test_corruption_in_one_word_is_always_caught_by_the_internet_checksum(frame, seed):
    import random
    from fastproto.phy.fault_injector import flip_bits
    bad = flip_bits(frame, random.Random(seed), in_word=True)
    diff = [i for i in range(len(frame)) if frame[i] != bad[i]]
    assert diff and diff[-1] - diff[0] <= 1 and diff[0] // 2 == diff[-1] // 2
    assert 1 <= sum(bin(a ^ b).count("1") for a, b in zip(frame, bad)) <= 3
    # A nonzero sum stays nonzero: both sums are the same value only if nothing changed
    # (0x0000 and 0xFFFF, the two zeros, cannot both come from one frame and a 1-3 bit change).
    assert ones_complement_sum(bad) != ones_complement_sum(frame)


def test_corruption_anywhere_sometimes_escapes_the_internet_checksum():
    # Why corrupt_in_word exists: two flips of one bit position, 0->1 in one word
    # and 1->0 in another, leave the one's complement sum as it was.
    import random
    from fastproto.phy.fault_injector import flip_bits
    frame = random.Random(0).randbytes(64)
    escaped = 0
    for seed in range(3000):
        bad = flip_bits(frame, random.Random(seed))
        if bad != frame and ones_complement_sum(bad) == ones_complement_sum(frame):
            escaped += 1
    assert escaped > 0


def test_corrupt_in_word_applies_to_both_directions():
    link = LinkPair()
    f = FaultInjector(link.a, seed=4, corrupt=1.0, rx_corrupt=1.0, corrupt_in_word=True)
    sent = numbered(100, size=64)
    f.transmit(sent)
    link.b.transmit(sent)
    for got in (link.b.receive(200), f.receive(200)):
        assert len(got) == 100
        for s, g in zip(sent, got):
            diff = [i for i in range(len(s)) if s[i] != g[i]]
            assert diff and diff[0] // 2 == diff[-1] // 2
    assert f.stats()["fault_corrupted"] == 100 and f.stats()["fault_rx_corrupted"] == 100
