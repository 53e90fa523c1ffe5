"""ARP resolution for Ethernet/IPv4 (RFC 826, RFC 1122 2.3.2).

One :class:`ArpCache` per interface. It answers requests for our address,
learns from the packets addressed to us, holds a few outgoing packets while
an address is being resolved, and retries and gives up on a schedule. All
methods return the frames to send; none does I/O.
"""
from __future__ import annotations

import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Callable, Union

from fastproto._core.parse import Status
from fastproto.proto._frames import FrameOrRow, as_row, row_vlan
from fastproto.wire.arp import ARP_REPLY, ARP_REQUEST, arp
from fastproto.wire.ethernet import ETH_P_ARP, ETH_P_IP, ethernet, mac_bytes
from fastproto.wire.ip import Address, ip_bytes

BROADCAST_MAC = b"\xff" * 6
ZERO_MAC = bytes(6)
ZERO_IP = bytes(4)

#: an IPv4 packet to frame with EtherType 0x0800, or a callable that builds the
#: whole frame given the destination MAC
Outgoing = Union[bytes, Callable[[bytes], bytes]]

_COUNTERS = (
    "arp_requests_sent", "arp_replies_sent", "arp_requests_received", "arp_replies_received",
    "arp_learned", "arp_updated", "arp_gratuitous", "arp_not_for_us", "arp_conflict",
    "arp_bad_sender", "arp_malformed", "arp_held", "arp_hold_overflow", "arp_released",
    "arp_unresolved", "arp_pending_full", "arp_expired", "arp_evicted",
)


@dataclass
class _Entry:
    mac: bytes
    expires: float


@dataclass
class _Pending:
    held: deque[Outgoing] = field(default_factory=deque)
    requests: int = 0
    last_request: float = 0.0


