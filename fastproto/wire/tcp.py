"""TCP segments (RFC 9293 3.1): a parsed view with its options, and a builder.

``parse_tcp`` turns the bytes of a TCP header + payload into a
:class:`TcpSegment`, or raises :class:`TcpRejected` whose ``reason`` names
what was wrong (the stack counts ``tcp.bad_segment.<reason>``).  The payload
stays a memoryview over the caller's buffer: nothing is copied.

``build_tcp`` lays a header, its options and the payload into one new buffer,
copying the payload exactly once and checksumming it while it copies
(``checksum_copy``), with the IPv4 or IPv6 pseudo-header (RFC 9293 3.1,
RFC 8200 8.1).
"""
from __future__ import annotations

import ipaddress
import struct
from typing import Optional, Sequence, Tuple, Union

from fastproto.checksum import checksum_copy, internet_checksum, partial_sum, pseudo_header_sum

IPPROTO_TCP = 6

# Control bits (RFC 9293 3.1; ECE/CWR RFC 3168 6.1).
FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10
URG = 0x20
ECE = 0x40
CWR = 0x80

# Option kinds (RFC 9293 3.2, RFC 7323 2/3, RFC 2018 2/3).
OPT_EOL = 0
OPT_NOP = 1
OPT_MSS = 2
OPT_WSCALE = 3
OPT_SACK_PERMITTED = 4
OPT_SACK = 5
OPT_TIMESTAMPS = 8

#: every reason parse_tcp can give (netstat-style counter suffixes)
REJECT_REASONS = (
    "truncated",          # shorter than the 20-byte fixed header
    "bad_data_offset",    # data offset < 5 words or past the end of the data
    "option_truncated",   # an option's kind/length runs past the header
    "bad_option_length",  # an option length < 2, or wrong for a known kind
    "bad_wscale",         # window scale shift > 14 is clamped, but a length != 3 is not
    "bad_sack_block",     # SACK option length not 2 + 8*n
    "bad_checksum",       # only from parse_tcp_checked
    "bad_port",           # source or destination port 0 (RFC 9293 3.1 reserves it)
    "syn_fin",            # SYN and FIN together: never sent by a correct peer
)

_HDR = struct.Struct("!HHIIBBHHH")
_MSS = struct.Struct("!BBH")
_TS = struct.Struct("!BBBBII")   # NOP NOP TS(10) len(10) TSval TSecr: the RFC 7323 appendix A layout
_U32 = struct.Struct("!I")
_U16 = struct.Struct("!H")

Buffer = Union[bytes, bytearray, memoryview]
#: an address as the checksum functions take it: text, packed bytes or an ipaddress object
Address = Union[str, bytes, bytearray, memoryview, ipaddress.IPv4Address, ipaddress.IPv6Address]


