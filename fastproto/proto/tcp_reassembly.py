"""The out-of-order queue of one TCP receiver (RFC 9293 3.10.7.4, "segment text").

Segments that arrive beyond RCV.NXT but inside the receive window wait here
until the gap before them is filled.  Blocks are kept as offsets from RCV.NXT's
base (``base``: the sequence number that offset 0 stands for), sorted and
never overlapping, so the bytes held never exceed the receive window: the
caller only inserts data inside [RCV.NXT, RCV.NXT + RCV.WND).
"""
from __future__ import annotations

from typing import List, Optional, Tuple

MASK = 0xFFFFFFFF


class OutOfOrderQueue:
    """Sorted, disjoint blocks of data waiting for the gap at RCV.NXT to fill.

    ``blocks`` holds [start_seq, data] pairs in sequence order; ``nbytes`` the
    bytes held; ``last`` the start of the block that most recently grew (for the
    first SACK block, RFC 2018 4).
    """

    __slots__ = ("blocks", "nbytes", "last", "max_blocks")

    def __init__(self, max_blocks: int = 256) -> None:
        self.blocks: List[list] = []
        self.nbytes = 0
        self.last: Optional[int] = None
        self.max_blocks = max_blocks

    def insert(self, rcv_nxt: int, seq: int, data: bytes) -> int:
        """Add data starting at ``seq`` (> rcv_nxt); returns the new bytes stored (-1: too many blocks).

        Overlaps with held data keep the held bytes (RFC 9293 3.10.7.4 lets a
        receiver keep either); the new block is merged with touching neighbours.
        """
        off = (seq - rcv_nxt) & MASK
        end = off + len(data)
        blocks = self.blocks
        # Locate the first block whose end reaches our start (blocks are few: linear scan).
        i = 0
        n = len(blocks)
        while i < n and ((blocks[i][0] - rcv_nxt) & MASK) + len(blocks[i][1]) < off:
            i += 1
        # Merge every block overlapping or touching [off, end).
        j = i
        new_start = off
        pieces: List[bytes] = []
        cursor = off
        added = 0
        while j < n:
            b_off = (blocks[j][0] - rcv_nxt) & MASK
            b_data = blocks[j][1]
            if b_off > end:
                break
            if b_off < new_start:
                new_start = b_off
                pieces.append(b_data)
                cursor = b_off + len(b_data)
            else:
                if b_off > cursor:
                    pieces.append(data[cursor - off:b_off - off])
                    added += b_off - cursor
                pieces.append(b_data)
                cursor = max(cursor, b_off + len(b_data))
            j += 1
        if cursor < end:
            pieces.append(data[max(cursor, off) - off:])
            added += end - max(cursor, off)
        if added == 0:
            return 0
        if j - i == 0 and n >= self.max_blocks:
            return -1
        merged = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        start_seq = (rcv_nxt + new_start) & MASK
        blocks[i:j] = [[start_seq, bytes(merged)]]
        self.nbytes += added
        self.last = start_seq
        return added

    def pop_ready(self, rcv_nxt: int) -> Optional[bytes]:
        """The block starting at or before ``rcv_nxt`` (trimmed to start there), removed; else None."""
        blocks = self.blocks
        while blocks:
            b_seq, b_data = blocks[0]
            back = (rcv_nxt - b_seq) & MASK
            if back >= 0x80000000:
                return None     # the first block starts after rcv_nxt: a gap remains
            del blocks[0]
            self.nbytes -= len(b_data)
            if back < len(b_data):
                if self.last == b_seq:
                    self.last = None
                return b_data[back:] if back else b_data
        return None

    def sack_blocks(self, max_blocks: int) -> Tuple[Tuple[int, int], ...]:
        """Up to ``max_blocks`` (left, right) edges, the most recently grown first (RFC 2018 4)."""
        out = []
        last = self.last
        if last is not None:
            for b_seq, b_data in self.blocks:
                if b_seq == last:
                    out.append((b_seq, (b_seq + len(b_data)) & MASK))
                    break
        for b_seq, b_data in self.blocks:
            if len(out) >= max_blocks:
                break
            if b_seq != last:
                out.append((b_seq, (b_seq + len(b_data)) & MASK))
        return tuple(out[:max_blocks])

    def clear(self) -> None:
        """Drop everything held."""
        self.blocks.clear()
        self.nbytes = 0
        self.last = None
