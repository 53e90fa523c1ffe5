"""pcbtable cases: batch and single lookups beside a Python dict.

The table holds 100,000 connections and 1,000 listeners (half bound to one of
the host's addresses, half to any), IPv4 and IPv6.  A batch mixes hits on
connections (3/4), on bound listeners (1/8) and on any-address listeners
(1/8), in the parser's column layout: a structured array with 16-byte
IPv4-mapped addresses.  Successive calls take successive batches out of
NBATCH different ones (64 Ki packets), so the buckets a batch needs are
mostly not in the core's caches, as with live traffic.

Baselines:
  - batch: a Python loop over the same packets with ``dict.get`` on tuple keys,
    falling back to the listener keys as the table does.  The three keys of
    every packet are built before timing, so the baseline is spared the
    conversion from the columns that the table does itself.
  - single: ``d[(proto, laddr, lport, faddr, fport)]`` with the same packed
    bytes arguments as ``table.lookup``, which hits a connected entry.
"""
from __future__ import annotations

import itertools
import random

import numpy as np

from fastproto.bench import Case

N_CONN = 100_000
N_LISTEN = 1_000
BATCH = 1024
NBATCH = 64
TCP = 6

#: the parser's layout for the fields a lookup needs (per received frame)
FRAME_DTYPE = np.dtype([
    ("proto", np.uint8), ("src", np.uint8, (16,)), ("dst", np.uint8, (16,)),
    ("sport", np.uint16), ("dport", np.uint16), ("len", np.uint16),
])

_V4 = b"\x00" * 10 + b"\xff\xff"
_ANY4 = _V4 + b"\x00" * 4
_ANY6 = b"\x00" * 16


def _v4(rng: random.Random) -> bytes:
    return _V4 + bytes([10, rng.randrange(256), rng.randrange(256), rng.randrange(1, 255)])


def _v6(rng: random.Random) -> bytes:
    return b"\x20\x01\x0d\xb8" + rng.randbytes(12)


def build(seed: int = 1, npackets: int = BATCH * NBATCH):
    """A filled table, the dict with the same entries, and packets to look up.

    Returns ``(table, d, frames, keys)``: ``frames`` is a structured array of
    ``npackets`` received packets, ``keys`` the (exact, bound, any) dict keys
    of each.
    """
    from fastproto._core.pcbtable import PCBTable

    rng = random.Random(seed)
    table = PCBTable(key=bytes(range(16)))
    d: dict = {}
    local4 = [_V4 + bytes([192, 168, 0, i]) for i in range(1, 17)]
    local6 = [b"\x20\x01\x0d\xb8\x00\x00\x00\x00" + bytes(7) + bytes([i]) for i in range(1, 5)]

    def add(laddr, lport, faddr, fport, value):
        table.insert(TCP, laddr, lport, faddr, fport, value)
        d[(TCP, laddr, lport, faddr, fport)] = value

    bound, anyl = [], []
    for i in range(N_LISTEN // 2):
        laddr = (local4 + local6)[i % 20]
        add(laddr, 1000 + i, None, 0, 1_000_000 + i)
        bound.append((laddr, 1000 + i))
        anyaddr = _ANY4 if i % 5 else _ANY6
        add(anyaddr, 2000 + i, None, 0, 2_000_000 + i)
        anyl.append((anyaddr, 2000 + i))
    conns = []
    while len(conns) < N_CONN:
        v6 = rng.random() < 0.2
        laddr = rng.choice(local6 if v6 else local4)
        faddr = _v6(rng) if v6 else _v4(rng)
        lport = rng.choice((80, 443, 8080)) if rng.random() < 0.5 else rng.randrange(1024, 65536)
        fport = rng.randrange(1024, 65536)
        if (TCP, laddr, lport, faddr, fport) in d:
            continue
        add(laddr, lport, faddr, fport, len(conns) + 1)
        conns.append((laddr, lport, faddr, fport))

    frames = np.zeros(npackets, FRAME_DTYPE)
    keys = []
    for i in range(npackets):
        r = i % 8
        if r < 6:
            laddr, lport, faddr, fport = rng.choice(conns)
        elif r == 6:
            laddr, lport = rng.choice(bound)
            faddr = _v6(rng) if laddr[:12] != _V4 else _v4(rng)
            fport = rng.randrange(1024, 65536)
        else:
            anyaddr, lport = rng.choice(anyl)
            laddr = rng.choice(local4 if anyaddr == _ANY4 else local6)
            faddr = _v4(rng) if anyaddr == _ANY4 else _v6(rng)
            fport = rng.randrange(1024, 65536)
        frames[i] = (TCP, np.frombuffer(faddr, np.uint8), np.frombuffer(laddr, np.uint8),
                     fport, lport, 60)
        wild = _ANY4 if laddr[:12] == _V4 else _ANY6
        keys.append(((TCP, laddr, lport, faddr, fport), (TCP, laddr, lport, None, 0),
                     (TCP, wild, lport, None, 0)))
    return table, d, frames, keys


def cases() -> list[Case]:
    table, d, frames, keys = build()

    # receive direction: the packet's destination is the local side
    batches = []
    for b in range(NBATCH):
        f = frames[b * BATCH:(b + 1) * BATCH]
        batches.append((f["proto"], f["dst"], f["dport"], f["src"], f["sport"]))
    key_batches = [keys[b * BATCH:(b + 1) * BATCH] for b in range(NBATCH)]
    values = np.empty(BATCH, np.uint64)
    found = np.empty(BATCH, np.bool_)
    nxt = itertools.cycle(range(NBATCH)).__next__
    nxt_base = itertools.cycle(range(NBATCH)).__next__

    def batch_fastproto():
        return table.lookup_batch(*batches[nxt()], out=values, found=found)

    def batch_dict():
        get = d.get
        out = []
        append = out.append
        for exact, bound, anyk in key_batches[nxt_base()]:
            v = get(exact)
            if v is None:
                v = get(bound)
                if v is None:
                    v = get(anyk)
            append(v)
        return out

    # single lookup hitting a connection, packed IPv4 bytes as a caller has them
    conn = next(k[0] for k in keys if k[0][1][:12] == b"\x00" * 10 + b"\xff\xff")
    proto, la16, lp, fa16, fp = conn
    la, fa = la16[12:], fa16[12:]
    d4 = {(proto, la, lp, fa, fp): d[conn]}
    d.update(d4)
    assert table.lookup(proto, la, lp, fa, fp) == d[(proto, la, lp, fa, fp)]
    lookup = table.lookup

    return [
        Case(group="core", name=f"pcbtable lookup_batch {BATCH}", fastproto=batch_fastproto,
             baseline=batch_dict, baseline_name="dict.get loop", work=BATCH, unit="lookups",
             scale=1e6, scale_name="M lookups/s", goal_rate=20.0,
             note="100k connections + 1k listeners; 3/4 connection hits, 1/4 listener hits"),
        Case(group="core", name="pcbtable lookup (one, connected)",
             fastproto=lambda: lookup(proto, la, lp, fa, fp),
             baseline=lambda: d[(proto, la, lp, fa, fp)], baseline_name="dict[tuple]",
             work=1, unit="lookups", scale=1e6, scale_name="M lookups/s", goal_ratio=0.5),
    ]
