"""TAP offloads: bulk TCP between Linux and the stack over a TAP device, and
the core's cutting of a received super-frame into segments.

Each call starts a child Python in a fresh network namespace (``unshare -n``;
needs root and ``/dev/net/tun``), makes TAP device ``fp0`` with Linux at
198.18.0.1/24 and a :class:`fastproto.stack.Stack` at 198.18.0.2 (RFC 2544
benchmarking space, no route elsewhere), moves ``BULK_BYTES`` over one TCP
connection in one direction and reports the seconds from connect to the
receiver's end of stream.  The namespace goes away with the child.  The
fastproto side runs with ``offload=True`` (virtio_net_hdr, checksum and TSO
offloads), the baseline with ``offload=False``; both are self-timed: a call
returns seconds per bit, the best of a few calls is taken.

Where namespaces cannot be made (no root, no ``unshare``, no
``/dev/net/tun``) the cases say so in their names and report nothing
measured (an infinite time per bit).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
from typing import List

import numpy as np

from fastproto.bench import Case

#: bytes moved per call, each direction
BULK_BYTES = 50_000_000
#: the child's time limit, seconds
CHILD_TIMEOUT = 120.0
_REPORT = "TAP-BENCH "
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_CHILD = textwrap.dedent("""
    import json, socket, subprocess, sys, threading, time
    from fastproto.phy.tap import TapInterface
    from fastproto.stack import Stack
    from fastproto.tcp_socket import SOCK_STREAM

    KERNEL, STACK = "198.18.0.1", "198.18.0.2"
    offload, direction, size = sys.argv[1] == "1", sys.argv[2], int(sys.argv[3])

    def sh(*argv):
        subprocess.run(argv, check=True, capture_output=True)

    def drain(conn):
        n = 0
        while chunk := conn.recv(1 << 18):
            n += len(chunk)
        return n

    block = bytes(1 << 18)
    res = {}
    with TapInterface("fp0", offload=offload) as tap:
        tap.up()
        with open("/proc/sys/net/ipv6/conf/fp0/disable_ipv6", "w") as f:
            f.write("1")
        sh("ip", "addr", "add", KERNEL + "/24", "dev", "fp0")
        sh("ip", "link", "set", "fp0", "up")
        with Stack(tap, STACK + "/24", mac=bytes.fromhex("020000000002")) as stack:
            def serve(listener):
                conn, _ = listener.accept()
                conn.settimeout(30)
                res["n"] = drain(conn)
                res["t1"] = time.perf_counter()
                conn.close()

            if direction == "linux_to_fastproto":
                listener = stack.socket(socket.AF_INET, SOCK_STREAM)
                listener.bind(("", 5001))
                listener.listen(1)
                listener.settimeout(30)
                t = threading.Thread(target=serve, args=(listener,))
                t.start()
                t0 = time.perf_counter()
                c = socket.create_connection((STACK, 5001), timeout=30)
            else:
                listener = socket.socket()
                listener.bind((KERNEL, 5002))
                listener.listen(1)
                t = threading.Thread(target=serve, args=(listener,))
                t.start()
                c = stack.socket(socket.AF_INET, SOCK_STREAM)
                c.settimeout(30)
                t0 = time.perf_counter()
                c.connect((KERNEL, 5002))
            for _ in range(size // len(block)):
                c.sendall(block)
            c.shutdown(socket.SHUT_WR)
            t.join(60)
            c.close()
            res["seconds"] = res.get("t1", time.perf_counter()) - t0
            res["stats"] = tap.stats()
    print("TAP-BENCH " + json.dumps(res), flush=True)
""")


def netns_available() -> bool:
    """True if this process may create network namespaces and TAP devices."""
    return (shutil.which("unshare") is not None and shutil.which("ip") is not None
            and os.path.exists("/dev/net/tun") and os.geteuid() == 0)


def transfer(offload: bool, direction: str, size: int = BULK_BYTES) -> dict:
    """Run one bulk transfer in a fresh namespace: {"n": bytes received, "seconds", "stats"}.

    ``direction`` is "linux_to_fastproto" or "fastproto_to_linux".  Raises
    RuntimeError if the child fails or runs over CHILD_TIMEOUT seconds.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [_ROOT, env.get("PYTHONPATH", "")] if p)
    argv = ["unshare", "-n", "--", sys.executable, "-c", _CHILD, "1" if offload else "0",
            direction, str(size)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env=env)
    try:
        out, err = proc.communicate(timeout=CHILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        out, err = "", f"ran over {CHILD_TIMEOUT} s"
    finally:
        # the child's own children (ip) share its process group
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()
    lines = [ln for ln in out.splitlines() if ln.startswith(_REPORT)]
    if proc.returncode != 0 or len(lines) != 1:
        raise RuntimeError(f"TAP bulk transfer failed (exit {proc.returncode}): {err[-2000:]}")
    return dict(json.loads(lines[0][len(_REPORT):]))


def _seconds_per_bit(offload: bool, direction: str):
    def run() -> float:
        r = transfer(offload, direction)
        # only what arrived counts: a short transfer cannot look fast
        return float(r["seconds"]) / max(8 * int(r.get("n") or 0), 1)
    return run


def _not_measured() -> float:
    return float("inf")


#: the super-frame of the segmentation case: Linux's largest (64 KiB IP datagram), MSS 1448
SUPER_PAYLOAD = 65536 - 20 - 32 - 4
SUPER_MSS = 1448


def _super_frame() -> tuple[bytes, int]:
    """A virtio_net_hdr + IPv4/TCP super-frame as Linux hands it over; and its header length."""
    tcp = struct.pack("!HHIIBBHHH", 40000, 5001, 1, 1, 8 << 4, 0x18, 501, 0, 0)
    tcp += bytes([1, 1, 8, 10]) + bytes(8)                       # NOP NOP timestamps
    payload = bytes(range(256)) * (SUPER_PAYLOAD // 256) + bytes(SUPER_PAYLOAD % 256)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(payload), 7, 0x4000, 64, 6, 0,
                     bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2]))
    eth = bytes.fromhex("020000000002" "020000000001" "0800")
    hlen = len(eth) + len(ip) + len(tcp)
    vnet = struct.pack("<BBHHHH", 1, 1, hlen, SUPER_MSS, len(eth) + len(ip), 16)
    return vnet + eth + ip + tcp + payload, hlen


