"""Every operation of ``fastproto bench``, beside its baseline, under pytest-benchmark.

Run with ``python -m pytest benchmarks/ --benchmark-only``; ``-k core`` or
``-k stack`` picks a group.
"""
import pytest

from fastproto.bench import GROUPS, load_cases

CASES = [case for group in GROUPS for case in load_cases(group)]


def _sides():
    for case in CASES:
        yield pytest.param(case, "fastproto", id=f"{case.group}: {case.name}[fastproto]")
        if case.baseline is not None:
            yield pytest.param(case, "baseline", id=f"{case.group}: {case.name}[{case.baseline_name}]")


@pytest.mark.parametrize("case,side", list(_sides()))
def test_operation(benchmark, case, side):
    fn = case.fastproto if side == "fastproto" else case.baseline
    benchmark.group = case.name
    benchmark.extra_info["work"] = case.work
    benchmark.extra_info["unit"] = case.unit
    if case.self_timed:
        # The callable measures itself: its answer, not its duration, is the figure.
        seconds = benchmark.pedantic(fn, rounds=3, iterations=1, warmup_rounds=1)
        benchmark.extra_info["rate"] = case.work / seconds
        return
    if case.single_shot:
        benchmark.pedantic(fn, rounds=5, iterations=1, warmup_rounds=1)
    else:
        benchmark(fn)
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["rate"] = case.work / benchmark.stats.stats.min
