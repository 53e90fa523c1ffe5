"""PCQ cases: the queue from Python and between native threads, beside Python's queues.

Items are packet handles (row numbers of a buffer pool, here 0..999), built
once before timing so that neither side pays for making them.

  - put+get: one ``put`` and one ``get`` per item in a Python loop, beside
    ``deque.append`` + ``deque.popleft`` and ``queue.Queue.put_nowait`` +
    ``get_nowait`` in the same loop.
  - batches: ``put_many`` of a 256-item uint64 array, then ``get_many(256,
    out=...)``; the baseline is ``deque.extend`` of the same 256 items as a
    list, then 256 ``popleft`` calls (a deque has no batch get).
  - threads: a native producer thread puts items 0..n-1, one ``pcq_put``
    per item (as the demux loop does) or with ``pcq_put_many`` in runs of
    256, while the calling thread takes them with ``pcq_get_many`` and sums
    them, both without the GIL.  The baseline moves
    the same items between two Python threads as NumPy batches of 256
    through a deque, the consumer summing each batch with NumPy: batched the
    same way on both sides, so neither pays per-item Python overhead.
"""
from __future__ import annotations

import collections
import queue
import threading
import time

import numpy as np

from fastproto._core import _stress
from fastproto._core.pcq import PCQ
from fastproto.bench import Case

N_LOOP = 1000
BATCH = 256
N_THREADED = 2_000_000


def _loop(put, get, items):
    def run():
        for i in items:
            put(i)
            get()
    return run


def _threaded_baseline(n: int):
    """Move 0..n-1 from a producer thread to this one, as NumPy batches of BATCH."""
    def run():
        dq = collections.deque()

        def produce():
            for i in range(0, n, BATCH):
                dq.append(np.arange(i, min(i + BATCH, n), dtype=np.uint64))

        t = threading.Thread(target=produce)
        t.start()
        got = total = 0
        popleft = dq.popleft
        while got < n:
            try:
                b = popleft()
            except IndexError:
                time.sleep(0)       # let the producer have the GIL
                continue
            total += int(b.sum())
            got += len(b)
        t.join()
        return total
    return run


def cases() -> list[Case]:
    items = list(range(N_LOOP))

    q = PCQ(N_LOOP)
    d: collections.deque[int] = collections.deque()
    pcq_loop = _loop(q.put, q.get, items)
    deque_loop = _loop(d.append, d.popleft, items)
    # the first case timed in a run would start on a cold interpreter loop
    # and caches: run both sides a little first
    t_end = time.perf_counter() + 0.2
    while time.perf_counter() < t_end:
        pcq_loop()
        deque_loop()
    cases = [
        Case("core", "pcq put+get (Python)", pcq_loop, N_LOOP, "items",
             baseline=deque_loop, baseline_name="deque append+popleft",
             goal_ratio=0.8, scale=1e6, scale_name="M items/s"),
    ]
    q2 = PCQ(N_LOOP)
    qq: queue.Queue[int] = queue.Queue()
    cases.append(
        Case("core", "pcq put+get vs queue.Queue", _loop(q2.put, q2.get, items), N_LOOP, "items",
             baseline=_loop(qq.put_nowait, qq.get_nowait, items), baseline_name="queue.Queue nowait",
             goal_ratio=10.0, scale=1e6, scale_name="M items/s"))

    qb = PCQ(4 * BATCH)
    arr = np.arange(BATCH, dtype=np.uint64)
    out = np.empty(BATCH, dtype=np.uint64)
    db: collections.deque[int] = collections.deque()
    lst = arr.tolist()
    rng = range(BATCH)

    def batches():
        qb.put_many(arr)
        qb.get_many(BATCH, out=out)

    def deque_batches(extend=db.extend, popleft=db.popleft):
        extend(lst)
        for _ in rng:
            popleft()

    cases.append(
        Case("core", "pcq put_many+get_many 256", batches, BATCH, "items",
             baseline=deque_batches, baseline_name="deque extend+popleft",
             goal_rate=100.0, scale=1e6, scale_name="M items/s"))

    qt = PCQ(4096)
    expect = N_THREADED * (N_THREADED - 1) // 2

    def threaded(batch):
        def run():
            total = _stress.pcq_transfer(qt, N_THREADED, batch)
            if total != expect:
                raise AssertionError(f"pcq transfer lost items: sum {total} != {expect}")
        return run

    baseline = _threaded_baseline(N_THREADED)
    # The producer as the demux loop uses it (one pcq_put per packet), and
    # in runs of 256; the consumer takes up to 256 at a time either way.
    for batch, name in ((1, "pcq 2 threads nogil, one pcq_put per item"),
                        (BATCH, "pcq 2 threads nogil, batches 256")):
        cases.append(
            Case("core", name, threaded(batch), N_THREADED, "items",
                 baseline=baseline, baseline_name="threads+deque, numpy batches",
                 goal_rate=20.0, scale=1e6, scale_name="M items/s", single_shot=True))
    return cases
