"""Receive coalescing: runs of in-order segments of one flow as one chunk
(fastproto._core.gro), checked against a plain-Python reference of the rules
over scapy-built frames, and end to end: what a socket delivers is the same
coalesced or not."""
import os
import threading

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from fastproto._core.buffers import BufferPool
from fastproto._core.gro import Chunk, coalesce
from fastproto._core.parse import PARSED_DTYPE, parse
from fastproto._core.sockbuf import SockBuf
from fastproto.phy.link import LinkPair
from fastproto.proto.tcp import ESTABLISHED
from fastproto.proto.tcp_timers import TcpConfig
from fastproto.stack import Stack
from fastproto.wire.tcp import ACK, PSH, TcpSegment

from tcp_harness import Wire

A, B = "198.18.0.1", "198.18.0.2"
MAX = 65535


def frame(seq, payload=b"", flags="A", ack=1000, window=500, ts=(100, 50), sack=None,
          sport=40000, dport=80, src=A):
    opts = []
    if ts is not None:
        opts.append(("Timestamp", ts))
    if sack is not None:
        opts.append(("SAck", sack))
    return bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
                 / IP(src=src, dst=B, flags="DF")
                 / TCP(sport=sport, dport=dport, seq=seq, ack=ack, flags=flags, window=window,
                       options=opts) / payload)


def run(frames, max_bytes=MAX):
    """(pool, handles, rows, heads, chunks) of coalescing ``frames``."""
    pool = BufferPool(max(len(frames), 1), 2048)
    batch = pool.batch_from_frames(frames)
    handles = np.array(batch.handles, dtype=np.uint64)
    rows = parse(pool.data, np.array(batch.lengths), handles, verify_l4=True)
    batch.clear()
    heads, chunks = coalesce(rows, handles, pool.data, max_bytes)
    return pool, handles, rows, heads, chunks


def reference(frames, max_bytes=MAX):
    """The coalescing rules written out plainly over scapy's parse: the chunk
    heads, and per chunk its payload, flags and last TSecr."""
    segs = []
    for f in frames:
        ip = Ether(f)[IP]
        t = ip[TCP]
        opts = dict((k, v) for k, v in t.options)
        segs.append(dict(flow=(ip.src, ip.dst, t.sport, t.dport), seq=t.seq, ack=t.ack,
                         flags=int(t.flags), window=t.window,
                         payload=bytes(t.payload)[:ip.len - 4 * ip.ihl - 4 * t.dataofs],
                         ts=opts.get("Timestamp"), other=set(opts) - {"Timestamp", "NOP", "EOL"}))

    def alone(s):
        return not s["payload"] or s["other"] or s["flags"] & ~PSH != ACK

    out = []
    for s in segs:
        if out:
            c = out[-1]
            h, last = c["head"], c["last"]
            if (not alone(h) and not alone(s) and s["flow"] == h["flow"]
                    and s["seq"] == (h["seq"] + len(c["payload"])) % 2**32
                    and s["ack"] == h["ack"] and s["window"] == h["window"]
                    and (s["ts"] is None) == (h["ts"] is None)
                    and (s["ts"] is None or all((s["ts"][i] - last["ts"][i]) % 2**32 < 2**31
                                                for i in (0, 1)))
                    and len(c["payload"]) + len(s["payload"]) <= max_bytes):
                c["payload"] += s["payload"]
                c["flags"] |= s["flags"]
                c["last"] = s
                c["n"] += 1
                continue
        out.append(dict(head=s, last=s, payload=s["payload"], flags=s["flags"], n=1))
    heads, i = [], 0
    for c in out:
        heads.append(i)
        i += c["n"]
    return heads, out


def check(frames, max_bytes=MAX):
    pool, handles, rows, heads, chunks = run(frames, max_bytes)
    ref_heads, ref = reference(frames, max_bytes)
    assert heads == ref_heads
    for k, chunk, r in zip(heads, chunks, ref):
        if r["n"] == 1:
            assert chunk is None
            continue
        assert isinstance(chunk, Chunk) and chunk.segments == r["n"]
        assert bytes(chunk) == r["payload"] and len(chunk) == len(r["payload"])
        assert chunk.flags == r["flags"]
        if r["last"]["ts"] is not None:
            assert chunk.ts_ecr == r["last"]["ts"][1]
    return heads, chunks


