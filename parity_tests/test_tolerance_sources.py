"""The tolerance policy where elements share their errors (tolerance.py: Shared errors): a
tensor of 400 elements whose errors come from 4 rounding draws, one per group of 100 (as a
softmax row's dot product feeds every dq and dk of that row). Judged by the error statistics,
clean runs fail at random; with `sources` named and an a-priori bound given, the bound decides:
every clean run passes and an error past the bound still fails."""
from __future__ import annotations

import numpy as np
import pytest

from pyllmc.reference.tolerance import EPS32, STAT_MIN_ELEMENTS, compare

GROUPS, PER, RUNS = 4, 100, 300
U = EPS32 / 2


#: the relative size of a shared error: one rounding of a quantity this many times larger than
#: the element, carried into it by cancellation (P (dP - dot) with P near 1)
AMP = 1000.0


def run(seed: int, bias: float = 0.0):
    """(c, r32, r64, bound): both fp32 sides off the fp64 values by one relative draw in
    [-AMP U, AMP U] per group; the C side also off by `bias` relative in every element."""
    rng = np.random.default_rng(seed)
    r64 = rng.standard_normal(GROUPS * PER) + 2.0
    g32 = np.repeat(rng.uniform(-AMP * U, AMP * U, GROUPS), PER)
    gc = np.repeat(rng.uniform(-AMP * U, AMP * U, GROUPS), PER)
    r32 = (r64 * (1 + g32)).astype(np.float32)
    c = (r64 * (1 + gc + bias)).astype(np.float32)
    bound = 2 * AMP * U * np.abs(r64)  # the draw, and the rounding to float32, well inside
    return c, r32, r64, bound


def test_shared_errors_are_too_few_for_statistics_and_the_bound_decides():
    stats = [compare("t", c, r32, r64) for c, r32, r64, _ in map(run, range(RUNS))]
    named = [compare("t", c, r32, r64, sources=GROUPS, bound=bd) for c, r32, r64, bd in map(run, range(RUNS))]
    false_alarms = sum(not r["passed"] for r in stats)
    assert false_alarms > 0.01 * RUNS, false_alarms  # 9 of 300 (3%)
    assert all(r["passed"] and r["method"] == "fp64-bound" and r["sources"] == GROUPS for r in named), \
        [r["tol_ratio"] for r in named if not r["passed"]][:5]


def test_an_error_past_the_bound_still_fails():
    rows = [compare("t", c, r32, r64, sources=GROUPS, bound=bd)
            for c, r32, r64, bd in (run(s, bias=4 * AMP * U) for s in range(50))]
    assert not any(r["passed"] for r in rows)
    assert all(r["failed_measures"] == ["bound"] for r in rows)


def test_enough_sources_leave_the_statistics_to_decide():
    c, r32, r64, bd = run(0)
    row = compare("t", c, r32, r64, sources=STAT_MIN_ELEMENTS, bound=bd)
    assert row["method"] in ("fp64-attributed", "failed") and "rmse_32_vs_64" in row


@pytest.mark.parametrize("kw, msg", [
    ({"sources": 4}, "needs a bound"),
    ({"sources": 0, "bound": 1.0}, "between 1 and"),
    ({"sources": 401, "bound": 1.0}, "between 1 and"),
])
def test_bad_sources_are_refused(kw, msg):
    c, r32, r64, _ = run(0)
    with pytest.raises(ValueError, match=msg):
        compare("t", c, r32, r64, **kw)
