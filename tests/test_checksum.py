"""Internet checksum: every kernel against a plain-Python sum, scapy, RFC examples, bad input."""
import ipaddress
import os
import random
import struct
import threading

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scapy.layers.inet import IP, TCP, UDP, ICMP
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw
from scapy.utils import checksum as scapy_checksum

from fastproto._core import checksum as cs
from fastproto._core.checksum import (
    checksum_copy,
    checksum_update,
    internet_checksum,
    partial_sum,
    pseudo_header_sum,
)

U32 = 0xFFFFFFFF
#: every kernel this CPU runs, plus the dispatching public functions
IMPLS = cs._impls() + ("auto",)


# ---- the oracle: RFC 1071 written out in plain Python ---------------------

def ref_sum(data, initial=0):
    """Big-endian 16-bit words (odd byte padded with 0) plus initial, folded."""
    b = bytes(data)
    if len(b) % 2:
        b += b"\0"
    s = initial + sum(struct.unpack(f">{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def ref_checksum(data, initial=0):
    return ~ref_sum(data, initial) & 0xFFFF


def ref_pseudo(src: bytes, dst: bytes, proto: int, length: int) -> int:
    if len(src) == 4:
        hdr = src + dst + bytes([0, proto]) + length.to_bytes(2, "big")
    else:
        hdr = src + dst + length.to_bytes(4, "big") + bytes([0, 0, 0, proto])
    return ref_sum(hdr)


def checksum_with(impl, data, initial=0):
    if impl == "auto":
        return internet_checksum(data, initial)
    return cs._internet_checksum_impl(impl, data, initial)


def copy_with(impl, dst, src, initial=0):
    if impl == "auto":
        return checksum_copy(dst, src, initial)
    return cs._checksum_copy_impl(impl, dst, src, initial)


def aligned(n: int, align: int = 4096) -> np.ndarray:
    """n bytes starting at an address that is a multiple of align."""
    raw = np.empty(n + align, np.uint8)
    start = (-raw.ctypes.data) % align
    return raw[start:start + n]


# ---- worked examples ------------------------------------------------------

def test_rfc1071_section3_example():
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert partial_sum(data) == 0xDDF2
    assert internet_checksum(data) == 0x220D


@pytest.mark.parametrize("impl", IMPLS)
def test_rfc1071_example_every_kernel_and_alignment(impl):
    buf = aligned(128, 64)
    for off in range(64):
        buf[off:off + 8] = np.frombuffer(bytes.fromhex("0001f203f4f5f6f7"), np.uint8)
        assert checksum_with(impl, buf[off:off + 8]) == 0x220D


def test_empty_input_sums_to_zero():
    assert partial_sum(b"") == 0
    assert internet_checksum(b"") == 0xFFFF
    assert internet_checksum(b"", 0x1234) == ~0x1234 & 0xFFFF


def test_header_with_its_checksum_sums_to_zero():
    ip = bytes(IP(src="192.0.2.1", dst="198.51.100.7", ttl=17, id=4242) / UDP() / b"x")[:20]
    assert internet_checksum(ip) == 0
    zeroed = ip[:10] + b"\0\0" + ip[12:]
    assert internet_checksum(zeroed) == int.from_bytes(ip[10:12], "big")


def test_odd_trailing_byte_is_the_high_half_of_a_padded_word():
    assert partial_sum(b"\x12") == 0x1200
    assert partial_sum(b"\x12\x34\x56") == 0x1234 + 0x5600


def test_sum_of_nonzero_words_folds_to_ffff_not_zero():
    # 0xffff + 0xffff folds to 0xffff (one's complement -0), never to 0
    assert partial_sum(b"\xff\xff\xff\xff") == 0xFFFF
    assert partial_sum(b"\x00\x01\xff\xfe") == 0xFFFF
    assert internet_checksum(b"\x00\x01\xff\xfe") == 0


# ---- exhaustive lengths and alignments against the plain sum ----------------

MISALIGN = (0, 1, 2, 7, 33, 63)
LENGTHS = range(0, 2049)


@pytest.fixture(scope="module")
def exhaustive_cases():
    """(view, initial, expected) for every length 0..2048 at several start
    offsets from a 64-byte boundary."""
    rng = random.Random(1071)
    buf = aligned(2048 + 128, 64)
    buf[:] = np.frombuffer(rng.randbytes(len(buf)), np.uint8)
    raw = buf.tobytes()
    cases = []
    for m in MISALIGN:
        for n in LENGTHS:
            initial = rng.choice((0, 0xFFFF, U32, rng.randrange(U32 + 1)))
            cases.append((buf[m:m + n], initial, ref_checksum(raw[m:m + n], initial)))
    return cases


@pytest.mark.parametrize("impl", IMPLS)
def test_checksum_matches_reference_at_every_length_and_offset(impl, exhaustive_cases):
    bad = [(len(v), i) for v, i, want in exhaustive_cases if checksum_with(impl, v, i) != want]
    assert bad == []


@pytest.mark.parametrize("impl", IMPLS)
def test_copy_matches_reference_at_every_length_and_offset(impl, exhaustive_cases):
    dst_buf = aligned(2048 + 256, 64)
    bad = []
    for k, (src, initial, want) in enumerate(exhaustive_cases):
        n = len(src)
        d = (k * 13) % 64  # the destination's own misalignment varies too
        dst_buf[:] = 0xA5
        got = copy_with(impl, dst_buf[d:d + n + 16], src, initial)
        if (got != want or not np.array_equal(dst_buf[d:d + n], src)
                or (dst_buf[:d] != 0xA5).any() or (dst_buf[d + n:] != 0xA5).any()):
            bad.append((n, initial))
    assert bad == []


@pytest.mark.parametrize("impl", IMPLS)
def test_all_ones_data_and_initial_fold_without_overflow(impl):
    data = b"\xff" * 100_003
    for initial in (0, 1, 0xFFFF, U32):
        assert checksum_with(impl, data, initial) == ref_checksum(data, initial)


@pytest.mark.parametrize("impl", IMPLS)
def test_large_buffers_match_reference(impl):
    rng = random.Random(7)
    for n in (4095, 65536, 65537, 262_147, 2_000_001):
        data = rng.randbytes(n)
        assert checksum_with(impl, data) == ref_checksum(data)
        dst = bytearray(n)
        assert copy_with(impl, dst, data) == ref_checksum(data)
        assert dst == data


@pytest.mark.parametrize("impl", IMPLS)
def test_buffers_over_a_gigabyte_are_summed_in_pieces(impl):
    # (copies take the same loop; a 1 GiB destination would cost seconds of
    # page faults).  Zero pages cost no memory; a few set bytes sit at both
    # ends of each piece
    n = (1 << 30) + 4099
    data = np.zeros(n, np.uint8)
    marks = {0: 0x12, 1: 0x34, (1 << 30) - 1: 0x56, 1 << 30: 0x78, (1 << 30) + 1: 0x9A, n - 1: 0xBC}
    for pos, val in marks.items():
        data[pos] = val
    want = sum(v << 8 if p % 2 == 0 else v for p, v in marks.items())
    assert checksum_with(impl, data) == ref_checksum(b"", want)


# ---- property tests against scapy and the plain sum --------------------------

@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=4000), offset=st.integers(0, 63), impl=st.sampled_from(IMPLS))
def test_checksum_agrees_with_scapy(data, offset, impl):
    buf = aligned(len(data) + 64, 64)
    view = buf[offset:offset + len(data)]
    view[:] = np.frombuffer(data, np.uint8)
    assert checksum_with(impl, view) == scapy_checksum(data)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=3000), initial=st.integers(0, U32), impl=st.sampled_from(IMPLS),
       dst_offset=st.integers(0, 4095))