class TcpRejected(ValueError):
    """A segment that cannot be parsed; ``reason`` is one of :data:`REJECT_REASONS`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TcpSegment:
    """One parsed TCP segment.

    ``window`` is the raw 16-bit field (the receiver scales it).  Options that
    were absent are None (``sack_permitted`` False); ``sack_blocks`` is a tuple of
    (left, right) edges.  ``payload`` is a memoryview (or bytes) over the data.
    """

    __slots__ = ("sport", "dport", "seq", "ack", "flags", "window", "urgent", "payload",
                 "mss", "wscale", "sack_permitted", "ts_val", "ts_ecr", "sack_blocks")

    def __init__(self, sport: int = 0, dport: int = 0, seq: int = 0, ack: int = 0,
                 flags: int = 0, window: int = 0, payload: Buffer = b"", urgent: int = 0,
                 mss: Optional[int] = None, wscale: Optional[int] = None,
                 sack_permitted: bool = False, ts_val: Optional[int] = None,
                 ts_ecr: Optional[int] = None,
                 sack_blocks: Optional[Tuple[Tuple[int, int], ...]] = None) -> None:
        self.sport = sport
        self.dport = dport
        self.seq = seq
        self.ack = ack
        self.flags = flags
        self.window = window
        self.urgent = urgent
        self.payload = payload
        self.mss = mss
        self.wscale = wscale
        self.sack_permitted = sack_permitted
        self.ts_val = ts_val
        self.ts_ecr = ts_ecr
        self.sack_blocks = sack_blocks

    def __repr__(self) -> str:
        names = "FSRPAUEC"
        flags = "".join(n for i, n in enumerate(names) if self.flags & (1 << i))
        return (f"TcpSegment({self.sport}->{self.dport} seq={self.seq} ack={self.ack} [{flags}] "
                f"win={self.window} len={len(self.payload)})")


def parse_tcp(data: Buffer) -> TcpSegment:
    """Parse a TCP header, its options and payload from ``data`` (no checksum check).

    Raises :class:`TcpRejected` with a named reason on malformed input; never
    reads outside ``data``.
    """
    n = len(data)
    if n < 20:
        raise TcpRejected("truncated")
    sport, dport, seq, ack, off, flags, window, _csum, urgent = _HDR.unpack_from(data, 0)
    hlen = (off >> 4) * 4
    if hlen < 20 or hlen > n:
        raise TcpRejected("bad_data_offset")
    if sport == 0 or dport == 0:
        raise TcpRejected("bad_port")
    if flags & (SYN | FIN) == SYN | FIN:
        raise TcpRejected("syn_fin")
    seg = TcpSegment(sport, dport, seq, ack, flags, window, memoryview(data)[hlen:], urgent)
    if hlen == 32 and data[20] == 1 and data[21] == 1 and data[22] == 8 and data[23] == 10:
        # The common case: only NOP NOP TIMESTAMPS (RFC 7323 appendix A).
        seg.ts_val, seg.ts_ecr = struct.unpack_from("!II", data, 24)
    elif hlen > 20:
        _parse_options(seg, data, 20, hlen)
    return seg


def _parse_options(seg: TcpSegment, data: Buffer, i: int, end: int) -> None:
    """Fill ``seg``'s option fields from data[i:end] (RFC 9293 3.2: unknown kinds skipped by length)."""
    while i < end:
        kind = data[i]
        if kind == OPT_EOL:
            return
        if kind == OPT_NOP:
            i += 1
            continue
        if i + 1 >= end:
            raise TcpRejected("option_truncated")
        length = data[i + 1]
        if length < 2:
            raise TcpRejected("bad_option_length")
        if i + length > end:
            raise TcpRejected("option_truncated")
        if kind == OPT_MSS:
            if length != 4:
                raise TcpRejected("bad_option_length")
            seg.mss = _U16.unpack_from(data, i + 2)[0]
        elif kind == OPT_WSCALE:
            if length != 3:
                raise TcpRejected("bad_wscale")
            # RFC 7323 2.3: a shift above 14 is used as 14 (and should be logged).
            seg.wscale = min(data[i + 2], 14)
        elif kind == OPT_SACK_PERMITTED:
            if length != 2:
                raise TcpRejected("bad_option_length")
            seg.sack_permitted = True
        elif kind == OPT_TIMESTAMPS:
            if length != 10:
                raise TcpRejected("bad_option_length")
            seg.ts_val, seg.ts_ecr = struct.unpack_from("!II", data, i + 2)
        elif kind == OPT_SACK:
            if (length - 2) % 8 or length == 2:
                raise TcpRejected("bad_sack_block")
            blocks = []
            for j in range(i + 2, i + length, 8):
                blocks.append(struct.unpack_from("!II", data, j))
            seg.sack_blocks = tuple(blocks)
        i += length


def parse_tcp_checked(data: Buffer, src: Address, dst: Address) -> TcpSegment:
    """Like :func:`parse_tcp`, after checking the checksum with the pseudo-header of src/dst."""
    if len(data) >= 20 and internet_checksum(data, pseudo_header_sum(src, dst, IPPROTO_TCP,
                                                                     len(data))) != 0:
        raise TcpRejected("bad_checksum")
    return parse_tcp(data)


