"""Checksum-on-copy for TCP (docs/tcp.md, "Checksum on copy"): the demux leaves
the checksum of a data segment to the copy into the receive buffer, which
verifies it in the same pass; a bad segment is dropped before the connection
sees it.  Checked in the core against scapy-built frames and a plain-Python
checksum, and end to end on a stack driven by a hand-made peer."""
from __future__ import annotations

import os
import threading

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether

from concurrency import wait_until
from demux_rig import demux_rig
from tcp_peer import LOCAL, LPORT, PEER, PPORT, linked_peer
from fastproto._core.gro import coalesce, stage_segment
from fastproto._core.parse import Flag
from fastproto._core.sockbuf import SockBuf
from fastproto._core.tcpseg import tcp_checksum_ok, tcp_fields
from fastproto.phy.link import LinkPair
from fastproto.socket import SHUT_WR
from fastproto.stack import Stack

LOCAL6, PEER6 = "2001:2::2", "2001:2::1"
MAC_L, MAC_P = "02:00:00:00:00:02", "02:00:00:00:00:01"


# -- a plain-Python oracle ----------------------------------------------------------

def _sum16(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def checksum_ok(frame: bytes) -> bool:
    """RFC 9293 3.1 / RFC 8200 8.1: pseudo-header, header and data sum to all ones."""
    pkt = Ether(frame)
    if IPv6 in pkt:
        ip = pkt[IPv6]
        seg = bytes(ip.payload)[:ip.plen]
        pseudo = (ip6_bytes(ip.src) + ip6_bytes(ip.dst) + len(seg).to_bytes(4, "big")
                  + b"\0\0\0\x06")
    else:
        ip = pkt[IP]
        seg = bytes(ip.payload)[:ip.len - 4 * ip.ihl]
        pseudo = (bytes(map(int, ip.src.split("."))) + bytes(map(int, ip.dst.split(".")))
                  + b"\0\x06" + len(seg).to_bytes(2, "big"))
    return _sum16(pseudo + seg) == 0xFFFF


def ip6_bytes(addr: str) -> bytes:
    import ipaddress
    return ipaddress.IPv6Address(addr).packed


def segment(seq: int, payload: bytes = b"", flags: str = "PA", ack: int = 1000, window: int = 500,
            v6: bool = False, ts=(100, 50), src=PEER, dst=LOCAL, sport=PPORT, dport=LPORT,
            smac=MAC_P, dmac=MAC_L) -> bytes:
    opts = [("Timestamp", ts)] if ts is not None else []
    ip = IPv6(src=PEER6, dst=LOCAL6) if v6 else IP(src=src, dst=dst, flags="DF")
    return bytes(Ether(src=smac, dst=dmac) / ip
                 / TCP(sport=sport, dport=dport, seq=seq, ack=ack, flags=flags, window=window,
                       options=opts) / payload)


def corrupt(frame: bytes, plen: int, pos: int) -> bytes:
    """``frame`` with payload byte ``pos`` (of ``plen``) changed: one byte off
    always changes the one's complement sum."""
    out = bytearray(frame)
    out[len(out) - plen + pos] ^= 0x5A
    return bytes(out)


# -- the core: parser, demux, gro ---------------------------------------------------

@pytest.fixture
def rx():
    return demux_rig((6, LOCAL, LPORT, PEER, PPORT), (6, LOCAL6, LPORT, PEER6, PPORT),
                     verify_l4=True, defer_udp_checksum=True, defer_tcp_checksum=True)


def _deliver(pool, demux, pcq, frames):
    batch = pool.batch_from_frames(frames)
    demux.input(batch.handles, batch.lengths)
    batch.clear()   # the buffers now belong to the PCQ
    return pcq.get_many(64)


def test_data_segments_are_deferred_and_header_only_ones_verified(rx):
    pool, demux, pcq = rx
    hs = _deliver(pool, demux, pcq, [segment(1, b"data"), segment(5, flags="A"),
                                     segment(0, b"syn data", flags="S"),
                                     segment(5, b"v6", v6=True)])
    flags = [int(demux.rows[h]["flags"]) for h in hs.tolist()]
    assert [bool(f & Flag.L4_CSUM_DEFERRED) for f in flags] == [True, False, False, True]
    assert [bool(f & Flag.L4_CSUM_OK) for f in flags] == [False, True, True, False]
    pool.free_many(hs)


def test_corrupt_pure_ack_is_still_dropped_by_the_demux(rx):
    pool, demux, pcq = rx
    ack = bytearray(segment(5, flags="A"))
    ack[-1] ^= 1                          # the last timestamp byte
    hs = _deliver(pool, demux, pcq, [bytes(ack)])
    assert len(hs) == 0 and demux.counters()["l4_bad_checksum"] == 1
    assert pool.available == pool.count


def test_without_deferral_every_segment_is_verified_in_the_demux():
    pool, demux, pcq = demux_rig((6, LOCAL, LPORT, PEER, PPORT), buffers=8, capacity=8,
                                 verify_l4=True)
    hs = _deliver(pool, demux, pcq, [segment(1, b"data"), corrupt(segment(5, b"bad!"), 4, 1)])
    assert len(hs) == 1 and demux.counters()["l4_bad_checksum"] == 1
    assert int(demux.rows[int(hs[0])]["flags"]) & Flag.L4_CSUM_OK
    pool.free_many(hs)


@pytest.mark.parametrize("v6", [False, True])
def test_stage_segment_copies_a_good_payload_and_refuses_a_bad_one(rx, v6):
    pool, demux, pcq = rx
    good, bad = os.urandom(700), os.urandom(701)
    hs = _deliver(pool, demux, pcq, [segment(1, good, v6=v6),
                                     corrupt(segment(701, bad, v6=v6), 701, 700)]).tolist()
    buf = SockBuf(4096)
    buf.append(b"old")
    chunk = stage_segment(demux.rows, hs[0], pool.data, buf)
    assert buf.tobytes() == b"old" + good and len(chunk) == 700 and chunk.segments == 1
    assert stage_segment(demux.rows, hs[1], pool.data, buf) is None
    assert buf.tobytes() == b"old" + good             # nothing of the bad one stays
    assert tcp_checksum_ok(demux.rows, hs[0], pool.data)
    assert not tcp_checksum_ok(demux.rows, hs[1], pool.data)
    # staged bytes are committed by an append right after them, else taken back
    chunk.append_to(buf)
    assert chunk.committed and buf.tobytes() == b"old" + good
    chunk.unstage()
    assert buf.tobytes() == b"old" + good
    again = stage_segment(demux.rows, hs[0], pool.data, buf)
    again.unstage()
    assert buf.tobytes() == b"old" + good and not again.committed
    pool.free_many(np.array(hs, dtype=np.uint64))


def test_a_bad_piece_ends_the_chunk_with_the_good_prefix(rx):
    pool, demux, pcq = rx
    data = [os.urandom(1000) for _ in range(5)]
    frames = [segment(1 + 1000 * i, d, flags="PA" if i == 1 else "A", ts=(100 + i, 50 + i))
              for i, d in enumerate(data)]
    frames[2] = corrupt(frames[2], 1000, 999)
    hs = _deliver(pool, demux, pcq, frames)
    heads, chunks = coalesce(demux.rows, hs, pool.data, 65535, True)
    assert heads == [0] and chunks[0].segments == 5 and chunks[0].deferred == 5
    chunk = chunks[0]
    buf = SockBuf(1 << 16)
    assert chunk.stage_into(buf) == 2
    assert buf.tobytes() == data[0] + data[1] and len(chunk) == 2000 and chunk.segments == 2
    # the header fields of the last good piece: its TSecr, the flags of the two
    assert chunk.ts_ecr == 51 and chunk.flags == 0x18 and chunk.half == 1000
    with pytest.raises(ValueError):
        chunk.stage_into(buf)
    pool.free_many(hs)


def test_verify_keeps_the_good_prefix_without_copying(rx):
    pool, demux, pcq = rx
    data = [os.urandom(500) for _ in range(3)]
    frames = [segment(1 + 500 * i, d) for i, d in enumerate(data)]
    frames[1] = corrupt(frames[1], 500, 0)
    hs = _deliver(pool, demux, pcq, frames)
    _, (chunk,) = coalesce(demux.rows, hs, pool.data, 65535, True)
    assert chunk.verify() == 1 and bytes(chunk) == data[0]
    pool.free_many(hs)


def test_chunk_whose_first_piece_is_bad_is_left_unchanged(rx):
    pool, demux, pcq = rx
    frames = [corrupt(segment(1, b"a" * 100), 100, 5), segment(101, b"b" * 100)]
    hs = _deliver(pool, demux, pcq, frames)
    _, (chunk,) = coalesce(demux.rows, hs, pool.data, 65535, True)
    buf = SockBuf(1024)
    buf.append(b"x")
    assert chunk.stage_into(buf) == 0 and buf.tobytes() == b"x" and len(chunk) == 200
    assert chunk.verify() == 0
    pool.free_many(hs)


def test_coalesce_by_handle_equals_coalesce_of_gathered_rows(rx):
    pool, demux, pcq = rx
    frames = [segment(1 + 10 * i, bytes([i]) * 10) for i in range(6)]
    frames.insert(3, segment(61, flags="A"))
    hs = _deliver(pool, demux, pcq, frames)
    h1, c1 = coalesce(demux.rows, hs, pool.data, 65535, True)
    h2, c2 = coalesce(demux.rows[hs], hs, pool.data)
    assert h1 == h2 and [c and bytes(c) for c in c1] == [c and bytes(c) for c in c2]
    with pytest.raises(ValueError, match="beyond the rows"):
        coalesce(demux.rows, np.array([10 ** 6], dtype=np.uint64), pool.data, 65535, True)
    pool.free_many(hs)


def test_bad_arguments_are_refused(rx):
    pool, demux, pcq = rx
    hs = _deliver(pool, demux, pcq, [segment(1, b"x"), segment(2, flags="A")])
    with pytest.raises(IndexError):
        stage_segment(demux.rows, 10 ** 6, pool.data, SockBuf(64))
    with pytest.raises(IndexError):
        tcp_checksum_ok(demux.rows, 10 ** 6, pool.data)
    with pytest.raises(ValueError):
        tcp_checksum_ok(np.zeros(4, dtype=np.uint8), 0, pool.data)
    with pytest.raises(ValueError):
        stage_segment(demux.rows, int(hs[0]), pool.data.reshape(-1), SockBuf(64))
    free = next(h for h in range(pool.count) if h not in hs.tolist())
    with pytest.raises(ValueError, match="not a whole TCP segment"):
        tcp_checksum_ok(demux.rows, free, pool.data)   # a row that holds no segment
    pool.free_many(hs)


def test_count_bad_checksum_adds_to_the_demux_counter(rx):
    _, demux, _ = rx
    demux.count_bad_checksum(3)
    assert demux.counters()["l4_bad_checksum"] == 3
    with pytest.raises(ValueError):
        demux.count_bad_checksum(-1)


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 1400), min_size=1, max_size=8),
       bad=st.none() | st.tuples(st.integers(0, 7), st.integers(0, 1399)),
       v6=st.booleans(), seed=st.integers(0, 2 ** 32 - 1))
