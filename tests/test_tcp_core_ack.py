"""Immediate ACKs from the demux: the core's decision on crafted segments (the
ACK frames checked with scapy), every way out of the fast path, and two stacks
moving data with the demux acknowledging it."""
from __future__ import annotations

import hashlib
import os
import threading

import pytest
from hypothesis import given, settings, strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from demux_rig import demux_rig
from fastproto import BufferPool, Demux, PCBTable, PCQ
from fastproto._core.demux import clock_ms
from fastproto.phy.fault_injector import FaultInjector
from fastproto.phy.link import LinkPair
from fastproto.proto.tcp import TcpConnection
from fastproto.proto.tcp_timers import TcpConfig
from fastproto.socket import AF_INET
from fastproto.stack import Stack
from fastproto.tcp_socket import SOCK_STREAM
from fastproto.wire.tcp import ACK, TcpSegment

LOCAL, PEER = "198.18.0.2", "198.18.0.1"
MAC_L, MAC_P = "02:00:00:00:00:02", "02:00:00:00:00:01"
LPORT, PPORT = 80, 5000
SOCK = 1
MSS = 1448
IRS = 1000            # the peer's next sequence number when armed
SND = 777777          # our SND.MAX
TS_RECENT = 5000      # the peer's TSval we hold
TS_OFFSET = 123456
WND = 65536 * 4       # RCV.WND, octets
SHIFT = 7


def template(ts: bool = True) -> bytes:
    """Our pure ACK to the peer, as the stack would build it (scapy here)."""
    opts = [("NOP", None), ("NOP", None), ("Timestamp", (0, 0))] if ts else []
    return bytes(Ether(src=MAC_L, dst=MAC_P) / IP(src=LOCAL, dst=PEER, flags="DF", id=0)
                 / TCP(sport=LPORT, dport=PPORT, flags="A", seq=0, ack=0, window=0, options=opts))


def segment(seq: int, n: int = MSS, flags: str = "A", tsval: int | None = TS_RECENT + 1,
            corrupt: bool = False) -> bytes:
    """A segment from the peer with ``n`` bytes of data."""
    opts = [("NOP", None), ("NOP", None), ("Timestamp", (tsval, 42))] if tsval is not None else []
    pkt = (Ether(src=MAC_P, dst=MAC_L) / IP(src=PEER, dst=LOCAL, flags="DF")
           / TCP(sport=PPORT, dport=LPORT, flags=flags, seq=seq, ack=SND, window=1000,
                 options=opts) / (b"d" * n))
    raw = bytearray(bytes(pkt))
    if corrupt:
        raw[-1] ^= 0x01
    return bytes(raw)


def make_core(n: int = 256):
    """A pool of ``n`` buffers, a demux and the PCQ of socket SOCK, whose
    connected pcb is in the table (unarmed)."""
    return demux_rig((6, LOCAL, LPORT, PEER, PPORT), buffers=n, capacity=32, qlen=n, sock=SOCK,
                     verify_l4=True)


@pytest.fixture
def core():
    return make_core()


def arm(demux: Demux, ts: bool = True, ack_bytes: int = 0, rcv_wnd: int = WND) -> bool:
    return demux.tcb_arm(SOCK, IRS, rcv_wnd, IRS, MSS, ack_bytes, SND, TS_RECENT, TS_OFFSET,
                         SHIFT, ts, template(ts))


def feed(pool: BufferPool, demux: Demux, pcq: PCQ, frames: list[bytes]) -> list[bytes]:
    """One batch through the demux; the ACK frames it built.  The PCQ is emptied
    as the engine would."""
    b = pool.batch_from_frames(frames)
    demux.input(b.handles, b.lengths)
    pool.free_many(pcq.get_many(256))
    return demux.take_acks()