# One step of a stream: what the next segment does differently from an in-order one.
STEP = st.sampled_from(["next", "next", "next", "next", "push", "fin", "syn", "rst", "urg",
                        "empty", "gap", "again", "ack", "window", "ts_up", "ts_back",
                        "ecr_back", "no_ts", "sack", "other_flow"])


@settings(max_examples=80, deadline=None)
@given(steps=st.lists(st.tuples(STEP, st.integers(1, 1460)), min_size=1, max_size=60),
       start=st.integers(0, 2**32 - 1), max_bytes=st.sampled_from([MAX, 4000, 1460]))
def test_chunks_match_the_reference(steps, start, max_bytes):
    seq, ack, window, ts = start, 1000, 500, [100, 50]
    frames = []
    for what, n in steps:
        payload = os.urandom(n)
        kw = dict(ack=ack, window=window, ts=tuple(ts))
        if what == "push":
            kw["flags"] = "PA"
        elif what == "fin":
            kw["flags"] = "FA"
        elif what == "syn":
            kw["flags"] = "SA"
        elif what == "rst":
            kw["flags"] = "RA"
        elif what == "urg":
            kw["flags"] = "UA"
        elif what == "empty":
            payload = b""
        elif what == "gap":
            seq = (seq + 100) % 2**32
        elif what == "again":
            seq = (seq - n) % 2**32
        elif what == "ack":
            ack = kw["ack"] = ack + 1
        elif what == "window":
            window = kw["window"] = window ^ 1
        elif what == "ts_up":
            ts[0] += 1
            ts[1] += 3
            kw["ts"] = tuple(ts)
        elif what == "ts_back":
            kw["ts"] = ((ts[0] - 1) % 2**32, ts[1])
        elif what == "ecr_back":
            kw["ts"] = (ts[0], (ts[1] - 1) % 2**32)
        elif what == "no_ts":
            kw["ts"] = None
        elif what == "sack":
            kw["sack"] = ((start + 5) % 2**32, (start + 9) % 2**32)
        elif what == "other_flow":
            kw["sport"] = 40001
        frames.append(frame(seq, payload, **kw))
        seq = (seq + len(payload)) % 2**32
    check(frames, max_bytes)


def test_in_order_segments_make_one_chunk():
    data = os.urandom(10 * 1448)
    frames = [frame(5000 + i * 1448, data[i * 1448:(i + 1) * 1448],
                    ts=(100 + i, 50 + i)) for i in range(10)]
    heads, chunks = check(frames)
    assert heads == [0] and bytes(chunks[0]) == data
    assert chunks[0].ts_ecr == 59 and chunks[0].flags == ACK


def test_push_merges_and_is_reported():
    heads, chunks = check([frame(1, b"a" * 10, "PA"), frame(11, b"b" * 10)])
    assert heads == [0] and chunks[0].flags == ACK | PSH


@pytest.mark.parametrize("second", [
    frame(12, b"x"),                               # out of order
    frame(11, b"x", "FA"),                         # FIN
    frame(11, b"x", ack=1001),                     # another ACK number
    frame(11, b"x", ts=(99, 50)),                  # TSval backwards
    frame(11, b"x", ts=None),                      # timestamps gone
    frame(11, b"x", sack=(1, 2)),                  # SACK blocks
    frame(11, b""),                                # no data
    frame(11, b"x", sport=1),                      # another flow
    frame(11, b"x", src="198.18.0.9"),             # another source
])
def test_what_ends_a_chunk(second):
    heads, chunks = check([frame(1, b"a" * 10), second])
    assert heads == [0, 1] and chunks == [None, None]


def test_chunks_stop_at_64_kib():
    frames = [frame(i * 1448, bytes(1448)) for i in range(100)]
    heads, chunks = check(frames)
    assert all(len(c) <= MAX for c in chunks if c is not None)
    assert heads == [0, 45, 90]


