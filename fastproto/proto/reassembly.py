"""IPv4 and IPv6 fragment reassembly (RFC 791 3.2, RFC 815, RFC 8200 4.5, RFC 5722)
and fragmentation on the send side.

Reassembly keeps, per datagram, its fragments sorted by offset. A fragment
that overlaps another (other than an exact duplicate) discards the whole
datagram, and later fragments of it are dropped until the timeout
(RFC 5722 3, RFC 8200 4.5). Memory is bounded in bytes and in datagrams.
"""
from __future__ import annotations

import bisect
import struct
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

from fastproto.wire.icmp import IPPROTO_FRAGMENT, ipv6_fragment_header
from fastproto.wire.ip import Address, ip_bytes, ipv4, ipv6

IPV4_MAX_PAYLOAD = 65535 - 20   # Total Length is 16 bits and covers a header of >= 20 bytes
IPV6_MAX_PAYLOAD = 65535        # Payload Length is 16 bits (no jumbograms on Ethernet)

_COUNTERS = (
    "reasm_fragments", "reasm_ok", "reasm_duplicate", "reasm_overlap", "reasm_too_long",
    "reasm_bad_length", "reasm_bad_offset", "reasm_inconsistent_end", "reasm_discarded_late",
    "reasm_timeout", "reasm_evicted_memory", "reasm_evicted_count", "reasm_too_big",
)

Key = tuple[bytes, bytes, int, int]


class Expired(NamedTuple):
    """A datagram that timed out. ``quote`` is the first fragment's IP header and the first
    8 bytes of its data (for ICMP Time Exceeded, code 1: RFC 792, RFC 1122 3.2.1.3 and
    RFC 8200 4.5) when the first fragment arrived with a header, else None."""
    key: Key
    quote: bytes | None


@dataclass
class _Datagram:
    deadline: float
    starts: list[int] = field(default_factory=list)   # sorted fragment offsets
    parts: dict[int, bytes] = field(default_factory=dict)
    have: int = 0            # bytes held
    end: int | None = None   # total length, once the last fragment has arrived
    quote: bytes | None = None
    proto: int = -1          # IPv6: Next Header of the first fragment (RFC 8200 4.5)


