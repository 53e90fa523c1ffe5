"""parse under a seeded mutation fuzzer: 200,000 mutated frames, in batches.

Valid frames of every kind are mutated (bit flips, byte overwrites aimed at
the headers with values that make lengths lie, truncations, extensions);
for most IPv4 frames the header checksum is then made right again so the
mutations reach the checks behind it.  Every batch is parsed twice, with
different bytes after each frame in its row: the rows must be identical
(nothing past the frame length is read).  Every row must keep the
invariants of docs/parse.md, and a sample of frames is parsed at the end of
a page (a read past the frame faults) and compared with the reference
parser in test_parse.py.
"""
import logging
import random

import numpy as np
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP, IPOption_RR
from scapy.layers.inet6 import (
    ICMPv6EchoRequest, ICMPv6ND_NS, IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting, RouterAlert,
)
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.packet import Raw

from fastproto._core.parse import PARSED_DTYPE, Flag, Status, parse, status_counts
from test_parse import check_against_reference

logging.getLogger("scapy.runtime").setLevel(logging.ERROR)

TOTAL = 200_000
BATCH = 4096
ROW = 256
REFERENCE_EVERY = 40  # one frame in this many is also checked against the reference
INTERESTING = np.array([0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 0x3F, 0x40, 0x45, 0x4F, 0x60, 0x7F, 0x80,
                        0xC2, 0xFE, 0xFF], dtype=np.uint8)
INTERESTING16 = np.array([0, 1, 7, 8, 19, 20, 39, 40, 0x7FFF, 0x8000, 0xFFFF, 0x0800, 0x0806, 0x86DD,
                          0x8100, 0x88A8], dtype=np.uint16)
F = Flag


def seed_frames(rng: random.Random) -> list:
    """Valid frames of every kind the parser knows, with random field values."""
    def mac():
        return ":".join(f"{rng.randrange(256):02x}" for _ in range(6))

    def v4():
        return ".".join(str(rng.randrange(256)) for _ in range(4))

    def v6():
        return ":".join(f"{rng.randrange(65536):x}" for _ in range(8))

    def l2():
        e = Ether(src=mac(), dst=mac())
        kind = rng.randrange(4)
        if kind & 2:
            e = e / Dot1AD(vlan=rng.randrange(4096))
        if kind & 1:
            e = e / Dot1Q(vlan=rng.randrange(4096), prio=rng.randrange(8))
        return e

    def tcp():
        opts = rng.choice([[], [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 2)), ("WScale", 7)],
                           [("NOP", None), ("NOP", None), ("Timestamp", (rng.getrandbits(32), 5))],
                           [("SAck", tuple(rng.getrandbits(32) for _ in range(8)))],
                           [("Timestamp", (9, 9)), ("SAck", (1, 2, 3, 4, 5, 6))]])
        return TCP(sport=rng.randrange(1, 65536), dport=rng.randrange(1, 65536), seq=rng.getrandbits(32),
                   ack=rng.getrandbits(32), flags=rng.randrange(256), options=opts)

    def payload():
        return Raw(rng.randbytes(rng.randrange(0, 24)))

    frames = []
    for _ in range(6):
        ip = IP(src=v4(), dst=v4(), ttl=rng.randrange(256), id=rng.randrange(65536))
        frames += [
            l2() / ip / tcp() / payload(),
            l2() / ip / UDP(sport=rng.randrange(65536), dport=53) / payload(),
            l2() / ip / ICMP(type=8, id=rng.randrange(65536), seq=1) / payload(),
            l2() / IP(src=v4(), options=[IPOption_NOP(), IPOption_RR(routers=[v4()])]) / tcp(),
            l2() / IP(src=v4(), flags="MF", id=7) / UDP() / Raw(bytes(16)),
            l2() / IP(src=v4(), frag=rng.randrange(1, 100), proto=6) / Raw(rng.randbytes(24)),
            l2() / IPv6(src=v6(), dst=v6()) / tcp() / payload(),
            l2() / IPv6(src=v6(), dst=v6()) / UDP(sport=rng.randrange(65536)) / payload(),
            l2() / IPv6(src=v6()) / ICMPv6EchoRequest(id=rng.randrange(65536)) / payload(),
            l2() / IPv6(src=v6(), hlim=255) / ICMPv6ND_NS(tgt=v6()),
            l2() / IPv6(src=v6()) / IPv6ExtHdrHopByHop(options=[RouterAlert()]) / IPv6ExtHdrDestOpt()
            / IPv6ExtHdrRouting(addresses=[v6()], segleft=0) / tcp(),
            l2() / IPv6(src=v6()) / IPv6ExtHdrFragment(m=1, id=rng.getrandbits(32)) / UDP() / Raw(bytes(16)),
            l2() / IPv6(src=v6()) / IPv6ExtHdrFragment(offset=rng.randrange(1, 100), nh=6) / Raw(bytes(24)),
            l2() / ARP(op=rng.choice([1, 2]), psrc=v4(), pdst=v4(), hwsrc=mac()),
            # the longest chain accepted: one more header is too many
            l2() / IPv6(src=v6()) / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt()
            / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt()
            / IPv6ExtHdrDestOpt() / UDP() / payload(),
        ]
    return [bytes(f) + rng.randbytes(rng.choice([0, 0, 4])) for f in frames]


