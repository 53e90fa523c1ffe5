"""``fastproto demo``: the proposal's receive path at work, in process.

Part 1, the core: a thousand UDP sockets are bound in a pcbtable, each with
its receive PCQ.  Batches of frames (mostly datagrams for those sockets, plus
what a real wire also carries: datagrams for closed ports, ARP, pings,
corrupted and truncated frames) go through the compiled demux without the
GIL.  The receivers then take their packets off their PCQs, one ``get_many``
per socket per batch.  The demo prints where every frame went, ``netstat -s``
style.

Part 2, two stacks: for each dispatch model, two stacks on the two ends of an
in-process wire (``LinkPair``) echo datagrams; the demo prints, per model,
what arrived, where drops happened, thread wake-ups and context switches per
datagram.
"""
from __future__ import annotations

import argparse
import contextlib
import threading
import time
from typing import Any, Iterator

import numpy as np

from fastproto import BufferPool, Demux, PCBTable, PCQ
from fastproto.wire import ARP_REQUEST, ETH_P_ARP, ETH_P_IP, arp, ethernet, icmp_echo, ipv4, udp

LOCAL, PEER = "198.18.0.2", "198.18.0.1"
LOCAL_MAC, PEER_MAC = "02:00:5e:12:00:02", "02:00:5e:12:00:01"
BASE_PORT = 10000


def _traffic(rng: np.random.Generator, sockets: int, count: int) -> tuple[list[bytes], list[str]]:
    """``count`` frames and what each is; mostly datagrams for open ports."""
    frames, kinds = [], []
    for i in range(count):
        r = rng.random()
        if r < 0.90:
            port, kind = BASE_PORT + int(rng.integers(sockets)), "udp"
        elif r < 0.93:
            port, kind = BASE_PORT + sockets + int(rng.integers(1000)), "udp-closed"
        elif r < 0.95:
            frames.append(ethernet("ff:ff:ff:ff:ff:ff", PEER_MAC, ETH_P_ARP,
                                   arp(ARP_REQUEST, PEER_MAC, PEER, bytes(6), LOCAL)))
            kinds.append("arp")
            continue
        elif r < 0.97:
            frames.append(ethernet(LOCAL_MAC, PEER_MAC, ETH_P_IP,
                                   ipv4(PEER, LOCAL, 1, icmp_echo(7, i, b"ping"))))
            kinds.append("icmp-echo")
            continue
        elif r < 0.985:
            port, kind = BASE_PORT, "corrupt"
        else:
            port, kind = BASE_PORT, "truncated"
        payload = bytes(rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8))
        frame = ethernet(LOCAL_MAC, PEER_MAC, ETH_P_IP,
                         ipv4(PEER, LOCAL, 17, udp(PEER, LOCAL, 40000 + i % 20000, port, payload)))
        if kind == "corrupt":
            frame = frame[:24] + bytes([frame[24] ^ 0x5A]) + frame[25:]  # IP header checksum
        elif kind == "truncated":
            frame = frame[:30]
        frames.append(frame)
        kinds.append(kind)
    return frames, kinds


def run(args: argparse.Namespace) -> int:
    status = run_core(args)
    print()
    status = status or run_stacks(args.echoes)
    print()
    return status or run_tcp(4_000_000)


