"""one_cpu: the calling thread and the threads it starts run on one CPU
without wake-up preemption, and the caller's setting comes back on exit."""
import os
import threading

import pytest

from fastproto.sched import one_cpu


def _setting():
    return os.sched_getaffinity(0), os.sched_getscheduler(0)


def test_inside_one_cpu_under_sched_batch_and_restored_after():
    before = _setting()
    with one_cpu() as cpu:
        assert _setting() == ({cpu}, os.SCHED_BATCH)
    assert _setting() == before


def test_threads_started_inside_inherit_the_setting():
    seen = []
    with one_cpu() as cpu:
        t = threading.Thread(target=lambda: seen.append(_setting()))
        t.start()
        t.join()
    assert seen == [({cpu}, os.SCHED_BATCH)]


def test_without_batch_only_the_cpu_changes():
    policy = os.sched_getscheduler(0)
    with one_cpu(batch=False) as cpu:
        assert _setting() == ({cpu}, policy)


def test_restored_when_the_body_raises():
    before = _setting()
    with pytest.raises(RuntimeError):
        with one_cpu():
            raise RuntimeError("body failed")
    assert _setting() == before


def test_a_cpu_the_thread_may_not_use_is_refused():
    before = _setting()
    with pytest.raises(ValueError):
        with one_cpu(max(os.sched_getaffinity(0)) + 1):
            pass
    assert _setting() == before
