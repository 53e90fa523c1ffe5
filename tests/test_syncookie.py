"""SYN cookies (RFC 4987 3.6), round-tripped through scapy-built segments."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tcp_scapy import options_of, tcp_segment

from fastproto.proto.syncookie import (
    COUNTER_PERIOD,
    MSS_TABLE,
    TS_OPT_MASK,
    CookieParams,
    SynCookies,
    mss_index,
    tsval_with_options,
)

SECRET = bytes(range(100, 116))
LOCAL = ("192.0.2.1", 80)
REMOTE = ("198.51.100.9", 50123)


class Clock:
    def __init__(self, now=10_000.0):
        self.now = now

    def __call__(self):
        return self.now


def handshake(cookies, syn, ts_now=None, local=LOCAL, remote=REMOTE):
    """Answer a scapy SYN with a cookie and return the scapy SYN-ACK and the client's ACK."""
    o = options_of(syn)
    mss = o["mss"] if o["mss"] is not None else 536
    isn, tsval, mss_used = cookies.make(local, remote, syn.seq, mss, o["wscale"],
                                        o["sack_permitted"], ts_now if o["ts"] else None)
    synack = tcp_segment(local[1], remote[1], isn, (syn.seq + 1) % 2**32, "SA",
                         ts=(tsval, o["ts"][0]) if tsval is not None else None, mss=mss_used)
    peer_ts = options_of(synack)["ts"]
    ack = tcp_segment(remote[1], local[1], (syn.seq + 1) % 2**32, (synack.seq + 1) % 2**32, "A",
                      ts=(o["ts"][0] + 1, peer_ts[0]) if peer_ts else None)
    return synack, ack, mss_used


def check_ack(cookies, ack, local=LOCAL, remote=REMOTE):
    ts = options_of(ack)["ts"]
    return cookies.check(local, remote, (ack.ack - 1) % 2**32, (ack.seq - 1) % 2**32,
                         ts[1] if ts else None)


@settings(max_examples=150, deadline=None)
@given(index=st.integers(0, len(MSS_TABLE) - 1),
       extra=st.integers(0, 50),
       wscale=st.none() | st.integers(0, 14),
       sack=st.booleans(),
       with_ts=st.booleans(),
       peer_isn=st.integers(0, 2**32 - 1),
       ts_now=st.integers(0, 2**32 - 1),
       now=st.floats(0, 1e9),
       v6=st.booleans())
def test_cookie_round_trips_every_mss_index_and_option_combination(
        index, extra, wscale, sack, with_ts, peer_isn, ts_now, now, v6):
    cookies = SynCookies(Clock(now), SECRET)
    local, remote = (("2001:db8::1", 443), ("2001:db8::99", 40000)) if v6 else (LOCAL, REMOTE)
    mss = MSS_TABLE[index] + (extra if index == len(MSS_TABLE) - 1 or
                              MSS_TABLE[index] + extra < MSS_TABLE[index + 1] else 0)
    syn = tcp_segment(remote[1], local[1], peer_isn, mss=mss, wscale=wscale, sack=sack,
                      ts=(12345, 0) if with_ts else None)
    synack, ack, mss_used = handshake(cookies, syn, ts_now, local, remote)
    assert mss_used == MSS_TABLE[index]
    got = check_ack(cookies, ack, local, remote)
    if with_ts:
        assert got == CookieParams(MSS_TABLE[index], wscale, sack, True)
        tsval = options_of(synack)["ts"][0]
        # our TSval never runs ahead of the timestamp clock
        assert 0 <= (ts_now - tsval) % 2**32 <= TS_OPT_MASK
    else:
        # without timestamps the cookie cannot carry window scaling or SACK (RFC 4987 3.6)
        assert got == CookieParams(MSS_TABLE[index], None, False, False)
    assert cookies.stats()["accepted"] == 1


def test_mss_below_the_table_uses_its_smallest_entry():
    assert mss_index(100) == 0
    assert mss_index(536) == 0
    assert mss_index(1219) == 0
    assert mss_index(1460) == MSS_TABLE.index(1460)
    assert mss_index(65535) == len(MSS_TABLE) - 1


def test_wscale_above_14_is_clamped_to_14():
    cookies = SynCookies(Clock(), SECRET)
    syn = tcp_segment(REMOTE[1], LOCAL[1], 7, mss=1460, wscale=15, ts=(1, 0))
    _, ack, _ = handshake(cookies, syn, 5000)
    assert check_ack(cookies, ack).wscale == 14


def test_cookie_is_valid_during_the_next_period():
    clock = Clock()
    cookies = SynCookies(clock, SECRET)
    syn = tcp_segment(REMOTE[1], LOCAL[1], 1000, mss=1460)
    _, ack, _ = handshake(cookies, syn)
    clock.now += COUNTER_PERIOD
    assert check_ack(cookies, ack) is not None


@pytest.mark.parametrize("age", [2 * COUNTER_PERIOD, 3 * COUNTER_PERIOD, 31 * COUNTER_PERIOD])
def test_stale_cookie_is_rejected(age):
    clock = Clock()
    cookies = SynCookies(clock, SECRET)
    syn = tcp_segment(REMOTE[1], LOCAL[1], 1000, mss=1460)
    _, ack, _ = handshake(cookies, syn)
    clock.now += age
    assert check_ack(cookies, ack) is None
    assert cookies.stats()["rejected_stale"] == 1


