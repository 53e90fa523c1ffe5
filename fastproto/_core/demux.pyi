"""The receive path of one batch: parse, pcbtable lookup, pcq_put, wake-ups."""
from typing import Optional

import numpy as np
import numpy.typing as npt

from fastproto._core.buffers import BufferPool
from fastproto._core.pcbtable import PCBTable
from fastproto._core.pcq import PCQ

#: a hot TCB (src/tcb.h tcb_t) as NumPy sees it
TCB_DTYPE: np.dtype

def clock_ms() -> int:
    """The demux's timestamp clock: int(time.monotonic() * 1000) as a uint32."""

class Demux:
    """Demux(pool, table, max_sockets=65536, capacity=1024, verify_l4=False, defer_udp_checksum=False,
    defer_tcp_checksum=False)"""

    pool: BufferPool
    table: PCBTable
    max_sockets: int
    capacity: int

    def __init__(self, pool: BufferPool, table: PCBTable, max_sockets: int = 65536,
                 capacity: int = 1024, verify_l4: bool = False,
                 defer_udp_checksum: bool = False, defer_tcp_checksum: bool = False) -> None: ...
    def attach(self, sock_id: int, pcq: PCQ) -> None:
        """Give socket ``sock_id`` its receive PCQ."""
    def detach(self, sock_id: int) -> None:
        """Forget socket ``sock_id``'s PCQ."""
    def input(self, handles: npt.ArrayLike, lengths: npt.ArrayLike) -> tuple[
            int, npt.NDArray[np.uint32], npt.NDArray[np.uint32], npt.NDArray[np.uint32]]:
        """(delivered, woken socket ids, other batch indices, unmatched batch indices)."""
    def input_woken(self, handles: npt.ArrayLike, lengths: npt.ArrayLike) -> tuple[
            list[int], Optional[npt.NDArray[np.uint32]], Optional[npt.NDArray[np.uint32]], list[bytes]]:
        """(woken socket ids, other batch indices or None, unmatched batch
        indices or None, the ACK frames built so far)."""
    @property
    def rows(self) -> np.ndarray:
        """The parse (PARSED_DTYPE) of each buffer's frame, indexed by handle."""
    def counters(self) -> dict[str, int]:
        """{reason: frames} since creation, netstat -s style."""
    def count_bad_checksum(self, n: int = 1) -> None:
        """Count n segments whose deferred checksum failed (under l4_bad_checksum); any thread."""
    @property
    def tcb(self) -> np.ndarray:
        """The hot TCBs (TCB_DTYPE) by socket id, for reading."""
    def tcb_arm(self, sock_id: int, rcv_nxt: int, rcv_wnd: int, last_ack: int, mss: int,
                ack_bytes: int, snd_nxt: int, ts_recent: int, ts_offset: int, wscale: int,
                ts_ok: bool, template: bytes) -> bool:
        """Turn socket ``sock_id``'s immediate ACKs on; False (disarmed) while its PCQ holds packets."""
    def tcb_disarm(self, sock_id: int) -> None:
        """Turn socket ``sock_id``'s immediate ACKs off."""
    def tcb_reset(self, sock_id: int) -> None:
        """Forget socket ``sock_id``'s hot TCB."""
    def tcb_acked(self, sock_id: int) -> tuple[int, int] | None:
        """(ack, right window edge) of the demux's last ACK for the socket, or None."""
    def tcb_window(self, sock_id: int, edge: int) -> bool:
        """Offer the window up to ``edge`` from now on; whether still armed."""
    def tcb_sent(self, sock_id: int, ack: int, edge: int, snd_max: int) -> int:
        """The ACK number the engine's segments must carry instead, or -1."""
    def tcb_lock(self, sock_id: int) -> None:
        """Hold socket ``sock_id``'s TCB lock."""
    def tcb_unlock(self, sock_id: int) -> None:
        """Release socket ``sock_id``'s TCB lock."""
    def take_acks(self) -> list[bytes]:
        """The ACK frames built since the last call."""
    def tcb_counters(self) -> dict[str, int]:
        """{event: count} of the immediate-ACK path."""