def check_ack(frame: bytes, ack: int, tsecr: int | None, t0: int, t1: int) -> None:
    """``frame`` is our pure ACK of ``ack``, its checksums right (scapy recomputes them)."""
    p = Ether(frame)
    again = Ether(frame)
    del again[IP].chksum
    del again[TCP].chksum
    again = Ether(bytes(again))
    assert p[IP].chksum == again[IP].chksum and p[TCP].chksum == again[TCP].chksum
    assert (p[IP].src, p[IP].dst, p[TCP].sport, p[TCP].dport) == (LOCAL, PEER, LPORT, PPORT)
    assert p[TCP].flags == "A" and len(p[TCP].payload) == 0
    assert p[TCP].seq == SND and p[TCP].ack == ack
    assert p[TCP].window == min((IRS + WND - ack) >> SHIFT, 0xFFFF)
    opts = dict(p[TCP].options)
    if tsecr is None:
        assert "Timestamp" not in opts
    else:
        tsval, echo = opts["Timestamp"]
        assert echo == tsecr
        assert (t0 + TS_OFFSET) & 0xFFFFFFFF <= tsval <= (t1 + TS_OFFSET) & 0xFFFFFFFF


# -- the decision ------------------------------------------------------------------------


def test_two_full_segments_in_sequence_get_one_ack_with_the_first_tsval_echoed(core):
    pool, demux, pcq = core
    assert arm(demux)
    t0 = clock_ms()
    acks = feed(pool, demux, pcq, [segment(IRS, tsval=6000), segment(IRS + MSS, tsval=6001)])
    t1 = clock_ms()
    assert len(acks) == 1
    # RFC 7323 4.3: TS.Recent from the segment at Last.ACK.sent, the first one.
    check_ack(acks[0], IRS + 2 * MSS, 6000, t0, t1)
    assert demux.tcb_acked(SOCK) == (IRS + 2 * MSS, IRS + WND)
    assert demux.tcb_counters()["acks"] == 1
    assert demux.tcb[SOCK]["armed"] == 1


def test_every_second_full_segment_is_acknowledged_within_a_batch(core):
    pool, demux, pcq = core
    assert arm(demux)
    t0 = clock_ms()
    acks = feed(pool, demux, pcq, [segment(IRS + i * MSS, tsval=7000 + i) for i in range(6)])
    t1 = clock_ms()
    assert [Ether(a)[TCP].ack for a in acks] == [IRS + 2 * MSS, IRS + 4 * MSS, IRS + 6 * MSS]
    check_ack(acks[1], IRS + 4 * MSS, 7002, t0, t1)


def test_what_is_left_at_the_end_of_a_batch_is_acknowledged_there(core):
    pool, demux, pcq = core
    assert arm(demux)
    t0 = clock_ms()
    acks = feed(pool, demux, pcq, [segment(IRS, n=100)])
    check_ack(acks[0], IRS + 100, TS_RECENT + 1, t0, clock_ms())


def test_without_timestamps_the_ack_has_no_options(core):
    pool, demux, pcq = core
    assert arm(demux, ts=False)
    acks = feed(pool, demux, pcq, [segment(IRS, tsval=None), segment(IRS + MSS, tsval=None)])
    check_ack(acks[0], IRS + 2 * MSS, None, 0, 0)


def test_a_stretch_threshold_acknowledges_less_often(core):
    pool, demux, pcq = core
    assert arm(demux, ack_bytes=4 * MSS)
    acks = feed(pool, demux, pcq, [segment(IRS + i * MSS) for i in range(6)])
    assert [Ether(a)[TCP].ack for a in acks] == [IRS + 4 * MSS, IRS + 6 * MSS]


def test_a_pure_ack_from_the_peer_changes_nothing(core):
    pool, demux, pcq = core
    assert arm(demux)
    assert feed(pool, demux, pcq, [segment(IRS, n=0)]) == []
    assert demux.tcb[SOCK]["armed"] == 1 and demux.tcb[SOCK]["rcv_nxt"] == IRS


@given(sizes=st.lists(st.lists(st.integers(1, MSS), min_size=1, max_size=8), min_size=1,
                      max_size=6))
@settings(max_examples=40, deadline=None)
def test_acks_follow_the_rule_for_any_in_sequence_batches(sizes):
    # Oracle: ACK once two MSS are unacknowledged, and what is left at the end
    # of each batch; the ACK numbers are the running sums at those points.
    # (a fresh core per example: Hypothesis runs examples without fixtures)
    pool, demux, pcq = make_core(64)
    assert arm(demux)
    seq = IRS
    for batch in sizes:
        want, unacked = [], 0
        frames = []
        for n in batch:
            frames.append(segment(seq, n=n))
            seq += n
            unacked += n
            if unacked >= 2 * MSS:
                want.append(seq)
                unacked = 0
        if unacked:
            want.append(seq)
        t0 = clock_ms()
        acks = feed(pool, demux, pcq, frames)
        t1 = clock_ms()
        assert [Ether(a)[TCP].ack for a in acks] == want
        for a, ack in zip(acks, want):
            check_ack(a, ack, TS_RECENT + 1, t0, t1)


