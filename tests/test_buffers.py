"""BufferPool and Batch: fixed-size packet buffers in one NumPy array."""
import threading

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from fastproto._core import _stress
from fastproto._core.buffers import Batch, BufferPool


# --- construction -----------------------------------------------------------

def test_data_is_one_2d_uint8_array():
    pool = BufferPool(8, 128)
    assert pool.count == 8 and pool.size == 128
    assert pool.data.shape == (8, 128) and pool.data.dtype == np.uint8
    assert pool.data.flags.c_contiguous
    assert pool.data.ctypes.data % 64 == 0
    assert pool.available == 8


def test_absurd_size_raises_memory_error():
    with pytest.raises(MemoryError):
        BufferPool(2**31, 2**40)


def test_default_size_is_2048():
    assert BufferPool(2).size == 2048


@pytest.mark.parametrize("count,size", [(0, 16), (-1, 16), (4, 0), (4, -5)])
def test_bad_dimensions_raise(count, size):
    with pytest.raises(ValueError):
        BufferPool(count, size)


# --- alloc / free -----------------------------------------------------------

def test_alloc_all_then_none():
    pool = BufferPool(5, 16)
    handles = [pool.alloc() for _ in range(5)]
    assert sorted(handles) == [0, 1, 2, 3, 4]
    assert pool.alloc() is None
    assert pool.available == 0


def test_free_then_realloc():
    pool = BufferPool(3, 16)
    hs = [pool.alloc() for _ in range(3)]
    pool.free(hs[1])
    assert pool.available == 1
    assert pool.alloc() == hs[1]
    assert pool.alloc() is None


def test_the_buffers_freed_last_are_handed_out_first():
    # (a batch's buffers come back for the next batch while still in cache)
    pool = BufferPool(64, 16)
    first = pool.alloc_many(8).tolist()
    pool.free_many(first)
    assert pool.alloc_many(8).tolist() == first
    h = pool.alloc()
    pool.free(h)
    assert pool.alloc() == h
    assert pool.available == 64 - 9


def test_double_free_raises_and_pool_stays_intact():
    pool = BufferPool(4, 16)
    h = pool.alloc()
    pool.free(h)
    with pytest.raises(ValueError, match="not allocated"):
        pool.free(h)
    assert pool.available == 4
    assert sorted(pool.alloc() for _ in range(4)) == [0, 1, 2, 3]
    assert pool.alloc() is None


def test_free_of_never_allocated_raises():
    pool = BufferPool(4, 16)
    with pytest.raises(ValueError, match="not allocated"):
        pool.free(2)
    assert pool.available == 4


@pytest.mark.parametrize("bad", [4, 100, 2**64 - 1, -1])
def test_free_out_of_range_raises(bad):
    pool = BufferPool(4, 16)
    pool.alloc()
    with pytest.raises(ValueError):
        pool.free(bad)
    assert pool.available == 3


@pytest.mark.parametrize("bad", [1.0, "1", None])
def test_free_wrong_type_raises(bad):
    pool = BufferPool(4, 16)
    pool.alloc()
    with pytest.raises(TypeError):
        pool.free(bad)


def test_is_allocated_follows_alloc_and_free():
    pool = BufferPool(2, 16)
    h = pool.alloc()
    assert pool.is_allocated(h)
    assert not pool.is_allocated(1 - h)
    assert not pool.is_allocated(7)
    pool.free(h)
    assert not pool.is_allocated(h)


def test_alloc_many_unique_and_shorter_when_short():
    pool = BufferPool(10, 16)
    a = pool.alloc_many(4)
    b = pool.alloc_many(100)
    assert a.dtype == np.uint64 and b.dtype == np.uint64
    assert len(a) == 4 and len(b) == 6
    assert sorted(a.tolist() + b.tolist()) == list(range(10))
    assert pool.alloc_many(3).tolist() == []
    with pytest.raises(ValueError):
        pool.alloc_many(-1)


def test_free_many_returns_all():
    pool = BufferPool(6, 16)
    hs = pool.alloc_many(6)
    pool.free_many(hs)
    assert pool.available == 6
    pool.free_many([])