def tcp_options(mss: Optional[int] = None, wscale: Optional[int] = None,
                sack_permitted: bool = False, ts: Optional[Tuple[int, int]] = None,
                sack_blocks: Sequence[Tuple[int, int]] = ()) -> bytes:
    """Options bytes, NOP-padded to a multiple of 4 (RFC 9293 3.1)."""
    out = bytearray()
    if mss is not None:
        out += _MSS.pack(OPT_MSS, 4, mss)
    if ts is not None:
        out += _TS.pack(OPT_NOP, OPT_NOP, OPT_TIMESTAMPS, 10, ts[0] & 0xFFFFFFFF, ts[1] & 0xFFFFFFFF)
    if sack_permitted:
        out += bytes((OPT_NOP, OPT_NOP, OPT_SACK_PERMITTED, 2))
    if wscale is not None:
        out += bytes((OPT_NOP, OPT_WSCALE, 3, wscale))
    if sack_blocks:
        out += bytes((OPT_NOP, OPT_NOP, OPT_SACK, 2 + 8 * len(sack_blocks)))
        for left, right in sack_blocks:
            out += struct.pack("!II", left & 0xFFFFFFFF, right & 0xFFFFFFFF)
    if len(out) % 4:
        out += bytes(4 - len(out) % 4)
    return bytes(out)


def timestamps_option(ts_val: int, ts_ecr: int) -> bytes:
    """The 12-byte NOP NOP TIMESTAMPS option (RFC 7323 appendix A layout)."""
    return _TS.pack(OPT_NOP, OPT_NOP, OPT_TIMESTAMPS, 10, ts_val, ts_ecr)


def build_tcp(src: Address, dst: Address, sport: int, dport: int, seq: int, ack: int, flags: int,
              window: int, options: Buffer = b"", payload: Buffer = b"", urgent: int = 0,
              pseudo: Optional[int] = None) -> bytearray:
    """A checksummed TCP segment in one new buffer; the payload is copied once.

    ``pseudo`` is the partial sum of the pseudo-header without the length (as
    cached per connection by :func:`pseudo_sum`); without it, it is computed from
    ``src``/``dst`` (4-byte or 16-byte addresses select IPv4 or IPv6).
    """
    olen = len(options)
    if olen % 4 or olen > 40:
        raise ValueError("options must be a multiple of 4 bytes, at most 40")
    hlen = 20 + olen
    plen = len(payload)
    total = hlen + plen
    buf = bytearray(total)
    _HDR.pack_into(buf, 0, sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, (hlen // 4) << 4,
                   flags, window, 0, urgent)
    if olen:
        buf[20:hlen] = options
    if pseudo is None:
        initial = pseudo_header_sum(src, dst, IPPROTO_TCP, total)
    else:
        initial = pseudo + total
    initial = partial_sum(memoryview(buf)[:hlen], initial)
    if plen:
        csum = checksum_copy(memoryview(buf)[hlen:], payload, initial)
    else:
        csum = internet_checksum(b"", initial)
    _U16.pack_into(buf, 16, csum)
    return buf


def pseudo_sum(src: Address, dst: Address) -> int:
    """Partial sum of the pseudo-header of src/dst with a zero length, for :func:`build_tcp`."""
    return pseudo_header_sum(src, dst, IPPROTO_TCP, 0)


def build_from_descriptor(src: Address, dst: Address, sport: int, dport: int,
                          desc: Tuple[int, int, int, int, bytes, Buffer],
                          pseudo: Optional[int] = None) -> bytearray:
    """The segment for one output descriptor (seq, ack, flags, window, options, payload)."""
    seq, ack, flags, window, options, payload = desc
    return build_tcp(src, dst, sport, dport, seq, ack, flags, window, options, payload,
                     pseudo=pseudo)
