"""TCP connection engine: RFC 9293 transitions driven by crafted segments (scapy-built)."""
from __future__ import annotations

import errno
from types import SimpleNamespace

import pytest
from scapy.layers.inet import TCP

from fastproto.proto.tcp import (
    CLOSE_WAIT, CLOSED, CLOSING, ESTABLISHED, EV_ERROR, EV_READABLE, EV_STATE, EV_WRITABLE, FIN_WAIT_1,
    FIN_WAIT_2, LAST_ACK, LISTEN, SHUT_RD, SHUT_WR, SYN_RECEIVED, SYN_SENT, TIME_WAIT, TcpConnection,
)
from fastproto.proto.tcp_timers import TcpConfig
from fastproto.wire.tcp import ACK, FIN, PSH, RST, SYN, build_tcp, parse_tcp

from tcp_harness import FakeClock

ISS = 1000
IRS = 5000
LOCAL = ("10.0.0.1", 40000)
REMOTE = ("10.0.0.2", 80)


class Out(list):
    """The output callback: keeps descriptors with their payload copied (the view is not kept)."""

    def __call__(self, desc):
        seq, ack, flags, window, options, payload = desc
        self.append(SimpleNamespace(seq=seq, ack=ack, flags=flags, window=window, options=options,
                                    payload=bytes(payload)))

    def take(self):
        items = list(self)
        self.clear()
        return items


def seg(seq, ack=0, flags="A", window=65535, payload=b"", options=()):
    """A segment crafted by scapy, parsed by the wire module."""
    return parse_tcp(bytes(TCP(sport=REMOTE[1], dport=LOCAL[1], seq=seq, ack=ack, flags=flags,
                               window=window, options=list(options)) / payload))


def make(config=None, **cfg):
    clock = FakeClock()
    out = Out()
    events = []
    conn = TcpConnection(config or TcpConfig(**cfg), clock, out, lambda c, m: events.append(m),
                         LOCAL, REMOTE)
    return conn, out, clock, events


def record(**kw):
    r = dict(local=LOCAL, remote=REMOTE, iss=ISS, irs=IRS, snd_wnd=65535, peer_mss=1460,
             snd_wscale=None, rcv_wscale=None, ts_recent=None, sack_permitted=False)
    r.update(kw)
    return SimpleNamespace(**r)


def established(config=None, **kw):
    """An ESTABLISHED connection (no options unless given): ISS 1000, IRS 5000."""
    clock = FakeClock()
    out = Out()
    events = []
    conn = TcpConnection.from_handshake(record(**kw), config or TcpConfig(), clock, out,
                                        lambda c, m: events.append(m))
    return conn, out, clock, events


def opts(options):
    """scapy's view of an options byte string (NOPs left out)."""
    raw = bytes(build_tcp("1.1.1.1", "2.2.2.2", 1, 2, 0, 0, ACK, 0, options))
    return dict((k, v) for k, v in TCP(raw).options if k != "NOP")


# ---------------------------------------------------------------- opening


def test_connect_sends_syn_with_our_options():
    conn, out, clock, _ = make()
    conn.connect(iss=ISS)
    assert conn.state == SYN_SENT
    (syn,) = out.take()
    assert syn.flags == SYN and syn.seq == ISS and syn.ack == 0
    o = opts(syn.options)
    assert o["MSS"] == 1460 and "SAckOK" in o and o["WScale"] == 3 and o["Timestamp"][1] == 0
    assert conn.snd_nxt == ISS + 1 and conn.snd_una == ISS


def test_mss_for_ipv6_is_1440():
    conn, out, _, _ = make(ipv6=True)
    conn.connect(iss=ISS)
    assert opts(out.take()[0].options)["MSS"] == 1440


def test_active_open_completes_on_syn_ack():
    conn, out, clock, events = make()
    conn.connect(iss=ISS)
    out.take()
    conn.input(seg(IRS, ISS + 1, "SA", 30000, options=[("MSS", 1200), ("WScale", 3),
                                                       ("SAckOK", b""), ("Timestamp", (77, 1))]))
    assert conn.state == ESTABLISHED
    assert conn.snd_una == ISS + 1 and conn.rcv_nxt == IRS + 1
    assert conn.snd_wnd == 30000            # the SYN's window is never scaled (RFC 7323 2.2)
    assert conn.snd_mss == 1200 - 12        # timestamps on every segment
    (ack,) = out.take()
    assert ack.flags == ACK and ack.seq == ISS + 1 and ack.ack == IRS + 1
    assert opts(ack.options)["Timestamp"][1] == 77
    assert any(m & EV_STATE for m in events)


def test_peer_without_options_gets_default_mss_and_no_scaling():
    conn, out, _, _ = make()
    conn.connect(iss=ISS)
    out.take()
    conn.input(seg(IRS, ISS + 1, "SA", 8000))
    assert conn.snd_mss == 536 and conn._rcv_wscale == 0 and conn._snd_wscale == 0
    (ack,) = out.take()
    assert ack.options == b"" and ack.window == 65535


