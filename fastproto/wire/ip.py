"""IPv4 (RFC 791) and IPv6 (RFC 8200) headers."""
from __future__ import annotations

import ipaddress
import struct

from fastproto.checksum import internet_checksum

Address = str | bytes | ipaddress.IPv4Address | ipaddress.IPv6Address


def ip_bytes(addr: Address) -> bytes:
    """The packed form of an address (4 or 16 bytes)."""
    if isinstance(addr, (bytes, bytearray)):
        if len(addr) not in (4, 16):
            raise ValueError(f"an IP address is 4 or 16 bytes, not {len(addr)}")
        return bytes(addr)
    if isinstance(addr, str):
        addr = ipaddress.ip_address(addr)
    return addr.packed


def ipv4(src: Address, dst: Address, proto: int, payload: bytes, ttl: int = 64,
         ident: int = 0, flags_frag: int = 0x4000, tos: int = 0, options: bytes = b"") -> bytes:
    """An IPv4 header with its checksum, followed by ``payload``.

    ``flags_frag`` is the 16-bit flags + fragment offset field (default DF).
    ``options`` must be a multiple of 4 bytes long (RFC 791 3.1, padding).
    """
    if len(options) % 4:
        raise ValueError("IPv4 options must be padded to a multiple of 4 bytes")
    ihl = 5 + len(options) // 4
    header = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, tos, ihl * 4 + len(payload), ident,
                         flags_frag, ttl, proto, 0, ip_bytes(src), ip_bytes(dst)) + options
    csum = internet_checksum(header)
    return header[:10] + struct.pack("!H", csum) + header[12:] + payload


def ipv6(src: Address, dst: Address, next_header: int, payload: bytes, hop_limit: int = 64,
         traffic_class: int = 0, flow_label: int = 0) -> bytes:
    """An IPv6 header (RFC 8200 3) followed by ``payload`` (extension headers included)."""
    first = (6 << 28) | (traffic_class << 20) | flow_label
    return struct.pack("!IHBB16s16s", first, len(payload), next_header, hop_limit,
                       ip_bytes(src), ip_bytes(dst)) + payload


def link_local_address(mac: bytes) -> bytes:
    """The link-local address fe80::/64 of an Ethernet interface, its interface
    identifier the modified EUI-64 of ``mac`` (6 bytes): the universal/local bit
    flipped and ff:fe inserted in the middle (RFC 4291 2.5.1 and Appendix A,
    RFC 2464 4 and 5).  16 bytes."""
    if len(mac) != 6:
        raise ValueError(f"a MAC address is 6 bytes, not {len(mac)}")
    return b"\xfe\x80" + bytes(6) + bytes([mac[0] ^ 0x02]) + bytes(mac[1:3]) + b"\xff\xfe" \
        + bytes(mac[3:6])
