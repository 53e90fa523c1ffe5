"""The UDP socket API of a Stack, against the behaviour of Python's socket module."""
from __future__ import annotations

import errno
import socket
import threading
import time
from typing import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from concurrency import wait_until
from fastproto.dispatch import MODELS
from fastproto.phy.link import LinkPair
from fastproto.socket import UDP_MAX_PAYLOAD, DatagramSocket
from fastproto.stack import Stack

A_IP, B_IP = "198.18.0.1", "198.18.0.2"


@pytest.fixture(params=MODELS)
def model(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def pair(model: str) -> Iterator[tuple[Stack, Stack]]:
    link = LinkPair()
    with Stack(link.a, f"{A_IP}/24", dispatch=model) as a, \
            Stack(link.b, f"{B_IP}/24", dispatch=model) as b:
        yield a, b


@pytest.fixture(scope="module")
def lrp_pair() -> Iterator[tuple[Stack, Stack]]:
    link = LinkPair()
    with Stack(link.a, f"{A_IP}/24", dispatch="lrp") as a, \
            Stack(link.b, f"{B_IP}/24", dispatch="lrp") as b:
        yield a, b


def bound(stack: Stack, port: int = 0, timeout: float | None = 5.0) -> DatagramSocket:
    s = stack.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("", port))
    s.settimeout(timeout)
    return s


# -- receiving, for every dispatch model --------------------------------------

def test_recv_timeout_raises_timeout_error(pair: tuple[Stack, Stack]) -> None:
    _, b = pair
    with bound(b, timeout=0.05) as s:
        with pytest.raises(socket.timeout):
            s.recv(10)
        with pytest.raises(TimeoutError):
            s.recvfrom(10)


def test_nonblocking_recv_raises_blocking_io_error(pair: tuple[Stack, Stack]) -> None:
    _, b = pair
    with bound(b) as s:
        s.setblocking(False)
        assert s.gettimeout() == 0.0 and not s.getblocking()
        with pytest.raises(BlockingIOError) as info:
            s.recv(10)
        assert info.value.errno == errno.EAGAIN


def test_blocked_reader_is_woken_by_a_datagram(pair: tuple[Stack, Stack]) -> None:
    a, b = pair
    rx = bound(b, 7100, timeout=5)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(rx.recv(100)))
    reader.start()
    a.socket().sendto(b"wake up", (B_IP, 7100))
    reader.join(10)
    assert got == [b"wake up"]


def test_select_reports_readable_after_arrival(pair: tuple[Stack, Stack]) -> None:
    a, b = pair
    rx, other = bound(b, 7200), bound(b, 7201)
    assert b.select([rx, other], [], 0) == ([], [])
    a.socket().sendto(b"ping", (B_IP, 7200))
    assert b.select([rx, other], [], 5) == ([rx], [])
    # A UDP socket can always send: select returns at once, with what is ready.
    assert b.select([rx, other], [other], 5) == ([rx], [other])
    assert rx.recv(10) == b"ping"


# -- the rest of the API (the lazy-receiver model) ----------------------------

def test_datagram_is_truncated_to_the_buffer(lrp_pair: tuple[Stack, Stack]) -> None:
    a, b = lrp_pair
    with bound(b, 7300) as rx, a.socket() as tx:
        tx.sendto(b"0123456789", (B_IP, 7300))
        assert rx.recv(4) == b"0123"
        tx.sendto(b"next", 0, (B_IP, 7300))   # the (data, flags, address) form
        assert rx.recv(100) == b"next"


def test_recv_into_and_recvfrom_into(lrp_pair: tuple[Stack, Stack]) -> None:
    a, b = lrp_pair
    with bound(b, 7301) as rx, a.socket() as tx:
        tx.bind(("", 7302))
        buf = bytearray(8)
        tx.sendto(b"abcdefghij", (B_IP, 7301))
        assert rx.recv_into(buf) == 8 and buf == b"abcdefgh"
        tx.sendto(b"xyz", (B_IP, 7301))
        assert rx.recvfrom_into(buf, 2) == (2, (A_IP, 7302))
        assert buf[:2] == b"xy"
        with pytest.raises(ValueError):
            rx.recv_into(buf, 9)