def run_tcp(size: int) -> int:
    """Send ``size`` bytes over TCP between two stacks on a LinkPair with 2% loss
    and some reordering each way; check them by hash."""
    import hashlib
    import os
    import threading

    from fastproto.phy.fault_injector import FaultInjector
    from fastproto.phy.link import LinkPair
    from fastproto.socket import AF_INET, SHUT_WR
    from fastproto.stack import Stack
    from fastproto.tcp_socket import SOCK_STREAM

    print(f"TCP: {size / 1e6:.0f} MB from one stack to the other over a LinkPair losing 2% "
          "of frames and reordering 2%, each way:\n")
    link = LinkPair()
    tcp = {"rto_min": 0.05, "time_wait": 0.5}
    data = os.urandom(size)
    digest: dict[str, bytes] = {}
    with Stack(FaultInjector(link.a, seed=1, loss=0.02, reorder=0.02), "198.18.0.1/24", tcp=tcp) as a, \
            Stack(FaultInjector(link.b, seed=2, loss=0.02, reorder=0.02), "198.18.0.2/24",
                  tcp=tcp) as b:
        server = b.socket(AF_INET, SOCK_STREAM)
        server.bind(("", 5001))
        server.listen(1)
        server.settimeout(10.0)

        def sink() -> None:
            conn, _ = server.accept()
            conn.settimeout(30.0)
            h = hashlib.sha256()
            while chunk := conn.recv(1 << 16):
                h.update(chunk)
            digest["received"] = h.digest()
            conn.close()

        t = threading.Thread(target=sink)
        t.start()
        client = a.socket(AF_INET, SOCK_STREAM)
        client.settimeout(30.0)
        t0 = time.perf_counter()
        client.connect(("198.18.0.2", 5001))
        client.sendall(data)
        client.shutdown(SHUT_WR)  # our FIN after the data
        client.recv(1)          # the peer's FIN: it read everything
        elapsed = time.perf_counter() - t0
        client.close()
        t.join(30)
        sa = a.stats()
    ok = digest.get("received") == hashlib.sha256(data).digest()
    print(f"    {'byte-exact' if ok else 'CORRUPTED'}: {size * 8 / elapsed / 1e6:,.0f} Mbit/s, "
          f"{sa.get('tcp.out_segments', 0):,} segments sent, "
          f"{sa.get('tcp.retransmitted_segments', 0):,} of them again "
          f"({sa.get('tcp.fast_retransmits', 0)} fast retransmits, "
          f"{sa.get('tcp.retransmits', 0)} retransmission timeouts)")
    return 0 if ok else 1


@contextlib.contextmanager
def stack_pair(model: str, server_timeout: float = 0.2) -> Iterator[tuple[Any, Any, Any, Any]]:
    """Two stacks (198.18.0.1 and .2) on a LinkPair under dispatch ``model``,
    with a server socket on 198.18.0.2:7 and a client socket connected to it:
    yields (stack a, stack b, client, server); both stacks stop on exit."""
    from fastproto.phy.link import LinkPair
    from fastproto.stack import Stack

    link = LinkPair()
    with Stack(link.a, "198.18.0.1/24", dispatch=model) as a, \
            Stack(link.b, "198.18.0.2/24", dispatch=model) as b:
        server = b.socket()
        server.bind(("198.18.0.2", 7))
        server.settimeout(server_timeout)
        client = a.socket()
        client.settimeout(2.0)
        client.connect(("198.18.0.2", 7))
        yield a, b, client, server


@contextlib.contextmanager
def echoing(server: Any) -> Iterator[None]:
    """A thread echoing every datagram ``server`` receives, until exit.
    ``server`` needs a timeout, so the thread sees the stop in time."""
    stop = threading.Event()

    def echo() -> None:
        while not stop.is_set():
            try:
                data, peer = server.recvfrom(2048)
            except (TimeoutError, BlockingIOError):
                continue
            server.sendto(data, peer)

    echoer = threading.Thread(target=echo, name="echo")
    echoer.start()
    try:
        yield
    finally:
        stop.set()
        echoer.join()


