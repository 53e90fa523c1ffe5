"""The stack's IPv6 (RFC 8200): our addresses and groups, Neighbor Discovery
(RFC 4861), ICMPv6 (RFC 4443), fragment reassembly, IPv6 output, and UDP
over IPv6 sockets.

:class:`StackIpv6` holds these methods of :class:`fastproto.stack.Stack`,
which inherits them; they work on the stack's own state.
"""
from __future__ import annotations

import errno
import ipaddress
import itertools
import os
import struct
import threading
from typing import Any, Callable, Optional, Sequence

from fastproto._core.parse import Flag
from fastproto._core.pcq import PCQ
from fastproto.checksum import internet_checksum, pseudo_header_sum
from fastproto.iface.ipv4 import IPPROTO_TCP, IPPROTO_UDP
from fastproto.proto.icmp import (IcmpRejected, error_suppressed, icmp_error, icmpv6_checksum_bad,
                                  parse_icmp_error)
from fastproto.proto.ndp import ALL_NODES, NeighborCache
from fastproto.proto.ratelimit import TokenBucket
from fastproto.proto.reassembly import fragment_ipv6, ipv6_fragment
from fastproto.socket import _ANY6, SOCK_DGRAM, UDP6Socket, UDPSocket, _oserror
from fastproto.wire.ethernet import ETH_P_IPV6, ethernet
from fastproto.wire.icmp import (ICMPV6_DEST_UNREACH, ICMPV6_PARAMETER_PROBLEM, icmpv6_message,
                                 ipv6_multicast_mac, solicited_node)
from fastproto.wire.ip import ipv6 as ipv6_packet
from fastproto.wire.ip import link_local_address
from fastproto.wire.l4 import udp

IPPROTO_ICMPV6 = 58
IPPROTO_NONE = 59
# ICMPv6 errors a connected UDP socket hears of, as Linux reports them (the "hard"
# errors of RFC 4443 3.1 and 3.4): (type, code or None for any) -> errno.
_ICMP6_ERRNO = {(1, 1): errno.EACCES, (1, 4): errno.ECONNREFUSED, (1, 5): errno.EACCES,
                (1, 6): errno.EACCES, (4, None): errno.EPROTO}
_ICMP6_TYPE_NAMES = {1: "dest_unreach", 2: "pkt_too_big", 3: "time_exceeded",
                     4: "param_problem"}
# Extension headers whose first byte is the Next Header field (RFC 8200 4).
_IPV6_EXT_HEADERS = {0: 8, 43: 8, 44: 8, 51: 4, 60: 8}
#: the interface index reported as the scope id of link-local addresses
IPV6_SCOPE_ID = 1


