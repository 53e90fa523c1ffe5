"""PCQ: the bounded many-producer/one-consumer queue of uint64 items."""
import collections
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from fastproto._core import _stress
from fastproto._core.pcq import PCQ

U64_MAX = 2**64 - 1


# --- construction -----------------------------------------------------------

@pytest.mark.parametrize("maxlen", [1, 2, 3, 7, 8, 1000, 1024])
def test_maxlen_any_positive(maxlen):
    q = PCQ(maxlen)
    assert q.maxlen == maxlen
    assert len(q) == 0


@pytest.mark.parametrize("maxlen", [0, -1, -(2**40)])
def test_maxlen_below_one_raises(maxlen):
    with pytest.raises(ValueError, match="maxlen"):
        PCQ(maxlen)


def test_maxlen_too_large_raises():
    with pytest.raises(ValueError, match="maxlen"):
        PCQ(2**41)


@pytest.mark.parametrize("maxlen", [1.5, "8", None])
def test_maxlen_not_int_raises(maxlen):
    with pytest.raises(TypeError):
        PCQ(maxlen)


# --- single put/get ---------------------------------------------------------

def test_get_on_empty_is_none():
    q = PCQ(4)
    assert q.get() is None
    assert q.peek() is None


def test_fifo_order():
    q = PCQ(5)
    for i in (10, 20, 30):
        assert q.put(i) is True
    assert [q.get(), q.get(), q.get(), q.get()] == [10, 20, 30, None]


def test_put_on_full_is_false_and_changes_nothing():
    q = PCQ(3)
    for i in range(3):
        assert q.put(i)
    assert q.put(99) is False
    assert len(q) == 3
    assert q.rejected == 1
    assert [q.get() for _ in range(4)] == [0, 1, 2, None]


def test_full_then_one_get_makes_room_for_one():
    q = PCQ(2)
    q.put(1)
    q.put(2)
    assert not q.put(3)
    assert q.get() == 1
    assert q.put(3)
    assert not q.put(4)
    assert [q.get(), q.get()] == [2, 3]


def test_maxlen_one():
    q = PCQ(1)
    assert q.put(7)
    assert not q.put(8)
    assert q.peek() == 7
    assert q.get() == 7
    assert q.get() is None
    for i in range(100):
        assert q.put(i)
        assert not q.put(i + 1000)
        assert q.get() == i
    assert q.rejected == 101


def test_peek_does_not_consume():
    q = PCQ(4)
    q.put(5)
    q.put(6)
    assert q.peek() == 5
    assert q.peek() == 5
    assert len(q) == 2
    assert q.get() == 5
    assert q.peek() == 6


@pytest.mark.parametrize("item", [0, 1, 255, 256, 2**32, 2**63, U64_MAX])
def test_every_uint64_value_round_trips(item):
    q = PCQ(2)
    assert q.put(item)
    assert q.peek() == item
    assert q.get() == item


@pytest.mark.parametrize("maxlen", [1, 3, 7, 16])
def test_wraps_around_over_many_laps(maxlen):
    q = PCQ(maxlen)
    model = collections.deque()
    n = 0
    for lap in range(300):
        # fill to the brim, then drain part of it, so the ring position drifts
        while q.put(n):
            model.append(n)
            n += 1
        assert len(q) == maxlen
        for _ in range(1 + lap % maxlen):
            assert q.get() == model.popleft()
    while model:
        assert q.get() == model.popleft()
    assert q.get() is None


@pytest.mark.parametrize("bad", [-1, -(2**63), 2**64, 2**100])
def test_put_out_of_range_raises(bad):
    q = PCQ(4)
    with pytest.raises(OverflowError):
        q.put(bad)
    assert len(q) == 0


@pytest.mark.parametrize("bad", [1.0, "1", None, b"\x01", [1]])
def test_put_wrong_type_raises(bad):
    q = PCQ(4)
    with pytest.raises(TypeError):
        q.put(bad)
    assert len(q) == 0


def test_put_accepts_index_types():
    q = PCQ(4)
    assert q.put(np.uint64(U64_MAX))
    assert q.put(np.int32(5))
    assert q.put(True)
    assert [q.get(), q.get(), q.get()] == [U64_MAX, 5, 1]


def test_put_numpy_negative_raises():
    q = PCQ(4)
    with pytest.raises(OverflowError):
        q.put(np.int64(-3))


def test_len_and_repr():
    q = PCQ(10)
    q.put(1)
    q.put(2)
    assert len(q) == 2
    assert bool(q)
    assert "maxlen=10" in repr(q) and "2 items" in repr(q)
    q.get()
    q.get()
    assert not q


# --- batches ----------------------------------------------------------------

def test_put_many_all_accepted():
    q = PCQ(8)
    assert q.put_many(np.arange(5, dtype=np.uint64)) == 5
    assert q.get_many(8).tolist() == [0, 1, 2, 3, 4]


def test_put_many_partially_accepted_when_nearly_full():
    q = PCQ(10)
    for i in range(7):
        q.put(i)
    items = np.arange(100, 110, dtype=np.uint64)
    assert q.put_many(items) == 3
    assert q.rejected == 7
    assert len(q) == 10
    assert q.get_many(20).tolist() == list(range(7)) + [100, 101, 102]


