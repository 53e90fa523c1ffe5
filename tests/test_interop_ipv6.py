"""The stack against Linux over IPv6 on a TAP device: Neighbor Discovery, ping,
UDP both ways with fragments, port unreachable.

Each scenario runs in its own network namespace (tests/netns.py) where Linux
is 2001:2::1/64 on ``fp0`` (RFC 5180 benchmarking space, added with
``nodad``) and a ``Stack`` on the TAP is 2001:2::2; the Linux sockets live in
the same child process, so the kernel is the peer.
"""
import pytest

from netns import KERNEL_ADDR6, STACK_ADDR6, run_json

SETUP = """
import os, socket, struct, threading, time
from fastproto.phy.tap import TapInterface
from fastproto.stack import Stack

def stack_on_tap(tap):
    tap.up()
    kernel_side("fp0", ipv6=KERNEL_ADDR6)
    return Stack(tap, f"{STACK_ADDR}/24", mac=STACK_MAC, dispatch=MODEL,
                 ipv6=f"{STACK_ADDR6}/{PREFIX_LEN6}")

"""

# UDP payload sizes: tiny, the largest unfragmented at MTU 1500 (1500 - 40 - 8),
# the smallest fragmented, several fragments, the largest IPv6 datagram.
UDP_SIZES = [1, 1452, 1453, 8000, 65527]
# ICMPv6 echo data sizes: the last ones come and go in fragments.
PING_SIZES = [0, 56, 1452, 1453, 3000, 65000]


def script(model: str, body: str) -> str:
    return f"MODEL = {model!r}\n" + SETUP + body


@pytest.fixture(scope="module", params=["lrp", "inline"])
def linux_peer(request):
    """Linux pings the stack, exchanges UDP datagrams with it both ways, and its
    connected socket sends to a closed port."""
    return request.param, run_json(script(request.param, f"""
# Ping sockets (the ones iputils ping uses) are open to the groups in this range.
with open("/proc/sys/net/ipv4/ping_group_range", "w") as f:
    f.write("0 2147483647")
out = {{"replies": [], "to_stack": [], "to_linux": []}}
with TapInterface("fp0") as tap, stack_on_tap(tap) as stack:
    out["stack_ll"] = stack.ll6
    pinger = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM, socket.IPPROTO_ICMPV6)
    pinger.settimeout(TIMEOUT)
    pinger.bind((KERNEL_ADDR6, 0))
    out["ident"] = pinger.getsockname()[1]
    for seq, size in enumerate({PING_SIZES!r}, 1):
        data = os.urandom(size)
        pinger.sendto(struct.pack("!BBHHH", 128, 0, 0, 0, seq) + data, (STACK_ADDR6, 0))
        try:
            reply, peer = pinger.recvfrom(70000)
        except TimeoutError:
            out["replies"].append({{"size": size, "timeout": True}})
            break
        kind, code, _, ident, rseq = struct.unpack_from("!BBHHH", reply)
        out["replies"].append({{"size": size, "seq": seq, "type": kind, "code": code,
                               "ident": ident, "rseq": rseq, "same_data": reply[8:] == data,
                               "peer": peer[0]}})

    # fastproto's echo server on an AF_INET6 UDP socket.
    echo = stack.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    echo.bind(("", 7))
    echo.settimeout(TIMEOUT)
    def stack_echo():
        while True:
            try:
                data, peer = echo.recvfrom(70000)
            except (TimeoutError, OSError):
                return
            echo.sendto(data, peer)
    threading.Thread(target=stack_echo, daemon=True).start()
    client = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    client.bind((KERNEL_ADDR6, 0))
    client.settimeout(TIMEOUT)
    out["linux_port"] = client.getsockname()[1]
    for size in {UDP_SIZES!r}:
        data = os.urandom(size)
        client.sendto(data, (STACK_ADDR6, 7))
        try:
            got, peer = client.recvfrom(70000)
        except TimeoutError:
            out["to_stack"].append({{"size": size, "timeout": True}})
            break
        out["to_stack"].append({{"size": size, "same": got == data, "peer": list(peer)}})

    # Linux's echo server, fastproto's client.
    linux_echo = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    linux_echo.bind((KERNEL_ADDR6, 7))
    linux_echo.settimeout(0.1)
    done = threading.Event()
    def kernel_echo():
        while not done.is_set():
            try:
                data, peer = linux_echo.recvfrom(70000)
            except TimeoutError:
                continue
            linux_echo.sendto(data, peer)
    threading.Thread(target=kernel_echo, daemon=True).start()
    fp = stack.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    fp.settimeout(TIMEOUT)
    for size in {UDP_SIZES!r}:
        data = os.urandom(size)
        fp.sendto(data, (KERNEL_ADDR6, 7))
        try:
            got, peer = fp.recvfrom(70000)
        except TimeoutError:
            out["to_linux"].append({{"size": size, "timeout": True}})
            break
        out["to_linux"].append({{"size": size, "same": got == data, "peer": list(peer)}})
    done.set()

    # Linux's connected socket to a closed fastproto port, small and in fragments.
    refused = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    refused.connect((STACK_ADDR6, 9))
    refused.settimeout(TIMEOUT)
    refused.send(b"closed port")
    out["refused"] = outcome(lambda: refused.recv(100))
    refused.send(os.urandom(3000))
    out["refused_fragmented"] = outcome(lambda: refused.recv(100))
    # fastproto's connected socket to a closed Linux port.
    fp_refused = stack.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    fp_refused.connect((KERNEL_ADDR6, 9))
    fp_refused.settimeout(TIMEOUT)
    fp_refused.send(b"closed port")
    out["fp_refused"] = outcome(lambda: fp_refused.recv(100))
    # fastproto pings Linux, on the global and on Linux's link-local address.
    out["fp_ping"] = outcome(lambda: stack.ping(KERNEL_ADDR6, b"x" * 100, timeout=TIMEOUT))
    words = [line.split() for line in sh("ip", "-6", "-o", "addr", "show", "dev",
                                         "fp0").splitlines() if "scope link" in line]
    lladdr = [w[w.index("inet6") + 1].split("/")[0] for w in words]
    out["fp_ping_ll"] = outcome(lambda: stack.ping(lladdr[0], timeout=TIMEOUT))
    out["neigh"] = sh("ip", "-6", "neigh", "show", "dev", "fp0")
    out["stats"] = stack.stats()
    out["threads"] = [t.name for t in stack.threads()]
    out["last_error"] = repr(stack.last_error)
report(out)
"""), timeout=40)


