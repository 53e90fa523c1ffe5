"""tcp cases: the per-segment cost of the established fast path of ``TcpConnection``.

- receive: in-order 1448-byte data segments (timestamps on) into an
  ESTABLISHED connection, an ACK every second segment, as a bulk receiver sees
  them; 64 segments a call, after which the connection is rewound (sequence
  space, buffer) so every call starts alike.
- send: a bulk sender with 64 segments in flight: each ACK for 1448 bytes
  frees the window for one new 1448-byte segment, which goes out (descriptor
  with its timestamps option and a memoryview of the send buffer); 64 ACKs a
  call, plus the ``send()`` that refills the buffer.

Baseline: the same segments through the full RFC 9293 3.10.7.4 processing
(``_input_slow``): what header prediction saves.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Callable, List

from fastproto.bench import Case

SEGMENTS = 64
MSS = 1448


def _noop(desc: object) -> None:
    return None


def _connection():
    from fastproto.proto.tcp import TcpConnection
    from fastproto.proto.tcp_timers import TcpConfig

    rec = SimpleNamespace(local=("198.18.0.2", 80), remote=("198.18.0.1", 40000), iss=1000,
                          irs=5000, snd_wnd=SEGMENTS * MSS, peer_mss=1460, snd_wscale=7,
                          rcv_wscale=7, ts_recent=100, sack_permitted=True)
    return TcpConnection.from_handshake(rec, TcpConfig(rcvbuf=8 << 20, sndbuf=8 << 20),
                                        lambda: 1000.0, _noop)


def _receive_case(slow: bool) -> Callable[[], None]:
    from fastproto.wire.tcp import ACK, TcpSegment

    conn = _connection()
    payload = memoryview(bytes(range(256)) * 6)[:MSS]
    base = conn.rcv_nxt
    window = conn.snd_wnd >> 7
    segs = [TcpSegment(40000, 80, (base + i * MSS) & 0xFFFFFFFF, conn.snd_una, ACK, window,
                       payload, ts_val=200 + i, ts_ecr=1) for i in range(SEGMENTS)]
    wnd = conn.rcv_wnd
    feed = conn._input_slow if slow else conn.input

    def run() -> None:
        conn.rcv_nxt = conn._last_ack_sent = base
        conn.rcv_wnd = wnd
        conn.ts_recent = 100
        conn._rcvbuf = None
        for seg in segs:
            feed(seg)

    run()
    assert conn.rcv_nxt == (base + SEGMENTS * MSS) & 0xFFFFFFFF
    return run


def _send_case(slow: bool) -> Callable[[], None]:
    from fastproto.wire.tcp import ACK, TcpSegment

    conn = _connection()
    conn.cwnd = 1 << 30
    conn.ssthresh = 1 << 30
    data = bytes(SEGMENTS * MSS)
    conn.send(data)                      # fills the window: 64 segments in flight
    assert (conn.snd_nxt - conn.snd_una) & 0xFFFFFFFF == SEGMENTS * MSS
    acks: List[TcpSegment] = [TcpSegment(40000, 80, conn.rcv_nxt, 0, ACK, conn.snd_wnd >> 7,
                                         b"", ts_val=300, ts_ecr=1) for _ in range(SEGMENTS)]
    feed = conn._input_slow if slow else conn.input

    def run() -> None:
        conn.send(data)
        una = conn.snd_una
        for i, seg in enumerate(acks):
            seg.ack = (una + (i + 1) * MSS) & 0xFFFFFFFF
            feed(seg)

    run()
    assert (conn.snd_nxt - conn.snd_una) & 0xFFFFFFFF == SEGMENTS * MSS
    return run


def cases() -> List[Case]:
    return [
        Case(group="tcp", name="tcp receive fast path, 1448 B segments",
             fastproto=_receive_case(False), baseline=_receive_case(True),
             baseline_name="full RFC 9293 segment processing", work=SEGMENTS, unit="segments",
             scale=1e6, scale_name="M segments/s", goal_rate=0.4, goal_ratio=1.2),
        Case(group="tcp", name="tcp send fast path, ACK + next 1448 B segment",
             fastproto=_send_case(False), baseline=_send_case(True),
             baseline_name="full RFC 9293 segment processing", work=SEGMENTS, unit="segments",
             scale=1e6, scale_name="M segments/s", goal_rate=0.2,
             note="the output work is the same on both paths, so only the rate has a goal"),
    ]


def idle_connection_bytes(n: int = 10000) -> float:
    """Python heap bytes per idle ESTABLISHED connection with empty buffers (tracemalloc)."""
    import gc
    import tracemalloc

    from fastproto.proto.tcp import TcpConnection
    from fastproto.proto.tcp_timers import TcpConfig

    cfg = TcpConfig()
    local = ("198.18.0.2", 80)
    records = [SimpleNamespace(local=local, remote=("198.18.%d.%d" % (i >> 8 & 255, i & 255), 1024 + i),
                               iss=0x12345678 + i * 7919, irs=0x9ABCDEF0 + i * 104729,
                               snd_wnd=64240 << 7, peer_mss=1460, snd_wscale=7, rcv_wscale=3,
                               ts_recent=123456789 + i, sack_permitted=True) for i in range(n)]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        conns = [TcpConnection.from_handshake(r, cfg, _clock, _noop) for r in records]
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(d.size_diff for d in after.compare_to(before, "filename"))
    return grown / len(conns)


def _clock() -> float:
    return 1000.0