def test_bind_conflicts_raise_address_in_use(lrp_pair: tuple[Stack, Stack]) -> None:
    _, b = lrp_pair
    with bound(b, 7400):
        with pytest.raises(OSError) as info:
            bound(b, 7400)
        assert info.value.errno == errno.EADDRINUSE
        s = b.socket()
        with pytest.raises(OSError) as info:
            s.bind((B_IP, 7400))  # the wildcard already holds the port
        assert info.value.errno == errno.EADDRINUSE
        s.close()
    with bound(b, 7400):  # free again once closed
        pass


def test_bind_errors(lrp_pair: tuple[Stack, Stack]) -> None:
    _, b = lrp_pair
    with b.socket() as s:
        with pytest.raises(OSError) as info:
            s.bind(("198.18.0.99", 1))
        assert info.value.errno == errno.EADDRNOTAVAIL
        s.bind((B_IP, 0))
        host, port = s.getsockname()
        assert host == B_IP and 49152 <= port <= 65535
        with pytest.raises(OSError) as info:
            s.bind(("", 0))
        assert info.value.errno == errno.EINVAL
        with pytest.raises(OverflowError):
            b.socket().bind(("", 70000))


def test_oversize_datagram_raises_emsgsize(lrp_pair: tuple[Stack, Stack]) -> None:
    a, _ = lrp_pair
    with a.socket() as s:
        with pytest.raises(OSError) as info:
            s.sendto(bytes(UDP_MAX_PAYLOAD + 1), (B_IP, 9))
        assert info.value.errno == errno.EMSGSIZE


def test_largest_datagram_crosses(lrp_pair: tuple[Stack, Stack]) -> None:
    a, b = lrp_pair
    with bound(b, 7500) as rx, a.socket() as tx:
        payload = bytes(range(251)) * (UDP_MAX_PAYLOAD // 251) + b"end!"
        payload = payload[:UDP_MAX_PAYLOAD]
        tx.sendto(payload, (B_IP, 7500))
        assert rx.recv(1 << 17) == payload


def test_connect_fixes_addresses_and_filters_peers(lrp_pair: tuple[Stack, Stack]) -> None:
    a, b = lrp_pair
    with bound(b, 7600) as server, a.socket() as client, a.socket() as stranger:
        with pytest.raises(OSError) as info:
            client.getpeername()
        assert info.value.errno == errno.ENOTCONN
        with pytest.raises(OSError) as info:
            client.send(b"x")
        assert info.value.errno == errno.EDESTADDRREQ
        assert client.connect_ex((B_IP, 7600)) == 0
        assert client.getpeername() == (B_IP, 7600)
        assert client.getsockname()[0] == A_IP
        client.sendall(b"hello")
        data, peer = server.recvfrom(100)
        assert data == b"hello" and peer == client.getsockname()
        client.settimeout(5)
        # Only the peer's datagrams reach a connected socket.
        stranger.bind(("", 7601))
        stranger.settimeout(5)
        stranger.sendto(b"not for you", client.getsockname())
        server.sendto(b"reply", peer)
        assert client.recv(100) == b"reply"
        assert client.connect_ex(("10.9.9.9", 1)) == errno.ENETUNREACH


def test_shutdown(lrp_pair: tuple[Stack, Stack]) -> None:
    a, _ = lrp_pair
    with a.socket() as s:
        with pytest.raises(OSError) as info:
            s.shutdown(socket.SHUT_RD)
        assert info.value.errno == errno.ENOTCONN
        s.connect((B_IP, 7700))
        s.shutdown(socket.SHUT_RD)
        assert s.recv(10) == b""
        s.shutdown(socket.SHUT_WR)
        with pytest.raises(BrokenPipeError):
            s.send(b"x")


def test_closed_socket_raises_bad_file_descriptor(lrp_pair: tuple[Stack, Stack]) -> None:
    a, _ = lrp_pair
    s = a.socket()
    s.close()
    s.close()
    assert s.closed
    for call in (lambda: s.recv(1), lambda: s.sendto(b"x", (B_IP, 1)), s.getsockname,
                 lambda: s.bind(("", 0))):
        with pytest.raises(OSError) as info:
            call()
        assert info.value.errno == errno.EBADF


def test_unsupported_kinds_are_refused(lrp_pair: tuple[Stack, Stack]) -> None:
    a, _ = lrp_pair
    with pytest.raises(OSError) as info:
        a.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    assert info.value.errno == errno.EAFNOSUPPORT
    with pytest.raises(OSError) as info:
        a.socket(socket.AF_INET6, socket.SOCK_STREAM)  # this stack has no IPv6 address
    assert info.value.errno == errno.EAFNOSUPPORT
    with pytest.raises(OSError) as info:
        a.socket(socket.AF_INET, socket.SOCK_SEQPACKET)
    assert info.value.errno == errno.EPROTONOSUPPORT
    with pytest.raises(OSError) as info:
        a.socket(socket.AF_INET, socket.SOCK_STREAM, 17)
    assert info.value.errno == errno.EPROTONOSUPPORT


def test_timeout_options(lrp_pair: tuple[Stack, Stack]) -> None:
    a, _ = lrp_pair
    with a.socket() as s:
        assert s.gettimeout() is None and s.getblocking()
        s.settimeout(1.5)
        assert s.gettimeout() == 1.5
        with pytest.raises(ValueError):
            s.settimeout(-1)
        s.setblocking(True)
        assert s.gettimeout() is None


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payloads=st.lists(st.binary(max_size=4000), min_size=1, max_size=4))
def test_any_payloads_cross_byte_exact(lrp_pair: tuple[Stack, Stack],
                                       payloads: list[bytes]) -> None:
    a, b = lrp_pair
    with bound(b, 7800) as rx, a.socket() as tx:
        for p in payloads:
            tx.sendto(p, (B_IP, 7800))
        assert [rx.recv(8192) for _ in payloads] == payloads