def test_linux_ping6_gets_a_matching_reply_for_every_size(linux_peer):
    _, out = linux_peer
    assert [r["size"] for r in out["replies"]] == PING_SIZES
    for r in out["replies"]:
        assert "timeout" not in r, r
        assert (r["type"], r["code"]) == (129, 0)
        assert r["ident"] == out["ident"]
        assert r["rseq"] == r["seq"]
        assert r["same_data"] is True
        assert r["peer"] == STACK_ADDR6


def test_linux_resolved_the_stack_by_neighbor_discovery(linux_peer):
    _, out = linux_peer
    assert STACK_ADDR6 in out["neigh"]
    assert "02:00:00:00:00:02" in out["neigh"]
    s = out["stats"]
    assert s["nd.ns_received"] >= 1
    assert s["nd.na_sent"] >= 1


def test_linux_datagrams_echoed_by_stack_ipv6_socket_byte_exact(linux_peer):
    _, out = linux_peer
    assert [r["size"] for r in out["to_stack"]] == UDP_SIZES
    for r in out["to_stack"]:
        assert r.get("same") is True, r
        assert r["peer"][:2] == [STACK_ADDR6, 7]


def test_stack_datagrams_echoed_by_linux_byte_exact(linux_peer):
    _, out = linux_peer
    assert [r["size"] for r in out["to_linux"]] == UDP_SIZES
    for r in out["to_linux"]:
        assert r.get("same") is True, r
        assert r["peer"] == [KERNEL_ADDR6, 7, 0, 0]


def test_large_datagrams_were_fragmented_and_reassembled(linux_peer):
    _, out = linux_peer
    s = out["stats"]
    big = sum(1 for n in UDP_SIZES if n > 1452)
    assert s["ip6.fragments_sent"] > 0
    # each big datagram reassembled twice (Linux's, and Linux's echo of ours), plus pings
    assert s["ip6.reassembled"] >= 2 * big


def test_linux_connected_socket_refused_by_stack(linux_peer):
    _, out = linux_peer
    assert out["refused"] == "ConnectionRefusedError"
    assert out["refused_fragmented"] == "ConnectionRefusedError"
    assert out["stats"]["icmp6.out_dest_unreach"] == 2


def test_stack_connected_socket_refused_by_linux(linux_peer):
    _, out = linux_peer
    assert out["fp_refused"] == "ConnectionRefusedError"
    assert out["stats"]["icmp6.errors_delivered"] == 1


def test_stack_pings_linux_on_global_and_link_local(linux_peer):
    _, out = linux_peer
    assert out["fp_ping"].startswith("ok:")
    assert out["fp_ping_ll"].startswith("ok:")


def test_no_unexplained_drop_and_no_handler_error(linux_peer):
    _, out = linux_peer
    s = out["stats"]
    assert not [k for k in s if k.startswith("ip.handler_error")]
    for k in ("udp6.bad_checksum", "icmp6.bad_checksum", "nd.bad_hop_limit", "nd.malformed",
              "demux.l4_bad_checksum", "demux.udp_zero_checksum", "reasm.overlap",
              "reasm.timeout", "nd.unresolved", "nd.hold_overflow"):
        assert s.get(k, 0) == 0, k
