"""Continuations: scheduling, delay, no double runs, cancel, workers and inline drain."""
import threading
import time

import pytest

from fastproto.sched import Continuation, ContinuationQueue, ManualClock


def make(clock=None):
    q = ContinuationQueue(clock=clock or ManualClock())
    seen = []
    return q, seen, Continuation(seen.append, "x", q)


def test_runs_only_when_due():
    clock = ManualClock()
    q, seen, c = make(clock)
    assert c.schedule(0.1)
    assert q.drain() == 0 and seen == []
    clock.advance(0.1)
    assert q.drain() == 1 and seen == ["x"]
    assert not c.pending


def test_scheduling_a_pending_continuation_does_not_run_it_twice():
    clock = ManualClock()
    q, seen, c = make(clock)
    assert c.schedule(0.05)
    assert not c.schedule(0.05)
    assert not c.schedule(0.2)
    clock.advance(1)
    assert q.drain() == 1
    assert seen == ["x"]
    assert len(q) == 0


def test_rescheduling_earlier_moves_the_due_time():
    clock = ManualClock()
    q, seen, c = make(clock)
    c.schedule(1.0)
    c.schedule(0.1)
    assert q.next_due() == pytest.approx(0.1)
    clock.advance(0.1)
    assert q.drain() == 1 and seen == ["x"]
    clock.advance(1.0)
    assert q.drain() == 0 and seen == ["x"]


def test_cancel_prevents_the_run():
    clock = ManualClock()
    q, seen, c = make(clock)
    c.schedule(0)
    assert c.cancel()
    assert not c.cancel()
    assert q.drain() == 0 and seen == []
    assert q.next_due() is None
    c.schedule(0)
    assert q.drain() == 1 and seen == ["x"]


def test_scheduled_while_running_runs_once_more_afterwards():
    clock = ManualClock()
    q = ContinuationQueue(clock=clock)
    runs = []

    def fn(arg):
        runs.append(arg)
        if len(runs) == 1:
            assert c.schedule(0)
            assert not c.schedule(0)  # still one pending re-run

    c = Continuation(fn, 7, q)
    c.schedule()
    assert q.drain() == 2
    assert runs == [7, 7]


def test_drain_runs_in_due_order():
    clock = ManualClock()
    q = ContinuationQueue(clock=clock)
    order = []
    for name, delay in [("c", 0.3), ("a", 0.1), ("b", 0.2)]:
        Continuation(order.append, name, q).schedule(delay)
    clock.advance(1)
    q.drain()
    assert order == ["a", "b", "c"]


def test_negative_delay_is_rejected():
    q, _, c = make()
    with pytest.raises(ValueError):
        c.schedule(-1)


def test_run_now_runs_a_pending_continuation_early_in_the_caller():
    clock = ManualClock()
    q, seen, c = make(clock)
    assert not q.run_now(c)  # not pending
    c.schedule(10)
    assert q.run_now(c)
    assert seen == ["x"] and q.inline_runs == 1
    clock.advance(20)
    assert q.drain() == 0


def test_workers_run_due_continuations_and_never_concurrently_with_themselves():
    q = ContinuationQueue(workers=2)
    active = 0
    overlap = []
    lock = threading.Lock()
    done = threading.Event()
    count = [0]

    def fn(_):
        nonlocal active
        with lock:
            active += 1
            overlap.append(active)
        time.sleep(0.001)
        with lock:
            active -= 1
            count[0] += 1
            if count[0] >= 20:
                done.set()

    c = Continuation(fn, None, q)
    try:
        deadline = time.monotonic() + 10
        while not done.is_set() and time.monotonic() < deadline:
            c.schedule(0)
            time.sleep(0.0005)
        assert done.is_set()
    finally:
        q.stop()
    assert max(overlap) == 1
    assert q.worker_runs >= 20


def test_a_failing_continuation_does_not_kill_the_worker():
    q = ContinuationQueue(workers=1)
    ok = threading.Event()
    try:
        Continuation(lambda _: 1 / 0, None, q).schedule()
        Continuation(lambda _: ok.set(), None, q).schedule(0.01)
        assert ok.wait(5)
    finally:
        q.stop()
    assert q.errors == 1 and isinstance(q.last_error, ZeroDivisionError)


def test_stop_leaves_pending_work_pending():
    q = ContinuationQueue(workers=1)
    q.stop()
    seen = []
    c = Continuation(seen.append, 1, q)
    c.schedule(0)
    time.sleep(0.01)
    assert seen == [] and c.pending
    assert q.drain() == 1 and seen == [1]