def test_put_many_on_full_accepts_none():
    q = PCQ(2)
    q.put_many([1, 2])
    assert q.put_many(np.array([3, 4], dtype=np.uint64)) == 0
    assert q.get_many(5).tolist() == [1, 2]


def test_put_many_empty():
    q = PCQ(2)
    assert q.put_many(np.zeros(0, dtype=np.uint64)) == 0
    assert q.put_many([]) == 0
    assert len(q) == 0


def test_put_many_wraps_ring_boundary():
    q = PCQ(5)
    q.put_many([1, 2, 3])
    assert q.get_many(3).tolist() == [1, 2, 3]
    assert q.put_many([4, 5, 6, 7, 8, 9]) == 5     # slots 3,4,0,1,2
    assert q.get_many(10).tolist() == [4, 5, 6, 7, 8]


def test_put_many_extreme_values():
    q = PCQ(4)
    vals = np.array([0, U64_MAX, 2**63, 1], dtype=np.uint64)
    assert q.put_many(vals) == 4
    assert q.get_many(4).tolist() == [0, U64_MAX, 2**63, 1]


def test_put_many_accepts_lists_and_other_int_arrays():
    q = PCQ(16)
    assert q.put_many([1, 2, U64_MAX]) == 3
    assert q.put_many(np.array([4, 5], dtype=np.int64)) == 2
    assert q.put_many(np.array([6], dtype=np.uint8)) == 1
    assert q.put_many(np.arange(10, dtype=np.uint64)[::3]) == 4   # strided
    assert q.get_many(16).tolist() == [1, 2, U64_MAX, 4, 5, 6, 0, 3, 6, 9]


@pytest.mark.parametrize("bad", [[1, -1], np.array([3, -2], dtype=np.int64), [2**64]])
def test_put_many_out_of_range_raises(bad):
    q = PCQ(4)
    with pytest.raises(OverflowError):
        q.put_many(bad)
    assert len(q) == 0


@pytest.mark.parametrize("bad", [[1.5], np.array([1.0, 2.0]), ["a"], [None]])
def test_put_many_wrong_type_raises(bad):
    q = PCQ(4)
    with pytest.raises(TypeError):
        q.put_many(bad)
    assert len(q) == 0


def test_put_many_2d_raises():
    q = PCQ(4)
    with pytest.raises(ValueError, match="1-D"):
        q.put_many(np.zeros((2, 2), dtype=np.uint64))


def test_get_many_on_empty_is_empty_uint64_array():
    q = PCQ(4)
    out = q.get_many(10)
    assert out.dtype == np.uint64 and out.shape == (0,)


def test_get_many_shorter_when_fewer_ready():
    q = PCQ(8)
    q.put_many([1, 2, 3])
    out = q.get_many(5)
    assert out.dtype == np.uint64
    assert out.tolist() == [1, 2, 3]
    assert q.get_many(0).tolist() == []


def test_get_many_negative_n_raises():
    with pytest.raises(ValueError):
        PCQ(4).get_many(-1)


def test_get_many_into_out_allocates_no_data():
    q = PCQ(8)
    q.put_many([7, 8, 9])
    out = np.full(6, 42, dtype=np.uint64)
    got = q.get_many(6, out=out)
    assert got.tolist() == [7, 8, 9]
    assert np.shares_memory(got, out)
    assert out.tolist() == [7, 8, 9, 42, 42, 42]


def test_get_many_out_too_small_raises():
    q = PCQ(8)
    q.put(1)
    with pytest.raises(ValueError, match="fewer"):
        q.get_many(4, out=np.zeros(2, dtype=np.uint64))
    assert len(q) == 1


@pytest.mark.parametrize("out", [np.zeros(4, dtype=np.int64), np.zeros(4, dtype=np.float64),
                                 np.zeros((2, 2), dtype=np.uint64), np.zeros(8, dtype=np.uint64)[::2],
                                 [0, 0, 0, 0]])
def test_get_many_bad_out_raises(out):
    q = PCQ(8)
    q.put(1)
    with pytest.raises(TypeError):
        q.get_many(2, out=out)
    with pytest.raises(TypeError):
        q.get_into(out)
    assert len(q) == 1


def test_get_into_read_only_out_raises():
    out = np.zeros(4, dtype=np.uint64)
    out.flags.writeable = False
    q = PCQ(4)
    q.put(1)
    with pytest.raises(TypeError):
        q.get_into(out)
    assert q.get() == 1


def test_get_into_fills_and_counts():
    q = PCQ(8)
    q.put_many([1, 2, 3, 4, 5])
    out = np.zeros(3, dtype=np.uint64)
    assert q.get_into(out) == 3
    assert out.tolist() == [1, 2, 3]
    assert q.get_into(out) == 2
    assert out[:2].tolist() == [4, 5]
    assert q.get_into(out) == 0


# --- model-based ------------------------------------------------------------

items = st.integers(min_value=0, max_value=U64_MAX)


