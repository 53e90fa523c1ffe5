"""ARP packets for Ethernet/IPv4 (RFC 826)."""
from __future__ import annotations

import struct

from fastproto.wire.ethernet import ETH_P_IP, mac_bytes
from fastproto.wire.ip import Address, ip_bytes

ARP_REQUEST = 1
ARP_REPLY = 2
ARP_HRD_ETHERNET = 1
ARP_LEN = 28


def arp(op: int, sha: str | bytes, spa: Address, tha: str | bytes, tpa: Address) -> bytes:
    """A 28-byte ARP packet for Ethernet (hrd 1) and IPv4 (pro 0x0800): RFC 826 "Packet format"."""
    spa_b, tpa_b = ip_bytes(spa), ip_bytes(tpa)
    if len(spa_b) != 4 or len(tpa_b) != 4:
        raise ValueError("ARP protocol addresses are IPv4 (4 bytes)")
    return struct.pack("!HHBBH6s4s6s4s", ARP_HRD_ETHERNET, ETH_P_IP, 6, 4, op,
                       mac_bytes(sha), spa_b, mac_bytes(tha), tpa_b)
