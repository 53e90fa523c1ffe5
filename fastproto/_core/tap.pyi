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
#: bytes of virtio_net_hdr before each frame with offloads on (10)
VNET_HDR_LEN: int
#: the TUN_F_* flags given to TUNSETOFFLOAD (CSUM | TSO4 | TSO6 | TSO_ECN)
OFFLOADS: int
#: the longest frame the offload receive path takes (a super-frame), in bytes
GSO_MAX_FRAME: int

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

def tx_runs(frames: Iterable[_Frame]) -> list[int]:
    """How transmit with offloads groups ``frames``: run lengths (a run >= 2 is one super-frame)."""

class TapPort:
    """TapPort(name, max_frame=1518, offload=False): an open TAP device (IFF_TAP | IFF_NO_PI,
    plus IFF_VNET_HDR and checksum/TSO offloads with ``offload``) and its counters."""

    @property
    def name(self) -> str: ...
    @property
    def closed(self) -> bool: ...
    max_frame: int
    @property
    def offload(self) -> bool: ...
    @property
    def pending(self) -> int:
        """Segments of a received super-frame not yet handed out by rx_batch."""
    def __init__(self, name: str, max_frame: int = 1518, offload: bool = False) -> None: ...
    def fileno(self) -> int: ...
    def close(self) -> None:
        """Wake waiters, close the descriptor (removes the device); idempotent."""
    def rx_batch(self, pool: BufferPool, handles: npt.NDArray[np.uint64],
                 lengths: npt.NDArray[np.uint32]) -> int:
        """Read up to len(handles) frames into buffers allocated from ``pool``; how many."""
    def tx_handles(self, pool: BufferPool, handles: npt.NDArray[np.uint64],
                   lengths: npt.NDArray[np.uint32]) -> int:
        """Write pool buffers without copying; how many the kernel took (rejections counted)."""
    def tx_gso(self, frame: _Frame, mss: int = 0) -> bool:
        """Write one TCP super-frame for the kernel to segment (mss 0: the MTU's) and checksum."""
    def tx_frames(self, frames: Iterable[_Frame]) -> int:
        """Write each bytes-like frame (or each frame of a FrameBatch, read in
        place); how many the kernel took (rejections counted)."""
    def rx_frames(self, max_frames: int) -> list[bytes]:
        """Up to ``max_frames`` queued frames, each copied into new bytes."""
    def drop_queued(self, max_frames: int = 65536) -> int:
        """Read and drop queued frames (rx_dropped_down); how many."""
    def count_tx_dropped_down(self, frames: int) -> None:
        """Count frames not sent because the interface was down (tx_dropped_down, tx_errors)."""
    @property
    def wake_count(self) -> int:
        """How many wakeup calls so far (for ``wait``'s ``seen``)."""
    def rx_ready(self) -> bool:
        """True if a receive would find a frame (a zero-timeout look)."""
    def wait(self, timeout: Optional[float] = None, seen: Optional[int] = None) -> bool:
        """Wait without the GIL for a frame: True if one is ready; False on timeout, or a wakeup since ``seen``."""
    def wakeup(self) -> None:
        """End every wait in progress."""
    def stats(self) -> dict[str, int]:
        """{counter: value} for every name in STAT_NAMES."""

class VnetReceiver:
    """The offload receive path of a TapPort, fed from memory (virtio_net_hdr + frame)."""

    @property
    def pending(self) -> int: ...
    def __init__(self) -> None: ...
    def input(self, pool: BufferPool, packet: _Frame, handles: npt.NDArray[np.uint64],
              lengths: npt.NDArray[np.uint32]) -> int:
        """Receive one packet: frames (segments) into buffers of ``pool``; how many."""
    def drain(self, pool: BufferPool, handles: npt.NDArray[np.uint64],
              lengths: npt.NDArray[np.uint32]) -> int:
        """More segments of the pending super-frame; how many."""
    def stats(self) -> dict[str, int]:
        """{counter: value} for every name in STAT_NAMES."""
