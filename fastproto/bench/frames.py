"""Frame batches: TCP segmentation into one buffer, and a LinkPair carrying a
batch as one ring entry, beside the same work with one bytes object per frame."""
from __future__ import annotations

from typing import Union

import numpy as np

from fastproto import BufferPool
from fastproto._core.frames import FrameBatch
from fastproto._core.tso import tcp_frames
from fastproto.bench import Case
from fastproto.phy.link import LinkPair

_L2 = bytes.fromhex("020000000002020000000001") + b"\x08\x00"
_SRC, _DST = bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2])
_OPTS = bytes([1, 1, 8, 10]) + bytes(8)        # NOP NOP timestamps, as a connection sends
_MSS = 1448
_SEND = 65536
#: sends per call of the link case (a window's worth: 4 x 64 KiB)
_SENDS = 4


_PAYLOAD = bytes(range(256)) * (_SEND // 256)


def _cut(out: Union[list[bytes], FrameBatch]) -> None:
    """One 64 KiB send cut into ``out``."""
    tcp_frames(_L2, _SRC, _DST, 40000, 5001, 1, 1, 0x18, 65535, _OPTS, _PAYLOAD, _MSS, out)


def _tso_case() -> Case:
    def into_batch() -> None:
        _cut(FrameBatch())

    def into_list() -> None:
        _cut([])

    return Case(group="core", name="TSO 64 KiB send into frames, MSS 1448", fastproto=into_batch,
                baseline=into_list, baseline_name="one bytes object per frame (list)",
                work=_SEND, goal_ratio=1.0)


def _link_case() -> Case:
    """One window (4 sends of 64 KiB, 184 frames) over a LinkPair into a pool."""
    a, b = LinkPair(rx_ring_size=4096)
    pool = BufferPool(1024, 2048)
    hs = np.zeros(256, np.uint64)
    ls = np.zeros(256, np.uint32)

    def drain() -> None:
        while True:
            n = b.receive_into(pool, hs, ls)
            if not n:
                return
            pool.free_many(hs[:n])

    def batched() -> None:
        for _ in range(_SENDS):
            out = FrameBatch()
            _cut(out)
            a.transmit(out)
        drain()

    def listed() -> None:
        for _ in range(_SENDS):
            out: list[bytes] = []
            _cut(out)
            a.transmit(out)
        drain()

    return Case(group="core", name="TSO + LinkPair + receive_into, 4 x 64 KiB", fastproto=batched,
                baseline=listed, baseline_name="the same with a list of bytes per send",
                work=_SENDS * _SEND, goal_ratio=1.2)


def cases() -> list[Case]:
    return [_tso_case(), _link_case()]
