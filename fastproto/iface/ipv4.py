"""The stack's IPv4 for no socket in particular: ARP, ICMP (RFC 792, RFC 1122
3.2.2), fragment reassembly (RFC 791 3.2), raw IP sockets (``rip_input``),
routing on the one link and IPv4 output with ARP resolution (RFC 826).

:class:`StackIpv4` holds these methods of :class:`fastproto.stack.Stack`,
which inherits them; they work on the stack's own state.
"""
from __future__ import annotations

import errno
import ipaddress
import struct
from typing import Any, Optional, Sequence

from fastproto._core.parse import Flag
from fastproto.proto.icmp import (IcmpRejected, dest_unreachable, echo_reply_packet,
                                  icmp_checksum_bad, parse_icmp_error)
from fastproto.proto.reassembly import fragment_ipv4, ipv4_fragment
from fastproto.socket import RawSocket, _oserror
from fastproto.wire.ethernet import ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, ethernet
from fastproto.wire.ip import ipv4 as ipv4_packet

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
_BROADCAST_MAC = b"\xff" * 6
_ANY = "0.0.0.0"
# ICMP Destination Unreachable codes (RFC 792) and the errno a connected socket sees.
_UNREACH_ERRNO = {0: errno.ENETUNREACH, 1: errno.EHOSTUNREACH, 2: errno.ECONNREFUSED,
                  3: errno.ECONNREFUSED, 4: errno.EMSGSIZE}
_ICMP_PORT_UNREACH = 3
_ICMP_PROTO_UNREACH = 2