def test_copy_agrees_with_scapy_at_any_relative_alignment(data, initial, impl, dst_offset):
    dst = aligned(8192 + len(data))
    want = ref_checksum(data, initial)
    assert copy_with(impl, dst[dst_offset:dst_offset + len(data)], data, initial) == want
    assert dst[dst_offset:dst_offset + len(data)].tobytes() == data
    if initial == 0:
        assert want == scapy_checksum(data)


@settings(max_examples=200, deadline=None)
@given(a=st.binary(max_size=600), b=st.binary(max_size=600), initial=st.integers(0, U32))
def test_partial_sums_chain_over_even_pieces(a, b, initial):
    if len(a) % 2:
        a = a[:-1]
    assert partial_sum(b, partial_sum(a, initial)) == partial_sum(a + b, initial) == ref_sum(a + b, initial)
    dst = bytearray(len(b))
    assert ~checksum_copy(dst, b, partial_sum(a, initial)) & 0xFFFF == ref_sum(a + b, initial)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=1000))
def test_data_followed_by_its_checksum_sums_to_zero(data):
    if len(data) % 2:
        data += b"\0"
    assert internet_checksum(data + internet_checksum(data).to_bytes(2, "big")) == 0


# ---- any bytes-like input ------------------------------------------------------

def test_accepts_every_contiguous_bytes_like_object():
    data = bytes(range(256)) * 3 + b"\x07"
    want = ref_checksum(data)
    arr = np.frombuffer(data[:-1], np.uint16)
    for obj in (data, bytearray(data), memoryview(data), memoryview(bytearray(data)),
                np.frombuffer(data, np.uint8), memoryview(data).cast("B", (len(data),))):
        assert internet_checksum(obj) == want
    # arrays are summed as the bytes they hold in memory, whatever the dtype or shape
    assert internet_checksum(arr) == ref_checksum(data[:-1])
    assert internet_checksum(arr.reshape(24, 16)) == ref_checksum(data[:-1])
    ro = np.frombuffer(data, np.uint8)
    assert not ro.flags.writeable
    assert internet_checksum(ro) == want


