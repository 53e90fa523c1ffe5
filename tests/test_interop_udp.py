"""The stack against Linux over a TAP device: ping, UDP both ways, ICMP errors.

Each scenario runs in its own network namespace (tests/netns.py) where Linux
is 198.18.0.1/24 on ``fp0`` and a ``Stack`` on the TAP is 198.18.0.2; the
Linux sockets live in the same child process, so the kernel is the peer.
"""
import pytest

from fastproto.dispatch import MODELS
from netns import KERNEL_ADDR, STACK_ADDR, run_json

# Every scenario: a Stack on the TAP, its dispatch model given as MODEL.
SETUP = """
import os, select, socket, struct, threading, time
from fastproto.phy.tap import TapInterface
from fastproto.stack import Stack

def stack_on_tap(tap):
    tap.up()
    kernel_side("fp0")
    return Stack(tap, f"{STACK_ADDR}/24", mac=STACK_MAC, dispatch=MODEL)

def wait_for(cond, timeout=TIMEOUT):
    '''Poll until cond() holds; whether it did.'''
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True

"""

# UDP payload sizes: tiny, the largest unfragmented at MTU 1500, the
# smallest fragmented, several fragments, the largest datagram.
UDP_SIZES = [1, 1472, 1473, 8000, 65507]
# ICMP echo data sizes: the reply of the last three needs fragmenting.
PING_SIZES = [0, 56, 1472, 1473, 3000, 65507]


def script(model: str, body: str) -> str:
    return f"MODEL = {model!r}\n" + SETUP + body


def _ones_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


# -- 1. Linux pings the stack ---------------------------------------------------

@pytest.fixture(scope="module", params=MODELS)
def pinged(request):
    """Linux's ping socket (the one iputils uses) sends echo requests of several sizes."""
    return request.param, run_json(script(request.param, f"""
# Ping sockets are open to the groups in this range (per namespace); the
# default range admits nobody, root included.
with open("/proc/sys/net/ipv4/ping_group_range", "w") as f:
    f.write("0 2147483647")
out = {{"replies": []}}
with TapInterface("fp0") as tap, stack_on_tap(tap) as stack:
    pinger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
    pinger.settimeout(TIMEOUT)
    pinger.bind((KERNEL_ADDR, 0))
    # A ping socket's port is its echo identifier: the kernel writes it into
    # each request and hands the socket the replies that carry it.
    out["ident"] = pinger.getsockname()[1]
    for seq, size in enumerate({PING_SIZES!r}, 1):
        data = os.urandom(size)
        pinger.sendto(struct.pack("!BBHHH", 8, 0, 0, 0, seq) + data, (STACK_ADDR, 0))
        try:
            reply, peer = pinger.recvfrom(70000)
        except TimeoutError:
            out["replies"].append({{"size": size, "timeout": True}})
            break
        kind, code, _, ident, rseq = struct.unpack_from("!BBHHH", reply)
        out["replies"].append({{"size": size, "seq": seq, "type": kind, "code": code,
                               "ident": ident, "rseq": rseq, "same_data": reply[8:] == data,
                               "data_len": len(reply) - 8, "peer": peer[0],
                               "message": reply.hex() if size <= 64 else None}})
    out["stats"] = stack.stats()
report(out)
"""), timeout=20)


def test_linux_ping_gets_a_matching_reply_for_every_size(pinged):
    _, out = pinged
    assert [r["size"] for r in out["replies"]] == PING_SIZES
    for r in out["replies"]:
        assert "timeout" not in r, r
        assert (r["type"], r["code"]) == (0, 0)
        assert r["ident"] == out["ident"]
        assert r["rseq"] == r["seq"]
        assert r["data_len"] == r["size"]
        assert r["same_data"] is True
        assert r["peer"] == STACK_ADDR


def test_ping_replies_carry_a_valid_icmp_checksum(pinged):
    _, out = pinged
    for r in out["replies"]:
        if r["message"] is not None:
            assert _ones_sum(bytes.fromhex(r["message"])) == 0xFFFF


def test_ping_is_counted_and_fragmented_requests_reassembled(pinged):
    _, out = pinged
    s = out["stats"]
    assert s["icmp.echo_requests"] == s["icmp.echo_replies_sent"] == len(PING_SIZES)
    assert s["ip.reassembled"] == sum(1 for n in PING_SIZES if n > 1472)
    assert s["reasm.ok"] == s["ip.reassembled"]


# -- 2. and 5. UDP both ways, then the stack's counters ---------------------------

