"""The receive path of one batch: parse, pcbtable lookup, pcq_put, wake-ups."""
import numpy as np
import numpy.typing as npt

from fastproto._core.buffers import BufferPool
from fastproto._core.pcbtable import PCBTable
from fastproto._core.pcq import PCQ

class Demux:
    """Demux(pool, table, max_sockets=65536, capacity=1024, verify_l4=False, defer_udp_checksum=False)"""

    pool: BufferPool
    table: PCBTable
    max_sockets: int
    capacity: int

    def __init__(self, pool: BufferPool, table: PCBTable, max_sockets: int = 65536,
                 capacity: int = 1024, verify_l4: bool = False,
                 defer_udp_checksum: bool = False) -> None: ...
    def attach(self, sock_id: int, pcq: PCQ) -> None:
        """Give socket ``sock_id`` its receive PCQ."""
    def detach(self, sock_id: int) -> None:
        """Forget socket ``sock_id``'s PCQ."""
    def input(self, handles: npt.ArrayLike, lengths: npt.ArrayLike) -> tuple[
            int, npt.NDArray[np.uint32], npt.NDArray[np.uint32], npt.NDArray[np.uint32]]:
        """(delivered, woken socket ids, other batch indices, unmatched batch indices)."""
    @property
    def rows(self) -> np.ndarray:
        """The parse (PARSED_DTYPE) of each buffer's frame, indexed by handle."""
    def counters(self) -> dict[str, int]:
        """{reason: frames} since creation, netstat -s style."""