class Reassembler:
    """Reassembles IPv4 and IPv6 datagrams from their fragments.

    ``timeout`` (s) runs from a datagram's first arriving fragment (a fixed
    value rather than RFC 791's TTL-based one). ``max_bytes``: fragment
    data held across all datagrams; ``max_datagrams``: datagrams in progress.
    When either would be exceeded, the oldest datagrams are dropped.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, timeout: float = 30.0,
                 max_bytes: int = 4 << 20, max_datagrams: int = 64) -> None:
        self._clock = clock
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.max_datagrams = max_datagrams
        self._datagrams: OrderedDict[Key, _Datagram] = OrderedDict()
        self._discarded: OrderedDict[Key, float] = OrderedDict()
        self._expired: list[Expired] = []
        self._bytes = 0
        #: the protocol of the datagram the last completing input() returned (IPv6: the
        #: Next Header of its first fragment, RFC 8200 4.5)
        self.last_proto = -1
        self._stats = dict.fromkeys(_COUNTERS, 0)

    def stats(self) -> dict[str, int]:
        """Counters, netstat style (a copy)."""
        return dict(self._stats)

    @property
    def bytes_held(self) -> int:
        """Fragment data held now."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._datagrams)

    def input(self, src: Address, dst: Address, proto: int, ident: int, offset_bytes: int,
              more_fragments: bool, payload: bytes, header: bytes | None = None) -> bytes | None:
        """Add one fragment; returns the datagram's whole payload when it is complete.

        ``src``/``dst`` are 4-byte (IPv4) or 16-byte (IPv6) addresses. IPv4
        datagrams are keyed by (src, dst, proto, ident) (RFC 791 3.2); IPv6
        ones by (src, dst, ident) (RFC 8200 4.5), ``proto`` being the Next
        Header of the Fragment header. ``header``, given with the first
        fragment, is its IP header, kept to quote in an ICMP Time Exceeded.
        """
        now = self._clock()
        self._expire(now)
        self._stats["reasm_fragments"] += 1
        s, d = ip_bytes(src), ip_bytes(dst)
        v6 = len(s) == 16
        key: Key = (s, d, -1 if v6 else proto, ident)
        if key in self._discarded:
            self._stats["reasm_discarded_late"] += 1
            return None
        length = len(payload)
        if offset_bytes % 8 or offset_bytes < 0:
            self._stats["reasm_bad_offset"] += 1
            return None
        if more_fragments and (length == 0 or length % 8):
            # RFC 791 3.2 / RFC 8200 4.5: all but the last fragment carry multiples of 8 bytes.
            self._stats["reasm_bad_length"] += 1
            return None
        end = offset_bytes + length
        if end > (IPV6_MAX_PAYLOAD if v6 else IPV4_MAX_PAYLOAD):
            self._stats["reasm_too_long"] += 1
            self._discard(key, now)
            return None
        if length > self.max_bytes:
            self._stats["reasm_too_big"] += 1
            return None
        dg = self._datagrams.get(key)
        if dg is None:
            if len(self._datagrams) >= self.max_datagrams:
                self._drop_oldest("reasm_evicted_count")
            dg = self._datagrams[key] = _Datagram(deadline=now + self.timeout)
        # The final length, once known, must agree with every fragment (RFC 8200 4.5).
        if not more_fragments:
            if dg.end is not None and dg.end != end:
                self._stats["reasm_inconsistent_end"] += 1
                self._discard(key, now)
                return None
            if dg.starts and dg.starts[-1] + len(dg.parts[dg.starts[-1]]) > end:
                self._stats["reasm_inconsistent_end"] += 1
                self._discard(key, now)
                return None
            dg.end = end
        elif dg.end is not None and end > dg.end:
            self._stats["reasm_inconsistent_end"] += 1
            self._discard(key, now)
            return None
        if length == 0:
            pass   # an empty last fragment only sets the end
        elif offset_bytes in dg.parts and dg.parts[offset_bytes] == bytes(payload):
            self._stats["reasm_duplicate"] += 1
            return None
        else:
            i = bisect.bisect_left(dg.starts, offset_bytes)
            if i > 0:
                prev = dg.starts[i - 1]
                if prev + len(dg.parts[prev]) > offset_bytes:
                    self._overlap(key, now)
                    return None
            if i < len(dg.starts) and dg.starts[i] < end:
                self._overlap(key, now)
                return None
            while self._bytes + length > self.max_bytes and self._datagrams:
                if next(iter(self._datagrams)) == key and len(self._datagrams) == 1:
                    break
                self._drop_oldest("reasm_evicted_memory", keep=key)
            if self._bytes + length > self.max_bytes:
                self._stats["reasm_evicted_memory"] += 1
                self._remove(key)
                return None
            dg.starts.insert(i, offset_bytes)
            dg.parts[offset_bytes] = bytes(payload)
            dg.have += length
            self._bytes += length
        if offset_bytes == 0:
            if header is not None:
                dg.quote = bytes(header) + bytes(payload[:8])
            dg.proto = proto
        if dg.end is not None and dg.have == dg.end:
            # No overlaps are held, so covering `end` bytes means there are no holes.
            self._remove(key)
            self._stats["reasm_ok"] += 1
            self.last_proto = dg.proto
            return b"".join(dg.parts[o] for o in dg.starts)
        return None

    def first_proto(self, src: Address, dst: Address, ident: int) -> int | None:
        """The Next Header of an IPv6 datagram's first fragment, once it has arrived."""
        dg = self._datagrams.get((ip_bytes(src), ip_bytes(dst), -1, ident))
        return None if dg is None or dg.proto < 0 else dg.proto

    def expire(self) -> list[Expired]:
        """Datagrams that timed out since the last call, oldest first (each counted ``reasm_timeout``)."""
        self._expire(self._clock())
        out, self._expired = self._expired, []
        return out

    # -- internals -----------------------------------------------------------

    def _expire(self, now: float) -> None:
        while self._datagrams:
            key, dg = next(iter(self._datagrams.items()))
            if now < dg.deadline:
                break
            self._remove(key)
            self._stats["reasm_timeout"] += 1
            self._expired.append(Expired(key, dg.quote))
        # Expiry notes wait for expire(); keep them bounded if it is never called.
        if len(self._expired) > self.max_datagrams:
            del self._expired[:len(self._expired) - self.max_datagrams]
        while self._discarded:
            key, until = next(iter(self._discarded.items()))
            if now < until and len(self._discarded) <= self.max_datagrams:
                break
            del self._discarded[key]

    def _overlap(self, key: Key, now: float) -> None:
        self._stats["reasm_overlap"] += 1
        self._discard(key, now)

    def _discard(self, key: Key, now: float) -> None:
        """Drop a datagram and ignore its later fragments until the timeout (RFC 5722 3)."""
        self._remove(key)
        self._discarded[key] = now + self.timeout
        self._discarded.move_to_end(key)

    def _remove(self, key: Key) -> None:
        dg = self._datagrams.pop(key, None)
        if dg is not None:
            self._bytes -= dg.have

    def _drop_oldest(self, counter: str, keep: Key | None = None) -> None:
        for key in self._datagrams:
            if key != keep:
                self._remove(key)
                self._stats[counter] += 1
                return


