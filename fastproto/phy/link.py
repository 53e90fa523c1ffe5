"""LinkPair: two devices joined by an in-process wire.

What one end transmits arrives, in order and byte for byte, in the other
end's rx ring; the ring's bound is the only place the wire loses frames.
A :class:`FrameBatch` crosses as one ring entry (no object per frame).
"""
from __future__ import annotations

import random
from typing import Optional, Sequence, Union

from fastproto._core.frames import FrameBatch
from fastproto.phy.device import DEFAULT_MTU, RingDevice


class LinkEnd(RingDevice):
    """One end of a :class:`LinkPair`; its transmitted frames arrive at ``peer``."""

    def __init__(self, name: str, mtu: int, mac: bytes, rx_ring_size: int) -> None:
        super().__init__(name, mtu=mtu, mac=mac, rx_ring_size=rx_ring_size)
        self.peer: Optional[LinkEnd] = None

    def _tx(self, frames: Union[list[bytes], FrameBatch]) -> None:
        # A batch crosses as one object: the peer's ring holds it whole.
        peer = self.peer
        if peer is None:
            raise RuntimeError(f"{self.name} is not attached to a link")
        peer._arrive(frames)


def default_macs(seed: int = 0) -> tuple[bytes, bytes]:
    """Two unicast, locally administered MAC addresses (02:...) derived from ``seed``
    (IEEE 802: bit 1 of the first octet set = locally administered, bit 0 clear = unicast)."""
    middle = random.Random(seed).randbytes(4)
    return b"\x02" + middle + b"\x01", b"\x02" + middle + b"\x02"


class LinkPair:
    """Two devices ``a`` and ``b``, the ends of one wire.

    ``a.transmit(frames)`` queues the frames on ``b``'s rx ring (and the
    reverse), at once and in order.  Deterministic: ``seed`` only picks the
    default MAC addresses.
    """

    def __init__(self, rx_ring_size: int = 1024, mtu: int = DEFAULT_MTU,
                 macs: Optional[Sequence[bytes]] = None, seed: int = 0, name: str = "link") -> None:
        if macs is None:
            macs = default_macs(seed)
        if len(macs) != 2:
            raise ValueError(f"a link has two ends: give two MAC addresses, not {len(macs)}")
        self.a = LinkEnd(f"{name}.a", mtu, macs[0], rx_ring_size)
        self.b = LinkEnd(f"{name}.b", mtu, macs[1], rx_ring_size)
        self.a.peer = self.b
        self.b.peer = self.a

    def __iter__(self):  # type: ignore[no-untyped-def]
        """Unpacks as ``a, b = LinkPair()``."""
        return iter((self.a, self.b))

    def __repr__(self) -> str:
        return f"<LinkPair {self.a.name} <-> {self.b.name}>"
