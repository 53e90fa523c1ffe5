"""FaultInjector: a device that impairs the frames another device transmits.

It wraps any :class:`Device` and applies, to each frame transmitted through
it, in this order: loss, corruption (1 to 3 bit flips), duplication,
reordering (held back until after the next frame), a rate limit (a link of
``rate`` bits/s with a bounded queue) and a fixed delay.  Received frames
can be lost, corrupted, duplicated and reordered too (the ``rx_*``
settings), so that wrapping the one end we own (a TAP device) impairs both
directions; without them they pass untouched and zero-copy.

Seeded: the same seed and the same frames give the same output, however the
frames are split into batches (each frame draws the same four decisions; bit
positions come from a second generator; the receive side has generators of
its own, so traffic one way never shifts the other way's pattern).  Frames
waiting for their due time (rate limit, delay) or held for reordering leave
on the next ``transmit``, ``receive``, ``receive_into``, ``wait`` or
``flush`` that finds them due; no thread of its own runs.
"""
from __future__ import annotations

import random
import time
from collections import deque
from typing import Callable, Optional, Sequence

import numpy as np
import numpy.typing as npt

from fastproto import BufferPool
from fastproto._core.frames import FrameBatch
from fastproto.phy.device import Device, DeviceWrapper, Frame, Frames, _copy_into_pool

_LOSS, _CORRUPT, _DUPLICATE, _REORDER = range(4)


def _probability(name: str, p: float) -> float:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} is a probability in [0, 1], got {p}")
    return float(p)


