"""TCP initial sequence numbers (RFC 6528 3)."""
import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastproto.proto.tcp_isn import TICKS_PER_SECOND, IsnGenerator, addr16

SECRET = bytes(range(16))
TUPLE = ("10.0.0.1", 80, "192.0.2.7", 40000)


class Clock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


def test_isn_is_32_bits():
    gen = IsnGenerator(Clock(1e9), SECRET)
    assert 0 <= gen.isn(*TUPLE) <= 0xFFFFFFFF


def test_isn_advances_with_the_4us_clock_for_the_same_tuple():
    clock = Clock()
    gen = IsnGenerator(clock, SECRET)
    first = gen.isn(*TUPLE)
    clock.now += 1.0
    second = gen.isn(*TUPLE)
    assert (second - first) % 2**32 == TICKS_PER_SECOND
    clock.now += 4e-6 * 10
    assert (gen.isn(*TUPLE) - second) % 2**32 == 10


def test_isn_is_stable_while_the_clock_stands_still():
    gen = IsnGenerator(Clock(), SECRET)
    assert gen.isn(*TUPLE) == gen.isn(*TUPLE)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 10**6), st.lists(st.floats(0, 1000), min_size=2, max_size=20))
def test_isn_moves_forward_by_the_ticks_elapsed_for_one_tuple(start, steps):
    clock = Clock(float(start))
    gen = IsnGenerator(clock, SECRET)
    prev = gen.isn(*TUPLE)
    for step in steps:
        clock.now += step
        cur = gen.isn(*TUPLE)
        # the ISN space wraps every 2**32 ticks (~4.77 h); a step shorter than that
        # moves the ISN forward by the ticks elapsed
        assert (cur - prev) % 2**32 == pytest.approx(step * TICKS_PER_SECOND, abs=1)
        prev = cur


def test_isns_of_neighbouring_tuples_are_unrelated():
    gen = IsnGenerator(Clock(), SECRET)
    isns = {gen.isn("10.0.0.1", 80, "192.0.2.7", port) for port in range(1024, 3072)}
    # a predictable F (say, a port-linear one) would collide or step evenly
    assert len(isns) == 2048
    diffs = {(gen.isn("10.0.0.1", 80, "192.0.2.7", p + 1) - gen.isn("10.0.0.1", 80, "192.0.2.7", p))
             % 2**32 for p in range(1024, 1124)}
    assert len(diffs) == 100
    top_bits = {isn >> 28 for isn in isns}
    assert len(top_bits) == 16


def test_each_part_of_the_tuple_changes_the_isn():
    gen = IsnGenerator(Clock(), SECRET)
    base = gen.isn(*TUPLE)
    assert gen.isn("10.0.0.2", 80, "192.0.2.7", 40000) != base
    assert gen.isn("10.0.0.1", 81, "192.0.2.7", 40000) != base
    assert gen.isn("10.0.0.1", 80, "192.0.2.8", 40000) != base
    assert gen.isn("10.0.0.1", 80, "192.0.2.7", 40001) != base
    # swapping ends is another connection
    assert gen.isn("192.0.2.7", 40000, "10.0.0.1", 80) != base


def test_another_secret_gives_other_isns():
    a = IsnGenerator(Clock(), SECRET)
    b = IsnGenerator(Clock(), bytes(16))
    assert a.isn(*TUPLE) != b.isn(*TUPLE)


def test_random_secrets_differ_between_generators():
    a = IsnGenerator(Clock())
    b = IsnGenerator(Clock())
    assert a.isn(*TUPLE) != b.isn(*TUPLE)


def test_address_forms_name_the_same_endpoint():
    gen = IsnGenerator(Clock(), SECRET)
    base = gen.isn(*TUPLE)
    packed = ipaddress.ip_address("10.0.0.1").packed
    mapped = ipaddress.ip_address("::ffff:10.0.0.1").packed
    assert gen.isn(packed, 80, "192.0.2.7", 40000) == base
    assert gen.isn(mapped, 80, "192.0.2.7", 40000) == base
    assert gen.isn("::ffff:10.0.0.1", 80, ipaddress.ip_address("192.0.2.7"), 40000) == base


def test_ipv6_tuples_work():
    gen = IsnGenerator(Clock(), SECRET)
    a = gen.isn("2001:db8::1", 443, "2001:db8::2", 50000)
    b = gen.isn("2001:db8::1", 443, "2001:db8::3", 50000)
    assert a != b


def test_addr16_maps_ipv4():
    assert addr16("192.0.2.1") == bytes(10) + b"\xff\xff" + bytes([192, 0, 2, 1])
    assert addr16(bytes([192, 0, 2, 1])) == addr16("::ffff:192.0.2.1")


@pytest.mark.parametrize("bad", [b"\x01\x02\x03", "not-an-ip", "300.1.1.1", 12345, None])
def test_bad_address_is_rejected(bad):
    gen = IsnGenerator(Clock(), SECRET)
    with pytest.raises(ValueError):
        gen.isn(bad, 80, "192.0.2.7", 40000)


@pytest.mark.parametrize("port", [-1, 65536, "80", 1.5])
def test_bad_port_is_rejected(port):
    gen = IsnGenerator(Clock(), SECRET)
    with pytest.raises(ValueError):
        gen.isn("10.0.0.1", port, "192.0.2.7", 40000)


@pytest.mark.parametrize("secret", [b"", b"short", bytes(17), "x" * 16])
def test_bad_secret_is_rejected(secret):
    with pytest.raises(ValueError):
        IsnGenerator(Clock(), secret)
