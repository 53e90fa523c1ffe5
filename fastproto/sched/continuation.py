"""Continuations: a function and its argument bound to a queue, run later.

After the kcont proposal for NetBSD: protocol work that need not happen in the
thread that noticed it (a socket's input processing, a timer) is packaged as a
continuation and scheduled, possibly with a small delay, on a queue.  A queue is
served by a pool of worker threads, or drained inline by whoever holds it (the
lazy receiver, a test).

Guarantees:

- Scheduling a continuation that is already pending does not make it run twice;
  the earlier of the two due times wins.
- A continuation never runs concurrently with itself.  Scheduled while it runs,
  it runs once more afterwards.
- ``cancel()`` of a pending continuation means it will not run (unless
  scheduled again); a run already in progress is not interrupted.

Times are seconds on the queue's clock (``time.monotonic`` unless a clock is
injected, which makes the tests deterministic).
"""
from __future__ import annotations

import heapq
import itertools
import threading
import time
from typing import Any, Callable, Optional

_IDLE, _PENDING, _RUNNING = 0, 1, 2


class ManualClock:
    """A clock that moves only when told to: ``clock()`` returns ``now``."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Continuation:
    """``fn(arg)`` bound to ``queue``; ``schedule()`` it to have it run."""

    __slots__ = ("fn", "arg", "queue", "_state", "_due", "_again", "runs", "pending")

    def __init__(self, fn: Callable[[Any], object], arg: Any = None,
                 queue: Optional["ContinuationQueue"] = None) -> None:
        self.fn = fn
        self.arg = arg
        self.queue = queue if queue is not None else ContinuationQueue()
        self._state = _IDLE
        self._due = 0.0
        #: due time of a schedule() that arrived while running, else None
        self._again: Optional[float] = None
        #: how many times it has run
        self.runs = 0
        #: True while scheduled and not yet started (a run to come: pending,
        #: or scheduled again while running).  A plain attribute the queue
        #: keeps, under its lock, equal to ``_state == _PENDING or _again is
        #: not None``: receivers and timers look at it on every call.
        self.pending = False

    def schedule(self, delay: float = 0.0) -> bool:
        """Have it run ``delay`` seconds from now; False if it was already pending."""
        return self.queue._schedule(self, delay)

    def cancel(self) -> bool:
        """Take it off its queue; True if it was pending."""
        return self.queue._cancel(self)


class ContinuationQueue:
    """Pending continuations ordered by due time.

    ``workers`` > 0 starts that many daemon threads serving the queue (also
    ``start()``); with none, ``drain()`` runs whatever is due in the calling
    thread.  Both may be used together: whoever gets a continuation first runs
    it.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, workers: int = 0,
                 name: str = "kcont") -> None:
        self.clock = clock
        self.name = name
        self._heap: list[tuple[float, int, Continuation]] = []
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)
        self._threads: list[threading.Thread] = []
        self._stopping = False
        #: runs done by worker threads and by drain() callers
        self.worker_runs = 0
        self.inline_runs = 0
        #: times a worker was woken to find work
        self.wakeups = 0
        #: exceptions raised by continuations run on workers (the worker survives)
        self.errors = 0
        self.last_error: Optional[BaseException] = None
        if workers:
            self.start(workers)

    # -- scheduling (called through Continuation) --------------------------------

    def _schedule(self, c: Continuation, delay: float) -> bool:
        if delay < 0:
            raise ValueError("delay must be >= 0")
        with self._lock:
            due = self.clock() + delay
            if c._state == _RUNNING:
                if c._again is None:
                    c._again = due
                    c.pending = True
                    return True
                c._again = min(c._again, due)
                return False
            if c._state == _PENDING:
                if due < c._due:
                    # Move it earlier; the stale heap entry is skipped when popped.
                    c._due = due
                    heapq.heappush(self._heap, (due, next(self._seq), c))
                    self._cv.notify()
                return False
            c._state = _PENDING
            c.pending = True
            c._due = due
            heapq.heappush(self._heap, (due, next(self._seq), c))
            self._cv.notify()
            return True

    def _cancel(self, c: Continuation) -> bool:
        with self._lock:
            if c._state == _RUNNING:
                was = c._again is not None
                c._again = None
                c.pending = False
                return was
            if c._state == _PENDING:
                c._state = _IDLE  # its heap entries are now stale
                c.pending = False
                return True
            return False

    def __len__(self) -> int:
        with self._lock:
            return sum(1 for due, _, c in self._heap if c._state == _PENDING and c._due == due)

    def next_due(self) -> Optional[float]:
        """The due time of the earliest pending continuation, or None."""
        with self._lock:
            self._discard_stale()
            return self._heap[0][0] if self._heap else None

    # -- running ------------------------------------------------------------------

    def _discard_stale(self) -> None:
        heap = self._heap
        while heap and (heap[0][2]._state != _PENDING or heap[0][2]._due != heap[0][0]):
            heapq.heappop(heap)

    def _pop_due(self, now: float) -> Optional[Continuation]:
        """Under the lock: the earliest continuation due by ``now``, marked running."""
        self._discard_stale()
        if not self._heap or self._heap[0][0] > now:
            return None
        _, _, c = heapq.heappop(self._heap)
        c._state = _RUNNING
        c.pending = False
        return c

    def _run(self, c: Continuation) -> None:
        try:
            c.fn(c.arg)
        finally:
            with self._lock:
                c.runs += 1
                again, c._again = c._again, None
                c._state = _IDLE
                if again is not None:
                    c._state = _PENDING     # (pending already: set with _again)
                    c._due = again
                    heapq.heappush(self._heap, (again, next(self._seq), c))
                    self._cv.notify()
                else:
                    c.pending = False

    def drain(self, limit: Optional[int] = None) -> int:
        """Run, in this thread, the continuations due now; returns how many ran."""
        ran = 0
        while limit is None or ran < limit:
            with self._lock:
                c = self._pop_due(self.clock())
            if c is None:
                break
            self._run(c)
            ran += 1
        with self._lock:
            self.inline_runs += ran
        return ran

    def run_now(self, c: Continuation) -> bool:
        """Run ``c`` in this thread if it is pending (due or not); the lazy
        receiver uses this to do its socket's work itself.  False if it was not
        pending or is running elsewhere."""
        with self._lock:
            if c._state != _PENDING:
                return False
            c._state = _RUNNING
            c.pending = False
            self.inline_runs += 1
        self._run(c)
        return True

    # -- workers ------------------------------------------------------------------

    def start(self, workers: int = 1) -> None:
        """Start ``workers`` threads serving the queue."""
        with self._lock:
            self._stopping = False
        for i in range(workers):
            t = threading.Thread(target=self._worker, name=f"{self.name}-{len(self._threads)}", daemon=True)
            self._threads.append(t)
            t.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the workers (pending continuations stay pending)."""
        with self._lock:
            self._stopping = True
            self._cv.notify_all()
        for t in self._threads:
            t.join(timeout)
        self._threads = [t for t in self._threads if t.is_alive()]

    def _worker(self) -> None:
        while True:
            with self._lock:
                while True:
                    if self._stopping:
                        return
                    now = self.clock()
                    c = self._pop_due(now)
                    if c is not None:
                        self.wakeups += 1
                        self.worker_runs += 1
                        break
                    wait = None if not self._heap else max(self._heap[0][0] - now, 0.0)
                    # With an injected clock real time says nothing about due times:
                    # poll instead of sleeping until a due time that may never come.
                    if self.clock is not time.monotonic and wait is not None:
                        wait = min(wait, 0.001)
                    self._cv.wait(wait)
            try:
                self._run(c)
            except Exception as exc:  # a failing continuation must not take the worker down
                with self._lock:
                    self.errors += 1
                    self.last_error = exc

    def __enter__(self) -> "ContinuationQueue":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
