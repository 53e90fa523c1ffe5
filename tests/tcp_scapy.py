"""TCP segments built and parsed with scapy, the independent oracle of the TCP tests."""
from scapy.layers.inet import TCP

from fastproto.proto.tcp_listen import Segment


def tcp_segment(sport, dport, seq, ack=0, flags="S", window=65535, mss=None, wscale=None,
                sack=False, ts=None, payload=b""):
    """A TCP header (with payload) built by scapy, then parsed back from its bytes."""
    opts = []
    if mss is not None:
        opts.append(("MSS", mss))
    if wscale is not None:
        opts.append(("WScale", wscale))
    if sack:
        opts.append(("SAckOK", b""))
    if ts is not None:
        opts.append(("Timestamp", ts))
    raw = bytes(TCP(sport=sport, dport=dport, seq=seq, ack=ack, flags=flags, window=window,
                    options=opts) / payload)
    return TCP(raw)


def options_of(tcp):
    """The SYN-time options of a scapy TCP segment, as the listener takes them."""
    out = {"mss": None, "wscale": None, "sack_permitted": False, "ts": None}
    for name, value in tcp.options:
        if name == "MSS":
            out["mss"] = value
        elif name == "WScale":
            out["wscale"] = value
        elif name == "SAckOK":
            out["sack_permitted"] = True
        elif name == "Timestamp":
            out["ts"] = tuple(value)
    return out


def input_args(src_ip, dst_ip, tcp):
    """Listener.input arguments for a scapy TCP segment from src_ip to dst_ip."""
    return (src_ip, tcp.sport, dst_ip, tcp.dport, tcp.seq, tcp.ack, int(tcp.flags), tcp.window,
            options_of(tcp), len(bytes(tcp.payload)))


def to_scapy(seg: Segment):
    """A segment the listener emitted, serialised by scapy and parsed back."""
    o = seg.options
    return tcp_segment(seg.src_port, seg.dst_port, seg.seq, seg.ack, int(seg.flags), seg.window,
                       o.mss, o.wscale, o.sack_permitted, o.ts)