@pytest.fixture(scope="module", params=MODELS)
def udp_exchange(request):
    """Linux -> fastproto echo -> Linux, then fastproto -> Linux echo -> fastproto."""
    return request.param, run_json(script(request.param, f"""
SIZES = {UDP_SIZES!r}
out = {{"to_stack": [], "to_linux": [], "stack_echo_saw": [], "linux_echo_saw": []}}
with TapInterface("fp0") as tap:
    stack = stack_on_tap(tap)
    # The stack's echo server, in a thread of its own, with the fastproto API.
    echo = stack.socket()
    echo.bind(("", 7))
    echo.settimeout(TIMEOUT)
    def stack_echo():
        while True:
            try:
                data, peer = echo.recvfrom(70000)
            except (TimeoutError, OSError):
                return
            out["stack_echo_saw"].append([len(data), list(peer)])
            echo.sendto(data, peer)
    stack_thread = threading.Thread(target=stack_echo, daemon=True)
    stack_thread.start()

    # Linux's echo server for the other direction.
    linux_echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    linux_echo.bind((KERNEL_ADDR, 7))
    linux_echo.settimeout(0.1)
    done = threading.Event()
    def kernel_echo():
        while not done.is_set():
            try:
                data, peer = linux_echo.recvfrom(70000)
            except TimeoutError:
                continue
            out["linux_echo_saw"].append([len(data), list(peer)])
            linux_echo.sendto(data, peer)
    linux_thread = threading.Thread(target=kernel_echo, daemon=True)
    linux_thread.start()

    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind((KERNEL_ADDR, 0))
    client.settimeout(TIMEOUT)
    out["linux_client_port"] = client.getsockname()[1]
    for size in SIZES:
        data = os.urandom(size)
        client.sendto(data, (STACK_ADDR, 7))
        try:
            got, peer = client.recvfrom(70000)
        except TimeoutError:
            out["to_stack"].append({{"size": size, "timeout": True}})
            break
        out["to_stack"].append({{"size": size, "len": len(got), "same": got == data,
                                "peer": list(peer)}})

    fp_client = stack.socket()
    fp_client.settimeout(TIMEOUT)
    for size in SIZES:
        data = os.urandom(size)
        fp_client.sendto(data, (KERNEL_ADDR, 7))
        try:
            got, peer = fp_client.recvfrom(70000)
        except TimeoutError:
            out["to_linux"].append({{"size": size, "timeout": True}})
            break
        out["to_linux"].append({{"size": size, "len": len(got), "same": got == data,
                                "peer": list(peer)}})
    out["fp_client_port"] = fp_client.getsockname()[1]
    out["stats"] = stack.stats()
    done.set()
    stack.close()
    stack_thread.join(TIMEOUT)
    linux_thread.join(TIMEOUT)
    out["threads_left"] = [t.name for t in stack.threads()] + \\
        [t.name for t in (stack_thread, linux_thread) if t.is_alive()]
    out["pool_after_close"] = stack.pool.available
    out["pool_size"] = stack.pool.count
report(out)
"""), timeout=25)


def _check_echoes(results, peer):
    assert [r["size"] for r in results] == UDP_SIZES
    for r in results:
        assert "timeout" not in r, r
        assert r["len"] == r["size"]
        assert r["same"] is True
        assert r["peer"] == peer


def test_linux_datagrams_echoed_by_stack_socket_byte_exact(udp_exchange):
    _, out = udp_exchange
    _check_echoes(out["to_stack"], [STACK_ADDR, 7])
    assert out["stack_echo_saw"] == [[n, [KERNEL_ADDR, out["linux_client_port"]]] for n in UDP_SIZES]


def test_stack_datagrams_echoed_by_linux_socket_byte_exact(udp_exchange):
    _, out = udp_exchange
    _check_echoes(out["to_linux"], [KERNEL_ADDR, 7])
    assert out["linux_echo_saw"] == [[n, [STACK_ADDR, out["fp_client_port"]]] for n in UDP_SIZES]


def test_exchange_leaves_no_unexplained_drop(udp_exchange):
    _, out = udp_exchange
    s = out["stats"]
    handed_on = {"delivered", "pcq_full", "no_socket", "other", "bad_handle"}
    parse_errors = {k: v for k, v in s.items()
                    if k.startswith("demux.") and k[len("demux."):] not in handed_on and v}
    assert parse_errors == {}
    assert s["demux.bad_handle"] == 0
    assert {k: v for k, v in s.items() if k.startswith("drop.") and v} == {}
    assert [k for k in s if k.startswith("ip.handler_error_")] == []
    for k in ("udp.bad_checksum", "udp.bad_length", "udp.truncated", "udp.no_port",
              "udp.closed_drops", "ip.fragment_malformed", "icmp.bad_checksum",
              "reasm.overlap", "reasm.timeout", "reasm.too_long", "reasm.too_big",
              "reasm.bad_length", "reasm.bad_offset", "reasm.evicted_memory",
              "reasm.evicted_count", "reasm.inconsistent_end", "reasm.discarded_late",
              "arp.hold_overflow", "arp.pending_full", "arp.unresolved",
              "if.rx_no_buffer", "if.rx_oversize", "if.rx_errors", "if.tx_errors"):
        assert s.get(k, 0) == 0, k


