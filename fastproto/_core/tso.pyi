"""TCP segmentation offload: one large send cut into MSS-sized frames."""
from typing import Any, Sequence, Union

from typing_extensions import Buffer

from fastproto._core.frames import FrameBatch

def tcp_frames(l2: bytes, src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int,
               flags: int, window: int, options: Buffer, payload: Buffer, mss: int,
               out: Union[list[bytes], FrameBatch]) -> int:
    """Append the frames of one send (payload cut at ``mss`` bytes) to ``out``
    (a list of bytes, or an unsealed FrameBatch written in place); how many."""

def tcp_frames_many(l2: bytes, src: bytes, dst: bytes, sport: int, dport: int,
                    items: Sequence[tuple[int, int, int, int, Buffer, Buffer] | Any], room: int,
                    mss: int, out: Union[list[bytes], FrameBatch]) -> int:
    """The frames of every send ``(seq, ack, flags, window, options, payload)``
    of ``items``, each cut at ``min(mss, room - len(options))``, appended to ``out``; how many."""