def test_syn_ack_with_bad_ack_gets_rst_and_no_state_change():
    conn, out, _, _ = make()
    conn.connect(iss=ISS)
    out.take()
    conn.input(seg(IRS, ISS + 5, "SA"))
    (rst,) = out.take()
    assert rst.flags == RST and rst.seq == ISS + 5
    assert conn.state == SYN_SENT and conn.counters["tcp.syn_sent_bad_ack"] == 1


def test_rst_in_syn_sent_is_connection_refused():
    conn, out, _, events = make()
    conn.connect(iss=ISS)
    conn.input(seg(0, ISS + 1, "RA"))
    assert conn.state == CLOSED and conn.error == errno.ECONNREFUSED
    assert any(m & EV_ERROR for m in events)
    with pytest.raises(ConnectionRefusedError):
        conn.recv(10)


def test_rst_without_ack_in_syn_sent_is_ignored():
    conn, _, _, _ = make()
    conn.connect(iss=ISS)
    conn.input(seg(0, 0, "R"))
    assert conn.state == SYN_SENT and conn.error is None


def test_from_handshake_record():
    conn, _, _, _ = established(snd_wscale=7, rcv_wscale=2, ts_recent=99, sack_permitted=True,
                                snd_wnd=1 << 20)
    assert conn.state == ESTABLISHED
    assert conn.snd_una == conn.snd_nxt == ISS + 1 and conn.rcv_nxt == IRS + 1
    assert conn.snd_wnd == 1 << 20 and conn.ts_recent == 99 and conn._sack_ok
    assert conn._snd_wscale == 7 and conn._rcv_wscale == 2 and conn.snd_mss == 1448


def test_from_handshake_wraps_isn():
    conn, _, _, _ = established(iss=0xFFFFFFFF, irs=0xFFFFFFFF)
    assert conn.snd_una == 0 and conn.rcv_nxt == 0


def test_passive_open_through_listen():
    conn, out, _, _ = make()
    conn.listen(iss=ISS)
    assert conn.state == LISTEN
    conn.input(seg(IRS, 0, "S", options=[("MSS", 1400), ("WScale", 5)]))
    assert conn.state == SYN_RECEIVED
    (synack,) = out.take()
    assert synack.flags == SYN | ACK and synack.seq == ISS and synack.ack == IRS + 1
    o = opts(synack.options)
    assert o["WScale"] == 3 and "Timestamp" not in o and "SAckOK" not in o
    conn.input(seg(IRS + 1, ISS + 1, "A", 100))
    assert conn.state == ESTABLISHED and conn.snd_wnd == 100 << 5


def test_listen_answers_ack_with_rst_and_ignores_rst():
    conn, out, _, _ = make()
    conn.listen(iss=ISS)
    conn.input(seg(IRS, 4242, "A"))
    (rst,) = out.take()
    assert rst.flags == RST and rst.seq == 4242
    conn.input(seg(IRS, 0, "R"))
    assert out.take() == [] and conn.state == LISTEN


def test_rst_in_passive_syn_received_returns_to_listen():
    conn, out, _, _ = make()
    conn.listen(iss=ISS)
    conn.input(seg(IRS, 0, "S"))
    conn.input(seg(IRS + 1, 0, "R"))
    assert conn.state == LISTEN and conn.error is None


def test_bad_ack_in_syn_received_gets_rst():
    conn, out, _, _ = make()
    conn.listen(iss=ISS)
    conn.input(seg(IRS, 0, "S"))
    out.take()
    conn.input(seg(IRS + 1, ISS + 50, "A"))
    (rst,) = out.take()
    assert rst.flags == RST and rst.seq == ISS + 50 and conn.state == SYN_RECEIVED


def test_simultaneous_open():
    a, out_a, _, _ = make()
    b, out_b, _, _ = make()
    a.connect(iss=ISS)
    b.connect(iss=IRS)
    (syn_a,) = out_a.take()
    (syn_b,) = out_b.take()
    a.input(seg(syn_b.seq, 0, "S", options=[("MSS", 1460)]))
    b.input(seg(syn_a.seq, 0, "S", options=[("MSS", 1460)]))
    assert a.state == b.state == SYN_RECEIVED
    (sa_a,) = out_a.take()
    (sa_b,) = out_b.take()
    assert sa_a.flags == SYN | ACK and sa_a.ack == IRS + 1
    a.input(seg(sa_b.seq, sa_b.ack, "SA", options=[("MSS", 1460)]))
    b.input(seg(sa_a.seq, sa_a.ack, "SA", options=[("MSS", 1460)]))
    assert a.state == b.state == ESTABLISHED
    assert a.counters["tcp.simultaneous_open"] >= 1


def test_syn_retries_time_out():
    conn, out, clock, _ = make(syn_retries=2, rto_initial=1.0)
    conn.connect(iss=ISS)
    times = []
    while conn.state == SYN_SENT:
        clock.now = conn.next_timeout()
        conn.on_timer(clock.now)
        times.append(clock.now)
    assert conn.error == errno.ETIMEDOUT
    assert [s.flags for s in out.take()] == [SYN, SYN, SYN]
    assert times[1] - times[0] == pytest.approx(2 * (times[0] - 1000.0))


