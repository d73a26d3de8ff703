"""What the mutation campaign runs on every build of core_c: the lockstep parity engine
(pyllmc.reference.lockstep, the same code as `pyllmc parity`) on small randomised models
whose shapes reach every code path that GPT-2 at T = 1024 reaches: several attention query
blocks (T > 64, not a multiple of the block), NH >= 2, B >= 2, a padded vocabulary, two
steps (so whatever carries over from one step to the next is seen), at 1 and 2 threads.

Runs in the current process, against whichever libllmc pyllmc loaded (PYLLMC_LIBRARY), and
returns plain dicts (JSON-ready): the verdict, the first divergence, and per tensor kind the
worst ratio of each attributed measure to its fp32 baseline (what the false-alarm margins
in docs/parity.md are read from).
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Dict, List, Optional, Sequence


@dataclasses.dataclass(frozen=True)
class HarnessConfig:
    """One lockstep run: a model shape, a batch, steps and a thread count."""

    name: str
    V: int
    maxT: int
    L: int
    NH: int
    C: int
    B: int
    T: int
    threads: int
    steps: int = 2
    seed: int = 0

    def describe(self) -> str:
        return (f"V{self.V} L{self.L} NH{self.NH} C{self.C} B{self.B} T{self.T} (maxT {self.maxT}), "
                f"{self.steps} steps, {self.threads} thread{'s' if self.threads > 1 else ''}")


#: The campaign's configs. T = 130: query blocks of 64, 64 and 2 rows; hs = 16; V = 211
#: (Vp = 256, padding in play). The same shape at 1, 2 and 8 threads: threaded paths (chunk
#: bounds, per-thread workspaces, column splits) only run with several. 8 threads on a
#: machine of fewer cores are preempted in the middle of kernels, so two threads that share
#: a buffer by mistake overlap in it on almost every run instead of when the load happens to
#: interleave them (each must equal its 1-thread twin bit for bit: thread_twins).
CONFIGS: Dict[str, HarnessConfig] = {
    "mb130_1t": HarnessConfig("mb130_1t", V=211, maxT=160, L=2, NH=2, C=32, B=2, T=130, threads=1),
    "mb130_2t": HarnessConfig("mb130_2t", V=211, maxT=160, L=2, NH=2, C=32, B=2, T=130, threads=2),
    "mb130_8t": HarnessConfig("mb130_8t", V=211, maxT=160, L=2, NH=2, C=32, B=2, T=130, threads=8),
    # clean runs only (false-alarm rates): the shapes of the parity test suites, and T = 64
    # (one query block: the longest sequence the suites used before issue 12)
    "t64_1t": HarnessConfig("t64_1t", V=211, maxT=160, L=2, NH=2, C=32, B=2, T=64, threads=1),
    "mb197_2t": HarnessConfig("mb197_2t", V=257, maxT=200, L=3, NH=4, C=48, B=3, T=197, threads=2),
    "nh1_1t": HarnessConfig("nh1_1t", V=96, maxT=16, L=2, NH=1, C=48, B=4, T=16, threads=1),
    "c64_2t": HarnessConfig("c64_2t", V=257, maxT=24, L=3, NH=4, C=64, B=1, T=13, threads=2),
    "v101_1t": HarnessConfig("v101_1t", V=101, maxT=16, L=2, NH=4, C=32, B=2, T=8, threads=1),
}

#: What every mutant is run on.
MUTANT_CONFIGS = ["mb130_1t", "mb130_2t", "mb130_8t"]
#: What the clean (unmutated) build is run on, several times with different seeds.
CLEAN_CONFIGS = list(CONFIGS)


def _kind_ratios(rows: Sequence[Dict[str, Any]]) -> Dict[str, Dict[str, float]]:
    """Per (phase, tensor kind): the largest raw ratio of C's error against fp64 to the fp32
    baseline, by each measure (rms, worst, bulk; floors left out), and the largest share of
    its limit (tol_ratio)."""
    out: Dict[str, Dict[str, float]] = {}
    for r in rows:
        if r.get("phase") == "init" or "runs_rmse_vs_64" not in r:
            continue
        key = f"{r['phase']}:{r['kind']}"
        e = out.setdefault(key, {"rms": 0.0, "worst": 0.0, "bulk": 0.0, "tol": 0.0, "n": 0})
        e["n"] += 1
        for m, c_key, b_key in (("rms", "rmse_c_vs_64", "rmse_32_vs_64"), ("worst", "max_abs_vs_64", "max_abs_32_vs_64"),
                                ("bulk", "bulk_c_vs_64", "bulk_32_vs_64")):
            c, b = r[c_key], r[b_key]
            v = c / b if b > 0 else (0.0 if c == 0 else math.inf)
            e[m] = max(e[m], v)
        e["tol"] = max(e["tol"], r["tol_ratio"])
    return out


def summarize(res: Any, cfg: HarnessConfig, seconds: float, keep_rows: bool = False) -> Dict[str, Any]:
    from .policies import passed_before

    first = res.first_divergence
    first_before = next((r for r in res.rows if not passed_before(r)), None)
    bad = [r for r in res.rows if not r["passed"]]
    out: Dict[str, Any] = {
        "config": cfg.name,
        "passed": bool(res.passed),
        "failed_rows": len(bad),
        "rows": len(res.rows),
        "first_divergence": None if first is None else {
            "name": first["name"], "kind": first["kind"], "layer": first["layer"], "step": first["step"],
            "phase": first["phase"], "failed_measures": first.get("failed_measures", []),
            "tol_ratio": first["tol_ratio"] if math.isfinite(first["tol_ratio"]) else None,
        },
        # the same run under the policy before issue 12 (policies.py), for the report's before/after
        "before": {"passed": first_before is None,
                   "first_divergence": None if first_before is None else first_before["name"]},
        "max_tol_ratio": max((r["tol_ratio"] for r in res.rows if r["phase"] != "init"), default=0.0),
        "kinds": _kind_ratios(res.rows),
        "seconds": round(seconds, 2),
    }
    if not math.isfinite(out["max_tol_ratio"]):
        out["max_tol_ratio"] = None
    out["crcs"] = [[r["name"], r["step"], r.get("c_crc")] for r in res.rows if r["phase"] != "init"]
    if keep_rows:
        out["all_rows"] = res.rows
    return out


def thread_twins(results: List[Dict[str, Any]]) -> None:
    """Runs of one shape and seed at different thread counts (mb130_1t, _2t, _8t) must give the
    C core's results bit for bit alike (its sums have a fixed order whatever the thread
    count): a run whose C tensors differ from its 1-thread twin's fails, with the first
    differing tensor as its first divergence. This is what sees a race or a wrong thread
    split whose error stays within rounding, where no comparison with PyTorch could."""
    by_key: Dict[Any, Dict[str, Any]] = {}
    for r in results:
        cfg = CONFIGS.get(r["config"])
        if cfg is None or "crcs" not in r:
            continue
        key = (dataclasses.replace(cfg, name="", threads=0), r.get("seed"))
        if cfg.threads == 1:
            by_key[key] = r
    for r in results:
        cfg = CONFIGS.get(r["config"])
        if cfg is None or cfg.threads == 1 or "crcs" not in r:
            continue
        twin = by_key.get((dataclasses.replace(cfg, name="", threads=0), r.get("seed")))
        if twin is None:
            continue
        diff = next((i for i, (a, b) in enumerate(zip(r["crcs"], twin["crcs"])) if a != b), None)
        if diff is None and len(r["crcs"]) != len(twin["crcs"]):
            diff = min(len(r["crcs"]), len(twin["crcs"]))
        r["threads_equal"] = diff is None
        if diff is not None and r["passed"]:
            from ..reference.lockstep import tensor_kind

            name, step = (r["crcs"] + twin["crcs"])[diff][:2] if diff < len(r["crcs"]) else twin["crcs"][diff][:2]
            kind, layer = tensor_kind(name)
            r["passed"] = False
            r["first_divergence"] = {"name": name, "kind": kind, "layer": layer, "step": step, "phase": None,
                                     "failed_measures": [f"bitwise vs {twin['config']}"], "tol_ratio": None}


def run_config(cfg: HarnessConfig, keep_rows: bool = False) -> Dict[str, Any]:
    """One lockstep run of cfg against the loaded C library."""
    import torch

    from ..reference import LockstepConfig, load_reference, make_config, randomize_params, run_lockstep
    from ..reference.lockstep import c_model_for

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    ref = load_reference(make_config(vocab_size=cfg.V, n_positions=cfg.maxT, n_layer=cfg.L, n_head=cfg.NH,
                                     n_embd=cfg.C), seed=cfg.seed)
    randomize_params(ref, seed=cfg.seed + 1)
    lc = LockstepConfig(steps=cfg.steps, batch=cfg.B, seq=cfg.T, seed=cfg.seed + 4, threads=cfg.threads,
                        lr=3e-3, grad_clip=1.0, weight_decay=0.1)
    m = c_model_for(ref, lc)
    try:
        res = run_lockstep(ref, m, lc, model_name=cfg.name)
    finally:
        m.close()
    return summarize(res, cfg, time.perf_counter() - t0, keep_rows=keep_rows)


def run_configs(names: Sequence[str], keep_rows: bool = False, seed: Optional[int] = None) -> List[Dict[str, Any]]:
    """Each config once (with `seed` instead of its own, if given), then the thread twins'
    bitwise check (thread_twins)."""
    out = []
    for n in names:
        cfg = CONFIGS[n]
        if seed is not None:
            cfg = dataclasses.replace(cfg, seed=seed)
        try:
            out.append(run_config(cfg, keep_rows=keep_rows))
        except Exception as e:  # a crash of the C side is a detection, reported as such
            out.append({"config": n, "passed": False, "error": f"{type(e).__name__}: {e}"[:500],
                        "first_divergence": None})
    thread_twins(out)
    if not keep_rows:
        for r in out:
            r.pop("crcs", None)
    return out
