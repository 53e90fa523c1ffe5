"""TCP sockets between two stacks on a LinkPair: the socket API end to end."""
from __future__ import annotations

import errno
import hashlib
import os
import socket as pysocket
import struct
import threading
import time

import pytest

from fastproto.dispatch import MODELS
from fastproto.phy.fault_injector import FaultInjector
from fastproto.phy.link import LinkPair
from fastproto.socket import AF_INET, AF_INET6
from fastproto.stack import Stack
from fastproto.tcp_socket import SOCK_STREAM

A4, B4 = "198.18.0.1", "198.18.0.2"
A6, B6 = "2001:2::1", "2001:2::2"
FAST = dict(rto_min=0.05, rto_initial=0.2, time_wait=0.2, delack=0.01)


def pair(model: str = "lrp", a_dev=None, b_dev=None, **kw):
    link = LinkPair()
    a = Stack(a_dev(link.a) if a_dev else link.a, f"{A4}/24", ipv6=f"{A6}/64", dispatch=model,
              tcp=dict(FAST, **kw))
    b = Stack(b_dev(link.b) if b_dev else link.b, f"{B4}/24", ipv6=f"{B6}/64", dispatch=model,
              tcp=dict(FAST, **kw))
    return a, b


def listening(stack: Stack, port: int = 80, family: int = AF_INET, backlog: int = 16):
    srv = stack.socket(family, SOCK_STREAM)
    srv.bind(("", port))
    srv.listen(backlog)
    srv.settimeout(5.0)
    return srv