class ArpCache:
    """The ARP table of one interface with address ``my_ipv4`` and MAC ``my_mac``.

    ``timeout`` (s): an entry's lifetime since it was last confirmed.
    ``max_entries``: resolved entries kept (least recently used evicted) and,
    separately, addresses being resolved at once. ``max_pending_per_ip``:
    packets held per unresolved address (RFC 1122 2.3.2.2: at least one; the
    oldest is dropped on overflow). A request is repeated every
    ``request_interval`` s (RFC 1122 2.3.2.1: at most one a second per
    address) up to ``max_requests`` requests; one interval after the last,
    the address is unresolved and its held packets are dropped.
    """

    def __init__(self, my_mac: str | bytes, my_ipv4: Address,
                 clock: Callable[[], float] = time.monotonic, timeout: float = 60.0,
                 max_entries: int = 1024, max_pending_per_ip: int = 3,
                 request_interval: float = 1.0, max_requests: int = 3) -> None:
        if max_pending_per_ip < 1 or max_entries < 1 or max_requests < 1:
            raise ValueError("max_entries, max_pending_per_ip and max_requests must be >= 1")
        self.my_mac = mac_bytes(my_mac)
        self.my_ip = ip_bytes(my_ipv4)
        if len(self.my_ip) != 4:
            raise ValueError("my_ipv4 must be an IPv4 address")
        self._clock = clock
        self.timeout = timeout
        self.max_entries = max_entries
        self.max_pending_per_ip = max_pending_per_ip
        self.request_interval = request_interval
        self.max_requests = max_requests
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._pending: dict[bytes, _Pending] = {}
        #: bumped whenever a resolved entry is added, changed or removed: a
        #: sender that kept what ``lookup_entry`` said may use it while the
        #: generation is the same and the entry's expiry time has not come
        self.generation = 0
        self._stats = dict.fromkeys(_COUNTERS, 0)

    # -- queries -------------------------------------------------------------

    def lookup(self, ip: Address) -> bytes | None:
        """The MAC of ``ip`` if it is resolved and not expired (marks it recently used)."""
        key = ip_bytes(ip)
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._clock() >= entry.expires:
            del self._entries[key]
            self.generation += 1
            self._stats["arp_expired"] += 1
            return None
        self._entries.move_to_end(key)
        return entry.mac

    def lookup_entry(self, ip: Address) -> tuple[bytes, float] | None:
        """:meth:`lookup`, with the entry's expiry time (on the cache's clock):
        ``(mac, expires)``, or None."""
        mac = self.lookup(ip)
        if mac is None:
            return None
        return mac, self._entries[ip_bytes(ip)].expires

    def pending(self, ip: Address) -> int:
        """Packets held for ``ip`` while it is being resolved."""
        p = self._pending.get(ip_bytes(ip))
        return len(p.held) if p else 0

    def entries(self) -> dict[bytes, bytes]:
        """The resolved entries, {IPv4 (4 bytes): MAC}, expired ones included until purged."""
        return {ip: e.mac for ip, e in self._entries.items()}

    def stats(self) -> dict[str, int]:
        """Counters, netstat style (a copy)."""
        return dict(self._stats)

    # -- sending -------------------------------------------------------------

    def resolve(self, ip: Address, outgoing: Outgoing) -> list[bytes]:
        """Frames to send for ``outgoing`` to next hop ``ip``.

        Resolved: the packet framed for its MAC. Unresolved: the packet is
        held and the answer is an ARP request when one is due (the first at
        once, then at most one per ``request_interval``), else nothing.
        """
        key = ip_bytes(ip)
        mac = self.lookup(key)
        if mac is not None:
            return [self._frame(outgoing, mac)]
        now = self._clock()
        pend = self._pending.get(key)
        if pend is None:
            if len(self._pending) >= self.max_entries:
                self._stats["arp_pending_full"] += 1
                return []
            pend = self._pending[key] = _Pending()
        if len(pend.held) >= self.max_pending_per_ip:
            pend.held.popleft()
            self._stats["arp_hold_overflow"] += 1
        pend.held.append(outgoing)
        self._stats["arp_held"] += 1
        if pend.requests == 0 or (pend.requests < self.max_requests
                                  and now - pend.last_request >= self.request_interval):
            return [self._request(key, pend, now)]
        return []

    def tick(self) -> list[bytes]:
        """Run the timers: repeat due requests, give up on unresolved addresses, purge expired entries."""
        now = self._clock()
        out = []
        for key, pend in list(self._pending.items()):
            if now - pend.last_request < self.request_interval:
                continue
            if pend.requests < self.max_requests:
                out.append(self._request(key, pend, now))
            else:
                # RFC 1122 2.3.2.2: held packets of an address that never answers are discarded.
                self._stats["arp_unresolved"] += len(pend.held)
                del self._pending[key]
        for key in [k for k, e in self._entries.items() if now >= e.expires]:
            del self._entries[key]
            self.generation += 1
            self._stats["arp_expired"] += 1
        return out

    def announce(self) -> bytes:
        """A gratuitous ARP request for our own address (RFC 5227 3), to refresh neighbours' caches."""
        return ethernet(BROADCAST_MAC, self.my_mac, ETH_P_ARP,
                        arp(ARP_REQUEST, self.my_mac, self.my_ip, ZERO_MAC, self.my_ip))

    # -- receiving -----------------------------------------------------------

    def input(self, frame_or_row: FrameOrRow) -> list[bytes]:
        """Handle a received ARP frame (bytes, or its parsed row); returns the frames to send."""
        row = as_row(frame_or_row)
        status = int(row["status"])
        if status != Status.OK or int(row["ethertype"]) != ETH_P_ARP:
            self._stats["arp_malformed"] += 1
            return []
        op = int(row["arp_op"])
        sha = row["arp_sha"].tobytes()
        spa = row["src"].tobytes()[12:]
        tpa = row["dst"].tobytes()[12:]
        self._stats["arp_requests_received" if op == ARP_REQUEST else "arp_replies_received"] += 1
        if sha[0] & 1:
            # A multicast or broadcast sender address would poison the cache.
            self._stats["arp_bad_sender"] += 1
            return []
        if spa == self.my_ip:
            if sha != self.my_mac:
                # Someone else claims our address (RFC 5227 2.4); never learn it.
                self._stats["arp_conflict"] += 1
            return []
        if spa == tpa:
            self._stats["arp_gratuitous"] += 1
        out: list[bytes] = []
        # RFC 826 "Packet Reception": update the sender if known (merge), ...
        merge = False
        if spa != ZERO_IP and spa in self._entries:
            out += self._learn(spa, sha)
            merge = True
        if tpa != self.my_ip:
            if not merge:
                self._stats["arp_not_for_us"] += 1
            return out
        # ... add it if the packet is for us, and answer a request.
        if not merge and spa != ZERO_IP:
            out += self._learn(spa, sha)
        if op == ARP_REQUEST:
            # An RFC 5227 probe (sender 0.0.0.0) is answered too: that is how the prober sees the conflict.
            out.append(ethernet(sha, self.my_mac, ETH_P_ARP,
                                arp(ARP_REPLY, self.my_mac, self.my_ip, sha, spa), vlan=row_vlan(row)))
            self._stats["arp_replies_sent"] += 1
        return out

    # -- internals -----------------------------------------------------------

    def _learn(self, ip: bytes, mac: bytes) -> list[bytes]:
        """Record ip -> mac, and release the packets held for ip framed for mac."""
        expires = self._clock() + self.timeout
        entry = self._entries.get(ip)
        self.generation += 1
        if entry is not None:
            self._stats["arp_updated"] += 1
            entry.mac, entry.expires = mac, expires
            self._entries.move_to_end(ip)
        else:
            if len(self._entries) >= self.max_entries:
                self._entries.popitem(last=False)
                self._stats["arp_evicted"] += 1
            self._entries[ip] = _Entry(mac, expires)
            self._stats["arp_learned"] += 1
        pend = self._pending.pop(ip, None)
        if pend is None:
            return []
        self._stats["arp_released"] += len(pend.held)
        return [self._frame(o, mac) for o in pend.held]

    def _request(self, ip: bytes, pend: _Pending, now: float) -> bytes:
        pend.requests += 1
        pend.last_request = now
        self._stats["arp_requests_sent"] += 1
        return ethernet(BROADCAST_MAC, self.my_mac, ETH_P_ARP,
                        arp(ARP_REQUEST, self.my_mac, self.my_ip, ZERO_MAC, ip))

    def _frame(self, outgoing: Outgoing, mac: bytes) -> bytes:
        if callable(outgoing):
            return outgoing(mac)
        return ethernet(mac, self.my_mac, ETH_P_IP, bytes(outgoing))
