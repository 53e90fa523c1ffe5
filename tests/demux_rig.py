"""The receive side of the core tests: a buffer pool, a demux and one
socket's PCQ, with the socket's pcbs in the demux's table."""
from __future__ import annotations

from typing import Any

from fastproto import BufferPool, Demux, PCBTable, PCQ


def demux_rig(*pcbs: tuple, buffers: int = 64, capacity: int = 64, qlen: int = 0, sock: int = 0,
              **options: Any) -> tuple[BufferPool, Demux, PCQ]:
    """``(pool, demux, pcq)``: ``buffers`` buffers, a demux taking batches of up
    to ``capacity`` frames (``options``: the Demux's keywords, ``verify_l4``
    and the deferrals) and a PCQ of ``qlen`` items (default ``capacity``)
    attached as socket ``sock``; each of ``pcbs`` (``proto, local, lport,
    remote, rport``, as ``PCBTable.insert`` takes them) leads to it."""
    pool = BufferPool(buffers)
    table = PCBTable(nbuckets=64)
    demux = Demux(pool, table, max_sockets=max(sock + 1, 4), capacity=capacity, **options)
    pcq = PCQ(qlen or capacity)
    demux.attach(sock, pcq)
    for proto, local, lport, remote, rport in pcbs:
        table.insert(proto, local, lport, remote, rport, sock)
    return pool, demux, pcq