def test_non_contiguous_input_is_refused():
    data = bytes(range(64))
    with pytest.raises(BufferError):
        internet_checksum(memoryview(data)[::2])
    with pytest.raises(BufferError):
        internet_checksum(np.arange(64, dtype=np.uint8).reshape(8, 8).T)
    with pytest.raises(BufferError, match="src must be C-contiguous"):
        checksum_copy(bytearray(64), memoryview(data)[::2])
    with pytest.raises(BufferError, match="dst must be C-contiguous"):
        checksum_copy(np.zeros(64, np.uint8)[::2], b"ab")


@pytest.mark.parametrize("bad", [123, "abc", None, 1.5, [1, 2], object()])
def test_non_buffer_input_is_a_type_error(bad):
    with pytest.raises(TypeError):
        internet_checksum(bad)
    with pytest.raises(TypeError):
        partial_sum(bad)
    with pytest.raises(TypeError):
        checksum_copy(bytearray(8), bad)
    with pytest.raises(TypeError):
        checksum_copy(bad, b"abcd")


@pytest.mark.parametrize("initial", [-1, U32 + 1, 1 << 64, -(1 << 70)])
def test_initial_out_of_range_is_a_value_error(initial):
    with pytest.raises(ValueError, match="initial"):
        internet_checksum(b"ab", initial)
    with pytest.raises(ValueError, match="initial"):
        partial_sum(b"ab", initial)
    with pytest.raises(ValueError, match="initial"):
        checksum_copy(bytearray(2), b"ab", initial)


@pytest.mark.parametrize("initial", [1.0, "1", None])
def test_initial_not_an_integer_is_a_type_error(initial):
    with pytest.raises(TypeError):
        internet_checksum(b"ab", initial)


def test_initial_accepts_the_full_32_bit_range():
    assert internet_checksum(b"", U32) == ~ref_sum(b"", U32) & 0xFFFF == 0
    assert partial_sum(b"\x00\x01", 0xFFFE) == 0xFFFF


def test_buffer_is_released_after_errors_and_success():
    buf = bytearray(b"abcd")
    internet_checksum(buf)
    with pytest.raises(ValueError):
        internet_checksum(buf, -1)
    with pytest.raises(ValueError):
        checksum_copy(buf, b"too long for it")
    with pytest.raises(TypeError):
        checksum_copy(buf, 5)
    buf.extend(b"ef")  # resizing fails while a buffer export is held
    src = bytearray(b"xy")
    checksum_copy(bytearray(4), src)
    with pytest.raises(ValueError):
        checksum_copy(bytearray(1), src)
    src.extend(b"z")


# ---- checksum_copy's destination ---------------------------------------------

def test_copy_writes_only_the_start_of_dst():
    dst = bytearray(b"\xee" * 10)
    assert checksum_copy(dst, b"abc") == ref_checksum(b"abc")
    assert dst == b"abc" + b"\xee" * 7


def test_copy_into_too_small_dst_is_a_value_error_and_writes_nothing():
    dst = bytearray(3)
    with pytest.raises(ValueError, match="too few"):
        checksum_copy(dst, b"abcd")
    assert dst == bytearray(3)


