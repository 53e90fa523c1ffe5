"""The benchmark harness: rates, ratios and goals of a case, self-timed cases
and upper-bound goals, and the one table they print in."""
from fastproto.bench import SELF_TIMED_REPEATS, Case, Result, format_table, run_case


def _case(**kw):
    base = dict(group="t", name="op", fastproto=lambda: None, work=100.0, unit="B", scale=1.0,
                scale_name="B/s")
    base.update(kw)
    return Case(**base)


def test_rate_goal_and_ratio_goal_both_must_hold():
    case = _case(goal_rate=50.0, goal_ratio=2.0, baseline=lambda: None)
    assert Result(case, 60.0, 20.0).passed is True
    assert Result(case, 60.0, 40.0).passed is False     # ratio 1.5
    assert Result(case, 40.0, 10.0).passed is False     # rate below 50


def test_goal_max_is_an_upper_bound():
    case = _case(goal_max=4.0, scale=1024, scale_name="KiB")
    assert Result(case, 2.5 * 1024, None).passed is True
    assert Result(case, 4.5 * 1024, None).passed is False
    assert Result(case, 4.0 * 1024, None).goal_text() == "<= 4 KiB"


def test_a_case_without_goals_has_no_verdict():
    assert Result(_case(), 1.0, None).passed is None


def test_self_timed_case_takes_the_best_of_its_own_figures():
    answers = iter([9.0, 0.5, 0.25, 0.4])   # warm-up, then the repeats
    calls = []

    def timed():
        calls.append(1)
        return next(answers)

    result = run_case(_case(fastproto=timed, work=1.0, self_timed=True))
    assert len(calls) == 1 + SELF_TIMED_REPEATS
    assert result.rate == 1.0 / 0.25


def test_table_has_one_row_per_result_and_the_verdicts():
    ok = Result(_case(name="fast", goal_rate=1.0), 2.0, None)
    miss = Result(_case(name="slow", goal_rate=1.0), 0.5, None)
    lines = format_table([ok, miss]).splitlines()
    assert lines[0].split()[:5] == ["operation", "fastproto", "baseline", "ratio", "goal"]
    assert lines[2].startswith("fast") and lines[2].endswith("ok")
    assert lines[3].startswith("slow") and lines[3].endswith("MISS")
