"""ACK coalescing (fastproto._core.gro.fold_acks): a pure ACK that the next
segment of a batch acknowledges beyond is folded into it, so a sender runs
once per run of its peer's ACKs.  Checked against a plain-Python reference of
the rule over scapy-built frames, and end to end on a stack driven by a
hand-made peer: duplicate ACKs and ACKs next to unacceptable ones are never
folded, and slow start still counts every ACK."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from concurrency import wait_until
from fastproto._core.buffers import BufferPool
from fastproto._core.gro import fold_acks
from fastproto._core.parse import PARSED_DTYPE, parse
from fastproto.proto.tcp import ESTABLISHED
from fastproto.wire.tcp import ACK, TcpSegment
from tcp_harness import Wire
from tcp_peer import linked_peer

A, B = "198.18.0.1", "198.18.0.2"
UNA, MAX, NXT = 10_000, 50_000, 7_000      # the connection's SND.UNA, SND.MAX, RCV.NXT


def ack_frame(ack, seq=NXT, flags="A", window=500, ts=(100, 50), payload=b"", sack=None,
              sport=80, bad_checksum=False):
    opts = [("Timestamp", ts)] if ts is not None else []
    if sack is not None:
        opts.append(("SAck", sack))
    tcp = TCP(sport=sport, dport=40000, seq=seq % 2**32, ack=ack % 2**32, flags=flags,
              window=window, options=opts)
    if bad_checksum:
        tcp.chksum = 0x1234
    return bytes(Ether(src="02:00:00:00:00:02", dst="02:00:00:00:00:01")
                 / IP(src=B, dst=A, flags="DF") / tcp / payload)


def fold(frames, ts_ok=True, ts_recent=100, una=UNA, snd_max=MAX, rcv_nxt=NXT):
    """(kept positions or None, folded) of ``frames`` taken as one batch."""
    pool = BufferPool(max(len(frames), 1), 2048)
    batch = pool.batch_from_frames(frames)
    handles = np.array(batch.handles, dtype=np.uint64)
    rows = np.zeros(pool.count, dtype=PARSED_DTYPE)
    rows[handles] = parse(pool.data, np.array(batch.lengths), handles, verify_l4=True)
    got = fold_acks(rows, handles, una, snd_max, rcv_nxt, ts_ok, ts_recent)
    batch.clear()
    if got is None:
        return None, 0
    kept, folded = got
    where = {int(h): i for i, h in enumerate(handles.tolist())}
    return [where[int(h)] for h in kept], folded


def reference(frames, ts_ok=True, ts_recent=100, una=UNA, snd_max=MAX, rcv_nxt=NXT):
    """The folding rule written out plainly over scapy's parse."""
    segs = []
    for f in frames:
        ip = Ether(f)[IP]
        t = ip[TCP]
        opts = dict((k, v) for k, v in t.options)
        again = IP(bytes(ip))
        del again[TCP].chksum               # scapy computes it anew
        good = IP(bytes(again))[TCP].chksum == t.chksum
        segs.append(dict(sport=t.sport, seq=t.seq, ack=t.ack, flags=int(t.flags),
                         plen=ip.len - 4 * ip.ihl - 4 * t.dataofs, ts=opts.get("Timestamp"),
                         other=set(opts) - {"Timestamp", "NOP", "EOL"}, good=good))

    def after(a, b):            # a later than b in sequence space
        return 0 < (a - b) % 2**32 < 2**31

    def pure(s):
        return s["good"] and s["plen"] == 0 and s["flags"] == ACK and not s["other"]

    def folds(r, n):
        if not (pure(r) and pure(n) and r["seq"] == n["seq"] == rcv_nxt
                and r["sport"] == n["sport"]):
            return False
        if not (after(r["ack"], una) and after(n["ack"], r["ack"])
                and not after(n["ack"], snd_max)):
            return False
        if ts_ok:
            return (r["ts"] is not None and n["ts"] is not None
                    and not after(ts_recent, r["ts"][0]) and not after(r["ts"][0], n["ts"][0]))
        return r["ts"] is None and n["ts"] is None

    kept = [i for i in range(len(segs) - 1) if not folds(segs[i], segs[i + 1])]
    kept.append(len(segs) - 1)
    return kept, len(segs) - len(kept)