@pytest.mark.parametrize("dst", [b"\0" * 8, memoryview(bytearray(8)).toreadonly(),
                                 np.zeros(8, np.uint8)[:].view()])
def test_copy_into_read_only_dst_is_a_type_error(dst):
    if isinstance(dst, np.ndarray):
        dst.flags.writeable = False
    with pytest.raises(TypeError, match="read-only"):
        checksum_copy(dst, b"ab")


def test_copy_between_overlapping_buffers_is_a_value_error():
    buf = bytearray(range(64))
    mv = memoryview(buf)
    with pytest.raises(ValueError, match="overlap"):
        checksum_copy(mv[8:40], mv[0:32])
    with pytest.raises(ValueError, match="overlap"):
        checksum_copy(mv, mv)
    assert buf == bytearray(range(64))
    # adjacent is not overlapping
    assert checksum_copy(mv[32:64], mv[0:32]) == ref_checksum(bytes(range(32)))


def test_copy_of_nothing_leaves_dst_alone():
    dst = bytearray(b"xyz")
    assert checksum_copy(dst, b"") == 0xFFFF
    assert checksum_copy(bytearray(0), b"") == 0xFFFF
    assert dst == b"xyz"


# ---- incremental update (RFC 1624) ---------------------------------------------

def test_rfc1624_example_gives_zero_not_minus_zero():
    # RFC 1624 section 4: C = 0xcd7a, m 0x5555 -> 0x3285; eqn. 3 gives 0x0000
    # where eqn. 2 would give 0xffff
    assert checksum_update(0xDD2F, 0x5555, 0x3285) == 0x0000


@settings(max_examples=300, deadline=None)
@given(words=st.lists(st.integers(0, 0xFFFF), min_size=2, max_size=40), data=st.data())
def test_update_matches_recomputing(words, data):
    words[0] = words[0] or 1  # a header is never all zeros: the one -0 case of RFC 1624
    i = data.draw(st.integers(1, len(words) - 1))
    new = data.draw(st.integers(0, 0xFFFF))
    before = struct.pack(f">{len(words)}H", *words)
    old = words[i]
    words[i] = new
    after = struct.pack(f">{len(words)}H", *words)
    assert checksum_update(internet_checksum(before), old, new) == internet_checksum(after)


@pytest.mark.parametrize("args", [(0x10000, 0, 0), (0, -1, 0), (0, 0, 0x10000)])
def test_update_out_of_range_is_a_value_error(args):
    with pytest.raises(ValueError):
        checksum_update(*args)


def test_update_of_non_integers_is_a_type_error():
    with pytest.raises(TypeError):
        checksum_update(b"\x00\x01", 0, 0)


# ---- pseudo-headers ------------------------------------------------------------

V4_SRC, V4_DST = "192.0.2.1", "198.51.100.200"
V6_SRC, V6_DST = "2001:db8::1", "2001:db8:ffff::abcd:1"


def _l4(pkt):
    """The L4 segment of a scapy packet, as bytes."""
    return bytes(pkt.payload)


@pytest.mark.parametrize("l4, proto", [(UDP(sport=53, dport=5353) / Raw(b"query?"), 17),
                                       (TCP(sport=80, dport=1234, flags="SA") / Raw(b"odd"), 6)])
@pytest.mark.parametrize("family", [4, 6])
def test_l4_checksum_over_pseudo_header_agrees_with_scapy(l4, proto, family):
    if family == 4:
        pkt = IP(bytes(IP(src=V4_SRC, dst=V4_DST) / l4))
        src, dst = V4_SRC, V4_DST
    else:
        pkt = IPv6(bytes(IPv6(src=V6_SRC, dst=V6_DST) / l4))
        src, dst = V6_SRC, V6_DST
    seg = _l4(pkt)
    field = 6 if proto == 17 else 16
    ph = pseudo_header_sum(src, dst, proto, len(seg))
    assert internet_checksum(seg, ph) == 0
    zeroed = seg[:field] + b"\0\0" + seg[field + 2:]
    want = int.from_bytes(seg[field:field + 2], "big")
    assert internet_checksum(zeroed, ph) == want


def test_icmp_has_no_pseudo_header():
    pkt = IP(bytes(IP(src=V4_SRC, dst=V4_DST) / ICMP(id=7, seq=9) / b"ping"))
    assert internet_checksum(_l4(pkt)) == 0


