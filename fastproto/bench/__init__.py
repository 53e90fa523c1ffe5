"""Benchmark cases: each fastproto operation beside its baseline, measured in one run.

A :class:`Case` names an operation, the callable that does it once with
fastproto, the callable that does the same work with the baseline, and how much
work one call is (bytes, items, frames).  The same cases feed both
``fastproto bench`` (a printed table) and ``benchmarks/`` (pytest-benchmark), so
the figures in the docs and the ones pytest-benchmark stores come from one
definition.

Groups live in submodules named in :data:`GROUPS`; each exposes ``cases()``.
"""
from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

#: group name -> modules (under fastproto.bench) whose ``cases()`` make it up
GROUPS: dict[str, list[str]] = {
    "core": ["checksum", "pcq", "pcbtable", "parse", "frames", "sockbuf"],
    "stack": ["stack"],
    "tcp": ["tcp"],
    "tap": ["tap"],
    "livelock": ["livelock"],
}


@dataclass
class Case:
    """One operation measured against its baseline.

    ``work`` is the amount of work one call of either callable does, in
    ``unit`` (e.g. bytes for a checksum, items for a queue); rates are
    ``work / seconds per call``.  ``goal_rate`` is the absolute rate the
    operation must reach (in ``scale`` units, e.g. GB/s) and ``goal_ratio`` the
    least fastproto/baseline ratio; either may be None.
    """

    group: str
    name: str
    fastproto: Callable[[], object]
    work: float
    unit: str = "B"
    baseline: Optional[Callable[[], object]] = None
    baseline_name: str = ""
    goal_rate: Optional[float] = None
    goal_ratio: Optional[float] = None
    #: the most the figure may be (in ``scale`` units), for a figure where
    #: less is better (e.g. bytes per connection)
    goal_max: Optional[float] = None
    #: ratio the baseline must stay *above* (e.g. 0.8x deque): goal is rate >= ratio * baseline
    scale: float = 1e9
    scale_name: str = "GB/s"
    #: calls whose own duration is long enough to time one at a time
    single_shot: bool = False
    #: the callables time themselves: each call returns the seconds one unit
    #: of ``work`` took by its own measure (e.g. a median round trip); the
    #: best of a few calls is taken
    self_timed: bool = False
    #: how many self-timed calls the best is taken of (0: SELF_TIMED_REPEATS)
    repeats: int = 0
    note: str = ""


@dataclass
class Result:
    case: Case
    rate: float
    baseline_rate: Optional[float]
    extra: dict = field(default_factory=dict)

    @property
    def ratio(self) -> Optional[float]:
        if not self.baseline_rate:
            return None
        return self.rate / self.baseline_rate

    @property
    def passed(self) -> Optional[bool]:
        ok = True
        if self.case.goal_rate is not None:
            ok &= self.rate / self.case.scale >= self.case.goal_rate
        if self.case.goal_max is not None:
            ok &= self.rate / self.case.scale <= self.case.goal_max
        if self.case.goal_ratio is not None:
            if self.ratio is None:
                return None
            ok &= self.ratio >= self.case.goal_ratio
        if self.case.goal_rate is None and self.case.goal_ratio is None \
                and self.case.goal_max is None:
            return None
        return ok

    def goal_text(self) -> str:
        parts = []
        if self.case.goal_rate is not None:
            parts.append(f">= {self.case.goal_rate:g} {self.case.scale_name}")
        if self.case.goal_max is not None:
            parts.append(f"<= {self.case.goal_max:g} {self.case.scale_name}")
        if self.case.goal_ratio is not None:
            parts.append(f">= {self.case.goal_ratio:g}x")
        return ", ".join(parts)


def seconds_per_call(fn: Callable[[], object], min_time: float = 0.2, repeats: int = 15,
                     single_shot: bool = False) -> float:
    """Best-of-``repeats`` seconds per call of ``fn``.

    The loop count is calibrated so that one repeat lasts about
    ``min_time / repeats`` seconds; the best repeat is taken because on a
    shared machine noise only ever adds time.
    """
    fn()  # warm caches and lazy initialisation
    if single_shot:
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        return best
    target = max(min_time / repeats, 1e-3)
    loops = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(loops):
            fn()
        dt = time.perf_counter() - t0
        if dt >= target / 4 or loops >= 1 << 30:
            break
        loops *= 4
    loops = max(1, int(loops * target / max(dt, 1e-9)))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(loops):
            fn()
        best = min(best, (time.perf_counter() - t0) / loops)
    return best


def load_cases(group: str) -> Iterator[Case]:
    """The cases of ``group`` (built lazily: some set up large tables)."""
    for mod in GROUPS[group]:
        module = importlib.import_module(f"fastproto.bench.{mod}")
        yield from module.cases()


#: calls of a self-timed case (after one warm-up call); the best is taken
SELF_TIMED_REPEATS = 3


def _seconds(case: Case, fn: Callable[[], object], min_time: float) -> float:
    """Seconds per call of ``fn`` (per unit of work for a self-timed case)."""
    if case.self_timed:
        fn()
        return min(float(fn()) for _ in range(case.repeats or SELF_TIMED_REPEATS))  # type: ignore[arg-type]
    return seconds_per_call(fn, min_time, single_shot=case.single_shot)


def run_case(case: Case, min_time: float = 0.2) -> Result:
    rate = case.work / _seconds(case, case.fastproto, min_time)
    base = None
    if case.baseline is not None:
        base = case.work / _seconds(case, case.baseline, min_time)
    return Result(case, rate, base)


def format_rate(rate: Optional[float], case: Case) -> str:
    if rate is None:
        return "-"
    v = rate / case.scale
    return f"{v:,.3g} {case.scale_name}" if v < 100 else f"{v:,.0f} {case.scale_name}"


def format_table(results: list[Result]) -> str:
    """A plain-text table: operation, fastproto, baseline, ratio, goal, verdict."""
    rows = [("operation", "fastproto", "baseline", "ratio", "goal", "")]
    for r in results:
        base = format_rate(r.baseline_rate, r.case)
        if r.case.baseline_name and r.baseline_rate is not None:
            base = f"{base} ({r.case.baseline_name})"
        elif r.case.baseline_name:
            base = f"- ({r.case.baseline_name})"
        ratio = "-" if r.ratio is None else f"{r.ratio:,.2f}x"
        verdict = {True: "ok", False: "MISS", None: ""}[r.passed]
        rows.append((r.case.name, format_rate(r.rate, r.case), base, ratio, r.goal_text(), verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = []
    for i, row in enumerate(rows):
        out.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)