# -- leaving the fast path ------------------------------------------------------------------


def test_out_of_order_data_disarms_and_is_still_delivered(core):
    pool, demux, pcq = core
    assert arm(demux)
    b = pool.batch_from_frames([segment(IRS + MSS)])
    delivered, *_ = demux.input(b.handles, b.lengths)
    assert delivered == 1 and len(pcq) == 1
    assert demux.take_acks() == []
    assert demux.tcb[SOCK]["armed"] == 0
    assert demux.tcb_counters()["disarm_out_of_order"] == 1


def test_a_disarmed_socket_gets_no_acks(core):
    pool, demux, pcq = core
    assert arm(demux)
    demux.tcb_disarm(SOCK)
    assert feed(pool, demux, pcq, [segment(IRS), segment(IRS + MSS)]) == []


def test_the_lock_held_by_python_means_no_ack_and_disarm(core):
    pool, demux, pcq = core
    assert arm(demux)
    demux.tcb_lock(SOCK)
    try:
        assert feed(pool, demux, pcq, [segment(IRS), segment(IRS + MSS)]) == []
    finally:
        demux.tcb_unlock(SOCK)
    assert demux.tcb[SOCK]["armed"] == 0
    assert demux.tcb_counters()["disarm_busy"] >= 1
    assert demux.tcb[SOCK]["rcv_nxt"] == IRS


@pytest.mark.parametrize("flags", ["FA", "R", "S", "SA", "UA", "AE"])
def test_fin_rst_syn_urg_ece_disarm(core, flags):
    pool, demux, pcq = core
    assert arm(demux)
    assert feed(pool, demux, pcq, [segment(IRS, flags=flags)]) == []
    assert demux.tcb[SOCK]["armed"] == 0
    assert demux.tcb_counters()["disarm_flags"] == 1


def test_data_beyond_the_window_disarms(core):
    pool, demux, pcq = core
    assert arm(demux, rcv_wnd=MSS)
    assert feed(pool, demux, pcq, [segment(IRS, n=MSS + 1)]) == []
    assert demux.tcb_counters()["disarm_window"] == 1


@pytest.mark.parametrize("tsval", [None, TS_RECENT - 1])
def test_a_missing_or_old_timestamp_disarms(core, tsval):
    # RFC 7323 3.2 (on every segment once agreed) and 5.3 (PAWS): the engine's.
    pool, demux, pcq = core
    assert arm(demux)
    assert feed(pool, demux, pcq, [segment(IRS, tsval=tsval)]) == []
    assert demux.tcb_counters()["disarm_timestamps"] == 1


def test_data_older_than_a_queued_pure_acks_timestamp_disarms(core):
    # The engine takes TS.Recent from the pure ACK first, then would drop the
    # data by PAWS (RFC 7323 5.3): the demux must not have acknowledged it.
    pool, demux, pcq = core
    assert arm(demux)
    assert feed(pool, demux, pcq, [segment(IRS + 12, n=0, tsval=TS_RECENT + 9),
                                   segment(IRS, n=12, tsval=TS_RECENT + 5)]) == []
    assert demux.tcb_counters()["disarm_timestamps"] == 1


def test_data_acknowledging_what_we_never_sent_disarms(core):
    # RFC 9293 3.10.7.4: the engine drops such a segment, data and all.
    pool, demux, pcq = core
    assert arm(demux)
    frame = bytes(Ether(src=MAC_P, dst=MAC_L) / IP(src=PEER, dst=LOCAL)
                  / TCP(sport=PPORT, dport=LPORT, flags="A", seq=IRS, ack=SND + 1,
                        options=[("NOP", None), ("NOP", None), ("Timestamp", (TS_RECENT, 0))])
                  / (b"d" * MSS))
    assert feed(pool, demux, pcq, [frame]) == []
    assert demux.tcb_counters()["disarm_ack_unsent"] == 1


