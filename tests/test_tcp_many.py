"""Thousands of TCP connections between two stacks on a LinkPair: opened without
blocking, each carrying its own bytes, all closed cleanly, and the memory each
holds."""
from __future__ import annotations

import time

from fastproto.bench.tcp import CONNECTION_BUDGET, connection_memory, open_connections
from fastproto.phy.link import LinkPair
from fastproto.proto.tcp import CLOSED, ESTABLISHED
from fastproto.stack import Stack

A4, B4 = "198.18.0.1", "198.18.0.2"
MANY = 2000


def _stacks(n: int, **tcp):
    link = LinkPair(rx_ring_size=4096)
    kw = dict(max_sockets=n + 16, tcp=dict(dict(pcq_len=16, time_wait=0.2), **tcp))
    return Stack(link.a, f"{A4}/24", **kw), Stack(link.b, f"{B4}/24", **kw)


def _wait_until(cond, limit: float = 60.0) -> bool:
    # A bound against hanging, not a timing assertion: the condition is what is checked.
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_thousands_of_connections_each_carry_their_own_bytes_and_close_cleanly():
    a, b = _stacks(MANY)
    with a, b:
        clients, servers = open_connections(a, b, MANY)
        assert len({c.getsockname() for c in clients}) == MANY
        assert all(c.conn.state == ESTABLISHED for c in clients + servers)
        for sock in clients + servers:
            sock.settimeout(10.0)
        for i, (c, s) in enumerate(zip(clients, servers)):
            c.sendall(i.to_bytes(4, "big"))
        for i, (c, s) in enumerate(zip(clients, servers)):
            assert s.recv(16) == i.to_bytes(4, "big")
            s.sendall(b"ok" + i.to_bytes(4, "big"))
        for i, c in enumerate(clients):
            assert c.recv(16) == b"ok" + i.to_bytes(4, "big")
        for c in clients:
            c.close()
        for s in servers:
            assert s.recv(16) == b""          # the client's FIN
            s.close()
        conns = [c.conn for c in clients + servers]
        assert _wait_until(lambda: all(conn.state == CLOSED for conn in conns))
        assert all(conn.error is None for conn in conns)
        # Every socket gave back its id, PCQ and pcb.
        assert _wait_until(lambda: not a._socks and not b._socks)
        for stack in (a, b):
            st = stack.stats()
            assert st.get("tcp.aborts", 0) == 0 and st.get("tcp.rst_no_socket", 0) == 0
            assert st.get("drop.socket_pcq", 0) == 0


def test_a_burst_of_connections_fits_the_listeners_deeper_pcq():
    # Each connection's PCQ holds 16 packets; the listener's (syn_queue_len deep)
    # takes a burst of 512 SYNs at once without dropping any.
    a, b = _stacks(600, syn_queue_len=1024)
    with a, b:
        clients, servers = open_connections(a, b, 512, batch=512)
        assert len(servers) == 512
        st = b.stats()
        assert st.get("drop.socket_pcq", 0) == 0 and st.get("tcp.syncookies_sent", 0) == 0
        assert st["tcp.syn_recv"] == 512


def test_an_established_connection_holds_under_4_kib_of_python_heap():
    # 2,000 connections keep the suite quick (tracemalloc triples the cost of
    # opening them); the tcp bench group measures 10,000 the same way, and
    # fixed costs spread over fewer connections only make this figure larger.
    m = connection_memory(MANY)
    assert m["connections"] == MANY
    assert 0 < m["python_bytes"] < CONNECTION_BUDGET