@settings(max_examples=200, deadline=None)
@given(src=st.binary(min_size=4, max_size=4), dst=st.binary(min_size=4, max_size=4),
       proto=st.integers(0, 255), length=st.integers(0, 0xFFFF))
def test_pseudo_v4_matches_reference(src, dst, proto, length):
    assert pseudo_header_sum(src, dst, proto, length) == ref_pseudo(src, dst, proto, length)


@settings(max_examples=200, deadline=None)
@given(src=st.binary(min_size=16, max_size=16), dst=st.binary(min_size=16, max_size=16),
       proto=st.integers(0, 255), length=st.integers(0, U32))
def test_pseudo_v6_matches_reference(src, dst, proto, length):
    assert pseudo_header_sum(src, dst, proto, length) == ref_pseudo(src, dst, proto, length)


@pytest.mark.parametrize("src, dst", [(V4_SRC, V4_DST), (V6_SRC, V6_DST)])
def test_pseudo_accepts_every_address_form(src, dst):
    a, b = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    want = ref_pseudo(a.packed, b.packed, 6, 1234)
    for s, d in [(a, b), (src, dst), (a.packed, b.packed), (bytearray(a.packed), memoryview(b.packed)),
                 (a, dst), (a.packed, b)]:
        assert pseudo_header_sum(s, d, 6, 1234) == want


def test_pseudo_v6_length_is_32_bits():
    s, d = ipaddress.ip_address(V6_SRC).packed, ipaddress.ip_address(V6_DST).packed
    assert pseudo_header_sum(s, d, 17, 0x12345) == ref_pseudo(s, d, 17, 0x12345)
    assert pseudo_header_sum(s, d, 17, U32) == ref_pseudo(s, d, 17, U32)


def test_pseudo_mixed_families_is_a_value_error():
    with pytest.raises(ValueError, match="famil"):
        pseudo_header_sum(V4_SRC, V6_DST, 6, 20)
    with pytest.raises(ValueError, match="famil"):
        pseudo_header_sum(bytes(16), bytes(4), 6, 20)
    # an IPv4-mapped IPv6 address is IPv6 for this purpose
    with pytest.raises(ValueError, match="famil"):
        pseudo_header_sum("::ffff:192.0.2.1", V4_DST, 6, 20)


@pytest.mark.parametrize("addr", [b"\x01\x02\x03", bytes(5), bytes(17), "300.1.1.1", "not an address"])
def test_pseudo_bad_address_is_a_value_error(addr):
    with pytest.raises(ValueError):
        pseudo_header_sum(addr, V4_DST, 6, 20)


@pytest.mark.parametrize("addr", [3232235777, None, 1.5, ["192.0.2.1"]])
def test_pseudo_address_of_wrong_type_is_a_type_error(addr):
    with pytest.raises(TypeError):
        pseudo_header_sum(addr, V4_DST, 6, 20)


@pytest.mark.parametrize("proto, length, family", [(256, 20, 4), (-1, 20, 4), (6, 0x10000, 4),
                                                   (6, -1, 4), (6, U32 + 1, 6), (256, 20, 6)])
def test_pseudo_proto_or_length_out_of_range_is_a_value_error(proto, length, family):
    src, dst = (V4_SRC, V4_DST) if family == 4 else (V6_SRC, V6_DST)
    with pytest.raises(ValueError):
        pseudo_header_sum(src, dst, proto, length)


# ---- kernels and threads -------------------------------------------------------

def test_kernel_list_starts_with_the_portable_one_and_includes_the_dispatched_one():
    assert cs._impls()[0] == "generic"
    assert cs._impl() in cs._impls()


def test_unknown_kernel_is_a_value_error():
    with pytest.raises(ValueError, match="unknown"):
        cs._internet_checksum_impl("sse9", b"ab")


def test_threads_summing_large_buffers_at_once_agree():
    # large buffers are summed without the GIL
    datas = [os.urandom(1 << 20) for _ in range(4)]
    wants = [ref_checksum(d) for d in datas]
    results = [[] for _ in datas]

    def work(i):
        dst = bytearray(len(datas[i]))
        for _ in range(20):
            results[i].append(internet_checksum(datas[i]))
            results[i].append(checksum_copy(dst, datas[i]))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(datas))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for want, got in zip(wants, results):
        assert got == [want] * 40