class Corpus:
    """The seed frames as arrays: bytes, lengths, L3 offsets, ends of the headers."""

    def __init__(self, frames: list):
        from fastproto._core.parse import parse_frames
        rows = parse_frames(frames)
        assert (rows["status"] == Status.OK).all()
        self.n = len(frames)
        self.data = np.zeros((self.n, ROW), dtype=np.uint8)
        for i, f in enumerate(frames):
            self.data[i, :len(f)] = np.frombuffer(f, dtype=np.uint8)
        self.length = np.array([len(f) for f in frames])
        self.l3 = rows["l3_off"].astype(np.int64)
        self.ipv4 = rows["ethertype"] == 0x0800
        # mutations aimed at the headers land before the payload
        self.header_end = np.maximum(np.where(rows["payload_off"] > 0, rows["payload_off"],
                                              self.length), 1)


def mutated_batch(corpus: Corpus, rng: np.random.Generator, n: int):
    """n mutated frames in rows of garbage: (pool, lengths)."""
    idx = rng.integers(0, corpus.n, n)
    pool = rng.integers(0, 256, (n, ROW), dtype=np.uint8)
    length = corpus.length[idx].copy()
    inside = np.arange(ROW)[None, :] < length[:, None]
    pool[inside] = corpus.data[idx][inside]
    rows = np.arange(n)
    nmut = rng.integers(1, 4, n)
    for m in range(3):
        act = rows[nmut > m]
        kind = rng.integers(0, 6, act.size)
        lim = np.maximum(length[act], 1)
        anywhere = rng.integers(0, 1 << 30, act.size) % lim
        in_header = rng.integers(0, 1 << 30, act.size) % np.minimum(corpus.header_end[idx[act]], lim)
        # 0: flip a bit anywhere, 1: flip a header bit, 2: interesting byte in a header,
        # 3: interesting 16-bit word in a header, 4: truncate, 5: extend into the garbage
        sel = kind == 0
        pool[act[sel], anywhere[sel]] ^= (1 << rng.integers(0, 8, sel.sum())).astype(np.uint8)
        sel = kind == 1
        pool[act[sel], in_header[sel]] ^= (1 << rng.integers(0, 8, sel.sum())).astype(np.uint8)
        sel = kind == 2
        pool[act[sel], in_header[sel]] = rng.choice(INTERESTING, sel.sum())
        sel = kind == 3
        word = rng.choice(INTERESTING16, sel.sum())
        pool[act[sel], in_header[sel]] = (word >> 8).astype(np.uint8)
        pool[act[sel], np.minimum(in_header[sel] + 1, ROW - 1)] = (word & 0xFF).astype(np.uint8)
        sel = kind == 4
        length[act[sel]] = rng.integers(0, 1 << 30, sel.sum()) % (length[act[sel]] + 1)
        sel = kind == 5
        length[act[sel]] = np.minimum(length[act[sel]] + rng.integers(1, 40, sel.sum()), ROW)
    fix = corpus.ipv4[idx] & (rng.random(n) < 0.7)
    fix_ipv4_checksums(pool, length, corpus.l3[idx], fix)
    return pool, length