# One ACK of a batch: what it does differently from one that acknowledges more.
STEP = st.sampled_from(["advance", "advance", "advance", "duplicate", "window", "beyond_sent",
                        "below_una", "data", "push", "fin", "sack", "ts_back", "ts_old",
                        "no_ts", "other_port", "seq_off", "bad_checksum"])


@settings(max_examples=150, deadline=None)
@given(steps=st.lists(st.tuples(STEP, st.integers(1, 3000)), min_size=2, max_size=40),
       ts_ok=st.booleans(), una=st.integers(0, 2**32 - 1))
def test_folding_matches_the_reference(steps, ts_ok, una):
    snd_max = (una + 60_000) % 2**32
    ack, tsval = una, 100
    frames = []
    for what, n in steps:
        kw = dict(ts=(tsval, 50) if ts_ok else None)
        if what in ("advance", "window", "push", "data", "fin", "sack", "ts_back", "ts_old",
                    "no_ts", "other_port", "seq_off", "bad_checksum"):
            ack = (ack + n) % 2**32
        if what == "window":
            kw["window"] = n
        elif what == "beyond_sent":
            kw_ack = (snd_max + n) % 2**32
            frames.append(ack_frame(kw_ack, **kw))
            continue
        elif what == "below_una":
            frames.append(ack_frame((una - n) % 2**32, **kw))
            continue
        elif what == "data":
            kw["payload"] = b"d" * (n % 100 + 1)
        elif what == "push":
            kw["flags"] = "PA"
        elif what == "fin":
            kw["flags"] = "FA"
        elif what == "sack":
            kw["sack"] = ((ack + 10) % 2**32, (ack + 20) % 2**32)
        elif what == "ts_back" and ts_ok:
            kw["ts"] = ((tsval - n) % 2**32, 50)
        elif what == "ts_old" and ts_ok:
            kw["ts"] = ((100 - n) % 2**32, 50)      # older than TS.Recent: fails PAWS
        elif what == "no_ts":
            kw["ts"] = None if ts_ok else (tsval, 50)
        elif what == "other_port":
            kw["sport"] = 81
        elif what == "seq_off":
            kw["seq"] = NXT + n
        elif what == "bad_checksum":
            kw["bad_checksum"] = True
        if ts_ok and what == "advance":
            tsval += n % 3
            kw["ts"] = (tsval, 50)
        frames.append(ack_frame(ack, **kw))
    kept, folded = fold(frames, ts_ok, 100, una, snd_max)
    ref_kept, ref_folded = reference(frames, ts_ok, 100, una, snd_max)
    if ref_folded == 0:
        assert kept is None and folded == 0
    else:
        assert kept == ref_kept and folded == ref_folded


def test_advancing_acks_fold_into_the_last():
    frames = [ack_frame(UNA + 1000 * i) for i in range(1, 5)]
    assert fold(frames) == ([3], 3)


def test_duplicate_acks_are_never_folded():
    frames = [ack_frame(UNA + 1000)] * 3 + [ack_frame(UNA + 2000)]
    # (only the last duplicate is followed by an ACK that moves on)
    assert fold(frames) == ([0, 1, 3], 1)
    assert fold([ack_frame(UNA)] * 4) == (None, 0)       # duplicates of SND.UNA itself


def test_an_ack_of_unsent_data_keeps_the_one_before_it():
    assert fold([ack_frame(UNA + 1000), ack_frame(MAX + 1)]) == (None, 0)
    assert fold([ack_frame(UNA + 1000), ack_frame(MAX)]) == ([1], 1)


