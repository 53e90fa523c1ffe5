"""The IP layer of a :class:`~fastproto.stack.Stack`, one module a protocol:
``ipv4`` (ARP, ICMP, fragments, raw IP, IPv4 output), ``ipv6`` (NDP,
ICMPv6, fragments, IPv6 output, UDP over IPv6 sockets) and ``udp`` (UDP
input and output).  Each holds a part of the Stack's methods; the receive
path, the threads, the sockets and the counters are in :mod:`fastproto.stack`,
and TCP is its own layer (:mod:`fastproto.tcp_layer`)."""