def run_stacks(count: int) -> int:
    """Echo ``count`` datagrams between two stacks under each dispatch model."""
    from fastproto.dispatch import MODELS

    print(f"two stacks on a LinkPair, {count:,} datagrams echoed under each dispatch model:\n")
    print(f"    {'model':<8} {'echoed':>7} {'echoes/s':>9} {'drops (where)':<28} "
          f"{'wake-ups/dgram':>14} {'ctx switches/dgram':>19}")
    failed = False
    for model in MODELS:
        with stack_pair(model) as (a, b, client, server):
            client.send(b"warm-up: resolve ARP")
            server.recvfrom(2048)
            before_a, before_b = a.stats(), b.stats()
            echoed = 0
            t0 = time.perf_counter()
            with echoing(server):
                # Windows of 32 datagrams in flight: enough to batch, few
                # enough that no queue on the way overflows.
                for start in range(0, count, 32):
                    window = min(32, count - start)
                    for i in range(window):
                        client.send(b"%08d" % (start + i))
                    for _ in range(window):
                        try:
                            client.recv(2048)
                            echoed += 1
                        except TimeoutError:
                            break
                elapsed = time.perf_counter() - t0
            after_a, after_b = a.stats(), b.stats()

        def delta(key: str) -> int:
            return (after_a.get(key, 0) - before_a.get(key, 0)) + (after_b.get(key, 0) - before_b.get(key, 0))

        drops = {k.split(".", 1)[1]: delta(k) for k in after_a if k.startswith("drop.") and delta(k)}
        wakeups = sum(delta(k) for k in after_a if k.startswith("wakeup."))
        switches = delta("rusage.nvcsw") + delta("rusage.nivcsw")
        # Both stacks live in this one process, so its context switches count both ends.
        where = ", ".join(f"{n} {k}" for k, n in drops.items()) or "none"
        print(f"    {model:<8} {echoed:>7,} {echoed / elapsed:>9,.0f} {where:<28} "
              f"{wakeups / max(echoed, 1):>14.2f} {switches / max(echoed, 1):>19.2f}")
        failed |= echoed == 0
    return 1 if failed else 0


def run_core(args: argparse.Namespace) -> int:
    sockets, total, batch = args.sockets, args.frames, 256
    rng = np.random.default_rng(2024)
    print(f"fastproto demo: {total:,} frames through the receive path to {sockets:,} UDP sockets\n")

    pool = BufferPool(4 * batch + 1024)
    table = PCBTable()
    demux = Demux(pool, table, max_sockets=sockets, capacity=batch)
    pcqs = []
    for sock in range(sockets):
        q = PCQ(64)
        demux.attach(sock, q)
        table.insert(17, LOCAL, BASE_PORT + sock, None, 0, sock)
        pcqs.append(q)

    # One set of distinct frames, replayed: building frames in Python is not what is measured.
    frames, kinds = _traffic(rng, sockets, 4096)
    received = np.zeros(sockets, dtype=np.int64)
    wakeups = handed_back = 0
    core_time = 0.0
    t_start = time.perf_counter()
    done = 0
    while done < total:
        n = min(batch, total - done)
        b = pool.batch_from_frames([frames[(done + i) % len(frames)] for i in range(n)])
        t0 = time.perf_counter()
        delivered, woken, other, unmatched = demux.input(b.handles, b.lengths)
        core_time += time.perf_counter() - t0
        # What is not on a PCQ and was not dropped comes back to us: ARP and
        # pings for their handlers, closed ports for an ICMP unreachable.
        back = np.concatenate([other, unmatched])
        handed_back += len(back)
        if len(back):
            pool.free_many(b.handles[back])
        # Each woken receiver takes its packets: one call per socket, not per packet.
        wakeups += len(woken)
        for sock in woken.tolist():
            got = pcqs[sock].get_many(64)
            received[sock] += len(got)
            pool.free_many(got)
        done += n
    elapsed = time.perf_counter() - t_start

    counts = demux.counters()
    print("where the frames went (netstat -s style):")
    for name, value in counts.items():
        if value:
            print(f"    {value:>10,}  {name.replace('_', ' ')}")
    print()
    delivered_total = counts["delivered"]
    print(f"    {delivered_total:,} datagrams queued on {int((received > 0).sum()):,} sockets' PCQs, "
          f"{wakeups:,} receiver wake-ups ({delivered_total / max(wakeups, 1):.2f} packets per wake-up)")
    print(f"    {handed_back:,} frames handed back for ARP / ICMP / closed-port answers")
    print(f"    core demux: {total / core_time / 1e6:.2f} M frames/s without the GIL "
          f"(whole loop with Python receivers: {total / elapsed / 1e6:.2f} M frames/s)")
    if sum(counts.values()) != total or int(received.sum()) != delivered_total:
        print("error: some frames are not accounted for")
        return 1
    return 0
