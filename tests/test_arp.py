"""ArpCache: RFC 826 reception, RFC 1122 2.3.2 queueing and retries, bounds and expiry."""
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.l2 import ARP, Ether

from fastproto.proto.arp import ArpCache
from fastproto.wire import ETH_P_ARP, ETH_P_IP, ethernet, ipv4, udp

MY_MAC = "02:00:00:00:00:01"
MY_IP = "10.0.0.1"
PEER_MAC = "02:00:00:00:00:02"
PEER_IP = "10.0.0.2"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def cache(**kw):
    clock = Clock()
    return ArpCache(MY_MAC, MY_IP, clock=clock, **kw), clock


def packet(dst=PEER_IP, data=b"x"):
    return ipv4(MY_IP, dst, 17, udp(MY_IP, dst, 1000, 2000, data))


def ip_of(frame):
    """The IP packet of a frame, without Ethernet padding."""
    total = int.from_bytes(frame[16:18], "big")
    assert frame[14 + total:] == bytes(len(frame) - 14 - total)
    return frame[14:14 + total]


def arp_frame(op, psrc, hwsrc, pdst, hwdst="00:00:00:00:00:00", ether_dst="ff:ff:ff:ff:ff:ff"):
    return bytes(Ether(dst=ether_dst, src=hwsrc) / ARP(op=op, psrc=psrc, hwsrc=hwsrc, pdst=pdst,
                                                       hwdst=hwdst))


def test_request_for_our_address_is_answered_and_sender_learned():
    c, _ = cache()
    out = c.input(arp_frame(1, PEER_IP, PEER_MAC, MY_IP))
    assert len(out) == 1
    reply = Ether(out[0])
    assert reply.dst == PEER_MAC and reply.src == MY_MAC
    assert reply[ARP].op == 2
    assert (reply[ARP].psrc, reply[ARP].hwsrc) == (MY_IP, MY_MAC)
    assert (reply[ARP].pdst, reply[ARP].hwdst) == (PEER_IP, PEER_MAC)
    assert c.lookup(PEER_IP) == bytes.fromhex("020000000002")
    assert c.stats()["arp_replies_sent"] == 1 and c.stats()["arp_learned"] == 1


def test_request_for_other_address_not_learned_when_sender_unknown():
    c, _ = cache()
    assert c.input(arp_frame(1, PEER_IP, PEER_MAC, "10.0.0.9")) == []
    assert c.lookup(PEER_IP) is None
    assert c.stats()["arp_not_for_us"] == 1


def test_known_sender_is_updated_by_any_packet_merge_flag():
    c, _ = cache()
    c.input(arp_frame(1, PEER_IP, PEER_MAC, MY_IP))
    # RFC 826: an entry is updated even when the packet is for someone else.
    assert c.input(arp_frame(1, PEER_IP, "02:00:00:00:00:99", "10.0.0.9")) == []
    assert c.lookup(PEER_IP) == bytes.fromhex("020000000099")
    assert c.stats()["arp_updated"] == 1


def test_gratuitous_arp_updates_a_known_entry_only():
    c, _ = cache()
    c.input(arp_frame(1, PEER_IP, PEER_MAC, MY_IP))
    c.input(arp_frame(1, PEER_IP, "02:00:00:00:00:77", PEER_IP))
    assert c.lookup(PEER_IP) == bytes.fromhex("020000000077")
    c.input(arp_frame(2, "10.0.0.3", "02:00:00:00:00:03", "10.0.0.3"))
    assert c.lookup("10.0.0.3") is None
    assert c.stats()["arp_gratuitous"] == 2


def test_resolve_unknown_sends_request_and_holds_packet_until_reply():
    c, _ = cache()
    out = c.resolve(PEER_IP, packet())
    req = Ether(out[0])
    assert req.dst == "ff:ff:ff:ff:ff:ff" and req[ARP].op == 1
    assert (req[ARP].psrc, req[ARP].pdst, req[ARP].hwsrc) == (MY_IP, PEER_IP, MY_MAC)
    assert c.pending(PEER_IP) == 1
    released = c.input(arp_frame(2, PEER_IP, PEER_MAC, MY_IP, MY_MAC, MY_MAC))
    assert len(released) == 1
    eth = Ether(released[0])
    assert eth.dst == PEER_MAC and eth.type == ETH_P_IP
    assert ip_of(released[0]) == packet()
    assert c.pending(PEER_IP) == 0 and c.stats()["arp_released"] == 1


def test_resolve_known_frames_packet_and_accepts_a_builder():
    c, _ = cache()
    c.input(arp_frame(1, PEER_IP, PEER_MAC, MY_IP))
    assert c.resolve(PEER_IP, packet()) == [ethernet(PEER_MAC, MY_MAC, ETH_P_IP, packet())]
    assert c.resolve(PEER_IP, lambda mac: b"frame-for-" + mac) == [
        b"frame-for-" + bytes.fromhex("020000000002")]


def test_requests_are_rate_limited_per_address():
    c, clock = cache()
    assert len(c.resolve(PEER_IP, packet())) == 1
    assert c.resolve(PEER_IP, packet()) == []
    clock.now += 0.5
    assert c.resolve(PEER_IP, packet()) == []
    clock.now += 0.5
    assert len(c.resolve(PEER_IP, packet())) == 1
    assert c.stats()["arp_requests_sent"] == 2