# ---------------------------------------------------------------- data and ACKs


def test_send_segments_by_mss_and_ack_frees_buffer():
    conn, out, clock, _ = established(peer_mss=1000)
    assert conn.send(b"x" * 2500) == 2500
    segs = out.take()
    assert [len(s.payload) for s in segs] == [1000, 1000]      # the 500-byte tail waits (Nagle)
    assert [s.seq for s in segs] == [ISS + 1, ISS + 1001]
    conn.input(seg(IRS + 1, ISS + 2001, "A"))
    (tail,) = out.take()
    assert tail.seq == ISS + 2001 and len(tail.payload) == 500 and tail.flags == ACK | PSH
    conn.input(seg(IRS + 1, ISS + 2501, "A"))
    assert conn.snd_una == ISS + 2501 and len(conn._sndbuf) == 0 and conn.next_timeout() is None


def test_send_buffer_bound():
    conn, _, _, _ = established(config=TcpConfig(sndbuf=3000), snd_wnd=0)
    assert conn.send(b"a" * 5000) == 3000
    assert conn.send(b"b") == 0 and not conn.writable


def test_in_order_data_is_delivered_and_ack_is_delayed():
    conn, out, clock, _ = established()
    conn.input(seg(IRS + 1, ISS + 1, "PA", payload=b"hello"))
    assert out.take() == []                       # delayed ACK
    assert conn.next_timeout() == pytest.approx(clock.now + 0.040)
    assert conn.recv(100) == b"hello"
    clock.now += 0.040
    conn.on_timer(clock.now)
    (ack,) = out.take()
    assert ack.ack == IRS + 6 and ack.flags == ACK


def test_every_second_full_segment_is_acked_at_once():
    conn, out, _, _ = established()
    conn.input(seg(IRS + 1, ISS + 1, "A", payload=b"a" * 1460))
    assert out.take() == []
    conn.input(seg(IRS + 1461, ISS + 1, "A", payload=b"b" * 1460))
    (ack,) = out.take()
    assert ack.ack == IRS + 1 + 2920


def test_large_coalesced_segment_is_accepted():
    conn, out, _, _ = established(config=TcpConfig(rcvbuf=1 << 20), snd_wscale=7, rcv_wscale=5)
    data = bytes(range(256)) * 256
    conn.input(seg(IRS + 1, ISS + 1, "A", payload=data))
    assert conn.recv(1 << 20) == data
    assert out.take()[0].ack == IRS + 1 + 65536


def test_recv_into_and_would_block():
    conn, _, _, _ = established()
    with pytest.raises(BlockingIOError):
        conn.recv(10)
    conn.input(seg(IRS + 1, ISS + 1, "A", payload=b"abcdef"))
    buf = bytearray(4)
    assert conn.recv_into(buf) == 4 and buf == b"abcd"
    assert conn.recv(10) == b"ef"


def test_out_of_order_is_queued_acked_at_once_with_sack_and_filled():
    conn, out, _, _ = established(sack_permitted=True)
    conn.input(seg(IRS + 101, ISS + 1, "A", payload=b"B" * 100))
    (dup,) = out.take()
    assert dup.ack == IRS + 1
    assert tuple(opts(dup.options)["SAck"]) == (IRS + 101, IRS + 201)
    assert conn.counters["tcp.ooo_queued"] == 1
    with pytest.raises(BlockingIOError):
        conn.recv(10)
    conn.input(seg(IRS + 1, ISS + 1, "A", payload=b"A" * 100))
    (ack,) = out.take()                        # the gap is filled: ACK at once
    assert ack.ack == IRS + 201 and ack.options == b""
    assert conn.recv(1000) == b"A" * 100 + b"B" * 100


def test_sack_first_block_is_the_latest():
    conn, out, _, _ = established(sack_permitted=True)
    conn.input(seg(IRS + 301, ISS + 1, "A", payload=b"x" * 100))
    conn.input(seg(IRS + 101, ISS + 1, "A", payload=b"x" * 100))
    blocks = opts(out.take()[-1].options)["SAck"]
    assert tuple(blocks) == (IRS + 101, IRS + 201, IRS + 301, IRS + 401)


def test_segment_beyond_window_is_dropped_counted_not_stored():
    conn, out, _, _ = established(config=TcpConfig(rcvbuf=4096))
    conn.input(seg(IRS + 1 + 5000, ISS + 1, "A", payload=b"z" * 100))
    (ack,) = out.take()
    assert ack.ack == IRS + 1
    assert conn.counters["tcp.rcv_out_of_window"] == 1 and conn._ooo is None


def test_segment_straddling_the_window_edge_is_trimmed():
    conn, out, _, _ = established(config=TcpConfig(rcvbuf=4096))
    conn.input(seg(IRS + 1 + 4000, ISS + 1, "A", payload=b"z" * 500))
    assert conn._ooo.nbytes == 96 and conn.counters["tcp.rcv_trimmed"] == 1