def test_sack_blocks_and_paws_failures_stop_folding():
    sack = ack_frame(UNA + 2000, sack=(UNA + 3000, UNA + 4000))
    assert fold([ack_frame(UNA + 1000), sack]) == (None, 0)
    assert fold([ack_frame(UNA + 1000, ts=(99, 50)), ack_frame(UNA + 2000)]) == (None, 0)
    assert fold([ack_frame(UNA + 1000, ts=(101, 50)), ack_frame(UNA + 2000, ts=(100, 50))]) \
        == (None, 0)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        fold_acks(np.zeros(4, dtype=np.uint8), np.zeros(2, dtype=np.uint64), 0, 0, 0)
    with pytest.raises(IndexError):
        fold_acks(np.zeros(4, dtype=PARSED_DTYPE), np.array([1, 9], dtype=np.uint64), 0, 0, 0)
    assert fold_acks(np.zeros(4, dtype=PARSED_DTYPE), np.array([1], dtype=np.uint64),
                     0, 0, 0) is None


# -- the connection: slow start counts folded ACKs ---------------------------------

def _established():
    wire = Wire(seed=1)
    wire.b.listen(iss=777)
    wire.a.connect(iss=1)
    wire.run(until=lambda: wire.a.state == ESTABLISHED and wire.b.state == ESTABLISHED)
    return wire


def test_slow_start_counts_folded_acks_once():
    wire = _established()
    a = wire.a
    mss = a.snd_mss
    a.output = lambda desc: None
    a.cwnd = 20 * mss             # room for what is sent below
    a.send(bytes(9 * mss))

    def ack(n):
        seg = TcpSegment(80, 40000, wire.b.snd_nxt, (a.snd_una + n) % 2**32, ACK,
                         a.snd_wnd >> a._snd_wscale)
        seg.ts_val, seg.ts_ecr = a.ts_recent + 1, 0
        a.input(seg)
    before = a.cwnd
    a.acks_folded(2)              # three ACKs of 2 segments each, as one
    ack(6 * mss)
    assert a.cwnd == before + 6 * mss
    ack(3 * mss)                  # the credit is spent: RFC 3465 L = 2 again
    assert a.cwnd == before + 8 * mss


# -- end to end: a stack and a hand-driven peer ------------------------------------

@pytest.fixture
def peer():
    with linked_peer() as p:
        yield p


#: the peer's MSS; the stack's initial window is three of them (RFC 5681 3.1)
MSS = 1460


def _in_flight(peer, n):
    """Send ``n`` bytes to the peer, who does not acknowledge them yet."""
    peer.sock.sendall(bytes(n))
    conn = peer.conn
    assert wait_until(lambda: (conn.snd_max - conn.snd_una) % 2**32 == n)
    return conn.snd_una


def test_a_batch_of_acks_runs_the_connection_once(peer):
    una = _in_flight(peer, 3 * MSS)
    peer.dev.transmit([peer.frame(peer.seq, b"", "A", ack=una + k * MSS) for k in (1, 2, 3)])
    assert wait_until(lambda: peer.conn.snd_una == (una + 3 * MSS) % 2**32)
    assert peer.stack.stats()["tcp.acks_coalesced"] == 2


def test_duplicate_acks_in_one_batch_still_make_a_fast_retransmit(peer):
    una = _in_flight(peer, 3 * MSS)
    before = peer.stack.stats().get("tcp.fast_retransmits", 0)
    peer.dev.transmit([peer.frame(peer.seq, b"", "A", ack=una)] * 3)
    assert wait_until(lambda: peer.stack.stats().get("tcp.fast_retransmits", 0) == before + 1)
    assert peer.stack.stats().get("tcp.acks_coalesced", 0) == 0


def test_an_ack_of_unsent_data_does_not_take_the_one_before_with_it(peer):
    una = _in_flight(peer, 3 * MSS)
    peer.dev.transmit([peer.frame(peer.seq, b"", "A", ack=una + 1000),
                       peer.frame(peer.seq, b"", "A", ack=una + 100_000)])
    assert wait_until(lambda: peer.conn.snd_una == (una + 1000) % 2**32)
    assert peer.stack.stats().get("tcp.acks_coalesced", 0) == 0
