"""Wire formats in pure Python: builders for crafting frames (tests, demos, replies).

The per-packet fast path never calls these: it parses with
:func:`fastproto.parse` and answers from the core.  These builders are for the
places where one packet at a time is the honest unit: crafting test traffic and
protocol answers that are rare by nature (ARP replies, ICMP errors).
"""
from fastproto.wire.ethernet import ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, ETH_P_8021Q, ethernet, mac_bytes
from fastproto.wire.ip import ipv4, ipv6, ip_bytes
from fastproto.wire.l4 import icmp_echo, tcp_segment, udp
from fastproto.wire.arp import ARP_REPLY, ARP_REQUEST, arp
from fastproto.wire.icmp import (
    icmp_message,
    icmpv6_message,
    ipv6_fragment_header,
    ipv6_multicast_mac,
    neighbor_advert,
    neighbor_solicit,
    solicited_node,
)

__all__ = [
    "ETH_P_ARP", "ETH_P_IP", "ETH_P_IPV6", "ETH_P_8021Q",
    "ethernet", "mac_bytes", "ipv4", "ipv6", "ip_bytes", "udp", "tcp_segment", "icmp_echo",
    "ARP_REQUEST", "ARP_REPLY", "arp", "icmp_message", "icmpv6_message", "ipv6_fragment_header",
    "ipv6_multicast_mac", "neighbor_advert", "neighbor_solicit", "solicited_node",
]
from fastproto.wire.tcp import TcpRejected, TcpSegment, build_tcp, parse_tcp, parse_tcp_checked, tcp_options  # noqa: E402
__all__ += ["TcpRejected", "TcpSegment", "build_tcp", "parse_tcp", "parse_tcp_checked", "tcp_options"]