# -- parsing received fragments ----------------------------------------------

class Fragment(NamedTuple):
    """The reassembly fields of one received fragment (the arguments of Reassembler.input)."""
    src: bytes
    dst: bytes
    proto: int
    ident: int
    offset_bytes: int
    more_fragments: bool
    payload: bytes
    header: bytes


def ipv4_fragment(packet: bytes) -> Fragment:
    """The fragment fields of an IPv4 packet; ValueError if its header is malformed."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        raise ValueError("not an IPv4 packet")
    ihl = (packet[0] & 0x0F) * 4
    total, ident, ff = struct.unpack_from("!HHH", packet, 2)
    if ihl < 20 or total < ihl or total > len(packet):
        raise ValueError("bad IPv4 header or total length")
    return Fragment(bytes(packet[12:16]), bytes(packet[16:20]), packet[9], ident,
                    (ff & 0x1FFF) * 8, bool(ff & 0x2000), bytes(packet[ihl:total]),
                    bytes(packet[:ihl]))


def ipv6_fragment(packet: bytes) -> Fragment:
    """The fragment fields of an IPv6 packet whose Fragment header directly follows the
    IPv6 header; ValueError otherwise. ``header`` is the IPv6 header and Fragment header."""
    if len(packet) < 48 or packet[0] >> 4 != 6 or packet[6] != IPPROTO_FRAGMENT:
        raise ValueError("not an IPv6 packet with a Fragment header first")
    plen = struct.unpack_from("!H", packet, 4)[0]
    if 40 + plen > len(packet) or plen < 8:
        raise ValueError("bad IPv6 payload length")
    nh, _, offm, ident = struct.unpack_from("!BBHI", packet, 40)
    return Fragment(bytes(packet[8:24]), bytes(packet[24:40]), nh, ident, offm & 0xFFF8,
                    bool(offm & 1), bytes(packet[48:40 + plen]), bytes(packet[:48]))


# -- fragmenting -------------------------------------------------------------

def fragment_ipv4(src: Address, dst: Address, proto: int, payload: bytes, mtu: int, ident: int,
                  ttl: int = 64, tos: int = 0) -> list[bytes]:
    """IPv4 packets (20-byte headers) carrying ``payload``, each at most ``mtu`` bytes.

    Fragment data are multiples of 8 bytes except the last (RFC 791 3.2).
    A payload that fits gives one unfragmented packet (DF clear).
    """
    if mtu < 28:
        raise ValueError("an IPv4 MTU holds at least a header and 8 bytes (RFC 791: 68)")
    if len(payload) > IPV4_MAX_PAYLOAD:
        raise ValueError("an IPv4 datagram carries at most 65515 bytes")
    if 20 + len(payload) <= mtu:
        return [ipv4(src, dst, proto, payload, ttl=ttl, ident=ident, flags_frag=0, tos=tos)]
    step = (mtu - 20) // 8 * 8
    out = []
    for off in range(0, len(payload), step):
        more = off + step < len(payload)
        out.append(ipv4(src, dst, proto, payload[off:off + step], ttl=ttl, ident=ident,
                        flags_frag=(0x2000 if more else 0) | off // 8, tos=tos))
    return out


def fragment_ipv6(src: Address, dst: Address, next_header: int, payload: bytes, mtu: int,
                  ident: int, hop_limit: int = 64) -> list[bytes]:
    """IPv6 packets with a Fragment header (RFC 8200 4.5) carrying ``payload`` (the
    fragmentable part), each at most ``mtu`` bytes. ``mtu`` is at least 1280 (RFC 8200 5).
    A payload that fits in one packet is still sent in one fragment (offset 0, M clear)."""
    if mtu < 1280:
        raise ValueError("the IPv6 minimum MTU is 1280 (RFC 8200 5)")
    # The limit is on the original packet's Payload Length; the Fragment header is not
    # part of it (RFC 8200 4.5), and the receiver checks offset + length <= 65535.
    if len(payload) > IPV6_MAX_PAYLOAD:
        raise ValueError("an IPv6 payload is at most 65535 bytes")
    step = (mtu - 48) // 8 * 8
    out = []
    off = 0
    while True:
        chunk = payload[off:off + step]
        more = off + step < len(payload)
        out.append(ipv6(src, dst, IPPROTO_FRAGMENT,
                        ipv6_fragment_header(next_header, off, more, ident) + chunk,
                        hop_limit=hop_limit))
        off += step
        if not more:
            return out