class PCQAgainstDeque(RuleBasedStateMachine):
    """Any sequence of operations on one thread behaves like a bounded deque."""

    def __init__(self):
        super().__init__()
        self.q = None
        self.model = collections.deque()
        self.maxlen = 0

    @precondition(lambda self: self.q is None)
    @rule(maxlen=st.integers(min_value=1, max_value=9))
    def create(self, maxlen):
        self.q = PCQ(maxlen)
        self.maxlen = maxlen

    @precondition(lambda self: self.q is not None)
    @rule(item=items)
    def put(self, item):
        ok = self.q.put(item)
        assert ok == (len(self.model) < self.maxlen)
        if ok:
            self.model.append(item)

    @precondition(lambda self: self.q is not None)
    @rule(batch=st.lists(items, max_size=12))
    def put_many(self, batch):
        k = self.q.put_many(np.array(batch, dtype=np.uint64))
        assert k == min(len(batch), self.maxlen - len(self.model))
        self.model.extend(batch[:k])

    @precondition(lambda self: self.q is not None)
    @rule()
    def get(self):
        want = self.model.popleft() if self.model else None
        assert self.q.get() == want

    @precondition(lambda self: self.q is not None)
    @rule()
    def peek(self):
        assert self.q.peek() == (self.model[0] if self.model else None)

    @precondition(lambda self: self.q is not None)
    @rule(n=st.integers(min_value=0, max_value=12))
    def get_many(self, n):
        want = [self.model.popleft() for _ in range(min(n, len(self.model)))]
        assert self.q.get_many(n).tolist() == want

    @invariant()
    def same_length(self):
        if self.q is not None:
            assert len(self.q) == len(self.model)


PCQAgainstDeque.TestCase.settings = settings(max_examples=60, stateful_step_count=60, deadline=None)
TestPCQAgainstDeque = PCQAgainstDeque.TestCase


@settings(max_examples=40, deadline=None)
@given(maxlen=st.integers(1, 20), ops=st.lists(st.tuples(st.booleans(), st.integers(0, 25)), max_size=40))
def test_batches_match_deque(maxlen, ops):
    q = PCQ(maxlen)
    model = collections.deque()
    n = 0
    for is_put, k in ops:
        if is_put:
            batch = list(range(n, n + k))
            n += k
            got = q.put_many(batch)
            assert got == min(k, maxlen - len(model))
            model.extend(batch[:got])
        else:
            assert q.get_many(k).tolist() == [model.popleft() for _ in range(min(k, len(model)))]


# --- concurrency, without the GIL -------------------------------------------

def _run_producers_consumer(q, counts, batches, consumer_batch):
    result = {}
    start = threading.Barrier(len(counts) + 1)

    def consume():
        start.wait()
        result["r"] = _stress.pcq_consume(q, len(counts), sum(counts), consumer_batch)

    fulls = [0] * len(counts)

    def produce(p):
        start.wait()
        fulls[p] = _stress.pcq_produce(q, p, counts[p], batches[p])

    threads = [threading.Thread(target=consume)]
    threads += [threading.Thread(target=produce, args=(p,)) for p in range(len(counts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return result["r"], fulls


def test_four_producers_one_consumer_ten_million_items():
    """None lost, none duplicated, each producer's items in its order."""
    per = 2_500_000
    q = PCQ(1000)        # not a power of two: the division path, many laps
    (next_seq, disorder, foreign, received), fulls = _run_producers_consumer(
        q, [per] * 4, batches=[1, 1, 16, 64], consumer_batch=32)
    assert received == 4 * per
    assert disorder == 0 and foreign == 0
    assert next_seq.tolist() == [per] * 4
    assert len(q) == 0 and q.get() is None


def test_producers_back_off_on_a_small_queue():
    """A queue far smaller than the burst: producers find it full and yield, nothing is lost."""
    per = 200_000
    q = PCQ(8)
    (next_seq, disorder, foreign, received), fulls = _run_producers_consumer(
        q, [per] * 4, batches=[1, 3, 1, 5], consumer_batch=1)
    assert received == 4 * per and disorder == 0 and foreign == 0
    assert next_seq.tolist() == [per] * 4
    assert sum(fulls) > 0
    assert q.rejected > 0


def test_python_producers_with_nogil_consumer():
    q = PCQ(64)
    per = 20_000
    result = {}
    consumer = threading.Thread(target=lambda: result.setdefault("r", _stress.pcq_consume(q, 2, 2 * per, 8)))
    consumer.start()

    def produce(p):
        base = p << _stress.SEQ_BITS
        i = 0
        while i < per:
            if q.put(base | i):
                i += 1

    producers = [threading.Thread(target=produce, args=(p,)) for p in range(2)]
    for t in producers:
        t.start()
    for t in producers:
        t.join()
    consumer.join()
    next_seq, disorder, foreign, received = result["r"]
    assert (received, disorder, foreign) == (2 * per, 0, 0)
    assert next_seq.tolist() == [per, per]


@pytest.mark.parametrize("batch", [1, 256])
def test_transfer_between_native_threads_is_exact(batch):
    n = 500_000
    assert _stress.pcq_transfer(PCQ(100), n, batch) == n * (n - 1) // 2
