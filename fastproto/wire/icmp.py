"""ICMP error messages (RFC 792, RFC 4443), Neighbor Discovery messages
(RFC 4861 4.3, 4.4, 4.6.1) and the IPv6 Fragment header (RFC 8200 4.5)."""
from __future__ import annotations

import struct

from fastproto.checksum import internet_checksum, pseudo_header_sum
from fastproto.wire.ethernet import mac_bytes
from fastproto.wire.ip import Address, ip_bytes

# ICMP (RFC 792) types.
ICMP_ECHO_REPLY = 0
ICMP_DEST_UNREACH = 3
ICMP_SOURCE_QUENCH = 4
ICMP_REDIRECT = 5
ICMP_ECHO_REQUEST = 8
ICMP_TIME_EXCEEDED = 11
ICMP_PARAMETER_PROBLEM = 12
# ICMPv6 (RFC 4443, RFC 4861) types.
ICMPV6_DEST_UNREACH = 1
ICMPV6_PACKET_TOO_BIG = 2
ICMPV6_TIME_EXCEEDED = 3
ICMPV6_PARAMETER_PROBLEM = 4
ICMPV6_ECHO_REQUEST = 128
ICMPV6_ECHO_REPLY = 129
ND_NEIGHBOR_SOLICIT = 135
ND_NEIGHBOR_ADVERT = 136
# NDP option types (RFC 4861 4.6).
ND_OPT_SOURCE_LLADDR = 1
ND_OPT_TARGET_LLADDR = 2
# Neighbor Advertisement flags (RFC 4861 4.4), in the first 32-bit word after the checksum.
ND_NA_ROUTER = 0x80000000
ND_NA_SOLICITED = 0x40000000
ND_NA_OVERRIDE = 0x20000000

IPPROTO_ICMPV6 = 58
IPPROTO_FRAGMENT = 44


def icmp_message(kind: int, code: int, rest: int, body: bytes) -> bytes:
    """An ICMP (IPv4) message: type, code, checksum, the 32-bit ``rest`` word, ``body``."""
    message = struct.pack("!BBHI", kind, code, 0, rest) + body
    return message[:2] + struct.pack("!H", internet_checksum(message)) + message[4:]


def icmpv6_message(src: Address, dst: Address, kind: int, code: int, rest: int,
                   body: bytes) -> bytes:
    """An ICMPv6 message whose checksum covers the IPv6 pseudo-header (RFC 4443 2.3)."""
    message = struct.pack("!BBHI", kind, code, 0, rest) + body
    csum = internet_checksum(message, pseudo_header_sum(src, dst, IPPROTO_ICMPV6, len(message)))
    return message[:2] + struct.pack("!H", csum) + message[4:]


def nd_lladdr_option(kind: int, mac: str | bytes) -> bytes:
    """A Source/Target Link-Layer Address option for Ethernet (RFC 4861 4.6.1): 8 bytes."""
    return struct.pack("!BB6s", kind, 1, mac_bytes(mac))


def solicited_node(addr: Address) -> bytes:
    """The solicited-node multicast address ff02::1:ffXX:XXXX of ``addr`` (RFC 4291 2.7.1)."""
    return bytes.fromhex("ff0200000000000000000001ff") + ip_bytes(addr)[13:]


def ipv6_multicast_mac(group: Address) -> bytes:
    """The Ethernet address 33:33:xx:xx:xx:xx of an IPv6 multicast group (RFC 2464 7)."""
    return b"\x33\x33" + ip_bytes(group)[12:]


def neighbor_solicit(src: Address, dst: Address, target: Address,
                     source_mac: str | bytes | None) -> bytes:
    """A Neighbor Solicitation (RFC 4861 4.3); ``source_mac`` None omits the option (DAD)."""
    body = ip_bytes(target)
    if source_mac is not None:
        body += nd_lladdr_option(ND_OPT_SOURCE_LLADDR, source_mac)
    return icmpv6_message(src, dst, ND_NEIGHBOR_SOLICIT, 0, 0, body)


def neighbor_advert(src: Address, dst: Address, target: Address, target_mac: str | bytes | None,
                    solicited: bool, override: bool, router: bool = False) -> bytes:
    """A Neighbor Advertisement (RFC 4861 4.4) with a Target Link-Layer Address option."""
    flags = ((ND_NA_ROUTER if router else 0) | (ND_NA_SOLICITED if solicited else 0)
             | (ND_NA_OVERRIDE if override else 0))
    body = ip_bytes(target)
    if target_mac is not None:
        body += nd_lladdr_option(ND_OPT_TARGET_LLADDR, target_mac)
    return icmpv6_message(src, dst, ND_NEIGHBOR_ADVERT, 0, flags, body)


def ipv6_fragment_header(next_header: int, offset_bytes: int, more: bool, ident: int) -> bytes:
    """An IPv6 Fragment header (RFC 8200 4.5); ``offset_bytes`` must be a multiple of 8."""
    if offset_bytes % 8:
        raise ValueError("fragment offsets are multiples of 8 bytes")
    return struct.pack("!BBHI", next_header, 0, offset_bytes | int(more), ident)
