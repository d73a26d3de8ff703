"""Hypothesis profiles for the property tests (test_kernels.py and others).

  ci        (the default) real randomness: a fresh random seed every run, 40 examples per
            test, no deadline; the run's seed is printed in the header and again after a
            failure (replay with pytest --hypothesis-seed=N), and the failing example's blob
            too (@reproduce_failure);
  thorough  the same with 300 examples per test (nox -s parity runs it);
  repro     derandomized (the same examples every run), for bisecting a failure.

Choose one with PYLLMC_HYPOTHESIS_PROFILE=NAME or pytest --hypothesis-profile=NAME.
"""
from __future__ import annotations

import os
import random

import pytest
from hypothesis import HealthCheck, Verbosity, core, settings

_COMMON = dict(deadline=None, print_blob=True, verbosity=Verbosity.normal,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", max_examples=40, derandomize=False, **_COMMON)
settings.register_profile("thorough", max_examples=300, derandomize=False, **_COMMON)
settings.register_profile("repro", max_examples=40, derandomize=True, **_COMMON)
settings.load_profile(os.environ.get("PYLLMC_HYPOTHESIS_PROFILE", "ci"))


@pytest.hookimpl(trylast=True)  # after hypothesis's own plugin has read its options
def pytest_configure(config):
    """One random seed for the whole run unless --hypothesis-seed gave one: every run draws
    new examples, and the seed that drew them is known (printed), so any failure replays."""
    if core.global_force_seed is None and not settings.default.derandomize:
        core.global_force_seed = random.SystemRandom().randrange(2**32)


def _seed_line() -> str:
    s = settings.default
    seed = core.global_force_seed
    return (f"hypothesis: profile {settings.get_current_profile_name()} (max_examples={s.max_examples}, "
            f"derandomize={s.derandomize}), seed {seed}" + (f": replay with --hypothesis-seed={seed}" if seed is not None else ""))


def pytest_report_header(config):
    return _seed_line()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if terminalreporter.stats.get("failed"):
        terminalreporter.write_line(_seed_line())
