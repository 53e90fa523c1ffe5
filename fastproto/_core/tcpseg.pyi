"""The fields TCP input takes from the parser's rows, in one compiled call."""
from typing import Any

import numpy as np
import numpy.typing as npt

def tcp_fields(rows: npt.NDArray[Any], handles: npt.NDArray[np.uint64]
               ) -> list[tuple[int, int, int, int, int, int, int, int, int, int, int]]:
    """(flags, tcp_flags, seq, ack, window, payload_off, payload_len, sport, dport,
    tsval, tsecr) of the row of each handle."""
