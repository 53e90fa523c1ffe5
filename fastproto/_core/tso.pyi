"""TCP segmentation offload: one large send cut into MSS-sized frames."""
from typing_extensions import Buffer

def tcp_frames(l2: bytes, src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int,
               flags: int, window: int, options: Buffer, payload: Buffer, mss: int,
               out: list[bytes]) -> int:
    """Append the frames of one send (payload cut at ``mss`` bytes) to ``out``; how many."""
