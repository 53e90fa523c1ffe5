"""fastproto._core.tcpseg.tcp_fields: the per-segment fields TCP input reads,
against the parser's rows read column by column with NumPy (the oracle), over
scapy-built frames."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from fastproto._core.parse import PARSED_DTYPE, parse_frames
from fastproto._core.tcpseg import tcp_fields

_COLUMNS = ("flags", "tcp_flags", "tcp_seq", "tcp_ack", "tcp_window", "payload_off",
            "payload_len", "sport", "dport", "tcp_tsval", "tcp_tsecr")


def frame(seq, ack, flags, window, sport, dport, payload, ts):
    opts = [("Timestamp", ts)] if ts is not None else []
    return bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
                 / IP(src="198.18.0.1", dst="198.18.0.2", flags="DF")
                 / TCP(sport=sport, dport=dport, seq=seq, ack=ack, flags=flags, window=window,
                       options=opts) / payload)


def oracle(rows, handles):
    return [tuple(int(rows[c][h]) for c in _COLUMNS) for h in handles.tolist()]


_u32 = st.integers(0, 2**32 - 1)
_segments = st.lists(st.tuples(_u32, _u32, st.sampled_from(["A", "PA", "FA", "S", "R"]),
                               st.integers(0, 0xFFFF), st.integers(1, 0xFFFF),
                               st.integers(1, 0xFFFF), st.binary(max_size=40),
                               st.none() | st.tuples(_u32, _u32)),
                     min_size=1, max_size=8)


@settings(max_examples=60, deadline=None)
@given(segments=_segments, data=st.data())
def test_fields_equal_the_rows_columns(segments, data):
    rows = parse_frames([frame(*s) for s in segments])
    handles = np.array(data.draw(st.lists(st.integers(0, len(segments) - 1), max_size=12)),
                       dtype=np.uint64)
    assert tcp_fields(rows, handles) == oracle(rows, handles)


def test_seq_ack_and_timestamps_are_read_whole():
    rows = parse_frames([frame(0xFFFFFFFF, 0x80000000, "PA", 513, 40000, 80, b"x" * 7,
                               (0xFEDCBA98, 1))])
    (got,) = tcp_fields(rows, np.array([0], dtype=np.uint64))
    assert got[1:] == (0x18, 0xFFFFFFFF, 0x80000000, 513, 66, 7, 40000, 80, 0xFEDCBA98, 1)


def test_handles_as_a_strided_view_are_read():
    rows = parse_frames([frame(k, 0, "A", 1, 1, 2, b"", None) for k in range(4)])
    handles = np.array([3, 9, 1, 9, 0], dtype=np.uint64)[::2]
    assert [f[2] for f in tcp_fields(rows, handles)] == [3, 1, 0]


def test_no_handles_give_no_fields():
    rows = np.zeros(4, dtype=PARSED_DTYPE)
    assert tcp_fields(rows, np.zeros(0, dtype=np.uint64)) == []


def test_handle_beyond_the_rows_is_refused():
    rows = np.zeros(4, dtype=PARSED_DTYPE)
    with pytest.raises(IndexError):
        tcp_fields(rows, np.array([0, 4], dtype=np.uint64))


def test_rows_of_another_dtype_are_refused():
    with pytest.raises(ValueError):
        tcp_fields(np.zeros(4, dtype=np.uint8), np.zeros(1, dtype=np.uint64))


def test_rows_not_contiguous_are_refused():
    rows = np.zeros(8, dtype=PARSED_DTYPE)[::2]
    with pytest.raises(ValueError):
        tcp_fields(rows, np.zeros(1, dtype=np.uint64))


def test_handles_of_another_dtype_are_refused():
    rows = np.zeros(4, dtype=PARSED_DTYPE)
    with pytest.raises(ValueError):
        tcp_fields(rows, np.zeros(1, dtype=np.int64))


def test_arguments_that_are_not_arrays_are_refused():
    with pytest.raises(TypeError):
        tcp_fields([1, 2], np.zeros(1, dtype=np.uint64))
