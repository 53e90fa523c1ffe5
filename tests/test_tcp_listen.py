"""The passive open of a listening TCP socket (RFC 9293 3.5, 3.10.7.2; RFC 4987)."""
import dataclasses
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tcp_scapy import input_args, options_of, tcp_segment, to_scapy

from fastproto.proto.syncookie import COUNTER_PERIOD, SynCookies
from fastproto.proto.tcp_isn import IsnGenerator
from fastproto.proto.tcp_listen import (
    ACK,
    SYN,
    ListenConfig,
    Listener,
    Segment,
    SynRecord,
    TcpOptions,
)

SERVER = "192.0.2.1"
PORT = 80
CLIENT = "198.51.100.7"
CPORT = 40000


class Clock:
    def __init__(self, now=5000.0):
        self.now = now

    def __call__(self):
        return self.now


class Rig:
    """A listener with a fake clock that records what it sends."""

    def __init__(self, backlog=8, syn_queue_len=8, local=(SERVER, PORT), **cfg):
        self.clock = Clock()
        self.sent: list[Segment] = []
        self.listener = Listener(local, backlog, syn_queue_len, ListenConfig(**cfg), self.clock,
                                 IsnGenerator(self.clock, bytes(16)),
                                 SynCookies(self.clock, bytes(range(16))), self.sent.append)

    def feed(self, tcp, src=CLIENT, dst=SERVER):
        return self.listener.input(*input_args(src, dst, tcp))

    def last(self):
        return to_scapy(self.sent[-1])

    def stats(self):
        return self.listener.stats()


def syn(seq=1000, sport=CPORT, **opts):
    return tcp_segment(sport, PORT, seq, flags="S", **opts)


def final_ack(synack, window=2000, sport=CPORT, ts=None, payload=b"", flags="A"):
    return tcp_segment(sport, PORT, synack.ack, (synack.seq + 1) % 2**32, flags, window,
                       ts=ts, payload=payload)


FULL = dict(mss=1400, wscale=5, sack=True, ts=(111, 0))


def test_handshake_with_all_options_completes():
    rig = Rig(mss=1460, rcv_wscale=7)
    assert rig.feed(syn(**FULL)) is None
    synack = rig.last()
    assert synack.flags == "SA" and synack.ack == 1001 and synack.dport == CPORT
    o = options_of(synack)
    assert o["mss"] == 1460 and o["wscale"] == 7 and o["sack_permitted"]
    assert o["ts"][1] == 111
    assert len(rig.listener) == 1 and rig.stats()["tcp.syn_recv"] == 1
    rec = rig.feed(final_ack(synack, window=2000, ts=(112, o["ts"][0])))
    assert rec == SynRecord((SERVER, PORT), (CLIENT, CPORT), synack.seq, 1000, 2000 << 5, 1400,
                            5, 7, 112, True)
    assert len(rig.listener) == 0
    assert rig.listener.established_pending == 1
    assert rig.listener.last_segment_len == 0
    assert rig.stats()["tcp.established"] == 1


def test_syn_record_has_exactly_the_fields_the_engine_consumes():
    names = [f.name for f in dataclasses.fields(SynRecord)]
    assert names == ["local", "remote", "iss", "irs", "snd_wnd", "peer_mss", "snd_wscale",
                     "rcv_wscale", "ts_recent", "sack_permitted"]
    assert hasattr(SynRecord, "__slots__")


def test_handshake_without_options_agrees_on_none():
    rig = Rig()
    rig.feed(syn())
    synack = rig.last()
    o = options_of(synack)
    # only our MSS: window scaling, SACK and timestamps only answer an offer (RFC 7323 2.2, 3.2)
    assert o == {"mss": 1460, "wscale": None, "sack_permitted": False, "ts": None}
    rec = rig.feed(final_ack(synack, window=777))
    assert (rec.peer_mss, rec.snd_wscale, rec.rcv_wscale, rec.ts_recent, rec.sack_permitted,
            rec.snd_wnd) == (None, None, None, None, False, 777)