def test_old_duplicate_is_acked_and_ignored():
    conn, out, _, _ = established()
    conn.input(seg(IRS + 1, ISS + 1, "A", payload=b"abc"))
    out.take()
    conn.input(seg(IRS + 1, ISS + 1, "A", payload=b"abc"))
    (ack,) = out.take()
    assert ack.ack == IRS + 4 and conn.recv(10) == b"abc"


def test_overlapping_retransmission_keeps_only_new_bytes():
    conn, _, _, _ = established()
    conn.input(seg(IRS + 1, ISS + 1, "A", payload=b"abc"))
    conn.input(seg(IRS + 2, ISS + 1, "A", payload=b"bcdef"))
    assert conn.recv(10) == b"abcdef"


def test_ack_of_unsent_data_is_dropped_with_challenge_ack():
    conn, out, _, _ = established()
    conn.send(b"q" * 10)
    out.take()
    conn.input(seg(IRS + 1, ISS + 500, "A", payload=b"data"))
    (ack,) = out.take()
    assert ack.ack == IRS + 1 and ack.seq == ISS + 11
    assert conn.counters["tcp.ack_unsent"] == 1 and conn.counters["tcp.challenge_acks"] == 1
    assert conn.snd_una == ISS + 1 and conn._rcvbuf is None


def test_ack_too_old_is_dropped():
    conn, out, _, _ = established(snd_wnd=1000)
    conn.input(seg(IRS + 1, (ISS + 1 - 5000) & 0xFFFFFFFF, "A", payload=b"data"))
    assert conn.counters["tcp.ack_too_old"] == 1 and conn._rcvbuf is None


def test_segment_without_ack_is_dropped_and_counted():
    conn, out, _, _ = established()
    conn.input(seg(IRS + 1, 0, "P", payload=b"data"))
    assert conn.counters["tcp.no_ack_dropped"] == 1 and conn._rcvbuf is None


# ---------------------------------------------------------------- RFC 5961, PAWS


def test_exact_rst_resets():
    conn, _, _, events = established()
    conn.input(seg(IRS + 1, 0, "R"))
    assert conn.state == CLOSED and conn.error == errno.ECONNRESET
    with pytest.raises(BrokenPipeError):
        conn.send(b"x")                      # writing after a reset
    with pytest.raises(ConnectionResetError):
        conn.recv(1)
    with pytest.raises(BrokenPipeError):
        conn.send(b"x")
    assert conn.recv(1) == b""


def test_in_window_rst_gets_challenge_ack():
    conn, out, _, _ = established()
    conn.input(seg(IRS + 100, 0, "R"))
    (ack,) = out.take()
    assert ack.flags == ACK and ack.ack == IRS + 1
    assert conn.state == ESTABLISHED and conn.counters["tcp.challenge_acks"] == 1


def test_out_of_window_rst_is_ignored():
    conn, out, _, _ = established()
    conn.input(seg(IRS + 1_000_000, 0, "R"))
    assert out.take() == [] and conn.state == ESTABLISHED
    assert conn.counters["tcp.rst_out_of_window"] == 1


def test_syn_in_established_gets_challenge_ack():
    conn, out, _, _ = established()
    conn.input(seg(IRS + 1, 0, "S"))
    (ack,) = out.take()
    assert ack.flags == ACK and ack.ack == IRS + 1 and conn.state == ESTABLISHED


def test_challenge_acks_are_rate_limited():
    conn, out, clock, _ = established(config=TcpConfig(challenge_acks_per_second=2))
    for _ in range(5):
        conn.input(seg(IRS + 10, 0, "R"))
    assert len(out.take()) == 2 and conn.counters["tcp.challenge_acks_limited"] == 3
    clock.now += 1.0
    conn.input(seg(IRS + 10, 0, "R"))
    assert len(out.take()) == 1


def test_paws_drops_old_timestamp():
    conn, out, _, _ = established(ts_recent=1000)
    conn.input(seg(IRS + 1, ISS + 1, "A", payload=b"new", options=[("Timestamp", (1001, 0))]))
    assert conn.ts_recent == 1001
    conn.input(seg(IRS + 4, ISS + 1, "A", payload=b"old", options=[("Timestamp", (900, 0))]))
    assert conn.counters["tcp.paws_drops"] == 1
    assert out.take()[-1].ack == IRS + 4
    assert conn.recv(10) == b"new"


# ---------------------------------------------------------------- retransmission


def test_rto_backoff_to_timeout():
    conn, out, clock, _ = established(config=TcpConfig(max_retries=3, rto_initial=1.0))
    conn.send(b"p" * 100)
    out.take()
    gaps = []
    last = clock.now
    while conn.state == ESTABLISHED:
        clock.now = conn.next_timeout()
        gaps.append(clock.now - last)
        last = clock.now
        conn.on_timer(clock.now)
    assert gaps == [1.0, 2.0, 4.0, 8.0]
    assert [len(s.payload) for s in out.take()] == [100, 100, 100]
    assert conn.error == errno.ETIMEDOUT and conn.counters["tcp.timeouts"] == 1
    with pytest.raises(TimeoutError):
        conn.send(b"x")


