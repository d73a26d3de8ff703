"""The mutation report: results.json (everything) and report.md (the tables) in the output
directory (benchmarks/results/mutation/ for the committed campaign)."""
from __future__ import annotations

import json
import math
import os
import platform
from typing import Any, Dict, List

from .catalogue import ISSUE_MUTANTS


def _clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def summary(data: Dict[str, Any]) -> Dict[str, Any]:
    rows = [r for r in data["mutants"] if "build_failed" not in r]
    bugs = [r for r in rows if r["what"] != "equivalent"]
    eqs = [r for r in rows if r["what"] == "equivalent"]
    clean = data["clean"]
    pct = lambda a, b: round(100.0 * a / b, 1) if b else None  # noqa: E731
    caught = sum(r["caught"] for r in bugs)
    loc = sum(r["localised"] for r in bugs)
    fa = sum(r["false_alarm"] for r in eqs)
    clean_bad = sum(not r["passed"] for r in clean)
    return {
        "mutants": len(rows), "bugs": len(bugs), "equivalent": len(eqs),
        "build_failed": [r["id"] for r in data["mutants"] if "build_failed" in r],
        "caught": caught, "caught_pct": pct(caught, len(bugs)),
        "localised": loc, "localised_pct": pct(loc, len(bugs)),
        "false_alarms": fa, "false_alarm_pct": pct(fa, len(eqs)),
        "caught_before": sum(r["caught_before"] for r in bugs),
        "false_alarms_before": sum(r["false_alarm_before"] for r in eqs),
        "clean_runs": len(clean), "clean_failed": clean_bad, "clean_false_alarm_pct": pct(clean_bad, len(clean)),
        "missed": [r["id"] for r in bugs if not r["caught"]],
        "not_localised": [r["id"] for r in bugs if r["caught"] and not r["localised"]],
        "false_alarm_ids": [r["id"] for r in eqs if r["false_alarm"]],
    }


def _first(c: Dict[str, Any]) -> str:
    fd = c.get("first_divergence")
    if fd:
        return f"{fd['name']} (step {fd['step']}, {'/'.join(fd.get('failed_measures') or []) or '-'})"
    return c.get("error") or "-"


def markdown(data: Dict[str, Any], s: Dict[str, Any]) -> str:
    L: List[str] = []
    L.append("# Mutation testing of core_c")
    L.append("")
    L.append("Each mutant is one small edit of core_c/src (pyllmc/mutation/catalogue.py), built on its own and run "
             "through the lockstep parity harness (the engine of `pyllmc parity`) on "
             + ", ".join(f"`{c}`" for c in data["configs"]) + " (pyllmc/mutation/harness.py). "
             "Produced by `nox -s mutation`" + (f" on {data.get('machine', '')}" if data.get("machine") else "") + ".")
    L.append("")
    L.append(f"- bugs: {s['bugs']}; caught {s['caught']} ({s['caught_pct']}%), localised {s['localised']} "
             f"({s['localised_pct']}%)")
    L.append(f"- equivalent (rounding-level) mutants: {s['equivalent']}; false alarms {s['false_alarms']}")
    L.append(f"- clean builds: {s['clean_runs']} runs, {s['clean_failed']} failed "
             f"(configs {', '.join(data['clean_configs'])}; seeds {data['clean_seeds']}; "
             "the mutants' configs also on the avx2 and generic GEMM kernels)")
    L.append(f"- the policy before issue 12 on the same runs: caught {s['caught_before']} of {s['bugs']}, "
             f"false alarms {s['false_alarms_before']} of {s['equivalent']}")
    if s["missed"]:
        L.append(f"- MISSED: {', '.join(s['missed'])}")
    if s["not_localised"]:
        L.append(f"- caught but not localised: {', '.join(s['not_localised'])}")
    if s["build_failed"]:
        L.append(f"- did not compile (not counted): {', '.join(s['build_failed'])}")
    L.append(f"- campaign time {data['seconds']:.0f} s")
    L.append("")
    L.append("## The mutants of issue 12, before and after")
    L.append("")
    L.append("Before = the policy before issue 12 (pyllmc/mutation/policies.py); `t64_1t` is one query "
             "block (T = 64), the longest sequence the parity suites used before.")
    L.append("")
    L.append("| mutant | before policy, T = 64 | before policy, T = 130 | this policy, T = 64 | this policy, T = 130 |")
    L.append("|---|---|---|---|---|")
    by = {r["id"]: r for r in data["mutants"]}
    for i in ISSUE_MUTANTS:
        r = by.get(i)
        if not r or "configs" not in r:
            continue
        def bef(cs):
            return "; ".join(f"{c['config']}: " + ("passed (missed)" if (c.get("before") or {}).get("passed") else
                                                   f"failed at {(c.get('before') or {}).get('first_divergence')}")
                             for c in cs)

        def aft(cs):
            return "; ".join(f"{c['config']}: " + ("passed (missed)" if c["passed"] else _first(c)) for c in cs)

        sb = r.get("single_block") or []
        L.append(f"| {i} | {bef(sb)} | {bef(r['configs'])} | {aft(sb)} | {aft(r['configs'])} |")
    L.append("")
    L.append("## Every mutant")
    L.append("")
    L.append("| id | class | kernel | expected | result | first divergence per config |")
    L.append("|---|---|---|---|---|---|")
    for r in data["mutants"]:
        if "build_failed" in r:
            L.append(f"| {r['id']} | {r['what']} | {r['kernel']} | {', '.join(r['expect'])} | build failed | |")
            continue
        if r["what"] == "equivalent":
            res = "FALSE ALARM" if r["false_alarm"] else "passes"
        else:
            res = ("caught" if r["caught"] else "MISSED") + (", localised" if r["localised"] else
                                                            (", not localised" if r["caught"] else ""))
        L.append(f"| {r['id']} | {r['what']} | {r['kernel']} | {', '.join(r['expect']) or '-'} | {res} | "
                 + "; ".join(f"{c['config']}: {_first(c)}" for c in r["configs"]) + " |")
    L.append("")
    L.append("## Clean runs: the largest share of its limit any tensor used (tol, <= 1 passes)")
    L.append("")
    L.append("| config | GEMM | seed | passed | max tol | worst tensor kinds (tol) |")
    L.append("|---|---|---|---|---|---|")
    for r in data["clean"]:
        kinds = sorted(((k, v["tol"]) for k, v in (r.get("kinds") or {}).items()), key=lambda kv: -kv[1])[:3]
        L.append(f"| {r['config']} | {r.get('gemm_isa', '')} | {r.get('seed')} | {r['passed']} | "
                 f"{(r.get('max_tol_ratio') or 0):.2f} | " + ", ".join(f"{k} {v:.2f}" for k, v in kinds) + " |")
    L.append("")
    return "\n".join(L)


def write(data: Dict[str, Any], out_dir: str) -> Dict[str, str]:
    os.makedirs(out_dir, exist_ok=True)
    data = dict(data)
    data.setdefault("machine", f"{platform.machine()}, {os.cpu_count()} CPUs")
    s = summary(data)
    data["summary"] = s
    paths = {"json": os.path.join(out_dir, "results.json"), "md": os.path.join(out_dir, "report.md")}
    with open(paths["json"], "w") as f:
        json.dump(_clean(data), f, indent=1, allow_nan=False)
        f.write("\n")
    with open(paths["md"], "w") as f:
        f.write(markdown(data, s))
    return paths