def test_options_the_listener_does_not_offer_are_not_agreed():
    rig = Rig(sack=False, timestamps=False)
    rig.feed(syn(**FULL))
    o = options_of(rig.last())
    assert not o["sack_permitted"] and o["ts"] is None and o["wscale"] == 7
    rec = rig.feed(final_ack(rig.last()))
    assert not rec.sack_permitted and rec.ts_recent is None and rec.snd_wscale == 5


def test_peer_wscale_above_14_is_taken_as_14():
    rig = Rig()
    rig.feed(syn(wscale=20))
    rec = rig.feed(final_ack(rig.last(), window=1))
    assert rec.snd_wscale == 14 and rec.snd_wnd == 1 << 14


def test_final_ack_with_data_reports_its_length():
    rig = Rig()
    rig.feed(syn())
    rec = rig.feed(final_ack(rig.last(), payload=b"hello", flags="PA"))
    assert rec is not None and rig.listener.last_segment_len == 5


def test_final_ack_with_fin_counts_the_fin():
    rig = Rig()
    rig.feed(syn())
    assert rig.feed(final_ack(rig.last(), flags="FA")) is not None
    assert rig.listener.last_segment_len == 1


def test_duplicate_syn_resends_the_same_synack():
    rig = Rig()
    rig.feed(syn(**FULL))
    first = rig.last()
    rig.feed(syn(**FULL))
    second = rig.last()
    assert len(rig.sent) == 2 and len(rig.listener) == 1
    assert (second.seq, second.ack, second.flags) == (first.seq, first.ack, first.flags)
    assert rig.stats()["tcp.syn_duplicate"] == 1


def test_syn_with_another_isn_for_a_request_gets_the_old_synack_then_rst_clears_it():
    # RFC 9293 3.5 Figure 8: an old duplicate SYN is answered, the peer resets it
    rig = Rig()
    rig.feed(syn(seq=1000))
    rig.feed(syn(seq=5000))
    assert rig.last().ack == 1001
    rst = tcp_segment(CPORT, PORT, rig.last().ack, 0, "R")
    rig.feed(rst)
    assert len(rig.listener) == 0 and rig.stats()["tcp.syn_recv_reset"] == 1
    rig.feed(syn(seq=5000))
    assert rig.last().ack == 5001 and len(rig.listener) == 1


def test_synack_is_retransmitted_with_backoff_then_the_request_is_dropped():
    rig = Rig(synack_rto=1.0, synack_retries=3)
    rig.feed(syn())
    start = rig.clock.now
    assert rig.listener.next_timeout() == start + 1.0
    expected = [start + 1.0, start + 3.0, start + 7.0]
    for when in expected:
        rig.clock.now = when - 0.5
        rig.listener.on_timer(rig.clock.now)
        rig.clock.now = when
        rig.listener.on_timer(when)
    assert len(rig.sent) == 4
    assert {(s.seq, s.ack, s.flags) for s in rig.sent} == {(rig.sent[0].seq, 1001, SYN | ACK)}
    assert rig.stats()["tcp.synack_retrans"] == 3
    assert rig.listener.next_timeout() == start + 15.0
    rig.listener.on_timer(start + 15.0)
    assert len(rig.listener) == 0 and len(rig.sent) == 4
    assert rig.stats()["tcp.syn_recv_expired"] == 1
    assert rig.stats()["tcp.listen_drops"] == 1
    assert rig.listener.next_timeout() is None


def test_synack_retransmission_timeout_is_capped():
    rig = Rig(synack_rto=1.0, synack_rto_max=3.0, synack_retries=4)
    rig.feed(syn())
    due = []
    for _ in range(4):
        due.append(rig.listener.next_timeout())
        rig.listener.on_timer(due[-1])
    # RFC 6298 5.5 doubling, capped at synack_rto_max
    assert due == [5001.0, 5003.0, 5006.0, 5009.0]
    assert rig.listener.next_timeout() == 5012.0


