"""The traffic generator: valid UDP frames at a set rate into a bounded ring, drops at a full ring."""
import os
import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from fastproto import BufferPool
from fastproto._core.generator import Generator, udp_checksum_update, udp_offsets
from fastproto.phy.generator import GeneratorDevice, udp_frame
from fastproto.stack import Stack

FRAME = udp_frame(9, sport=1000)


def _tasks() -> set[str]:
    return set(os.listdir("/proc/self/task"))


def _until(cond, what: str, limit: float = 20.0) -> None:
    """Wait for ``cond`` (a generous bound only against a hang, not a measurement)."""
    end = time.monotonic() + limit
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.002)


def _arrays(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros(n, dtype=np.uint64), np.zeros(n, dtype=np.uint32)


def _finished(gen: Generator) -> None:
    _until(lambda: not gen.running, "the generator to reach its limit")


def test_udp_frame_is_the_minimum_ethernet_frame():
    assert len(FRAME) == 60
    p = Ether(FRAME)
    assert p[UDP].dport == 9 and p[IP].dst == "198.18.0.2"


def test_offered_frames_parse_as_valid_udp_with_varied_source_ports():
    gen = Generator(FRAME, 200_000, ring_size=256, sport_span=50, limit=120)
    pool = BufferPool(256, 2048)
    handles, lengths = _arrays(256)
    try:
        gen.start()
        _finished(gen)
        n = gen.rx_batch(pool, handles, lengths)
        assert n == 120
        ports = []
        for h, ln in zip(handles[:n].tolist(), lengths[:n].tolist()):
            raw = bytes(pool.data[h, :ln])
            p = Ether(raw)
            udp = p[UDP]
            sent_udp, sent_ip = udp.chksum, p[IP].chksum
            del udp.chksum
            del p[IP].chksum
            again = Ether(bytes(p))
            # scapy recomputes both checksums over the frame: they must agree.
            assert again[UDP].chksum == sent_udp and again[IP].chksum == sent_ip
            assert udp.dport == 9 and len(udp.payload) == 18
            ports.append(udp.sport)
        assert ports == [1000 + i % 50 for i in range(120)]
    finally:
        gen.close()


def test_a_full_ring_drops_and_counts_there():
    gen = Generator(FRAME, 500_000, ring_size=16, limit=100)
    pool = BufferPool(64, 2048)
    handles, lengths = _arrays(64)
    try:
        gen.start()
        _finished(gen)
        s = gen.stats()
        assert (s["offered"], s["rx_ring_full"], s["rx_ring_queued"]) == (100, 84, 16)
        assert gen.rx_batch(pool, handles, lengths) == 16
        assert gen.rx_batch(pool, handles, lengths) == 0
        assert pool.available == 64 - 16
        assert gen.stats()["rx_frames"] == 16
    finally:
        gen.close()


def test_ring_full_drops_never_reach_the_stack():
    dev = GeneratorDevice(FRAME, 2_000_000, ring_size=8, limit=3000)
    with Stack(dev, "198.18.0.2/24", dispatch="netisr") as stack:
        sock = stack.socket()
        sock.bind(("", 9))
        dev.start()
        _until(lambda: not dev.running, "the generator to reach its limit")
        _until(lambda: stack.pool.available == stack.pool.count and not dev.rx_ready(),
               "the stack to take every frame")
        s = stack.stats()
        ring_full = s["if.rx_ring_full"]
        assert s["drop.rx_ring"] == ring_full
        assert s["ip.rx_frames"] == 3000 - ring_full
        assert s["demux.delivered"] + s["drop.netisr_queue"] == 3000 - ring_full
        queued = sock.stats()["rcv_queued"]
        assert queued + s["drop.socket_rcvbuf"] + s["drop.netisr_queue"] == 3000 - ring_full
    dev.close()


def test_receive_into_returns_what_was_offered_when_the_ring_holds_it():
    dev = GeneratorDevice(FRAME, 300_000, ring_size=1024, limit=700, sport_span=3)
    pool = BufferPool(1024, 2048)
    handles, lengths = _arrays(256)
    try:
        dev.start()
        _until(lambda: not dev.running, "the generator to reach its limit")
        got = []
        while True:
            n = dev.receive_into(pool, handles, lengths)
            if n == 0:
                break
            got.extend(bytes(pool.data[h, :ln]) for h, ln in zip(handles[:n].tolist(), lengths[:n].tolist()))
            pool.free_many(handles[:n])
        assert len(got) == 700
        assert [Ether(f)[UDP].sport for f in got] == [1000 + i % 3 for i in range(700)]
        assert got[0] == FRAME
        s = dev.stats()
        assert s["rx_frames"] == s["offered"] == 700 and s["rx_ring_full"] == 0
        assert s["rx_bytes"] == 700 * 60
    finally:
        dev.close()


def test_receive_returns_frames_as_bytes():
    with GeneratorDevice(FRAME, 100_000, limit=5) as dev:
        dev.start()
        _until(lambda: not dev.running, "the generator to reach its limit")
        assert dev.receive(3) == [FRAME] * 3
        assert dev.receive(10) == [FRAME] * 2
        assert dev.receive(10) == []


def test_frames_finding_no_buffer_are_dropped_and_counted():
    gen = Generator(FRAME, 100_000, ring_size=64, limit=10)
    pool = BufferPool(4, 2048)
    handles, lengths = _arrays(16)
    try:
        gen.start()
        _finished(gen)
        assert gen.rx_batch(pool, handles, lengths) == 4
        s = gen.stats()
        assert (s["rx_frames"], s["rx_no_buffer"], s["rx_ring_queued"]) == (4, 6, 0)
    finally:
        gen.close()


def test_frames_longer_than_a_buffer_are_dropped_as_oversize():
    gen = Generator(FRAME + bytes(100), 100_000, ring_size=8, limit=3)
    pool = BufferPool(8, 128)
    handles, lengths = _arrays(8)
    try:
        gen.start()
        _finished(gen)
        assert gen.rx_batch(pool, handles, lengths) == 0
        assert gen.stats()["rx_oversize"] == 3 and pool.available == 8
    finally:
        gen.close()


def test_stopping_leaves_no_threads():
    dev = GeneratorDevice(FRAME, 50_000)
    dev.start()
    _until(lambda: dev.thread_id, "the generator thread to run")
    first = str(dev.thread_id)
    assert dev.running and first in _tasks()
    with pytest.raises(RuntimeError):
        dev.start()
    dev.stop()
    assert not dev.running and first not in _tasks()
    dev.start()  # a stopped generator starts again
    _until(lambda: str(dev.thread_id) != first, "the new generator thread to run")
    second = str(dev.thread_id)
    with Stack(dev, "198.18.0.2/24", dispatch="lrp") as stack:
        sock = stack.socket()
        sock.bind(("", 9))
        sock.recv(100)
        assert dev.rx_notify(lambda: None)   # routing starts the interrupt listener
        ids = {str(t.native_id) for t in stack.threads() + dev.threads()}
        assert [t.name for t in dev.threads()] == ["gen0-irq"]
        assert dev.rx_notify(None)
    assert stack.threads() == []
    dev.close()
    assert dev.threads() == [] and not dev.running
    assert not (ids | {second}) & _tasks()
    dev.close()  # idempotent


def test_wait_sees_queued_frames_and_wakeup_ends_it():
    with GeneratorDevice(FRAME, 10_000, limit=1) as dev:
        out = []
        waiter = threading.Thread(target=lambda: out.append(dev.wait(None)))
        waiter.start()
        _until(lambda: waiter.is_alive(), "the waiter")
        dev.wakeup()
        waiter.join(20)
        assert out == [False]
        dev.start()
        assert dev.wait(20.0) is True
        assert dev.rx_ready()
        assert dev.wait(0) is True


def test_the_interrupt_goes_only_to_a_sleeping_waiter():
    gen = Generator(FRAME, 200_000, ring_size=512, limit=300)
    try:
        gen.start()
        _finished(gen)
        assert gen.stats()["interrupts"] == 0   # nobody waited
        assert gen.wait(0) is True              # frames queued: no sleep
        assert gen.stats()["interrupts"] == 0
    finally:
        gen.close()


def test_an_interface_down_drops_arrivals_and_flushes_the_ring():
    with GeneratorDevice(FRAME, 200_000, ring_size=64, limit=20) as dev:
        pool = BufferPool(64, 2048)
        handles, lengths = _arrays(64)
        dev.start()
        _until(lambda: not dev.running, "the generator to reach its limit")
        dev.down()
        assert not dev.is_up and dev.wait(0) is False
        assert dev.receive_into(pool, handles, lengths) == 0
        assert dev.transmit([FRAME]) == 0
        s = dev.stats()
        assert (s["rx_dropped_down"], s["rx_ring_queued"], s["tx_dropped_down"]) == (20, 0, 1)
        dev.up()
        assert dev.transmit([FRAME, bytes(2000)]) == 1
        s = dev.stats()
        assert (s["tx_frames"], s["tx_oversize"]) == (1, 1)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        Generator(b"\x00" * 10, 1000)
    with pytest.raises(ValueError):
        Generator(FRAME, -1.0)
    with pytest.raises(ValueError):
        Generator(FRAME, float("nan"))
    with pytest.raises(ValueError):
        Generator(FRAME, 1000, ring_size=0)
    with pytest.raises(ValueError):
        Generator(FRAME, 1000, burst=0)
    arp = bytes.fromhex("ffffffffffff020000000001") + b"\x08\x06" + bytes(46)
    with pytest.raises(ValueError):
        Generator(arp, 1000, sport_span=4)
    with pytest.raises(ValueError):
        GeneratorDevice(FRAME[:50], 1000)
    with pytest.raises(ValueError):
        GeneratorDevice(FRAME + bytes(1500), 1000)
    gen = Generator(FRAME, 1000)
    with pytest.raises(ValueError):
        gen.set_rate(-5)
    gen.close()
    handles, lengths = _arrays(4)
    with pytest.raises(ValueError):
        gen.rx_batch(BufferPool(4, 2048), handles, lengths)


def test_udp_offsets_find_the_udp_header_only_in_whole_ipv4_datagrams():
    assert udp_offsets(FRAME) == (34, 40)
    tagged = FRAME[:12] + b"\x81\x00\x00\x05" + FRAME[12:]
    assert udp_offsets(tagged) == (38, 44)
    fragment = bytearray(FRAME)
    fragment[20] |= 0x20   # more fragments
    assert udp_offsets(bytes(fragment)) is None
    assert udp_offsets(FRAME[:30]) is None


@settings(max_examples=200, deadline=None)
@given(old=st.integers(0, 65535), new=st.integers(0, 65535), payload=st.binary(max_size=40))
def test_incremental_checksum_matches_a_full_recompute(old, new, payload):
    """RFC 1624 update against scapy recomputing the checksum from scratch."""
    def checksum(port: int) -> int:
        p = IP(src="198.18.0.1", dst="198.18.0.2") / UDP(sport=port, dport=9) / payload
        return Ether(bytes(Ether() / p))[UDP].chksum

    assert udp_checksum_update(checksum(old), old, new) == checksum(new)
    assert udp_checksum_update(0, old, new) == 0


def test_a_routed_interrupt_calls_the_hook_and_routes_back():
    dev = GeneratorDevice(FRAME, 20_000)
    calls = []
    assert dev.rx_notify(lambda: calls.append(1)) is True
    dev.start()
    _until(lambda: calls, "the hook to be called")
    assert dev.stats()["notifies"] >= 1 and dev.stats()["interrupts"] == 0
    assert dev.rx_notify(None) is True
    assert dev.wait(20.0) is True        # the interrupt is back with wait
    listener = dev.threads()
    assert [t.name for t in listener] == ["gen0-irq"]
    dev.close()
    assert dev.threads() == [] and str(listener[0].native_id) not in _tasks()


def test_a_device_told_not_to_route_refuses():
    with GeneratorDevice(FRAME, 1000, route_interrupt=False) as dev:
        assert dev.rx_notify(lambda: None) is False
        assert dev.rx_notify(None) is True
        assert dev.threads() == []
