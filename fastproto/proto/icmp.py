"""ICMP and ICMPv6: echo replies and error messages (RFC 792, RFC 1122 3.2.2,
RFC 1812 4.3.2, RFC 4443).

Rejections raise :class:`IcmpRejected` whose ``reason`` is a short counter
name: the stack counts it rather than dropping silently.
"""
from __future__ import annotations

import struct
from typing import NamedTuple

from fastproto._core.parse import Flag, Status
from fastproto.checksum import internet_checksum, pseudo_header_sum
from fastproto.proto._frames import as_row, row_vlan
from fastproto.wire.ethernet import ethernet, mac_bytes
from fastproto.wire.icmp import (
    ICMP_DEST_UNREACH, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, ICMP_PARAMETER_PROBLEM,
    ICMP_REDIRECT, ICMP_SOURCE_QUENCH, ICMP_TIME_EXCEEDED, ICMPV6_DEST_UNREACH,
    ICMPV6_ECHO_REPLY, ICMPV6_ECHO_REQUEST, ICMPV6_PACKET_TOO_BIG, ICMPV6_PARAMETER_PROBLEM,
    ICMPV6_TIME_EXCEEDED, icmp_message, icmpv6_message,
)
from fastproto.wire.ip import Address, ip_bytes, ipv4, ipv6

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58
IPPROTO_SCTP = 132
IPPROTO_UDPLITE = 136

#: the largest ICMPv4 error datagram (RFC 1812 4.3.2.3)
ICMP_ERROR_MAX = 576
#: the largest ICMPv6 error packet: the minimum MTU (RFC 4443 2.4(c))
ICMPV6_ERROR_MAX = 1280

_ICMP_ERROR_TYPES = {ICMP_DEST_UNREACH, ICMP_SOURCE_QUENCH, ICMP_REDIRECT, ICMP_TIME_EXCEEDED,
                     ICMP_PARAMETER_PROBLEM}
# Extension headers walked to find the upper layer of a quoted IPv6 packet (RFC 8200 4).
_IPV6_EXT = {0, 43, 60}
_PORTED = {IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP, IPPROTO_UDPLITE}


