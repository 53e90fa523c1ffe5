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
