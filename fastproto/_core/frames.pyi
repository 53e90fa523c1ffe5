"""Frame batches: many Ethernet frames in one buffer, no Python object per frame."""
from typing import Iterable, Iterator, Sequence, Union, overload

import numpy as np
import numpy.typing as npt

from fastproto._core.buffers import BufferPool

_Frame = Union[bytes, bytearray, memoryview]

class FrameBatch(Sequence[bytes]):
    """FrameBatch(frames=()): Ethernet frames in one buffer, in order; sealed
    batches never change (``transmit`` seals)."""

    def __init__(self, frames: Iterable[_Frame] = ...) -> None: ...
    def append(self, frame: _Frame) -> None:
        """Add a copy of ``frame``; ValueError once sealed."""
    def extend(self, frames: Iterable[_Frame]) -> None: ...
    def reserve(self, nbytes: int, nframes: int = 0) -> None:
        """Make room for ``nbytes`` more bytes in ``nframes`` more frames at once."""
    def seal(self) -> None:
        """Freeze the batch: no more frames."""
    @property
    def sealed(self) -> bool: ...
    @property
    def nbytes(self) -> int:
        """Total bytes of the frames."""
    @property
    def max_len(self) -> int:
        """The longest frame's length in bytes (0 when empty)."""
    def lengths(self) -> list[int]: ...
    def frames(self) -> list[bytes]:
        """Copies of the frames."""
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[bytes]: ...
    @overload
    def __getitem__(self, index: int) -> bytes: ...
    @overload
    def __getitem__(self, index: slice) -> FrameBatch: ...

def checked_frames(frames: Sequence[_Frame], limit: int) -> tuple[list[bytes], int, int]:
    """(frames of at most ``limit`` bytes as bytes, their total bytes, how many were longer)."""

def store_frames(pool: BufferPool, entries: Sequence[Union[bytes, FrameBatch]],
                 handles_out: npt.NDArray[np.uint64],
                 lengths_out: npt.NDArray[np.uint32]) -> tuple[int, int, int]:
    """Copy the frames of ``entries`` into new buffers in order; (stored, oversize skipped, bytes stored)."""