def test_exchange_counts_every_datagram_once(udp_exchange):
    _, out = udp_exchange
    s = out["stats"]
    # 5 requests to the echo socket and 5 replies to the client socket.
    assert s["udp.delivered"] == 2 * len(UDP_SIZES)
    fragmented = sum(1 for n in UDP_SIZES if n > 1472)
    assert s["ip.reassembled"] == s["reasm.ok"] == 2 * fragmented


def test_stack_close_after_exchange_joins_threads_and_returns_buffers(udp_exchange):
    _, out = udp_exchange
    assert out["threads_left"] == []
    assert out["pool_after_close"] == out["pool_size"]


# -- 3. Linux's connected socket learns of a closed stack port ---------------------

@pytest.fixture(scope="module", params=MODELS)
def refused_by_stack(request):
    """Linux's connected UDP sockets send to a port with no stack socket."""
    return request.param, run_json(script(request.param, """
out = {}
with TapInterface("fp0") as tap, stack_on_tap(tap) as stack:
    def connected(port):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((KERNEL_ADDR, 0))
        s.connect((STACK_ADDR, port))
        s.settimeout(TIMEOUT)
        return s
    # the error comes out of the next recv ...
    a = connected(9)
    a.send(b"closed port")
    out["recv"] = outcome(lambda: a.recv(100))
    out["recv_again"] = outcome(lambda: (a.settimeout(0), a.recv(100))[1])
    # ... or out of the next send, once it has arrived (the socket polls as in error)
    b = connected(10)
    b.send(b"closed port")
    poller = select.poll()
    poller.register(b, select.POLLIN)
    out["pollerr"] = any(ev & select.POLLERR for _, ev in poller.poll(TIMEOUT * 1000))
    out["send"] = outcome(lambda: b.send(b"again"))
    # a datagram in fragments draws the error once it is whole
    c = connected(11)
    c.send(os.urandom(3000))
    out["recv_fragmented"] = outcome(lambda: c.recv(100))
    out["stats"] = stack.stats()
report(out)
"""), timeout=20)


def test_linux_connected_socket_gets_refused_on_next_recv(refused_by_stack):
    _, out = refused_by_stack
    assert out["recv"] == "ConnectionRefusedError"
    assert out["recv_again"] == "BlockingIOError"     # the error is reported once


def test_linux_connected_socket_gets_refused_on_next_send(refused_by_stack):
    _, out = refused_by_stack
    assert out["pollerr"] is True
    assert out["send"] == "ConnectionRefusedError"


def test_fragmented_datagram_to_closed_port_is_refused_once_whole(refused_by_stack):
    _, out = refused_by_stack
    assert out["recv_fragmented"] == "ConnectionRefusedError"
    s = out["stats"]
    assert s["udp.no_port"] == s["icmp.dest_unreach_sent"] == 3
    assert s["ip.reassembled"] == 1


# -- 4. the stack's connected socket learns of a closed Linux port -----------------

@pytest.fixture(scope="module", params=MODELS)
def refused_by_linux(request):
    """The stack's UDP sockets send to a Linux port with no socket."""
    return request.param, run_json(script(request.param, """
out = {}
with TapInterface("fp0") as tap, stack_on_tap(tap) as stack:
    a = stack.socket()
    a.connect((KERNEL_ADDR, 9))
    a.settimeout(TIMEOUT)
    a.send(b"closed port")
    out["recv"] = outcome(lambda: a.recv(100))
    a.setblocking(False)
    out["recv_again"] = outcome(lambda: a.recv(100))
    # a datagram in fragments: Linux reassembles it before answering
    b = stack.socket()
    b.connect((KERNEL_ADDR, 10))
    b.settimeout(TIMEOUT)
    b.send(os.urandom(3000))
    out["recv_fragmented"] = outcome(lambda: b.recv(100))
    # an unconnected socket is not told (as on Linux and BSD)
    ignored = stack.stats().get("icmp.errors_ignored", 0)
    c = stack.socket()
    c.sendto(b"closed port", (KERNEL_ADDR, 11))
    out["ignored_counted"] = wait_for(lambda: stack.stats().get("icmp.errors_ignored", 0) > ignored)
    c.setblocking(False)
    out["unconnected_recv"] = outcome(lambda: c.recvfrom(100))
    out["stats"] = stack.stats()
report(out)
"""), timeout=20)


def test_stack_connected_socket_gets_refused_on_next_recv(refused_by_linux):
    _, out = refused_by_linux
    assert out["recv"] == "ConnectionRefusedError"
    assert out["recv_again"] == "BlockingIOError"     # the error is reported once


def test_stack_fragmented_datagram_refused_by_linux(refused_by_linux):
    _, out = refused_by_linux
    assert out["recv_fragmented"] == "ConnectionRefusedError"


def test_stack_unconnected_socket_does_not_hear_of_port_unreachable(refused_by_linux):
    _, out = refused_by_linux
    assert out["ignored_counted"] is True
    assert out["unconnected_recv"] == "BlockingIOError"
    s = out["stats"]
    assert s["icmp.errors_delivered"] == 2
    assert s["icmp.errors_received"] == 3