def flip_bits(frame: bytes, rnd: random.Random, in_word: bool = False) -> bytes:
    """``frame`` with 1 to 3 distinct bits inverted (chosen by ``rnd``); an
    empty frame has no bit to flip and comes back as it is.

    ``in_word``: the bits all fall in one 16-bit word at an even offset.  Such
    an error is a burst shorter than 16 bits, which the Internet checksum
    always detects (RFC 1071 2(B)), as a link's CRC would; flips anywhere in
    the frame can cancel out in the one's complement sum (the same bit
    position flipped 0->1 in one word and 1->0 in another) and reach the
    application undetected."""
    nbits = len(frame) * 8
    if nbits == 0:
        return frame
    out = bytearray(frame)
    if in_word:
        first = 16 * rnd.randrange((len(frame) + 1) // 2)
        bits = range(first, min(first + 16, nbits))
    else:
        bits = range(nbits)
    for bit in rnd.sample(bits, min(len(bits), rnd.randint(1, 3))):
        out[bit >> 3] ^= 1 << (bit & 7)
    return bytes(out)


class _Impairment:
    """One direction's per-frame impairments: loss, corruption, duplication and
    reordering, with their generators, held frames and counter names."""

    __slots__ = ("loss", "corrupt", "duplicate", "reorder", "decide", "bits", "held",
                 "held_since", "names", "in_word")

    def __init__(self, prefix: str, decide: np.random.Generator, bits: random.Random,
                 loss: float, corrupt: float, duplicate: float, reorder: float) -> None:
        self.loss = _probability(f"{prefix}loss", loss)
        self.corrupt = _probability(f"{prefix}corrupt", corrupt)
        self.duplicate = _probability(f"{prefix}duplicate", duplicate)
        self.reorder = _probability(f"{prefix}reorder", reorder)
        self.decide = decide
        self.bits = bits
        self.held: list[bytes] = []
        self.held_since = 0.0
        tag = "fault_" + prefix
        self.names = (tag + "lost", tag + "corrupted", tag + "duplicated", tag + "reordered")
        self.in_word = False

    @property
    def active(self) -> bool:
        """True if any impairment is on or frames are held."""
        return bool(self.loss or self.corrupt or self.duplicate or self.reorder or self.held)

    def apply(self, frames: Sequence[Frame], now: float, c: dict[str, int]) -> list[bytes]:
        """The frames that go on, in their new order; held ones stay in ``held``
        until a frame that is not held passes them."""
        n = len(frames)
        if n == 0:
            return []
        lost_name, corrupted_name, duplicated_name, reordered_name = self.names
        decisions = self.decide.random((n, 4))
        lost = decisions[:, _LOSS] < self.loss
        corrupt = decisions[:, _CORRUPT] < self.corrupt
        dup = decisions[:, _DUPLICATE] < self.duplicate
        hold = decisions[:, _REORDER] < self.reorder
        c[lost_name] += int(lost.sum())
        held = self.held
        out: list[bytes] = []
        for i, f in enumerate(frames):
            if lost[i]:
                continue
            f = bytes(f)
            if corrupt[i] and f:
                f = flip_bits(f, self.bits, self.in_word)
                c[corrupted_name] += 1
            copies = (f, f) if dup[i] else (f,)
            if dup[i]:
                c[duplicated_name] += 1
            if hold[i]:
                if not held:
                    self.held_since = now
                held.extend(copies)
                c[reordered_name] += 1
            else:
                out.extend(copies)
                if held:
                    out.extend(held)
                    held.clear()
        return out

    def release_due(self, now: float, hold_for: float) -> list[bytes]:
        """Held frames older than ``hold_for`` seconds (they leave with nothing
        to follow them); otherwise nothing."""
        if self.held and now - self.held_since >= hold_for:
            out = self.held[:]
            self.held.clear()
            return out
        return []


def _setting(side: str, name: str) -> property:
    """One direction's probability ``name`` as a read/write attribute of the
    injector (checked like the constructor's)."""
    def get(self: "FaultInjector") -> float:
        return getattr(getattr(self, side), name)  # type: ignore[no-any-return]

    def put(self: "FaultInjector", p: float) -> None:
        setattr(getattr(self, side), name, _probability(name, p))
    return property(get, put)


class FaultInjector(DeviceWrapper):
    """FaultInjector(device, seed=0, loss=0.0, duplicate=0.0, corrupt=0.0,
    reorder=0.0, delay=0.0, rate=None, ..., rx_loss=0.0, rx_duplicate=0.0,
    rx_corrupt=0.0, rx_reorder=0.0, corrupt_in_word=False): ``device`` behind
    impairments.

    ``loss``, ``duplicate``, ``corrupt``, ``reorder``: per-frame probabilities
    for transmitted frames; ``rx_loss``, ``rx_duplicate``, ``rx_corrupt``,
    ``rx_reorder``: the same for received frames.  ``delay``: seconds every
    transmitted frame spends on the wire.  ``rate``: link speed in bits/s
    (None: unlimited); a frame that would find more than ``rate_queue_bytes``
    waiting for the link is dropped.  ``reorder_hold``: seconds after which a
    held frame (either direction) goes on even if no frame followed it.
    ``corrupt_in_word``: a corrupted frame's 1 to 3 flipped bits all fall in
    one aligned 16-bit word, an error the Internet checksum always detects
    (see :func:`flip_bits`); by default they fall anywhere in the frame.
    ``clock``: seconds, monotonic (injectable for tests).

    Counters (``stats()``, beside the wrapped device's): ``fault_lost``,
    ``fault_corrupted``, ``fault_duplicated``, ``fault_reordered``,
    ``fault_delayed``, ``rate_queued`` (waited for the link), ``rate_dropped``
    (queue full), ``fault_dropped_down`` (queued or held, either direction,
    when the device went down); ``fault_rx_lost``, ``fault_rx_corrupted``,
    ``fault_rx_duplicated``, ``fault_rx_reordered`` for received frames, and
    ``fault_rx_no_buffer``, ``fault_rx_oversize`` for impaired received
    frames that found no pool buffer or were longer than one.  Gauges:
    ``fault_pending`` and ``fault_held`` (transmit side), ``fault_rx_held``
    and ``fault_rx_queued`` (received, impaired, not yet taken).
    """

    def __init__(self, device: Device, seed: int = 0, loss: float = 0.0, duplicate: float = 0.0,
                 corrupt: float = 0.0, reorder: float = 0.0, delay: float = 0.0,
                 rate: Optional[float] = None, rate_queue_bytes: int = 65536,
                 reorder_hold: float = 0.01, clock: Callable[[], float] = time.monotonic,
                 rx_loss: float = 0.0, rx_duplicate: float = 0.0, rx_corrupt: float = 0.0,
                 rx_reorder: float = 0.0, corrupt_in_word: bool = False) -> None:
        super().__init__(device, f"{device.name}+fault")
        self._tx = _Impairment("", np.random.default_rng(seed), random.Random(seed),
                               loss, corrupt, duplicate, reorder)
        # Generators of its own: how much was sent never moves the receive pattern.
        self._rx = _Impairment("rx_", np.random.default_rng([seed, 1]), random.Random(f"rx-{seed}"),
                               rx_loss, rx_corrupt, rx_duplicate, rx_reorder)
        self._tx.in_word = self._rx.in_word = bool(corrupt_in_word)
        if delay < 0:
            raise ValueError(f"delay is seconds >= 0, got {delay}")
        if rate is not None and rate <= 0:
            raise ValueError(f"rate is bits/s > 0 (or None), got {rate}")
        if rate_queue_bytes < 0:
            raise ValueError(f"rate_queue_bytes must be >= 0, got {rate_queue_bytes}")
        if reorder_hold < 0:
            raise ValueError(f"reorder_hold is seconds >= 0, got {reorder_hold}")
        self.delay = float(delay)
        self.rate = None if rate is None else float(rate)
        self.rate_queue_bytes = rate_queue_bytes
        self.reorder_hold = reorder_hold
        self.clock = clock
        # (due time, frame), due times non-decreasing: the rate limit hands
        # out departures in order and the delay is the same for every frame.
        self._due: deque[tuple[float, bytes]] = deque()
        #: received frames through the rx impairments, not yet taken
        self._rx_queue: deque[bytes] = deque()
        self._link_free = 0.0  # when the rate-limited link finishes its queue
        self._c = dict.fromkeys(("fault_lost", "fault_corrupted", "fault_duplicated",
                                 "fault_reordered", "fault_delayed", "rate_queued",
                                 "rate_dropped", "fault_dropped_down", "fault_rx_lost",
                                 "fault_rx_corrupted", "fault_rx_duplicated",
                                 "fault_rx_reordered", "fault_rx_no_buffer",
                                 "fault_rx_oversize"), 0)

    # The probabilities stay plain attributes (tests and callers change them on the fly).
    loss = _setting("_tx", "loss")
    corrupt = _setting("_tx", "corrupt")
    duplicate = _setting("_tx", "duplicate")
    reorder = _setting("_tx", "reorder")
    rx_loss = _setting("_rx", "loss")
    rx_corrupt = _setting("_rx", "corrupt")
    rx_duplicate = _setting("_rx", "duplicate")
    rx_reorder = _setting("_rx", "reorder")

    def __repr__(self) -> str:
        return f"<FaultInjector on {self.inner!r}>"

    def down(self) -> None:
        with self.serializer:
            self._c["fault_dropped_down"] += (len(self._due) + len(self._tx.held)
                                              + len(self._rx.held) + len(self._rx_queue))
            self._due.clear()
            self._tx.held.clear()
            self._rx.held.clear()
            self._rx_queue.clear()
            self.inner.down()

    def transmit(self, frames: Frames) -> int:
        with self.serializer:
            if not self.inner.is_up:
                return self.inner.transmit(frames)  # counted there as dropped
            self._flush()
            n = len(frames)
            if n == 0:
                return 0
            if type(frames) is FrameBatch:
                # Impaired one by one: the frames as bytes (not the fast path).
                frames = frames.frames()
            return n - self._send(self._tx.apply(frames, self.clock(), self._c))

    def receive(self, max_frames: int) -> list[bytes]:
        with self.serializer:
            self._flush()
            if not (self._rx.active or self._rx_queue):
                return self.inner.receive(max_frames)
            return self._rx_take(max_frames)

    def receive_into(self, pool: BufferPool, handles_out: npt.NDArray[np.uint64],
                     lengths_out: npt.NDArray[np.uint32]) -> int:
        with self.serializer:
            self._flush()
            if not (self._rx.active or self._rx_queue):
                return self.inner.receive_into(pool, handles_out, lengths_out)
            frames = self._rx_take(min(len(handles_out), len(lengths_out)))
            counts = {"rx_frames": 0, "rx_bytes": 0, "rx_no_buffer": 0, "rx_oversize": 0}
            got = _copy_into_pool(frames, pool, handles_out, lengths_out, counts)
            self._c["fault_rx_no_buffer"] += counts["rx_no_buffer"]
            self._c["fault_rx_oversize"] += counts["rx_oversize"]
            return got

    def flush(self) -> None:
        """Send the frames now due (and held frames older than ``reorder_hold``);
        received frames held that long become ready to take."""
        with self.serializer:
            self._flush()

    def wait(self, timeout: Optional[float] = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self.serializer:
                self._flush()
                if self._rx_queue:
                    return True
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
        out["fault_held"] = len(self._tx.held)
        out["fault_rx_held"] = len(self._rx.held)
        out["fault_rx_queued"] = len(self._rx_queue)
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

    def _rx_take(self, max_frames: int) -> list[bytes]:
        """Up to ``max_frames`` received frames through the rx impairments.  A
        duplicate beyond ``max_frames`` waits in the queue for the next take."""
        queue = self._rx_queue
        if max_frames <= 0:
            return []
        if len(queue) < max_frames:
            arrived = self.inner.receive(max_frames)
            queue.extend(self._rx.apply(arrived, self.clock(), self._c))
        n = min(max_frames, len(queue))
        return [queue.popleft() for _ in range(n)]

    def _flush(self) -> None:
        now = self.clock()
        if self._rx.held:
            self._rx_queue.extend(self._rx.release_due(now, self.reorder_hold))
        held = self._tx.release_due(now, self.reorder_hold)
        if held:
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
        for side in (self._tx, self._rx):
            if side.held:
                times.append(side.held_since + self.reorder_hold)
        return min(times) if times else None
