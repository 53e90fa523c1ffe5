"""Helpers shared by the protocol modules: parsing one received frame into a row."""
from __future__ import annotations

from typing import Any

import numpy as np

from fastproto._core.parse import Flag, parse_frames

FrameOrRow = Any  # bytes-like frame, or a row (numpy.void) of PARSED_DTYPE


def as_row(frame_or_row: FrameOrRow, verify_l4: bool = False) -> np.void:
    """The parsed row of a frame; a row is returned as it is."""
    if isinstance(frame_or_row, (bytes, bytearray, memoryview)):
        return parse_frames([bytes(frame_or_row)], verify_l4=verify_l4)[0]
    return frame_or_row


def row_vlan(row: np.void) -> int | None:
    """The 802.1Q TCI of a received frame, so that an answer goes back on the same VLAN."""
    return int(row["vlan_tci"]) if int(row["flags"]) & Flag.VLAN else None
