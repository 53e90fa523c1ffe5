"""A Linux TAP device as a fastproto interface: the kernel is the peer on the wire.

Frames the kernel sends out of the TAP device are what this interface
receives; frames this interface transmits arrive at the kernel as if from a
NIC.  The receive and transmit loops run in the compiled core
(``fastproto._core.tap``) without the GIL, one batch per call.  See
``docs/tap.md``.
"""
from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import Callable, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

from fastproto._core.buffers import BufferPool
from fastproto._core.frames import FrameBatch
from fastproto._core.serializer import Serializer
from fastproto._core.tap import ETH_HLEN, VLAN_HLEN, TapPort, get_mac, set_mac, set_mtu, set_up
from fastproto.wire.ethernet import mac_bytes

Frame = Union[bytes, bytearray, memoryview]

#: seconds ``wait`` leaves a device just handed back by a pulling receiver to
#: that receiver before taking the frames itself: a receiver reading a stream
#: calls recv again within microseconds, and a frame taken by the puller
#: thread instead costs two thread hops (docs/tap.md)
RX_HANDBACK_GRACE = 0.001


class TapInterface:
    """TapInterface(name="fp0", mtu=1500, mac=None, serializer=None, offload=False): a TAP device.

    Creates TAP device ``name`` in the calling thread's network namespace
    (``/dev/net/tun``, ``IFF_TAP | IFF_NO_PI``, non-blocking) with ``mtu``
    bytes of IP MTU and, when given, hardware address ``mac`` ("02:..." or 6
    bytes); otherwise ``mac`` is the one the kernel chose.  The device is
    down until :meth:`up`.  Raises OSError with the errno when it cannot be
    created (EACCES/EPERM without CAP_NET_ADMIN, EINVAL for a bad name or
    MTU, EBUSY when another process has it).

    ``offload=True`` opens the device with ``IFF_VNET_HDR`` and announces
    checksum and TCP segmentation offloads to the kernel (docs/tap.md):
    Linux then sends TCP in super-frames of up to 64 KiB with partial
    checksums, which the receive path cuts into ordinary MTU-sized,
    checksummed frames in the core; and ``transmit`` accepts a TCP frame
    longer than ``max_frame_len`` (up to a 65535-byte IP datagram), which
    the kernel segments and checksums (see :meth:`transmit_gso`).

    Every entry point (up, down, transmit, transmit_handles, receive,
    receive_into, close) runs inside ``serializer`` (a fresh one named after
    the device unless given), so one thread at a time drives the device.
    ``wait`` and ``wakeup`` do not take it: a sleeping puller must not keep
    the transmit path out.
    """

    def __init__(self, name: str = "fp0", mtu: int = 1500, mac: Optional[Union[str, bytes]] = None,
                 serializer: Optional[Serializer] = None, offload: bool = False) -> None:
        if not 68 <= mtu <= 65535 - ETH_HLEN - VLAN_HLEN:
            # RFC 791: every IPv4 host link carries 68-byte datagrams
            raise ValueError(f"mtu must be 68..{65535 - ETH_HLEN - VLAN_HLEN}, not {mtu}")
        mac_b = mac_bytes(mac) if mac is not None else None
        self._port = TapPort(name, mtu + ETH_HLEN + VLAN_HLEN, bool(offload))
        try:
            self.name: str = self._port.name
            set_mtu(self.name, mtu)
            if mac_b is not None:
                set_mac(self.name, mac_b)
            self._mac: bytes = get_mac(self.name)
        except BaseException:
            self._port.close()
            raise
        self._mtu = mtu
        self._up = False
        self.serializer: Serializer = serializer if serializer is not None else Serializer(self.name)
        #: True while a receiver pulls the device itself (``rx_notify``)
        self._rx_routed = False
        #: where ``wait`` sleeps while the receive interrupt is routed away
        #: (the descriptor is then the pulling receiver's alone)
        self._masked_cv = threading.Condition(threading.Lock())
        #: threads in ``wait`` with the descriptor masked (under _masked_cv)
        self._masked = 0
        #: a thread in ``wait`` sleeps until the hand-back (under _masked_cv)
        self._masked_long = False
        #: how many times the interrupt was routed to a receiver
        self._rx_routes = 0
        #: wakeup/down/close calls, which end a masked ``wait`` too
        self._masked_wakeups = 0

    # -- properties ---------------------------------------------------------

    @property
    def mtu(self) -> int:
        """IP MTU in bytes; the longest frame sent is mtu + 18 (Ethernet header + one VLAN tag)."""
        return self._mtu

    @property
    def mac(self) -> bytes:
        """The device's hardware address, 6 bytes."""
        return self._mac

    @property
    def max_frame_len(self) -> int:
        """Longest frame transmitted, in bytes: mtu + 14-byte header + one 4-byte 802.1Q tag."""
        return self._mtu + ETH_HLEN + VLAN_HLEN

    @property
    def offload(self) -> bool:
        """True if checksum and TCP segmentation offloads are on (``IFF_VNET_HDR``)."""
        return bool(self._port.offload)

    @property
    def is_up(self) -> bool:
        """True between up() and down()/close()."""
        return self._up

    @property
    def closed(self) -> bool:
        return bool(self._port.closed)

    def fileno(self) -> int:
        """The TAP file descriptor (readable when a frame is queued)."""
        return int(self._port.fileno())

    # -- entry points -------------------------------------------------------

    def up(self) -> None:
        """Bring the device up (IFF_UP): the kernel starts sending frames to it."""
        with self.serializer:
            self._check_open()
            set_up(self.name, True)
            self._up = True

    def down(self) -> None:
        """Take the device down (clear IFF_UP).

        Frames still queued are dropped (rx_dropped_down), as a NIC resets its
        rings; until ``up`` transmits count tx_dropped_down and receives
        return nothing.  Waits in progress end (False).
        """
        with self.serializer:
            self._check_open()
            self._up = False
            set_up(self.name, False)
            self._port.drop_queued()
        self._port.wakeup()
        self._wake_masked()

    def transmit(self, frames: Union[Sequence[Frame], FrameBatch]) -> int:
        """Send each Ethernet frame (no FCS) of a sequence or a FrameBatch
        (sealed, read in place: no copy); returns how many the kernel took.

        A rejected frame (shorter than 14 bytes, longer than mtu + 18, or
        refused by write(2)) is counted under its reason and in tx_errors;
        the others still go.  Never raises for a bad frame; ValueError if
        closed.  With offloads a longer frame that is TCP goes as a
        super-frame the kernel cuts at the MTU's MSS (:meth:`transmit_gso`
        with ``mss=0``); any other longer frame counts tx_gso_bad.
        """
        sent = 0
        with self.serializer:
            self._check_open()
            if self._up:
                sent = int(self._port.tx_frames(frames))
            else:
                self._port.count_tx_dropped_down(len(frames))
        return sent

    def transmit_gso(self, frame: Frame, mss: int = 0) -> bool:
        """Send one TCP super-frame for the kernel to segment (``mss`` payload bytes each) and checksum.

        Needs ``offload=True``.  ``frame`` is Ethernet + IPv4 (header checksum
        right) or IPv6 + TCP with the IP length covering it, up to a
        65535-byte IP datagram; its TCP checksum field is ignored (the kernel
        completes it).  ``mss=0``: the MTU minus the IP and TCP headers.
        Returns True if the kernel took it; a rejected frame counts
        tx_gso_bad (or tx_write_failed) and tx_errors.
        """
        sent = False
        with self.serializer:
            self._check_open()
            if self._up:
                sent = bool(self._port.tx_gso(frame, mss))
            else:
                self._port.count_tx_dropped_down(1)
        return sent

    def transmit_handles(self, pool: BufferPool, handles: npt.NDArray[np.uint64],
                         lengths: npt.NDArray[np.uint32]) -> int:
        """Send frame i = ``pool.data[handles[i], :lengths[i]]`` for each i, without copying.

        Returns how many were sent; rejections are counted as in
        :meth:`transmit` (plus tx_bad_handle for a handle that is not an
        allocated buffer of ``pool``).  The buffers stay allocated.
        """
        sent = 0
        with self.serializer:
            self._check_open()
            if self._up:
                sent = int(self._port.tx_handles(pool, handles, lengths))
            else:
                self._port.count_tx_dropped_down(len(handles))
        return sent

    def receive_into(self, pool: BufferPool, handles_out: npt.NDArray[np.uint64],
                     lengths_out: npt.NDArray[np.uint32]) -> int:
        """Read up to len(handles_out) queued frames into buffers allocated from ``pool``.

        Returns n: frame i < n is ``pool.data[handles_out[i], :lengths_out[i]]``
        and its buffer now belongs to the caller.  0 when nothing is queued
        or the interface is down.  A frame that finds the pool empty is
        dropped (rx_no_buffer), one longer than a buffer too (rx_oversize).
        With offloads a super-frame from Linux arrives as its segments (each
        one frame); those that do not fit in ``handles_out`` come first in
        the next call.
        """
        got = 0
        with self.serializer:
            self._check_open()
            if self._up:
                got = int(self._port.rx_batch(pool, handles_out, lengths_out))
        return got

    def receive(self, max_frames: int) -> list[bytes]:
        """Up to ``max_frames`` queued frames, each copied into a new bytes object, oldest first."""
        out: list[bytes] = []
        with self.serializer:
            self._check_open()
            if self._up and max_frames > 0:
                out = list(self._port.rx_frames(max_frames))
        return out

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Sleep, without the GIL, until a frame is queued (True) or ``timeout`` seconds pass (False).

        ``wakeup``, ``down`` and ``close`` end it early (False unless a
        frame is ready).  A down interface returns False at once.  While
        the receive interrupt is routed to a pulling receiver
        (``rx_notify``) frames do not end it: it sleeps until the receiver
        hands the device back, then returns True if frames wait.
        """
        self._check_open()
        if not self._up:
            return False
        if self._rx_routed:
            return self._wait_masked(timeout)
        return bool(self._port.wait(timeout))

    def _wait_masked(self, timeout: Optional[float]) -> bool:
        """``wait`` while a receiver pulls: sleep until the device is left
        unpulled for ``RX_HANDBACK_GRACE`` seconds, a ``wakeup`` or
        ``timeout``; True if frames wait then."""
        cv = self._masked_cv
        deadline = None if timeout is None else time.monotonic() + timeout
        # Hot: receivers take the device in turn (a stream read by recv
        # after recv); this thread then looks once a grace, which costs the
        # receivers nothing, rather than be woken by every hand-back.
        hot = False
        with cv:
            self._masked += 1
            try:
                seen = self._masked_wakeups
                while self._masked_wakeups == seen:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        break
                    if not hot:
                        # Flagged and looked at under the lock, which
                        # rx_notify(None) takes to notify after clearing the
                        # route when it sees the flag: the hand-back is seen
                        # either here or by the notify.
                        self._masked_long = True
                        try:
                            if self._rx_routed:
                                cv.wait(left)
                        finally:
                            self._masked_long = False
                        hot = True
                        continue
                    routes = self._rx_routes
                    cv.wait(RX_HANDBACK_GRACE if left is None else min(left, RX_HANDBACK_GRACE))
                    if self._rx_routes == routes:
                        if not self._rx_routed:
                            break       # left unpulled a whole grace: take over
                        hot = False     # held without a break: sleep to the hand-back
            finally:
                self._masked -= 1
        return not self._rx_routed and bool(self._port.rx_ready())

    def wakeup(self) -> None:
        """End every ``wait`` in progress (to stop a puller thread) and every ``rx_sleep``."""
        self._port.wakeup()
        self._wake_masked()

    def rx_ready(self) -> bool:
        """True if a receive would find a frame (a zero-timeout poll(2), no serializer)."""
        return bool(self._port.rx_ready())

    def rx_notify(self, fn: Optional[Callable[[], None]]) -> bool:
        """Route the receive interrupt to a pulling receiver (``fn`` not None)
        or back to ``wait`` (None).  Frames come from the kernel, not from a
        thread of this process, so ``fn`` is never called: the pulling
        receiver sleeps on the descriptor itself in :meth:`rx_sleep` and a
        write by Linux wakes it directly, while ``wait`` ignores frames
        until the hand-back (None), which wakes it.  Always True."""
        if fn is not None:
            self._rx_routed = True
            self._rx_routes += 1
            return True
        self._rx_routed = False
        if self._masked_long:
            with self._masked_cv:
                self._masked_cv.notify_all()
        return True

    def rx_sleep_token(self) -> int:
        """A token for :meth:`rx_sleep`: read it before the last look for
        work, so that an ``rx_kick`` after the look ends the sleep."""
        return int(self._port.wake_count)

    def rx_sleep(self, timeout: float, token: int) -> bool:
        """Sleep, without the GIL, as the pulling receiver: until a frame is
        queued (True), an ``rx_kick``/``wakeup`` since ``token`` was read, or
        ``timeout`` seconds (False).  Unlike ``wait`` it sleeps while the
        device is down (no frame comes then) rather than returning at once."""
        if self._port.closed:
            return False
        return bool(self._port.wait(timeout, token))

    def rx_kick(self) -> None:
        """End an ``rx_sleep`` in progress (news for the pulling receiver)."""
        self._port.wakeup()

    def _wake_masked(self) -> None:
        self._masked_wakeups += 1
        if self._masked:
            with self._masked_cv:
                self._masked_cv.notify_all()

    def stats(self) -> dict[str, int]:
        """The device's counters (docs/tap.md): rx_frames, rx_bytes, rx_no_buffer, tx_errors..."""
        return dict(self._port.stats())

    def close(self) -> None:
        """Close the descriptor, which removes the device.  Idempotent."""
        with self.serializer:
            self._up = False
            self._port.close()
        self._wake_masked()

    def __enter__(self) -> "TapInterface":
        return self

    def __exit__(self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("up" if self._up else "down")
        off = " offload" if self.offload else ""
        return f"<TapInterface {self.name!r} {state} mtu={self._mtu} mac={self._mac.hex(':')}{off}>"

    def _check_open(self) -> None:
        if self._port.closed:
            raise ValueError(f"interface {self.name!r} is closed")