def test_rtt_sample_sets_rto():
    conn, out, clock, _ = established(config=TcpConfig(rto_min=0.2))
    conn.send(b"a" * 100)
    clock.now += 0.1
    conn.input(seg(IRS + 1, ISS + 101, "A"))
    assert conn.srtt == pytest.approx(0.1) and conn.rto == pytest.approx(0.3)


def test_fast_retransmit_and_newreno_partial_ack():
    conn, out, clock, _ = established(peer_mss=1000, snd_wnd=65535,
                                      config=TcpConfig(initial_window=10))
    conn.send(b"d" * 10000)
    first = out.take()
    assert len(first) == 10
    for _ in range(3):
        conn.input(seg(IRS + 1, ISS + 1, "A"))
    rexmit = out.take()
    assert rexmit[0].seq == ISS + 1 and len(rexmit[0].payload) == 1000
    assert conn.counters["tcp.fast_retransmits"] == 1 and conn._in_recovery
    # partial ACK: the next hole is retransmitted at once (RFC 6582)
    conn.input(seg(IRS + 1, ISS + 2001, "A"))
    assert out.take()[0].seq == ISS + 2001 and conn._in_recovery
    conn.input(seg(IRS + 1, ISS + 10001, "A"))
    assert not conn._in_recovery and conn.snd_una == ISS + 10001


def test_retransmission_after_rto_resends_from_snd_una():
    conn, out, clock, _ = established(peer_mss=1000)
    conn.send(b"r" * 3000)
    out.take()
    clock.now = conn.next_timeout()
    conn.on_timer(clock.now)
    (again,) = out.take()
    assert again.seq == ISS + 1 and conn.cwnd == 1000
    assert conn.counters["tcp.retransmits"] == 1


# ---------------------------------------------------------------- flow control


def test_zero_window_persist_probes_back_off_and_resume():
    conn, out, clock, _ = established(snd_wnd=0, config=TcpConfig(persist_min=1.0, persist_max=8.0))
    assert conn.send(b"w" * 500) == 500
    assert out.take() == []
    gaps = []
    last = clock.now
    for _ in range(5):
        clock.now = conn.next_timeout()
        gaps.append(clock.now - last)
        last = clock.now
        conn.on_timer(clock.now)
        (probe,) = out.take()
        assert len(probe.payload) == 1 and probe.seq == ISS + 1
        conn.input(seg(IRS + 1, ISS + 1, "A", window=0))      # still closed
    assert gaps == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert conn.state == ESTABLISHED and conn.counters["tcp.persist_probes"] == 5
    conn.input(seg(IRS + 1, ISS + 1, "A", window=10000))
    assert b"".join(s.payload for s in out.take()) == b"w" * 500


def test_receiver_zero_window_acks_probe_without_taking_it():
    conn, out, _, _ = established(config=TcpConfig(rcvbuf=1000))
    conn.input(seg(IRS + 1, ISS + 1, "A", payload=b"f" * 1000))
    assert conn.rcv_wnd == 0
    out.take()
    conn.input(seg(IRS + 1001, ISS + 1, "A", payload=b"p"))
    (ack,) = out.take()
    assert ack.ack == IRS + 1001 and ack.window == 0


def test_receiver_sws_window_opens_by_at_least_an_mss():
    conn, out, _, _ = established(config=TcpConfig(rcvbuf=8000))
    conn.input(seg(IRS + 1, ISS + 1, "A", payload=b"f" * 8000))
    out.take()
    conn.recv(100)
    assert conn.rcv_wnd == 0 and out.take() == []         # too small to offer (SWS)
    conn.recv(2000)
    (upd,) = out.take()
    assert upd.window == 2100 and conn.rcv_wnd == 2100


def test_nagle_holds_small_segment_until_ack_unless_nodelay():
    conn, out, _, _ = established()
    conn.send(b"a")
    conn.send(b"b")
    assert [s.payload for s in out.take()] == [b"a"]
    conn.input(seg(IRS + 1, ISS + 2, "A"))
    assert [s.payload for s in out.take()] == [b"b"]
    conn.nodelay = True
    conn.send(b"c")
    conn.send(b"d")
    assert [s.payload for s in out.take()] == [b"c", b"d"]


def test_window_field_is_scaled():
    conn, out, _, _ = established(config=TcpConfig(rcvbuf=1 << 20), snd_wscale=2, rcv_wscale=4)
    conn.input(seg(IRS + 1, ISS + 1, "A", payload=b"x" * 3000))
    assert out.take()[0].window == ((0xFFFF << 4) - 3000) >> 4


# ---------------------------------------------------------------- closing


