"""NeighborCache: RFC 4861 address resolution, validation (7.1), NA processing (7.2.5)."""
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
)
from scapy.layers.l2 import Dot1Q, Ether

from fastproto.proto.ndp import NeighborCache
from fastproto.wire import ETH_P_IPV6, ethernet, ipv6, udp

MY_MAC = "02:00:00:00:00:01"
MY_IP = "fe80::1"
MY_GLOBAL = "2001:db8::1"
PEER_MAC = "02:00:00:00:00:02"
PEER_IP = "fe80::2"
PEER_MAC_B = bytes.fromhex("020000000002")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def cache(**kw):
    clock = Clock()
    return NeighborCache(MY_MAC, [MY_IP, MY_GLOBAL], clock=clock, **kw), clock


def packet(src=MY_IP, dst=PEER_IP, data=b"x"):
    return ipv6(src, dst, 17, udp(src, dst, 1000, 2000, data))


def ns(src=PEER_IP, dst="ff02::1:ff00:1", target=MY_IP, lladdr=PEER_MAC, hlim=255, code=0):
    p = Ether(src=PEER_MAC, dst="33:33:ff:00:00:01") / IPv6(src=src, dst=dst, hlim=hlim) / \
        ICMPv6ND_NS(tgt=target, code=code)
    if lladdr is not None:
        p = p / ICMPv6NDOptSrcLLAddr(lladdr=lladdr)
    return bytes(p)


def na(target=PEER_IP, lladdr=PEER_MAC, S=1, O=1, dst=MY_IP, hlim=255):
    p = Ether(src=PEER_MAC, dst=MY_MAC) / IPv6(src=target, dst=dst, hlim=hlim) / \
        ICMPv6ND_NA(tgt=target, S=S, O=O, R=0)
    if lladdr is not None:
        p = p / ICMPv6NDOptDstLLAddr(lladdr=lladdr)
    return bytes(p)


def test_solicitation_for_our_address_gets_solicited_advertisement():
    c, _ = cache()
    out = c.input(ns())
    assert len(out) == 1
    e = Ether(out[0])
    assert e.dst == PEER_MAC and e.src == MY_MAC
    assert e[IPv6].src == MY_IP and e[IPv6].dst == PEER_IP and e[IPv6].hlim == 255
    adv = e[ICMPv6ND_NA]
    assert (adv.tgt, adv.S, adv.O, adv.R) == (MY_IP, 1, 1, 0)
    assert e[ICMPv6NDOptDstLLAddr].lladdr == MY_MAC
    # scapy recomputes the checksum (with the pseudo-header) of a copy: ours must match it.
    again = IPv6(bytes(e[IPv6]))
    del again[ICMPv6ND_NA].cksum
    assert IPv6(bytes(again))[ICMPv6ND_NA].cksum == adv.cksum


def test_solicitation_source_option_creates_stale_entry():
    c, _ = cache()
    c.input(ns())
    assert c.lookup(PEER_IP) == PEER_MAC_B
    assert c.state(PEER_IP) == "STALE"


def test_solicitation_for_other_target_is_counted_not_answered():
    c, _ = cache()
    assert c.input(ns(target="fe80::99")) == []
    assert c.stats()["nd_not_for_us"] == 1


def test_dad_probe_is_answered_to_all_nodes_unsolicited():
    c, _ = cache()
    out = c.input(ns(src="::", dst="ff02::1:ff00:1", lladdr=None))
    e = Ether(out[0])
    assert e.dst == "33:33:00:00:00:01" and e[IPv6].dst == "ff02::1"
    assert e[ICMPv6ND_NA].S == 0 and e[ICMPv6ND_NA].O == 1
    assert c.stats()["nd_dad_answered"] == 1


def test_dad_probe_with_source_option_is_invalid():
    c, _ = cache()
    assert c.input(ns(src="::")) == []
    assert c.stats()["nd_bad_source"] == 1


def test_hop_limit_below_255_is_dropped_and_counted():
    c, _ = cache()
    assert c.input(ns(hlim=254)) == []
    assert c.input(na(hlim=64)) == []
    assert c.stats()["nd_bad_hop_limit"] == 2
    assert c.lookup(PEER_IP) is None


def test_bad_checksum_code_and_options_are_counted():
    c, _ = cache()
    frame = bytearray(ns())
    frame[14 + 40 + 2] ^= 0xFF
    assert c.input(bytes(frame)) == []
    assert c.input(ns(code=1)) == []
    bad_opt = bytes(Ether(src=PEER_MAC, dst=MY_MAC) / IPv6(src=PEER_IP, dst=MY_IP, hlim=255) /
                    ICMPv6ND_NS(tgt=MY_IP) / ICMPv6NDOptSrcLLAddr(len=0, lladdr=PEER_MAC))
    assert c.input(bad_opt) == []
    s = c.stats()
    assert (s["nd_bad_checksum"], s["nd_bad_code"], s["nd_bad_option"]) == (1, 1, 1)


def test_non_ndp_frame_is_counted_malformed():
    c, _ = cache()
    echo = bytes(Ether(src=PEER_MAC, dst=MY_MAC) / IPv6(src=PEER_IP, dst=MY_IP, hlim=255) / ICMPv6EchoRequest())
    assert c.input(echo) == []
    assert c.input(b"\x01\x02") == []
    assert c.stats()["nd_malformed"] == 2


