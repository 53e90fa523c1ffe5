"""TapInterface against Linux: each scenario runs in its own network namespace (tests/netns.py)."""
import errno
import socket

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from fastproto.phy.tap import TapInterface
from netns import KERNEL_ADDR, STACK_ADDR, run_json

# What every scenario starts with: a TAP device "fp0" whose Linux side is
# 198.18.0.1/24, and helpers to pull frames and parse them.
SETUP = """
import socket, time
import numpy as np
import fastproto
from fastproto.phy.tap import TapInterface
from fastproto.wire import ethernet, ipv4, udp, arp, ARP_REPLY, ETH_P_IP, ETH_P_ARP

STACK_MAC = bytes.fromhex("020000000002")

def pull(tap, pool, want, timeout=3.0):
    '''Receive until want(row, frame) holds for a frame; (row, frame) or None.'''
    h = np.zeros(16, np.uint64); l = np.zeros(16, np.uint32)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tap.wait(0.2)
        n = tap.receive_into(pool, h, l)
        if n == 0:
            continue
        rows = fastproto.parse(pool.data, l[:n], h[:n])
        found = None
        for i in range(n):
            frame = bytes(pool.data[h[i], :l[i]])
            if found is None and want(rows[i], frame):
                found = (rows[i], frame)
        pool.free_many(h[:n])
        if found:
            return found
    return None

def is_arp_request_for(addr):
    target = bytes(10) + b"\\xff\\xff" + socket.inet_aton(addr)
    return lambda row, frame: row["ethertype"] == ETH_P_ARP and row["arp_op"] == 1 \\
        and bytes(row["dst"]) == target
"""


@pytest.fixture(scope="module")
def exchange():
    """Linux ARPs for the stack's address, the stack answers and sends UDP, Linux replies."""
    return run_json(SETUP + """
with TapInterface("fp0", mtu=1400, mac="02:00:00:00:00:01") as tap:
    pool = fastproto.BufferPool(64, 2048)
    tap.up()
    kernel_side("fp0")
    link = __import__("json").loads(sh("ip", "-j", "link", "show", "fp0"))[0]
    linux = kernel_udp_socket(5555)

    # (1) Linux resolves 198.18.0.2 before its first datagram there
    linux.sendto(b"hello", (STACK_ADDR, 7777))
    found = pull(tap, pool, is_arp_request_for(STACK_ADDR))
    row, req = found
    rx_after_arp = tap.stats()

    # (2) the stack answers the ARP and sends a datagram, one frame each way of transmitting
    reply = ethernet(tap.mac, STACK_MAC, ETH_P_ARP,
                     arp(ARP_REPLY, STACK_MAC, STACK_ADDR, tap.mac, KERNEL_ADDR))
    payload = bytes(range(256)) * 3
    dgram = ethernet(tap.mac, STACK_MAC, ETH_P_IP,
                     ipv4(STACK_ADDR, KERNEL_ADDR, 17, udp(STACK_ADDR, KERNEL_ADDR, 4242, 5555, payload)))
    sent_frames = tap.transmit([reply])
    h = pool.alloc_many(2)
    pool.data[h[0], :len(dgram)] = np.frombuffer(dgram, np.uint8)
    bad = h[1]
    pool.free(bad)      # no longer allocated: must be refused, not read
    sent_handles = tap.transmit_handles(pool, np.array([h[0], bad], np.uint64),
                                        np.array([len(dgram), 60], np.uint32))
    pool.free(h[0])
    got, peer = linux.recvfrom(4096)

    # Linux now knows 198.18.0.2's MAC: its reply comes straight out as UDP
    linux.sendto(b"pong", (STACK_ADDR, 4242))
    back = pull(tap, pool, lambda row, frame: row["dport"] == 4242 and row["ethertype"] == ETH_P_IP)
    report({
        "link_mtu": link["mtu"], "link_mac": link["address"], "tap_mac": tap.mac.hex(),
        "arp_status": int(row["status"]), "arp_src": bytes(row["src"]).hex(),
        "arp_sha": bytes(row["arp_sha"]).hex(), "arp_dst_mac": bytes(row["dst_mac"]).hex(),
        "rx_after_arp": rx_after_arp,
        "sent_frames": sent_frames, "sent_handles": sent_handles,
        "got": got.hex(), "payload": payload.hex(), "peer": list(peer),
        "back_payload": None if back is None else back[1][back[0]["payload_off"]:
                                                          back[0]["payload_off"] + back[0]["payload_len"]].hex(),
        "back_dst_mac": None if back is None else bytes(back[0]["dst_mac"]).hex(),
        "stats": tap.stats(), "dgram_len": len(dgram), "reply_len": len(reply),
    })
""")


def test_device_takes_the_requested_mtu_and_mac(exchange):
    assert exchange["link_mtu"] == 1400
    assert exchange["link_mac"] == "02:00:00:00:00:01"
    assert exchange["tap_mac"] == "020000000001"