def fix_ipv4_checksums(pool, length, l3, which):
    """Make the IPv4 header checksum right where IHL says a header that fits the frame."""
    for off in np.unique(l3[which]):
        r = np.flatnonzero(which & (l3 == off))
        ihl = (pool[r, off] & 15).astype(np.int64) * 4
        r, ihl = r[(ihl >= 20) & (off + ihl <= length[r])], ihl[(ihl >= 20) & (off + ihl <= length[r])]
        if r.size == 0:
            continue
        hdr = pool[r, off:off + 60].astype(np.uint32)
        words = hdr[:, 0::2] << 8 | hdr[:, 1::2]
        j = np.arange(30)[None, :]
        words[(j >= ihl[:, None] // 2) | (j == 5)] = 0
        s = words.sum(axis=1)
        s = (s & 0xFFFF) + (s >> 16)
        s = (s & 0xFFFF) + (s >> 16)
        c = (~s) & 0xFFFF
        pool[r, off + 10] = (c >> 8).astype(np.uint8)
        pool[r, off + 11] = (c & 0xFF).astype(np.uint8)


def check_invariants(rows, length, verify_l4):
    status = rows["status"]
    assert status.max() < len(Status)
    flags = rows["flags"].astype(np.int64)
    ok = status == Status.OK
    rejected = ~ok
    assert not (flags[rejected] & (F.L4 | F.L4_CSUM_OK)).any()
    if not verify_l4:
        assert not (flags & F.L4_CSUM_OK).any()
    r, fl, ln = rows[ok], flags[ok], length[ok]
    ip = (r["ethertype"] == 0x0800) | (r["ethertype"] == 0x86DD)
    assert np.isin(r["l3_off"], [14, 18, 22]).all()
    assert (r["payload_off"][ip].astype(np.int64) + r["payload_len"][ip] <= ln[ip]).all()
    assert (r["l3_off"][ip] < r["l4_off"][ip]).all()
    assert (r["l4_off"][ip] <= r["payload_off"][ip]).all()
    assert (r["ip_version"][ip] == np.where(r["ethertype"][ip] == 0x0800, 4, 6)).all()
    frag = (fl & F.FRAGMENT) != 0
    assert (frag == ((fl & (F.FRAG_FIRST | F.FRAG_LATER)) != 0)).all()
    assert not ((fl & F.FRAG_FIRST) & (fl & F.FRAG_LATER)).any()
    l4 = (fl & F.L4) != 0
    assert np.isin(r["proto"][l4], [1, 6, 17, 58]).all()
    assert not (l4 & ((fl & F.FRAG_LATER) != 0)).any()
    tcp = l4 & (r["proto"] == 6)
    assert (r["tcp_sack_count"][tcp] <= 4).all()
    assert ((r["payload_off"][tcp] - r["l4_off"][tcp]) % 4 == 0).all()
    arp = r["ethertype"] == 0x0806
    assert np.isin(r["arp_op"][arp], [1, 2]).all()


def test_mutation_fuzz_200k():
    seeds = seed_frames(random.Random(20240611))
    corpus = Corpus(seeds)
    rng = np.random.default_rng(7)
    out = np.empty(BATCH, dtype=PARSED_DTYPE)
    totals = dict.fromkeys((s.name for s in Status), 0)
    checked = 0
    for b in range(TOTAL // BATCH + 1):
        n = min(BATCH, TOTAL - b * BATCH)
        if n <= 0:
            break
        verify_l4 = b % 2 == 1
        pool, length = mutated_batch(corpus, rng, n)
        rows = parse(pool, length, out=out[:n], verify_l4=verify_l4).copy()
        # other bytes after each frame: the same rows
        other = pool.copy()
        past = np.arange(ROW)[None, :] >= length[:, None]
        other[past] = ~other[past]
        handles = rng.permutation(n).astype(np.uint64)
        again = parse(other, length[handles.astype(np.intp)], handles=handles, verify_l4=verify_l4)
        assert again.tobytes() == rows[handles.astype(np.intp)].tobytes()
        check_invariants(rows, length, verify_l4)
        for k, v in status_counts(rows).items():
            totals[k] += v
        for i in range(0, n, REFERENCE_EVERY):
            frame = pool[i, :length[i]].tobytes()
            got = check_against_reference(frame, verify_l4)
            assert got.tobytes() == rows[i].tobytes()
            checked += 1
    assert sum(totals.values()) == TOTAL
    assert checked >= TOTAL // REFERENCE_EVERY
    # the mutations reach every rejection the seed frames can be mutated into
    unreached = {name for name, count in totals.items() if count == 0}
    assert not unreached
