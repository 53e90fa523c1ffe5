"""The sender's SACK scoreboard (RFC 2018, RFC 6675): which bytes above SND.UNA the
peer reported holding, so fast recovery retransmits the holes between them.

Kept as sequence-number ranges; every use measures them from the current
SND.UNA, so ranges the cumulative ACK has passed simply stop counting.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

MASK = 0xFFFFFFFF
HALF = 0x80000000


class SackScoreboard:
    """SACKed ranges (``ranges``: disjoint [left, right) sequence pairs, in order) and
    ``rexmit_hi``, the end of what fast recovery has already retransmitted."""

    __slots__ = ("ranges", "rexmit_hi")

    def __init__(self, una: int) -> None:
        self.ranges: List[Tuple[int, int]] = []
        self.rexmit_hi = una

    def update(self, una: int, snd_max: int, blocks: Sequence[Tuple[int, int]]) -> int:
        """Merge the blocks of one ACK; returns how many were ignored as invalid
        (outside (SND.UNA, SND.MAX], or empty: RFC 6675 5.1 / RFC 5961 5.2 spirit)."""
        span = (snd_max - una) & MASK
        offs = []
        bad = 0
        for left, right in blocks:
            lo = (left - una) & MASK
            ro = (right - una) & MASK
            if ro == 0 or ro > span or lo >= ro:
                bad += 1
                continue
            offs.append((lo, ro))
        for left, right in self.ranges:
            lo = (left - una) & MASK
            ro = (right - una) & MASK
            if ro == 0 or ro >= HALF:
                continue                      # wholly acknowledged since
            if lo >= HALF:
                lo = 0
            offs.append((lo, ro))
        offs.sort()
        merged: List[Tuple[int, int]] = []
        for lo, ro in offs:
            if merged and lo <= merged[-1][1]:
                if ro > merged[-1][1]:
                    merged[-1] = (merged[-1][0], ro)
            else:
                merged.append((lo, ro))
        self.ranges = [((una + lo) & MASK, (una + ro) & MASK) for lo, ro in merged]
        return bad

    def next_hole(self, una: int, mss: int) -> Optional[Tuple[int, int]]:
        """The first gap below the highest SACKed byte not yet retransmitted in this
        recovery, as (offset from SND.UNA, length <= mss); None when there is none."""
        start = (self.rexmit_hi - una) & MASK
        if start >= HALF:
            start = 0
        for left, right in self.ranges:
            ro = (right - una) & MASK
            if ro == 0 or ro >= HALF or ro <= start:
                continue
            lo = (left - una) & MASK
            if lo >= HALF:
                lo = 0
            if lo > start:
                return start, min(mss, lo - start)
            start = ro
        return None
