"""TCP against Linux over a TAP device with offloads on (IFF_VNET_HDR, checksum
and TSO): Linux sends 64 KiB super-frames with partial checksums, which the
device cuts into segments before the stack sees them, and the stack's runs of
segments reach Linux as super-frames.  100 MB each way byte-exact, half-close,
curl fetching a page, and proof that super-frames really went both ways."""
import pytest

from netns import run_json

SIZE = 100_000_000
# Bytes the fastproto server sends after the Linux client half-closed.
AFTER_HALF_CLOSE = 1_000_000

SCRIPT = f"""
import hashlib, random, socket, subprocess, threading, time
from fastproto.phy.tap import TapInterface
from fastproto.stack import Stack
from fastproto.tcp_socket import SOCK_STREAM

BLOCK = 1 << 18
_SOURCE = random.Random(5).randbytes(1 << 22)

def blocks(seed, size):
    '''``size`` bytes of a deterministic stream, in blocks: slices of one random
    buffer at offsets that differ per block, so the stream does not repeat.'''
    view = memoryview(_SOURCE)
    k = 0
    while size > 0:
        n = min(BLOCK, size)
        off = (seed * 7919 + k * 104729) % (len(_SOURCE) - BLOCK)
        yield view[off:off + n]
        size -= n
        k += 1

def stream_digest(seed, size):
    h = hashlib.sha256()
    for b in blocks(seed, size):
        h.update(b)
    return h.digest()

def read_all(conn, h):
    '''Read ``conn`` to EOF into the hash ``h``; the byte count.'''
    n = 0
    while chunk := conn.recv(1 << 16):
        h.update(chunk)
        n += len(chunk)
    return n

out = {{}}
with TapInterface("fp0", offload=True) as tap:
    tap.up()
    kernel_side("fp0")
    with Stack(tap, f"{{STACK_ADDR}}/24", mac=STACK_MAC, dispatch=MODEL,
               tcp={{"rto_min": 0.01, "delack": 0.005}}) as stack:
        # 1. Linux client -> fastproto server: the server hashes what it got, sends
        #    the digest, then more data after Linux's half-close.
        srv = stack.socket(socket.AF_INET, SOCK_STREAM)
        srv.bind(("", 5001))
        srv.listen(8)
        srv.settimeout(10)
        res = {{}}

        def serve():
            conn, _ = srv.accept()
            conn.settimeout(30)
            h = hashlib.sha256()
            res["n"] = read_all(conn, h)
            conn.sendall(h.digest())
            for b in blocks(3, {AFTER_HALF_CLOSE}):
                conn.sendall(b)
            conn.close()
        t = threading.Thread(target=serve)
        t.start()
        lc = socket.create_connection((STACK_ADDR, 5001), timeout=30)
        for b in blocks(1, SIZE):
            lc.sendall(b)
        lc.shutdown(socket.SHUT_WR)
        digest = b""
        while len(digest) < 32 and (chunk := lc.recv(32 - len(digest))):
            digest += chunk
        h = hashlib.sha256()
        n_after = read_all(lc, h)
        lc.close()
        t.join(30)
        out["linux_to_fastproto"] = (res.get("n") == SIZE and digest == stream_digest(1, SIZE))
        out["linux_to_fastproto_n"] = res.get("n")
        out["fastproto_to_linux_after_half_close"] = (
            n_after == {AFTER_HALF_CLOSE} and h.digest() == stream_digest(3, {AFTER_HALF_CLOSE}))

        # 2. fastproto client -> Linux server.
        ls = socket.socket()
        ls.bind((KERNEL_ADDR, 5002))
        ls.listen(1)

        def linux_server():
            conn, _ = ls.accept()
            conn.settimeout(30)
            h = hashlib.sha256()
            res["linux_n"] = read_all(conn, h)
            conn.sendall(h.digest())
            conn.close()
        t = threading.Thread(target=linux_server)
        t.start()
        c = stack.socket(socket.AF_INET, SOCK_STREAM)
        c.settimeout(30)
        c.connect((KERNEL_ADDR, 5002))
        for b in blocks(2, SIZE):
            c.sendall(b)
        c.shutdown(socket.SHUT_WR)
        digest = b""
        while chunk := c.recv(64):
            digest += chunk
        c.close()
        t.join(30)
        out["fastproto_to_linux"] = res.get("linux_n") == SIZE and digest == stream_digest(2, SIZE)

        # 3. curl fetches a page from a small HTTP server on the fastproto socket API.
        page = b"<html><body>served by fastproto</body></html>"
        def http():
            conn, _ = srv.accept()
            conn.settimeout(5)
            request = b""
            while b"\\r\\n\\r\\n" not in request:
                request += conn.recv(4096)
            conn.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Type: text/html\\r\\nContent-Length: "
                         + str(len(page)).encode() + b"\\r\\nConnection: close\\r\\n\\r\\n" + page)
            conn.close()
        t = threading.Thread(target=http)
        t.start()
        got = subprocess.run(["curl", "-sS", "--max-time", "10", f"http://{{STACK_ADDR}}:5001/"],
                             capture_output=True)
        t.join(10)
        out["curl"] = got.stdout.decode(errors="replace")
        out["curl_rc"] = got.returncode
        out["device"] = tap.stats()
report(out)
"""

_results: dict = {}


@pytest.fixture(scope="module", params=["lrp", "inline"])
def linux_peer(request):
    """What the script reported for one dispatch model (run once per module)."""
    if request.param not in _results:
        _results[request.param] = run_json(
            f"MODEL = {request.param!r}\nSIZE = {SIZE}\n" + SCRIPT,
            timeout=600)
    return _results[request.param]


def test_linux_client_to_fastproto_server_is_byte_exact(linux_peer):
    assert linux_peer["linux_to_fastproto"] is True, linux_peer["linux_to_fastproto_n"]


def test_fastproto_sends_after_the_linux_client_half_closed(linux_peer):
    assert linux_peer["fastproto_to_linux_after_half_close"] is True


def test_fastproto_client_to_linux_server_is_byte_exact(linux_peer):
    assert linux_peer["fastproto_to_linux"] is True


def test_curl_fetches_a_page_from_a_fastproto_http_server(linux_peer):
    assert linux_peer["curl_rc"] == 0
    assert linux_peer["curl"] == "<html><body>served by fastproto</body></html>"


def test_linux_sent_super_frames_that_were_segmented(linux_peer):
    device = linux_peer["device"]
    assert device["rx_gso_frames"] > 0
    # a super-frame is at least two segments
    assert device["rx_gso_segments"] >= 2 * device["rx_gso_frames"]
    assert device["rx_csum_completed"] > 0


def test_fastproto_segments_went_to_linux_as_super_frames(linux_peer):
    device = linux_peer["device"]
    assert device["tx_gso_frames"] > 0
    assert device["tx_gso_segments"] >= 2 * device["tx_gso_frames"]


def test_no_frame_from_linux_was_dropped_as_malformed(linux_peer):
    device = linux_peer["device"]
    for reason in ("rx_vnet_truncated", "rx_gso_bad_type", "rx_gso_zero_size",
                   "rx_gso_bad_hdr_len", "rx_csum_bad_offset", "rx_gso_bad_headers",
                   "rx_gso_too_big", "rx_oversize", "rx_errors", "tx_errors"):
        assert device[reason] == 0, reason


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