def test_completed_request_is_not_retransmitted():
    rig = Rig()
    rig.feed(syn())
    rig.feed(final_ack(rig.last()))
    assert rig.listener.next_timeout() is None
    rig.listener.on_timer(rig.clock.now + 100)
    assert len(rig.sent) == 1


def test_rst_in_listen_is_ignored():
    rig = Rig()
    assert rig.feed(tcp_segment(CPORT, PORT, 1, 0, "R")) is None
    assert rig.feed(tcp_segment(CPORT, PORT, 1, 99, "RA")) is None
    assert rig.sent == [] and rig.stats()["tcp.rst_ignored"] == 2


def test_rst_not_at_rcv_nxt_leaves_the_request():
    rig = Rig()
    rig.feed(syn(seq=1000))
    rig.feed(tcp_segment(CPORT, PORT, 1002, 0, "R"))
    assert len(rig.listener) == 1 and rig.stats()["tcp.rst_ignored"] == 1


def test_ack_in_listen_gets_a_reset_at_its_ack_number():
    rig = Rig()
    assert rig.feed(tcp_segment(CPORT, PORT, 5, 123456, "A")) is None
    rst = rig.last()
    # RFC 9293 3.10.7.2: <SEQ=SEG.ACK><CTL=RST>
    assert rst.flags == "R" and rst.seq == 123456 and rst.dport == CPORT and rst.sport == PORT
    assert rig.stats()["tcp.rst_sent"] == 1


def test_synack_in_listen_gets_a_reset():
    rig = Rig()
    rig.feed(tcp_segment(CPORT, PORT, 5, 777, "SA"))
    assert rig.last().flags == "R" and rig.last().seq == 777
    assert len(rig.listener) == 0


def test_wrong_ack_for_a_request_gets_a_reset_and_keeps_the_request():
    rig = Rig()
    rig.feed(syn())
    synack = rig.last()
    bad = tcp_segment(CPORT, PORT, 1001, (synack.seq + 2) % 2**32, "A")
    assert rig.feed(bad) is None
    assert rig.last().flags == "R" and rig.last().seq == bad.ack
    assert rig.stats()["tcp.listen_bad_ack"] == 1
    assert rig.feed(final_ack(synack)) is not None


def test_final_ack_outside_the_window_is_answered_with_an_ack():
    rig = Rig(window=1000)
    rig.feed(syn())
    synack = rig.last()
    bad = tcp_segment(CPORT, PORT, 1001 + 5000, (synack.seq + 1) % 2**32, "A")
    assert rig.feed(bad) is None
    reply = rig.last()
    assert reply.flags == "A" and reply.seq == (synack.seq + 1) % 2**32 and reply.ack == 1001
    assert rig.stats()["tcp.listen_bad_seq"] == 1 and len(rig.listener) == 1


def test_final_ack_without_agreed_timestamps_is_dropped():
    rig = Rig()
    rig.feed(syn(ts=(5, 0)))
    assert rig.feed(final_ack(rig.last())) is None
    assert rig.stats()["tcp.listen_ts_missing"] == 1 and len(rig.listener) == 1


def test_accept_queue_overflow_drops_the_final_ack_until_room():
    rig = Rig(backlog=1)
    rig.feed(syn(sport=1111))
    a = rig.last()
    rig.feed(syn(sport=2222))
    b = rig.last()
    assert rig.feed(final_ack(a, sport=1111)) is not None
    assert rig.listener.accept_queue_room() == 0
    assert rig.feed(final_ack(b, sport=2222)) is None
    s = rig.stats()
    assert s["tcp.listen_overflows"] == 1 and s["tcp.listen_drops"] == 1
    assert len(rig.listener) == 1      # kept: the peer retransmits
    rig.listener.accepted()
    rec = rig.feed(final_ack(b, sport=2222))
    assert rec is not None and rec.remote == (CLIENT, 2222)


