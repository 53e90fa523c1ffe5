"""Header prediction (fastproto.proto.tcp, docs/tcp.md "Fast path") against
the full RFC 9293 3.10.7.4 processing as the oracle: an in-order segment that
takes the fast path must leave the connection and its output exactly as the
full path would."""
from __future__ import annotations

from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from fastproto.proto.tcp import ESTABLISHED, TcpConnection
from fastproto.proto.tcp_states import MASK, SENDING
from fastproto.proto.tcp_timers import TcpConfig
from fastproto.wire.tcp import ACK, PSH, TcpSegment

from tcp_harness import FakeClock

LOCAL = ("10.0.0.1", 40000)
REMOTE = ("10.0.0.2", 80)
ISS = 0xFFFFF000          # sequence numbers wrap during the test
IRS = 0x7FFFFF00
WSCALE = 7
_SKIP = {"config", "clock", "output", "on_event", "counters"}


class Full(TcpConnection):
    """Every segment through the full processing (the oracle)."""

    def input(self, seg):
        self._input_slow(seg)
        self._flush()


class Predicted(TcpConnection):
    """Counts the segments that missed header prediction."""

    slow = 0

    def _input_slow(self, seg):
        type(self).slow += 1
        super()._input_slow(seg)


def _conn(cls, ts):
    out = []
    events = []
    rec = SimpleNamespace(local=LOCAL, remote=REMOTE, iss=ISS, irs=IRS, snd_wnd=1000 << WSCALE,
                          peer_mss=1460, snd_wscale=WSCALE, rcv_wscale=WSCALE,
                          ts_recent=100 if ts else None, sack_permitted=True)
    conn = cls.from_handshake(rec, TcpConfig(), FakeClock(), lambda d: out.append(
        (d[0], d[1], d[2], d[3], bytes(d[4]), bytes(d[5]))), lambda c, m: events.append(m))
    conn.nodelay = True
    conn._ts_offset = 12345       # random per connection: the same for both
    return conn, out, events


def _state(conn):
    names = [n for k in type(conn).__mro__ for n in getattr(k, "__slots__", ())]
    got = {n: getattr(conn, n) for n in names if n not in _SKIP and hasattr(conn, n)}
    for n in ("_sndbuf", "_rcvbuf"):
        got[n] = bytes(got[n]) if got[n] is not None else None
    got["counters"] = dict(conn.counters)
    return got