class IcmpRejected(ValueError):
    """A message not answered or not sent; ``reason`` names the counter."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class IcmpError(NamedTuple):
    """A received ICMP/ICMPv6 error and the 5-tuple of the packet it quotes (our packet:
    ``src`` is our address). ``info`` is the 32-bit word after the checksum (the MTU of a
    Fragmentation Needed / Packet Too Big, the pointer of a Parameter Problem).
    Ports are 0 when the quoted protocol has none or the quote is too short."""
    version: int
    type: int
    code: int
    info: int
    src: bytes
    dst: bytes
    proto: int
    sport: int
    dport: int


# -- echo --------------------------------------------------------------------

def echo_reply_packet(packet: bytes, my_address: Address | None = None, ttl: int = 64) -> bytes:
    """The IP packet answering an ICMP Echo Request / ICMPv6 Echo Request ``packet``
    (RFC 792, RFC 1122 3.2.2.6, RFC 4443 4.2): addresses swapped, same identifier,
    sequence and data. A request to a broadcast or multicast address is answered from
    ``my_address`` (RFC 1122 3.2.2.6, RFC 4443 4.2); without it the request is rejected.
    IPv4 options are not reflected."""
    if len(packet) < 1:
        raise IcmpRejected("truncated")
    version = packet[0] >> 4
    if version == 4:
        if len(packet) < 20:
            raise IcmpRejected("truncated")
        ihl = (packet[0] & 0x0F) * 4
        total = struct.unpack_from("!H", packet, 2)[0]
        if ihl < 20 or total < ihl + 8 or total > len(packet):
            raise IcmpRejected("truncated")
        if packet[9] != IPPROTO_ICMP:
            raise IcmpRejected("not_icmp")
        ff = struct.unpack_from("!H", packet, 6)[0]
        if ff & 0x3FFF:
            raise IcmpRejected("fragment")
        message = bytes(packet[ihl:total])
        if message[0] != ICMP_ECHO_REQUEST:
            raise IcmpRejected("not_echo_request")
        if icmp_checksum_bad(message):
            raise IcmpRejected("bad_checksum")
        src, dst = packet[12:16], packet[16:20]
        reply_src = dst
        if _v4_not_unicast(dst):
            if my_address is None:
                raise IcmpRejected("broadcast_echo")
            reply_src = ip_bytes(my_address)
        reply = icmp_message(ICMP_ECHO_REPLY, 0, struct.unpack_from("!I", message, 4)[0],
                             message[8:])
        return ipv4(reply_src, src, IPPROTO_ICMP, reply, ttl=ttl, flags_frag=0)
    if version == 6:
        if len(packet) < 48:
            raise IcmpRejected("truncated")
        plen = struct.unpack_from("!H", packet, 4)[0]
        if 40 + plen > len(packet) or plen < 8:
            raise IcmpRejected("truncated")
        if packet[6] != IPPROTO_ICMPV6:
            raise IcmpRejected("not_icmp")
        src, dst = bytes(packet[8:24]), bytes(packet[24:40])
        message = bytes(packet[40:40 + plen])
        if message[0] != ICMPV6_ECHO_REQUEST:
            raise IcmpRejected("not_echo_request")
        if icmpv6_checksum_bad(src, dst, message):
            raise IcmpRejected("bad_checksum")
        reply_src = dst
        if dst[0] == 0xFF:
            if my_address is None:
                raise IcmpRejected("multicast_echo")
            reply_src = ip_bytes(my_address)
        reply = icmpv6_message(reply_src, src, ICMPV6_ECHO_REPLY, 0,
                               struct.unpack_from("!I", message, 4)[0], message[8:])
        return ipv6(reply_src, src, IPPROTO_ICMPV6, reply, hop_limit=ttl)
    raise IcmpRejected("bad_version")


def echo_reply(frame: bytes, my_mac: str | bytes | None = None,
               my_address: Address | None = None) -> bytes:
    """The Ethernet frame answering an echo request frame: MACs swapped, same VLAN, the IP
    packet from :func:`echo_reply_packet`. A request sent to a multicast or broadcast MAC
    is answered from ``my_mac`` (required then, as is ``my_address``)."""
    row = as_row(bytes(frame))
    if int(row["status"]) != Status.OK:
        raise IcmpRejected("malformed")
    if not int(row["flags"]) & Flag.ICMP_ECHO:
        raise IcmpRejected("not_echo_request")
    src_mac = row["dst_mac"].tobytes()
    if src_mac[0] & 1:
        if my_mac is None:
            raise IcmpRejected("multicast_echo")
        src_mac = mac_bytes(my_mac)
    l3 = int(row["l3_off"])
    reply = echo_reply_packet(bytes(frame[l3:]), my_address)
    return ethernet(row["src_mac"].tobytes(), src_mac, int(row["ethertype"]), reply,
                    vlan=row_vlan(row))


# -- errors ------------------------------------------------------------------

def error_suppressed(packet: bytes, link_broadcast: bool = False,
                     v6_exception: bool = False) -> str | None:
    """Why no ICMP error may be sent about ``packet``, or None if one may.

    IPv4 (RFC 1122 3.2.2, RFC 1812 4.3.2.7): not about an ICMP error, a
    datagram to a broadcast or multicast address or a link-layer broadcast, a
    non-first fragment, or a source that is not one host. IPv6 (RFC 4443
    2.4(e)): not about an ICMPv6 error, a multicast destination or link-layer
    multicast (except Packet Too Big and Parameter Problem code 2:
    ``v6_exception``), or an unspecified/multicast source.
    """
    if len(packet) < 1:
        return "truncated"
    version = packet[0] >> 4
    if version == 4:
        if len(packet) < 20:
            return "truncated"
        ihl = (packet[0] & 0x0F) * 4
        if ihl < 20 or len(packet) < ihl:
            return "truncated"
        src, dst = packet[12:16], packet[16:20]
        if link_broadcast or _v4_not_unicast(dst):
            return "to_broadcast"
        if _v4_not_unicast(src) or src[0] in (0, 127):
            return "bad_source"
        if struct.unpack_from("!H", packet, 6)[0] & 0x1FFF:
            return "non_first_fragment"
        if packet[9] == IPPROTO_ICMP:
            if len(packet) < ihl + 1:
                return "truncated"
            if packet[ihl] in _ICMP_ERROR_TYPES:
                return "about_icmp_error"
        return None
    if version == 6:
        if len(packet) < 40:
            return "truncated"
        src, dst = packet[8:24], packet[24:40]
        if (link_broadcast or dst[0] == 0xFF) and not v6_exception:
            return "to_multicast"
        if src[0] == 0xFF or src == bytes(16):
            return "bad_source"
        proto, off, _, _ = _ipv6_upper(packet)
        if proto == IPPROTO_ICMPV6 and off is not None:
            if off < len(packet) and packet[off] < 128:
                return "about_icmp_error"
        return None
    return "bad_version"


def icmp_error(packet: bytes, kind: int, code: int, src: Address, info: int = 0,
               link_broadcast: bool = False, ttl: int = 64) -> bytes:
    """An ICMP (IPv4 ``packet``) or ICMPv6 (IPv6 ``packet``) error about ``packet`` from ``src``.

    The quote is as much of ``packet`` as keeps the error within 576 bytes
    (IPv4, RFC 1812 4.3.2.3; at least the header and 8 bytes, RFC 792) or
    1280 bytes (IPv6, RFC 4443 2.4(c)). Raises IcmpRejected when the rules
    forbid an error (see :func:`error_suppressed`).
    """
    version = packet[0] >> 4 if packet else 0
    v6_exception = version == 6 and (kind == ICMPV6_PACKET_TOO_BIG or
                                      (kind == ICMPV6_PARAMETER_PROBLEM and code == 2))
    reason = error_suppressed(packet, link_broadcast, v6_exception)
    if reason is not None:
        raise IcmpRejected(reason)
    if version == 4:
        total = struct.unpack_from("!H", packet, 2)[0]
        quote = bytes(packet[:min(total, len(packet), ICMP_ERROR_MAX - 28)])
        return ipv4(src, packet[12:16], IPPROTO_ICMP, icmp_message(kind, code, info, quote),
                    ttl=ttl, flags_frag=0)
    plen = struct.unpack_from("!H", packet, 4)[0]
    quote = bytes(packet[:min(40 + plen, len(packet), ICMPV6_ERROR_MAX - 48)])
    dst = bytes(packet[8:24])
    return ipv6(src, dst, IPPROTO_ICMPV6, icmpv6_message(src, dst, kind, code, info, quote),
                hop_limit=ttl)


def dest_unreachable(packet: bytes, code: int, src: Address, mtu: int = 0,
                     link_broadcast: bool = False) -> bytes:
    """Destination Unreachable about ``packet`` (ICMP type 3, RFC 792; ICMPv6 type 1,
    RFC 4443 3.1). Codes are per family: port unreachable is 3 for IPv4, 4 for IPv6.
    ``mtu`` is the next-hop MTU of IPv4 code 4 (RFC 1191 4)."""
    v6 = bool(packet) and packet[0] >> 4 == 6
    return icmp_error(packet, ICMPV6_DEST_UNREACH if v6 else ICMP_DEST_UNREACH, code, src,
                      0 if v6 else (mtu & 0xFFFF), link_broadcast)


def time_exceeded(packet: bytes, code: int, src: Address, link_broadcast: bool = False) -> bytes:
    """Time Exceeded (ICMP 11, ICMPv6 3); code 1 is "fragment reassembly time exceeded"
    (quote the first fragment: :class:`fastproto.proto.reassembly.Expired`)."""
    v6 = bool(packet) and packet[0] >> 4 == 6
    return icmp_error(packet, ICMPV6_TIME_EXCEEDED if v6 else ICMP_TIME_EXCEEDED, code, src,
                      0, link_broadcast)


def packet_too_big(packet: bytes, mtu: int, src: Address) -> bytes:
    """ICMPv6 Packet Too Big (RFC 4443 3.2), sent even about multicast packets."""
    if not packet or packet[0] >> 4 != 6:
        raise IcmpRejected("bad_version")
    return icmp_error(packet, ICMPV6_PACKET_TOO_BIG, 0, src, mtu)


def parse_icmp_error(message: bytes, version: int | None = None) -> IcmpError:
    """The type, code and quoted 5-tuple of a received ICMP or ICMPv6 error ``message``
    (starting at the ICMP header), so it can be delivered to the matching socket
    (RFC 1122 3.2.2, RFC 4443 2.4(d)). The family is the quoted header's version
    unless ``version`` is given. Raises IcmpRejected for a non-error or a short quote."""
    if len(message) < 8 + 20:
        raise IcmpRejected("truncated")
    kind, code = message[0], message[1]
    info = struct.unpack_from("!I", message, 4)[0]
    inner = bytes(message[8:])
    v = inner[0] >> 4 if version is None else version
    if v == 4:
        if kind not in _ICMP_ERROR_TYPES:
            raise IcmpRejected("not_an_error")
        ihl = (inner[0] & 0x0F) * 4
        if inner[0] >> 4 != 4 or ihl < 20 or len(inner) < ihl:
            raise IcmpRejected("bad_quote")
        proto = inner[9]
        sport = dport = 0
        later = struct.unpack_from("!H", inner, 6)[0] & 0x1FFF
        if proto in _PORTED and not later and len(inner) >= ihl + 4:
            sport, dport = struct.unpack_from("!HH", inner, ihl)
        return IcmpError(4, kind, code, info, inner[12:16], inner[16:20], proto, sport, dport)
    if v == 6:
        if kind >= 128:
            raise IcmpRejected("not_an_error")
        if len(inner) < 40 or inner[0] >> 4 != 6:
            raise IcmpRejected("bad_quote")
        proto, off, _, _ = _ipv6_upper(inner)
        sport = dport = 0
        if proto in _PORTED and off is not None and len(inner) >= off + 4:
            sport, dport = struct.unpack_from("!HH", inner, off)
        return IcmpError(6, kind, code, info, inner[8:24], inner[24:40], proto, sport, dport)
    raise IcmpRejected("bad_quote")


def icmp_checksum_bad(message: bytes) -> bool:
    """True when an ICMP message's checksum does not verify."""
    return internet_checksum(message) != 0


