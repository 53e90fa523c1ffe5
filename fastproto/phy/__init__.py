"""Interfaces (phy): where frames enter and leave the stack."""
from fastproto.phy.pcap import PcapReader, PcapWriter

__all__ = ["PcapReader", "PcapWriter"]