def test_cookie_a_full_counter_wrap_old_is_rejected_by_its_mac():
    clock = Clock()
    cookies = SynCookies(clock, SECRET)
    syn = tcp_segment(REMOTE[1], LOCAL[1], 1000, mss=1460)
    _, ack, _ = handshake(cookies, syn)
    clock.now += 32 * COUNTER_PERIOD     # the 5 counter bits match again
    assert check_ack(cookies, ack) is None
    assert cookies.stats()["rejected_mac"] == 1


def test_cookie_from_the_future_is_rejected():
    clock = Clock()
    cookies = SynCookies(clock, SECRET)
    syn = tcp_segment(REMOTE[1], LOCAL[1], 1000, mss=1460)
    _, ack, _ = handshake(cookies, syn)
    clock.now -= COUNTER_PERIOD
    assert check_ack(cookies, ack) is None


@pytest.mark.parametrize("bit", range(32))
def test_forged_cookie_with_any_bit_flipped_is_rejected(bit):
    cookies = SynCookies(Clock(), SECRET)
    syn = tcp_segment(REMOTE[1], LOCAL[1], 1000, mss=1460)
    _, ack, _ = handshake(cookies, syn)
    forged = ((ack.ack - 1) ^ (1 << bit)) % 2**32
    assert cookies.check(LOCAL, REMOTE, forged, ack.seq - 1) is None
    s = cookies.stats()
    assert s["rejected_mac"] + s["rejected_stale"] == 1 and s["accepted"] == 0


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_guessed_cookie_values_are_rejected(guess):
    cookies = SynCookies(Clock(), SECRET)
    isn, _, _ = cookies.make(LOCAL, REMOTE, 1000, 1460)
    if guess != isn:
        assert cookies.check(LOCAL, REMOTE, guess, 1000) is None


@pytest.mark.parametrize("remote", [("198.51.100.10", 50123), ("198.51.100.9", 50124)])
def test_cookie_for_another_tuple_is_rejected(remote):
    cookies = SynCookies(Clock(), SECRET)
    syn = tcp_segment(REMOTE[1], LOCAL[1], 1000, mss=1460)
    _, ack, _ = handshake(cookies, syn)
    assert cookies.check(LOCAL, remote, ack.ack - 1, ack.seq - 1) is None
    assert cookies.check(("192.0.2.2", 80), REMOTE, ack.ack - 1, ack.seq - 1) is None
    assert cookies.stats()["rejected_mac"] + cookies.stats()["rejected_stale"] == 2


def test_cookie_with_another_peer_isn_is_rejected():
    cookies = SynCookies(Clock(), SECRET)
    syn = tcp_segment(REMOTE[1], LOCAL[1], 1000, mss=1460)
    _, ack, _ = handshake(cookies, syn)
    assert cookies.check(LOCAL, REMOTE, ack.ack - 1, 1000 + 5) is None


def test_cookie_made_with_another_secret_is_rejected():
    syn = tcp_segment(REMOTE[1], LOCAL[1], 1000, mss=1460)
    _, ack, _ = handshake(SynCookies(Clock(), bytes(16)), syn)
    assert check_ack(SynCookies(Clock(), SECRET), ack) is None


def test_echoed_ecn_bit_is_rejected():
    cookies = SynCookies(Clock(), SECRET)
    syn = tcp_segment(REMOTE[1], LOCAL[1], 1000, mss=1460, ts=(1, 0))
    _, ack, _ = handshake(cookies, syn, 777777)
    tsecr = options_of(ack)["ts"][1]
    assert cookies.check(LOCAL, REMOTE, ack.ack - 1, ack.seq - 1, tsecr | 0x20) is None
    assert cookies.stats()["rejected_ts_options"] == 1


@pytest.mark.parametrize("args", [(-1, 5, None), (2**32, 5, None), (5, -1, None), (5, 5, 2**32)])
def test_out_of_range_values_are_rejected_by_reason(args):
    cookies = SynCookies(Clock(), SECRET)
    assert cookies.check(LOCAL, REMOTE, *args) is None
    assert cookies.stats()["rejected_bad_input"] == 1


def test_bad_endpoint_in_check_is_rejected_by_reason():
    cookies = SynCookies(Clock(), SECRET)
    assert cookies.check(("not an ip", 80), REMOTE, 5, 5) is None
    assert cookies.check(LOCAL, ("198.51.100.9", 70000), 5, 5) is None
    assert cookies.stats()["rejected_bad_input"] == 2


def test_make_rejects_bad_values():
    cookies = SynCookies(Clock(), SECRET)
    with pytest.raises(ValueError):
        cookies.make(LOCAL, REMOTE, 2**32, 1460)
    with pytest.raises(ValueError):
        cookies.make(LOCAL, REMOTE, 1, -5)


def test_bad_secret_is_rejected():
    with pytest.raises(ValueError):
        SynCookies(Clock(), b"short")


@given(st.integers(0, 2**32 - 1), st.integers(0, TS_OPT_MASK))
def test_tsval_with_options_is_the_latest_value_not_ahead_of_the_clock(ts_now, bits):
    tsval = tsval_with_options(ts_now, bits)
    assert tsval & TS_OPT_MASK == bits
    assert 0 <= (ts_now - tsval) % 2**32 <= TS_OPT_MASK
