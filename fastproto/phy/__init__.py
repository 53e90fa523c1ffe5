"""Interfaces (phy): where frames enter and leave the stack."""
from fastproto._core.frames import FrameBatch
from fastproto.phy.pcap import PcapReader, PcapWriter
from fastproto.phy.device import Device, DeviceWrapper, RingDevice, max_frame_len
from fastproto.phy.link import LinkEnd, LinkPair
from fastproto.phy.fault_injector import FaultInjector
from fastproto.phy.capture import PcapCapture, PcapReplay
from fastproto.phy.tap import TapInterface

__all__ = ["FrameBatch", "PcapReader", "PcapWriter", "Device", "DeviceWrapper", "RingDevice", "max_frame_len", "LinkEnd",
           "LinkPair", "FaultInjector", "PcapCapture", "PcapReplay", "TapInterface"]
