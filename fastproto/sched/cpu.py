"""Where the stack's threads run: one CPU, without wake-up preemption.

The stack's Python work is serialized by the GIL whatever the number of
CPUs.  A request/response exchange between threads then gains nothing from a
second CPU and pays for it on every hand-off: a wake-up that crosses CPUs
(on a virtual machine, an idle vCPU woken by the host: tens of
microseconds).  On one CPU, the kernel's wake-up preemption does the
opposite harm: the woken thread preempts the thread that woke it, finds the
GIL held, and sleeps again, two context switches for nothing.  Threads of
the ``SCHED_BATCH`` policy do not preempt on wake-up (sched(7)), so the waker
runs on until it blocks and hands over the GIL with it.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator, Optional


@contextlib.contextmanager
def one_cpu(cpu: Optional[int] = None, batch: bool = True) -> Iterator[int]:
    """Run the calling thread, and the threads it starts meanwhile, on one
    CPU (``cpu``, default the first it may use), as ``taskset -c`` would,
    and with ``batch`` under ``SCHED_BATCH``; both restored on exit.
    Yields the CPU.  Threads started inside keep the setting after exit."""
    allowed = os.sched_getaffinity(0)
    chosen = min(allowed) if cpu is None else cpu
    if chosen not in allowed:
        raise ValueError(f"CPU {chosen} is not one this thread may use: {sorted(allowed)}")
    policy = os.sched_getscheduler(0)
    param = os.sched_getparam(0)
    os.sched_setaffinity(0, {chosen})
    try:
        if batch:
            os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
        yield chosen
    finally:
        if batch:
            os.sched_setscheduler(0, policy, param)
        os.sched_setaffinity(0, allowed)
