"""SYN cookies (RFC 4987 3.6): a listener whose SYN queue is full answers a SYN
without keeping any state, encoding what it must remember into its ISN.

Our ISN (the cookie), before obfuscation::

    bits 31..27  counter mod 32      the counter advances every 64 s
    bits 26..24  MSS table index     the peer's MSS, rounded down to MSS_TABLE
    bits 23..0   MAC                 keyed hash of the 4-tuple, the full counter,
                                     the peer's ISN and the MSS index

and the ISN sent is that value plus a keyed 32-bit hash of the 4-tuple (mod
2**32), so the counter bits are not visible and cookies of different
connections are not comparable. The handshake's final ACK acknowledges
cookie + 1 and carries the peer's ISN + 1: the listener recovers the cookie
and the peer's ISN, and accepts it when the counter is the current or the
previous one (a cookie lives 64 to 128 s) and the MAC matches.

What a cookie cannot hold is lost: the peer's window scale and SACK-permitted
options (RFC 4987 3.6). When the SYN carried timestamps (RFC 7323), they are
kept in the low 6 bits of our TSval, which the peer echoes in the TSecr of
its ACK::

    bits 3..0  the peer's window shift (0..14; 15: no Window Scale option)
    bit 4      SACK permitted (RFC 2018)
    bit 5      ECN (not used: always 0; a set bit fails the check)

Without timestamps the SYN-ACK must not offer window scaling or SACK, since
the listener could not tell later whether they were agreed.
"""
from __future__ import annotations

import hashlib
import os
import time
from typing import Callable, NamedTuple

from fastproto.proto.tcp_isn import IpAddress, endpoint_bytes

#: what a cookie's 3-bit index encodes: common MSS values, ascending (IPv4 minimum,
#: IPv6 minimum, tunnels, Ethernet behind PPPoE/VPN, Ethernet, jumbo frames)
MSS_TABLE = (536, 1220, 1300, 1440, 1460, 4312, 8940, 8960)
#: seconds per counter step
COUNTER_PERIOD = 64
#: a cookie is valid while the counter is the one it was made with or the next
MAX_AGE_PERIODS = 2
SECRET_LEN = 16

TS_OPT_BITS = 6
TS_OPT_MASK = (1 << TS_OPT_BITS) - 1
_TS_WSCALE_NONE = 0xF
_TS_SACK = 1 << 4
_TS_ECN = 1 << 5
MAX_WSCALE = 14      # RFC 7323 2.3

_COUNTER_BITS = 5
_MAC_BITS = 24
_MAC_MASK = (1 << _MAC_BITS) - 1

Endpoint = tuple[IpAddress, int]

_COUNTERS = ("sent", "accepted", "rejected_stale", "rejected_mac", "rejected_ts_options",
             "rejected_bad_input")


class CookieParams(NamedTuple):
    """What a valid cookie recovered about the peer's SYN.

    ``mss``: the MSS the SYN-ACK's cookie encoded (bytes); ``wscale``: the
    peer's window shift, None when not agreed; ``sack_permitted``;
    ``timestamps``: whether the connection uses RFC 7323 timestamps.
    """
    mss: int
    wscale: int | None
    sack_permitted: bool
    timestamps: bool


def mss_index(mss: int) -> int:
    """The index of the largest MSS_TABLE entry not above ``mss`` (0 below the smallest)."""
    for i in range(len(MSS_TABLE) - 1, 0, -1):
        if mss >= MSS_TABLE[i]:
            return i
    return 0


def encode_ts_options(wscale: int | None, sack_permitted: bool) -> int:
    """The 6 option bits kept in our TSval."""
    bits = _TS_WSCALE_NONE if wscale is None else min(wscale, MAX_WSCALE)
    if sack_permitted:
        bits |= _TS_SACK
    return bits


def tsval_with_options(ts_now: int, bits: int) -> int:
    """The largest TSval not after ``ts_now`` (mod 2**32) whose low 6 bits are ``bits``.

    Never ahead of our timestamp clock, so later TSvals do not go backwards
    from the peer's point of view (RFC 7323 5.3 monotonicity).
    """
    return (ts_now - ((ts_now - bits) & TS_OPT_MASK)) & 0xFFFFFFFF


