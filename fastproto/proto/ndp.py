"""IPv6 Neighbor Discovery: address resolution (RFC 4861 7).

One :class:`NeighborCache` per interface. It answers Neighbor
Solicitations for our addresses (including Duplicate Address Detection
probes), resolves neighbours with multicast solicitations, and learns
link-layer addresses from solicitations and advertisements. Neighbour
Unreachability Detection is simplified: an entry is REACHABLE for
``reachable_time`` after a solicited advertisement, then STALE (still used,
with no DELAY/PROBE states), and removed ``stale_timeout`` later. Router and
Redirect messages are counted and ignored.
"""
from __future__ import annotations

import enum
import struct
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Callable, Iterable, Union

from fastproto._core.parse import Flag, Status
from fastproto.checksum import internet_checksum, pseudo_header_sum
from fastproto.proto._frames import as_row, row_vlan
from fastproto.wire.ethernet import ETH_P_IPV6, ethernet, mac_bytes
from fastproto.wire.icmp import (
    IPPROTO_ICMPV6, ND_NA_OVERRIDE, ND_NA_SOLICITED, ND_NEIGHBOR_ADVERT, ND_NEIGHBOR_SOLICIT,
    ND_OPT_SOURCE_LLADDR, ND_OPT_TARGET_LLADDR, ipv6_multicast_mac, neighbor_advert,
    neighbor_solicit, solicited_node,
)
from fastproto.wire.ip import Address, ip_bytes, ipv6

ALL_NODES = bytes.fromhex("ff020000000000000000000000000001")
UNSPECIFIED = bytes(16)
ND_HOP_LIMIT = 255

#: an IPv6 packet to frame with EtherType 0x86DD, or a callable building the frame from the MAC
Outgoing = Union[bytes, Callable[[bytes], bytes]]

_COUNTERS = (
    "nd_ns_sent", "nd_na_sent", "nd_ns_received", "nd_na_received", "nd_learned", "nd_updated",
    "nd_dad_answered", "nd_not_for_us", "nd_conflict", "nd_na_no_entry", "nd_na_ignored",
    "nd_malformed", "nd_bad_hop_limit", "nd_bad_checksum", "nd_bad_code", "nd_bad_length",
    "nd_bad_target", "nd_bad_option", "nd_bad_source", "nd_bad_solicited_flag",
    "nd_other_type", "nd_held", "nd_hold_overflow", "nd_released", "nd_unresolved",
    "nd_pending_full", "nd_expired", "nd_evicted",
)


class NeighborState(enum.Enum):
    """States of a resolved entry (RFC 4861 7.3.2, without DELAY and PROBE)."""
    REACHABLE = "REACHABLE"
    STALE = "STALE"


@dataclass
class _Neighbor:
    mac: bytes
    reachable_until: float   # REACHABLE before this time, STALE after
    remove_at: float


@dataclass
class _Incomplete:
    src: bytes
    held: deque[Outgoing] = field(default_factory=deque)
    solicits: int = 0
    last_solicit: float = 0.0


