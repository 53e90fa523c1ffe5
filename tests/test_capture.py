"""PcapCapture records both directions (checked with scapy); PcapReplay plays a file back."""
import numpy as np
import pytest
from scapy.all import Ether, IP, UDP, Raw, rdpcap, wrpcap

from fastproto import BufferPool
from fastproto.phy import Device, FaultInjector, LinkPair, PcapCapture, PcapReader, PcapReplay, PcapWriter


def udp_frames(n, tag):
    return [bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(dst="198.18.0.2")
                  / UDP(sport=tag, dport=9) / Raw(bytes([i]) * (i + 1))) for i in range(n)]


class Clock:
    def __init__(self, t=1_700_000_000.0):
        self.t = t

    def __call__(self):
        self.t += 0.5
        return self.t


def test_capture_of_both_directions_reads_back_with_scapy(tmp_path):
    link = LinkPair()
    path = tmp_path / "a.pcap"
    cap = PcapCapture(link.a, path)
    assert isinstance(cap, Device) and cap.name == link.a.name
    sent, answers, more = udp_frames(3, 1), udp_frames(2, 2), udp_frames(2, 3)
    assert cap.transmit(sent) == 3
    assert link.b.receive(10) == sent
    link.b.transmit(answers)
    assert cap.receive(10) == answers
    link.b.transmit(more)
    pool = BufferPool(8)
    handles, lengths = np.zeros(8, np.uint64), np.zeros(8, np.uint32)
    assert cap.receive_into(pool, handles, lengths) == 2
    cap.close()
    assert [bytes(p) for p in rdpcap(str(path))] == sent + answers + more
    s = cap.stats()
    assert s["capture_tx"] == 3 and s["capture_rx"] == 4 and s["tx_frames"] == 3


def test_capture_timestamps_come_from_its_clock(tmp_path):
    link = LinkPair()
    path = tmp_path / "t.pcap"
    with PcapCapture(link.a, path, clock=Clock()) as cap:
        cap.transmit(udp_frames(1, 1))
        cap.transmit(udp_frames(1, 2))
    assert [float(p.time) for p in rdpcap(str(path))] == pytest.approx([1_700_000_000.5, 1_700_000_001.0])


def test_capture_records_frames_the_device_then_drops(tmp_path):
    link = LinkPair()
    link.a.down()
    path = tmp_path / "d.pcap"
    cap = PcapCapture(link.a, path)
    assert cap.transmit(udp_frames(2, 1)) == 0
    cap.close()
    assert len(rdpcap(str(path))) == 2
    assert cap.stats()["tx_dropped_down"] == 2


def test_after_close_frames_still_pass_unrecorded(tmp_path):
    link = LinkPair()
    path = tmp_path / "c.pcap"
    cap = PcapCapture(link.a, path)
    cap.transmit(udp_frames(1, 1))
    cap.close()
    assert cap.closed
    assert cap.transmit(udp_frames(2, 2)) == 2
    cap.close()
    assert len(link.b.receive(10)) == 3
    assert len(rdpcap(str(path))) == 1 and cap.stats()["capture_tx"] == 1


def test_capture_outside_a_fault_injector_records_what_the_stack_sent(tmp_path):
    link = LinkPair()
    path = tmp_path / "f.pcap"
    cap = PcapCapture(FaultInjector(link.a, loss=1.0), path)
    cap.transmit(udp_frames(4, 1))
    cap.close()
    assert len(rdpcap(str(path))) == 4
    assert link.b.receive(10) == []
    assert cap.stats()["fault_lost"] == 4