def test_active_close_half_close_and_time_wait():
    conn, out, clock, events = established(config=TcpConfig(time_wait=30.0))
    conn.send(b"bye")
    conn.shutdown(SHUT_WR)
    assert conn.state == FIN_WAIT_1
    segs = out.take()
    assert segs[-1].flags & FIN and b"".join(s.payload for s in segs) == b"bye"
    with pytest.raises(BrokenPipeError):
        conn.send(b"more")
    conn.input(seg(IRS + 1, ISS + 5, "A"))
    assert conn.state == FIN_WAIT_2
    conn.input(seg(IRS + 1, ISS + 5, "A", payload=b"still talking"))   # half-close: peer sends on
    assert conn.recv(100) == b"still talking"
    conn.input(seg(IRS + 14, ISS + 5, "FA"))
    assert conn.state == TIME_WAIT and conn.eof and conn.recv(10) == b""
    assert out.take()[-1].ack == IRS + 15
    # a retransmitted FIN is ACKed again and restarts the timer
    clock.now += 10
    conn.input(seg(IRS + 14, ISS + 5, "FA"))
    assert out.take()[-1].ack == IRS + 15
    assert conn.next_timeout() == pytest.approx(clock.now + 30.0)
    clock.now = conn.next_timeout()
    conn.on_timer(clock.now)
    assert conn.state == CLOSED and conn.error is None


def test_passive_close_close_wait_last_ack():
    conn, out, _, _ = established()
    conn.input(seg(IRS + 1, ISS + 1, "FA"))
    assert conn.state == CLOSE_WAIT and conn.eof and conn.recv(5) == b""
    conn.send(b"reply")                          # we may still send in CLOSE_WAIT
    conn.close()
    assert conn.state == LAST_ACK
    last = out.take()[-1]
    assert last.flags & FIN
    conn.input(seg(IRS + 2, ISS + 7, "A"))
    assert conn.state == CLOSED and conn.error is None


def test_simultaneous_close_goes_through_closing():
    conn, out, clock, _ = established(config=TcpConfig(time_wait=5.0))
    conn.close()
    assert conn.state == FIN_WAIT_1
    conn.input(seg(IRS + 1, ISS + 1, "FA"))      # their FIN, not acking ours
    assert conn.state == CLOSING
    conn.input(seg(IRS + 2, ISS + 2, "A"))
    assert conn.state == TIME_WAIT
    clock.now += 5.0
    conn.on_timer(clock.now)
    assert conn.state == CLOSED


def test_out_of_order_fin_waits_for_the_gap():
    conn, out, _, _ = established()
    conn.input(seg(IRS + 4, ISS + 1, "FA", payload=b"def"))
    assert conn.state == ESTABLISHED
    conn.input(seg(IRS + 1, ISS + 1, "A", payload=b"abc"))
    assert conn.state == CLOSE_WAIT and conn.recv(10) == b"abcdef"
    assert out.take()[-1].ack == IRS + 8


@pytest.mark.parametrize("state_setup, err", [
    ("fin_wait_1", errno.ECONNRESET), ("fin_wait_2", errno.ECONNRESET),
    ("close_wait", errno.ECONNRESET), ("closing", None), ("last_ack", None), ("time_wait", None),
])
def test_rst_in_closing_states(state_setup, err):
    conn, out, _, _ = established()
    rcv = IRS + 1
    if state_setup in ("fin_wait_1", "fin_wait_2", "closing", "time_wait"):
        conn.close()
        if state_setup in ("fin_wait_2", "time_wait"):
            conn.input(seg(rcv, ISS + 2, "A"))
        if state_setup in ("closing", "time_wait"):
            conn.input(seg(rcv, ISS + 1 if state_setup == "closing" else ISS + 2, "FA"))
            rcv += 1
    else:
        conn.input(seg(rcv, ISS + 1, "FA"))
        rcv += 1
        if state_setup == "last_ack":
            conn.close()
    before = conn.state
    assert before != ESTABLISHED
    conn.input(seg(rcv, 0, "R"))
    assert conn.state == CLOSED and conn.error == err


def test_close_with_unread_data_sends_rst():
    conn, out, _, _ = established()
    conn.input(seg(IRS + 1, ISS + 1, "A", payload=b"unread"))
    out.take()
    conn.close()
    (rst,) = out.take()
    assert rst.flags == RST and rst.seq == ISS + 1 and conn.state == CLOSED


def test_data_after_close_gets_rst():
    conn, out, _, _ = established()
    conn.close()
    out.take()
    conn.input(seg(IRS + 1, ISS + 2, "A", payload=b"late"))
    assert out.take()[-1].flags == RST and conn.state == CLOSED
    assert conn.counters["tcp.data_after_close"] == 1


def test_shutdown_rd_discards_later_data():
    conn, out, _, _ = established()
    conn.shutdown(SHUT_RD)
    conn.input(seg(IRS + 1, ISS + 1, "A", payload=b"ignored"))
    assert conn.recv(10) == b"" and conn.rcv_nxt == IRS + 8
    assert conn.counters["tcp.rcv_after_shutdown"] == 1


