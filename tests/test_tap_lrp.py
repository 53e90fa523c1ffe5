"""A receiver pulling a TAP device itself (the lrp dispatch model): it sleeps on
the device's descriptor, a frame from Linux or news for its socket wakes it,
the puller thread's ``wait`` leaves the frames to it while the interrupt is
routed, and the puller takes over again once the receiver hands back.

Each scenario runs in its own network namespace (tests/netns.py)."""
import pytest

from netns import run_json


@pytest.fixture(scope="module")
def device_level():
    """The TapInterface calls a pulling receiver and the puller thread use."""
    return run_json("""
import socket, threading, time
from fastproto.phy.tap import TapInterface

out = {}
with TapInterface("fp0", mac="02:00:00:00:00:02") as tap:
    tap.up()
    kernel_side("fp0")
    sh("ip", "neigh", "add", STACK_ADDR, "lladdr", "02:00:00:00:00:02", "dev", "fp0")
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def drain():
        while tap.receive(64):
            pass

    def sleep_in_thread(fn):
        res = {}
        t = threading.Thread(target=lambda: res.setdefault("r", fn()))
        t.start()
        return t, res

    drain()
    out["routed"] = tap.rx_notify(lambda: None)
    out["ready_when_idle"] = tap.rx_ready()

    # a frame from Linux ends the receiver's sleep (no timeout: a miss hangs)
    token = tap.rx_sleep_token()
    t, res = sleep_in_thread(lambda: tap.rx_sleep(None, token))
    time.sleep(0.2)
    udp.sendto(b"x", (STACK_ADDR, 9))
    t.join(TIMEOUT)
    out["frame_wakes_sleeper"] = res.get("r")
    out["ready_with_frame"] = tap.rx_ready()
    drain()

    # a kick ends it: during the sleep, and before it (after the token)
    token = tap.rx_sleep_token()
    t, res = sleep_in_thread(lambda: tap.rx_sleep(None, token))
    time.sleep(0.2)
    tap.rx_kick()
    t.join(TIMEOUT)
    out["kick_wakes_sleeper"] = res.get("r")
    token = tap.rx_sleep_token()
    tap.rx_kick()
    t, res = sleep_in_thread(lambda: tap.rx_sleep(None, token))
    t.join(TIMEOUT)
    out["kick_before_sleep_is_kept"] = res.get("r")

    # the puller's wait ignores frames while routed, then wakes at the hand-back
    t, res = sleep_in_thread(lambda: tap.wait(None))
    time.sleep(0.1)
    udp.sendto(b"y", (STACK_ADDR, 9))
    time.sleep(0.3)
    out["masked_wait_sleeps_on"] = t.is_alive()
    out["frame_queued_meanwhile"] = tap.rx_ready()
    out["handed_back"] = tap.rx_notify(None)
    t.join(TIMEOUT)
    out["handback_wakes_wait"] = res.get("r")
    drain()

    # wakeup ends a masked wait too (stopping the puller)
    tap.rx_notify(lambda: None)
    t, res = sleep_in_thread(lambda: tap.wait(None))
    time.sleep(0.1)
    tap.wakeup()
    t.join(TIMEOUT)
    out["wakeup_ends_masked_wait"] = res.get("r")
    tap.rx_notify(None)
report(out)
""", timeout=30)


def test_tap_routes_its_interrupt(device_level):
    assert device_level["routed"] is True and device_level["handed_back"] is True
    assert device_level["ready_when_idle"] is False


def test_a_frame_from_linux_wakes_the_pulling_receiver(device_level):
    assert device_level["frame_wakes_sleeper"] is True
    assert device_level["ready_with_frame"] is True


def test_a_kick_wakes_the_pulling_receiver(device_level):
    assert device_level["kick_wakes_sleeper"] is False


def test_a_kick_between_token_and_sleep_is_not_lost(device_level):
    assert device_level["kick_before_sleep_is_kept"] is False


def test_puller_wait_leaves_frames_to_the_receiver_until_the_hand_back(device_level):
    assert device_level["masked_wait_sleeps_on"] is True
    assert device_level["frame_queued_meanwhile"] is True
    assert device_level["handback_wakes_wait"] is True


def test_wakeup_ends_a_wait_while_routed(device_level):
    assert device_level["wakeup_ends_masked_wait"] is False


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "offload"])
def stack_level(request):
    """A Stack on the TAP device: a TCP receiver fed by Linux, news for a
    receiver blocked in recv, and frames for another socket after the hand-back."""
    return run_json(f"""
import os, socket, threading, time
from fastproto.phy.tap import TapInterface
from fastproto.stack import Stack
from fastproto.tcp_socket import SOCK_STREAM

out = {{}}
with TapInterface("fp0", offload={request.param}) as tap:
    tap.up()
    kernel_side("fp0")
    with Stack(tap, STACK_ADDR + "/24", mac=STACK_MAC, dispatch="lrp") as stack:
        ls = stack.socket(socket.AF_INET, SOCK_STREAM)
        ls.bind(("", 5001))
        ls.listen(1)
        ls.settimeout(TIMEOUT)
        data = os.urandom(3_000_000)
        lc = socket.create_connection((STACK_ADDR, 5001), timeout=TIMEOUT)
        conn, _ = ls.accept()
        conn.settimeout(10)
        sender = threading.Thread(target=lambda: lc.sendall(data))
        sender.start()
        got = bytearray()
        while len(got) < len(data):
            chunk = conn.recv(1 << 16)
            if not chunk:
                break
            got += chunk
        sender.join(TIMEOUT)
        st = stack.stats()
        out["byte_exact"] = bytes(got) == data
        out["receiver_pulling"] = st.get("lrp.receiver_pulling", 0)
        out["receiver_pulls"] = st.get("lrp.receiver_pulls", 0)
        out["reader_wakeups"] = st.get("wakeup.reader", 0)

        # news for a receiver asleep on the device: SHUT_RD ends its recv
        res = {{}}
        t = threading.Thread(target=lambda: res.setdefault("r", outcome(lambda: conn.recv(100))))
        t.start()
        time.sleep(0.3)
        conn.shutdown(socket.SHUT_RD)
        t.join(TIMEOUT)
        out["news_ends_recv"] = res.get("r")

        # handed back: the puller thread takes frames for another socket
        us = stack.socket(socket.AF_INET, socket.SOCK_DGRAM)
        us.bind(("", 6000))
        before = stack.stats().get("wakeup.puller", 0)
        lu = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        lu.sendto(b"after", (STACK_ADDR, 6000))
        deadline = time.monotonic() + TIMEOUT
        while not us._readable() and time.monotonic() < deadline:
            time.sleep(0.01)
        out["puller_took_datagram"] = us._readable()
        out["puller_woken"] = stack.stats().get("wakeup.puller", 0) - before
        lc.close()
        conn.close()
report(out)
""", timeout=40)


def test_a_tcp_receiver_pulls_the_tap_device_itself(stack_level):
    assert stack_level["byte_exact"] is True
    assert stack_level["receiver_pulling"] > 0 and stack_level["receiver_pulls"] > 0
    assert stack_level["reader_wakeups"] > 0


def test_socket_news_wakes_a_receiver_asleep_on_the_device(stack_level):
    assert stack_level["news_ends_recv"] == "ok:0"


def test_the_puller_takes_over_after_the_hand_back(stack_level):
    assert stack_level["puller_took_datagram"] is True
    assert stack_level["puller_woken"] >= 1