def test_syn_is_dropped_while_the_accept_queue_is_full():
    rig = Rig(backlog=1)
    rig.feed(syn(sport=1111))
    rig.feed(final_ack(rig.last(), sport=1111))
    n = len(rig.sent)
    rig.feed(syn(sport=3333))
    assert len(rig.sent) == n and len(rig.listener) == 0
    assert rig.stats()["tcp.listen_overflows"] == 1


def test_accepting_more_than_pending_is_an_error():
    rig = Rig()
    with pytest.raises(ValueError):
        rig.listener.accepted()


def _flood(rig, n, seed=7):
    rnd = random.Random(seed)
    for _ in range(n):
        src = f"10.{rnd.randrange(256)}.{rnd.randrange(256)}.{rnd.randrange(1, 255)}"
        rig.listener.input(src, rnd.randrange(1024, 65536), SERVER, PORT,
                           rnd.randrange(2**32), 0, SYN, 65535,
                           {"mss": 1460, "ts": (rnd.randrange(2**32), 0)}, 0)
    rig.sent.clear()


def test_syn_flood_does_not_stop_a_legitimate_client():
    rig = Rig(backlog=4, syn_queue_len=16)
    _flood(rig, 10_000)
    assert len(rig.listener) == 16
    assert rig.stats()["tcp.syncookies_sent"] == 10_000 - 16
    rig.feed(syn(seq=424242, **FULL))
    synack = rig.last()
    assert len(rig.listener) == 16     # no state kept for the cookie
    o = options_of(synack)
    assert o["wscale"] == 7 and o["sack_permitted"] and o["ts"][1] == 111
    rig.clock.now += 3.0
    rec = rig.feed(final_ack(synack, window=3000, ts=(113, o["ts"][0])))
    assert rec == SynRecord((SERVER, PORT), (CLIENT, CPORT), synack.seq, 424242, 3000 << 5,
                            1300, 5, 7, 113, True)
    assert rig.stats()["tcp.syncookies_ok"] == 1
    assert rig.listener.established_pending == 1


def test_cookie_without_timestamps_offers_and_keeps_no_window_scale_or_sack():
    rig = Rig(syn_queue_len=0)
    rig.feed(syn(mss=1460, wscale=5, sack=True))
    synack = rig.last()
    # RFC 4987 3.6: what the cookie cannot hold is not offered
    assert options_of(synack) == {"mss": 1460, "wscale": None, "sack_permitted": False,
                                  "ts": None}
    rec = rig.feed(final_ack(synack, window=500))
    assert (rec.peer_mss, rec.snd_wscale, rec.rcv_wscale, rec.sack_permitted, rec.ts_recent,
            rec.snd_wnd) == (1460, None, None, False, None, 500)


def test_cookie_without_an_mss_option_assumes_the_default():
    rig = Rig(syn_queue_len=0)
    rig.feed(syn())
    assert rig.feed(final_ack(rig.last())).peer_mss == 536


def test_cookie_over_ipv6_assumes_the_ipv6_default_mss():
    rig = Rig(syn_queue_len=0, local=("2001:db8::1", PORT))
    rig.feed(syn(), src="2001:db8::7", dst="2001:db8::1")
    rec = rig.feed(final_ack(rig.last()), src="2001:db8::7", dst="2001:db8::1")
    assert rec.peer_mss == 1220 and rec.local == ("2001:db8::1", PORT)


def test_forged_cookie_ack_gets_a_reset():
    rig = Rig(syn_queue_len=0)
    rig.feed(syn())
    synack = rig.last()
    forged = tcp_segment(CPORT, PORT, 1001, (synack.seq + 12345) % 2**32, "A")
    assert rig.feed(forged) is None
    assert rig.last().flags == "R" and rig.last().seq == forged.ack
    assert rig.stats()["tcp.syncookies_failed"] == 1


