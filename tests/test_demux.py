"""The batch receive path: frames land on the right socket's PCQ, and every other
frame is handed back or dropped under a named reason."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from demux_rig import demux_rig
from fastproto import BufferPool, Demux, PCBTable, PCQ
from fastproto.wire import (ARP_REQUEST, ETH_P_ARP, ETH_P_IP, arp, ethernet, icmp_echo, ipv4,
                            tcp_segment, udp)

LOCAL, PEER = "198.18.0.2", "198.18.0.1"
MAC_L, MAC_P = "02:00:00:00:00:02", "02:00:00:00:00:01"


def udp_frame(dport, sport=4000, payload=b"hi", src=PEER, dst=LOCAL):
    return ethernet(MAC_L, MAC_P, ETH_P_IP, ipv4(src, dst, 17, udp(src, dst, sport, dport, payload)))


def tcp_frame(dport, sport=5000):
    return ethernet(MAC_L, MAC_P, ETH_P_IP,
                    ipv4(PEER, LOCAL, 6, tcp_segment(PEER, LOCAL, sport, dport, 1, 0, 0x02)))


@pytest.fixture
def stack():
    pool = BufferPool(512)
    table = PCBTable(nbuckets=256)
    demux = Demux(pool, table, max_sockets=16, capacity=64)
    queues = {}
    for sock, (proto, port) in enumerate([(17, 53), (17, 54), (6, 80)]):
        queues[sock] = PCQ(4)
        demux.attach(sock, queues[sock])
        table.insert(proto, LOCAL, port, None, 0, sock)
    return pool, table, demux, queues


def run(pool, demux, frames):
    b = pool.batch_from_frames(frames)
    return (b,) + demux.input(b.handles, b.lengths)


def test_datagrams_land_on_their_sockets_pcq_in_order(stack):
    pool, _, demux, queues = stack
    b, delivered, woken, other, unmatched = run(pool, demux, [udp_frame(53), udp_frame(54), udp_frame(53)])
    assert delivered == 3 and len(other) == 0 and len(unmatched) == 0
    assert sorted(woken.tolist()) == [0, 1]  # once per socket, not per packet
    assert queues[0].get_many(10).tolist() == [b.handles[0], b.handles[2]]
    assert queues[1].get_many(10).tolist() == [b.handles[1]]
    assert demux.counters()["delivered"] == 3


def test_a_delivered_packets_parse_travels_with_its_handle(stack):
    pool, _, demux, queues = stack
    run(pool, demux, [udp_frame(53, sport=4242, payload=b"abc")])
    h = queues[0].get()
    row = demux.rows[h]
    assert (row["sport"], row["dport"], row["payload_len"]) == (4242, 53, 3)
    off = row["payload_off"]
    assert bytes(pool.data[h, off:off + 3]) == b"abc"


def test_tcp_segment_goes_to_the_listener(stack):
    pool, _, demux, queues = stack
    b, delivered, woken, *_ = run(pool, demux, [tcp_frame(80)])
    assert delivered == 1 and woken.tolist() == [2]
    assert queues[2].get() == b.handles[0]


def test_connected_pcb_wins_over_listener(stack):
    pool, table, demux, queues = stack
    queues[3] = PCQ(4)
    demux.attach(3, queues[3])
    table.insert(6, LOCAL, 80, PEER, 5000, 3)
    b, _, woken, *_ = run(pool, demux, [tcp_frame(80, sport=5000), tcp_frame(80, sport=5001)])
    assert queues[3].get() == b.handles[0]
    assert queues[2].get() == b.handles[1]


def test_removing_the_connected_pcb_falls_back_to_the_listener(stack):
    pool, table, demux, queues = stack
    queues[3] = PCQ(4)
    demux.attach(3, queues[3])
    table.insert(6, LOCAL, 80, PEER, 5000, 3)
    table.remove(6, LOCAL, 80, PEER, 5000)
    b, _, woken, *_ = run(pool, demux, [tcp_frame(80, sport=5000)])
    assert woken.tolist() == [2] and queues[2].get() == b.handles[0]


def test_a_table_with_only_bound_sockets_still_finds_any_listeners(stack):
    pool, table, demux, queues = stack
    queues[4] = PCQ(4)
    demux.attach(4, queues[4])
    table.insert(17, "0.0.0.0", 99, None, 0, 4)
    b, delivered, woken, *_ = run(pool, demux, [udp_frame(99), udp_frame(53)])
    assert delivered == 2 and sorted(woken.tolist()) == [0, 4]


def test_closed_port_is_handed_back_for_an_answer(stack):
    pool, _, demux, queues = stack
    b, delivered, woken, other, unmatched = run(pool, demux, [udp_frame(9999), tcp_frame(81)])
    assert delivered == 0 and unmatched.tolist() == [0, 1]
    assert demux.counters()["no_socket"] == 2
    # handed back, not freed: the caller still owns them
    assert all(pool.is_allocated(h) for h in b.handles)


def test_frames_for_no_socket_in_particular_are_handed_back(stack):
    pool, _, demux, _ = stack
    arp_request = ethernet("ff:ff:ff:ff:ff:ff", MAC_P, ETH_P_ARP,
                           arp(ARP_REQUEST, MAC_P, PEER, bytes(6), LOCAL))
    ping = ethernet(MAC_L, MAC_P, ETH_P_IP, ipv4(PEER, LOCAL, 1, icmp_echo(1, 1)))
    later_fragment = ethernet(MAC_L, MAC_P, ETH_P_IP, ipv4(PEER, LOCAL, 17, b"x" * 16, flags_frag=0x0002))
    b, delivered, _, other, unmatched = run(pool, demux, [arp_request, ping, later_fragment])
    assert delivered == 0 and other.tolist() == [0, 1, 2] and len(unmatched) == 0
    rows = demux.rows[b.handles[other]]
    assert rows["ethertype"].tolist() == [ETH_P_ARP, ETH_P_IP, ETH_P_IP]


def test_malformed_frames_are_dropped_freed_and_counted(stack):
    pool, _, demux, queues = stack
    good = udp_frame(53)
    bad_csum = good[:24] + bytes([good[24] ^ 1]) + good[25:]
    before = pool.available
    b, delivered, *_ = run(pool, demux, [bad_csum, good[:20], good])
    assert delivered == 1
    counts = demux.counters()
    assert counts["ip_bad_checksum"] == 1 and counts["ip_truncated"] == 1
    assert pool.available == before - 1  # the two drops went straight back to the pool
    assert not pool.is_allocated(b.handles[0]) and not pool.is_allocated(b.handles[1])


def test_full_pcq_drops_at_the_queue_and_counts(stack):
    pool, _, demux, queues = stack
    b, delivered, *_ = run(pool, demux, [udp_frame(53)] * 6)
    assert delivered == 4 and len(queues[0]) == 4
    assert demux.counters()["pcq_full"] == 2
    assert not pool.is_allocated(b.handles[4]) and not pool.is_allocated(b.handles[5])


def test_detached_socket_counts_as_no_socket(stack):
    pool, _, demux, _ = stack
    demux.detach(0)
    _, delivered, _, _, unmatched = run(pool, demux, [udp_frame(53)])
    assert delivered == 0 and unmatched.tolist() == [0]


def test_handle_outside_the_pool_is_counted_not_touched(stack):
    pool, _, demux, _ = stack
    delivered, *_ = demux.input(np.array([10**9], dtype=np.uint64), np.array([60], dtype=np.uint32))
    assert delivered == 0 and demux.counters()["bad_handle"] == 1


def test_bad_arguments_raise(stack):
    pool, table, demux, queues = stack
    with pytest.raises(ValueError):
        demux.input(np.zeros(65, dtype=np.uint64), np.zeros(65, dtype=np.uint32))
    with pytest.raises(ValueError):
        demux.input(np.zeros(2, dtype=np.uint64), np.zeros(3, dtype=np.uint32))
    with pytest.raises(ValueError):
        demux.attach(16, PCQ(1))
    with pytest.raises(ValueError):
        Demux(pool, table, max_sockets=0)


frame_kinds = st.sampled_from(["open", "closed", "tcp", "ping", "corrupt", "short", "garbage"])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(frame_kinds, st.integers(0, 255)), min_size=1, max_size=64))
def test_every_frame_is_accounted_for(kinds):
    pool, demux, q = demux_rig((17, LOCAL, 53, None, 0), buffers=256, qlen=8)
    frames = []
    for kind, x in kinds:
        f = {"open": udp_frame(53), "closed": udp_frame(54), "tcp": tcp_frame(80),
             "ping": ethernet(MAC_L, MAC_P, ETH_P_IP, ipv4(PEER, LOCAL, 1, icmp_echo(1, x)))}.get(kind)
        if kind == "corrupt":
            f = bytearray(udp_frame(53))
            f[14 + x % 20] ^= 0xFF
            f = bytes(f)
        elif kind == "short":
            f = udp_frame(53)[: x % 42]
        elif kind == "garbage":
            f = bytes([x]) * (x % 100)
        frames.append(f)
    b = pool.batch_from_frames(frames)
    delivered, woken, other, unmatched = demux.input(b.handles, b.lengths)
    counts = demux.counters()
    assert sum(counts.values()) == len(frames)
    assert delivered == counts["delivered"] == len(q)
    assert len(other) == counts["other"] and len(unmatched) == counts["no_socket"]
    dropped = len(frames) - delivered - len(other) - len(unmatched)
    assert pool.available == pool.count - len(frames) + dropped