def test_abort_sends_rst():
    conn, out, _, _ = established()
    conn.abort()
    (rst,) = out.take()
    assert rst.flags == RST and rst.seq == ISS + 1 and conn.state == CLOSED


def test_segment_to_closed_connection_gets_rst():
    conn, out, _, _ = make()
    conn.input(seg(77, 999, "A", payload=b"x"))
    conn.input(seg(77, 0, "S"))
    conn.input(seg(77, 0, "R"))
    r1, r2 = out.take()
    assert (r1.seq, r1.flags) == (999, RST)
    assert (r2.seq, r2.ack, r2.flags) == (0, 78, RST | ACK)


# ---------------------------------------------------------------- keepalive and events


def test_keepalive_probes_then_times_out():
    conn, out, clock, _ = established(config=TcpConfig(keepalive=True, keep_idle=100.0,
                                                       keep_intvl=10.0, keep_cnt=2))
    clock.now = conn.next_timeout()
    conn.on_timer(clock.now)
    (probe,) = out.take()
    assert probe.seq == ISS and probe.payload == b""
    answered_at = clock.now
    conn.input(seg(IRS + 1, ISS + 1, "A"))        # answered: idle again
    assert conn._keep_probes == 0
    for _ in range(10):
        if conn.state == CLOSED:
            break
        clock.now = conn.next_timeout()
        conn.on_timer(clock.now)
    assert conn.state == CLOSED and conn.error == errno.ETIMEDOUT
    assert len(out.take()) == 2 and conn.counters["tcp.keepalive_probes"] == 3
    assert clock.now == pytest.approx(answered_at + 100.0 + 2 * 10.0)


def test_events_report_readable_and_state():
    conn, out, _, events = established()
    conn.input(seg(IRS + 1, ISS + 1, "A", payload=b"x"))
    assert events[-1] & EV_READABLE
    conn.input(seg(IRS + 2, ISS + 1, "FA"))
    assert events[-1] & EV_STATE and conn.readable


def test_counters_are_shared_through_the_config():
    cfg = TcpConfig()
    a, _, _, _ = established(config=cfg)
    b, _, _, _ = established(config=cfg)
    a.input(seg(IRS + 100, 0, "R"))
    b.input(seg(IRS + 100, 0, "R"))
    assert cfg.counters["tcp.challenge_acks"] == 2


# ---------------------------------------------------------------- for the stack


def test_parse_segment_counts_the_rejection_reason():
    from fastproto.proto.tcp import parse_segment

    counters = {}
    assert parse_segment(b"\x00" * 10, counters) is None
    assert counters == {"tcp.bad_segment.truncated": 1}
    assert parse_segment(bytes(TCP(sport=1, dport=2, flags="A")), counters).flags == ACK


def test_time_wait_accepts_a_new_syn_only_beyond_the_old_connection():
    conn, out, clock, _ = established()
    conn.close()
    conn.input(seg(IRS + 1, ISS + 2, "FA"))
    assert conn.state == TIME_WAIT
    assert conn.accepts_new_syn(seg(IRS + 100_000, 0, "S"))
    assert not conn.accepts_new_syn(seg(IRS - 10, 0, "S"))
    assert not conn.accepts_new_syn(seg(IRS + 100_000, 0, "A"))


def test_time_wait_reuse_uses_timestamps_when_negotiated():
    conn, out, clock, _ = established(ts_recent=500)
    conn.close()
    conn.input(seg(IRS + 1, ISS + 2, "FA", options=[("Timestamp", (600, 0))]))
    assert conn.state == TIME_WAIT
    assert conn.accepts_new_syn(seg(IRS - 10, 0, "S", options=[("Timestamp", (700, 0))]))
    assert not conn.accepts_new_syn(seg(IRS + 10_000, 0, "S", options=[("Timestamp", (550, 0))]))


def test_urgent_data_is_delivered_inline():
    conn, _, _, _ = established()
    conn.input(parse_tcp(bytes(TCP(sport=REMOTE[1], dport=LOCAL[1], seq=IRS + 1, ack=ISS + 1,
                                   flags="UA", urgptr=2) / b"!!rest")))
    assert conn.recv(10) == b"!!rest" and conn.counters["tcp.urgent_inline"] == 1


def test_writable_event_when_a_full_send_buffer_drains():
    conn, out, _, events = established(config=TcpConfig(sndbuf=2000), peer_mss=1000)
    assert conn.send(b"x" * 5000) == 2000 and not conn.writable
    events.clear()
    conn.input(seg(IRS + 1, ISS + 1001, "A"))
    assert conn.writable and any(m & EV_WRITABLE for m in events)


def test_partial_recv_keeps_the_rest():
    conn, _, _, _ = established()
    conn.input(seg(IRS + 1, ISS + 1, "A", payload=b"0123456789"))
    assert conn.recv(3) == b"012" and conn.recv(3) == b"345" and conn.recv(100) == b"6789"