def test_resolve_sends_solicitation_to_solicited_node_group():
    c, _ = cache()
    out = c.resolve("2001:db8::abcd:1234", packet(src=MY_GLOBAL, dst="2001:db8::abcd:1234"))
    e = Ether(out[0])
    assert e.dst == "33:33:ff:cd:12:34"
    assert e[IPv6].dst == "ff02::1:ffcd:1234" and e[IPv6].hlim == 255
    assert e[IPv6].src == MY_GLOBAL   # the held packet's source (RFC 4861 7.2.2)
    assert e[ICMPv6ND_NS].tgt == "2001:db8::abcd:1234"
    assert e[ICMPv6NDOptSrcLLAddr].lladdr == MY_MAC
    assert c.state("2001:db8::abcd:1234") == "INCOMPLETE"


def test_solicited_advertisement_resolves_and_releases_packets():
    c, _ = cache()
    c.resolve(PEER_IP, packet(data=b"a"))
    c.resolve(PEER_IP, packet(data=b"b"))
    out = c.input(na())
    assert [f[:14] for f in out] == [ethernet(PEER_MAC, MY_MAC, ETH_P_IPV6, b"")[:14]] * 2
    assert [f[14:] for f in out] == [packet(data=b"a"), packet(data=b"b")]
    assert c.state(PEER_IP) == "REACHABLE"


def test_unsolicited_advertisement_resolves_as_stale():
    c, _ = cache()
    c.resolve(PEER_IP, packet())
    c.input(na(S=0, dst="ff02::1"))
    assert c.state(PEER_IP) == "STALE"


def test_advertisement_without_target_option_leaves_incomplete():
    c, _ = cache()
    c.resolve(PEER_IP, packet())
    assert c.input(na(lladdr=None)) == []
    assert c.state(PEER_IP) == "INCOMPLETE" and c.stats()["nd_na_ignored"] == 1


def test_reachable_becomes_stale_after_reachable_time_then_expires():
    c, clock = cache(reachable_time=30.0, stale_timeout=100.0)
    c.resolve(PEER_IP, packet())
    c.input(na())
    clock.now += 31
    assert c.state(PEER_IP) == "STALE" and c.lookup(PEER_IP) == PEER_MAC_B
    clock.now += 100
    assert c.lookup(PEER_IP) is None and c.stats()["nd_expired"] == 1


def test_advertisement_without_override_does_not_change_address():
    c, _ = cache()
    c.resolve(PEER_IP, packet())
    c.input(na())
    c.input(na(lladdr="02:00:00:00:00:99", O=0))
    assert c.lookup(PEER_IP) == PEER_MAC_B
    assert c.state(PEER_IP) == "STALE"   # RFC 4861 7.2.5: REACHABLE -> STALE
    c.input(na(lladdr="02:00:00:00:00:99", O=1))
    assert c.lookup(PEER_IP) == bytes.fromhex("020000000099")
    assert c.state(PEER_IP) == "REACHABLE"


def test_advertisement_with_no_entry_is_counted():
    c, _ = cache()
    assert c.input(na()) == []
    assert c.stats()["nd_na_no_entry"] == 1 and c.lookup(PEER_IP) is None


def test_solicited_flag_to_multicast_is_invalid():
    c, _ = cache()
    c.resolve(PEER_IP, packet())
    assert c.input(na(dst="ff02::1", S=1)) == []
    assert c.stats()["nd_bad_solicited_flag"] == 1


def test_advertisement_of_our_address_is_a_conflict():
    c, _ = cache()
    assert c.input(na(target=MY_IP)) == []
    assert c.stats()["nd_conflict"] == 1


def test_multicast_target_is_invalid():
    c, _ = cache()
    assert c.input(ns(target="ff02::1")) == []
    assert c.stats()["nd_bad_target"] == 1


def test_retransmits_then_gives_up_dropping_held_packets():
    c, clock = cache(max_multicast_solicit=3)
    sent = len(c.resolve(PEER_IP, packet()))
    for _ in range(6):
        clock.now += 1.0
        sent += len(c.tick())
    assert sent == 3
    assert c.state(PEER_IP) is None and c.stats()["nd_unresolved"] == 1


def test_hold_queue_bounded():
    c, _ = cache(max_pending_per_ip=1)
    c.resolve(PEER_IP, packet(data=b"a"))
    c.resolve(PEER_IP, packet(data=b"b"))
    assert c.pending(PEER_IP) == 1 and c.stats()["nd_hold_overflow"] == 1
    assert [f[14:] for f in c.input(na())] == [packet(data=b"b")]


def test_cache_bounded_lru_eviction():
    c, _ = cache(max_entries=1)
    c.input(ns(src="fe80::2"))
    c.input(ns(src="fe80::3", lladdr="02:00:00:00:00:03"))
    assert c.lookup("fe80::2") is None and c.lookup("fe80::3") is not None
    assert c.stats()["nd_evicted"] == 1


def test_answer_keeps_vlan_tag():
    c, _ = cache()
    frame = bytes(Ether(src=PEER_MAC, dst="33:33:ff:00:00:01") / Dot1Q(vlan=7) /
                  IPv6(src=PEER_IP, dst="ff02::1:ff00:1", hlim=255) / ICMPv6ND_NS(tgt=MY_IP) /
                  ICMPv6NDOptSrcLLAddr(lladdr=PEER_MAC))
    assert Ether(c.input(frame)[0])[Dot1Q].vlan == 7


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([135, 136]), st.integers(0, 2**32 - 1), st.binary(max_size=64))
def test_any_well_checksummed_body_is_handled_or_counted(kind, rest, body):
    from fastproto.wire import icmpv6_message
    msg = icmpv6_message(PEER_IP, MY_IP, kind, 0, rest, body)
    frame = ethernet(MY_MAC, PEER_MAC, ETH_P_IPV6, ipv6(PEER_IP, MY_IP, 58, msg, hop_limit=255))
    c, _ = cache()
    c.resolve(PEER_IP, packet())
    before = sum(c.stats().values())
    out = c.input(frame)
    assert all(isinstance(f, bytes) for f in out)
    assert sum(c.stats().values()) > before