def test_kernel_arp_request_arrives_through_receive_into(exchange):
    assert exchange["arp_status"] == 0
    assert exchange["arp_src"] == (bytes(10) + b"\xff\xff" + socket.inet_aton(KERNEL_ADDR)).hex()
    assert exchange["arp_sha"] == exchange["tap_mac"]
    assert exchange["arp_dst_mac"] == "ffffffffffff"


def test_receive_counts_frames_and_bytes(exchange):
    rx = exchange["rx_after_arp"]
    assert rx["rx_frames"] >= 1
    assert rx["rx_bytes"] >= 42 * rx["rx_frames"]
    assert rx["rx_no_buffer"] == rx["rx_oversize"] == rx["rx_errors"] == 0


def test_transmitted_udp_datagram_reaches_linux_socket_byte_exact(exchange):
    assert exchange["sent_frames"] == 1
    assert exchange["got"] == exchange["payload"]
    assert exchange["peer"] == [STACK_ADDR, 4242]


def test_transmit_handles_sends_from_pool_and_refuses_freed_buffer(exchange):
    assert exchange["sent_handles"] == 1
    assert exchange["stats"]["tx_bad_handle"] == 1


def test_linux_reply_arrives_after_arp_answer(exchange):
    assert exchange["back_payload"] == b"pong".hex()
    assert exchange["back_dst_mac"] == "020000000002"


def test_transmit_counts_frames_bytes_and_errors(exchange):
    s = exchange["stats"]
    assert s["tx_frames"] == 2
    assert s["tx_bytes"] == exchange["dgram_len"] + exchange["reply_len"]
    assert s["tx_errors"] == 1
    assert s["tx_oversize"] == s["tx_runt"] == s["tx_write_failed"] == s["tx_dropped_down"] == 0


@pytest.fixture(scope="module")
def unhappy():
    """Oversize, runt, down, exhausted pool, short buffers, closed device."""
    return run_json(SETUP + """
out = {}
tap = TapInterface("fp0", mtu=1500)
out["down_wait"] = tap.wait(0.05)
pool = fastproto.BufferPool(4, 2048)
h = np.zeros(4, np.uint64); l = np.zeros(4, np.uint32)
out["down_receive"] = tap.receive_into(pool, h, l)
out["down_transmit"] = tap.transmit([bytes(60), bytes(60)])
tap.up()
kernel_side("fp0")
out["oversize"] = tap.transmit([bytes(1500 + 18 + 1), bytes(13), bytes(1500 + 18)])
try:
    tap.receive_into(pool, np.zeros(4, np.int64), l)
except ValueError as e:
    out["wrong_dtype"] = "ValueError"
out["no_lengths"] = tap.receive_into(pool, h, np.zeros(0, np.uint32))

# every buffer taken: the kernel's ARP request is read and dropped, counted
empty = fastproto.BufferPool(1, 2048)
held = empty.alloc()
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.sendto(b"x", (STACK_ADDR, 9))
tap.wait(3)
time.sleep(0.05)
out["no_buffer_received"] = tap.receive_into(empty, h, l)
out["after_no_buffer"] = tap.stats()
# buffers shorter than the frame: dropped, counted
s.sendto(b"x", ("198.18.0.3", 9))
tap.wait(3)
time.sleep(0.05)
tiny = fastproto.BufferPool(4, 32)
out["tiny_received"] = tap.receive_into(tiny, h, l)
out["tiny_available"] = tiny.available
out["stats"] = tap.stats()
tap.close()
tap.close()
for name, call in [("receive", lambda: tap.receive_into(pool, h, l)),
                   ("transmit", lambda: tap.transmit([bytes(60)])),
                   ("up", tap.up), ("wait", lambda: tap.wait(0))]:
    try:
        call()
        out["closed_" + name] = "no error"
    except ValueError:
        out["closed_" + name] = "ValueError"
out["device_gone"] = "fp0" not in sh("ip", "-o", "link")
report(out)
""")


def test_down_interface_receives_nothing_and_counts_transmits(unhappy):
    assert unhappy["down_wait"] is False
    assert unhappy["down_receive"] == 0
    assert unhappy["down_transmit"] == 0
    assert unhappy["stats"]["tx_dropped_down"] == 2


def test_oversize_and_runt_frames_count_tx_errors_without_raising(unhappy):
    assert unhappy["oversize"] == 1          # only the frame of exactly mtu + 18 bytes
    s = unhappy["stats"]
    assert s["tx_oversize"] == 1
    assert s["tx_runt"] == 1
    assert s["tx_errors"] == s["tx_oversize"] + s["tx_runt"] + s["tx_dropped_down"] + s["tx_bad_handle"] \
        + s["tx_write_failed"]
    assert s["tx_frames"] == 1


def test_receive_rejects_wrong_arrays(unhappy):
    assert unhappy["wrong_dtype"] == "ValueError"
    assert unhappy["no_lengths"] == 0