def serve(srv, handler):
    """Accept one connection in a thread and run ``handler(conn)`` on it."""
    result = {}

    def run():
        try:
            conn, peer = srv.accept()
            conn.settimeout(10.0)
            result["peer"] = peer
            result["value"] = handler(conn)
        except BaseException as exc:  # reported to the test
            result["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, result


def recv_all(conn) -> bytes:
    chunks = []
    while True:
        data = conn.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


@pytest.mark.parametrize("model", MODELS)
def test_connect_accept_and_echo_under_every_dispatch_model(model):
    a, b = pair(model)
    with a, b:
        srv = listening(b)

        def echo(conn):
            data = recv_all(conn)
            conn.sendall(data)
            conn.close()
            return len(data)

        t, result = serve(srv, echo)
        c = a.socket(AF_INET, SOCK_STREAM)
        c.settimeout(5.0)
        c.connect((B4, 80))
        payload = os.urandom(200_000)
        c.sendall(payload)
        c.shutdown(pysocket.SHUT_WR)
        assert recv_all(c) == payload
        c.close()
        t.join(10)
        assert "error" not in result, result
        assert result["value"] == len(payload)
        assert result["peer"][0] == A4
        assert c.getsockname()[0] == A4


def test_ipv6_connection_echoes():
    a, b = pair()
    with a, b:
        srv = listening(b, family=AF_INET6)
        t, result = serve(srv, lambda conn: conn.sendall(recv_all(conn)) or conn.close())
        c = a.socket(AF_INET6, SOCK_STREAM)
        c.settimeout(5.0)
        c.connect((B6, 80))
        c.sendall(b"over six" * 1000)
        c.shutdown(pysocket.SHUT_WR)
        assert recv_all(c) == b"over six" * 1000
        t.join(10)
        assert "error" not in result, result
        assert c.getpeername()[:2] == (B6, 80)


def test_connect_to_a_closed_port_is_refused():
    a, b = pair()
    with a, b:
        c = a.socket(AF_INET, SOCK_STREAM)
        c.settimeout(5.0)
        with pytest.raises(ConnectionRefusedError):
            c.connect((B4, 81))
        assert b.stats()["tcp.rst_no_socket"] == 1


def test_connect_ex_returns_the_errno():
    a, b = pair()
    with a, b:
        c = a.socket(AF_INET, SOCK_STREAM)
        c.settimeout(5.0)
        assert c.connect_ex((B4, 81)) == errno.ECONNREFUSED


def test_non_blocking_connect_completes_and_becomes_writable():
    a, b = pair()
    with a, b:
        srv = listening(b)
        c = a.socket(AF_INET, SOCK_STREAM)
        c.setblocking(False)
        with pytest.raises(BlockingIOError):
            c.connect((B4, 80))
        _, writable = a.select([], [c], timeout=5.0)
        assert writable == [c]
        assert c.getsockopt(pysocket.SOL_SOCKET, pysocket.SO_ERROR) == 0
        conn, _ = srv.accept()
        conn.close()


def test_peer_abort_surfaces_as_connection_reset():
    a, b = pair()
    with a, b:
        srv = listening(b)

        def abort(conn):
            conn.recv(10)
            conn.setsockopt(pysocket.SOL_SOCKET, pysocket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

        t, result = serve(srv, abort)
        c = a.socket(AF_INET, SOCK_STREAM)
        c.settimeout(5.0)
        c.connect((B4, 80))
        c.sendall(b"hello")
        t.join(10)
        with pytest.raises(ConnectionResetError):
            c.recv(10)


def test_write_after_the_connection_was_reset_is_a_broken_pipe():
    a, b = pair()
    with a, b:
        srv = listening(b)
        t, _ = serve(srv, lambda conn: (conn.setsockopt(pysocket.SOL_SOCKET, pysocket.SO_LINGER,
                                                        struct.pack("ii", 1, 0)), conn.close()))
        c = a.socket(AF_INET, SOCK_STREAM)
        c.settimeout(5.0)
        c.connect((B4, 80))
        t.join(10)
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            c.recv(1)
        with pytest.raises(BrokenPipeError):
            c.send(b"x")


def test_half_close_lets_the_other_side_keep_sending():
    a, b = pair()
    with a, b:
        srv = listening(b)

        def respond(conn):
            request = recv_all(conn)           # until our FIN
            for _ in range(10):
                conn.sendall(request)          # still allowed: half-close
            conn.close()
            return len(request)

        t, result = serve(srv, respond)
        c = a.socket(AF_INET, SOCK_STREAM)
        c.settimeout(5.0)
        c.connect((B4, 80))
        c.sendall(b"q" * 1000)
        c.shutdown(pysocket.SHUT_WR)
        assert recv_all(c) == b"q" * 10_000
        t.join(10)
        assert result["value"] == 1000


def test_recv_times_out_and_non_blocking_recv_would_block():
    a, b = pair()
    with a, b:
        srv = listening(b)
        c = a.socket(AF_INET, SOCK_STREAM)
        c.settimeout(5.0)
        c.connect((B4, 80))
        conn, _ = srv.accept()
        c.settimeout(0.05)
        with pytest.raises(TimeoutError):
            c.recv(10)
        c.setblocking(False)
        with pytest.raises(BlockingIOError):
            c.recv(10)
        conn.close()


def test_accept_times_out_when_nobody_connects():
    a, b = pair()
    with a, b:
        srv = listening(b)
        srv.settimeout(0.05)
        with pytest.raises(TimeoutError):
            srv.accept()


def test_bind_twice_to_one_port_is_refused():
    a, b = pair()
    with a, b:
        listening(b)
        other = b.socket(AF_INET, SOCK_STREAM)
        with pytest.raises(OSError) as info:
            other.bind(("", 80))
        assert info.value.errno == errno.EADDRINUSE


def test_send_on_an_unconnected_socket_is_not_connected():
    a, b = pair()
    with a, b:
        c = a.socket(AF_INET, SOCK_STREAM)
        with pytest.raises(OSError) as info:
            c.send(b"x")
        assert info.value.errno == errno.ENOTCONN


@pytest.mark.parametrize("model", ["lrp", "inline"])
def test_transfer_is_byte_exact_under_loss_reordering_duplication_and_corruption(model):
    # Flips within one 16-bit word, which the Internet checksum always catches
    # (flips spread over words can cancel out in it: RFC 1071).
    def impaired(seed):
        return lambda dev: FaultInjector(dev, seed=seed, loss=0.1, reorder=0.05, duplicate=0.05,
                                         corrupt=0.01, corrupt_in_word=True)

    a, b = pair(model, impaired(1), impaired(2))
    with a, b:
        srv = listening(b)
        size = 2_000_000
        data = os.urandom(size)

        def sink(conn):
            got = recv_all(conn)
            conn.sendall(hashlib.sha256(got).digest())
            conn.close()
            return len(got)

        t, result = serve(srv, sink)
        c = a.socket(AF_INET, SOCK_STREAM)
        c.settimeout(30.0)
        c.connect((B4, 80))
        c.sendall(data)
        c.shutdown(pysocket.SHUT_WR)
        digest = recv_all(c)
        c.close()
        t.join(30)
        assert "error" not in result, result
        assert result["value"] == size
        assert digest == hashlib.sha256(data).digest()
        stats = a.stats()
        assert stats["tcp.retransmits"] > 0


def test_closing_a_listener_resets_connections_nobody_accepted():
    a, b = pair()
    with a, b:
        srv = listening(b)
        c = a.socket(AF_INET, SOCK_STREAM)
        c.settimeout(5.0)
        c.connect((B4, 80))
        srv.close()
        with pytest.raises(ConnectionResetError):
            c.recv(10)


def test_sockets_are_released_after_time_wait():
    a, b = pair()
    with a, b:
        srv = listening(b)
        t, _ = serve(srv, lambda conn: (recv_all(conn), conn.close()))
        c = a.socket(AF_INET, SOCK_STREAM)
        c.settimeout(5.0)
        c.connect((B4, 80))
        c.close()
        t.join(10)
        # TIME_WAIT (0.2 s here) ends, then the socket's id, port and pcb go back.
        deadline = time.monotonic() + 5
        while a.sockets() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert a.sockets() == []


@pytest.mark.parametrize("family, server_host, client_host", [(AF_INET, B4, B4), (AF_INET6, B6, B6)])
def test_create_server_and_create_connection(family, server_host, client_host):
    a, b = pair()
    with a, b:
        srv = b.create_server(("", 8080), family=family)
        srv.settimeout(5.0)
        t, result = serve(srv, lambda conn: conn.sendall(recv_all(conn)) or conn.close())
        c = a.create_connection((client_host, 8080), timeout=5.0)
        assert c.family == family and c.gettimeout() == 5.0
        c.sendall(b"ping")
        c.shutdown(pysocket.SHUT_WR)
        assert recv_all(c) == b"ping"
        t.join(10)
        assert "error" not in result, result


def test_create_connection_to_a_closed_port_raises_and_releases_the_socket():
    a, b = pair()
    with a, b:
        with pytest.raises(ConnectionRefusedError):
            a.create_connection((B4, 9), timeout=5.0)
        deadline = time.monotonic() + 5
        while a.sockets() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert a.sockets() == []
