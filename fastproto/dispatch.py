"""The five dispatch models: who runs a socket's protocol input, and when.

Every model shares the receive path up to the demux: the interface's "interrupt"
(``Device.wait``) wakes the stack's puller thread, which takes a batch off the
rx ring into the stack's buffer pool.  The models differ in what happens next:

``inline``
    The puller demultiplexes the batch and runs each woken socket's protocol
    input right away, then goes back to ``wait``: one batch per interrupt.
``puller``
    The interrupt only wakes the puller, which then pulls and runs batches to
    completion (demux and the sockets' protocol input) until the rx ring is
    empty, and only then waits for the next interrupt.
``netisr``
    The baseline: the puller does not demultiplex; it puts raw batches on one
    global bounded input queue (drops counted there) served by ONE protocol
    thread, which does the demux and every socket's protocol input.
``kcont``
    The puller demultiplexes; each woken socket's continuation is scheduled,
    ``kcont_delay`` seconds later, on a continuation queue served by
    ``workers`` threads, which drain the socket's PCQ into its receive buffer.
``lrp``
    As ``kcont``, but the puller also wakes a thread blocked in ``recv`` (or
    ``select``) on that socket, which runs the continuation itself at once
    (lazy receiver processing); the workers run it only if no receiver took
    it within the delay.
"""
from __future__ import annotations

import threading
from collections import deque
from typing import TYPE_CHECKING, Optional

import numpy as np

from fastproto.sched.continuation import Continuation, ContinuationQueue

if TYPE_CHECKING:  # pragma: no cover - imports for annotations only
    from fastproto.socket import DatagramSocket, UDPSocket
    from fastproto.stack import Stack

MODELS = ("inline", "puller", "netisr", "kcont", "lrp")


class Dispatch:
    """A dispatch model bound to one stack (the inline model's behaviour)."""

    name = "inline"
    #: keep pulling batches until the rx ring is empty before waiting again
    drain_ring = False
    #: receivers run their socket's protocol input themselves (lrp)
    lazy_receiver = False

    def __init__(self, stack: "Stack") -> None:
        self.stack = stack

    def start(self) -> None:
        """Start the model's own threads (none here)."""

    def stop(self) -> None:
        """Stop and join the model's threads; buffers it still holds are freed."""

    def threads(self) -> list[threading.Thread]:
        """The model's threads still alive."""
        return []

    def rx_batch(self, handles: np.ndarray, lengths: np.ndarray) -> None:
        """A batch the puller took off the rx ring (the caller owns the buffers)."""
        self.stack._input(handles, lengths)

    def wake(self, sock: "UDPSocket") -> None:
        """``sock``'s PCQ got packets in the batch just demultiplexed."""
        self.stack._udp_input(sock)

    def continuation(self, sock: "UDPSocket") -> Optional[Continuation]:
        """The continuation running ``sock``'s protocol input, if the model uses one."""
        return None

    def receiver_run(self, sock: "DatagramSocket") -> bool:
        """Called by a receiver before it blocks: run ``sock``'s pending protocol
        input in the receiver's thread if the model does that; True if it ran."""
        return False

    def receiver_batch(self, sock: "DatagramSocket", handles: np.ndarray,
                       lengths: np.ndarray) -> None:
        """A batch pulled off the rx ring by a receiver of ``sock`` (lrp) rather
        than by the puller thread (the caller owns the buffers)."""
        self.rx_batch(handles, lengths)

    def stats(self) -> dict[str, int]:
        return {}


class PullerDispatch(Dispatch):
    """``puller``: run batches to completion until the rx ring is empty."""

    name = "puller"
    drain_ring = True