def test_stale_cookie_ack_gets_a_reset():
    rig = Rig(syn_queue_len=0)
    rig.feed(syn())
    synack = rig.last()
    rig.clock.now += 2 * COUNTER_PERIOD
    assert rig.feed(final_ack(synack)) is None
    assert rig.last().flags == "R"
    assert rig.stats()["tcp.syncookies_ok"] == 0


def test_cookie_from_another_source_is_rejected():
    rig = Rig(syn_queue_len=0)
    rig.feed(syn())
    assert rig.feed(final_ack(rig.last()), src="198.51.100.8") is None
    assert rig.last().flags == "R" and rig.stats()["tcp.syncookies_failed"] == 1


def test_cookie_ack_while_the_accept_queue_is_full_is_dropped():
    rig = Rig(backlog=1, syn_queue_len=0)
    rig.feed(syn(sport=1111))
    a = rig.last()
    rig.feed(syn(sport=2222))
    b = rig.last()
    assert rig.feed(final_ack(a, sport=1111)) is not None
    assert rig.feed(final_ack(b, sport=2222)) is None
    assert rig.stats()["tcp.listen_overflows"] == 1
    rig.listener.accepted()
    assert rig.feed(final_ack(b, sport=2222)) is not None


def test_without_cookies_a_full_syn_queue_drops_syns():
    rig = Rig(syn_queue_len=1, syncookies=False)
    rig.feed(syn(sport=1111))
    rig.feed(syn(sport=2222))
    assert len(rig.sent) == 1
    s = rig.stats()
    assert s["tcp.syn_queue_full_drops"] == 1 and s["tcp.listen_drops"] == 1


def test_syn_data_is_not_queued_but_counted():
    rig = Rig()
    rig.feed(tcp_segment(CPORT, PORT, 1000, flags="S", payload=b"early"))
    assert rig.last().ack == 1001
    assert rig.stats()["tcp.syn_data_ignored"] == 1


def test_segment_without_syn_ack_or_rst_is_dropped():
    rig = Rig()
    assert rig.feed(tcp_segment(CPORT, PORT, 1, 0, "P", payload=b"x")) is None
    assert rig.sent == [] and rig.stats()["tcp.listen_no_flags"] == 1


def test_segment_for_another_port_or_address_is_not_handled():
    rig = Rig()
    rig.feed(tcp_segment(CPORT, PORT + 1, 1, flags="S"))
    rig.feed(syn(), dst="192.0.2.99")
    assert rig.sent == [] and rig.stats()["tcp.listen_not_ours"] == 2


@pytest.mark.parametrize("src,dst", [("224.0.0.1", SERVER), ("0.0.0.0", SERVER),
                                     ("255.255.255.255", SERVER), ("ff02::1", "2001:db8::1"),
                                     ("bogus", SERVER)])
def test_syn_from_or_to_a_non_unicast_address_is_dropped(src, dst):
    rig = Rig(local=("::", PORT))
    rig.feed(syn(), src=src, dst=dst)
    assert rig.sent == [] and rig.stats()["tcp.listen_bad_address"] == 1


def test_syn_to_a_multicast_destination_is_dropped():
    rig = Rig(local=("", PORT))
    rig.feed(syn(), dst="239.1.2.3")
    assert rig.sent == [] and rig.stats()["tcp.listen_bad_address"] == 1


@pytest.mark.parametrize("opts", [{"mss": 0}, {"mss": 70000}, {"wscale": -1},
                                  {"ts": (1,)}, {"ts": (1, 2**32)}, {"ts": "xy"}])
def test_invalid_options_are_dropped_by_reason(opts):
    rig = Rig()
    rig.listener.input(CLIENT, CPORT, SERVER, PORT, 1, 0, SYN, 100, opts, 0)
    assert rig.sent == [] and rig.stats()["tcp.listen_bad_options"] == 1


