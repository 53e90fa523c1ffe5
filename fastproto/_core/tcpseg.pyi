"""The fields TCP input takes from the parser's rows, in one compiled call."""
from typing import Any, Optional

import numpy as np
import numpy.typing as npt

def tcp_fields(rows: npt.NDArray[Any], handles: npt.NDArray[np.uint64], index: Optional[list[int]] = None
               ) -> list[tuple[int, int, int, int, int, int, int, int, int, int, int]]:
    """(flags, tcp_flags, seq, ack, window, payload_off, payload_len, sport, dport,
    tsval, tsecr) of the row of each handle (or of the handles at ``index``)."""

def tcp_checksum_ok(rows: npt.NDArray[Any], handle: int, pool_data: npt.NDArray[np.uint8]) -> bool:
    """Whether the TCP checksum of the segment in buffer ``handle`` is right."""
