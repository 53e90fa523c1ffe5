"""The interface (phy) contract: what the stack asks of a network device.

A device moves Ethernet frames in batches.  ``transmit`` hands frames to the
wire: a sequence of frames, or a :class:`FrameBatch` (many frames in one
buffer, no object per frame: what TCP segmentation fills); received frames
wait in a bounded rx ring (the "hardware FIFO") until the stack pulls them
with ``receive`` or, copied into its buffer pool, ``receive_into``.  ``wait`` is the interrupt: the stack's puller thread sleeps
there until frames are ready.

Every driver entry point (``up``, ``down``, ``transmit``, ``receive``,
``receive_into``) runs inside the device's :class:`fastproto.Serializer`, the
one lock of the interface (DragonFly BSD's LWKT serializer).  ``wait`` does
not: a sleeping puller must not keep the transmit path out.
"""
from __future__ import annotations

import abc
import threading
from collections import deque
from typing import Callable, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

from fastproto import BufferPool, Serializer
from fastproto._core.frames import FrameBatch, checked_frames, store_frames

Frame = Union[bytes, bytearray, memoryview]
#: what ``transmit`` takes: frames one by one, or a batch of them in one buffer
Frames = Union[Sequence[Frame], FrameBatch]

ETHER_HDR_LEN = 14
"""Destination, source, EtherType (IEEE 802.3 clause 3.1.1)."""
VLAN_TAG_LEN = 4
"""One IEEE 802.1Q tag."""
DEFAULT_MTU = 1500
MIN_MTU = 68
"""The smallest MTU IPv4 allows (RFC 791: every module must forward 68 octets)."""


def max_frame_len(mtu: int) -> int:
    """Longest frame in bytes an interface of L3 ``mtu`` carries: header, one
    802.1Q tag and the payload (no FCS: devices here neither add nor strip it)."""
    return mtu + ETHER_HDR_LEN + VLAN_TAG_LEN


def _check_mac(mac: bytes) -> bytes:
    mac = bytes(mac)
    if len(mac) != 6:
        raise ValueError(f"a MAC address is 6 bytes, got {len(mac)}")
    return mac