class NeighborCache:
    """The Neighbor Cache of one interface (MAC ``my_mac``, ``my_ipv6_addresses``).

    ``reachable_time`` (s): REACHABLE lifetime after a confirmation
    (RFC 4861 10: REACHABLE_TIME 30 s). ``stale_timeout`` (s): how long a
    STALE entry is kept. ``retrans_timer`` (s) and ``max_multicast_solicit``:
    solicitations for an INCOMPLETE entry (RFC 4861 7.2.2, 10: 1 s, 3).
    ``max_pending_per_ip`` packets are held per INCOMPLETE entry (oldest
    dropped). ``max_entries`` bounds resolved entries (least recently used
    evicted) and, separately, INCOMPLETE ones.
    """

    def __init__(self, my_mac: str | bytes, my_ipv6_addresses: Iterable[Address],
                 clock: Callable[[], float] = time.monotonic, reachable_time: float = 30.0,
                 stale_timeout: float = 600.0, max_entries: int = 1024,
                 max_pending_per_ip: int = 3, retrans_timer: float = 1.0,
                 max_multicast_solicit: int = 3) -> None:
        if max_pending_per_ip < 1 or max_entries < 1 or max_multicast_solicit < 1:
            raise ValueError("max_entries, max_pending_per_ip and max_multicast_solicit must be >= 1")
        self.my_mac = mac_bytes(my_mac)
        self.my_addresses = [ip_bytes(a) for a in my_ipv6_addresses]
        if not self.my_addresses or any(len(a) != 16 for a in self.my_addresses):
            raise ValueError("my_ipv6_addresses must be one or more IPv6 addresses")
        self._mine = set(self.my_addresses)
        self._clock = clock
        self.reachable_time = reachable_time
        self.stale_timeout = stale_timeout
        self.max_entries = max_entries
        self.max_pending_per_ip = max_pending_per_ip
        self.retrans_timer = retrans_timer
        self.max_multicast_solicit = max_multicast_solicit
        self._entries: OrderedDict[bytes, _Neighbor] = OrderedDict()
        self._incomplete: dict[bytes, _Incomplete] = {}
        self._stats = dict.fromkeys(_COUNTERS, 0)

    # -- queries -------------------------------------------------------------

    def lookup(self, ip: Address) -> bytes | None:
        """The MAC of ``ip`` if it is REACHABLE or STALE (marks it recently used)."""
        key = ip_bytes(ip)
        n = self._entries.get(key)
        if n is None:
            return None
        if self._clock() >= n.remove_at:
            del self._entries[key]
            self._stats["nd_expired"] += 1
            return None
        self._entries.move_to_end(key)
        return n.mac

    def state(self, ip: Address) -> str | None:
        """"INCOMPLETE", "REACHABLE", "STALE", or None when there is no entry."""
        key = ip_bytes(ip)
        if key in self._incomplete:
            return "INCOMPLETE"
        n = self._entries.get(key)
        if n is None or self._clock() >= n.remove_at:
            return None
        reachable = self._clock() < n.reachable_until
        return (NeighborState.REACHABLE if reachable else NeighborState.STALE).value

    def pending(self, ip: Address) -> int:
        """Packets held for ``ip`` while it is INCOMPLETE."""
        inc = self._incomplete.get(ip_bytes(ip))
        return len(inc.held) if inc else 0

    def stats(self) -> dict[str, int]:
        """Counters, netstat style (a copy)."""
        return dict(self._stats)

    # -- sending -------------------------------------------------------------

    def resolve(self, ip: Address, outgoing: Outgoing, src: Address | None = None) -> list[bytes]:
        """Frames to send for ``outgoing`` to neighbour ``ip`` (see ArpCache.resolve).

        The solicitation's source is ``src``, else the held packet's source
        when it is ours (RFC 4861 7.2.2), else our first address.
        """
        key = ip_bytes(ip)
        mac = self.lookup(key)
        if mac is not None:
            return [self._frame(outgoing, mac)]
        now = self._clock()
        inc = self._incomplete.get(key)
        if inc is None:
            if len(self._incomplete) >= self.max_entries:
                self._stats["nd_pending_full"] += 1
                return []
            inc = self._incomplete[key] = _Incomplete(self._solicit_source(outgoing, src))
        if len(inc.held) >= self.max_pending_per_ip:
            inc.held.popleft()
            self._stats["nd_hold_overflow"] += 1
        inc.held.append(outgoing)
        self._stats["nd_held"] += 1
        if inc.solicits == 0 or (inc.solicits < self.max_multicast_solicit
                                 and now - inc.last_solicit >= self.retrans_timer):
            return [self._solicit(key, inc, now)]
        return []

    def tick(self) -> list[bytes]:
        """Run the timers: repeat due solicitations, give up on INCOMPLETE entries whose
        solicitations went unanswered (held packets dropped, RFC 4861 7.2.2), remove old entries."""
        now = self._clock()
        out = []
        for key, inc in list(self._incomplete.items()):
            if now - inc.last_solicit < self.retrans_timer:
                continue
            if inc.solicits < self.max_multicast_solicit:
                out.append(self._solicit(key, inc, now))
            else:
                self._stats["nd_unresolved"] += len(inc.held)
                del self._incomplete[key]
        for key in [k for k, n in self._entries.items() if now >= n.remove_at]:
            del self._entries[key]
            self._stats["nd_expired"] += 1
        return out

    # -- receiving -----------------------------------------------------------

    def input(self, frame: bytes) -> list[bytes]:
        """Handle a received Neighbor Discovery frame; returns the frames to send."""
        frame = bytes(frame)
        row = as_row(frame)
        if (int(row["status"]) != Status.OK or int(row["ethertype"]) != ETH_P_IPV6
                or int(row["proto"]) != IPPROTO_ICMPV6 or not int(row["flags"]) & Flag.NDP):
            self._stats["nd_malformed"] += 1
            return []
        src, dst = row["src"].tobytes(), row["dst"].tobytes()
        l3 = int(row["l3_off"])
        end = l3 + 40 + struct.unpack_from("!H", frame, l3 + 4)[0]
        message = frame[int(row["l4_off"]):end]
        # RFC 4861 7.1.1, 7.1.2: validity checks, each counted.
        if int(row["ttl"]) != ND_HOP_LIMIT:
            # A hop limit below 255 means the packet crossed a router: it is off-link.
            self._stats["nd_bad_hop_limit"] += 1
            return []
        if internet_checksum(message, pseudo_header_sum(src, dst, IPPROTO_ICMPV6,
                                                         len(message))) != 0:
            self._stats["nd_bad_checksum"] += 1
            return []
        kind = message[0]
        if kind not in (ND_NEIGHBOR_SOLICIT, ND_NEIGHBOR_ADVERT):
            self._stats["nd_other_type"] += 1
            return []
        if message[1] != 0:
            self._stats["nd_bad_code"] += 1
            return []
        if len(message) < 24:
            self._stats["nd_bad_length"] += 1
            return []
        target = message[8:24]
        if target[0] == 0xFF:
            self._stats["nd_bad_target"] += 1
            return []
        options = _options(message[24:])
        if options is None:
            self._stats["nd_bad_option"] += 1
            return []
        if kind == ND_NEIGHBOR_SOLICIT:
            self._stats["nd_ns_received"] += 1
            return self._input_ns(row, src, dst, target, options.get(ND_OPT_SOURCE_LLADDR))
        self._stats["nd_na_received"] += 1
        flags = struct.unpack_from("!I", message, 4)[0]
        return self._input_na(dst, target, flags, options.get(ND_OPT_TARGET_LLADDR))

    def _input_ns(self, row: object, src: bytes, dst: bytes, target: bytes,
                  slla: bytes | None) -> list[bytes]:
        if src == UNSPECIFIED and (slla is not None or dst[:13] != solicited_node(target)[:13]):
            # RFC 4861 7.1.1: a DAD probe goes to a solicited-node address without SLLA.
            self._stats["nd_bad_source"] += 1
            return []
        if src[0] == 0xFF:
            self._stats["nd_bad_source"] += 1
            return []
        if target not in self._mine:
            self._stats["nd_not_for_us"] += 1
            return []
        vlan = row_vlan(row)  # type: ignore[arg-type]
        if src == UNSPECIFIED:
            # RFC 4861 7.2.4: defend the address to all-nodes, not solicited.
            self._stats["nd_dad_answered"] += 1
            self._stats["nd_na_sent"] += 1
            na = neighbor_advert(target, ALL_NODES, target, self.my_mac, solicited=False,
                                 override=True)
            return [ethernet(ipv6_multicast_mac(ALL_NODES), self.my_mac, ETH_P_IPV6,
                             ipv6(target, ALL_NODES, IPPROTO_ICMPV6, na, hop_limit=ND_HOP_LIMIT),
                             vlan=vlan)]
        out: list[bytes] = []
        if slla is not None:
            # RFC 4861 7.2.3: a new or changed link-layer address makes the entry STALE.
            out += self._learn(src, slla, reachable=False, only_if_changed=True)
        dst_mac = slla if slla is not None else row["src_mac"].tobytes()  # type: ignore[index]
        na = neighbor_advert(target, src, target, self.my_mac, solicited=True, override=True)
        out.append(ethernet(dst_mac, self.my_mac, ETH_P_IPV6,
                            ipv6(target, src, IPPROTO_ICMPV6, na, hop_limit=ND_HOP_LIMIT),
                            vlan=vlan))
        self._stats["nd_na_sent"] += 1
        return out

    def _input_na(self, dst: bytes, target: bytes, flags: int, tlla: bytes | None) -> list[bytes]:
        solicited = bool(flags & ND_NA_SOLICITED)
        override = bool(flags & ND_NA_OVERRIDE)
        if dst[0] == 0xFF and solicited:
            self._stats["nd_bad_solicited_flag"] += 1
            return []
        if target in self._mine:
            # Another node advertises our address (RFC 4862 5.4.4): a duplicate.
            self._stats["nd_conflict"] += 1
            return []
        # RFC 4861 7.2.5.
        if target in self._incomplete:
            if tlla is None:
                self._stats["nd_na_ignored"] += 1
                return []
            return self._learn(target, tlla, reachable=solicited)
        n = self._entries.get(target)
        if n is None:
            self._stats["nd_na_no_entry"] += 1
            return []
        now = self._clock()
        changed = tlla is not None and tlla != n.mac
        if not override and changed:
            if now < n.reachable_until:
                n.reachable_until = now   # REACHABLE -> STALE, address kept
            self._stats["nd_na_ignored"] += 1
            return []
        if tlla is not None:
            n.mac = tlla
        if solicited:
            n.reachable_until = now + self.reachable_time
        elif changed:
            n.reachable_until = now
        n.remove_at = max(n.reachable_until, now) + self.stale_timeout
        self._stats["nd_updated"] += 1
        return []

    # -- internals -----------------------------------------------------------

    def _learn(self, ip: bytes, mac: bytes, reachable: bool,
               only_if_changed: bool = False) -> list[bytes]:
        now = self._clock()
        n = self._entries.get(ip)
        if n is not None:
            if only_if_changed and n.mac == mac:
                return []
            n.mac = mac
            n.reachable_until = now + self.reachable_time if reachable else now
            n.remove_at = max(n.reachable_until, now) + self.stale_timeout
            self._entries.move_to_end(ip)
            self._stats["nd_updated"] += 1
        else:
            if len(self._entries) >= self.max_entries:
                self._entries.popitem(last=False)
                self._stats["nd_evicted"] += 1
            until = now + self.reachable_time if reachable else now
            self._entries[ip] = _Neighbor(mac, until, until + self.stale_timeout)
            self._stats["nd_learned"] += 1
        inc = self._incomplete.pop(ip, None)
        if inc is None:
            return []
        self._stats["nd_released"] += len(inc.held)
        return [self._frame(o, mac) for o in inc.held]

    def _solicit_source(self, outgoing: Outgoing, src: Address | None) -> bytes:
        if src is not None:
            return ip_bytes(src)
        if isinstance(outgoing, (bytes, bytearray)) and len(outgoing) >= 40:
            candidate = bytes(outgoing[8:24])
            if candidate in self._mine:
                return candidate
        return self.my_addresses[0]

    def _solicit(self, ip: bytes, inc: _Incomplete, now: float) -> bytes:
        inc.solicits += 1
        inc.last_solicit = now
        self._stats["nd_ns_sent"] += 1
        group = solicited_node(ip)
        ns = neighbor_solicit(inc.src, group, ip, self.my_mac)
        return ethernet(ipv6_multicast_mac(group), self.my_mac, ETH_P_IPV6,
                        ipv6(inc.src, group, IPPROTO_ICMPV6, ns, hop_limit=ND_HOP_LIMIT))

    def _frame(self, outgoing: Outgoing, mac: bytes) -> bytes:
        if callable(outgoing):
            return outgoing(mac)
        return ethernet(mac, self.my_mac, ETH_P_IPV6, bytes(outgoing))


def _options(data: bytes) -> dict[int, bytes] | None:
    """{option type: link-layer address} of the Ethernet link-layer options; None when an
    option has length 0 or runs past the message (RFC 4861 4.6, 7.1.1). Other options
    are skipped (RFC 4861 4.6: unrecognised options are ignored)."""
    out: dict[int, bytes] = {}
    i = 0
    while i < len(data):
        if i + 2 > len(data):
            return None
        kind, units = data[i], data[i + 1]
        if units == 0 or i + units * 8 > len(data):
            return None
        if kind in (ND_OPT_SOURCE_LLADDR, ND_OPT_TARGET_LLADDR) and units == 1:
            out.setdefault(kind, bytes(data[i + 2:i + 8]))
        i += units * 8
    return out
