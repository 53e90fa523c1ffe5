"""UDP (RFC 768), TCP (RFC 9293 3.1) and ICMP echo (RFC 792, RFC 4443) headers."""
from __future__ import annotations

import struct

from fastproto.checksum import internet_checksum, pseudo_header_sum
from fastproto.wire.ip import Address

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58


def udp(src: Address, dst: Address, sport: int, dport: int, payload: bytes,
        checksum: bool = True) -> bytes:
    """A UDP datagram; its checksum covers the pseudo-header of ``src``/``dst``."""
    length = 8 + len(payload)
    segment = struct.pack("!HHHH", sport, dport, length, 0) + payload
    if not checksum:
        return segment
    csum = internet_checksum(segment, pseudo_header_sum(src, dst, IPPROTO_UDP, length))
    # RFC 768: a computed zero is sent as all ones (zero means "no checksum").
    return segment[:6] + struct.pack("!H", csum or 0xFFFF) + segment[8:]


def tcp_segment(src: Address, dst: Address, sport: int, dport: int, seq: int, ack: int,
                flags: int, window: int = 65535, payload: bytes = b"", options: bytes = b"",
                urgent: int = 0) -> bytes:
    """A TCP segment; ``options`` are padded with EOL to a multiple of 4 bytes."""
    if len(options) % 4:
        options += bytes(4 - len(options) % 4)
    offset = 5 + len(options) // 4
    segment = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, offset << 4, flags, window, 0,
                          urgent) + options + payload
    csum = internet_checksum(segment, pseudo_header_sum(src, dst, IPPROTO_TCP, len(segment)))
    return segment[:16] + struct.pack("!H", csum) + segment[18:]


def icmp_echo(ident: int, seq: int, payload: bytes = b"", reply: bool = False,
              v6_src: Address | None = None, v6_dst: Address | None = None) -> bytes:
    """An ICMP (or, with ``v6_src``/``v6_dst``, ICMPv6) echo request or reply."""
    if v6_src is None:
        kind, initial = (0 if reply else 8), 0
    elif v6_dst is None:
        raise ValueError("an ICMPv6 echo needs both v6_src and v6_dst")
    else:
        body_len = 8 + len(payload)
        kind, initial = (129 if reply else 128), pseudo_header_sum(v6_src, v6_dst, IPPROTO_ICMPV6, body_len)
    message = struct.pack("!BBHHH", kind, 0, 0, ident, seq) + payload
    csum = internet_checksum(message, initial)
    return message[:2] + struct.pack("!H", csum) + message[4:]
