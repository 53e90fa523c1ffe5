"""Captures of the stack's traffic open in tshark with no checksum errors.

Two sources: two stacks on a LinkPair, and the stack against Linux over a TAP
device in a network namespace (tests/netns.py).  Each writes a pcap with
``PcapCapture`` while it pings, exchanges UDP datagrams both ways (some
fragmented) and sends to a closed port; tshark, an independent dissector,
then reads the file with every checksum check on.
"""
from __future__ import annotations

import shutil
import subprocess

import pytest

from netns import KERNEL_ADDR, STACK_ADDR, STACK_ADDR6, run_json

# Bad checksums (tshark's IP/UDP/TCP checks are off by default and turned on
# in ``tshark``; ICMP's are always on) and anything it could not dissect.
BAD = ('ip.checksum.status == "Bad" || udp.checksum.status == "Bad" || '
       'tcp.checksum.status == "Bad" || icmp.checksum.status == "Bad" || '
       'icmpv6.checksum.status == "Bad" || _ws.malformed || _ws.expert.severity >= "error"')
UDP_SIZES = [1, 1472, 1473, 8000, 65507]


def tshark(path: str, *args: str) -> str:
    """tshark's text output for ``path`` with checksum checks on; fails the test on error."""
    exe = shutil.which("tshark")
    assert exe is not None, "tshark is not installed (README's test command installs it)"
    argv = [exe, "-n", "-r", path]
    for pref in ("ip.check_checksum:TRUE", "udp.check_checksum:TRUE", "tcp.check_checksum:TRUE"):
        argv += ["-o", pref]
    proc = subprocess.run(argv + list(args), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def frame_count(path: str, display_filter: str = "") -> int:
    out = tshark(path, *(["-Y", display_filter] if display_filter else []), "-T", "fields",
                 "-e", "frame.number")
    return len(out.split())


def check_capture(path: str, frames_written: int) -> None:
    """tshark sees every frame, no bad checksum and nothing malformed."""
    assert frame_count(path) == frames_written
    bad = tshark(path, "-Y", BAD)
    assert bad == "", bad


# -- two stacks on a LinkPair -----------------------------------------------------

@pytest.fixture(scope="module")
def link_capture(tmp_path_factory):
    from fastproto.phy.capture import PcapCapture
    from fastproto.phy.link import LinkPair
    from fastproto.socket import AF_INET6
    from fastproto.stack import Stack

    path = str(tmp_path_factory.mktemp("pcap") / "link.pcap")
    link = LinkPair()
    cap = PcapCapture(link.a, path)
    with Stack(cap, "198.18.0.1/24", ipv6="2001:2::1/64") as a, \
            Stack(link.b, "198.18.0.2/24", ipv6="2001:2::2/64") as b:
        server = b.socket()
        server.bind(("", 7))
        server.settimeout(3.0)
        client = a.socket()
        client.settimeout(3.0)
        client.bind(("", 40000))
        for size in UDP_SIZES:
            client.sendto(bytes(range(256)) * (size // 256) + bytes(size % 256), ("198.18.0.2", 7))
            data, peer = server.recvfrom(70000)
            server.sendto(data, peer)
            assert client.recv(70000) == data
        a.ping("198.18.0.2", b"x" * 3000)
        # The same over IPv6: neighbour discovery, UDP (fragmented too), ICMPv6 echo.
        server6 = b.socket(AF_INET6)
        server6.bind(("", 7))
        server6.settimeout(3.0)
        client6 = a.socket(AF_INET6)
        client6.settimeout(3.0)
        client6.bind(("", 40006))
        for size in UDP_SIZES:
            client6.sendto(bytes(size), ("2001:2::2", 7))
            data, peer = server6.recvfrom(70000)
            server6.sendto(data, peer)
            assert client6.recv(70000) == data
        a.ping("2001:2::2", b"y" * 3000)
        closed = a.socket()
        closed.connect(("198.18.0.2", 9))
        closed.send(b"anyone?")
        with pytest.raises(ConnectionRefusedError):
            closed.settimeout(3.0)
            closed.recv(10)
    cap.close()
    return path, cap.stats()["capture_tx"] + cap.stats()["capture_rx"]


def test_link_capture_opens_in_tshark_with_no_checksum_errors(link_capture):
    path, written = link_capture
    check_capture(path, written)


def test_link_capture_shows_reassembled_datagrams_and_icmp(link_capture):
    path, _ = link_capture
    # tshark reassembles the IPv4 fragments into the UDP datagrams sent.
    lengths = tshark(path, "-Y", "udp.srcport == 40000 && ip.flags.mf == 0", "-T", "fields", "-e", "udp.length")
    assert sorted(int(n) for n in lengths.split()) == sorted(n + 8 for n in UDP_SIZES)
    assert frame_count(path, "icmp.type == 8") == 1
    assert frame_count(path, "icmp.type == 0") == 1
    assert frame_count(path, "icmp.type == 3 && icmp.code == 3") == 1
    assert frame_count(path, "arp.opcode == 1") >= 1


def test_link_capture_shows_ipv6_datagrams_echo_and_neighbour_discovery(link_capture):
    path, _ = link_capture
    lengths = tshark(path, "-Y", "udp.srcport == 40006 && ipv6", "-T", "fields", "-e", "udp.length")
    assert sorted(int(n) for n in lengths.split()) == sorted(n + 8 for n in UDP_SIZES)
    assert frame_count(path, "icmpv6.type == 128") == 1
    assert frame_count(path, "icmpv6.type == 129") == 1
    assert frame_count(path, "icmpv6.type == 135") >= 1
    assert frame_count(path, "icmpv6.type == 136") >= 1


def test_a_corrupted_frame_is_caught_by_the_check(link_capture, tmp_path):
    """The check itself can fail: one flipped bit in a UDP payload shows as a bad checksum."""
    from fastproto.phy.pcap import PcapReader, PcapWriter

    path, written = link_capture
    records = list(PcapReader(path))
    corrupt = str(tmp_path / "corrupt.pcap")
    with PcapWriter(corrupt) as writer:
        for i, (ts, frame) in enumerate(records):
            if i == 2:  # the first datagram: ARP request, ARP reply, then UDP
                payload = 14 + 20 + 8  # Ethernet, IPv4, UDP headers: the datagram's one byte
                frame = frame[:payload] + bytes([frame[payload] ^ 0x01]) + frame[payload + 1:]
            writer.write(frame, ts)
    bad = tshark(corrupt, "-Y", BAD, "-T", "fields", "-e", "frame.number")
    assert bad.split() == ["3"]


# -- Linux over a TAP device --------------------------------------------------------

@pytest.fixture(scope="module")
def tap_capture(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("pcap") / "tap.pcap")
    out = run_json(f"""
import os, socket, struct, threading
from fastproto.phy.capture import PcapCapture
from fastproto.phy.tap import TapInterface
from fastproto.stack import Stack

with open("/proc/sys/net/ipv4/ping_group_range", "w") as f:
    f.write("0 2147483647")
with TapInterface("fp0") as tap:
    tap.up()
    kernel_side("fp0", ipv6=KERNEL_ADDR6)
    cap = PcapCapture(tap, {path!r})
    with Stack(cap, f"{{STACK_ADDR}}/24", ipv6=f"{{STACK_ADDR6}}/{{PREFIX_LEN6}}",
               mac=bytes.fromhex("020000000002")) as stack:
        echo = stack.socket()
        echo.bind(("", 7))
        echo.settimeout(3.0)

        def serve():
            for _ in range({len(UDP_SIZES)}):
                data, peer = echo.recvfrom(70000)
                echo.sendto(data, peer)
        server = threading.Thread(target=serve)
        server.start()
        linux = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        linux.settimeout(3.0)
        echoed = []
        for size in {UDP_SIZES!r}:
            data = os.urandom(size)
            linux.sendto(data, (STACK_ADDR, 7))
            echoed.append(linux.recv(70000) == data)
        server.join()
        pinger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
        pinger.settimeout(3.0)
        pinger.sendto(struct.pack("!BBHHH", 8, 0, 0, 0, 1) + os.urandom(3000), (STACK_ADDR, 0))
        pinged = len(pinger.recv(70000)) == 3008
        refused = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        refused.settimeout(3.0)
        refused.connect((STACK_ADDR, 9))
        refused.send(b"anyone?")
        try:
            refused.recv(10)
            outcome = "answered"
        except ConnectionRefusedError:
            outcome = "refused"
        # IPv6: UDP to a fastproto echo socket, and an ICMPv6 echo.
        echo6 = stack.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        echo6.bind(("", 7))
        echo6.settimeout(3.0)
        linux6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        linux6.settimeout(3.0)
        echoed6 = []
        for size in (1, 3000):
            data = os.urandom(size)
            linux6.sendto(data, (STACK_ADDR6, 7))
            got, peer = echo6.recvfrom(70000)
            echo6.sendto(got, peer)
            echoed6.append(linux6.recv(70000) == data)
        pinger6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM, socket.IPPROTO_ICMPV6)
        pinger6.settimeout(3.0)
        pinger6.sendto(struct.pack("!BBHHH", 128, 0, 0, 0, 1) + os.urandom(100), (STACK_ADDR6, 0))
        pinged6 = len(pinger6.recv(70000)) == 108
    cap.close()
    report({{"echoed": echoed, "pinged": pinged, "refused": outcome, "echoed6": echoed6, "pinged6": pinged6,
            "written": cap.stats()["capture_tx"] + cap.stats()["capture_rx"]}})
""", timeout=30)
    return path, out


def test_tap_exchange_succeeded(tap_capture):
    _, out = tap_capture
    assert out["echoed"] == [True] * len(UDP_SIZES)
    assert out["pinged"] is True
    assert out["refused"] == "refused"
    assert out["echoed6"] == [True, True]
    assert out["pinged6"] is True


def test_tap_capture_opens_in_tshark_with_no_checksum_errors(tap_capture):
    path, out = tap_capture
    check_capture(path, out["written"])


def test_tap_capture_holds_both_directions(tap_capture):
    path, _ = tap_capture
    assert frame_count(path, f"ip.src == {KERNEL_ADDR} && udp.dstport == 7") >= len(UDP_SIZES)
    assert frame_count(path, f"ip.src == {STACK_ADDR} && udp.srcport == 7") >= len(UDP_SIZES)
    assert frame_count(path, f"ip.src == {STACK_ADDR} && icmp.type == 0") >= 1
    assert frame_count(path, f"ip.src == {STACK_ADDR} && icmp.type == 3 && icmp.code == 3") == 1
    assert frame_count(path, f"ipv6.src == {STACK_ADDR6} && udp.srcport == 7") >= 2
    assert frame_count(path, f"ipv6.src == {STACK_ADDR6} && icmpv6.type == 129") == 1