def test_kept_payload_view_stays_valid_while_the_buffer_moves_on():
    kept = []
    clock = FakeClock()
    conn = TcpConnection.from_handshake(record(peer_mss=1000), TcpConfig(), clock, kept.append)
    conn.nodelay = True
    conn.send(b"a" * 1000)
    conn.input(seg(IRS + 1, ISS + 1001, "A"))      # the buffer shrinks under a live view
    conn.send(b"b" * 1000)
    assert bytes(kept[0][5]) == b"a" * 1000 and bytes(kept[1][5]) == b"b" * 1000


def test_fast_recovery_retransmits_the_holes_sack_reveals():
    conn, out, clock, _ = established(peer_mss=1000, snd_wnd=65535, sack_permitted=True,
                                      config=TcpConfig(initial_window=10))
    conn.send(b"s" * 10000)
    out.take()
    base = ISS + 1
    # The peer holds segments 2-3 and 5-10: holes at segment 1 and segment 4.
    sack = [("NOP", None), ("NOP", None),
            ("SAck", (base + 1000, base + 3000, base + 4000, base + 10000))]
    for _ in range(3):
        conn.input(seg(IRS + 1, base, "A", options=sack))
    assert [s.seq for s in out.take()] == [base]             # fast retransmit of the first hole
    conn.input(seg(IRS + 1, base, "A", options=sack))
    (hole,) = out.take()
    assert hole.seq == base + 3000 and len(hole.payload) == 1000
    assert conn.counters["tcp.sack_retransmits"] == 1
    conn.input(seg(IRS + 1, base, "A", options=sack))          # nothing left to fill
    assert all(s.seq >= base + 10000 for s in out.take())
    conn.input(seg(IRS + 1, base + 3000, "A", options=sack[:2] + [("SAck", (base + 4000, base + 10000))]))
    assert all(s.seq != base + 3000 for s in out.take())     # already resent: left to the timer
    conn.input(seg(IRS + 1, base + 10000, "A"))
    assert not conn._in_recovery and conn._sackboard is None


def test_invalid_sack_blocks_are_counted_and_ignored():
    conn, out, _, _ = established(peer_mss=1000, sack_permitted=True)
    conn.nodelay = True
    conn.send(b"s" * 2000)
    conn.input(seg(IRS + 1, ISS + 1, "A", options=[("NOP", None), ("NOP", None),
                                                   ("SAck", (ISS + 50_000, ISS + 60_000))]))
    assert conn.counters["tcp.sack_blocks_invalid"] == 1 and conn._sackboard.ranges == []


def test_limited_transmit_sends_new_data_on_the_first_two_dupacks():
    conn, out, _, _ = established(peer_mss=1000, config=TcpConfig(initial_window=4))
    conn.send(b"L" * 8000)
    assert [s.seq for s in out.take()] == [ISS + 1, ISS + 1001, ISS + 2001, ISS + 3001]
    conn.input(seg(IRS + 1, ISS + 1, "A"))
    assert [s.seq for s in out.take()] == [ISS + 4001]
    conn.input(seg(IRS + 1, ISS + 1, "A"))
    assert [s.seq for s in out.take()] == [ISS + 5001]
    conn.input(seg(IRS + 1, ISS + 1, "A"))
    assert out.take()[0].seq == ISS + 1 and conn._in_recovery     # then fast retransmit
    # ssthresh from the 4 segments in flight before Limited Transmit (RFC 5681 3.2 step 2)
    assert conn.ssthresh == 2000 and conn.cwnd == 2000 + 3 * 1000


def test_orphaned_fin_wait_2_gives_up_but_half_closed_does_not():
    conn, out, clock, _ = established(config=TcpConfig(fin_wait2_timeout=30.0))
    conn.shutdown(SHUT_WR)
    conn.input(seg(IRS + 1, ISS + 2, "A"))
    assert conn.state == FIN_WAIT_2 and conn.next_timeout() is None    # still readable: waits
    conn.close()
    assert conn.next_timeout() == pytest.approx(clock.now + 30.0)
    conn, out, clock, _ = established(config=TcpConfig(fin_wait2_timeout=30.0))
    conn.close()
    conn.input(seg(IRS + 1, ISS + 2, "A"))
    assert conn.state == FIN_WAIT_2 and conn.next_timeout() == pytest.approx(clock.now + 30.0)
    clock.now += 30.0
    conn.on_timer(clock.now)
    assert conn.state == CLOSED and conn.counters["tcp.fin_wait2_expired"] == 1


def test_sender_sws_holds_a_small_window_until_the_override_timeout():
    conn, out, clock, _ = established(peer_mss=1000, config=TcpConfig(persist_min=1.0))
    conn.input(seg(IRS + 1, ISS + 1, "A", window=500))          # the peer offers only 500 bytes
    conn.send(b"q" * 3000)
    assert out.take() == []                                      # 500 < max window / 2: wait
    clock.now = conn.next_timeout()
    conn.on_timer(clock.now)
    (s,) = out.take()
    assert len(s.payload) == 500 and conn.counters["tcp.sws_override"] == 1
    assert conn._t_rexmt is not None and conn._t_persist is None
