"""100 MB each way over one TCP connection between two stacks on a LinkPair whose
two ends lose 10 % of frames, reorder, duplicate and corrupt 1 %: every byte
arrives, in order, and the connection closes with a FIN handshake."""
from __future__ import annotations

import hashlib
import random
import socket as pysocket
import threading
import time

from fastproto.phy.fault_injector import FaultInjector
from fastproto.phy.link import LinkPair
from fastproto.socket import AF_INET
from fastproto.stack import Stack
from fastproto.tcp_socket import SOCK_STREAM

A4, B4 = "198.18.0.1", "198.18.0.2"
SIZE = 100_000_000
BLOCK = 1 << 16
# A LinkPair's round trip is well under a millisecond: timers scaled to it keep a
# lossy transfer from idling in retransmission timeouts, and a lost window
# update from stalling the sender in persist backoff (1 s doubling to 60 s by
# default).  A lost segment may be lost again many times, so the retry limit is
# far above the default.
TCP = dict(rto_min=0.002, rto_initial=0.05, rto_max=0.02, max_retries=200, delack=0.001,
           persist_min=0.01, persist_max=0.1, time_wait=0.2)
# Corruption flips bits within one 16-bit word, as the Internet checksum is
# sure to catch (FaultInjector corrupt_in_word): flips anywhere can cancel out in
# the one's complement sum, which a real link's CRC would have caught.
IMPAIR = dict(loss=0.10, reorder=0.05, duplicate=0.05, corrupt=0.01, reorder_hold=0.002,
              corrupt_in_word=True)


def blocks(seed: int, size: int):
    """``size`` bytes of a deterministic stream, in blocks of BLOCK bytes."""
    rnd = random.Random(seed)
    left = size
    while left > 0:
        n = min(BLOCK, left)
        yield rnd.randbytes(n)
        left -= n


def stream_digest(seed: int, size: int) -> bytes:
    h = hashlib.sha256()
    for b in blocks(seed, size):
        h.update(b)
    return h.digest()


def exchange(conn, seed: int, size: int, result: dict, key: str) -> None:
    """Send ``size`` bytes of stream ``seed`` on ``conn`` while a second thread
    reads everything the peer sends; put the digest and length read under ``key``."""
    def reader():
        try:
            h = hashlib.sha256()
            n = 0
            while chunk := conn.recv(BLOCK):
                h.update(chunk)
                n += len(chunk)
            result[key] = (n, h.digest())
        except BaseException as exc:  # reported to the test
            result[key + "_error"] = exc

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        for b in blocks(seed, size):
            conn.sendall(b)
        conn.shutdown(pysocket.SHUT_WR)   # our FIN after the last byte
    except OSError as exc:                # reported to the test, with the counters
        result[key + "_send_error"] = exc
    t.join(600)
    conn.close()


def bulk_both_ways(size: int) -> dict:
    """Send ``size`` bytes each way at once over one connection through the
    impaired link; the bytes counted and digests read by each side, both
    stacks' stats, the sockets left after TIME_WAIT and the elapsed seconds."""
    link = LinkPair()
    a = Stack(FaultInjector(link.a, seed=1, **IMPAIR), f"{A4}/24", tcp=TCP)
    b = Stack(FaultInjector(link.b, seed=2, **IMPAIR), f"{B4}/24", tcp=TCP)
    result: dict = {}
    with a, b:
        srv = b.socket(AF_INET, SOCK_STREAM)
        srv.bind(("", 5001))
        srv.listen(1)
        srv.settimeout(30)

        def server():
            try:
                conn, _ = srv.accept()
                conn.settimeout(120)
                exchange(conn, 2, size, result, "server_got")
            except BaseException as exc:
                result["server_error"] = exc

        t = threading.Thread(target=server, daemon=True)
        t.start()
        t0 = time.perf_counter()
        c = a.socket(AF_INET, SOCK_STREAM)
        c.settimeout(120)
        c.connect((B4, 5001))
        exchange(c, 1, size, result, "client_got")
        t.join(600)
        result["seconds"] = time.perf_counter() - t0
        srv.close()
        # TIME_WAIT (0.2 s here) ends on the side that closed first; then every
        # socket's id, port and pcb are given back.
        deadline = time.monotonic() + 10
        while (a.sockets() or b.sockets()) and time.monotonic() < deadline:
            time.sleep(0.05)
        result["left"] = (a.sockets(), b.sockets())
        result["stats"] = tuple(dict(s.stats(), **s.interface.stats()) for s in (a, b))
    return result


def tcp_counters(stats: dict) -> dict:
    return {k: v for k, v in stats.items() if k.startswith(("tcp.", "fault_")) and v}


def test_100_mb_each_way_is_byte_exact_through_10_percent_loss_and_closes_cleanly():
    r = bulk_both_ways(SIZE)
    assert not [k for k in r if k.endswith("_error")], (r, [tcp_counters(s) for s in r["stats"]])
    assert r["server_got"] == (SIZE, stream_digest(1, SIZE))
    assert r["client_got"] == (SIZE, stream_digest(2, SIZE))
    assert r["left"] == ([], [])
    sa, sb = r["stats"]
    for s in (sa, sb):
        # The impairment was real and both sides recovered from it ...
        assert s["fault_lost"] > SIZE // 1448 // 20
        assert s["fault_corrupted"] > 0 and s["fault_duplicated"] > 0 and s["fault_reordered"] > 0
        assert s["demux.l4_bad_checksum"] > 0   # corrupted segments were caught, not delivered
        assert s["tcp.retransmits"] > 0 and s["tcp.fast_retransmits"] > 0
        # ... and the connection ended by FINs, not a reset: each reader saw EOF (a
        # reset would have raised), no side aborted, timed out or reset it.  (A
        # duplicate of the last ACK may still reach a side whose socket is gone and
        # be answered from no socket, tcp.rst_no_socket, by then harmless.)
        for failure in ("tcp.rst_sent", "tcp.aborts", "tcp.close_unread_rst", "tcp.timeouts"):
            assert s.get(failure, 0) == 0, failure
