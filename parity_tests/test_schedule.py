"""LR schedules: every schedule's values, warmup, the final fraction, validation."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyllmc.errors import InvalidArgumentError
from pyllmc.schedule import SCHEDULES, LRSchedule, lr_at


def test_warmup_is_linear_then_peak():
    s = LRSchedule(lr=1.0, steps=20, kind="cosine", warmup=4, final_frac=0.1)
    assert [s(i) for i in range(1, 5)] == [0.25, 0.5, 0.75, 1.0]
    assert s(5) == 1.0  # the first step after warmup uses the peak
    assert s(20) == pytest.approx(0.1, abs=1e-15)  # the last step uses lr * final_frac


def test_cosine_values():
    s = LRSchedule(lr=2.0, steps=11, kind="cosine", warmup=0, final_frac=0.25)
    final = 0.5
    for step in range(1, 12):
        p = (step - 1) / 10
        assert s(step) == pytest.approx(final + (2.0 - final) * 0.5 * (1 + math.cos(math.pi * p)), rel=1e-15)
    assert s(6) == pytest.approx((2.0 + 0.5) / 2)  # halfway


def test_linear_values():
    s = LRSchedule(lr=1.0, steps=12, kind="linear", warmup=2, final_frac=0.0)
    assert s(1) == 0.5 and s(2) == 1.0
    # 10 post-warmup steps: 1.0 -> 0.0 in 9 equal decrements
    for i, step in enumerate(range(3, 13)):
        assert s(step) == pytest.approx(1.0 - i / 9, abs=1e-15)


def test_constant_ignores_final_frac():
    s = LRSchedule(lr=3e-4, steps=50, kind="constant", warmup=5, final_frac=0.1)
    assert s(5) == pytest.approx(3e-4)
    assert all(s(i) == 3e-4 for i in range(6, 51))
    assert s.final_lr == 3e-4


def test_wsd_values():
    s = LRSchedule(lr=1.0, steps=101, kind="wsd", warmup=0, final_frac=0.1, decay_frac=0.2)
    # progress p = (step-1)/100: stable while p <= 0.8 (steps 1..81), then linear to 0.1
    assert all(s(i) == 1.0 for i in range(1, 82))
    assert s(91) == pytest.approx(1.0 + (0.1 - 1.0) * 0.5)
    assert s(101) == pytest.approx(0.1)
    vals = s.values()
    assert all(a >= b for a, b in zip(vals, vals[1:]))


@pytest.mark.parametrize("kind", SCHEDULES)
def test_every_schedule_ends_at_final_and_is_monotone_after_warmup(kind):
    s = LRSchedule(lr=6e-4, steps=40, kind=kind, warmup=8, final_frac=0.05)
    vals = s.values()
    assert len(vals) == 40
    assert vals[:8] == pytest.approx([6e-4 * i / 8 for i in range(1, 9)])
    assert max(vals) == pytest.approx(6e-4)
    after = vals[8:]
    assert all(a >= b - 1e-18 for a, b in zip(after, after[1:]))
    assert vals[-1] == pytest.approx(6e-4 if kind == "constant" else 6e-4 * 0.05)
    assert lr_at(17, lr=6e-4, steps=40, kind=kind, warmup=8, final_frac=0.05) == vals[16]


def test_single_step_and_all_warmup():
    assert LRSchedule(lr=1.0, steps=1, kind="cosine")(1) == 1.0
    s = LRSchedule(lr=1.0, steps=4, kind="linear", warmup=4, final_frac=0.0)
    assert s.values() == [0.25, 0.5, 0.75, 1.0]


@pytest.mark.parametrize("kw", [
    dict(kind="exp"), dict(steps=0), dict(warmup=-1), dict(warmup=11), dict(final_frac=1.5),
    dict(lr=float("nan")), dict(lr=-1.0), dict(decay_frac=0.0),
])
def test_bad_arguments(kw):
    base = dict(lr=1.0, steps=10)
    base.update(kw)
    with pytest.raises(InvalidArgumentError):
        LRSchedule(**base)
    with pytest.raises(InvalidArgumentError):
        LRSchedule(lr=1.0, steps=10)(0)


@settings(max_examples=200, deadline=None)
@given(kind=st.sampled_from(SCHEDULES), steps=st.integers(1, 500), data=st.data())
def test_bounds_property(kind, steps, data):
    warmup = data.draw(st.integers(0, steps))
    frac = data.draw(st.floats(0.0, 1.0))
    s = LRSchedule(lr=1.0, steps=steps, kind=kind, warmup=warmup, final_frac=frac)
    vals = s.values()
    lo = 0.0 if warmup else (1.0 if kind == "constant" else frac)
    assert all(min(lo, frac) - 1e-12 <= v <= 1.0 + 1e-12 for v in vals)