class StackIpv4:
    """The IPv4 methods of :class:`~fastproto.stack.Stack` (see the module docstring)."""

    def _for_us(self, dst: bytes) -> bool:
        if len(dst) == 16:
            # Our unicast addresses and the groups we joined (RFC 4861 7.2.1).
            return dst in self._ip6_mine or dst in self._ip6_groups
        return dst == self.ip_bytes or dst == b"\xff\xff\xff\xff" or \
            dst == self.iface.network.broadcast_address.packed

    def _other_input(self, h: int, length: int, row: Any) -> None:
        """A frame for no socket in particular: ARP, ICMP, IPv4 fragments."""
        ethertype = int(row["ethertype"])
        if ethertype == ETH_P_ARP:
            self._count("arp.input")
            with self._arp_lock:
                frames = self.arp.input(row)
            if frames:
                self.interface.transmit(frames)
            return
        if ethertype == ETH_P_IPV6:
            self._ip6_input(h, length, row, False)
            return
        if ethertype != ETH_P_IP:
            self._count("l2.unknown_ethertype")
            return
        packet = self._whole_ip_packet(h, row)
        if packet is None:
            return
        taken = self._rip_input(packet)
        if int(row["proto"]) == IPPROTO_ICMP:
            self._icmp_input(packet)
        elif not taken:
            self._count("ip.proto_unreachable")
            self._send_icmp_unreach(packet, _ICMP_PROTO_UNREACH, self._l2_broadcast(row))

    def _whole_ip_packet(self, h: int, row: Any) -> Optional[bytes]:
        """The IPv4 packet in buffer ``h`` if it is for us and not a fragment;
        None when it was counted as not for us or went to reassembly."""
        if not self._for_us(row["dst"].tobytes()[12:]):
            self._count("ip.not_for_us")
            return None
        packet = self._packet(h, row)
        if int(row["flags"]) & Flag.FRAGMENT:
            self._fragment_input(packet)
            return None
        return packet

    @staticmethod
    def _l2_broadcast(row: Any) -> bool:
        return bool(int(row["flags"]) & (Flag.L2_BROADCAST | Flag.L2_MULTICAST))

    def _send_icmp_unreach(self, packet: bytes, code: int, l2_broadcast: bool = False) -> None:
        """A rate-limited Destination Unreachable about ``packet``; none about a
        broadcast, link-level or subnet-directed (RFC 1122 3.2.2)."""
        if l2_broadcast or packet[16:20] == self.iface.network.broadcast_address.packed:
            self._count("icmp.error_suppressed_to_broadcast")
            return
        with self._icmp_lock:
            allowed = self.icmp_limit.allow()
        if not allowed:
            self._count("icmp.ratelimited")
            return
        try:
            error = dest_unreachable(packet, code, self.ip)
        except IcmpRejected as exc:
            self._count(f"icmp.error_suppressed_{exc.reason}")
            return
        self._count("icmp.dest_unreach_sent")
        self._send_packets(packet[12:16], [error])

    def _fragment_input(self, packet: bytes) -> None:
        try:
            frag = ipv4_fragment(packet)
        except ValueError:
            self._count("ip.fragment_malformed")
            return
        with self._reasm_lock:
            data = self.reassembler.input(frag.src, frag.dst, frag.proto, frag.ident,
                                          frag.offset_bytes, frag.more_fragments, frag.payload,
                                          frag.header if frag.offset_bytes == 0 else None)
        if data is None:
            return
        self._count("ip.reassembled")
        taken = False
        if self._raw:
            taken = self._rip_input(ipv4_packet(frag.src, frag.dst, frag.proto, data,
                                                flags_frag=0))
        if frag.proto == IPPROTO_UDP:
            self._udp_datagram_input(frag.src, frag.dst, data)
        elif frag.proto == IPPROTO_TCP:
            self.tcp.datagram_input(frag.src, frag.dst, data)
        elif frag.proto == IPPROTO_ICMP:
            self._icmp_input(ipv4_packet(frag.src, frag.dst, IPPROTO_ICMP, data, flags_frag=0))
        elif not taken:
            self._count("ip.proto_unreachable")
            self._send_icmp_unreach(ipv4_packet(frag.src, frag.dst, frag.proto, data,
                                                flags_frag=0), _ICMP_PROTO_UNREACH)

    def _rip_input(self, packet: bytes) -> bool:
        """rip_input: a copy of a whole IPv4 ``packet`` (header included) to each
        raw socket of its protocol whose bound and connected addresses match;
        True if one took it."""
        raws = self._raw
        if not raws:
            return False
        proto = packet[9]
        src = str(ipaddress.IPv4Address(packet[12:16]))
        dst = str(ipaddress.IPv4Address(packet[16:20]))
        taken = False
        for raw in raws:
            if raw.proto != proto or raw._closed:
                continue
            if raw._laddr != _ANY and raw._laddr != dst:
                continue
            if raw._peer is not None and raw._peer[0] != src:
                continue
            raw._deliver([(packet, (src, 0))])
            taken = True
        if taken:
            self._count("raw.input")
        return taken

    def _icmp_input(self, packet: bytes) -> None:
        """An ICMP message to us (RFC 792, RFC 1122 3.2.2)."""
        ihl = (packet[0] & 0x0F) * 4
        message = packet[ihl:]
        if len(message) < 8:
            self._count("icmp.truncated")
            return
        kind = message[0]
        if kind == 8:
            self._count("icmp.echo_requests")
            try:
                reply = echo_reply_packet(packet, self.ip)
            except IcmpRejected as exc:
                self._count(f"icmp.echo_rejected_{exc.reason}")
                return
            self._count("icmp.echo_replies_sent")
            self._send_ip(packet[12:16], IPPROTO_ICMP, reply[20:])
            return
        if icmp_checksum_bad(message):
            self._count("icmp.bad_checksum")
            return
        if kind == 0:
            ident, seq = struct.unpack_from("!HH", message, 4)
            waiter = self._pings.pop((ident, seq), None)
            if waiter is None:
                self._count("icmp.echo_reply_unexpected")
                return
            self._count("icmp.echo_replies_received")
            waiter[1] = self.clock()
            waiter[0].set()
            return
        try:
            err = parse_icmp_error(message, 4)
        except IcmpRejected as exc:
            self._count(f"icmp.rejected_{exc.reason}")
            return
        self._count("icmp.errors_received")
        if err.proto != IPPROTO_UDP or err.src != self.ip_bytes:
            self._count("icmp.errors_not_udp")
            return
        sid = self.table.lookup(IPPROTO_UDP, err.src, err.sport, err.dst, err.dport)
        sock = self._socks.get(sid) if sid is not None else None
        code = _UNREACH_ERRNO.get(err.code) if err.type == 3 else None
        # RFC 1122 4.1.3.3: pass errors to the application; like BSD and Linux,
        # only a connected socket hears of them (the error names its one peer).
        if sock is None or sock._peer is None or code is None:
            self._count("icmp.errors_ignored")
            return
        self._count("icmp.errors_delivered")
        sock._set_error(code)

    def _raw_bind(self, sock: RawSocket, host: str) -> None:
        if host not in (_ANY, self.ip):
            raise _oserror(errno.EADDRNOTAVAIL)
        sock._laddr = host

    def _raw_connect(self, sock: RawSocket, host: str) -> None:
        self._check_route(host)
        sock._peer = (host, 0)

    def _raw_output(self, sock: RawSocket, host: str, payload: bytes) -> None:
        self._check_route(host)
        self._count("raw.sent")
        self._send_ip(ipaddress.IPv4Address(host).packed, sock.proto, payload)

    def _raw_close(self, sock: RawSocket) -> None:
        with self._ports_lock:
            self._raw = tuple(r for r in self._raw if r is not sock)
        with self._demux_lock:
            self._free_ids.append(sock.id)

    def _check_route(self, host: str) -> None:
        if ":" in host:
            self._check_route6(host)
            return
        addr = ipaddress.IPv4Address(host)
        if addr not in self.iface.network and host != "255.255.255.255":
            # One interface and no gateway: only the attached network is reachable.
            self._count("ip.no_route")
            raise _oserror(errno.ENETUNREACH)

    def _route(self, host: str) -> tuple[bytes, bool]:
        """``(packed address, broadcast?)`` for IPv4
        destination ``host`` once it is known to be routable (raising as
        ``_check_route`` does otherwise), remembered for the next datagrams."""
        self._check_route(host)
        dst = ipaddress.IPv4Address(host).packed
        route = (dst, host in ("255.255.255.255", self.broadcast))
        if len(self._routes) >= 4096:
            self._routes.clear()
        self._routes[host] = route
        return route

    def _send_ip(self, dst: bytes, proto: int, payload: bytes) -> None:
        """Send ``payload`` to ``dst`` as one IPv4 datagram, in fragments above the MTU."""
        packets = fragment_ipv4(self.ip_bytes, dst, proto, payload, self.mtu,
                                next(self._ident) & 0xFFFF)
        if len(packets) > 1:
            self._count("ip.fragments_sent", len(packets))
        self._send_packets(dst, packets)

    def _send_packets(self, dst: bytes, packets: Sequence[bytes]) -> None:
        """Frame IPv4 packets for next hop ``dst`` (ARP, packets held while it
        resolves) and transmit them."""
        self._count("ip.out_packets", len(packets))
        if dst == b"\xff\xff\xff\xff" or dst == self.iface.network.broadcast_address.packed:
            frames = [ethernet(_BROADCAST_MAC, self.mac, ETH_P_IP, p) for p in packets]
        else:
            frames = []
            with self._arp_lock:
                for p in packets:
                    frames += self.arp.resolve(dst, p)
        if frames:
            self.interface.transmit(frames)