def test_a_corrupted_segment_is_never_acknowledged(core):
    pool, demux, pcq = core
    assert arm(demux)
    assert feed(pool, demux, pcq, [segment(IRS, corrupt=True)]) == []
    assert demux.counters()["l4_bad_checksum"] == 1
    assert demux.tcb[SOCK]["armed"] == 1 and demux.tcb[SOCK]["rcv_nxt"] == IRS


@given(junk=st.lists(st.binary(min_size=0, max_size=120), min_size=1, max_size=8),
       cut=st.integers(0, 100))
@settings(max_examples=60, deadline=None)
def test_malformed_frames_never_crash_or_get_acks(junk, cut):
    # (a fresh core per example: Hypothesis runs examples without fixtures)
    pool, demux, pcq = make_core(64)
    assert arm(demux)
    whole = segment(IRS)
    frames = junk + [whole[:cut], whole[:14] + bytes(20)]
    assert feed(pool, demux, pcq, frames) == []
    assert demux.tcb[SOCK]["rcv_nxt"] == IRS


def test_a_full_ack_area_disarms_instead_of_dropping_the_ack(core):
    pool, demux, pcq = core
    assert arm(demux)
    seq = IRS
    for _ in range(32):                 # capacity: 32 ACK frames, never taken
        b = pool.batch_from_frames([segment(seq), segment(seq + MSS)])
        demux.input(b.handles, b.lengths)
        pool.free_many(pcq.get_many(256))
        seq += 2 * MSS
    b = pool.batch_from_frames([segment(seq), segment(seq + MSS)])
    demux.input(b.handles, b.lengths)
    assert demux.tcb[SOCK]["armed"] == 0
    assert demux.tcb_counters()["disarm_area_full"] == 1
    assert len(demux.take_acks()) == 32


def test_arming_needs_an_empty_pcq(core):
    pool, demux, pcq = core
    b = pool.batch_from_frames([segment(IRS)])
    demux.input(b.handles, b.lengths)
    assert not arm(demux)
    assert demux.tcb[SOCK]["armed"] == 0


def test_arming_refuses_a_bad_template_or_unverified_checksums(core):
    _, demux, _ = core
    with pytest.raises(ValueError):
        demux.tcb_arm(SOCK, IRS, WND, IRS, MSS, 0, SND, 0, 0, SHIFT, True, template(False))
    with pytest.raises(ValueError):
        demux.tcb_arm(SOCK, IRS, WND, IRS, MSS, 0, SND, 0, 0, SHIFT, True, b"\x00" * 66)
    with pytest.raises(ValueError):
        demux.tcb_arm(SOCK, IRS, WND, IRS, MSS, 0, SND, 0, 0, 15, True, template())
    with pytest.raises(ValueError):
        demux.tcb_arm(99, IRS, WND, IRS, MSS, 0, SND, 0, 0, SHIFT, True, template())
    lax = Demux(BufferPool(8), PCBTable(nbuckets=8), max_sockets=8, capacity=8)
    with pytest.raises(ValueError):
        lax.tcb_arm(SOCK, IRS, WND, IRS, MSS, 0, SND, 0, 0, SHIFT, True, template())


def test_the_engines_acks_move_the_window_edge_and_get_raised(core):
    pool, demux, pcq = core
    assert arm(demux)
    feed(pool, demux, pcq, [segment(IRS), segment(IRS + MSS)])
    # An engine that has not seen those segments yet must not send an older ACK.
    assert demux.tcb_sent(SOCK, IRS, IRS + WND + 4096, SND + 10) == IRS + 2 * MSS
    assert demux.tcb[SOCK]["rcv_edge"] == IRS + WND + 4096
    assert demux.tcb[SOCK]["snd_nxt"] == SND + 10
    assert demux.tcb_sent(SOCK, IRS + 2 * MSS, IRS + WND, SND) == -1


# -- the engine -----------------------------------------------------------------------------


def established(core_acked):
    out = []
    rec = type("R", (), dict(local=(LOCAL, LPORT), remote=(PEER, PPORT), iss=SND - 1,
                             irs=IRS - 1, snd_wnd=65535, peer_mss=1460, snd_wscale=None,
                             rcv_wscale=None, ts_recent=None, sack_permitted=False))
    conn = TcpConnection.from_handshake(rec, TcpConfig(gro=False), output=out.append)
    conn.core_acked = core_acked
    return conn, out