def icmpv6_checksum_bad(src: bytes, dst: bytes, message: bytes) -> bool:
    """True when an ICMPv6 message's checksum (with the pseudo-header) does not verify."""
    return internet_checksum(message, pseudo_header_sum(src, dst, IPPROTO_ICMPV6,
                                                         len(message))) != 0


def _v4_not_unicast(addr: bytes) -> bool:
    # Multicast and class E (224/3), and the limited broadcast. Directed (subnet) broadcasts
    # depend on the interface's prefix, which the caller knows: it passes link_broadcast.
    return addr[0] >= 224


def _ipv6_upper(packet: bytes) -> tuple[int, int | None, int, bool]:
    """(upper-layer protocol, its offset or None if not reachable, fragment offset, M)."""
    nh, off = packet[6], 40
    frag_off, more = 0, False
    for _ in range(8):
        if nh in _IPV6_EXT:
            if len(packet) < off + 2:
                return nh, None, frag_off, more
            nh, off = packet[off], off + (packet[off + 1] + 1) * 8
        elif nh == 44:
            if len(packet) < off + 8:
                return nh, None, frag_off, more
            offm = struct.unpack_from("!H", packet, off + 2)[0]
            frag_off, more = offm & 0xFFF8, bool(offm & 1)
            nh, off = packet[off], off + 8
            if frag_off:
                return nh, None, frag_off, more
        elif nh == 51:
            if len(packet) < off + 2:
                return nh, None, frag_off, more
            nh, off = packet[off], off + (packet[off + 1] + 2) * 4
        else:
            return nh, off, frag_off, more
    return nh, None, frag_off, more


__all__ = ["IcmpRejected", "IcmpError", "echo_reply", "echo_reply_packet", "error_suppressed",
           "icmp_error", "dest_unreachable", "time_exceeded", "packet_too_big", "parse_icmp_error"]