def test_staged_bytes_are_the_good_prefix_the_oracle_finds(sizes, bad, v6, seed):
    rng = np.random.default_rng(seed)
    payloads = [rng.bytes(n) for n in sizes]
    frames, seq = [], 1
    for p in payloads:
        frames.append(segment(seq, p, v6=v6, flags="A"))
        seq += len(p)
    if bad is not None:
        i = bad[0] % len(frames)
        frames[i] = corrupt(frames[i], len(payloads[i]), bad[1] % len(payloads[i]))
    pool, demux, pcq = demux_rig((6, LOCAL6 if v6 else LOCAL, LPORT, PEER6 if v6 else PEER, PPORT),
                                 buffers=16, capacity=16, verify_l4=True, defer_tcp_checksum=True)
    hs = _deliver(pool, demux, pcq, frames)
    assert len(hs) == len(frames)
    # the oracle: every segment up to the first bad one, by the plain-Python sum
    want = b""
    for f, p in zip(frames, payloads):
        if not checksum_ok(f):
            break
        want += p
    heads, chunks = coalesce(demux.rows, hs, pool.data, 65535, True)
    assert heads == [0]                    # in order, one flow: one chunk or one segment
    buf = SockBuf(1 << 16)
    if chunks[0] is None:
        got = stage_segment(demux.rows, int(hs[0]), pool.data, buf)
        assert (got is not None) == bool(want)
    else:
        good = chunks[0].stage_into(buf)
        assert good == next((i for i, f in enumerate(frames) if not checksum_ok(f)), len(frames))
    assert buf.tobytes() == want
    pool.free_many(hs)
    assert pool.available == pool.count


