"""Two TCP connections over an in-memory lossy wire: byte-exact delivery and clean closes."""
from __future__ import annotations

import random

import pytest
from hypothesis import given, settings, strategies as st

from fastproto.proto.tcp import CLOSED
from fastproto.proto.tcp_timers import TcpConfig

from tcp_harness import Wire, transfer


def _data(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def _assert_clean(wire: Wire) -> None:
    for conn in (wire.a, wire.b):
        assert conn.state == CLOSED and conn.error is None
        assert conn.next_timeout() is None


def test_megabytes_both_ways_over_a_lossy_wire():
    wire = Wire(seed=7, loss=0.10, dup=0.05, reorder=0.2)
    a_to_b, b_to_a = _data(1, 3 << 20), _data(2, 2 << 20)
    got_a, got_b = transfer(wire, a_to_b, b_to_a)
    assert got_b == a_to_b and got_a == b_to_a
    _assert_clean(wire)
    c = wire.a.counters
    assert c["tcp.retransmits"] + c["tcp.fast_retransmits"] > 0 and c["tcp.ooo_queued"] > 0


@pytest.mark.parametrize("options", [
    dict(timestamps=False, sack=False, window_scaling=False),
    dict(rcvbuf=4096, sndbuf=8192),
    dict(nodelay=True, rcvbuf=20000, timestamps=False),
    dict(ipv6=True, mtu=1280),
])
def test_option_combinations_over_a_lossy_wire(options):
    wire = Wire(seed=11, loss=0.10, dup=0.05, reorder=0.2,
                config_a=TcpConfig(**options), config_b=TcpConfig(**options))
    a_to_b, b_to_a = _data(3, 150_000), _data(4, 90_000)
    got_a, got_b = transfer(wire, a_to_b, b_to_a)
    assert got_b == a_to_b and got_a == b_to_a
    _assert_clean(wire)


def test_mismatched_options_negotiate_down():
    wire = Wire(seed=5, loss=0.05, config_a=TcpConfig(sack=False, timestamps=True),
                config_b=TcpConfig(window_scaling=False, timestamps=False, rcvbuf=30000))
    a_to_b, b_to_a = _data(5, 100_000), _data(6, 10_000)
    got_a, got_b = transfer(wire, a_to_b, b_to_a)
    assert got_b == a_to_b and got_a == b_to_a
    _assert_clean(wire)


_fate = st.tuples(st.booleans(), st.booleans(), st.sampled_from([0.0, 0.0, 0.002, 0.02, 0.3, 2.5]))


@given(schedule=st.lists(_fate, min_size=1, max_size=120),
       sizes=st.tuples(st.integers(0, 40_000), st.integers(0, 40_000)),
       seed=st.integers(0, 2**16))
@settings(max_examples=150, deadline=None)
def test_any_loss_reorder_duplication_delivers_exactly_the_bytes_sent(schedule, sizes, seed):
    # The schedule decides the fate (drop, duplicate, extra delay) of the first segments
    # on the wire, both directions interleaved; after it the wire is clean.  Retry limits
    # above the schedule's length mean no connection may give up.
    cfg = dict(rcvbuf=16384, syn_retries=200, max_retries=200)
    wire = Wire(seed=seed, schedule=schedule, config_a=TcpConfig(**cfg), config_b=TcpConfig(**cfg))
    a_to_b, b_to_a = _data(seed, sizes[0]), _data(seed + 1, sizes[1])
    got_a, got_b = transfer(wire, a_to_b, b_to_a)
    assert got_b == a_to_b and got_a == b_to_a
    _assert_clean(wire)


@given(seed=st.integers(0, 2**32 - 1), loss=st.sampled_from([0.0, 0.05, 0.2, 0.3]),
       dup=st.sampled_from([0.0, 0.1]), reorder=st.sampled_from([0.0, 0.3]),
       rcvbuf=st.sampled_from([2000, 16384, 262144]), sndbuf=st.sampled_from([3000, 65536]),
       timestamps=st.booleans(), sack=st.booleans(), scaling=st.booleans(), nodelay=st.booleans(),
       sizes=st.tuples(st.integers(0, 50_000), st.integers(0, 50_000)))
@settings(max_examples=40, deadline=None)
def test_random_impairments_and_options_deliver_exactly(seed, loss, dup, reorder, rcvbuf, sndbuf,
                                                        timestamps, sack, scaling, nodelay, sizes):
    def cfg():
        return TcpConfig(rcvbuf=rcvbuf, sndbuf=sndbuf, timestamps=timestamps, sack=sack,
                         window_scaling=scaling, nodelay=nodelay, max_retries=60, syn_retries=60)

    wire = Wire(seed=seed, loss=loss, dup=dup, reorder=reorder, config_a=cfg(), config_b=cfg())
    a_to_b, b_to_a = _data(seed, sizes[0]), _data(seed ^ 1, sizes[1])
    got_a, got_b = transfer(wire, a_to_b, b_to_a)
    assert got_b == a_to_b and got_a == b_to_a
    _assert_clean(wire)


def test_stalled_reader_closes_the_window_and_probes_reopen_it():
    cfg = dict(rcvbuf=8192, persist_min=0.5, persist_max=4.0)
    wire = Wire(seed=3, loss=0.1, config_a=TcpConfig(**cfg), config_b=TcpConfig(**cfg))
    a, b = wire.a, wire.b
    b.listen(iss=1)
    a.connect(iss=2)
    wire.run(until=lambda: a.state == b.state == 4, max_time=1000)
    data = _data(9, 200_000)
    sent = 0
    got = bytearray()
    stall_until = wire.clock.now + 60.0          # the reader sleeps for a minute at first
    while len(got) < len(data):
        if sent < len(data):
            sent += a.send(data[sent:sent + 65536])
        if wire.clock.now >= stall_until:
            try:
                got += b.recv(1 << 20)
            except BlockingIOError:
                pass
        if not wire.deliver_one():
            wire.clock.now = max(wire.clock.now, stall_until)
    assert bytes(got) == data
    # the window closed (probes), and small windows were pushed by the override timeout
    assert a.counters["tcp.persist_probes"] > 0 and a.counters["tcp.sws_override"] > 0
    assert b.counters["tcp.rcv_zero_window_drops"] > 0
    a.close()
    b.close()
    wire.run(max_time=3600)
    _assert_clean(wire)