class Device(abc.ABC):
    """A network interface moving batches of Ethernet frames.

    Attributes: ``name``, ``mtu`` (L3, bytes), ``mac`` (6 bytes),
    ``serializer`` (the interface's lock, held by every entry point).
    """

    name: str
    mtu: int
    mac: bytes
    serializer: Serializer

    @property
    @abc.abstractmethod
    def is_up(self) -> bool:
        """True while the interface passes frames."""

    @abc.abstractmethod
    def up(self) -> None:
        """Bring the interface up (frames pass)."""

    @abc.abstractmethod
    def down(self) -> None:
        """Take the interface down: frames sent or arriving meanwhile are dropped and counted."""

    @abc.abstractmethod
    def transmit(self, frames: Frames) -> int:
        """Hand ``frames`` to the wire; the number accepted.  The rest are
        dropped, each under a named counter.

        ``frames`` is a sequence of bytes-like frames, which the caller may
        reuse at once, or a :class:`FrameBatch`, which the device seals and
        may keep (the wire carries the batch itself, as a NIC reads a
        descriptor ring).  A device or wrapper that cannot use a batch as
        one treats it as the sequence of its frames (it is one: ``len``,
        indexing and iteration give the frames as bytes)."""

    @abc.abstractmethod
    def receive(self, max_frames: int) -> list[bytes]:
        """Take up to ``max_frames`` frames from the rx ring, oldest first."""

    @abc.abstractmethod
    def receive_into(self, pool: BufferPool, handles_out: npt.NDArray[np.uint64],
                     lengths_out: npt.NDArray[np.uint32]) -> int:
        """Take up to ``len(handles_out)`` frames from the rx ring, each into a
        buffer allocated from ``pool``; fill ``handles_out[:n]`` and
        ``lengths_out[:n]`` and return ``n``.  A frame finding no free buffer
        is dropped (``rx_no_buffer``); the caller owns the handles returned."""

    @abc.abstractmethod
    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until frames are ready to receive or ``timeout`` seconds pass
        (``None``: no limit); True if frames are ready.  ``wakeup`` and
        ``down`` end a wait early (returning False when nothing arrived)."""

    @abc.abstractmethod
    def wakeup(self) -> None:
        """End every ``wait`` in progress (to stop a puller thread)."""

    def rx_ready(self) -> bool:
        """True if frames wait on the rx ring: a look without the lock, for a
        thread deciding whether to pull or to sleep.  False when the device
        cannot tell (then only ``wait`` says)."""
        return False

    def rx_notify(self, fn: Optional[Callable[[], None]]) -> bool:
        """Route the receive "interrupt" to ``fn`` instead of waking ``wait``
        (NAPI's interrupt masking: a thread polling the ring itself is told
        of arrivals, the puller sleeps on); ``None`` routes it back to
        ``wait``, waking it if frames are already waiting.  ``fn`` runs in
        the thread delivering the frames, under the ring's lock: it must only
        notify.  False if the device cannot route its interrupt (nothing
        changed).  A device fed from outside the process (a TAP device) has
        no delivering thread and never calls ``fn``: it offers
        ``rx_sleep(timeout, token)``/``rx_sleep_token()``/``rx_kick()``
        instead, and the pulling receiver sleeps there (docs/tap.md)."""
        return False

    @abc.abstractmethod
    def stats(self) -> dict[str, int]:
        """Counters since creation, by name (a snapshot)."""

    @property
    def max_frame_len(self) -> int:
        """Longest frame this interface carries, in bytes."""
        return max_frame_len(self.mtu)


class DeviceWrapper(Device):
    """A device that wraps another (smoltcp's phy wrappers): it takes the
    wrapped device's identity (name, MTU, MAC, up state) and passes every
    entry point on unless a subclass changes it.  ``stats()`` is the wrapped
    device's counters with the wrapper's own (``self._c``) beside them.
    """

    def __init__(self, device: Device, serializer_name: str) -> None:
        self.inner = device
        self.serializer = Serializer(serializer_name)
        self._c: dict[str, int] = {}

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.inner.name

    @property
    def mtu(self) -> int:  # type: ignore[override]
        return self.inner.mtu

    @property
    def mac(self) -> bytes:  # type: ignore[override]
        return self.inner.mac

    @property
    def is_up(self) -> bool:
        return self.inner.is_up

    def up(self) -> None:
        with self.serializer:
            self.inner.up()

    def down(self) -> None:
        with self.serializer:
            self.inner.down()

    def wait(self, timeout: Optional[float] = None) -> bool:
        return self.inner.wait(timeout)

    def wakeup(self) -> None:
        self.inner.wakeup()

    def stats(self) -> dict[str, int]:
        out = self.inner.stats()
        out.update(self._c)
        return out


def _counters(*names: str) -> dict[str, int]:
    return dict.fromkeys(names, 0)


class RingDevice(Device):
    """A device with a bounded rx ring, the base of the in-process devices.

    Subclasses say where transmitted frames go (``_tx``) and may feed the
    ring lazily (``_refill``); frames reach the ring through ``_arrive``,
    which any thread may call (the wire does not take the driver's lock, only
    the ring's).  Devices start up.

    A ring entry is one frame (``bytes``) or a sealed :class:`FrameBatch`
    carried whole; the ring's bound counts frames either way, a batch
    arriving at a ring with room for only some of its frames is cut there,
    and a take may end inside a batch (the rest stays first on the ring).

    Counters: ``tx_frames``/``tx_bytes`` handed to the wire,
    ``tx_dropped_down``, ``tx_oversize`` (longer than ``max_frame_len``);
    ``rx_frames``/``rx_bytes`` handed to the stack, ``rx_ring_full`` (arrived
    at a full ring), ``rx_dropped_down`` (arrived while down, or in the ring
    when it went down), ``rx_no_buffer`` (no free pool buffer),
    ``rx_oversize`` (longer than the pool's buffers).
    """

    def __init__(self, name: str, mtu: int = DEFAULT_MTU, mac: bytes = b"\x02\x00\x00\x00\x00\x01",
                 rx_ring_size: int = 1024) -> None:
        if mtu < MIN_MTU:
            raise ValueError(f"mtu {mtu} is below the IPv4 minimum of {MIN_MTU}")
        if rx_ring_size < 1:
            raise ValueError(f"rx_ring_size must be at least 1, got {rx_ring_size}")
        self.name = name
        self.mtu = mtu
        self.mac = _check_mac(mac)
        self.serializer = Serializer(name)
        self.rx_ring_size = rx_ring_size
        self._max_frame = max_frame_len(mtu)
        self._up = True
        # The ring has its own lock (the condition's): the wire fills it from
        # the sender's thread, which must not need this driver's serializer
        # (two ends transmitting to each other would deadlock).
        self._ring: deque[Union[bytes, FrameBatch]] = deque()
        #: frames on the ring (a batch entry holds many); under ``_ring_lock``
        self._queued = 0
        self._ring_lock = threading.Lock()
        #: the ring lock's condition (``wait`` sleeps on it); plain locking
        #: takes ``_ring_lock`` itself, cheaper than the condition's wrapper
        self._ring_cv = threading.Condition(self._ring_lock)
        self._wakeups = 0
        #: threads asleep in ``wait`` (under the ring lock): an arrival with
        #: none skips the condition's notify
        self._sleepers = 0
        #: a subclass feeds the ring lazily (``_refill`` is not the no-op)
        self._lazy = type(self)._refill is not RingDevice._refill
        #: where the rx interrupt goes instead of ``wait`` (see ``rx_notify``)
        self._rx_notify: Optional[Callable[[], None]] = None
        self._c = _counters("tx_frames", "tx_bytes", "tx_dropped_down", "tx_oversize",
                            "rx_frames", "rx_bytes", "rx_ring_full", "rx_dropped_down",
                            "rx_no_buffer", "rx_oversize")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {'up' if self._up else 'down'} mtu {self.mtu}>"

    # -- hooks ---------------------------------------------------------------

    @abc.abstractmethod
    def _tx(self, frames: Union[list[bytes], FrameBatch]) -> None:
        """Put frames (already checked: up, not oversize, at least one) on
        the wire: a list of bytes, which may be the caller's own list (keep
        the frames, not the list), or a sealed batch.  Runs inside the
        serializer."""

    def _refill(self) -> None:
        """Move frames from the device's source into the ring (nothing by default).
        Runs inside the serializer."""

    def _next_ready_in(self) -> Optional[float]:
        """Seconds until ``_refill`` has more to deliver; None if nothing is pending."""
        return None

    # -- the wire side -------------------------------------------------------

    def _arrive(self, frames: Union[list[bytes], FrameBatch]) -> int:
        """Frames (a list of bytes or a sealed batch) reaching the ring from
        the wire; the number queued.  Drops (down, ring full) are counted
        here, where a NIC drops them."""
        with self._ring_lock:
            if not self._up:
                self._c["rx_dropped_down"] += len(frames)
                return 0
            ring = self._ring
            room = self.rx_ring_size - self._queued
            n = len(frames)
            if n > room:
                self._c["rx_ring_full"] += n - room
                frames = frames[:room]
                n = room
            if n:
                if type(frames) is FrameBatch:
                    ring.append(frames)
                else:
                    ring.extend(frames)
                self._queued += n
                hook = self._rx_notify
                if hook is not None:
                    hook()
                elif self._sleepers:
                    # A sleeper counted itself under this lock before its
                    # last look at the ring: it is woken.  One that counts
                    # itself later sees these frames in its first look.
                    self._ring_cv.notify_all()
            return n

    def _take(self, n: int) -> tuple[list[Union[bytes, FrameBatch]], int]:
        """Up to ``n`` (>= 1) frames off the ring, oldest first: the ring
        entries (a batch taken in part is cut) and how many frames they hold."""
        with self._ring_lock:
            ring = self._ring
            queued = self._queued
            if n >= queued:
                out = list(ring)
                ring.clear()
                self._queued = 0
                return out, queued
            out = []
            put = out.append
            pop = ring.popleft
            need = n
            while need:
                e = ring[0]
                if type(e) is bytes:
                    put(pop())
                    need -= 1
                    continue
                k = len(e)
                if k <= need:
                    put(pop())
                    need -= k
                else:
                    # Both parts share the batch's memory (sealed: it never changes).
                    put(e[:need])
                    ring[0] = e[need:]
                    need = 0
            self._queued = queued - n
            return out, n

    # -- entry points --------------------------------------------------------

    @property
    def is_up(self) -> bool:
        return self._up

    def up(self) -> None:
        with self.serializer:
            with self._ring_cv:
                self._up = True

    def down(self) -> None:
        with self.serializer:
            with self._ring_cv:
                self._up = False
                # A NIC going down resets its rings: what was waiting is lost.
                self._c["rx_dropped_down"] += self._queued
                self._ring.clear()
                self._queued = 0
                self._ring_cv.notify_all()

    def transmit(self, frames: Frames) -> int:
        with self.serializer:
            c = self._c
            if not self._up:
                c["tx_dropped_down"] += len(frames)
                return 0
            limit = self._max_frame
            if type(frames) is FrameBatch:
                if frames.max_len <= limit:
                    # The batch itself goes on the wire: sealed, it never changes.
                    n = len(frames)
                    if n:
                        frames.seal()
                        self._tx(frames)
                        c["tx_frames"] += n
                        c["tx_bytes"] += frames.nbytes
                    return n
                frames = frames.frames()
            elif len(frames) == 1 and type(frames[0]) is bytes:
                # One frame (a datagram sent): the checks below without the lists.
                frame = frames[0]
                if len(frame) > limit:
                    c["tx_oversize"] += 1
                    return 0
                self._tx([frame])
                c["tx_frames"] += 1
                c["tx_bytes"] += len(frame)
                return 1
            # The wire carries copies (bytes): the caller may reuse its buffers at once.
            out, nbytes, oversize = checked_frames(frames, limit)
            if oversize:
                c["tx_oversize"] += oversize
            if out:
                self._tx(out)
            c["tx_frames"] += len(out)
            c["tx_bytes"] += nbytes
            return len(out)

    def receive(self, max_frames: int) -> list[bytes]:
        with self.serializer:
            if self._lazy:
                self._refill()
            if max_frames <= 0:
                return []
            entries, n = self._take(max_frames)
            out: list[bytes] = []
            for e in entries:
                if isinstance(e, bytes):
                    out.append(e)
                else:
                    out.extend(e.frames())
            self._c["rx_frames"] += n
            self._c["rx_bytes"] += sum(map(len, out))
            return out

    def receive_into(self, pool: BufferPool, handles_out: npt.NDArray[np.uint64],
                     lengths_out: npt.NDArray[np.uint32]) -> int:
        n = min(len(handles_out), len(lengths_out))
        with self.serializer:
            if self._lazy:
                self._refill()
            if n <= 0:
                return 0
            entries, k = self._take(n)
            return _copy_into_pool(entries, pool, handles_out, lengths_out, self._c, k)

    def wait(self, timeout: Optional[float] = None) -> bool:
        # Not an entry point: the puller sleeps here without the serializer,
        # taking it only briefly to let the source refill the ring.
        cv = self._ring_cv
        with cv:
            if self._ring:
                return True
        with self.serializer:
            self._refill()
        pending = self._next_ready_in()
        if pending is not None and (timeout is None or pending < timeout):
            # The source has frames due later: sleep until then, then refill.
            with cv:
                seen = self._wakeups
                if not self._ring:
                    self._sleep(seen, pending)
                if self._ring or self._wakeups != seen or not self._up:
                    return bool(self._ring)
            rest = None if timeout is None else max(0.0, timeout - pending)
            return self.wait(rest)
        with cv:
            seen = self._wakeups
            if not self._ring and self._up:
                self._sleep(seen, timeout)
            return bool(self._ring)

    def _sleep(self, seen: int, timeout: Optional[float]) -> None:
        """Sleep on the ring's condition (its lock held) until frames arrive,
        a ``wakeup`` after ``seen``, the device goes down or ``timeout``."""
        self._sleepers += 1
        try:
            self._ring_cv.wait_for(
                lambda: bool(self._ring) or self._wakeups != seen or not self._up, timeout)
        finally:
            self._sleepers -= 1

    def wakeup(self) -> None:
        with self._ring_cv:
            self._wakeups += 1
            self._ring_cv.notify_all()

    def rx_ready(self) -> bool:
        # len() of a deque is atomic: a stale answer only costs one more look.
        return bool(self._ring)

    def rx_notify(self, fn: Optional[Callable[[], None]]) -> bool:
        if fn is not None and self._lazy:
            # A lazy source fills the ring only from wait/receive: an
            # arrival hook would never hear of those frames.
            return False
        # One store, no lock: an arrival queues its frames, then reads the
        # hook.  So an arrival that still saw the old hook queued its frames
        # before the look at the ring below, which then wakes the puller.
        self._rx_notify = fn
        if fn is None and self._ring:
            # Re-armed with frames waiting: the puller takes them.
            with self._ring_lock:
                self._ring_cv.notify_all()
        return True

    def stats(self) -> dict[str, int]:
        with self._ring_cv:
            out = dict(self._c)
            out["rx_ring_queued"] = self._queued
        return out


def _copy_into_pool(frames: Sequence[Union[bytes, FrameBatch]], pool: BufferPool,
                    handles_out: npt.NDArray[np.uint64], lengths_out: npt.NDArray[np.uint32],
                    c: dict[str, int], nframes: Optional[int] = None) -> int:
    """Copy ``frames`` (bytes, or batches of ``nframes`` frames in all) into
    buffers of ``pool`` (one compiled call); fill the outputs and count.
    Frames longer than a buffer are dropped (``rx_oversize``), frames beyond
    the pool's free buffers too (``rx_no_buffer``)."""
    if not frames:
        return 0
    if nframes is None:
        nframes = len(frames)
    got, oversize, nbytes = store_frames(pool, frames, handles_out, lengths_out)
    if got + oversize < nframes:
        c["rx_no_buffer"] += nframes - got - oversize
    if oversize:
        c["rx_oversize"] += oversize
    c["rx_frames"] += got
    c["rx_bytes"] += nbytes
    return got