def test_chunk_gathers_onto_a_receive_buffer():
    data = os.urandom(3000)
    _, _, _, _, chunks = run([frame(0, data[:1500]), frame(1500, data[1500:])])
    buf = SockBuf(1 << 16)
    buf.append(b"head")
    chunks[0].append_to(buf)
    assert buf.tobytes() == b"head" + data
    assert memoryview(chunks[0]).tobytes() == data and "2 segments" in repr(chunks[0])


def test_bad_input_is_refused():
    pool, handles, rows, _, _ = run([frame(0, b"abc")])
    with pytest.raises(ValueError, match="max_bytes"):
        coalesce(rows, handles, pool.data, 0)
    with pytest.raises(ValueError, match="PARSED_DTYPE"):
        coalesce(np.zeros(1, dtype=np.uint8), handles, pool.data)
    with pytest.raises(ValueError, match="one per row"):
        coalesce(rows, np.zeros(2, dtype=np.uint64), pool.data)
    with pytest.raises(ValueError, match="outside the pool"):
        coalesce(rows, np.array([7], dtype=np.uint64), pool.data)
    with pytest.raises(ValueError, match="2-D"):
        coalesce(rows, handles, pool.data.reshape(-1))
    assert coalesce(np.zeros(0, dtype=PARSED_DTYPE), np.zeros(0, dtype=np.uint64),
                    pool.data) == ([], [])


def test_a_chunk_out_of_order_is_queued_and_delivered_after_the_gap():
    wire = Wire(seed=1)
    wire.b.listen(iss=777)
    wire.a.connect(iss=1)
    wire.run(until=lambda: wire.a.state == ESTABLISHED and wire.b.state == ESTABLISHED)
    b = wire.b
    nxt = b.rcv_nxt
    data = os.urandom(4000)
    frames = [frame((nxt + 1000 + i * 1000) % 2**32, data[1000 + i * 1000:2000 + i * 1000],
                    ack=b.snd_nxt, window=b.snd_wnd >> b._snd_wscale, ts=None)
              for i in range(3)]
    _, _, _, heads, chunks = run(frames)
    assert heads == [0] and chunks[0].segments == 3
    b.input(TcpSegment(40000, 80, (nxt + 1000) % 2**32, b.snd_nxt, ACK,
                       b.snd_wnd >> b._snd_wscale, chunks[0]))
    b.input(TcpSegment(40000, 80, nxt, b.snd_nxt, ACK, b.snd_wnd >> b._snd_wscale, data[:1000]))
    assert b.recv(10000) == data


def _transfer(gro: bool, sizes):
    link = LinkPair()
    cfg = dict(gro=gro)
    with Stack(link.a, f"{A}/24", tcp=cfg) as a, Stack(link.b, f"{B}/24", tcp=cfg) as b:
        srv = b.create_server(("", 80))
        srv.settimeout(10)
        got = bytearray()

        def sink():
            c, _ = srv.accept()
            c.settimeout(10)
            while (d := c.recv(1 << 16)):
                got.extend(d)
        t = threading.Thread(target=sink)
        t.start()
        c = a.create_connection((B, 80), timeout=10)
        data = b"".join(os.urandom(n) for n in sizes)
        pos = 0
        for n in sizes:
            c.sendall(data[pos:pos + n])
            pos += n
        c.shutdown(1)
        t.join(20)
        c.close()
        merged = b.stats().get("tcp.gro_merged_segments", 0)
    return data, bytes(got), merged


@settings(max_examples=4, deadline=None)
@given(sizes=st.lists(st.integers(1, 200_000), min_size=1, max_size=12))
def test_the_socket_delivers_the_same_coalesced_or_not(sizes):
    sent, got_on, _ = _transfer(True, sizes)
    sent_off, got_off, merged_off = _transfer(False, sizes)
    assert got_on == sent and got_off == sent_off
    assert merged_off == 0


def test_bulk_data_is_coalesced():
    sent, got, merged = _transfer(True, [1 << 20] * 4)
    assert got == sent and merged > 0


