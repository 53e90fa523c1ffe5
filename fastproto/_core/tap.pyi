"""Linux TAP devices: the descriptor and the batch loops that move frames (see docs/tap.md)."""
from typing import Iterable, Optional, Union

import numpy as np
import numpy.typing as npt

from fastproto._core.buffers import BufferPool

#: bytes of Ethernet header (the shortest frame a TAP accepts)
ETH_HLEN: int
#: bytes of one 802.1Q tag
VLAN_HLEN: int
#: every key of TapPort.stats(), in order
STAT_NAMES: tuple[str, ...]

_Frame = Union[bytes, bytearray, memoryview]

def get_mtu(name: str) -> int:
    """The MTU of interface ``name`` in bytes (SIOCGIFMTU)."""
def set_mtu(name: str, mtu: int) -> None:
    """Set the MTU of interface ``name`` in bytes (SIOCSIFMTU)."""
def get_mac(name: str) -> bytes:
    """The hardware address of interface ``name``, 6 bytes (SIOCGIFHWADDR)."""
def set_mac(name: str, mac: bytes) -> None:
    """Set the hardware address of interface ``name`` from 6 bytes (SIOCSIFHWADDR)."""
def set_up(name: str, up: bool) -> None:
    """Set or clear IFF_UP on interface ``name``."""
def is_up(name: str) -> bool:
    """True if interface ``name`` has IFF_UP set."""

class TapPort:
    """TapPort(name, max_frame=1518): an open TAP device (IFF_TAP | IFF_NO_PI) and its counters."""

    @property
    def name(self) -> str: ...
    @property
    def closed(self) -> bool: ...
    max_frame: int
    def __init__(self, name: str, max_frame: int = 1518) -> None: ...
    def fileno(self) -> int: ...
    def close(self) -> None:
        """Wake waiters, close the descriptor (removes the device); idempotent."""
    def rx_batch(self, pool: BufferPool, handles: npt.NDArray[np.uint64],
                 lengths: npt.NDArray[np.uint32]) -> int:
        """Read up to len(handles) frames into buffers allocated from ``pool``; how many."""
    def tx_handles(self, pool: BufferPool, handles: npt.NDArray[np.uint64],
                   lengths: npt.NDArray[np.uint32]) -> int:
        """Write pool buffers without copying; how many the kernel took (rejections counted)."""
    def tx_frames(self, frames: Iterable[_Frame]) -> int:
        """Write each bytes-like frame; how many the kernel took (rejections counted)."""
    def rx_frames(self, max_frames: int) -> list[bytes]:
        """Up to ``max_frames`` queued frames, each copied into new bytes."""
    def drop_queued(self, max_frames: int = 65536) -> int:
        """Read and drop queued frames (rx_dropped_down); how many."""
    def count_tx_dropped_down(self, frames: int) -> None:
        """Count frames not sent because the interface was down (tx_dropped_down, tx_errors)."""
    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait without the GIL for a frame: True if one is ready; False on timeout or wakeup."""
    def wakeup(self) -> None:
        """End every wait in progress."""
    def stats(self) -> dict[str, int]:
        """{counter: value} for every name in STAT_NAMES."""