# -- end to end: a stack and a hand-driven peer ------------------------------------


@pytest.fixture
def peer():
    with linked_peer() as p:
        yield p


def _bad(stack) -> int:
    return stack.stats()["demux.l4_bad_checksum"]


def test_corrupt_segment_is_dropped_before_any_state_changes(peer):
    # Data of ours in flight, so an ACK the bad segment carries would move SND.UNA.
    peer.sock.sendall(b"hello")
    before = peer.state()
    assert before[2] != peer.conn.snd_nxt
    bad = corrupt(peer.frame(peer.seq, b"x" * 1000, ack=peer.ack + 5, window=1234), 1000, 500)
    peer.dev.transmit([bad])
    assert wait_until(lambda: _bad(peer.stack) == 1)
    assert peer.state() == before
    with pytest.raises(BlockingIOError):
        peer.sock.setblocking(False)
        peer.sock.recv(10)
    # The same segment intact goes in: the drop was the checksum's alone.
    peer.sock.setblocking(True)
    peer.dev.transmit([peer.frame(peer.seq, b"x" * 1000, ack=peer.ack + 5, window=1234)])
    assert peer.sock.recv(2000) == b"x" * 1000
    assert peer.conn.snd_una == peer.conn.snd_nxt and _bad(peer.stack) == 1