def _segment_core(check: bool = False):
    from fastproto._core.buffers import BufferPool
    from fastproto._core.tap import VnetReceiver

    packet, _ = _super_frame()
    pool = BufferPool(64, 2048)
    rx = VnetReceiver()
    handles = np.zeros(64, np.uint64)
    lengths = np.zeros(64, np.uint32)

    def run() -> list:
        n = rx.input(pool, packet, handles, lengths)
        out = [bytes(pool.data[handles[i], :lengths[i]]) for i in range(n)] if check else []
        pool.free_many(handles[:n])
        return out
    return run


def _segment_python():
    """The same segments cut in Python: header fields with struct, checksums by the core."""
    from fastproto._core.checksum import internet_checksum, pseudo_header_sum

    packet, hlen = _super_frame()
    frame = packet[10:]
    l3, l4 = 14, 34
    src, dst = frame[l3 + 12:l3 + 16], frame[l3 + 16:l3 + 20]
    seq0 = struct.unpack_from("!I", frame, l4 + 4)[0]
    ip_id = struct.unpack_from("!H", frame, l3 + 4)[0]

    def run() -> list:
        out = []
        for i, off in enumerate(range(hlen, len(frame), SUPER_MSS)):
            piece = frame[off:off + SUPER_MSS]
            seg = bytearray(frame[:hlen]) + piece
            struct.pack_into("!HH", seg, l3 + 2, len(seg) - l3, (ip_id + i) & 0xFFFF)
            struct.pack_into("!H", seg, l3 + 10, 0)
            struct.pack_into("!H", seg, l3 + 10, internet_checksum(seg[l3:l4]))
            struct.pack_into("!I", seg, l4 + 4, (seq0 + off - hlen) & 0xFFFFFFFF)
            if off + SUPER_MSS < len(frame):
                seg[l4 + 13] &= ~0x09                           # FIN, PSH: last segment only
            struct.pack_into("!H", seg, l4 + 16, 0)
            pseudo = pseudo_header_sum(src, dst, 6, len(seg) - l4)
            struct.pack_into("!H", seg, l4 + 16, internet_checksum(seg[l4:], pseudo))
            out.append(seg)
        return out
    return run


def cases() -> List[Case]:
    out = [Case(group="core", name="TAP receive: 64 KiB super-frame cut into 1448 B segments",
                fastproto=_segment_core(), baseline=_segment_python(),
                baseline_name="Python struct + core checksums", work=8 * SUPER_PAYLOAD,
                unit="bits", scale=1e9, scale_name="Gbit/s", goal_rate=5.0)]
    able = netns_available()
    mib = BULK_BYTES // 1_000_000
    for direction, label in (("linux_to_fastproto", "Linux -> fastproto"),
                             ("fastproto_to_linux", "fastproto -> Linux")):
        name = f"TAP TCP bulk {mib} MB {label}, offloads"
        if able:
            out.append(Case(group="core", name=name, fastproto=_seconds_per_bit(True, direction),
                            baseline=_seconds_per_bit(False, direction),
                            baseline_name="same, offload=False", work=1, unit="bits",
                            scale=1e9, scale_name="Gbit/s", goal_rate=5.0, self_timed=True,
                            note="one connection, fresh namespace per call, connect included"))
        else:
            out.append(Case(group="core", name=name + " (no network namespace: not measured)",
                            fastproto=_not_measured, baseline=_not_measured,
                            baseline_name="offload=False, not measured: needs root, unshare "
                                          "and /dev/net/tun",
                            work=1, unit="bits", scale=1e9, scale_name="Gbit/s", goal_rate=5.0,
                            self_timed=True))
    return out
