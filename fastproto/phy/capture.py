"""Capture and replay: pcap files as seen by a device.

``PcapCapture`` wraps any device and records every frame transmitted and
received through it; ``PcapReplay`` is a device whose receive side plays a
pcap file back.  The file format is :mod:`fastproto.phy.pcap`.
"""
from __future__ import annotations

import os
import time
from typing import Callable, Optional, Union

import numpy as np
import numpy.typing as npt

from fastproto import BufferPool
from fastproto._core.frames import FrameBatch
from fastproto.phy.device import DEFAULT_MTU, Device, DeviceWrapper, Frames, RingDevice
from fastproto.phy.pcap import PcapReader, PcapWriter


class PcapCapture(DeviceWrapper):
    """PcapCapture(device, path): ``device``, with every frame through it written to ``path``.

    Transmitted frames are recorded as offered to ``transmit`` (what the
    stack sent, including frames the device then drops: tcpdump's view);
    received frames as handed to the stack.  ``clock`` gives the timestamps
    (seconds since the epoch).  After ``close`` frames still pass, unrecorded.

    Counters (``stats()``, beside the wrapped device's): ``capture_tx``,
    ``capture_rx`` (frames recorded).
    """

    def __init__(self, device: Device, path: str | os.PathLike, snaplen: int = 262144,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(device, f"{device.name}+pcap")
        self.path = os.fspath(path)
        self.clock = clock
        self._writer: Optional[PcapWriter] = PcapWriter(self.path, snaplen=snaplen)
        self._c = {"capture_tx": 0, "capture_rx": 0}

    @property
    def closed(self) -> bool:
        return self._writer is None

    def __repr__(self) -> str:
        return f"<PcapCapture {self.path} on {self.inner!r}>"

    def transmit(self, frames: Frames) -> int:
        with self.serializer:
            if self._writer is not None and len(frames):
                # (a FrameBatch iterates as its frames, copied: capture is not the fast path)
                self._writer.write_many(frames, self.clock())  # type: ignore[arg-type]  # bytearray too
                self._c["capture_tx"] += len(frames)
            return self.inner.transmit(frames)

    def receive(self, max_frames: int) -> list[bytes]:
        with self.serializer:
            frames = self.inner.receive(max_frames)
            if self._writer is not None and frames:
                self._writer.write_many(frames, self.clock())
                self._c["capture_rx"] += len(frames)
            return frames

    def receive_into(self, pool: BufferPool, handles_out: npt.NDArray[np.uint64],
                     lengths_out: npt.NDArray[np.uint32]) -> int:
        with self.serializer:
            n = self.inner.receive_into(pool, handles_out, lengths_out)
            w = self._writer
            if w is not None and n:
                ts = self.clock()
                size = pool.size
                flat = pool.data.data.cast("B")
                for h, length in zip(handles_out[:n].tolist(), lengths_out[:n].tolist()):
                    off = h * size
                    w.write(flat[off:off + length], ts)
                self._c["capture_rx"] += n
            return n

    def flush(self) -> None:
        """Push what was recorded so far to the file."""
        with self.serializer:
            if self._writer is not None:
                self._writer.flush()

    def close(self) -> None:
        """Finish the file; the device goes on passing frames."""
        with self.serializer:
            if self._writer is not None:
                self._writer.close()
                self._writer = None

    def __enter__(self) -> "PcapCapture":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PcapReplay(RingDevice):
    """PcapReplay(path, mtu=1500, realtime=False): receives the frames of a pcap file.

    Without ``realtime`` the file's frames enter the rx ring as fast as the
    stack takes them (the file waits; the ring never overflows).  With it,
    frame ``i`` arrives ``ts[i] - ts[0]`` seconds (by ``clock``) after the
    first receive or wait, and a ring the stack does not drain in time drops
    (``rx_ring_full``) as a real wire would.  Transmitted frames are
    discarded (``tx_discarded``).  While down the file does not advance.
    """

    def __init__(self, path: str | os.PathLike, mtu: int = DEFAULT_MTU, realtime: bool = False,
                 rx_ring_size: int = 1024, mac: bytes = b"\x02\x00\x00\x00\x00\x01",
                 name: str = "replay", clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(name, mtu=mtu, mac=mac, rx_ring_size=rx_ring_size)
        records = list(PcapReader(path))
        self.path = os.fspath(path)
        self.realtime = realtime
        self.clock = clock
        self._frames = [f for _, f in records]
        t0 = records[0][0] if records else 0.0
        self._offsets = [t - t0 for t, _ in records]
        self._next = 0
        self._start: Optional[float] = None
        self._c["tx_discarded"] = 0

    @property
    def remaining(self) -> int:
        """Frames of the file not yet delivered to the rx ring."""
        return len(self._frames) - self._next

    def _tx(self, frames: Union[list[bytes], FrameBatch]) -> None:
        self._c["tx_discarded"] += len(frames)

    def _refill(self) -> None:
        if not self._up or self._next >= len(self._frames):
            return
        i = self._next
        if self.realtime:
            if self._start is None:
                self._start = self.clock()
            elapsed = self.clock() - self._start
            j = i
            offsets = self._offsets
            while j < len(offsets) and offsets[j] <= elapsed:
                j += 1
        else:
            with self._ring_cv:
                room = self.rx_ring_size - self._queued
            j = min(len(self._frames), i + room)
        if j > i:
            self._arrive(self._frames[i:j])
            self._next = j

    def _next_ready_in(self) -> Optional[float]:
        if not self.realtime or self._next >= len(self._frames) or self._start is None:
            return None
        return max(0.0, self._offsets[self._next] - (self.clock() - self._start))