def test_exhausted_pool_drops_frame_and_counts_rx_no_buffer(unhappy):
    assert unhappy["no_buffer_received"] == 0
    assert unhappy["after_no_buffer"]["rx_no_buffer"] >= 1
    assert unhappy["after_no_buffer"]["rx_frames"] == 0


def test_frame_longer_than_buffer_is_dropped_and_counted(unhappy):
    assert unhappy["tiny_received"] == 0
    assert unhappy["stats"]["rx_oversize"] >= 1
    assert unhappy["tiny_available"] == 4    # every buffer went back to the pool


def test_closed_interface_refuses_io_and_device_is_removed(unhappy):
    assert unhappy["closed_receive"] == "ValueError"
    assert unhappy["closed_transmit"] == "ValueError"
    assert unhappy["closed_up"] == "ValueError"
    assert unhappy["closed_wait"] == "ValueError"
    assert unhappy["device_gone"] is True


@pytest.fixture(scope="module")
def puller():
    """Copying receive, wakeup from another thread, down with frames queued."""
    return run_json(SETUP + """
import threading
out = {}
with TapInterface("fp0") as tap:
    out["max_frame_len"] = tap.max_frame_len
    tap.up()
    kernel_side("fp0")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"x", (STACK_ADDR, 9))
    out["ready"] = tap.wait(3)
    time.sleep(0.05)
    frames = tap.receive(16)
    out["copied_ethertypes"] = [f[12:14].hex() for f in frames]
    out["copied_bytes"] = sum(map(len, frames))
    out["after_copy"] = tap.stats()

    results = []
    waiter = threading.Thread(target=lambda: results.append(tap.wait(None)))
    waiter.start()
    time.sleep(0.2)
    tap.wakeup()
    waiter.join(3)
    out["woken"] = results
    out["waiter_alive"] = waiter.is_alive()

    s.sendto(b"x", ("198.18.0.4", 9))
    tap.wait(3)
    time.sleep(0.05)
    tap.down()
    out["down_wait"] = tap.wait(None)
    out["down_receive"] = tap.receive(16)
    out["stats"] = tap.stats()
report(out)
""")


def test_receive_copies_queued_frames(puller):
    assert puller["ready"] is True
    assert "0806" in puller["copied_ethertypes"]
    assert puller["after_copy"]["rx_frames"] == len(puller["copied_ethertypes"])
    assert puller["after_copy"]["rx_bytes"] == puller["copied_bytes"]


def test_wakeup_ends_a_wait_in_another_thread(puller):
    assert puller["woken"] == [False]
    assert puller["waiter_alive"] is False


def test_down_drops_queued_frames_and_counts_them(puller):
    assert puller["stats"]["rx_dropped_down"] >= 1
    assert puller["down_wait"] is False
    assert puller["down_receive"] == []


def test_max_frame_len_is_mtu_plus_header_and_tag(puller):
    assert puller["max_frame_len"] == 1500 + 14 + 4


@pytest.mark.parametrize("name, code", [("bad/name", errno.EINVAL), ("x" * 16, errno.EINVAL), ("", errno.EINVAL)])
def test_bad_name_raises_oserror_with_errno(name, code):
    with pytest.raises(OSError) as info:
        TapInterface(name)
    assert info.value.errno == code


def test_bad_mtu_raises_value_error():
    with pytest.raises(ValueError):
        TapInterface("fp0", mtu=10)


def test_unprivileged_open_raises_oserror_with_errno():
    result = run_json("""
import os
from fastproto.phy.tap import TapInterface   # before dropping privileges: /root holds the packages
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
try:
    TapInterface("fp0")
    report(None)
except OSError as e:
    report(e.errno)
""")
    assert result in (errno.EACCES, errno.EPERM)


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(min_size=0, max_size=1472), min_size=1, max_size=20))
def test_datagrams_arrive_byte_exact_in_order(payloads):
    """Oracle: the Linux UDP socket's view of each datagram the stack transmitted."""
    received = run_json(SETUP + f"""
payloads = [bytes.fromhex(p) for p in {[p.hex() for p in payloads]!r}]
with TapInterface("fp0") as tap:
    tap.up()
    kernel_side("fp0")
    linux = kernel_udp_socket(5555)
    frames = [ethernet(tap.mac, STACK_MAC, ETH_P_IP,
                       ipv4(STACK_ADDR, KERNEL_ADDR, 17, udp(STACK_ADDR, KERNEL_ADDR, 4242, 5555, p)))
              for p in payloads]
    sent = tap.transmit([memoryview(f) for f in frames])
    got = [linux.recv(2048).hex() for _ in range(sent)]
    report({{"sent": sent, "got": got, "tx_bytes": tap.stats()["tx_bytes"],
             "frame_bytes": sum(map(len, frames))}})
""")
    assert received["sent"] == len(payloads)
    assert received["got"] == [p.hex() for p in payloads]
    assert received["tx_bytes"] == received["frame_bytes"]
