"""parse cases: batch parsing of 64-byte frames beside dpkt and scapy.

The frames are minimum-size Ethernet frames (64 bytes without the FCS), half
IPv4/TCP (20-byte header, 10 bytes of data) and half IPv4/UDP (22 bytes of
data), with random addresses, ports, sequence numbers and flags.  They sit
in the rows of a 2 KiB-per-row buffer pool as the receive path sees them,
taken in a shuffled handle order, and are parsed in batches of 256 into a
preallocated output array (``out=``).

Baselines parse the same 256 frames one at a time and read the fields the
parser fills for them (addresses, ports, TTL, protocol, lengths and the TCP
sequence, acknowledgement, flags, window and options):
  - dpkt: ``dpkt.ethernet.Ethernet(frame)``;
  - scapy: ``Ether(frame)`` (one call of 256 frames takes about 0.1 s).
"""
from __future__ import annotations

import random
from typing import Callable, Optional

import numpy as np

from fastproto.bench import Case

BATCH = 256
ROW = 2048
FRAME = 64


def build_frames(n: int = BATCH, seed: int = 7) -> list[bytes]:
    """n 64-byte frames, alternating IPv4/TCP and IPv4/UDP, valid checksums."""
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.l2 import Ether
    from scapy.packet import Packet

    rng = random.Random(seed)
    frames = []
    for i in range(n):
        ip = IP(src=f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
                dst=f"192.168.{rng.randrange(256)}.{rng.randrange(1, 255)}", ttl=rng.randrange(1, 256),
                id=rng.randrange(65536))
        l4: Packet
        if i % 2 == 0:
            l4 = TCP(sport=rng.randrange(1024, 65536), dport=rng.choice([80, 443, 5201]),
                     seq=rng.getrandbits(32), ack=rng.getrandbits(32), flags="PA",
                     window=rng.randrange(65536))
        else:
            l4 = UDP(sport=rng.randrange(1024, 65536), dport=rng.choice([53, 123, 4789]))
        pkt = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / ip / l4
        raw = bytes(pkt)
        raw = bytes(pkt / bytes(rng.randrange(256) for _ in range(FRAME - len(raw))))
        assert len(raw) == FRAME
        frames.append(raw)
    return frames


def _pool(frames: list[bytes], seed: int = 3):
    """The frames in rows of a buffer-pool-like array, and their shuffled handles."""
    rng = np.random.default_rng(seed)
    data = np.zeros((len(frames), ROW), dtype=np.uint8)
    handles = rng.permutation(len(frames)).astype(np.uint64)
    for h, f in zip(handles, frames):
        data[h, :len(f)] = np.frombuffer(f, dtype=np.uint8)
    lengths = np.full(len(frames), FRAME, dtype=np.uint16)
    ordered = [bytes(data[h, :FRAME]) for h in handles]
    return data, handles, lengths, ordered


def _dpkt_parse(frames: list[bytes]):
    import dpkt  # type: ignore[import-untyped]

    Ethernet = dpkt.ethernet.Ethernet
    TCPh = dpkt.tcp.TCP
    parse_opts = dpkt.tcp.parse_opts

    def run():
        acc = 0
        for f in frames:
            eth = Ethernet(f)
            ip = eth.data
            acc += len(ip.src) + len(ip.dst) + ip.ttl + ip.p + ip.len + ip.id
            l4 = ip.data
            acc += l4.sport + l4.dport
            if isinstance(l4, TCPh):
                acc += l4.seq + l4.ack + l4.flags + l4.win + len(parse_opts(l4.opts))
            else:
                acc += l4.ulen
            acc += len(l4.data)
        return acc

    return run


def _scapy_parse(frames: list[bytes]):
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    def run():
        acc = 0
        for f in frames:
            pkt = Ether(f)
            ip = pkt[IP]
            acc += len(ip.src) + len(ip.dst) + ip.ttl + ip.proto + ip.len + ip.id
            l4 = ip.payload
            acc += l4.sport + l4.dport
            if isinstance(l4, TCP):
                acc += l4.seq + l4.ack + int(l4.flags) + l4.window + len(l4.options)
            else:
                acc += l4.len
            acc += len(bytes(l4.payload))
        return acc

    return run


def cases() -> list[Case]:
    from fastproto._core.parse import PARSED_DTYPE, parse

    frames = build_frames()
    data, handles, lengths, ordered = _pool(frames)
    out = np.empty(BATCH, dtype=PARSED_DTYPE)

    def fp():
        return parse(data, lengths, handles, out=out)

    def fp_verify():
        return parse(data, lengths, handles, out=out, verify_l4=True)

    def case(name: str, fn: Callable[[], object], baseline: Callable[[], object], baseline_name: str,
             goal_rate: Optional[float] = None, goal_ratio: Optional[float] = None) -> Case:
        return Case(group="core", name=name, fastproto=fn, work=BATCH, unit="frames",
                    baseline=baseline, baseline_name=baseline_name, goal_rate=goal_rate,
                    goal_ratio=goal_ratio, scale=1e6, scale_name="M frames/s")

    return [
        case("parse 64 B TCP/UDP x256", fp, _dpkt_parse(ordered), "dpkt", goal_rate=20, goal_ratio=100),
        case("parse 64 B TCP/UDP x256 vs scapy", fp, _scapy_parse(ordered), "scapy", goal_ratio=1000),
        case("parse 64 B TCP/UDP x256 verify_l4", fp_verify, _dpkt_parse(ordered), "dpkt"),
    ]
