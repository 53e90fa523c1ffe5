"""The interface (phy) contract: what the stack asks of a network device.

A device moves Ethernet frames in batches.  ``transmit`` hands frames to the
wire; received frames wait in a bounded rx ring (the "hardware FIFO") until
the stack pulls them with ``receive`` or, zero-copy into its buffer pool,
``receive_into``.  ``wait`` is the interrupt: the stack's puller thread sleeps
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

Frame = Union[bytes, bytearray, memoryview]

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
    def transmit(self, frames: Sequence[Frame]) -> int:
        """Hand ``frames`` to the wire; the number accepted.  The rest are
        dropped, each under a named counter."""

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
        changed)."""
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
        self._ring: deque[bytes] = deque()
        self._ring_lock = threading.Lock()
        #: the ring lock's condition (``wait`` sleeps on it); plain locking
        #: takes ``_ring_lock`` itself, cheaper than the condition's wrapper
        self._ring_cv = threading.Condition(self._ring_lock)
        self._wakeups = 0
        #: where the rx interrupt goes instead of ``wait`` (see ``rx_notify``)
        self._rx_notify: Optional[Callable[[], None]] = None
        self._c = _counters("tx_frames", "tx_bytes", "tx_dropped_down", "tx_oversize",
                            "rx_frames", "rx_bytes", "rx_ring_full", "rx_dropped_down",
                            "rx_no_buffer", "rx_oversize")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {'up' if self._up else 'down'} mtu {self.mtu}>"

    # -- hooks ---------------------------------------------------------------

    @abc.abstractmethod
    def _tx(self, frames: list[bytes]) -> None:
        """Put frames (already checked: up, not oversize) on the wire.  Runs
        inside the serializer."""

    def _refill(self) -> None:
        """Move frames from the device's source into the ring (nothing by default).
        Runs inside the serializer."""

    def _next_ready_in(self) -> Optional[float]:
        """Seconds until ``_refill`` has more to deliver; None if nothing is pending."""
        return None

    # -- the wire side -------------------------------------------------------

    def _arrive(self, frames: list[bytes]) -> int:
        """Frames reaching the ring from the wire; the number queued.  Drops
        (down, ring full) are counted here, where a NIC drops them."""
        with self._ring_lock:
            if not self._up:
                self._c["rx_dropped_down"] += len(frames)
                return 0
            ring = self._ring
            room = self.rx_ring_size - len(ring)
            n = len(frames)
            if n > room:
                self._c["rx_ring_full"] += n - room
                frames = frames[:room]
                n = room
            if n:
                ring.extend(frames)
                hook = self._rx_notify
                if hook is None:
                    self._ring_cv.notify_all()
                else:
                    hook()
            return n

    def _take(self, n: int) -> list[bytes]:
        """Up to ``n`` frames off the ring, oldest first."""
        with self._ring_lock:
            ring = self._ring
            if n >= len(ring):
                out = list(ring)
                ring.clear()
                return out
            pop = ring.popleft
            return [pop() for _ in range(n)]

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
                self._c["rx_dropped_down"] += len(self._ring)
                self._ring.clear()
                self._ring_cv.notify_all()

    def transmit(self, frames: Sequence[Frame]) -> int:
        with self.serializer:
            c = self._c
            if not self._up:
                c["tx_dropped_down"] += len(frames)
                return 0
            limit = self._max_frame
            if len(frames) == 1 and type(frames[0]) is bytes:
                # One frame (a datagram sent): the checks below without the lists.
                frame = frames[0]
                if len(frame) > limit:
                    c["tx_oversize"] += 1
                    return 0
                self._tx([frame])
                c["tx_frames"] += 1
                c["tx_bytes"] += len(frame)
                return 1
            # The wire carries copies: the caller may reuse its buffers at once.
            out = [f if type(f) is bytes else bytes(f) for f in frames]
            lengths = list(map(len, out))
            if lengths and max(lengths) > limit:
                kept = [f for f in out if len(f) <= limit]
                c["tx_oversize"] += len(out) - len(kept)
                out = kept
                lengths = list(map(len, out))
            nbytes = sum(lengths)
            if out:
                self._tx(out)
            c["tx_frames"] += len(out)
            c["tx_bytes"] += nbytes
            return len(out)

    def receive(self, max_frames: int) -> list[bytes]:
        with self.serializer:
            self._refill()
            out = self._take(max_frames) if max_frames > 0 else []
            self._c["rx_frames"] += len(out)
            self._c["rx_bytes"] += sum(map(len, out))
            return out

    def receive_into(self, pool: BufferPool, handles_out: npt.NDArray[np.uint64],
                     lengths_out: npt.NDArray[np.uint32]) -> int:
        n = min(len(handles_out), len(lengths_out))
        with self.serializer:
            self._refill()
            if n <= 0:
                return 0
            frames = self._take(n)
            return _copy_into_pool(frames, pool, handles_out, lengths_out, self._c)

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
                    cv.wait_for(lambda: bool(self._ring) or self._wakeups != seen or not self._up,
                                pending)
                if self._ring or self._wakeups != seen or not self._up:
                    return bool(self._ring)
            rest = None if timeout is None else max(0.0, timeout - pending)
            return self.wait(rest)
        with cv:
            seen = self._wakeups
            if not self._ring and self._up:
                cv.wait_for(lambda: bool(self._ring) or self._wakeups != seen or not self._up,
                            timeout)
            return bool(self._ring)

    def wakeup(self) -> None:
        with self._ring_cv:
            self._wakeups += 1
            self._ring_cv.notify_all()

    def rx_ready(self) -> bool:
        # len() of a deque is atomic: a stale answer only costs one more look.
        return bool(self._ring)

    def rx_notify(self, fn: Optional[Callable[[], None]]) -> bool:
        if fn is not None and type(self)._refill is not RingDevice._refill:
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
            out["rx_ring_queued"] = len(self._ring)
        return out


def _copy_into_pool(frames: list[bytes], pool: BufferPool, handles_out: npt.NDArray[np.uint64],
                    lengths_out: npt.NDArray[np.uint32], c: dict[str, int]) -> int:
    """Copy ``frames`` into buffers of ``pool`` (one compiled call); fill the
    outputs and count.  Frames longer than a buffer are dropped
    (``rx_oversize``), frames beyond the pool's free buffers too
    (``rx_no_buffer``)."""
    if not frames:
        return 0
    got, oversize, nbytes = pool.store(frames, handles_out, lengths_out)
    if got + oversize < len(frames):
        c["rx_no_buffer"] += len(frames) - got - oversize
    if oversize:
        c["rx_oversize"] += oversize
    c["rx_frames"] += got
    c["rx_bytes"] += nbytes
    return got