class NetisrDispatch(Dispatch):
    """``netisr``: one global bounded queue of raw batches, one protocol thread."""

    name = "netisr"
    drain_ring = True

    def __init__(self, stack: "Stack", qlen: int) -> None:
        super().__init__(stack)
        if qlen < 1:
            raise ValueError(f"netisr_qlen must be at least 1, not {qlen}")
        self.qlen = qlen
        self._queue: deque[tuple[np.ndarray, np.ndarray]] = deque()
        self._queued = 0          # frames on the queue
        self._cv = threading.Condition(threading.Lock())
        self._stopping = False
        self._thread: Optional[threading.Thread] = None
        self.queue_drops = 0
        self.wakeups = 0
        self.batches = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"{self.stack.name}-netisr")
        self._thread.start()

    def stop(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join()
        with self._cv:
            left = list(self._queue)
            self._queue.clear()
            self._queued = 0
        for handles, _ in left:
            self.stack.pool.free_many(handles)

    def threads(self) -> list[threading.Thread]:
        return [t for t in (self._thread,) if t is not None and t.is_alive()]

    def rx_batch(self, handles: np.ndarray, lengths: np.ndarray) -> None:
        n = len(handles)
        with self._cv:
            room = max(0, self.qlen - self._queued)
            take = min(room, n)
            if take:
                # Copies: the puller reuses its arrays for the next batch.
                self._queue.append((handles[:take].copy(), lengths[:take].copy()))
                self._queued += take
                self._cv.notify()
            self.queue_drops += n - take
        if take < n:
            # A full input queue drops here, the netisr baseline's drop point.
            self.stack.pool.free_many(handles[take:])

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._stopping:
                    self._cv.wait()
                if self._stopping:
                    return
                handles, lengths = self._queue.popleft()
                self._queued -= len(handles)
                self.wakeups += 1
            self.batches += 1
            self.stack._input(handles, lengths)

    def stats(self) -> dict[str, int]:
        with self._cv:
            queued = self._queued
        return {"netisr.queue_drops": self.queue_drops, "netisr.queued": queued,
                "netisr.batches": self.batches, "wakeup.netisr": self.wakeups}


class KcontDispatch(Dispatch):
    """``kcont``: each socket's continuation, delayed, on a worker pool."""

    name = "kcont"
    drain_ring = True

    def __init__(self, stack: "Stack", delay: float, workers: int) -> None:
        super().__init__(stack)
        if delay < 0:
            raise ValueError(f"kcont_delay must be >= 0, not {delay}")
        if workers < 1:
            raise ValueError(f"the {self.name} model needs at least one worker, not {workers}")
        self.delay = delay
        self.workers = workers
        self.queue = ContinuationQueue(clock=stack.clock, name=f"{stack.name}-kcont")

    def start(self) -> None:
        self.queue.start(self.workers)

    def stop(self) -> None:
        self.queue.stop()

    def threads(self) -> list[threading.Thread]:
        return [t for t in self.queue._threads if t.is_alive()]

    def continuation(self, sock: "UDPSocket") -> Continuation:
        return Continuation(self.stack._udp_input, sock, self.queue)

    def wake(self, sock: "UDPSocket") -> None:
        cont = sock._cont
        if cont is not None:
            cont.schedule(self.delay)

    def stats(self) -> dict[str, int]:
        q = self.queue
        return {"kcont.worker_runs": q.worker_runs, "kcont.inline_runs": q.inline_runs,
                "kcont.errors": q.errors, "wakeup.kcont": q.wakeups}


class LrpDispatch(KcontDispatch):
    """``lrp``: the receiver runs its socket's continuation; workers are the fallback."""

    name = "lrp"
    lazy_receiver = True

    def __init__(self, stack: "Stack", delay: float, workers: int) -> None:
        super().__init__(stack, delay, workers)
        self.receiver_wakeups = 0
        #: the socket whose receiver is pulling a batch now, and whether the
        #: batch had packets for it (only one thread pulls at a time)
        self._pulling: Optional["DatagramSocket"] = None
        self._pulling_woken = False
        #: protocol inputs run by a receiver for the batch it pulled itself
        self.receiver_inputs = 0

    def receiver_batch(self, sock: "DatagramSocket", handles: np.ndarray,
                       lengths: np.ndarray) -> None:
        # The receiver demultiplexes the batch itself; its own socket's input
        # runs right here, in its context (no continuation, no wake-up), the
        # other sockets' go to their continuations as from the puller.
        self._pulling, self._pulling_woken = sock, False
        try:
            self.stack._input(handles, lengths)
        finally:
            self._pulling = None
        if self._pulling_woken:
            self.receiver_inputs += 1
            cont = sock._cont
            if cont is not None and not (cont.pending and self.queue.run_now(cont)):
                # The socket's protocol input itself (its PCQ has one consumer
                # at a time whoever runs it: the input lock).
                cont.fn(cont.arg)

    def wake(self, sock: "UDPSocket") -> None:
        if sock is self._pulling:
            self._pulling_woken = True
            return
        super().wake(sock)
        if sock._wake_receivers():
            self.receiver_wakeups += 1
        if self.stack._selecting:
            # A thread in select() runs the work of the sockets it watches.
            self.stack._readiness_changed()

    def receiver_run(self, sock: "DatagramSocket") -> bool:
        cont = sock._cont
        return cont is not None and cont.pending and self.queue.run_now(cont)

    def stats(self) -> dict[str, int]:
        out = super().stats()
        out["wakeup.lrp_receiver"] = self.receiver_wakeups
        out["lrp.receiver_inputs"] = self.receiver_inputs
        return out


def make_dispatch(name: str, stack: "Stack", kcont_delay: float, workers: int,
                  netisr_qlen: int) -> Dispatch:
    """The dispatch model called ``name`` (one of :data:`MODELS`) for ``stack``."""
    if name == "inline":
        return Dispatch(stack)
    if name == "puller":
        return PullerDispatch(stack)
    if name == "netisr":
        return NetisrDispatch(stack, netisr_qlen)
    if name == "kcont":
        return KcontDispatch(stack, kcont_delay, workers)
    if name == "lrp":
        return LrpDispatch(stack, kcont_delay, workers)
    raise ValueError(f"unknown dispatch model {name!r}; one of {', '.join(MODELS)}")
