"""TCP against Linux over a TAP device: both directions byte-exact, refused ports,
resets, half-close, and curl fetching a page from a fastproto HTTP server."""
import pytest

from netns import run_json

SIZE = 4_000_000

SCRIPT = f"""
import hashlib, os, socket, subprocess, threading
from fastproto.phy.tap import TapInterface
from fastproto.stack import Stack
from fastproto.tcp_socket import SOCK_STREAM

DATA = os.urandom({SIZE})
out = {{}}
with TapInterface("fp0") as tap:
    tap.up()
    kernel_side("fp0")
    from fastproto.phy.fault_injector import FaultInjector
    # With LOSS, what the stack sends is lost and reordered on the way to Linux.
    dev = FaultInjector(tap, seed=7, loss=LOSS, reorder=LOSS / 2) if LOSS else tap
    with Stack(dev, f"{{STACK_ADDR}}/24", mac=bytes.fromhex("020000000002"), dispatch=MODEL,
               tcp={{"rto_min": 0.2}}) as stack:
        # 1. Linux client -> fastproto server: the server hashes what it got and
        #    sends it back, then sends the data back too (half-close on Linux's side).
        srv = stack.socket(socket.AF_INET, SOCK_STREAM)
        srv.bind(("", 5001))
        srv.listen(8)
        srv.settimeout(10)

        def serve():
            conn, _ = srv.accept()
            conn.settimeout(20)
            got = bytearray()
            while chunk := conn.recv(65536):
                got += chunk
            conn.sendall(hashlib.sha256(got).digest() + bytes(got))
            conn.close()
        t = threading.Thread(target=serve)
        t.start()
        lc = socket.create_connection((STACK_ADDR, 5001), timeout=20)
        lc.sendall(DATA)
        lc.shutdown(socket.SHUT_WR)
        back = bytearray()
        while chunk := lc.recv(1 << 16):
            back += chunk
        lc.close()
        t.join(20)
        out["linux_to_fastproto"] = bytes(back[:32]) == hashlib.sha256(DATA).digest()
        out["fastproto_to_linux_after_half_close"] = bytes(back[32:]) == DATA

        # 2. fastproto client -> Linux server.
        ls = socket.socket()
        ls.bind((KERNEL_ADDR, 5002))
        ls.listen(1)
        res = {{}}

        def linux_server():
            conn, _ = ls.accept()
            h = hashlib.sha256()
            while chunk := conn.recv(1 << 16):
                h.update(chunk)
            conn.sendall(h.digest())
            conn.close()
        t = threading.Thread(target=linux_server)
        t.start()
        c = stack.socket(socket.AF_INET, SOCK_STREAM)
        c.settimeout(20)
        c.connect((KERNEL_ADDR, 5002))
        c.sendall(DATA)
        c.shutdown(socket.SHUT_WR)
        digest = b""
        while chunk := c.recv(64):
            digest += chunk
        c.close()
        t.join(20)
        out["fastproto_to_linux"] = digest == hashlib.sha256(DATA).digest()

        # 3. A closed fastproto port refuses Linux; a closed Linux port refuses fastproto.
        try:
            socket.create_connection((STACK_ADDR, 5999), timeout=5)
            out["linux_refused"] = "connected"
        except ConnectionRefusedError:
            out["linux_refused"] = "refused"
        c = stack.socket(socket.AF_INET, SOCK_STREAM)
        c.settimeout(5)
        try:
            c.connect((KERNEL_ADDR, 5999))
            out["fastproto_refused"] = "connected"
        except ConnectionRefusedError:
            out["fastproto_refused"] = "refused"

        # 4. A fastproto abort (SO_LINGER 0) resets Linux's connection.
        import struct
        def abort():
            conn, _ = srv.accept()
            conn.recv(10)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()
        t = threading.Thread(target=abort)
        t.start()
        lc = socket.create_connection((STACK_ADDR, 5001), timeout=5)
        lc.sendall(b"hello")
        t.join(10)
        try:
            lc.recv(10)
            out["linux_reset"] = "no reset"
        except ConnectionResetError:
            out["linux_reset"] = "reset"

        # 5. curl fetches a page from a small HTTP server on the fastproto socket API.
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
        out["stats"] = {{k: v for k, v in stack.stats().items() if k.startswith("tcp.")}}
report(out)
"""


@pytest.fixture(scope="module", params=[("lrp", 0.0), ("inline", 0.0), ("lrp", 0.05)],
                ids=["lrp", "inline", "lrp-5%-loss"])
def linux_peer(request):
    model, loss = request.param
    out = run_json(f"MODEL = {model!r}\nLOSS = {loss!r}\n" + SCRIPT, timeout=240)
    if loss:
        # The impairment was real: our side had to retransmit.
        assert out["stats"]["tcp.retransmits"] + out["stats"].get("tcp.fast_retransmits", 0) > 0
    return out


def test_linux_client_to_fastproto_server_is_byte_exact(linux_peer):
    assert linux_peer["linux_to_fastproto"] is True


def test_fastproto_sends_after_the_linux_client_half_closed(linux_peer):
    assert linux_peer["fastproto_to_linux_after_half_close"] is True


def test_fastproto_client_to_linux_server_is_byte_exact(linux_peer):
    assert linux_peer["fastproto_to_linux"] is True


def test_closed_ports_refuse_both_ways(linux_peer):
    assert linux_peer["linux_refused"] == "refused"
    assert linux_peer["fastproto_refused"] == "refused"


def test_fastproto_abort_resets_the_linux_connection(linux_peer):
    assert linux_peer["linux_reset"] == "reset"


def test_curl_fetches_a_page_from_a_fastproto_http_server(linux_peer):
    assert linux_peer["curl_rc"] == 0
    assert linux_peer["curl"] == "<html><body>served by fastproto</body></html>"
