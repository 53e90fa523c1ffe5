"""Packet buffers: a pool of fixed-size buffers in one NumPy array, and batches."""
from typing import Iterable, Optional, Union

import numpy as np
import numpy.typing as npt

from fastproto._core.pcq import _Items

_Frame = Union[bytes, bytearray, memoryview]

class BufferPool:
    """BufferPool(count, size=2048): ``count`` buffers of ``size`` bytes."""

    @property
    def data(self) -> npt.NDArray[np.uint8]:
        """The (count, size) uint8 array holding every buffer; a handle is a row."""
    @property
    def count(self) -> int: ...
    @property
    def size(self) -> int: ...
    @property
    def available(self) -> int:
        """Buffers free right now."""
    def __init__(self, count: int, size: int = 2048) -> None: ...
    def alloc(self) -> Optional[int]:
        """Take a free buffer; its handle, or None if none is free."""
    def free(self, handle: int) -> None:
        """Return an allocated buffer; ValueError if out of range or not allocated."""
    def alloc_many(self, n: int) -> npt.NDArray[np.uint64]:
        """Take up to ``n`` free buffers; their handles."""
    def free_many(self, handles: _Items) -> None:
        """Return many buffers, all or none (ValueError on a bad handle)."""
    def is_allocated(self, handle: int) -> bool: ...
    def view(self, handle: int, length: Optional[int] = None) -> memoryview:
        """Writable zero-copy view of the first ``length`` bytes of a buffer."""
    def store(self, frames: list[bytes], handles_out: npt.NDArray[np.uint64],
              lengths_out: npt.NDArray[np.uint32]) -> tuple[int, int, int]:
        """Copy frames into new buffers in order; (stored, oversize skipped, bytes stored)."""
    def batch_from_frames(self, frames: Iterable[_Frame]) -> Batch:
        """A Batch holding a copy of each frame in its own buffer."""

class Batch:
    """Batch(pool, capacity): up to ``capacity`` packets of ``pool``."""

    @property
    def pool(self) -> BufferPool: ...
    @property
    def capacity(self) -> int: ...
    @property
    def count(self) -> int: ...
    @property
    def handles(self) -> npt.NDArray[np.uint64]:
        """Handles of the packets (a view, ``count`` long)."""
    @property
    def lengths(self) -> npt.NDArray[np.uint32]:
        """Lengths in bytes of the packets (a view, ``count`` long)."""
    def __init__(self, pool: BufferPool, capacity: int) -> None: ...
    def append(self, handle: int, length: int) -> None: ...
    def frames(self) -> list[bytes]:
        """The packets' bytes, copied."""
    def free(self) -> None:
        """Return the batch's buffers to the pool and empty it."""
    def clear(self) -> None:
        """Forget the packets without freeing their buffers."""
    def __len__(self) -> int: ...
