"""Drive the core's concurrent primitives from threads that do not hold the GIL (tests, benchmarks)."""
import numpy as np
import numpy.typing as npt

from fastproto._core.buffers import BufferPool
from fastproto._core.pcq import PCQ
from fastproto._core.serializer import Serializer

SEQ_BITS: int

def pcq_produce(q: PCQ, producer: int, count: int, batch: int = 1) -> int:
    """Put ``count`` items ``(producer << 48) | i``; returns how often the queue was full."""
def pcq_consume(q: PCQ, nproducers: int, total: int, batch: int = 1,
                timeout: float = 60.0) -> tuple[npt.NDArray[np.uint64], int, int, int]:
    """Take ``total`` items; ``(next_seq, disorder, foreign, received)``."""
def pcq_transfer(q: PCQ, n: int, batch: int = 256) -> int:
    """Move 0..n-1 from a native producer thread to this one; the sum received."""
def bufpool_churn(pool: BufferPool, worker: int, rounds: int, batch: int,
                  owner: npt.NDArray[np.uint32]) -> int:
    """Allocate/free ``rounds`` times checking ownership; the number of violations."""
def bufpool_cycle(pool: BufferPool, n: int, batch: int = 1) -> None:
    """Allocate and free ``batch`` buffers ``n`` times (timing)."""
def serializer_count(ser: Serializer, counter: npt.NDArray[np.uint64], n: int,
                     use_try: bool = False) -> int:
    """Add 1 to ``counter[0]`` ``n`` times inside the serializer; retries of try_enter."""
def serializer_cycle(ser: Serializer, n: int) -> None:
    """Enter and exit ``n`` times (timing)."""

class PCQDrainer:
    """Takes everything off a list of PCQs without the GIL (benchmark receivers)."""
    def __init__(self, pcqs: list[PCQ]) -> None: ...
    def drain(self, ids: npt.NDArray[np.uint32]) -> int:
        """Empty the PCQs numbered ``ids``; how many items were taken."""
