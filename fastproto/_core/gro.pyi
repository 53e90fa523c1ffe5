"""Receive coalescing (GRO): in-order TCP segments of one flow as one chunk."""
from typing import Any, Optional

import numpy as np
import numpy.typing as npt

from fastproto._core.sockbuf import SockBuf

class Chunk:
    """The payload of coalesced segments: pieces of packet buffers, in order."""
    flags: int
    ts_ecr: int
    segments: int
    half: int
    deferred: int
    reread: int
    committed: bool
    def __len__(self) -> int: ...
    def ack_points(self, every: int = 2) -> list[int]: ...
    def stage_into(self, buf: SockBuf) -> int: ...
    def verify(self) -> int: ...
    def unstage(self) -> None: ...
    def append_to(self, buf: SockBuf) -> None: ...
    def tobytes(self) -> bytes: ...
    def __bytes__(self) -> bytes: ...
    def __buffer__(self, flags: int) -> memoryview: ...

def coalesce(rows: npt.NDArray[Any], handles: npt.NDArray[np.uint64], pool_data: npt.NDArray[np.uint8],
             max_bytes: int = 65535, by_handle: bool = False) -> tuple[list[int], list[Optional[Chunk]]]:
    """Chunk heads (indices) and their Chunk (None for a segment on its own)."""

def stage_segment(rows: npt.NDArray[Any], handle: int, pool_data: npt.NDArray[np.uint8],
                  buf: SockBuf) -> Optional[Chunk]:
    """The segment's payload staged onto ``buf`` (checksum verified in the copy), or None when bad."""

def fold_acks(rows: npt.NDArray[Any], handles: npt.NDArray[np.uint64], snd_una: int, snd_max: int,
              rcv_nxt: int, ts_ok: bool = False,
              ts_recent: int = 0) -> Optional[tuple[npt.NDArray[np.uint64], int]]:
    """The handles without the pure ACKs the next segment covers, and how many those were."""
