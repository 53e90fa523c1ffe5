"""A hand-driven TCP peer on the far end of a LinkPair: scapy builds its
frames, so what a stack does with them is checked against an independent
encoder."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import ARP, Ether

from concurrency import wait_until
from fastproto.phy.link import LinkPair
from fastproto.stack import Stack

LOCAL, PEER = "198.18.0.2", "198.18.0.1"
LPORT, PPORT = 80, 4000


class Peer:
    """The far end of the link, driven by hand with scapy-built frames: it
    answers the stack's ARP, opens a connection to ``port`` and then sends
    what the test asks (no window scaling, no timestamps: a plain RFC 9293
    peer)."""

    def __init__(self, dev, stack: Stack, port: int = LPORT) -> None:
        self.dev = dev
        self.stack = stack
        self.mac = ":".join(f"{x:02x}" for x in dev.mac)
        self.smac = ":".join(f"{x:02x}" for x in stack.mac)
        self.seen: list = []
        srv = stack.create_server(("", port))
        srv.settimeout(5.0)
        # Our ARP request: the stack answers it and learns our address (RFC 826).
        dev.transmit([bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=self.mac)
                            / ARP(op=1, hwsrc=self.mac, psrc=PEER, pdst=LOCAL))])
        assert wait_until(lambda: self._frames(ARP))
        self.iss = 1_000_000
        dev.transmit([self.frame(self.iss, b"", "S", ack=0, mss=1460)])
        assert wait_until(lambda: self._synack())
        self.seq = self.iss + 1
        dev.transmit([self.frame(self.seq, b"", "A")])
        self.sock, _ = srv.accept()
        self.sock.settimeout(5.0)
        srv.close()
        self.conn = self.sock.conn

    def _frames(self, layer) -> list:
        for f in self.dev.receive(64):
            self.seen.append(Ether(f))
        return [p for p in self.seen if layer in p]

    def _synack(self) -> bool:
        for p in self._frames(TCP):
            if p[TCP].flags.S and p[TCP].flags.A:
                self.irs = p[TCP].seq
                self.ack = (self.irs + 1) % 2 ** 32
                return True
        return False

    def frame(self, seq: int, payload: bytes, flags: str = "PA", ack=None, window: int = 65535,
              mss=None) -> bytes:
        opts = [("MSS", mss)] if mss is not None else []
        return bytes(Ether(src=self.mac, dst=self.smac) / IP(src=PEER, dst=LOCAL, flags="DF")
                     / TCP(sport=PPORT, dport=LPORT, seq=seq % 2 ** 32,
                           ack=self.ack if ack is None else ack, flags=flags, window=window,
                           options=opts) / payload)

    def state(self) -> tuple:
        c = self.conn
        with self.sock._lock:
            return (c.rcv_nxt, c.rcv_wnd, c.snd_una, c.snd_wnd, c.snd_wl1, c._unacked_bytes,
                    bytes(c._rcvbuf or b""), c._ooo is None, c._t_delack)


@contextmanager
def linked_peer(**stack_options) -> Iterator[Peer]:
    """A stack (dispatch ``inline`` unless told) on one end of a LinkPair and a
    :class:`Peer` connected to it on the other."""
    link = LinkPair()
    stack_options.setdefault("dispatch", "inline")
    with Stack(link.b, f"{LOCAL}/24", **stack_options) as stack:
        yield Peer(link.a, stack)
