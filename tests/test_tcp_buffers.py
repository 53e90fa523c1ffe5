"""Socket buffers larger than the defaults: a connection's PCQ is sized by
them, so a full window arriving between two runs of its input is queued,
not dropped."""
from __future__ import annotations

import hashlib
import os
import threading

import pytest

from fastproto.phy.link import LinkPair
from fastproto.socket import SHUT_WR
from fastproto.stack import Stack
from fastproto.tcp_layer import pcq_len_for
from fastproto.proto.tcp_timers import TcpConfig

A_IP, B_IP = "198.18.0.1", "198.18.0.2"


def test_pcq_holds_a_window_of_kilobyte_segments():
    assert pcq_len_for(TcpConfig.DEFAULT_BUF, TcpConfig.DEFAULT_BUF) >= 256
    assert pcq_len_for(4 << 20, 64 << 10) >= (4 << 20) // 1024
    assert pcq_len_for(64 << 10, 4 << 20) >= (4 << 20) // 1024
    assert pcq_len_for(1, 1) == 256


def test_explicit_pcq_len_is_kept():
    link = LinkPair()
    with Stack(link.a, f"{A_IP}/24", tcp=dict(pcq_len=16)) as a:
        assert a.tcp.pcq_len == 16


@pytest.mark.parametrize("size", [1 << 20, 4 << 20])
def test_large_buffers_move_data_without_queue_drops_or_retransmissions(size):
    link = LinkPair(rx_ring_size=8192)
    kw = dict(tcp=dict(rcvbuf=size, sndbuf=size))
    data = os.urandom(24 << 20)
    with Stack(link.a, f"{A_IP}/24", **kw) as a, Stack(link.b, f"{B_IP}/24", **kw) as b:
        assert b.tcp.pcq_len >= size // 1024
        server = b.create_server(("", 5001))
        server.settimeout(30.0)
        got = hashlib.sha256()
        result: dict = {}

        def sink() -> None:
            conn, _ = server.accept()
            conn.settimeout(30.0)
            n = 0
            while chunk := conn.recv(1 << 20):
                got.update(chunk)
                n += len(chunk)
            result["n"] = n
            conn.close()

        t = threading.Thread(target=sink)
        t.start()
        c = a.create_connection((B_IP, 5001), timeout=30.0)
        c.sendall(data)
        c.shutdown(SHUT_WR)
        t.join(60.0)
        c.close()
        assert result.get("n") == len(data)
        assert got.digest() == hashlib.sha256(data).digest()
        sa, sb = a.stats(), b.stats()
    for st in (sa, sb):
        assert st.get("drop.socket_pcq", 0) == 0
        assert st.get("tcp.retransmitted_segments", 0) == 0