def test_broadcast_needs_so_broadcast(lrp_pair: tuple[Stack, Stack]) -> None:
    a, b = lrp_pair
    with bound(b, 7900) as rx, a.socket() as tx:
        with pytest.raises(PermissionError):
            tx.sendto(b"all", ("198.18.0.255", 7900))
        tx.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        assert tx.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST) == 1
        tx.sendto(b"all", ("198.18.0.255", 7900))
        assert rx.recvfrom(10) == (b"all", (A_IP, tx.getsockname()[1]))
        # Nobody listens on 7901: a broadcast draws no ICMP error (RFC 1122 3.2.2).
        before = b.stats().get("icmp.error_suppressed_to_broadcast", 0)
        tx.sendto(b"all", ("255.255.255.255", 7901))
        assert wait_until(
            lambda: b.stats().get("icmp.error_suppressed_to_broadcast", 0) == before + 1)
        with pytest.raises(OSError) as info:
            tx.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        assert info.value.errno == errno.ENOPROTOOPT


def test_close_wakes_a_blocked_reader(model: str) -> None:
    link = LinkPair()
    stack = Stack(link.a, f"{A_IP}/24", dispatch=model)
    s = bound(stack, 8000, timeout=None)
    errors: list[OSError] = []

    def reader() -> None:
        try:
            s.recv(10)
        except OSError as exc:
            errors.append(exc)

    t = threading.Thread(target=reader)
    t.start()
    # Blocked: asleep on the socket, or (lrp) pulling the interface itself.
    assert wait_until(lambda: bool(s._waiting) or stack._pulling_sock is s or not t.is_alive())
    stack.close()
    t.join(10)
    assert not t.is_alive()
    assert [e.errno for e in errors] == [errno.EBADF]



def test_lrp_select_runs_the_socket_work_itself() -> None:
    link = LinkPair()
    # A delay no test waits out: only the selecting thread can deliver in time.
    with Stack(link.a, f"{A_IP}/24", dispatch="lrp") as a, \
            Stack(link.b, f"{B_IP}/24", dispatch="lrp", kcont_delay=30.0) as b:
        rx = bound(b, 8100)
        result: list[tuple[list[DatagramSocket], list[DatagramSocket]]] = []
        selector = threading.Thread(target=lambda: result.append(b.select([rx], [], 10)))
        selector.start()
        while not b._selecting and selector.is_alive():
            time.sleep(0.001)
        a.socket().sendto(b"now", (B_IP, 8100))
        selector.join(10)
        assert result == [([rx], [])]
        assert rx.recv(10) == b"now"
        assert b.stats()["kcont.worker_runs"] == 0


