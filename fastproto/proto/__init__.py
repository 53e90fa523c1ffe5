"""Protocol logic of the user-space stack that is rare by nature, so runs one packet
at a time in Python: ARP, Neighbor Discovery, fragment reassembly, ICMP.

Nothing here does I/O: handlers take received frames (or their parsed rows)
and return the frames to send. Every time value comes from an injectable
``clock`` (seconds, ``time.monotonic`` by default). See ``docs/protocols.md``.
"""
from fastproto.proto.arp import ArpCache
from fastproto.proto.icmp import (
    IcmpError,
    IcmpRejected,
    dest_unreachable,
    echo_reply,
    echo_reply_packet,
    packet_too_big,
    parse_icmp_error,
    time_exceeded,
)
from fastproto.proto.ndp import NeighborCache, NeighborState
from fastproto.proto.ratelimit import TokenBucket
from fastproto.proto.reassembly import Expired, Reassembler, fragment_ipv4, fragment_ipv6

__all__ = [
    "ArpCache", "NeighborCache", "NeighborState", "Reassembler", "Expired",
    "fragment_ipv4", "fragment_ipv6", "TokenBucket", "IcmpError", "IcmpRejected",
    "echo_reply", "echo_reply_packet", "dest_unreachable", "time_exceeded", "packet_too_big",
    "parse_icmp_error",
]
from fastproto.proto.tcp import TcpConnection, parse_segment  # noqa: E402
from fastproto.proto.tcp_timers import TcpConfig  # noqa: E402
__all__ += ["TcpConnection", "TcpConfig", "parse_segment"]