def test_free_many_is_all_or_nothing():
    pool = BufferPool(6, 16)
    hs = pool.alloc_many(4)
    pool.free(int(hs[2]))
    with pytest.raises(ValueError, match=f"buffer {int(hs[2])} is not allocated"):
        pool.free_many(hs)                      # hs[2] is a double free
    assert pool.available == 3                  # nothing else was freed
    assert all(pool.is_allocated(int(h)) for h in hs[[0, 1, 3]])
    with pytest.raises(ValueError, match="out of range"):
        pool.free_many([int(hs[0]), 6])
    with pytest.raises(ValueError, match="not allocated"):
        pool.free_many([int(hs[0]), int(hs[0])])  # the same handle twice
    assert pool.is_allocated(int(hs[0]))
    pool.free_many(hs[[0, 1, 3]])
    assert pool.available == 6


def test_free_many_negative_raises():
    pool = BufferPool(2, 16)
    pool.alloc_many(2)
    with pytest.raises(OverflowError):
        pool.free_many([0, -1])
    assert pool.available == 0


# --- views ------------------------------------------------------------------

def test_view_is_zero_copy_and_writable():
    pool = BufferPool(4, 32)
    h = pool.alloc()
    v = pool.view(h, 10)
    assert isinstance(v, memoryview) and len(v) == 10 and not v.readonly
    v[:3] = b"abc"
    assert bytes(pool.data[h, :3]) == b"abc"
    pool.data[h, 3] = 0x7A
    assert v[3] == 0x7A


def test_view_default_is_whole_buffer():
    pool = BufferPool(2, 64)
    assert len(pool.view(pool.alloc())) == 64


def test_view_keeps_memory_alive_after_pool_is_gone():
    pool = BufferPool(2, 16)
    h = pool.alloc()
    v = pool.view(h, 4)
    v[:] = b"live"
    del pool
    assert bytes(v) == b"live"


@pytest.mark.parametrize("length", [-1, 33])
def test_view_bad_length_raises(length):
    pool = BufferPool(2, 32)
    with pytest.raises(ValueError):
        pool.view(pool.alloc(), length)


def test_view_of_free_or_out_of_range_buffer_raises():
    pool = BufferPool(2, 32)
    with pytest.raises(ValueError, match="not allocated"):
        pool.view(0, 4)
    with pytest.raises(ValueError, match="out of range"):
        pool.view(2, 4)


# --- batches ----------------------------------------------------------------

def test_batch_from_frames_copies_each_frame():
    pool = BufferPool(8, 64)
    frames = [b"\x01\x02", b"", bytes(range(64)), bytearray(b"xyz"), memoryview(b"mv")]
    batch = pool.batch_from_frames(frames)
    assert batch.count == len(batch) == 5
    assert batch.handles.dtype == np.uint64 and batch.lengths.dtype == np.uint32
    assert batch.lengths.tolist() == [2, 0, 64, 3, 2]
    assert len(set(batch.handles.tolist())) == 5
    assert batch.frames() == [bytes(f) for f in frames]
    for h, n, f in zip(batch.handles, batch.lengths, frames):
        assert bytes(pool.data[h, :n]) == bytes(f)
    assert pool.available == 3
    batch.free()
    assert pool.available == 8 and batch.count == 0


def test_batch_from_frames_too_long_raises_and_allocates_nothing():
    pool = BufferPool(4, 8)
    with pytest.raises(ValueError, match="longer"):
        pool.batch_from_frames([b"ok", b"123456789"])
    assert pool.available == 4


def test_batch_from_frames_pool_exhausted_raises_and_allocates_nothing():
    pool = BufferPool(2, 8)
    with pytest.raises(BufferError, match="exhausted"):
        pool.batch_from_frames([b"a", b"b", b"c"])
    assert pool.available == 2


