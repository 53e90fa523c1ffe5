"""checksum cases: the Internet checksum and checksum-while-copying beside their baselines.

Each callable is a ``functools.partial`` of the function under test, so a
call from Python is included in every figure and no lambda frame is.

Baselines:
  - 64 KiB: the same call with the portable C kernel forced (what a CPU
    without AVX2 runs), so the ratio is what the vector kernels add.
  - 1500 B: ``scapy.utils.checksum`` on the same bytes object.
  - copy: the two-pass way, a memoryview slice assignment (memcpy) and then
    ``internet_checksum`` over the destination.  The copies are timed at
    several offsets of the destination from the source modulo 4096, because
    glibc's memcpy here slows down about 10-30x when the destination sits
    1 to 15 bytes past the source modulo 4096 (its stores and the next loads
    alias in the low 12 address bits), while ``checksum_copy`` must not.
"""
from __future__ import annotations

import functools
import os

import numpy as np

from fastproto.bench import Case

KIB64 = 65536
PACKET = 1500
#: destination minus source, modulo 4096, of the copy cases
COPY_OFFSETS = (0, 1, 8, 15, 31, 64, 2048)


def _aligned(n: int, align: int = 4096) -> np.ndarray:
    raw = np.empty(n + align, np.uint8)
    start = (-raw.ctypes.data) % align
    return raw[start:start + n]


def _copy_case(offset: int) -> Case:
    from fastproto._core.checksum import checksum_copy, internet_checksum

    # source page-aligned, destination `offset` bytes past a page boundary
    dst_at = KIB64 + 4096 + offset
    buf = _aligned(dst_at + KIB64)
    buf[:KIB64] = np.frombuffer(os.urandom(KIB64), np.uint8)
    src = memoryview(buf[:KIB64])
    dst = memoryview(buf[dst_at:dst_at + KIB64])

    def two_pass():
        dst[:] = src
        return internet_checksum(dst)

    assert checksum_copy(dst, src) == two_pass()
    return Case(
        group="core",
        name=f"checksum_copy 64 KiB, dst-src = {offset} mod 4096",
        fastproto=functools.partial(checksum_copy, dst, src),
        baseline=two_pass,
        baseline_name="memcpy, then checksum",
        work=KIB64,
        goal_rate=15,
    )


def _eight_calls(fn, arg):
    """Eight calls of ``fn(arg)`` from Python per timed call: each call's own
    cost (argument passing, the result object) is measured, the timing loop's
    is spread thin."""
    def calls():
        fn(arg); fn(arg); fn(arg); fn(arg)  # noqa: E702
        fn(arg); fn(arg); fn(arg); fn(arg)  # noqa: E702
    return calls


def cases() -> list[Case]:
    from scapy.utils import checksum as scapy_checksum

    from fastproto._core.checksum import _internet_checksum_impl, internet_checksum

    big = os.urandom(KIB64)
    packet = os.urandom(PACKET)
    out = [
        Case(
            group="core",
            name="internet_checksum 64 KiB",
            fastproto=functools.partial(internet_checksum, big),
            baseline=functools.partial(_internet_checksum_impl, "generic", big),
            baseline_name="portable C kernel",
            work=KIB64,
            goal_rate=20,
        ),
        Case(
            group="core",
            name="internet_checksum 1500 B",
            fastproto=_eight_calls(internet_checksum, packet),
            baseline=_eight_calls(scapy_checksum, packet),
            baseline_name="scapy",
            work=8 * PACKET,
            goal_rate=5,
            goal_ratio=200,
        ),
    ]
    out.extend(_copy_case(off) for off in COPY_OFFSETS)
    return out