class StackIpv6:
    """The IPv6 methods of :class:`~fastproto.stack.Stack` (see the module docstring)."""

    def _ip6_setup(self, ipv6: Optional[str], clock: Callable[[], float], icmp_rate: float,
                   icmp_burst: int) -> None:
        """The IPv6 side of the constructor: our addresses, the groups we join, the
        Neighbor Cache.  With ``ipv6`` None, IPv6 stays off."""
        self.iface6: Optional[ipaddress.IPv6Interface] = None
        self.ip6: Optional[str] = None
        self.ip6_bytes = b""
        #: the link-local address (fe80::/64, modified EUI-64 of the MAC)
        self.ll6: Optional[str] = None
        self.ll6_bytes = b""
        self.nd: Optional[NeighborCache] = None
        self._ip6_mine: frozenset[bytes] = frozenset()
        self._ip6_groups: frozenset[bytes] = frozenset()
        self._ip6_group_macs: frozenset[bytes] = frozenset()
        self._nd_lock = threading.Lock()
        self._binds6: dict[int, list[UDPSocket]] = {}
        self._ident6 = itertools.count(int.from_bytes(os.urandom(4), "big"))
        self.icmp6_limit = TokenBucket(icmp_rate, icmp_burst, clock=clock)
        if ipv6 is None:
            return
        iface6 = ipaddress.IPv6Interface(ipv6)
        ip = iface6.ip
        if ip.is_multicast or ip.is_unspecified or ip.is_loopback or ip.ipv4_mapped is not None:
            raise ValueError(f"{ip} cannot be an interface's unicast address")
        if self.mtu < 1280:
            # RFC 8200 5: every link carrying IPv6 has an MTU of at least 1280.
            raise ValueError(f"IPv6 needs an MTU of at least 1280, the interface has {self.mtu}")
        self.iface6 = iface6
        self.ip6 = str(ip)
        self.ip6_bytes = ip.packed
        self.ll6_bytes = link_local_address(self.mac)
        self.ll6 = str(ipaddress.IPv6Address(self.ll6_bytes))
        mine = [self.ip6_bytes] + ([self.ll6_bytes] if self.ll6_bytes != self.ip6_bytes else [])
        self._ip6_mine = frozenset(mine)
        # RFC 4861 7.2.1, RFC 4291 2.8: a node joins the all-nodes group and the
        # solicited-node group of each of its addresses; the NIC takes their
        # 33:33:xx:xx:xx:xx frames (RFC 2464 7).
        groups = {ALL_NODES} | {solicited_node(a) for a in mine}
        self._ip6_groups = frozenset(groups)
        self._ip6_group_macs = frozenset(ipv6_multicast_mac(g) for g in groups)
        self._udp_accept = None  # the accepted destinations changed
        # 64 held packets per neighbour: enough for the fragments of the largest datagram.
        self.nd = NeighborCache(self.mac, mine, clock=clock, max_pending_per_ip=64)

    def _source6(self, dst: bytes) -> bytes:
        """Our source address for ``dst``: the one of the same scope (RFC 6724 5, rule 2)."""
        if _link_scope(dst) or (dst[0] == 0xFF and dst[1] & 0x0F == 2):
            return self.ll6_bytes
        return self.ip6_bytes

    def _sockaddr6(self, host: str, port: int) -> tuple[str, int, int, int]:
        """An AF_INET6 socket address as Python gives it: (host, port, flowinfo, scope_id)."""
        scope = IPV6_SCOPE_ID if _link_scope(ipaddress.IPv6Address(host).packed) else 0
        return host, port, 0, scope

    def _check_route6(self, host: str) -> None:
        if self.iface6 is None:
            self._count("ip6.no_route")
            raise _oserror(errno.ENETUNREACH)
        addr = ipaddress.IPv6Address(host.split("%", 1)[0])
        # One interface, no router: the prefix and link-local scope are on-link
        # (RFC 4861 5.2); link-local multicast goes out on the one link.
        if addr in self.iface6.network or addr.is_link_local or \
                (addr.is_multicast and (addr.packed[1] & 0x0F) == 2):
            return
        self._count("ip6.no_route")
        raise _oserror(errno.ENETUNREACH)

    def _ip6_accepted(self, row: Any) -> bool:
        """Whether an IPv6 frame is for us: to our MAC or a group we joined, to one
        of our addresses or groups, from a source that is not multicast; each
        rejection counted."""
        dst_mac = row["dst_mac"].tobytes()
        if dst_mac != self.mac and dst_mac not in self._ip6_group_macs:
            self._count("ip6.l2_not_for_us")
            return False
        dst = row["dst"].tobytes()
        if dst not in self._ip6_mine and dst not in self._ip6_groups:
            self._count("ip6.not_for_us")
            return False
        if row["src"][0] == 0xFF:
            # RFC 4291 2.7: a multicast address is never a source.
            self._count("ip6.bad_source")
            return False
        return True

    def _ip6_input(self, h: int, length: int, row: Any, unmatched: bool) -> None:
        """An IPv6 frame the demux handed back: ICMPv6 and NDP, fragments, and
        (``unmatched``) UDP or TCP for no socket (RFC 8200 4, RFC 4443 3.1)."""
        if self.nd is None:
            self._count("ip6.unsupported")
            return
        self._count("ip6.in_receives")
        if not self._ip6_accepted(row):
            return
        packet = self._packet(h, row)
        flags = int(row["flags"])
        if flags & Flag.FRAGMENT:
            self._fragment6_input(packet)
            return
        proto = int(row["proto"])
        l2_multicast = bool(flags & (Flag.L2_MULTICAST | Flag.L2_BROADCAST))
        if unmatched:
            if proto == IPPROTO_UDP:
                self._count("udp6.no_port")
                self._send_icmp6_error(packet, ICMPV6_DEST_UNREACH, 4, l2_multicast)
            else:
                self._count("tcp6.no_socket")
                if proto == IPPROTO_TCP and not l2_multicast:
                    self._tcp_reset_for(h, row)
            return
        if proto == IPPROTO_ICMPV6:
            l4 = int(row["l4_off"]) - int(row["l3_off"])
            frame = self.pool.data[h, :length].tobytes() if flags & Flag.NDP else None
            self._icmp6_input(packet, l4, frame)
            return
        if proto == IPPROTO_NONE:
            self._count("ip6.no_next_header")
            return
        # RFC 8200 4: an unrecognised Next Header draws a Parameter Problem, code 1,
        # pointing at that Next Header field.
        self._count("ip6.unknown_next_header")
        self._send_icmp6_error(packet, ICMPV6_PARAMETER_PROBLEM, 1, l2_multicast,
                               _next_header_field(packet))

    def _fragment6_input(self, packet: bytes) -> None:
        """An IPv6 fragment: reassemble (RFC 8200 4.5) and hand the whole datagram on."""
        if packet[6] != 44:
            # Only a Fragment header right after the IPv6 header is reassembled.
            self._count("ip6.fragment_after_ext_header")
            return
        try:
            frag = ipv6_fragment(packet)
        except ValueError:
            self._count("ip6.fragment_malformed")
            return
        with self._reasm_lock:
            data = self.reassembler.input(frag.src, frag.dst, frag.proto, frag.ident,
                                          frag.offset_bytes, frag.more_fragments, frag.payload,
                                          frag.header if frag.offset_bytes == 0 else None)
            proto = self.reassembler.last_proto
        if data is None:
            return
        self._count("ip6.reassembled")
        if proto == IPPROTO_UDP:
            self._udp6_datagram_input(frag.src, frag.dst, data)
        elif proto == IPPROTO_TCP:
            self.tcp.datagram_input(frag.src, frag.dst, data)
        elif proto == IPPROTO_ICMPV6:
            self._icmp6_input(ipv6_packet(frag.src, frag.dst, IPPROTO_ICMPV6, data), 40, None)
        elif proto == IPPROTO_NONE:
            self._count("ip6.no_next_header")
        else:
            self._count("ip6.unknown_next_header")

    def _udp6_datagram_input(self, src: bytes, dst: bytes, segment: bytes) -> None:
        """A reassembled UDP datagram over IPv6: check it and queue it on its socket."""
        if len(segment) < 8:
            self._count("udp6.truncated")
            return
        sport, dport, ulen, csum = struct.unpack_from("!HHHH", segment)
        if ulen != len(segment):
            self._count("udp6.bad_length")
            return
        if csum == 0:
            # RFC 8200 8.1: the UDP checksum is mandatory over IPv6.
            self._count("udp6.zero_checksum")
            return
        if internet_checksum(segment, pseudo_header_sum(src, dst, IPPROTO_UDP, ulen)):
            self._count("udp6.bad_checksum")
            return
        sid = self.table.lookup(IPPROTO_UDP, dst, dport, src, sport)
        sock = self._socks.get(sid) if sid is not None else None
        if sock is None:
            self._count("udp6.no_port")
            self._send_icmp6_error(ipv6_packet(src, dst, IPPROTO_UDP, segment),
                                   ICMPV6_DEST_UNREACH, 4, False)
            return
        # The AF_INET6 4-tuple travels where the AF_INET pair does.
        peer: Any = self._sockaddr6(str(ipaddress.IPv6Address(src)), sport)
        sock._deliver([(segment[8:], peer)])

    def _icmp6_input(self, packet: bytes, l4: int, frame: Optional[bytes]) -> None:
        """An ICMPv6 message to us (RFC 4443, RFC 4861): ``l4`` is its offset in
        ``packet``; ``frame`` the whole frame of a Neighbor Discovery message (None
        when it came in fragments, which NDP never does, RFC 6980 5)."""
        plen = struct.unpack_from("!H", packet, 4)[0]
        message = packet[l4:40 + plen]
        if len(message) < 8:
            self._count("icmp6.truncated")
            return
        src, dst = packet[8:24], packet[24:40]
        if icmpv6_checksum_bad(src, dst, message):
            self._count("icmp6.bad_checksum")
            return
        self._count("icmp6.in_msgs")
        kind = message[0]
        if kind == 128:
            self._count("icmp6.in_echo")
            if src == bytes(16):
                self._count("icmp6.echo_rejected_unspecified_source")
                return
            # RFC 4443 4.2: same identifier, sequence and data; a request to a
            # group is answered from our unicast address of the same scope.
            reply_src = dst if dst in self._ip6_mine else self._source6(src)
            reply = icmpv6_message(reply_src, src, 129, 0, struct.unpack_from("!I", message, 4)[0],
                                   message[8:])
            self._count("icmp6.out_echo_reply")
            self._send_ip6(src, IPPROTO_ICMPV6, reply, reply_src)
            return
        if kind == 129:
            ident, seq = struct.unpack_from("!HH", message, 4)
            waiter = self._pings.pop((ident, seq), None)
            if waiter is None:
                self._count("icmp6.echo_reply_unexpected")
                return
            self._count("icmp6.in_echo_reply")
            waiter[1] = self.clock()
            waiter[0].set()
            return
        if 133 <= kind <= 137:
            self._count("icmp6.in_nd")
            if frame is None:
                self._count("icmp6.nd_fragmented")
                return
            # Hop limit 255, code, length and options are validated there (RFC 4861 7.1).
            with self._nd_lock:
                frames = self.nd.input(frame) if self.nd is not None else []
            if frames:
                self.interface.transmit(frames)
            return
        if kind in (130, 131, 132, 143):
            # Multicast Listener Discovery: we join only link-local groups and answer no queries.
            self._count("icmp6.in_mld_ignored")
            return
        if kind >= 128:
            # RFC 4443 2.4(b): unknown informational messages are discarded.
            self._count("icmp6.in_unknown_informational")
            return
        self._count(f"icmp6.in_{_ICMP6_TYPE_NAMES.get(kind, 'unknown_error')}")
        try:
            err = parse_icmp_error(message, 6)
        except IcmpRejected as exc:
            self._count(f"icmp6.rejected_{exc.reason}")
            return
        if err.proto != IPPROTO_UDP or err.src not in self._ip6_mine:
            self._count("icmp6.errors_not_udp")
            return
        sid = self.table.lookup(IPPROTO_UDP, err.src, err.sport, err.dst, err.dport)
        sock = self._socks.get(sid) if sid is not None else None
        code = _ICMP6_ERRNO.get((err.type, err.code), _ICMP6_ERRNO.get((err.type, None)))
        # RFC 4443 2.4(d), RFC 1122 4.1.3.3: a connected socket hears of it.
        if sock is None or sock._peer is None or code is None:
            self._count("icmp6.errors_ignored")
            return
        self._count("icmp6.errors_delivered")
        sock._set_error(code)

    def _send_icmp6_error(self, packet: bytes, kind: int, code: int, l2_multicast: bool,
                          info: int = 0) -> None:
        """A rate-limited ICMPv6 error about ``packet`` (RFC 4443 2.4(f)); none about
        an ICMPv6 error, a multicast destination or from an unspecified or multicast
        source (RFC 4443 2.4(e))."""
        reason = error_suppressed(packet, l2_multicast)
        if reason is not None:
            self._count(f"icmp6.error_suppressed_{reason}")
            return
        with self._icmp_lock:
            allowed = self.icmp6_limit.allow()
        if not allowed:
            self._count("icmp6.ratelimited")
            return
        dst = packet[24:40]
        src = dst if dst in self._ip6_mine else self._source6(packet[8:24])
        error = icmp_error(packet, kind, code, src, info, l2_multicast)
        self._count(f"icmp6.out_{_ICMP6_TYPE_NAMES[kind]}")
        self._send_ip6_packets(packet[8:24], [error])

    def _send_ip6(self, dst: bytes, proto: int, payload: bytes,
                  src: Optional[bytes] = None) -> None:
        """Send ``payload`` to ``dst`` as one IPv6 packet, in fragments (a Fragment
        header, RFC 8200 4.5) when it does not fit the MTU."""
        if src is None:
            src = self._source6(dst)
        if 40 + len(payload) <= self.mtu:
            packets = [ipv6_packet(src, dst, proto, payload)]
        else:
            packets = fragment_ipv6(src, dst, proto, payload, self.mtu,
                                    next(self._ident6) & 0xFFFFFFFF)
            self._count("ip6.fragments_sent", len(packets))
        self._send_ip6_packets(dst, packets)

    def _send_ip6_packets(self, dst: bytes, packets: Sequence[bytes]) -> None:
        """Frame IPv6 packets for neighbour ``dst`` (Neighbor Discovery; packets held
        while it resolves, RFC 4861 7.2.2) and transmit them."""
        self._count("ip6.out_packets", len(packets))
        if dst[0] == 0xFF:
            mac = ipv6_multicast_mac(dst)
            frames = [ethernet(mac, self.mac, ETH_P_IPV6, p) for p in packets]
        else:
            frames = []
            with self._nd_lock:
                assert self.nd is not None
                for p in packets:
                    frames += self.nd.resolve(dst, p)
        if frames:
            self.interface.transmit(frames)

    def _socket6(self, type: int, proto: int) -> UDP6Socket:
        if self.nd is None:
            # IPv6 is off on this stack.
            raise _oserror(errno.EAFNOSUPPORT)
        if type != SOCK_DGRAM or proto not in (0, IPPROTO_UDP):
            raise _oserror(errno.EPROTONOSUPPORT)
        with self._demux_lock:
            sid = self._new_id()
            sock = UDP6Socket(self, sid, PCQ(self.pcq_len))
            sock._cont = self.dispatch.continuation(sock)
            # Attached before its pcb enters the table (the demux's rule).
            self.demux.attach(sid, sock.pcq)
            self._socks[sid] = sock
        return sock

    def _udp6_output(self, sock: UDPSocket, host: str, port: int, payload: bytes) -> None:
        self._check_route6(host)
        dst = ipaddress.IPv6Address(host).packed
        src = self._source6(dst) if sock._laddr == _ANY6 else \
            ipaddress.IPv6Address(sock._laddr).packed
        self._count("udp6.sent")
        # udp() always computes the checksum, sending a zero as 0xFFFF (RFC 8200 8.1).
        self._send_ip6(dst, IPPROTO_UDP, udp(src, dst, sock._lport, port, payload), src)


def _link_scope(addr: bytes) -> bool:
    """Whether an IPv6 address is link-local unicast, fe80::/10 (RFC 4291 2.5.6)."""
    return addr[0] == 0xFE and addr[1] & 0xC0 == 0x80


def _next_header_field(packet: bytes) -> int:
    """The offset in ``packet`` (IPv6) of the Next Header field naming its upper layer:
    6, or the first byte of the last extension header (RFC 8200 4)."""
    nh, field, off = packet[6], 6, 40
    for _ in range(8):
        unit = _IPV6_EXT_HEADERS.get(nh)
        if unit is None or off + 2 > len(packet):
            break
        step = 8 if nh == 44 else (packet[off + 1] + (2 if nh == 51 else 1)) * unit
        nh, field, off = packet[off], off, off + step
    return field
