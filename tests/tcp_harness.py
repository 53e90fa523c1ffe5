"""An in-memory wire between two TcpConnections, with a fake clock and seeded impairments.

Segments go through the real builder and parser (fastproto.wire.tcp), so the
checksum and option encodings are exercised on every hop.
"""
from __future__ import annotations

import heapq
import random
from typing import List, Optional, Tuple

from fastproto.proto.tcp import TcpConnection
from fastproto.proto.tcp_timers import TcpConfig
from fastproto.wire.tcp import build_tcp, parse_tcp_checked

A_ADDR = ("10.0.0.1", 40000)
B_ADDR = ("10.0.0.2", 80)


class FakeClock:
    """A clock the test moves by hand (seconds)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Wire:
    """Carries segments between ``a`` and ``b`` with delay, loss, duplication and reordering.

    ``schedule`` (when given) decides the fate of the i-th segment sent, both
    directions counted together: a list of (drop, duplicate, extra_delay) tuples;
    segments after its end pass unharmed.  Otherwise a seeded random generator
    applies ``loss``, ``dup`` and ``reorder`` probabilities.
    """

    def __init__(self, seed: int = 1, loss: float = 0.0, dup: float = 0.0, reorder: float = 0.0,
                 delay: float = 0.005, config_a: Optional[TcpConfig] = None,
                 config_b: Optional[TcpConfig] = None,
                 schedule: Optional[List[Tuple[bool, bool, float]]] = None) -> None:
        self.clock = FakeClock()
        self.rng = random.Random(seed)
        self.loss, self.dup, self.reorder, self.delay = loss, dup, reorder, delay
        self.schedule = schedule
        self.sent = 0
        self.in_flight: list = []       # heap of (deliver_at, n, dst, bytes)
        self.n = 0
        self.a = TcpConnection(config_a or TcpConfig(), self.clock, self._out_a, None, A_ADDR, B_ADDR)
        self.b = TcpConnection(config_b or TcpConfig(), self.clock, self._out_b, None, B_ADDR, A_ADDR)
        self.log: list = []

    def _out_a(self, desc: tuple) -> None:
        self._carry(self.a, self.b, desc)

    def _out_b(self, desc: tuple) -> None:
        self._carry(self.b, self.a, desc)

    def _carry(self, src: TcpConnection, dst: TcpConnection, desc: tuple) -> None:
        seq, ack, flags, window, options, payload = desc
        frame = bytes(build_tcp(src.local[0], dst.local[0], src.local[1], dst.local[1], seq, ack,
                                flags, window, options, payload))
        if self.schedule is not None:
            if self.sent < len(self.schedule):
                drop, dup, extra = self.schedule[self.sent]
            else:
                drop, dup, extra = False, False, 0.0
        else:
            drop = self.rng.random() < self.loss
            dup = self.rng.random() < self.dup
            extra = self.rng.random() * self.delay * 4 if self.rng.random() < self.reorder else 0.0
        self.sent += 1
        if drop:
            return
        for k in range(2 if dup else 1):
            self.n += 1
            heapq.heappush(self.in_flight, (self.clock.now + self.delay + extra + k * 1e-4, self.n,
                                            dst, src, frame))

    def deliver_one(self) -> bool:
        """Deliver the next segment in flight, running timers that come first; False when idle."""
        t_seg = self.in_flight[0][0] if self.in_flight else None
        t_tim = None
        for c in (self.a, self.b):
            t = c.next_timeout()
            if t is not None and (t_tim is None or t < t_tim):
                t_tim = t
        if t_seg is None and t_tim is None:
            return False
        if t_tim is not None and (t_seg is None or t_tim < t_seg):
            self.clock.now = max(self.clock.now, t_tim)
            for c in (self.a, self.b):
                t = c.next_timeout()
                if t is not None and t <= self.clock.now:
                    c.on_timer(self.clock.now)
            return True
        at, _, dst, src, frame = heapq.heappop(self.in_flight)
        self.clock.now = max(self.clock.now, at)
        seg = parse_tcp_checked(frame, src.local[0], dst.local[0])
        dst.input(seg)
        # Memory stays bounded by the receive buffer: in-order plus out-of-order bytes.
        held = (len(dst._rcvbuf) if dst._rcvbuf is not None else 0) + (
            dst._ooo.nbytes if dst._ooo is not None else 0)
        assert held <= dst.config.rcvbuf, (held, dst)
        return True

    def run(self, until=None, max_steps: int = 1_000_000, max_time: float = 1e9) -> None:
        """Step until ``until()`` is true, nothing is left, or limits are hit."""
        start = self.clock.now
        for _ in range(max_steps):
            if until is not None and until():
                return
            if self.clock.now - start > max_time:
                return
            if not self.deliver_one():
                return
        raise AssertionError("harness did not settle")


def transfer(wire: Wire, data_ab: bytes, data_ba: bytes, chunk: int = 65536) -> Tuple[bytes, bytes]:
    """Connect, send data both ways, close both sides; returns what each side received."""
    a, b = wire.a, wire.b
    b.listen(iss=777)
    a.connect(iss=0xFFFFF000)     # near the wrap: sequence arithmetic crosses 2**32
    got_a = bytearray()
    got_b = bytearray()
    sent = {id(a): 0, id(b): 0}
    closed = set()
    wire.run(until=lambda: a.state == 4 and b.state == 4, max_time=100_000)
    assert a.state == 4 and b.state == 4, (a, b)

    def pump() -> bool:
        for conn, data, got in ((a, data_ab, got_b), (b, data_ba, got_a)):
            pos = sent[id(conn)]
            if pos < len(data) and conn.state in (4, 7):
                n = conn.send(data[pos:pos + chunk])
                sent[id(conn)] = pos + n
            elif pos >= len(data) and id(conn) not in closed and conn.state in (4, 7):
                closed.add(id(conn))
                conn.shutdown(1)
        for conn, got in ((b, got_b), (a, got_a)):
            while True:
                try:
                    d = conn.recv(1 << 20)
                except BlockingIOError:
                    break
                if not d:
                    break
                got += d
        return (len(got_b) == len(data_ab) and len(got_a) == len(data_ba)
                and a.state in (0, 10) and b.state in (0, 10))

    for _ in range(5_000_000):
        if pump():
            break
        if not wire.deliver_one():
            pump()
            break
    # Let TIME_WAIT, retransmitted FINs and their ACKs play out until nothing is left.
    wire.run(max_time=3600)
    return bytes(got_a), bytes(got_b)
