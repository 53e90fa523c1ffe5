"""Serializer: the per-interface, non-recursive lock for the rx path and driver entry points."""
import threading
import time

import numpy as np
import pytest

from fastproto._core import _stress
from fastproto._core.serializer import Serializer, requires_serializer, serialized


def in_thread(fn):
    """Run fn in another thread; its result (or exception) here."""
    out = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as e:  # handed back to the caller
            out["error"] = e

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


class Holder:
    """Keeps a serializer entered in another thread until released."""

    def __init__(self, ser):
        self.ser = ser
        self.entered = threading.Event()
        self.release = threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _run(self):
        with self.ser:
            self.entered.set()
            self.release.wait()

    def __enter__(self):
        self.thread.start()
        self.entered.wait()
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.thread.join()


# --- ownership --------------------------------------------------------------

def test_enter_exit_and_held_by_owner_only():
    ser = Serializer("eth0")
    assert not ser.held() and not ser.locked
    ser.enter()
    assert ser.held() and ser.locked
    assert in_thread(ser.held) is False
    ser.exit()
    assert not ser.held() and not ser.locked


def test_context_manager():
    ser = Serializer()
    with ser as s:
        assert s is ser
        assert ser.held()
    assert not ser.held()


def test_context_manager_releases_on_exception():
    ser = Serializer()
    with pytest.raises(KeyError):
        with ser:
            raise KeyError("boom")
    assert not ser.locked
    assert in_thread(lambda: (ser.try_enter(), ser.exit())[0]) is True


def test_assert_held_names_the_serializer():
    ser = Serializer("em0")
    with pytest.raises(AssertionError, match="serializer 'em0' is not held"):
        ser.assert_held()
    with ser:
        ser.assert_held()
        with pytest.raises(AssertionError, match="em0"):
            in_thread(ser.assert_held)


def test_recursive_enter_raises_instead_of_deadlocking():
    ser = Serializer("lo0")
    with ser:
        with pytest.raises(RuntimeError, match="already held"):
            ser.enter()
        with pytest.raises(RuntimeError, match="already held"):
            ser.try_enter()
        with pytest.raises(RuntimeError, match="lo0"):
            with ser:
                pass
        assert ser.held()
    assert not ser.locked


def test_exit_when_not_held_raises():
    ser = Serializer("wm0")
    with pytest.raises(RuntimeError, match="not held"):
        ser.exit()


def test_exit_by_non_owner_raises_and_keeps_it_held():
    ser = Serializer()
    with ser:
        with pytest.raises(RuntimeError, match="not held"):
            in_thread(ser.exit)
        assert ser.held() and ser.locked
    assert not ser.locked


def test_try_enter_fails_when_held_elsewhere():
    ser = Serializer()
    with Holder(ser):
        assert ser.try_enter() is False
        assert not ser.held()
    assert ser.try_enter() is True
    ser.exit()


def test_enter_waits_for_the_holder():
    ser = Serializer()
    order = []
    with Holder(ser) as h:
        waiter = threading.Thread(target=lambda: (ser.enter(), order.append("waiter"), ser.exit()))
        waiter.start()
        order.append("holder")
        h.release.set()
        waiter.join()
    assert order == ["holder", "waiter"]
    assert not ser.locked


def test_name_and_repr():
    ser = Serializer("ix0")
    assert ser.name == "ix0"
    assert "ix0" in repr(ser) and "free" in repr(ser)
    with ser:
        assert "held" in repr(ser)
    assert Serializer().name == ""
    with pytest.raises(TypeError):
        Serializer(5)


# --- mutual exclusion, without the GIL --------------------------------------

@pytest.mark.parametrize("use_try", [False, True])
def test_nogil_threads_are_mutually_excluded(use_try):
    """A non-atomic counter bumped under the serializer by 4 native threads stays exact."""
    ser = Serializer("rx")
    counter = np.zeros(1, dtype=np.uint64)
    n = 100_000
    start = threading.Barrier(4)

    def work():
        start.wait()
        _stress.serializer_count(ser, counter, n, use_try)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert int(counter[0]) == 4 * n
    assert not ser.locked


def test_python_and_nogil_threads_share_one_serializer():
    """Python code inside `with ser:` is excluded from native holders, and vice versa."""
    ser = Serializer("rx")
    counter = np.zeros(1, dtype=np.uint64)
    n_native, n_py = 50_000, 2_000
    start = threading.Barrier(3)

    def native():
        start.wait()
        _stress.serializer_count(ser, counter, n_native)

    def python():
        start.wait()
        for _ in range(n_py):
            with ser:
                v = int(counter[0])
                time.sleep(0)               # give up the GIL mid-update
                counter[0] = v + 1

    threads = [threading.Thread(target=native), threading.Thread(target=native),
               threading.Thread(target=python)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert int(counter[0]) == 2 * n_native + n_py


# --- entry point decorators -------------------------------------------------

class Driver:
    def __init__(self):
        self.serializer = Serializer("drv0")
        self.calls = []

    @serialized
    def start(self, n):
        self.calls.append(("start", n, self.serializer.held()))
        self._kick()
        return n * 2

    @serialized
    def ioctl(self):
        raise OSError("bad ioctl")

    @serialized
    def init(self):
        return self.start(1)            # an entry point calling another: a bug

    @requires_serializer
    def _kick(self):
        self.calls.append("kick")


def test_serialized_entry_point_runs_inside_the_serializer():
    d = Driver()
    assert d.start(3) == 6
    assert d.calls == [("start", 3, True), "kick"]
    assert not d.serializer.locked
    assert Driver.start.__name__ == "start"


def test_serialized_entry_point_releases_on_exception():
    d = Driver()
    with pytest.raises(OSError):
        d.ioctl()
    assert not d.serializer.locked


def test_serialized_entry_point_is_not_reentrant():
    d = Driver()
    with pytest.raises(RuntimeError, match="drv0"):
        d.init()
    assert not d.serializer.locked


def test_requires_serializer_asserts():
    d = Driver()
    with pytest.raises(AssertionError, match="drv0"):
        d._kick()
    with d.serializer:
        d._kick()
    assert d.calls == ["kick"]
