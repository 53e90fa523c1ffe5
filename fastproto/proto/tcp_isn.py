"""TCP initial sequence numbers (RFC 6528 section 3, RFC 9293 3.4.1).

``ISN = M + F(localip, localport, remoteip, remoteport, secretkey)`` where M
is a timer ticking every 4 microseconds and F a keyed pseudo-random function
of the connection's 4-tuple. Successive incarnations of one 4-tuple thus get
increasing ISNs (so old duplicates from an earlier incarnation fall outside
the new sequence space, RFC 9293 3.4.1), while an off-path host that does not
know the secret cannot predict the ISN of another 4-tuple (RFC 6528 2).

F is BLAKE2b keyed with a 16-byte secret, truncated to 32 bits.
"""
from __future__ import annotations

import hashlib
import ipaddress
import os
import socket
import time
from typing import Callable, Union

#: an IP address: text, packed (4 bytes, or 16 bytes IPv6 / IPv4-mapped) or an ipaddress object
IpAddress = Union[str, bytes, bytearray, ipaddress.IPv4Address, ipaddress.IPv6Address]

#: M ticks once per 4 microseconds (RFC 6528 3; RFC 793's 4-microsecond ISN clock)
TICKS_PER_SECOND = 250_000
SECRET_LEN = 16

_V4_MAPPED_PREFIX = b"\x00" * 10 + b"\xff\xff"


def addr16(addr: IpAddress) -> bytes:
    """The 16-byte form of an address: IPv6 as is, IPv4 as IPv4-mapped (RFC 4291 2.5.5.2).

    So that "10.0.0.1" and "::ffff:10.0.0.1" name the same endpoint.
    ValueError for anything that is not an IP address.
    """
    if isinstance(addr, (bytes, bytearray)):
        if len(addr) == 16:
            return bytes(addr)
        if len(addr) == 4:
            return _V4_MAPPED_PREFIX + bytes(addr)
        raise ValueError(f"an IP address is 4 or 16 bytes, not {len(addr)}")
    if isinstance(addr, str):
        # inet_pton is the fast path; ipaddress also takes forms it refuses (scope ids)
        try:
            return _V4_MAPPED_PREFIX + socket.inet_pton(socket.AF_INET, addr)
        except OSError:
            pass
        try:
            return socket.inet_pton(socket.AF_INET6, addr)
        except OSError:
            addr = ipaddress.ip_address(addr)
    if isinstance(addr, ipaddress.IPv4Address):
        return _V4_MAPPED_PREFIX + addr.packed
    if isinstance(addr, ipaddress.IPv6Address):
        return addr.packed
    raise ValueError(f"not an IP address: {addr!r}")


def endpoint_bytes(ip: IpAddress, port: int) -> bytes:
    """18 bytes naming one end of a connection: ``addr16(ip)`` then the port, big-endian."""
    if not isinstance(port, int) or not 0 <= port <= 0xFFFF:
        raise ValueError(f"a port is an int in 0..65535, not {port!r}")
    return addr16(ip) + port.to_bytes(2, "big")


class IsnGenerator:
    """Initial sequence numbers for new connections (RFC 6528 3).

    ``clock`` gives seconds (any origin; only its progress matters);
    ``secret`` is the PRF key (16 bytes; a random one when None). Two
    generators with the same secret and clock give the same ISNs.
    """

    __slots__ = ("_clock", "_secret")

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 secret: bytes | None = None) -> None:
        if secret is None:
            secret = os.urandom(SECRET_LEN)
        if not isinstance(secret, (bytes, bytearray)) or len(secret) != SECRET_LEN:
            raise ValueError(f"the secret is {SECRET_LEN} bytes")
        self._clock = clock
        self._secret = bytes(secret)

    def offset(self, local_ip: IpAddress, local_port: int,
               remote_ip: IpAddress, remote_port: int) -> int:
        """F(4-tuple, secret): the 32-bit per-connection offset, constant for a 4-tuple."""
        data = endpoint_bytes(local_ip, local_port) + endpoint_bytes(remote_ip, remote_port)
        digest = hashlib.blake2b(data, key=self._secret, digest_size=4,
                                 person=b"fastproto-isn").digest()
        return int.from_bytes(digest, "big")

    def isn(self, local_ip: IpAddress, local_port: int,
            remote_ip: IpAddress, remote_port: int) -> int:
        """The ISN for a new connection on this 4-tuple, now (32 bits)."""
        m = int(self._clock() * TICKS_PER_SECOND)
        return (m + self.offset(local_ip, local_port, remote_ip, remote_port)) & 0xFFFFFFFF
