"""Benchmarks of the socket receive buffer (fastproto/_core/sockbuf.pyx).

A bulk receive's pattern: 64 KiB coalesced chunks appended at the tail, the
application reading at the head, against a ``bytearray`` used the way a
receive buffer was before (``+=``; ``bytes(buf)`` and ``clear()``, or a
slice copy and ``del buf[:n]``).  The bytearray's memory goes back to malloc
each time it empties or halves and is taken again as it grows: the figures
include those page faults.

And a bulk send's pattern: a full send buffer, each acknowledgment dropping
bytes at the head, the application filling it up again at the tail and the
next descriptor's payload taken as a view, against the ``bytearray`` a send
buffer was (``+=``, ``del buf[:n]``, ``memoryview`` slices).
"""
from __future__ import annotations

from typing import Callable, List

from fastproto.bench import Case

CHUNK = 65536
RCVBUF = 262144
ROUNDS = 16


def _chunk() -> bytes:
    return bytes(range(256)) * (CHUNK // 256)


def _recv_sockbuf() -> Callable[[], None]:
    from fastproto._core.sockbuf import SockBuf

    data = _chunk()
    buf = SockBuf(RCVBUF + CHUNK)

    def run() -> None:
        for _ in range(ROUNDS):
            for _ in range(RCVBUF // CHUNK):
                buf.append(data)
            buf.read(RCVBUF)

    return run


def _recv_bytearray() -> Callable[[], None]:
    data = _chunk()
    buf = bytearray()

    def run() -> None:
        for _ in range(ROUNDS):
            for _ in range(RCVBUF // CHUNK):
                buf.extend(data)
            bytes(buf)
            buf.clear()

    return run


def _recv_into_sockbuf() -> Callable[[], None]:
    from fastproto._core.sockbuf import SockBuf

    data = _chunk()
    out = bytearray(1 << 20)
    buf = SockBuf(RCVBUF + CHUNK)

    def run() -> None:
        for _ in range(ROUNDS):
            buf.append(data)
            buf.append(data)
            buf.read_into(out, CHUNK + CHUNK // 2)     # a reader a little behind
            buf.read_into(out)

    return run


def _recv_into_bytearray() -> Callable[[], None]:
    data = _chunk()
    out = memoryview(bytearray(1 << 20))
    buf = bytearray()

    def run() -> None:
        for _ in range(ROUNDS):
            buf.extend(data)
            buf.extend(data)
            for n in (CHUNK + CHUNK // 2, len(out)):
                n = min(n, len(buf))
                with memoryview(buf) as src:
                    out[:n] = src[:n]
                del buf[:n]

    return run


ACKED = 16384           # bytes a (stretch) acknowledgment frees


def _send(buf: object, make_room: Callable[[int], None], append: Callable[[bytes], object]
          ) -> Callable[[], None]:
    data = bytes(range(256)) * (ACKED // 256)
    for _ in range(RCVBUF // ACKED):
        append(data)

    def run() -> None:
        for _ in range(ROUNDS * RCVBUF // ACKED):
            make_room(ACKED)
            append(data)
            with memoryview(buf) as view:      # type: ignore[arg-type]
                payload = view[RCVBUF - CHUNK:]      # the next descriptor's payload
                payload.release()

    return run


def _send_sendbuf() -> Callable[[], None]:
    from fastproto._core.sockbuf import SendBuf

    buf = SendBuf(2 * RCVBUF)
    return _send(buf, buf.drop, buf.append)


def _send_bytearray() -> Callable[[], None]:
    buf = bytearray()

    def drop(n: int) -> None:
        del buf[:n]

    return _send(buf, drop, buf.extend)


def cases() -> List[Case]:
    return [
        Case(group="core", name="receive buffer, 64 KiB appends, 256 KiB reads",
             fastproto=_recv_sockbuf(), baseline=_recv_bytearray(),
             baseline_name="bytearray: +=, bytes() and clear()", work=ROUNDS * RCVBUF,
             scale=1e9, scale_name="GB/s",
             note="no goal: the copies are the same; whether malloc hands the bytearray "
                  "fresh pages depends on what the process ran before (docs/tcp.md)"),
        Case(group="core", name="receive buffer, 64 KiB appends, reads into a buffer",
             fastproto=_recv_into_sockbuf(), baseline=_recv_into_bytearray(),
             baseline_name="bytearray: +=, slice copy and del", work=ROUNDS * 2 * CHUNK,
             scale=1e9, scale_name="GB/s", goal_ratio=1.0),
        Case(group="core", name="send buffer, 16 KiB acked and appended, 64 KiB views",
             fastproto=_send_sendbuf(), baseline=_send_bytearray(),
             baseline_name="bytearray: +=, del and memoryview", work=ROUNDS * RCVBUF,
             scale=1e9, scale_name="GB/s", goal_ratio=1.0),
    ]
