"""Summaries of repeated timings and power-law fits for the scaling curves."""

from __future__ import annotations

import math
import statistics
from typing import Any, Dict, List, Optional, Sequence

PHASES = ("forward", "backward", "update")


def summarize(steps: List[Dict[str, float]]) -> Dict[str, Any]:
    """min and median (ms) of the whole step and of each phase over the timed repeats.

    The whole step's min is the fastest step, not the sum of per-phase minima."""
    if not steps:
        raise ValueError("no timed steps")
    totals = [1e3 * sum(s.values()) for s in steps]
    phases = {}
    for p in steps[0]:
        v = [1e3 * s[p] for s in steps]
        phases[p] = {"ms_min": min(v), "ms_median": statistics.median(v)}
    return {
        "ms_min": min(totals),
        "ms_median": statistics.median(totals),
        "ms_all": totals,
        "phases": phases,
        "repeats": len(totals),
    }


def fit_power(xs: Sequence[float], ys: Sequence[float]) -> Optional[Dict[str, float]]:
    """Least-squares fit of log y = log a + k log x: the exponent k, the prefactor a and R^2."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y > 0]
    if len(pts) < 2:
        return None
    n = len(pts)
    mx = sum(p[0] for p in pts) / n
    my = sum(p[1] for p in pts) / n
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    if sxx == 0:
        return None
    sxy = sum((p[0] - mx) * (p[1] - my) for p in pts)
    k = sxy / sxx
    b = my - k * mx
    ss_tot = sum((p[1] - my) ** 2 for p in pts)
    ss_res = sum((p[1] - (b + k * p[0])) ** 2 for p in pts)
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    return {"exponent": k, "prefactor": math.exp(b), "r2": r2}


def fit_linear_quadratic(xs: Sequence[float], ys: Sequence[float]) -> Optional[Dict[str, float]]:
    """Fit y = a x + b x^2 with a, b >= 0 (least squares on the two-column design, clamped):
    for step time against T, b x^2 is the part that grows quadratically (attention) and
    `quadratic_share_at_max` says how much of the largest point it explains."""
    pts = [(float(x), float(y)) for x, y in zip(xs, ys)]
    if len(pts) < 2:
        return None
    # normal equations for [x, x^2]
    s11 = sum(x * x for x, _ in pts)
    s12 = sum(x**3 for x, _ in pts)
    s22 = sum(x**4 for x, _ in pts)
    t1 = sum(x * y for x, y in pts)
    t2 = sum(x * x * y for x, y in pts)
    det = s11 * s22 - s12 * s12
    if det <= 0:
        return None
    a = (t1 * s22 - t2 * s12) / det
    b = (s11 * t2 - s12 * t1) / det
    if a < 0:  # refit the pure quadratic
        a, b = 0.0, t2 / s22
    if b < 0:  # refit the pure linear
        a, b = t1 / s11, 0.0
    xmax = max(x for x, _ in pts)
    fit_max = a * xmax + b * xmax * xmax
    return {"linear": a, "quadratic": b, "quadratic_share_at_max": (b * xmax * xmax / fit_max) if fit_max > 0 else 0.0}