class SynCookies:
    """Makes and checks SYN cookies. ``clock`` gives seconds; ``secret``
    (16 bytes) keys the hashes, random when None.

    Rejections are counted by reason (``stats()``): ``rejected_stale`` (the
    counter is older than the previous period), ``rejected_mac`` (forged, or
    for another 4-tuple or peer ISN), ``rejected_ts_options`` (the echoed
    option bits are impossible), ``rejected_bad_input`` (values out of range).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 secret: bytes | None = None) -> None:
        if secret is None:
            secret = os.urandom(SECRET_LEN)
        if not isinstance(secret, (bytes, bytearray)) or len(secret) != SECRET_LEN:
            raise ValueError(f"the secret is {SECRET_LEN} bytes")
        self._clock = clock
        self._secret = bytes(secret)
        self._stats = dict.fromkeys(_COUNTERS, 0)

    def stats(self) -> dict[str, int]:
        """Counters: cookies sent, accepted, and rejected by reason (a copy)."""
        return dict(self._stats)

    def counter(self) -> int:
        """The current counter value (one step per COUNTER_PERIOD seconds)."""
        return int(self._clock() // COUNTER_PERIOD)

    def _tuple(self, local: Endpoint, remote: Endpoint) -> bytes:
        return endpoint_bytes(local[0], local[1]) + endpoint_bytes(remote[0], remote[1])

    def _offset(self, tup: bytes) -> int:
        d = hashlib.blake2b(tup, key=self._secret, digest_size=4, person=b"cookie-offset")
        return int.from_bytes(d.digest(), "big")

    def _mac(self, tup: bytes, counter: int, peer_isn: int, index: int) -> int:
        data = tup + (counter & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big") \
            + peer_isn.to_bytes(4, "big") + bytes((index,))
        d = hashlib.blake2b(data, key=self._secret, digest_size=4, person=b"cookie-mac")
        return int.from_bytes(d.digest(), "big") & _MAC_MASK

    def make(self, local: Endpoint, remote: Endpoint, peer_isn: int, mss: int,
             wscale: int | None = None, sack_permitted: bool = False,
             ts: int | None = None) -> tuple[int, int | None, int]:
        """A cookie for a SYN from ``remote`` to ``local`` with sequence number ``peer_isn``.

        ``mss``: the largest segment we may send the peer (its MSS option, or the
        default when absent); ``wscale``/``sack_permitted``: the peer's options;
        ``ts``: our timestamp clock now when the SYN carried timestamps, else None.
        Returns ``(isn, tsval, mss_used)``: our ISN; the TSval to send (None
        without timestamps, and then ``wscale``/``sack_permitted`` are lost);
        the MSS the cookie encodes: the largest table entry not above ``mss``,
        or MSS_TABLE[0] (536, which every IPv4 host must accept, RFC 9293 3.7.1)
        when ``mss`` is smaller still.
        """
        if not 0 <= peer_isn <= 0xFFFFFFFF or mss < 0:
            raise ValueError("peer_isn is 32 bits and mss >= 0")
        tup = self._tuple(local, remote)
        counter = self.counter()
        index = mss_index(mss)
        cookie = ((counter % (1 << _COUNTER_BITS)) << 27) | (index << _MAC_BITS) \
            | self._mac(tup, counter, peer_isn, index)
        isn = (cookie + self._offset(tup)) & 0xFFFFFFFF
        tsval = None
        if ts is not None:
            tsval = tsval_with_options(ts & 0xFFFFFFFF, encode_ts_options(wscale, sack_permitted))
        self._stats["sent"] += 1
        return isn, tsval, MSS_TABLE[index]

    def check(self, local: Endpoint, remote: Endpoint, ack_minus_1: int,
              peer_seq_minus_1: int, tsecr: int | None = None) -> CookieParams | None:
        """The parameters of a valid cookie, else None (the reason counted).

        ``ack_minus_1``: the final ACK's acknowledgment number - 1 (our ISN);
        ``peer_seq_minus_1``: its sequence number - 1 (the peer's ISN);
        ``tsecr``: its echoed timestamp, None when it carries no timestamps.
        """
        if not (0 <= ack_minus_1 <= 0xFFFFFFFF and 0 <= peer_seq_minus_1 <= 0xFFFFFFFF) \
                or (tsecr is not None and not 0 <= tsecr <= 0xFFFFFFFF):
            self._stats["rejected_bad_input"] += 1
            return None
        try:
            tup = self._tuple(local, remote)
        except (ValueError, TypeError, IndexError):
            self._stats["rejected_bad_input"] += 1
            return None
        cookie = (ack_minus_1 - self._offset(tup)) & 0xFFFFFFFF
        low_counter = cookie >> 27
        index = (cookie >> _MAC_BITS) & 0x7
        now = self.counter()
        for age in range(MAX_AGE_PERIODS):
            if (now - age) % (1 << _COUNTER_BITS) == low_counter:
                counter = now - age
                break
        else:
            self._stats["rejected_stale"] += 1
            return None
        if self._mac(tup, counter, peer_seq_minus_1, index) != cookie & _MAC_MASK:
            self._stats["rejected_mac"] += 1
            return None
        wscale: int | None = None
        sack = False
        if tsecr is not None:
            bits = tsecr & TS_OPT_MASK
            if bits & _TS_ECN:
                self._stats["rejected_ts_options"] += 1
                return None
            ws = bits & 0xF
            wscale = None if ws == _TS_WSCALE_NONE else ws
            sack = bool(bits & _TS_SACK)
        self._stats["accepted"] += 1
        return CookieParams(MSS_TABLE[index], wscale, sack, tsecr is not None)