def test_lrp_receiver_runs_the_socket_work_itself() -> None:
    link = LinkPair()
    with Stack(link.a, f"{A_IP}/24", dispatch="lrp") as a, \
            Stack(link.b, f"{B_IP}/24", dispatch="lrp", kcont_delay=30.0) as b:
        rx = bound(b, 8200, timeout=10)
        got: list[bytes] = []
        reader = threading.Thread(target=lambda: got.extend(rx.recv(10) for _ in range(3)))
        reader.start()
        tx = a.socket()
        for word in (b"one", b"two", b"three"):
            tx.sendto(word, (B_IP, 8200))
        reader.join(10)
        assert got == [b"one", b"two", b"three"]
        stats = b.stats()
        # The receiver ran the input itself: on a batch it pulled, or a
        # continuation it found pending; never a worker.
        assert stats["kcont.worker_runs"] == 0
        assert stats["kcont.inline_runs"] + stats["lrp.receiver_inputs"] >= 1


def test_kcont_workers_run_the_socket_work_after_the_delay() -> None:
    link = LinkPair()
    with Stack(link.a, f"{A_IP}/24", dispatch="kcont") as a, \
            Stack(link.b, f"{B_IP}/24", dispatch="kcont", workers=2) as b:
        rx = bound(b, 8300)
        a.socket().sendto(b"later", (B_IP, 8300))
        assert rx.recv(10) == b"later"
        stats = b.stats()
        assert stats["kcont.worker_runs"] >= 1 and stats["kcont.inline_runs"] == 0


def test_lrp_receiver_blocked_in_recv_pulls_the_interface_itself() -> None:
    link = LinkPair()
    with Stack(link.a, f"{A_IP}/24", dispatch="lrp") as a, \
            Stack(link.b, f"{B_IP}/24", dispatch="lrp") as b:
        rx = bound(b, 8400, timeout=10)
        got: list[bytes] = []
        reader = threading.Thread(target=lambda: got.extend(rx.recv(10) for _ in range(3)))
        reader.start()
        assert wait_until(lambda: b._pulling_sock is rx)
        tx = a.socket()
        for word in (b"one", b"two", b"three"):
            tx.sendto(word, (B_IP, 8400))
        reader.join(10)
        assert got == [b"one", b"two", b"three"]
        stats = b.stats()
        assert stats["lrp.receiver_pulling"] >= 1 and stats["lrp.receiver_pulls"] >= 1
        # Once the reader returned, the puller thread pulls again.
        assert b._pulling_sock is None


@pytest.mark.parametrize("value", [-1, 1.5, "10"])
def test_busy_poll_must_be_whole_microseconds(value: object) -> None:
    with pytest.raises(ValueError):
        Stack(LinkPair().a, f"{A_IP}/24", busy_poll=value)  # type: ignore[arg-type]


@pytest.mark.parametrize("on_copy,reads", [(True, 1.0), (False, 2.0)])
def test_payload_bytes_read_per_byte_delivered(on_copy: bool, reads: float) -> None:
    link = LinkPair()
    with Stack(link.a, "198.18.0.1/24", checksum_on_copy=on_copy) as a, \
            Stack(link.b, "198.18.0.2/24", checksum_on_copy=on_copy) as b:
        rx = bound(b, 9)
        tx = a.socket()
        for n in (1, 100, 1400):
            tx.sendto(bytes(n), ("198.18.0.2", 9))
            assert rx.recv(2048) == bytes(n)
        assert b.stats()["udp.payload_reads_per_byte"] == reads


@pytest.mark.parametrize("on_copy,counter", [(True, "udp.bad_checksum"),
                                             (False, "demux.l4_bad_checksum")])
def test_corrupted_datagram_is_dropped_and_counted(on_copy: bool, counter: str) -> None:
    from fastproto._core.udp import udp4_frame, udp4_template

    link = LinkPair()
    with Stack(link.b, "198.18.0.2/24", checksum_on_copy=on_copy) as b:
        rx = bound(b, 9, timeout=0.2)
        template = udp4_template(b.mac, link.a.mac, bytes([198, 18, 0, 1]), b.ip_bytes, 7, 9)
        bad = bytearray(udp4_frame(template, b"payload", 1))
        bad[42] ^= 1
        link.a.transmit([bytes(bad), udp4_frame(template, b"good", 2)])
        assert rx.recv(2048) == b"good"
        with pytest.raises(TimeoutError):
            rx.recv(2048)
        assert b.stats()[counter] == 1
