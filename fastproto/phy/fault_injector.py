"""FaultInjector: a device that impairs the frames another device transmits.

It wraps any :class:`Device` and applies, to each frame transmitted through
it, in this order: loss, corruption (1 to 3 bit flips), duplication,
reordering (held back until after the next frame), a rate limit (a link of
``rate`` bits/s with a bounded queue) and a fixed delay.  Received frames
pass untouched: to impair the other direction, wrap the other end.

Seeded: the same seed and the same frames give the same output, however the
frames are split into batches (each frame draws the same four decisions; bit
positions come from a second generator).  Frames waiting for their due time
(rate limit, delay) or held for reordering leave on the next ``transmit``,
``receive``, ``receive_into``, ``wait`` or ``flush`` that finds them due;
no thread of its own runs.
"""
from __future__ import annotations

import random
import time
from collections import deque
from typing import Callable, Optional, Sequence

import numpy as np
import numpy.typing as npt

from fastproto import BufferPool
from fastproto.phy.device import Device, DeviceWrapper, Frame

_LOSS, _CORRUPT, _DUPLICATE, _REORDER = range(4)


def _probability(name: str, p: float) -> float:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} is a probability in [0, 1], got {p}")
    return float(p)


def flip_bits(frame: bytes, rnd: random.Random) -> bytes:
    """``frame`` with 1 to 3 distinct bits inverted (chosen by ``rnd``); an
    empty frame has no bit to flip and comes back as it is."""
    nbits = len(frame) * 8
    if nbits == 0:
        return frame
    out = bytearray(frame)
    for bit in rnd.sample(range(nbits), min(nbits, rnd.randint(1, 3))):
        out[bit >> 3] ^= 1 << (bit & 7)
    return bytes(out)


