"""Ethernet II and 802.1Q headers (IEEE 802.3, 802.1Q)."""
from __future__ import annotations

import struct

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_8021Q = 0x8100
ETH_P_IPV6 = 0x86DD


def mac_bytes(mac: str | bytes) -> bytes:
    """A MAC address as 6 bytes, from ``"02:00:00:00:00:01"`` or 6 bytes."""
    if isinstance(mac, (bytes, bytearray)):
        if len(mac) != 6:
            raise ValueError(f"a MAC address is 6 bytes, not {len(mac)}")
        return bytes(mac)
    parts = mac.split(":")
    if len(parts) != 6:
        raise ValueError(f"not a MAC address: {mac!r}")
    return bytes(int(p, 16) for p in parts)


def ethernet(dst: str | bytes, src: str | bytes, ethertype: int, payload: bytes,
             vlan: int | None = None, pad: bool = True) -> bytes:
    """An Ethernet II frame (no FCS); ``vlan`` adds one 802.1Q tag (the TCI).

    ``pad`` pads to the 60-byte minimum (64 with the FCS the NIC adds).
    """
    header = mac_bytes(dst) + mac_bytes(src)
    if vlan is not None:
        header += struct.pack("!HH", ETH_P_8021Q, vlan)
    frame = header + struct.pack("!H", ethertype) + payload
    if pad and len(frame) < 60:
        frame += bytes(60 - len(frame))
    return frame
