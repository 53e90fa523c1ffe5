"""TCP against Linux over a TAP device: 100 MB each way byte-exact, the same
through loss and reordering in both directions (both Linux and fastproto must
retransmit), refused ports, resets, half-close, and curl fetching a page from a
fastproto HTTP server; all of it with the TAP's offloads off and on (on:
Linux's GSO super-frames are cut in the core, ours go out as super-frames)."""
import pytest

from netns import run_json

SIZE = 100_000_000
# Bytes the fastproto server sends after the Linux client half-closed.
AFTER_HALF_CLOSE = 1_000_000

SCRIPT = f"""
import hashlib, random, socket, struct, subprocess, threading, time
from fastproto.phy.tap import TapInterface
from fastproto.phy.fault_injector import FaultInjector
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

def linux_retransmits():
    '''RetransSegs of this namespace's TCP (RFC 4022 tcpRetransSegs).'''
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Tcp:")]
    return int(rows[1][rows[0].index("RetransSegs")])

out = {{}}
with TapInterface("fp0", offload=OFFLOAD) as tap:
    tap.up()
    kernel_side("fp0")
    # Round trips over the TAP take well under a millisecond: Linux's 200 ms
    # minimum RTO and delayed ACKs would leave a lossy transfer mostly idle.
    sh("ip", "route", "change", f"198.18.0.0/{{PREFIX_LEN}}", "dev", "fp0", "proto", "kernel",
       "scope", "link", "src", KERNEL_ADDR, "rto_min", "10ms", "quickack", "1")
    if LOSS:
        # Both directions impaired at our end of the TAP: Linux's segments are lost
        # and reordered on the way in (so Linux retransmits), ours on the way out.
        dev = FaultInjector(tap, seed=7, loss=LOSS, reorder=LOSS / 2, rx_loss=LOSS,
                            rx_reorder=LOSS / 2)
    else:
        dev = tap
    with Stack(dev, f"{{STACK_ADDR}}/24", mac=STACK_MAC, dispatch=MODEL,
               tcp={{"rto_min": 0.01, "delack": 0.005}}) as stack:
        retransmits_before = linux_retransmits()

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
        t0 = time.perf_counter()
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
        out["linux_to_fastproto_s"] = time.perf_counter() - t0
        out["linux_to_fastproto"] = (res.get("n") == SIZE and digest == stream_digest(1, SIZE))
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
        t0 = time.perf_counter()
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
        out["fastproto_to_linux_s"] = time.perf_counter() - t0
        out["fastproto_to_linux"] = res.get("linux_n") == SIZE and digest == stream_digest(2, SIZE)
        out["linux_retransmits"] = linux_retransmits() - retransmits_before

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
        out["device"] = dev.stats()
        out["tap"] = tap.stats()
report(out)
"""

# id: (dispatch model, loss and reordering each way, bytes each way, TAP offloads)
CASES = {"lrp": ("lrp", 0.0, SIZE, False), "inline": ("inline", 0.0, SIZE, False),
         "lrp-5%-loss": ("lrp", 0.05, SIZE, False),
         "lrp-offload": ("lrp", 0.0, SIZE, True), "inline-offload": ("inline", 0.0, SIZE, True)}
OFFLOADED = [case for case, (_, _, _, offload) in CASES.items() if offload]
_results: dict = {}


def scenario(case: str) -> dict:
    """What the script reported for ``case`` (run once per module)."""
    if case not in _results:
        model, loss, size, offload = CASES[case]
        _results[case] = run_json(f"MODEL = {model!r}\nLOSS = {loss!r}\nSIZE = {size}\n"
                                  f"OFFLOAD = {offload!r}\n" + SCRIPT, timeout=600)
    return _results[case]


@pytest.fixture(scope="module", params=list(CASES))
def linux_peer(request):
    return scenario(request.param)


@pytest.fixture(scope="module", params=OFFLOADED)
def offloaded_peer(request):
    return scenario(request.param)


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


def test_loss_both_ways_makes_linux_and_fastproto_retransmit():
    out = scenario("lrp-5%-loss")
    device = out["device"]
    # Frames were lost in each direction at our end of the TAP ...
    assert device["fault_lost"] > 0 and device["fault_rx_lost"] > 0
    assert device["fault_reordered"] > 0 and device["fault_rx_reordered"] > 0
    # ... so Linux retransmitted what we never received, and we what it never did.
    assert out["linux_retransmits"] > 0
    assert out["stats"]["tcp.retransmits"] + out["stats"].get("tcp.fast_retransmits", 0) > 0


def test_linux_sent_super_frames_that_were_segmented(offloaded_peer):
    tap = offloaded_peer["tap"]
    assert tap["rx_gso_frames"] > 0
    # a super-frame is at least two segments
    assert tap["rx_gso_segments"] >= 2 * tap["rx_gso_frames"]
    assert tap["rx_csum_completed"] > 0


def test_fastproto_segments_went_to_linux_as_super_frames(offloaded_peer):
    tap = offloaded_peer["tap"]
    assert tap["tx_gso_frames"] > 0
    assert tap["tx_gso_segments"] >= 2 * tap["tx_gso_frames"]


def test_no_frame_from_linux_was_dropped_as_malformed(offloaded_peer):
    tap = offloaded_peer["tap"]
    for reason in ("rx_vnet_truncated", "rx_gso_bad_type", "rx_gso_zero_size",
                   "rx_gso_bad_hdr_len", "rx_csum_bad_offset", "rx_gso_bad_headers",
                   "rx_gso_too_big", "rx_oversize", "rx_errors", "tx_errors"):
        assert tap[reason] == 0, reason