def test_corrupt_middle_of_a_coalesced_batch_keeps_the_prefix(peer):
    stack = peer.stack
    data = os.urandom(6 * 1000)
    pieces = [data[i:i + 1000] for i in range(0, len(data), 1000)]
    frames = [peer.frame(peer.seq + 1000 * i, p, "A") for i, p in enumerate(pieces)]
    frames[3] = corrupt(frames[3], 1000, 17)
    merged = stack.stats().get("tcp.gro_merged_segments", 0)
    peer.dev.transmit(frames)               # one batch: coalesced on the socket
    assert wait_until(lambda: _bad(stack) == 1)
    st = stack.stats()
    assert st["tcp.gro_merged_segments"] > merged
    assert st["tcp.bad_checksum_tail_drops"] == 2
    assert wait_until(lambda: peer.state()[0] == (peer.seq + 3000) % 2 ** 32)
    assert peer.state()[6] == data[:3000] and peer.state()[7]
    # The peer sends again what was not acknowledged: the stream is whole.
    peer.dev.transmit([peer.frame(peer.seq + 1000 * i, pieces[i], "A") for i in range(3, 6)])
    got = b""
    while len(got) < len(data):
        got += peer.sock.recv(65536)
    assert got == data and _bad(stack) == 1


def test_corrupt_segment_out_of_order_is_verified_first_and_dropped(peer):
    stack = peer.stack
    before = peer.state()
    ahead = corrupt(peer.frame(peer.seq + 500, b"later" * 100, "A"), 500, 3)
    peer.dev.transmit([ahead])
    assert wait_until(lambda: _bad(stack) == 1)
    assert peer.state() == before                 # not queued out of order either
    # intact, it is queued, then delivered once the gap fills
    peer.dev.transmit([peer.frame(peer.seq + 500, b"later" * 100, "A")])
    assert wait_until(lambda: not peer.state()[7])
    peer.dev.transmit([peer.frame(peer.seq, b"first" * 100, "A")])
    got = b""
    while len(got) < 1000:
        got += peer.sock.recv(4096)
    assert got == b"first" * 100 + b"later" * 100


def test_in_order_segment_is_read_once(peer):
    stack = peer.stack
    peer.dev.transmit([peer.frame(peer.seq, b"z" * 1400)])
    assert peer.sock.recv(2000) == b"z" * 1400
    st = stack.stats()
    assert st["tcp.payload_bytes_read"] == st["tcp.delivered_bytes"] == 1400


def _transfer(checksum_on_copy: bool, family_v6: bool = False, size: int = 2 << 20):
    link = LinkPair()
    data = os.urandom(size)
    got = bytearray()
    kw = dict(checksum_on_copy=checksum_on_copy)
    with Stack(link.a, f"{PEER}/24", ipv6=f"{PEER6}/64", **kw) as a, \
            Stack(link.b, f"{LOCAL}/24", ipv6=f"{LOCAL6}/64", **kw) as b:
        from fastproto.socket import AF_INET, AF_INET6
        fam = AF_INET6 if family_v6 else AF_INET
        srv = b.create_server(("", 5001), family=fam)
        srv.settimeout(30.0)

        def sink():
            c, _ = srv.accept()
            c.settimeout(30.0)
            while x := c.recv(1 << 20):
                got.extend(x)
            c.close()

        t = threading.Thread(target=sink)
        t.start()
        c = a.create_connection((LOCAL6 if family_v6 else LOCAL, 5001), timeout=30.0)
        c.sendall(data)
        c.shutdown(SHUT_WR)
        t.join(60.0)
        c.close()
        st = b.stats()
    assert bytes(got) == data
    return st