@pytest.mark.parametrize("field", ["seq", "ack", "window", "flags", "payload_len", "sport"])
def test_out_of_range_header_fields_are_dropped_by_reason(field):
    rig = Rig()
    args = dict(src_ip=CLIENT, src_port=CPORT, dst_ip=SERVER, dst_port=PORT, seq=1, ack=0,
                flags=SYN, window=100, options=None, payload_len=0)
    args[{"sport": "src_port"}.get(field, field)] = {"seq": 2**32, "ack": -1, "window": 65536,
                                                      "flags": 256, "payload_len": -1,
                                                      "sport": 0}[field]
    rig.listener.input(**args)
    s = rig.stats()
    assert rig.sent == [] and s["tcp.listen_bad_segment"] + s["tcp.listen_bad_address"] == 1


def test_wildcard_listener_answers_from_the_address_the_syn_was_sent_to():
    rig = Rig(local=("0.0.0.0", PORT))
    rig.feed(syn(), dst="203.0.113.5")
    assert rig.sent[-1].src_ip == "203.0.113.5"
    rec = rig.feed(final_ack(rig.last()), dst="203.0.113.5")
    assert rec.local == ("203.0.113.5", PORT)
    rig.feed(syn(), src="2001:db8::7", dst="2001:db8::1")
    assert rig.stats()["tcp.listen_not_ours"] == 1


def test_packed_and_mapped_addresses_name_the_same_request():
    rig = Rig(local=("::", PORT))
    rig.feed(syn(), src=bytes([198, 51, 100, 7]), dst=bytes(10) + b"\xff\xff" + bytes([192, 0, 2, 1]))
    rec = rig.feed(final_ack(rig.last()))
    assert rec.remote == (CLIENT, CPORT) and rec.local == (SERVER, PORT)


def test_options_may_be_given_as_a_record():
    rig = Rig()
    rig.listener.input(CLIENT, CPORT, SERVER, PORT, 1, 0, SYN, 100,
                       TcpOptions(mss=1000, wscale=2, sack_permitted=True), 0)
    o = options_of(rig.last())
    assert o["wscale"] == 7 and o["sack_permitted"]


def test_options_may_be_given_as_a_parsed_segment_with_ts_val_and_ts_ecr():
    class Parsed:
        mss, wscale, sack_permitted, ts_val, ts_ecr = 1200, 3, False, 4242, 0

    rig = Rig()
    rig.listener.input(CLIENT, CPORT, SERVER, PORT, 1, 0, SYN, 100, Parsed(), 0)
    o = options_of(rig.last())
    assert o["ts"][1] == 4242 and o["wscale"] == 7 and not o["sack_permitted"]


def test_bad_configuration_is_rejected():
    with pytest.raises(ValueError):
        ListenConfig(rcv_wscale=15)
    with pytest.raises(ValueError):
        Listener((SERVER, 0), 1, 1)
    with pytest.raises(ValueError):
        Listener((SERVER, PORT), -1, 1)


def test_timer_heap_stays_bounded_when_requests_complete():
    rig = Rig(backlog=100_000, syn_queue_len=10)
    for port in range(1024, 1424):
        rig.feed(syn(sport=port))
        rig.feed(final_ack(rig.last(), sport=port))
    assert len(rig.listener._timers) <= 64 + 2 * 10 + 1


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2**32 - 1),
                          st.integers(0, 2**32 - 1), st.integers(0, 255),
                          st.floats(0, 200)), max_size=30))
def test_any_segment_sequence_keeps_the_queues_bounded(segments):
    rig = Rig(backlog=2, syn_queue_len=3, synack_retries=2)
    completed = 0
    for sport_i, seq, ack, flags, dt in segments:
        rig.clock.now += dt
        rig.listener.on_timer(rig.clock.now)
        before = sum(rig.stats().values())
        rec = rig.listener.input(CLIENT, 1000 + sport_i, SERVER, PORT, seq, ack, flags, 100,
                                 {"ts": (seq, ack)} if flags & 1 else None, 0)
        # every segment is either answered, completes, or is counted
        assert rec is not None or sum(rig.stats().values()) > before
        completed += rec is not None
        assert len(rig.listener) <= 3
        assert rig.listener.established_pending == completed <= 2
