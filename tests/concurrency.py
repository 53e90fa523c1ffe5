"""Helpers for tests whose subject runs in other threads: waiting for a
condition, and running threads that CPython switches between as often as
it can (to expose lost updates)."""
from __future__ import annotations

import sys
import threading
import time
from typing import Callable, Iterable


def wait_until(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``cond`` until it holds or ``timeout`` seconds pass (the wire and the
    stacks' threads run on their own)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.002)
    return cond()


def run_switching_often(targets: Iterable[Callable[[], object]]) -> None:
    """Run each of ``targets`` in a thread of its own, CPython switching
    between threads as often as it allows; return when all have ended."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        ts = [threading.Thread(target=t) for t in targets]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    finally:
        sys.setswitchinterval(old)