def test_stats_report_one_read_per_byte_with_checksum_on_copy_and_two_without():
    on = _transfer(True)
    off = _transfer(False)
    # The handshake's first data may wait on the listener's queue until the
    # connection exists: that little is verified apart (a few segments).
    assert 1.0 <= on["tcp.payload_reads_per_byte"] < 1.01
    assert off["tcp.payload_reads_per_byte"] == 2.0
    assert on["tcp.delivered_bytes"] == off["tcp.delivered_bytes"] == 2 << 20


def test_ipv6_transfer_is_checked_on_copy():
    st = _transfer(True, family_v6=True, size=1 << 20)
    assert 1.0 <= st["tcp.payload_reads_per_byte"] < 1.01


def test_deferred_segment_for_no_socket_is_verified_in_the_demux(rx):
    # It would be answered with a reset: never for a corrupted segment.
    pool, demux, pcq = rx
    frames = [segment(1, b"good", dport=81), corrupt(segment(5, b"bad!", dport=81), 4, 2)]
    batch = pool.batch_from_frames(frames)
    handles = np.array(batch.handles, dtype=np.uint64)
    _, _, _, unmatched = demux.input(batch.handles, batch.lengths)
    batch.clear()
    assert unmatched.tolist() == [0] and demux.counters()["l4_bad_checksum"] == 1
    row = demux.rows[int(handles[0])]
    assert int(row["flags"]) & Flag.L4_CSUM_OK and not int(row["flags"]) & Flag.L4_CSUM_DEFERRED
    pool.free_many(handles[:1])
    assert pool.available == pool.count


def test_tcp_fields_of_chosen_positions(rx):
    pool, demux, pcq = rx
    hs = _deliver(pool, demux, pcq, [segment(1 + i, bytes([i])) for i in range(4)])
    every = tcp_fields(demux.rows, hs)
    assert tcp_fields(demux.rows, hs, [2, 0]) == [every[2], every[0]]
    assert tcp_fields(demux.rows, hs, []) == []
    with pytest.raises(IndexError):
        tcp_fields(demux.rows, hs, [4])
    with pytest.raises(IndexError):
        tcp_fields(demux.rows, hs, [-1])
    pool.free_many(hs)


def test_closing_listener_resets_intact_queued_segments_but_not_corrupt_ones():
    link = LinkPair()
    dev = link.a
    mac = ":".join(f"{x:02x}" for x in dev.mac)
    with Stack(link.b, f"{LOCAL}/24", dispatch="inline") as stack:
        smac = ":".join(f"{x:02x}" for x in stack.mac)
        srv = stack.create_server(("", LPORT))
        seen: list = []

        def frames(layer) -> list:
            seen.extend(Ether(f) for f in dev.receive(64))
            return [p for p in seen if layer in p]

        dev.transmit([bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=mac)
                            / ARP(op=1, hwsrc=mac, psrc=PEER, pdst=LOCAL))])
        assert wait_until(lambda: frames(ARP))
        # The listener's input never runs: what arrives stays on its PCQ
        # until close() answers it.
        stack.dispatch.wake = lambda sock: None
        good = segment(5000, b"g" * 100, ack=777, smac=mac, dmac=smac)
        bad = corrupt(segment(6000, b"b" * 100, ack=888, smac=mac, dmac=smac), 100, 10)
        dev.transmit([bad, good])
        assert wait_until(lambda: len(srv.pcq) == 2)
        before = _bad(stack)
        srv.close()
        assert wait_until(lambda: any(p[TCP].flags.R for p in frames(TCP)))
        resets = [p[TCP] for p in frames(TCP) if p[TCP].flags.R]
        # RFC 9293 3.10.7.1: an ACK-bearing segment gets <SEQ=SEG.ACK><CTL=RST>.
        assert [r.seq for r in resets] == [777]
        assert _bad(stack) == before + 1
