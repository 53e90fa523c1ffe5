"""Classic libpcap capture files (the format tcpdump, tshark and Wireshark open).

Format: a 24-byte global header (magic 0xa1b2c3d4 for microsecond or
0xa1b23c4d for nanosecond timestamps, version 2.4, snaplen, link type) and, per
frame, a 16-byte record header (seconds, sub-second, captured length, original
length) followed by the captured bytes.  Link type 1 is Ethernet.
"""
from __future__ import annotations

import os
import struct
import time
from typing import BinaryIO, Iterable, Iterator, Optional

LINKTYPE_ETHERNET = 1
_MAGIC_US = 0xA1B2C3D4
_MAGIC_NS = 0xA1B23C4D
_GLOBAL = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")


class PcapWriter:
    """Appends frames to a pcap file (nanosecond timestamps, Ethernet)."""

    def __init__(self, path: str | os.PathLike, snaplen: int = 262144,
                 linktype: int = LINKTYPE_ETHERNET) -> None:
        self.path = os.fspath(path)
        self.snaplen = snaplen
        self._f: Optional[BinaryIO] = open(self.path, "wb")
        self._f.write(_GLOBAL.pack(_MAGIC_NS, 2, 4, 0, 0, snaplen, linktype))
        self.frames = 0

    def write(self, frame: bytes | memoryview, timestamp: Optional[float] = None) -> None:
        """Record one frame, truncated to the snap length; ``timestamp`` in seconds
        since the epoch (now when omitted)."""
        if self._f is None:
            raise ValueError("write to a closed PcapWriter")
        ns = time.time_ns() if timestamp is None else int(timestamp * 1e9)
        caplen = min(len(frame), self.snaplen)
        self._f.write(_RECORD.pack(ns // 1_000_000_000, ns % 1_000_000_000, caplen, len(frame)))
        self._f.write(frame[:caplen])
        self.frames += 1

    def write_many(self, frames: Iterable[bytes | memoryview], timestamp: Optional[float] = None) -> None:
        """Record several frames with one timestamp (a batch arrives at once)."""
        ts = time.time() if timestamp is None else timestamp
        for frame in frames:
            self.write(frame, ts)

    def flush(self) -> None:
        if self._f is not None:
            self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self) -> "PcapWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PcapReader:
    """Reads frames and timestamps back from a pcap file of either byte order.

    A truncated last record ends the iteration (a capture cut short by a crash
    is still readable up to it); ``truncated`` tells whether that happened.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        with open(self.path, "rb") as f:
            self._data = f.read()
        if len(self._data) < _GLOBAL.size:
            raise ValueError(f"{self.path}: too short for a pcap header")
        magic = struct.unpack_from("<I", self._data)[0]
        if magic in (_MAGIC_US, _MAGIC_NS):
            endian = "<"
        elif struct.unpack_from(">I", self._data)[0] in (_MAGIC_US, _MAGIC_NS):
            endian = ">"
            magic = struct.unpack_from(">I", self._data)[0]
        else:
            raise ValueError(f"{self.path}: not a pcap file (magic {magic:#x})")
        self._record = struct.Struct(endian + "IIII")
        _, _, _, _, _, self.snaplen, self.linktype = struct.unpack_from(endian + "IHHiIII", self._data)
        self._divisor = 1e9 if magic == _MAGIC_NS else 1e6
        self.truncated = False

    def __iter__(self) -> Iterator[tuple[float, bytes]]:
        """(timestamp in seconds, frame bytes) per record."""
        data, off, rec = self._data, _GLOBAL.size, self._record
        while off + rec.size <= len(data):
            sec, frac, caplen, _ = rec.unpack_from(data, off)
            off += rec.size
            if off + caplen > len(data):
                self.truncated = True
                return
            yield sec + frac / self._divisor, data[off:off + caplen]
            off += caplen
        if off != len(data):
            self.truncated = True

    def frames(self) -> list[bytes]:
        return [frame for _, frame in self]
