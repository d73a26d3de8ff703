"""The policy before issue 12, kept only so the mutation report can show before/after on the
same runs. It passed a tensor when the direct fp32 test passed (RTOL = 16 x torch's rtol,
every element), and otherwise when the C core's RMS error against fp64 was within 10x the
largest RMS error of the fp32 runs (plus 2 ulp of the RMS): no worst-element or bulk test,
and the direct test alone could pass a tensor that had an fp64 twin. The current policy is
pyllmc.reference.tolerance.judge; nothing but the report uses this module."""
from __future__ import annotations

from typing import Any, Mapping

from ..reference.tolerance import EPS32, FLOOR_ULPS, TINY

BEFORE_ATTRIBUTION_FACTOR = 10.0


def passed_before(row: Mapping[str, Any]) -> bool:
    if row["direct_passed"]:
        return True
    if "runs_rmse_vs_64" not in row or row["nonfinite"]:
        return False
    limit = BEFORE_ATTRIBUTION_FACTOR * max(row["runs_rmse_vs_64"]) + FLOOR_ULPS * EPS32 * row["ref64_rms"] + TINY
    return bool(row["rmse_c_vs_64"] <= limit)