def test_batch_append_and_limits():
    pool = BufferPool(4, 16)
    batch = Batch(pool, 2)
    h0, h1, h2 = pool.alloc(), pool.alloc(), pool.alloc()
    batch.append(h0, 5)
    batch.append(h1, 16)
    with pytest.raises(IndexError):
        batch.append(h2, 1)
    assert batch.handles.tolist() == [h0, h1] and batch.lengths.tolist() == [5, 16]
    with pytest.raises(ValueError):
        Batch(pool, 4).append(h2, 17)
    with pytest.raises(ValueError, match="not allocated"):
        Batch(pool, 4).append(3, 1)
    with pytest.raises(ValueError):
        Batch(pool, 0)
    with pytest.raises(TypeError):
        Batch(None, 4)
    batch.clear()
    assert len(batch) == 0 and pool.is_allocated(h0)


def test_batch_free_of_freed_buffers_raises():
    pool = BufferPool(4, 16)
    batch = pool.batch_from_frames([b"a", b"b"])
    pool.free(int(batch.handles[1]))
    with pytest.raises(ValueError, match="not allocated"):
        batch.free()
    assert batch.count == 2 and pool.available == 3


def test_batch_rows_index_the_pool_data():
    """What the parser takes: (frames2d, handles, lengths)."""
    pool = BufferPool(16, 32)
    frames = [bytes([i]) * (i + 1) for i in range(10)]
    b = pool.batch_from_frames(frames)
    rows = pool.data[b.handles]
    assert [bytes(r[:n]) for r, n in zip(rows, b.lengths)] == frames


# --- model-based ------------------------------------------------------------

class PoolAgainstSet(RuleBasedStateMachine):
    """alloc/free/alloc_many/free_many on one thread keep the pool's books exact."""

    def __init__(self):
        super().__init__()
        self.pool = BufferPool(6, 8)
        self.held = set()

    @rule()
    def alloc(self):
        h = self.pool.alloc()
        if len(self.held) == 6:
            assert h is None
        else:
            assert h not in self.held and 0 <= h < 6
            self.held.add(h)

    @rule(n=st.integers(0, 8))
    def alloc_many(self, n):
        hs = self.pool.alloc_many(n).tolist()
        assert len(hs) == min(n, 6 - len(self.held))
        assert not set(hs) & self.held and len(set(hs)) == len(hs)
        self.held.update(hs)

    @rule(h=st.integers(0, 7))
    def free(self, h):
        if h in self.held:
            self.pool.free(h)
            self.held.remove(h)
        else:
            with pytest.raises(ValueError):
                self.pool.free(h)

    @rule(hs=st.lists(st.integers(0, 6), max_size=5))
    def free_many(self, hs):
        if set(hs) <= self.held and len(set(hs)) == len(hs):
            self.pool.free_many(hs)
            self.held.difference_update(hs)
        else:
            with pytest.raises(ValueError):
                self.pool.free_many(hs)

    @invariant()
    def books_balance(self):
        assert self.pool.available == 6 - len(self.held)
        assert all(self.pool.is_allocated(h) == (h in self.held) for h in range(6))


PoolAgainstSet.TestCase.settings = settings(max_examples=60, stateful_step_count=50, deadline=None)
TestPoolAgainstSet = PoolAgainstSet.TestCase


# --- concurrency, without the GIL -------------------------------------------

@pytest.mark.parametrize("count", [3, 64])
def test_threads_never_share_a_buffer(count):
    """Four threads alloc/free concurrently without the GIL: no buffer is ever handed out twice."""
    pool = BufferPool(count, 64)
    owner = np.zeros(count, dtype=np.uint32)
    errors = [None] * 4
    rounds = 200_000
    start = threading.Barrier(4)

    def work(w):
        start.wait()
        errors[w] = _stress.bufpool_churn(pool, w, rounds, [1, 1, 5, 16][w], owner)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [0, 0, 0, 0]
    assert pool.available == count
    assert not owner.any()
    assert sorted(pool.alloc_many(count).tolist()) == list(range(count))


def test_churn_detects_a_buffer_held_by_someone_else():
    """The ownership check the concurrency test relies on does see a conflict."""
    pool = BufferPool(2, 64)
    owner = np.full(2, 99, dtype=np.uint32)     # as if another worker held both
    assert _stress.bufpool_churn(pool, 0, 3, 1, owner) == 3
    assert pool.available == 2
