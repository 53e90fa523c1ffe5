"""TCP over IPv6 against Linux over a TAP device with offloads: 20 MB each way
byte-exact, Linux's IPv6 GSO super-frames cut in the core and ours sent as
super-frames.  (IPv4, with offloads on and off: test_interop_tcp.py.)"""
import pytest

from netns import run_json

SIZE6 = 20_000_000

SCRIPT6 = f"""
import hashlib, os, socket, threading
from fastproto.phy.tap import TapInterface
from fastproto.stack import Stack
from fastproto.tcp_socket import SOCK_STREAM

data = os.urandom({SIZE6})
want = hashlib.sha256(data).digest()

def read_all(conn):
    '''Read ``conn`` to EOF: (bytes, sha256 digest).'''
    h, n = hashlib.sha256(), 0
    while chunk := conn.recv(1 << 16):
        h.update(chunk)
        n += len(chunk)
    return n, h.digest()

out = {{}}
with TapInterface("fp0", offload=True) as tap:
    tap.up()
    kernel_side("fp0", ipv6=KERNEL_ADDR6)
    with Stack(tap, f"{{STACK_ADDR}}/24", mac=STACK_MAC,
               ipv6=f"{{STACK_ADDR6}}/{{PREFIX_LEN6}}") as stack:
        res = {{}}
        # Linux client -> fastproto server over IPv6
        srv = stack.socket(socket.AF_INET6, SOCK_STREAM)
        srv.bind(("", 5001))
        srv.listen(4)
        srv.settimeout(10)

        def serve():
            conn, _ = srv.accept()
            conn.settimeout(30)
            res["to_fastproto"] = read_all(conn) == ({SIZE6}, want)
            conn.close()
        t = threading.Thread(target=serve)
        t.start()
        lc = socket.create_connection((STACK_ADDR6, 5001), timeout=30)
        lc.sendall(data)
        lc.shutdown(socket.SHUT_WR)
        lc.recv(1)
        lc.close()
        t.join(30)
        # fastproto client -> Linux server over IPv6
        ls = socket.socket(socket.AF_INET6)
        ls.bind((KERNEL_ADDR6, 5002))
        ls.listen(1)

        def linux_server():
            conn, _ = ls.accept()
            conn.settimeout(30)
            res["to_linux"] = read_all(conn) == ({SIZE6}, want)
            conn.close()
        t = threading.Thread(target=linux_server)
        t.start()
        c = stack.socket(socket.AF_INET6, SOCK_STREAM)
        c.settimeout(30)
        c.connect((KERNEL_ADDR6, 5002))
        c.sendall(data)
        c.shutdown(socket.SHUT_WR)
        c.recv(1)
        c.close()
        t.join(30)
        out.update(res)
        out["device"] = tap.stats()
report(out)
"""


@pytest.fixture(scope="module")
def linux_peer6():
    return run_json(SCRIPT6, timeout=300)


def test_ipv6_linux_client_to_fastproto_server_is_byte_exact(linux_peer6):
    assert linux_peer6["to_fastproto"] is True


def test_ipv6_fastproto_client_to_linux_server_is_byte_exact(linux_peer6):
    assert linux_peer6["to_linux"] is True


def test_ipv6_super_frames_went_both_ways(linux_peer6):
    device = linux_peer6["device"]
    assert device["rx_gso_frames"] > 0 and device["tx_gso_frames"] > 0
    assert device["rx_gso_bad_headers"] == 0 and device["tx_errors"] == 0
