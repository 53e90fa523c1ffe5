"""The stack's UDP (RFC 768) for IPv4 and IPv6 sockets: ``udp_input`` (the
socket's protocol input, run by the dispatch model), bind, connect, close,
and output, with one-pass frames built in the core for the common case.

:class:`StackUdp` holds these methods of :class:`fastproto.stack.Stack`,
which inherits them; they work on the stack's own state.
"""
from __future__ import annotations

import errno
import ipaddress
import struct
from typing import Any

from fastproto._core.udp import udp4_frame, udp4_template, udp_take
from fastproto.checksum import internet_checksum, pseudo_header_sum
from fastproto.iface.ipv4 import _ANY, _ICMP_PORT_UNREACH, IPPROTO_UDP
from fastproto.iface.ipv6 import IPV6_SCOPE_ID, _link_scope
from fastproto.socket import AF_INET6, UDPSocket, _oserror, ephemeral_port
from fastproto.tcp_socket import SOCK_STREAM
from fastproto.wire.ip import ipv4 as ipv4_packet
from fastproto.wire.l4 import udp

#: an Ethernet header's length, and the MAC a frame built before ARP resolved carries
_ETH_HEADER = 14
_NO_MAC = bytes(6)


class StackUdp:
    """The UDP methods of :class:`~fastproto.stack.Stack` (see the module docstring)."""

    def _udp_input(self, sock: UDPSocket) -> None:
        """udp_input (udp6_input) for ``sock``: take its PCQ's packets, copy each
        payload and source out, free the buffers, queue the datagrams, wake
        the readers."""
        if sock.type == SOCK_STREAM:
            return sock._protocol_input()
        v6 = sock.family == AF_INET6
        with sock._in_lock:
            if sock._closed:
                return
            raws = self._raw
            raw_udp = not v6 and bool(raws) and any(r.proto == IPPROTO_UDP for r in raws)
            accept = self._udp_accept
            if accept is None:
                accept = self._udp_accept = self._udp_destinations()
            # Per datagram in the core: destination and source checked,
            # payload and source copied out of the buffer (the checksum
            # verified in the same pass), the buffer freed.  This is the hot
            # path: no per-datagram work in Python before naming the sources.
            datagrams, held, nread, drops = udp_take(
                sock.pcq, self.demux.rows, self.pool, sock.pcq.maxlen, raw_udp, accept)
            frags = []
            if held:
                frags = [self._packet(h, self.demux.rows[h]) for h in held]
                self.pool.free_many(held)
            with self._count_lock:
                c = self._c
                c["udp.input_runs"] = c.get("udp.input_runs", 0) + 1
                c["udp.payload_bytes_read"] = c.get("udp.payload_bytes_read", 0) + nread
                if drops:
                    section = "udp6." if v6 else "udp."
                    for reason, n in drops.items():
                        key = section + reason
                        c[key] = c.get(key, 0) + n
                if v6:
                    taken = len(datagrams) + len(held) + (sum(drops.values()) if drops else 0)
                    c["ip6.in_receives"] = c.get("ip6.in_receives", 0) + taken
        names = self._src_names
        items: list[tuple[bytes, Any]] = []
        for d in datagrams:
            name = names.get(d[1])
            if name is None:
                if len(names) >= 4096:
                    names.clear()
                if v6:
                    # RFC 4007 6: a link-local peer is named with its zone.
                    name = names[d[1]] = (str(ipaddress.IPv6Address(d[1])),
                                          IPV6_SCOPE_ID if _link_scope(d[1]) else 0)
                else:
                    name = names[d[1]] = str(ipaddress.IPv4Address(d[1]))
            items.append((d[0], (name[0], d[2], 0, name[1]) if v6 else (name, d[2])))
            if raw_udp:
                self._rip_input(d[3])
        if items:
            sock._deliver(items)
        for packet in frags:
            if v6:
                self._fragment6_input(packet)
            else:
                self._fragment_input(packet)

    def _udp_destinations(self) -> tuple[bytes, bytes, bytes]:
        """What a UDP datagram may be sent to and still be ours, as ``udp_take``
        takes it: our IPv4 address and the broadcasts, our IPv6 addresses and
        groups, and the MACs those arrive on."""
        v4 = self.ip_bytes + b"\xff\xff\xff\xff" + self.iface.network.broadcast_address.packed
        macs = self.mac + b"\xff" * 6 + b"".join(sorted(self._ip6_group_macs))
        v6 = b"".join(sorted(self._ip6_mine | self._ip6_groups))
        return v4, v6, macs

    def _udp_datagram_input(self, src: bytes, dst: bytes, segment: bytes) -> None:
        """A reassembled UDP datagram: check it (RFC 768) and queue it on its socket."""
        if len(segment) < 8:
            self._count("udp.truncated")
            return
        sport, dport, ulen, csum = struct.unpack_from("!HHHH", segment)
        if ulen != len(segment):
            self._count("udp.bad_length")
            return
        if csum and internet_checksum(segment, pseudo_header_sum(src, dst, IPPROTO_UDP, ulen)):
            self._count("udp.bad_checksum")
            return
        sid = self.table.lookup(IPPROTO_UDP, dst, dport, src, sport)
        sock = self._socks.get(sid) if sid is not None else None
        if sock is None:
            self._count("udp.no_port")
            self._send_icmp_unreach(ipv4_packet(src, dst, IPPROTO_UDP, segment, flags_frag=0),
                                    _ICMP_PORT_UNREACH)
            return
        sock._deliver([(segment[8:], (str(ipaddress.IPv4Address(src)), sport))])

    def _udp_bind(self, sock: UDPSocket, host: str, port: int) -> None:
        if not self._is_local(sock.family, host):
            raise _oserror(errno.EADDRNOTAVAIL)
        # IPv4 and IPv6 have separate port spaces (no dual stack).
        binds = self._binds6 if sock.family == AF_INET6 else self._binds
        with self._ports_lock:
            if port == 0:
                port = ephemeral_port(binds.__contains__, errno.EAGAIN)
            for other in binds.get(port, ()):
                if other._laddr == sock._any or host == sock._any or other._laddr == host:
                    raise _oserror(errno.EADDRINUSE)
            self.table.insert(IPPROTO_UDP, host, port, None, 0, sock.id)
            binds.setdefault(port, []).append(sock)
            sock._laddr, sock._lport = host, port

    def _udp_connect(self, sock: UDPSocket, host: str, port: int) -> None:
        self._check_route(host)
        with self._ports_lock:
            old = self._pcb_key(sock)
            # connect() fixes the source address (RFC 1122 4.1.3.4).
            laddr = self._source_address(sock.family, host) if sock._laddr == sock._any \
                else sock._laddr
            self.table.insert(IPPROTO_UDP, laddr, sock._lport, host, port, sock.id)
            self.table.remove(*old)
            sock._laddr, sock._peer = laddr, (host, port)
            sock._error = 0

    def _udp_close(self, sock: UDPSocket) -> None:
        binds = self._binds6 if sock.family == AF_INET6 else self._binds
        with self._ports_lock:
            if sock._lport:
                self.table.remove(*self._pcb_key(sock))
                users = binds.get(sock._lport, [])
                if sock in users:
                    users.remove(sock)
                if not users:
                    binds.pop(sock._lport, None)
        self._release_socket(sock, "udp.closed_drops")

    def _udp_output(self, sock: UDPSocket, host: str, port: int, payload: bytes) -> None:
        route = self._routes.get(host)
        if route is None:
            route = self._route(host)
        dst, broadcast = route
        if broadcast and not sock.broadcast:
            # As in BSD and Linux: broadcasting needs SO_BROADCAST.
            raise _oserror(errno.EACCES, PermissionError)
        laddr = sock._laddr
        if not broadcast and (laddr == _ANY or laddr == self.ip) and \
                28 + len(payload) <= self.mtu:
            self._udp_output_one(sock, dst, port, payload)
            return
        src = self.ip if laddr == _ANY else laddr
        self._count("udp.sent")
        self._send_ip(dst, IPPROTO_UDP, udp(src, dst, sock._lport, port, payload))

    def _udp_output_one(self, sock: UDPSocket, dst: bytes, dport: int, payload: bytes) -> None:
        """One unicast UDP datagram that fits the MTU, from our address: built
        in the core from the socket's header template for this destination
        when the next hop is resolved (else through ``_send_packets``, to wait
        for ARP)."""
        with self._arp_lock:
            mac = self.arp.lookup(dst)
        sport = sock._lport
        ident = next(self._ident) & 0xFFFF
        if mac is None:
            self._count("udp.sent")
            self._send_packets(dst, [udp4_frame(
                udp4_template(_NO_MAC, _NO_MAC, self.ip_bytes, dst, sport, dport),
                payload, ident)[_ETH_HEADER:_ETH_HEADER + 28 + len(payload)]])
            return
        flow = sock._tx_flow
        if flow is None or flow[0] != dst or flow[1] != dport or flow[2] != mac:
            # The headers every datagram of this flow shares, built once.
            flow = sock._tx_flow = (dst, dport, mac,
                                    udp4_template(mac, self.mac, self.ip_bytes, dst, sport, dport))
        frame = udp4_frame(flow[3], payload, ident)
        with self._count_lock:
            c = self._c
            c["udp.sent"] = c.get("udp.sent", 0) + 1
            c["ip.out_packets"] = c.get("ip.out_packets", 0) + 1
        self.interface.transmit((frame,))
