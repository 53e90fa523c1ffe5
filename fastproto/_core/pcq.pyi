"""PCQ: a bounded, lock-free queue of uint64 items, many producers, one consumer."""
from typing import Iterable, Optional, Union

import numpy as np
import numpy.typing as npt

_Items = Union[npt.NDArray[np.unsignedinteger], npt.NDArray[np.signedinteger], Iterable[int]]

def as_items(items: _Items) -> npt.NDArray[np.uint64]:
    """``items`` as a 1-D C-contiguous uint64 array (no copy when it is one)."""

class PCQ:
    """PCQ(maxlen): a bounded queue of uint64 items (many producers, one consumer)."""

    @property
    def maxlen(self) -> int: ...
    @property
    def rejected(self) -> int:
        """Items refused so far because the queue was full."""
    def __init__(self, maxlen: int) -> None: ...
    def put(self, item: int) -> bool:
        """Put one item (0..2**64-1); False if the queue is full."""
    def get(self) -> Optional[int]:
        """Take the oldest item; None if no item is ready."""
    def peek(self) -> Optional[int]:
        """The oldest item, left in the queue; None if no item is ready."""
    def put_many(self, items: _Items) -> int:
        """Put the leading items; returns how many were put."""
    def get_many(self, n: int, out: Optional[npt.NDArray[np.uint64]] = None) -> npt.NDArray[np.uint64]:
        """Take up to ``n`` items, oldest first (``out[:k]`` when ``out`` is given)."""
    def get_into(self, out: npt.NDArray[np.uint64]) -> int:
        """Take up to ``len(out)`` items into ``out[:k]``; returns ``k``."""
    def __len__(self) -> int: ...