def test_hold_queue_is_bounded_and_drops_oldest():
    c, _ = cache(max_pending_per_ip=2)
    for i in range(4):
        c.resolve(PEER_IP, packet(data=bytes([i])))
    assert c.pending(PEER_IP) == 2
    assert c.stats()["arp_hold_overflow"] == 2
    out = c.input(arp_frame(2, PEER_IP, PEER_MAC, MY_IP, MY_MAC, MY_MAC))
    assert [ip_of(f) for f in out] == [packet(data=b"\x02"), packet(data=b"\x03")]


def test_unanswered_after_max_requests_drops_held_packets():
    c, clock = cache(max_requests=3)
    c.resolve(PEER_IP, packet())
    c.resolve(PEER_IP, packet())
    sent = 1
    for _ in range(5):
        clock.now += 1.0
        sent += len(c.tick())
    assert sent == 3
    assert c.pending(PEER_IP) == 0
    assert c.stats()["arp_unresolved"] == 2
    # A later packet starts over with a fresh request.
    assert len(c.resolve(PEER_IP, packet())) == 1


def test_entry_expires_after_timeout():
    c, clock = cache(timeout=60.0)
    c.input(arp_frame(1, PEER_IP, PEER_MAC, MY_IP))
    clock.now += 59.9
    assert c.lookup(PEER_IP) is not None
    clock.now += 60.0
    assert c.lookup(PEER_IP) is None
    assert c.stats()["arp_expired"] == 1


def test_tick_purges_expired_entries():
    c, clock = cache(timeout=1.0)
    c.input(arp_frame(1, PEER_IP, PEER_MAC, MY_IP))
    clock.now += 2
    c.tick()
    assert c.entries() == {} and c.stats()["arp_expired"] == 1


def test_table_is_bounded_least_recently_used_evicted():
    c, _ = cache(max_entries=2)
    c.input(arp_frame(1, "10.0.0.2", "02:00:00:00:00:02", MY_IP))
    c.input(arp_frame(1, "10.0.0.3", "02:00:00:00:00:03", MY_IP))
    c.lookup("10.0.0.2")
    c.input(arp_frame(1, "10.0.0.4", "02:00:00:00:00:04", MY_IP))
    assert c.lookup("10.0.0.3") is None
    assert c.lookup("10.0.0.2") is not None and c.lookup("10.0.0.4") is not None
    assert c.stats()["arp_evicted"] == 1


def test_claim_of_our_address_is_counted_as_conflict_not_learned():
    c, _ = cache()
    assert c.input(arp_frame(2, MY_IP, PEER_MAC, MY_IP)) == []
    assert c.lookup(MY_IP) is None and c.stats()["arp_conflict"] == 1


def test_multicast_sender_mac_is_rejected():
    c, _ = cache()
    assert c.input(arp_frame(1, PEER_IP, "01:00:5e:00:00:01", MY_IP)) == []
    assert c.lookup(PEER_IP) is None and c.stats()["arp_bad_sender"] == 1


def test_probe_from_unspecified_is_answered_but_not_learned():
    c, _ = cache()
    out = c.input(arp_frame(1, "0.0.0.0", PEER_MAC, MY_IP))
    assert len(out) == 1 and Ether(out[0])[ARP].op == 2
    assert c.entries() == {}


def test_malformed_frames_are_counted():
    c, _ = cache()
    bad_hw = bytes(Ether(src=PEER_MAC, dst=MY_MAC) / ARP(hwtype=6, psrc=PEER_IP, hwsrc=PEER_MAC, pdst=MY_IP))
    assert c.input(bad_hw) == []
    assert c.input(b"\x00" * 10) == []
    assert c.input(ethernet(MY_MAC, PEER_MAC, ETH_P_IP, packet())) == []
    assert c.stats()["arp_malformed"] == 3


def test_parsed_row_is_accepted_and_vlan_is_kept():
    from fastproto._core.parse import parse_frames
    from scapy.layers.l2 import Dot1Q
    frame = bytes(Ether(src=PEER_MAC, dst="ff:ff:ff:ff:ff:ff") / Dot1Q(vlan=42) /
                  ARP(op=1, psrc=PEER_IP, hwsrc=PEER_MAC, pdst=MY_IP))
    c, _ = cache()
    out = c.input(parse_frames([frame])[0])
    assert Ether(out[0])[Dot1Q].vlan == 42


def test_announce_is_a_gratuitous_request():
    c, _ = cache()
    a = Ether(c.announce())[ARP]
    assert a.op == 1 and a.psrc == a.pdst == MY_IP and a.hwsrc == MY_MAC


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=28, max_size=28))
def test_any_arp_body_is_handled_or_counted(body):
    c, _ = cache()
    before = sum(c.stats().values())
    out = c.input(ethernet("ff:ff:ff:ff:ff:ff", PEER_MAC, ETH_P_ARP, body))
    assert all(isinstance(f, bytes) for f in out)
    assert sum(c.stats().values()) > before
