"""Per-datagram UDP work in the core (see docs/stack.md)."""
from typing import Any, Optional, Union

import numpy as np
import numpy.typing as npt

from fastproto._core.buffers import BufferPool
from fastproto._core.pcq import PCQ

#: bytes of a udp4_template: Ethernet 14, IPv4 20, UDP 8
UDP4_HEADERS: int
#: the shortest Ethernet frame without its FCS, bytes
ETH_MIN_FRAME: int

def udp_take(pcq: PCQ, rows: npt.NDArray[np.void], pool: BufferPool, max_items: int = 256,
             with_packet: bool = False, accept: Optional[tuple[bytes, bytes, bytes]] = None,
             ) -> tuple[list[tuple[Any, ...]], list[int], int, Optional[dict[str, int]]]:
    """(datagrams as (payload, source address, source port[, IP packet]), first-fragment
    handles left allocated, payload bytes read, None or {drop reason: datagrams})."""
def udp4_template(dst_mac: bytes, src_mac: bytes, src: bytes, dst: bytes, sport: int,
                  dport: int, ttl: int = 64) -> bytes:
    """The 42-byte Ethernet/IPv4/UDP header template of one flow."""
def udp4_frame(template: bytes, payload: Union[bytes, bytearray, memoryview], ident: int) -> bytes:
    """A whole frame: template + payload, lengths, identification and checksums filled in."""