class FaultInjector(DeviceWrapper):
    """FaultInjector(device, seed=0, loss=0.0, duplicate=0.0, corrupt=0.0,
    reorder=0.0, delay=0.0, rate=None, ...): ``device`` behind impairments.

    ``loss``, ``duplicate``, ``corrupt``, ``reorder``: per-frame probabilities.
    ``delay``: seconds every frame spends on the wire.  ``rate``: link speed in
    bits/s (None: unlimited); a frame that would find more than
    ``rate_queue_bytes`` waiting for the link is dropped.  ``reorder_hold``:
    seconds after which a held frame leaves even if no frame followed it.
    ``clock``: seconds, monotonic (injectable for tests).

    Counters (``stats()``, beside the wrapped device's): ``fault_lost``,
    ``fault_corrupted``, ``fault_duplicated``, ``fault_reordered``,
    ``fault_delayed``, ``rate_queued`` (waited for the link), ``rate_dropped``
    (queue full), ``fault_dropped_down`` (queued or held when the device went
    down); ``fault_pending`` and ``fault_held`` are the frames waiting now.
    """

    def __init__(self, device: Device, seed: int = 0, loss: float = 0.0, duplicate: float = 0.0,
                 corrupt: float = 0.0, reorder: float = 0.0, delay: float = 0.0,
                 rate: Optional[float] = None, rate_queue_bytes: int = 65536,
                 reorder_hold: float = 0.01, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(device, f"{device.name}+fault")
        self.loss = _probability("loss", loss)
        self.duplicate = _probability("duplicate", duplicate)
        self.corrupt = _probability("corrupt", corrupt)
        self.reorder = _probability("reorder", reorder)
        if delay < 0:
            raise ValueError(f"delay is seconds >= 0, got {delay}")
        if rate is not None and rate <= 0:
            raise ValueError(f"rate is bits/s > 0 (or None), got {rate}")
        if rate_queue_bytes < 0:
            raise ValueError(f"rate_queue_bytes must be >= 0, got {rate_queue_bytes}")
        self.delay = float(delay)
        self.rate = None if rate is None else float(rate)
        self.rate_queue_bytes = rate_queue_bytes
        self.reorder_hold = reorder_hold
        self.clock = clock
        self._decide = np.random.default_rng(seed)
        self._bits = random.Random(seed)
        # (due time, frame), due times non-decreasing: the rate limit hands
        # out departures in order and the delay is the same for every frame.
        self._due: deque[tuple[float, bytes]] = deque()
        self._held: list[bytes] = []
        self._held_since = 0.0
        self._link_free = 0.0  # when the rate-limited link finishes its queue
        self._c = dict.fromkeys(("fault_lost", "fault_corrupted", "fault_duplicated",
                                 "fault_reordered", "fault_delayed", "rate_queued",
                                 "rate_dropped", "fault_dropped_down"), 0)

    def __repr__(self) -> str:
        return f"<FaultInjector on {self.inner!r}>"

    def down(self) -> None:
        with self.serializer:
            self._c["fault_dropped_down"] += len(self._due) + len(self._held)
            self._due.clear()
            self._held.clear()
            self.inner.down()

    def transmit(self, frames: Sequence[Frame]) -> int:
        with self.serializer:
            if not self.inner.is_up:
                return self.inner.transmit(frames)  # counted there as dropped
            self._flush()
            n = len(frames)
            if n == 0:
                return 0
            c = self._c
            decisions = self._decide.random((n, 4))
            lost = decisions[:, _LOSS] < self.loss
            corrupt = decisions[:, _CORRUPT] < self.corrupt
            dup = decisions[:, _DUPLICATE] < self.duplicate
            hold = decisions[:, _REORDER] < self.reorder
            c["fault_lost"] += int(lost.sum())
            held = self._held
            out: list[bytes] = []
            for i, f in enumerate(frames):
                if lost[i]:
                    continue
                f = bytes(f)
                if corrupt[i] and f:
                    f = flip_bits(f, self._bits)
                    c["fault_corrupted"] += 1
                copies = (f, f) if dup[i] else (f,)
                if dup[i]:
                    c["fault_duplicated"] += 1
                if hold[i]:
                    if not held:
                        self._held_since = self.clock()
                    held.extend(copies)
                    c["fault_reordered"] += 1
                else:
                    out.extend(copies)
                    if held:
                        out.extend(held)
                        held.clear()
            return n - self._send(out)

    def receive(self, max_frames: int) -> list[bytes]:
        with self.serializer:
            self._flush()
            return self.inner.receive(max_frames)

    def receive_into(self, pool: BufferPool, handles_out: npt.NDArray[np.uint64],
                     lengths_out: npt.NDArray[np.uint32]) -> int:
        with self.serializer:
            self._flush()
            return self.inner.receive_into(pool, handles_out, lengths_out)

    def flush(self) -> None:
        """Send the frames now due (and held frames older than ``reorder_hold``)."""
        with self.serializer:
            self._flush()

    def wait(self, timeout: Optional[float] = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self.serializer:
                self._flush()
                next_due = self._next_due()
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if next_due is None:
                return self.inner.wait(left)
            step = max(0.0, next_due - self.clock())
            if left is not None and left <= step:
                return self.inner.wait(left)
            if self.inner.wait(step):
                return True

    def stats(self) -> dict[str, int]:
        out = super().stats()
        out["fault_pending"] = len(self._due)
        out["fault_held"] = len(self._held)
        return out

    # -- inside the serializer -----------------------------------------------

    def _send(self, frames: list[bytes]) -> int:
        """Frames leaving the impairments: to the rate limit and delay line, or
        straight to the device.  The number dropped for a full rate queue."""
        if not frames:
            return 0
        if self.rate is None and self.delay == 0.0 and not self._due:
            self.inner.transmit(frames)
            return 0
        now = self.clock()
        c = self._c
        dropped = 0
        due = self._due
        if self.rate is None:
            when = now + self.delay
            due.extend((when, f) for f in frames)
        else:
            bytes_per_s = self.rate / 8.0
            for f in frames:
                start = max(self._link_free, now)
                waiting = (start - now) * bytes_per_s  # bytes queued ahead of this frame
                # The slack absorbs float rounding of (start - now) * rate.
                if waiting + len(f) > self.rate_queue_bytes + 1e-6:
                    dropped += 1
                    continue
                if start > now:
                    c["rate_queued"] += 1
                self._link_free = start + len(f) / bytes_per_s
                due.append((self._link_free + self.delay, f))
        c["rate_dropped"] += dropped
        if self.delay > 0.0:
            c["fault_delayed"] += len(frames) - dropped
        self._flush()
        return dropped

    def _flush(self) -> None:
        now = self.clock()
        if self._held and now - self._held_since >= self.reorder_hold:
            held = self._held[:]
            self._held.clear()
            self._send(held)
            return
        due = self._due
        if due and due[0][0] <= now:
            ready = []
            while due and due[0][0] <= now:
                ready.append(due.popleft()[1])
            self.inner.transmit(ready)

    def _next_due(self) -> Optional[float]:
        """Clock time of the next frame to leave, or None if nothing waits."""
        times = []
        if self._due:
            times.append(self._due[0][0])
        if self._held:
            times.append(self._held_since + self.reorder_hold)
        return min(times) if times else None