def test_the_engine_leaves_out_an_ack_the_core_already_sent():
    holder: list = [None]
    conn, out = established(lambda: holder[0])
    edge = (conn.rcv_nxt + conn.rcv_wnd + 2 * 1460) & 0xFFFFFFFF
    holder[0] = ((IRS + 2 * 1460) & 0xFFFFFFFF, edge)
    conn.input(TcpSegment(PPORT, LPORT, IRS, SND, ACK, 65535, b"x" * 1460))
    conn.input(TcpSegment(PPORT, LPORT, IRS + 1460, SND, ACK, 65535, b"x" * 1460))
    assert out == []
    assert conn.counters["tcp.acks_covered_by_core"] == 1
    assert conn._t_delack is None


def test_the_engine_still_acks_what_the_core_did_not_cover():
    conn, out = established(lambda: None)
    conn.input(TcpSegment(PPORT, LPORT, IRS, SND, ACK, 65535, b"x" * 1460))
    conn.input(TcpSegment(PPORT, LPORT, IRS + 1460, SND, ACK, 65535, b"x" * 1460))
    assert [d[1] for d in out] == [IRS + 2 * 1460]


def test_the_engine_answers_a_retransmission_even_when_covered():
    # The peer may have lost the core's ACK: an old segment gets an ACK.
    conn, out = established(lambda: (conn.rcv_nxt, conn.rcv_nxt + conn.rcv_wnd))
    conn.input(TcpSegment(PPORT, LPORT, IRS, SND, ACK, 65535, b"x" * 1460))
    conn.input(TcpSegment(PPORT, LPORT, IRS + 1460, SND, ACK, 65535, b"x" * 1460))
    assert out == []
    conn.input(TcpSegment(PPORT, LPORT, IRS, SND, ACK, 65535, b"x" * 1460))
    assert [d[1] for d in out] == [IRS + 2 * 1460]


# -- two stacks -----------------------------------------------------------------------------


def transfer(core_ack: bool, size: int, dev=None, **tcp):
    link = LinkPair()
    kw = dict(core_ack=core_ack, **tcp)
    a = Stack(dev(1)(link.a) if dev else link.a, f"{PEER}/24", tcp=kw)
    b = Stack(dev(2)(link.b) if dev else link.b, f"{LOCAL}/24", tcp=kw)
    data = os.urandom(size)
    with a, b:
        srv = b.socket(AF_INET, SOCK_STREAM)
        srv.bind(("", 80))
        srv.listen(4)
        srv.settimeout(10.0)
        got = hashlib.sha256()
        result = {}

        def sink():
            try:
                c, _ = srv.accept()
                c.settimeout(30.0)
                n = 0
                while True:
                    chunk = c.recv(1 << 20)
                    if not chunk:
                        break
                    got.update(chunk)
                    n += len(chunk)
                result["n"] = n
                c.close()
            except BaseException as exc:  # reported to the test
                result["error"] = exc

        t = threading.Thread(target=sink, daemon=True)
        t.start()
        c = a.socket(AF_INET, SOCK_STREAM)
        c.settimeout(30.0)
        c.connect((LOCAL, 80))
        c.sendall(data)
        c.shutdown(1)
        t.join(60)
        c.close()
        assert "error" not in result, result
        assert result["n"] == size and got.digest() == hashlib.sha256(data).digest()
        return a.stats(), b.stats()


def test_bulk_transfer_is_byte_exact_with_core_acks_and_no_duplicate_acks():
    sa, sb = transfer(True, 8 << 20)
    assert sb["tcp.core_acks"] > 0
    assert sa.get("tcp.fast_retransmits", 0) == 0
    assert sa.get("tcp.dup_acks", 0) == 0
    sa_off, sb_off = transfer(False, 8 << 20)
    assert sb_off.get("tcp.core_acks", 0) == 0
    assert sa_off.get("tcp.fast_retransmits", 0) == 0


def test_lossy_transfer_is_byte_exact_with_core_acks():
    def impaired(seed):
        return lambda dev: FaultInjector(dev, seed=seed, loss=0.1, reorder=0.05, duplicate=0.05,
                                         corrupt=0.01, corrupt_in_word=True)

    sa, sb = transfer(True, 2_000_000, impaired, rto_min=0.05, rto_initial=0.2, time_wait=0.2,
                      delack=0.01)
    assert sa["tcp.retransmits"] > 0
    assert sb["tcp.core_acks"] > 0