def test_replay_delivers_the_files_frames_in_order(tmp_path):
    frames = udp_frames(5, 7)
    path = tmp_path / "r.pcap"
    wrpcap(str(path), [Ether(f) for f in frames])
    rep = PcapReplay(path)
    assert rep.remaining == 5
    assert rep.wait(0) is True
    assert rep.receive(2) == frames[:2]
    pool = BufferPool(8)
    handles, lengths = np.zeros(8, np.uint64), np.zeros(8, np.uint32)
    n = rep.receive_into(pool, handles, lengths)
    assert [bytes(pool.data[h, :k]) for h, k in zip(handles[:n], lengths[:n])] == frames[2:]
    assert rep.remaining == 0 and rep.receive(10) == [] and rep.wait(0) is False


def test_replay_feeds_a_small_ring_without_dropping(tmp_path):
    path = tmp_path / "big.pcap"
    frames = [i.to_bytes(2, "big") * 30 for i in range(50)]
    with PcapWriter(path) as w:
        for f in frames:
            w.write(f, 0.0)
    rep = PcapReplay(path, rx_ring_size=4)
    got = []
    while rep.wait(0):
        got += rep.receive(3)
    assert got == frames and rep.stats()["rx_ring_full"] == 0


def test_replay_discards_and_counts_transmitted_frames(tmp_path):
    path = tmp_path / "e.pcap"
    PcapWriter(path).close()
    rep = PcapReplay(path)
    assert rep.transmit(udp_frames(3, 1)) == 3
    assert rep.stats()["tx_discarded"] == 3
    assert rep.receive(10) == [] and rep.wait(0) is False


def test_replay_does_not_advance_while_down(tmp_path):
    path = tmp_path / "w.pcap"
    wrpcap(str(path), [Ether(f) for f in udp_frames(3, 1)])
    rep = PcapReplay(path)
    rep.down()
    assert rep.receive(10) == [] and rep.remaining == 3
    rep.up()
    assert len(rep.receive(10)) == 3


def test_realtime_replay_paces_frames_by_their_timestamps(tmp_path):
    path = tmp_path / "p.pcap"
    with PcapWriter(path) as w:
        for i, ts in enumerate([100.0, 100.0, 101.0, 103.0]):
            w.write(bytes([i]) * 20, ts)

    class Manual:
        t = 0.0

        def __call__(self):
            return self.t

    clock = Manual()
    rep = PcapReplay(path, realtime=True, clock=clock)
    assert [f[0] for f in rep.receive(10)] == [0, 1]
    clock.t = 0.99
    assert rep.receive(10) == []
    clock.t = 1.0
    assert [f[0] for f in rep.receive(10)] == [2]
    clock.t = 5.0
    assert [f[0] for f in rep.receive(10)] == [3]


def test_realtime_replay_wait_sleeps_until_the_next_frame(tmp_path):
    path = tmp_path / "s.pcap"
    with PcapWriter(path) as w:
        w.write(b"\x01" * 20, 10.0)
        w.write(b"\x02" * 20, 10.02)
    rep = PcapReplay(path, realtime=True)
    assert rep.receive(10) == [b"\x01" * 20]
    assert rep.wait(30) is True
    assert rep.receive(10) == [b"\x02" * 20]


def test_realtime_replay_drops_at_a_full_ring(tmp_path):
    path = tmp_path / "f.pcap"
    with PcapWriter(path) as w:
        for i in range(10):
            w.write(bytes([i]) * 20, 0.0)
    rep = PcapReplay(path, realtime=True, rx_ring_size=4)
    assert len(rep.receive(100)) == 4
    assert rep.stats()["rx_ring_full"] == 6


def test_replay_of_a_non_pcap_file_is_refused(tmp_path):
    path = tmp_path / "x.pcap"
    path.write_bytes(b"not a capture file at all")
    with pytest.raises(ValueError):
        PcapReplay(path)


def test_capture_then_replay_round_trip(tmp_path):
    link = LinkPair()
    path = tmp_path / "rt.pcap"
    with PcapCapture(link.a, path) as cap:
        cap.transmit(udp_frames(4, 5))
    assert PcapReplay(path).receive(10) == udp_frames(4, 5) == PcapReader(path).frames()