def _segment(conn, plen, acked, window, ts):
    seg = TcpSegment(REMOTE[1], LOCAL[1], conn.rcv_nxt, (conn.snd_una + acked) & MASK,
                     ACK | PSH, window, bytes(range(256)) * (plen // 256) + bytes(plen % 256))
    if ts:
        seg.ts_val = (conn.ts_recent + 1) & MASK
        seg.ts_ecr = 1
    return seg


def _input_fields(conn, seg):
    conn.input_fields(seg.sport, seg.dport, seg.seq, seg.ack, seg.flags, seg.window,
                      seg.payload, seg.ts_val, seg.ts_ecr)


def _run(sent, segments, ts):
    """Three connections send ``sent`` bytes, then take the same segments, as
    a TcpSegment, as fields (the receive path's entry) and through the full
    processing: the first two's connection, output and events must equal the
    oracle's."""
    fast, fast_out, fast_ev = _conn(Predicted, ts)
    fields, fields_out, fields_ev = _conn(Predicted, ts)
    full, full_out, full_ev = _conn(Full, ts)
    for conn in (fast, fields, full):
        conn.send(bytes(sent))
    for plen, frac, window in segments:
        outstanding = (fast.snd_max - fast.snd_una) & MASK
        acked = outstanding * frac // 8
        fast.input(_segment(fast, plen, acked, window, ts))
        _input_fields(fields, _segment(fields, plen, acked, window, ts))
        full.input(_segment(full, plen, acked, window, ts))
        assert _state(fast) == _state(full)
        assert _state(fields) == _state(full)
        assert fast_out == full_out == fields_out
        assert fast_ev == full_ev == fields_ev


@settings(max_examples=150, deadline=None)
@given(sent=st.integers(1, 20000), ts=st.booleans(),
       segments=st.lists(st.tuples(st.integers(0, 3000), st.integers(0, 8),
                                   st.integers(0, 0xFFFF)), min_size=1, max_size=6))
def test_in_order_segments_give_the_full_paths_state_and_output(sent, segments, ts):
    _run(sent, segments, ts)


def test_data_that_acknowledges_data_and_moves_the_window_takes_the_fast_path():
    Predicted.slow = 0
    conn, out, _ = _conn(Predicted, True)
    conn.send(bytes(64))
    out.clear()
    conn.input(_segment(conn, 64, 64, 999, True))      # the window shrank by 64 bytes
    assert Predicted.slow == 0
    assert conn.snd_wnd == 999 << WSCALE
    assert conn.snd_una == conn.snd_max
    assert bytes(conn._rcvbuf) == bytes(64)


def test_window_change_without_new_acknowledgment_takes_the_full_path():
    Predicted.slow = 0
    conn, _, _ = _conn(Predicted, True)
    conn.send(bytes(64))
    conn.input(_segment(conn, 64, 0, 999, True))
    assert Predicted.slow == 1
    assert conn.snd_wnd == 999 << WSCALE      # the full path still takes the update


def test_window_change_with_sack_blocks_takes_the_full_path():
    Predicted.slow = 0
    conn, _, _ = _conn(Predicted, True)
    conn.send(bytes(3000))
    seg = _segment(conn, 0, 1000, 999, True)
    seg.sack_blocks = (((conn.snd_una + 2000) & MASK, (conn.snd_una + 2500) & MASK),)
    conn.input(seg)
    assert Predicted.slow == 1
    assert conn._sackboard is not None


def test_window_from_an_older_segment_is_not_taken():
    # SND.WL1 ahead of SEG.SEQ (RFC 9293 3.10.7.4 "fifth"): no window update.
    conn, _, _ = _conn(Predicted, False)
    conn.send(bytes(64))
    conn.snd_wl1 = (conn.rcv_nxt + 10) & MASK
    before = conn.snd_wnd
    Predicted.slow = 0
    conn.input(_segment(conn, 0, 64, 5, False))
    assert Predicted.slow == 1
    assert conn.snd_wnd == before
    assert conn.state == ESTABLISHED


def test_window_change_while_persisting_takes_the_full_path():
    conn, _, _ = _conn(Predicted, False)
    conn.send(bytes(64))
    conn._t_persist = conn.clock() + 1.0
    Predicted.slow = 0
    conn.input(_segment(conn, 0, 64, 500, False))
    assert Predicted.slow == 1
    assert conn._t_persist is None


def test_fields_that_miss_prediction_get_the_full_processing():
    # Out of order: queued as the full path does, answered with a duplicate ACK.
    Predicted.slow = 0
    conn, out, _ = _conn(Predicted, True)
    seg = _segment(conn, 100, 0, 1000, True)
    conn.input_fields(seg.sport, seg.dport, (seg.seq + 500) & MASK, seg.ack, seg.flags,
                      seg.window, seg.payload, seg.ts_val, seg.ts_ecr)
    assert Predicted.slow == 1
    assert conn._ooo is not None
    assert out and out[-1][1] == conn.rcv_nxt


def test_fields_with_old_timestamp_are_dropped_by_paws():
    conn, out, _ = _conn(Predicted, True)
    seg = _segment(conn, 10, 0, 1000, True)
    before = conn.rcv_nxt
    conn.input_fields(seg.sport, seg.dport, seg.seq, seg.ack, seg.flags, seg.window,
                      seg.payload, (conn.ts_recent - 5) & MASK, 1)
    assert conn.rcv_nxt == before
    assert conn.counters.get("tcp.paws_drops") == 1


class AllOutput(TcpConnection):
    """Every send through the general output loop (the oracle of the
    one-segment case of _output)."""

    def _output(self, now):
        if self.state in SENDING:
            self._output_all(now)


@settings(max_examples=150, deadline=None)
@given(ts=st.booleans(), nodelay=st.booleans(),
       ops=st.lists(st.one_of(st.tuples(st.just("send"), st.integers(0, 3000)),
                              st.tuples(st.just("ack"), st.integers(0, 8), st.integers(0, 0xFFFF),
                                        st.integers(0, 200))),
                    min_size=1, max_size=10))
def test_output_of_one_segment_gives_the_general_loops_state_and_output(ts, nodelay, ops):
    one, one_out, one_ev = _conn(TcpConnection, ts)
    gen, gen_out, gen_ev = _conn(AllOutput, ts)
    for conn in (one, gen):
        conn.nodelay = nodelay
    for op in ops:
        if op[0] == "send":
            one.send(bytes(op[1]))
            gen.send(bytes(op[1]))
        else:
            _, frac, window, plen = op
            acked = ((one.snd_max - one.snd_una) & MASK) * frac // 8
            one.input(_segment(one, plen, acked, window, ts))
            gen.input(_segment(gen, plen, acked, window, ts))
        assert _state(one) == _state(gen)
        assert one_out == gen_out
        assert one_ev == gen_ev


def test_request_with_nothing_in_flight_goes_as_one_segment():
    conn, out, _ = _conn(TcpConnection, True)
    una = conn.snd_una
    conn.send(b"q" * 64)
    assert len(out) == 1
    seq, ack, flags, _, opts, payload = out[0]
    assert (seq, ack, flags, payload) == (una, conn.rcv_nxt, ACK | PSH, b"q" * 64)
    assert len(opts) == 12
    assert conn.snd_max == (una + 64) & MASK and conn._t_rexmt is not None


def test_send_beyond_the_window_waits_for_it():
    conn, out, _ = _conn(TcpConnection, False)
    conn.snd_wnd = 10
    conn.send(b"q" * 64)
    # sender SWS avoidance: 10 bytes is less than half the largest window offered
    assert out == []
    assert conn.snd_max == conn.snd_una
