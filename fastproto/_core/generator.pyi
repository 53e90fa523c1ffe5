"""A traffic generator in the core: a thread without the GIL offering frames at a set rate (see docs/livelock.md)."""
from typing import Optional, Union

import numpy as np
import numpy.typing as npt

from fastproto._core.buffers import BufferPool

#: longest frame a generator offers, bytes
MAX_FRAME: int
#: the shortest Ethernet frame without its FCS, bytes
MIN_FRAME: int
#: default burst bound: the frames due in this many seconds at the set rate
BURST_WINDOW: float
#: the burst bound is at least this many frames
MIN_BURST: int
#: every key of Generator.stats(), in order
STAT_NAMES: tuple[str, ...]

_Frame = Union[bytes, bytearray, memoryview]

def udp_offsets(frame: _Frame) -> Optional[tuple[int, int]]:
    """(source port offset, checksum offset) of the UDP header of a whole IPv4/UDP datagram in an Ethernet frame."""
def default_burst(rate_pps: float) -> int:
    """The burst bound for ``rate_pps``: frames due in BURST_WINDOW, at least MIN_BURST."""
def udp_checksum_update(checksum: int, old: int, new: int) -> int:
    """The UDP checksum after a 16-bit word went from ``old`` to ``new`` (RFC 1624); 0 stays 0."""

def spin(seconds: float) -> None:
    """Spend ``seconds`` of CPU in a busy loop without the GIL."""

class Generator:
    """Offers copies of ``frame`` at ``rate_pps`` frames/s into a ring of ``ring_size`` slots."""

    frame: bytes
    def __init__(self, frame: _Frame, rate_pps: float, ring_size: int = 1024,
                 burst: Optional[int] = None, sport_span: int = 1, limit: int = 0) -> None: ...
    def start(self) -> None:
        """Start offering frames (a new thread); RuntimeError if already running."""
    def stop(self) -> None:
        """Stop offering and join the thread.  Idempotent."""
    @property
    def running(self) -> bool: ...
    @property
    def rate(self) -> float: ...
    def set_rate(self, rate_pps: float, burst: Optional[int] = None) -> None: ...
    @property
    def burst(self) -> int: ...
    def set_up(self, up: bool) -> None: ...
    def rx_batch(self, pool: BufferPool, handles: npt.NDArray[np.uint64],
                 lengths: npt.NDArray[np.uint32]) -> int:
        """Copy queued frames into buffers of ``pool`` (without the GIL); how many."""
    def flush(self) -> int:
        """Drop every queued frame (rx_dropped_down); how many."""
    def queued(self) -> int: ...
    def wakeup(self) -> None: ...
    def wait(self, timeout: Optional[float] = None) -> bool:
        """Sleep without the GIL until frames are queued (True), timeout or wakeup (False)."""
    def set_routed(self, routed: bool) -> None:
        """Send the interrupt to notify_wait (True) or back to wait (False)."""
    @property
    def routed(self) -> bool: ...
    def notify_wait(self, timeout: float) -> bool:
        """Sleep without the GIL up to timeout s for the routed interrupt (edge-triggered)."""
    def notify_kick(self) -> None:
        """End a notify_wait in progress."""
    def stats(self) -> dict[str, int]: ...
    @property
    def thread_id(self) -> int: ...
    @property
    def ring_size(self) -> int: ...
    @property
    def closed(self) -> bool: ...
    def close(self) -> None: ...
