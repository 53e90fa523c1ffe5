"""Counters added to without a lock stay exact, the stack's receive path gets
the demux's answer in one call, and the stack's totals include what TCP
counts for it."""
from __future__ import annotations


import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from concurrency import run_switching_often
from demux_rig import demux_rig
from fastproto import BufferPool, Demux, PCQ
from fastproto._core.counters import count
from fastproto.wire import ETH_P_IP, ethernet, icmp_echo, ipv4, udp

LOCAL, PEER = "198.18.0.2", "198.18.0.1"
MAC_L, MAC_P = "02:00:00:00:00:02", "02:00:00:00:00:01"


# -- count ---------------------------------------------------------------------------

def test_count_starts_a_missing_counter_and_adds():
    c: dict[str, int] = {}
    count(c, "a")
    count(c, "a", 41)
    count(c, "b", -2)
    assert c == {"a": 42, "b": -2}


def test_count_adds_past_a_machine_word():
    c = {"big": 2**64 - 1}
    count(c, "big", 2)
    assert c["big"] == 2**64 + 1


def test_count_refuses_what_is_not_a_counter_dict():
    with pytest.raises(TypeError):
        count(None, "a")            # type: ignore[arg-type]
    with pytest.raises(TypeError):
        count([], "a")              # type: ignore[arg-type]
    with pytest.raises(TypeError):
        count({}, 7)                # type: ignore[arg-type]
    with pytest.raises(TypeError):
        count({"a": "x"}, "a", 1)   # a value that is not a number


def test_count_adds_to_other_mappings_through_their_own_methods():
    from collections import Counter, OrderedDict

    for c in (OrderedDict(z=1), Counter(z=1)):
        count(c, "a", 2)
        count(c, "a")
        assert list(c.items()) == [("z", 1), ("a", 3)]   # order kept: its own __setitem__


def test_count_from_threads_switching_often_loses_no_increment():
    c: dict[str, int] = {}
    run_switching_often([lambda k=k: [count(c, ("x", "y")[i & 1], k) for i in range(20_000)]
                         for k in (1, 2, 3, 4)])
    assert c == {"x": 10_000 * 10, "y": 10_000 * 10}


# -- the demux's answer for the stack ------------------------------------------------

def _udp_frame(dport: int) -> bytes:
    return ethernet(MAC_L, MAC_P, ETH_P_IP, ipv4(PEER, LOCAL, 17, udp(PEER, LOCAL, 4000, dport, b"hi")))


def _ping() -> bytes:
    return ethernet(MAC_L, MAC_P, ETH_P_IP, ipv4(PEER, LOCAL, 1, icmp_echo(1, 1)))


def _demux() -> tuple[BufferPool, Demux, PCQ]:
    return demux_rig((17, LOCAL, 53, None, 0), buffers=256, sock=3)


def test_input_woken_gives_socket_ids_as_ints_and_none_for_no_frames_handed_back():
    pool, demux, q = _demux()
    b = pool.batch_from_frames([_udp_frame(53), _udp_frame(53)])
    woken, other, unmatched, acks = demux.input_woken(b.handles, b.lengths)
    assert woken == [3] and type(woken[0]) is int
    assert other is None and unmatched is None and acks == []
    assert q.get_many(8).tolist() == b.handles.tolist()


def test_input_woken_takes_other_array_types_and_refuses_bad_shapes():
    pool, demux, _ = _demux()
    b = pool.batch_from_frames([_ping(), _udp_frame(54)])
    woken, other, unmatched, _ = demux.input_woken(b.handles.tolist(), b.lengths.astype(np.int64))
    assert woken == [] and other.tolist() == [0] and unmatched.tolist() == [1]
    with pytest.raises(ValueError):
        demux.input_woken(b.handles, b.lengths[:1])
    with pytest.raises(ValueError):
        demux.input_woken(np.zeros(65, np.uint64), np.zeros(65, np.uint32))


kinds = st.lists(st.sampled_from(["open", "closed", "ping"]), min_size=1, max_size=64)


@settings(max_examples=40, deadline=None)
@given(kinds)
def test_input_woken_answers_as_input_does(batch):
    make = {"open": lambda: _udp_frame(53), "closed": lambda: _udp_frame(54), "ping": _ping}
    frames = [make[k]() for k in batch]
    pool_a, demux_a, q_a = _demux()
    pool_b, demux_b, q_b = _demux()
    a = pool_a.batch_from_frames(frames)
    b = pool_b.batch_from_frames(frames)
    _, woken, other, unmatched = demux_a.input(a.handles, a.lengths)
    woken_b, other_b, unmatched_b, acks = demux_b.input_woken(b.handles, b.lengths)
    assert woken_b == woken.tolist() and acks == []
    assert (other_b.tolist() if other_b is not None else []) == other.tolist()
    assert (unmatched_b.tolist() if unmatched_b is not None else []) == unmatched.tolist()
    assert len(q_a) == len(q_b) and demux_a.counters() == demux_b.counters()


# -- the stack's totals --------------------------------------------------------------

def test_stack_totals_count_tcp_packets_and_reader_wakeups():
    from fastproto.phy.link import LinkPair
    from fastproto.stack import Stack

    link = LinkPair()
    with Stack(link.a, f"{PEER}/24") as a, Stack(link.b, f"{LOCAL}/24") as b:
        server = b.create_server(("", 7))
        server.settimeout(10.0)
        client = a.create_connection((LOCAL, 7), timeout=10.0)
        peer, _ = server.accept()
        peer.settimeout(10.0)
        for _ in range(20):
            client.sendall(b"q" * 64)
            assert peer.recv(64) == b"q" * 64
            peer.sendall(b"r" * 64)
            assert client.recv(64) == b"r" * 64
        for st_ in (a.stats(), b.stats()):
            # every frame sent is an IP packet or an ARP message
            assert st_["if.tx_frames"] == (st_["ip.out_packets"] + st_["arp.requests_sent"]
                                           + st_["arp.replies_sent"])
            assert st_["ip.out_packets"] >= st_["tcp.out_segments"] >= 20
            assert "ip.out_packets" not in a.tcp.stats()
        client.close()
        peer.close()
        server.close()
        total = a.stats()["wakeup.reader"] + b.stats()["wakeup.reader"]
        assert total == sum(s.reader_wakeups for s in (client, peer, server))