def _established(config_b=None):
    wire = Wire(seed=1, config_b=config_b)
    wire.b.listen(iss=777)
    wire.a.connect(iss=1)
    wire.run(until=lambda: wire.a.state == ESTABLISHED and wire.b.state == ESTABLISHED)
    return wire


def _chunk_for(b, seq, data, n, ts=True):
    size = len(data) // n
    frames = [frame((seq + i * size) % 2**32, data[i * size:(i + 1) * size], ack=b.snd_nxt,
                    window=b.snd_wnd >> b._snd_wscale, ts=(b.ts_recent + 1, 0) if ts else None)
              for i in range(n)]
    _, _, _, heads, chunks = run(frames)
    assert heads == [0] and chunks[0].segments == n
    seg = TcpSegment(40000, 80, seq, b.snd_nxt, ACK, b.snd_wnd >> b._snd_wscale, chunks[0])
    if ts:
        seg.ts_val, seg.ts_ecr = b.ts_recent + 1, 0
    return seg


def _acks_for_chunk(b, n, size=1200):
    """The ACK numbers ``b`` sends for an in-order chunk of ``n`` segments,
    as offsets from RCV.NXT; the data is then read whole."""
    nxt = b.rcv_nxt
    sent = []
    b.output = sent.append
    data = os.urandom(n * size)
    b.input(_chunk_for(b, nxt, data, n))
    acks = [(d[1] - nxt) % 2**32 for d in sent if d[2] == ACK]
    assert b.recv(1 << 20) == data
    return acks


def test_at_first_an_in_order_chunk_is_acked_every_second_segment():
    # (the sender's slow start grows by two segments an ACK at most)
    wire = _established()
    assert _acks_for_chunk(wire.b, 6) == [2400, 4800, 7200]
    assert _acks_for_chunk(wire.b, 5) == [2400, 4800, 6000]


def test_an_in_order_chunk_is_acked_at_its_middle_and_its_end():
    wire = _established()
    b = wire.b
    # past the first two buffers' worth of data
    for _ in range(2 * b.config.rcvbuf // (40 * 1200) + 1):
        _acks_for_chunk(b, 40)
    assert _acks_for_chunk(b, 6) == [3600, 7200]


def test_quick_acks_end_once_the_peer_fills_the_window():
    wire = _established(TcpConfig(rcvbuf=16 * 1200))
    b = wire.b
    assert _acks_for_chunk(b, 4) == [2400, 4800]
    # a chunk that fills what is left of the window: the peer's window, not
    # its slow start, holds it back from now on
    assert _acks_for_chunk(b, 15) == [2400 * i for i in range(1, 8)] + [18000]
    assert _acks_for_chunk(b, 6) == [3600, 7200]


def test_an_out_of_order_chunk_gets_a_duplicate_ack_per_segment():
    wire = _established()
    b = wire.b
    nxt = b.rcv_nxt
    sent = []
    b.output = sent.append
    b.input(_chunk_for(b, (nxt + 1000) % 2**32, os.urandom(4 * 1000), 4))
    assert len(sent) == 4 and all(d[1] == nxt and d[2] == ACK for d in sent)
    assert b.counters.get("tcp.ooo_queued") == 1


def test_slow_start_counts_acknowledged_bytes_up_to_two_segments():
    wire = _established()
    a = wire.a
    mss = a.snd_mss
    a.output = lambda desc: None          # the data leaves; the ACKs are made here
    a.send(os.urandom(8 * mss))
    assert (a.snd_max - a.snd_una) % 2**32 >= 3 * mss     # the initial window in flight
    ssthresh = a.ssthresh
    before = a.cwnd

    def ack(n):
        seg = TcpSegment(80, 40000, wire.b.snd_nxt, (a.snd_una + n) % 2**32, ACK,
                         a.snd_wnd >> a._snd_wscale)
        seg.ts_val, seg.ts_ecr = a.ts_recent + 1, 0
        a.input(seg)
    ack(3 * mss)                              # a stretch ACK: RFC 3465 L = 2
    assert a.cwnd == before + 2 * mss
    ack(mss // 2)                             # less than a segment: what it covers
    assert a.cwnd == before + 2 * mss + mss // 2
    assert a.ssthresh == ssthresh
