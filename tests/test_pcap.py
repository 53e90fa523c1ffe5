"""pcap capture files: what we write, scapy (an independent reader) reads back, and the reverse."""
import struct

import pytest
from hypothesis import given, settings, strategies as st
from scapy.all import Ether, IP, UDP, Raw, rdpcap, wrpcap

from fastproto.phy import PcapReader, PcapWriter


@settings(max_examples=30, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=300), min_size=0, max_size=20))
def test_frames_written_read_back_by_scapy(tmp_path_factory, frames):
    path = tmp_path_factory.mktemp("pcap") / "out.pcap"
    with PcapWriter(path) as w:
        for i, frame in enumerate(frames):
            w.write(frame, timestamp=1_700_000_000 + i * 0.25)
    packets = rdpcap(str(path))
    assert [bytes(p) for p in packets] == frames
    assert [float(p.time) for p in packets] == pytest.approx([1_700_000_000 + i * 0.25 for i in range(len(frames))])


def test_reads_what_scapy_writes(tmp_path):
    pkts = [Ether() / IP(dst="198.18.0.2") / UDP(dport=9) / Raw(b"x" * n) for n in (0, 1, 100)]
    path = tmp_path / "s.pcap"
    wrpcap(str(path), pkts)
    r = PcapReader(path)
    assert r.linktype == 1
    assert r.frames() == [bytes(p) for p in pkts]
    assert not r.truncated


def test_snaplen_truncates_but_keeps_original_length(tmp_path):
    path = tmp_path / "t.pcap"
    with PcapWriter(path, snaplen=10) as w:
        w.write(bytes(range(50)))
    data = path.read_bytes()
    caplen, origlen = struct.unpack_from("<II", data, 24 + 8)
    assert (caplen, origlen) == (10, 50)
    assert PcapReader(path).frames() == [bytes(range(10))]


def test_cut_short_capture_reads_up_to_the_cut(tmp_path):
    path = tmp_path / "c.pcap"
    with PcapWriter(path) as w:
        w.write(b"a" * 20)
        w.write(b"b" * 20)
    path.write_bytes(path.read_bytes()[:-5])
    r = PcapReader(path)
    assert r.frames() == [b"a" * 20]
    assert r.truncated


def test_not_a_pcap_file_is_rejected(tmp_path):
    path = tmp_path / "x.pcap"
    path.write_bytes(b"\x00" * 40)
    with pytest.raises(ValueError, match="not a pcap"):
        PcapReader(path)
    path.write_bytes(b"\x00" * 4)
    with pytest.raises(ValueError, match="too short"):
        PcapReader(path)


def test_write_after_close_raises(tmp_path):
    w = PcapWriter(tmp_path / "w.pcap")
    w.close()
    with pytest.raises(ValueError):
        w.write(b"abc")
