"""The benchmark gate (nox -s bench_gate, run by .ci/run): fails on a real performance
regression of the C core, not on noise. Two checks, both configured in
benchmarks/gate/gate.json (thresholds and baselines live in the repository):

1. ratio: the C core's training step against a PyTorch eager baseline measured in the same
   run, interleaved step by step in two live worker processes (the order alternates every
   round), so machine load that comes and goes hits both alike. The statistic is the
   smaller of (ratio of the two minima) and (median of the per-round ratios); the gate fails
   when it exceeds `max_ratio`. Both estimates must be high to fail: noise rarely inflates
   both, a real slowdown always does.
2. callgrind: instructions executed by one fixed small training step (1 thread) of the C
   core, built from the sources by the C driver core_c/bench/bench_step.c, counted by
   valgrind's callgrind. Independent of machine load; fails above +`max_increase` (3%)
   over the recorded baseline. Valgrind does not run AVX-512, so the core's run-time
   dispatch takes its AVX2 path there: the AVX-512 GEMM is covered by the ratio check.

    python -m pyllmc.bench.gate [--config FILE] [--out DIR] [--src DIR]
        [--skip-ratio] [--skip-callgrind] [--slow gelu|forward] [--update-baseline]

--slow builds a deliberately slowed C core (core_c/bench/slow_wrap.c): `gelu` runs the GELU
forward kernel twice, `forward` the whole forward pass twice (also in the ratio check, via
PYLLMC_BENCH_SLOW=forward). The gate must then fail: see parity_tests/test_bench_gate.py.
--update-baseline records the callgrind count (and the ratio measured) into the config file.

Exit status: 0 pass, 1 a check failed, 2 the gate could not run (no valgrind, no compiler,
bad config).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from . import cdriver
from .procs import Skipped, interleaved
from .spec import Job, Shape, parse_model

DEFAULT_CONFIG = Path("benchmarks") / "gate" / "gate.json"


class GateError(RuntimeError):
    """The gate could not run (exit 2)."""


def _log(msg: str) -> None:
    sys.stderr.write(f"[bench_gate {time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


# ---------------------------------------------------------------------------- ratio
def ratio_stats(c_ms: List[float], t_ms: List[float]) -> Dict[str, float]:
    """Ratio of minima, median of paired ratios, and the gate statistic (the smaller)."""
    if not c_ms or len(c_ms) != len(t_ms):
        raise ValueError("need the same, nonzero number of C and torch steps")
    of_mins = min(c_ms) / min(t_ms)
    paired = statistics.median(c / t for c, t in zip(c_ms, t_ms))
    return {"ratio_of_mins": of_mins, "median_paired_ratio": paired, "statistic": min(of_mins, paired)}


def run_ratio(cfg: Dict[str, Any], slow: Optional[str], log=_log) -> Dict[str, Any]:
    shape = parse_model(cfg["model"])
    B, T, n = int(cfg["batch"]), int(cfg["seq"]), int(cfg["threads"])
    jobs = [Job("c-core", shape, B, T, n, warmup=int(cfg["warmup"]), repeats=0),
            Job(cfg["versus"], shape, B, T, n, warmup=int(cfg["warmup"]), repeats=0)]
    if slow == "forward":
        os.environ["PYLLMC_BENCH_SLOW"] = "forward"  # inherited by both workers; only the C core reads it
    try:
        t0 = time.perf_counter()
        steps = interleaved(jobs, int(cfg["rounds"]), timeout=float(cfg.get("timeout_s", 900)))
    finally:
        os.environ.pop("PYLLMC_BENCH_SLOW", None)
    c_ms = [1e3 * sum(s.values()) for s in steps["c-core"]]
    t_ms = [1e3 * sum(s.values()) for s in steps[cfg["versus"]]]
    st = ratio_stats(c_ms, t_ms)
    limit = float(cfg["max_ratio"])
    res = {"check": "ratio", "model": shape.name, "batch": B, "seq": T, "threads": n, "versus": cfg["versus"],
           "c_ms": c_ms, "torch_ms": t_ms, **st, "max_ratio": limit, "passed": st["statistic"] <= limit,
           "elapsed_s": time.perf_counter() - t0}  # fmt: skip
    log(f"ratio {shape.name} B{B} T{T} {n}t: C min {min(c_ms):.1f} ms, {cfg['versus']} min {min(t_ms):.1f} ms; "
        f"ratio of mins {st['ratio_of_mins']:.3f}, median paired {st['median_paired_ratio']:.3f} "
        f"-> {st['statistic']:.3f} vs max {limit:.3f}: {'pass' if res['passed'] else 'FAIL'}")
    return res


# ---------------------------------------------------------------------------- callgrind
def _has_callgrind_header(cc: str) -> bool:
    p = subprocess.run([cc, "-E", "-x", "c", "-", "-o", os.devnull], input="#include <valgrind/callgrind.h>\n",
                       capture_output=True, text=True)
    return p.returncode == 0


def callgrind_count(exe: Path, shape: Shape, c: Dict[str, Any], out_file: Path, fast_start: bool) -> Tuple[int, Dict[str, int]]:
    """Instructions of the counted steps, and the self instructions of the top functions."""
    valgrind = shutil.which("valgrind")
    if not valgrind:
        raise GateError("valgrind is not installed (needed for the callgrind check; apt-get install valgrind)")
    argv = [valgrind, "--tool=callgrind", f"--callgrind-out-file={out_file}", "--toggle-collect=bench_counted_steps"]
    if fast_start:
        argv.append("--instr-atstart=no")
    argv += [str(exe), *cdriver.step_args(shape, int(c["batch"]), int(c["seq"]), 1, int(c["warmup"]), int(c["steps"]))]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=float(c.get("timeout_s", 1200)))
    if p.returncode != 0:
        raise GateError(f"callgrind run failed ({p.returncode}): {p.stderr.strip()[-400:]}")
    text = out_file.read_text()
    m = re.search(r"^totals:\s+(\d+)", text, re.M) or re.search(r"^summary:\s+(\d+)", text, re.M)
    if not m:
        raise GateError(f"{out_file}: no totals line")
    total = int(m.group(1))
    if total == 0:
        raise GateError("callgrind counted 0 instructions (bench_counted_steps not reached?)")
    return total, _functions(out_file)


def _functions(out_file: Path, top: int = 25) -> Dict[str, int]:
    ann = shutil.which("callgrind_annotate")
    if not ann:
        return {}
    p = subprocess.run([ann, "--threshold=100", str(out_file)], capture_output=True, text=True)
    funcs: Dict[str, int] = {}
    for line in p.stdout.splitlines():
        m = re.match(r"\s*([\d,]+)\s+\([\s\d.]+%\)\s+\S*?:(\S+)", line)
        if m and "PROGRAM TOTALS" not in line:
            funcs[m.group(2)] = funcs.get(m.group(2), 0) + int(m.group(1).replace(",", ""))
    return dict(sorted(funcs.items(), key=lambda kv: -kv[1])[:top])


def run_callgrind(cfg: Dict[str, Any], src: Path, out: Path, slow: Optional[str], log=_log) -> Dict[str, Any]:
    c = cfg["config"]
    shape = Shape(c.get("name", "gate"), int(c["num_layers"]), int(c["channels"]), int(c["num_heads"]),
                  int(c["vocab_size"]), int(c["padded_vocab_size"]), int(c["max_seq_len"]))
    t0 = time.perf_counter()
    try:
        exe = cdriver.build("bench_step", src, slow=slow)
        cc = cdriver.compiler()
    except cdriver.DriverError as e:
        raise GateError(str(e)) from None
    fast = _has_callgrind_header(cc)
    total, funcs = callgrind_count(exe, shape, c, out / f"callgrind{'-slow-' + slow if slow else ''}.out", fast)
    comp = cdriver.compiler_id(cc)
    base = cfg.get("baseline") or {}
    res: Dict[str, Any] = {"check": "callgrind", "instructions": total, "functions": funcs, "compiler": comp,
                           "config": c, "slow": slow, "max_increase": float(cfg["max_increase"])}
    if not base.get("instructions"):
        res.update(passed=False, reason="no baseline recorded (run with --update-baseline)")
        log("callgrind: no baseline recorded")
        return res
    b = int(base["instructions"])
    change = total / b - 1.0
    res.update(baseline=b, change=change, passed=change <= float(cfg["max_increase"]), elapsed_s=time.perf_counter() - t0)
    if base.get("compiler") and base["compiler"] != comp:
        res["warning"] = f"baseline recorded with {base['compiler']!r}, this is {comp!r}: counts may differ for that reason alone"
        log("callgrind WARNING: " + res["warning"])
    log(f"callgrind: {total:,} instructions vs baseline {b:,} ({100 * change:+.2f}%, max +{100 * float(cfg['max_increase']):.0f}%): "
        f"{'pass' if res['passed'] else 'FAIL'}")
    if change < -float(cfg["max_increase"]):
        log("callgrind: well below the baseline; record the improvement with --update-baseline so it is kept")
    if not res["passed"] or abs(change) > 0.01:
        bf = base.get("functions") or {}
        deltas = sorted(((f, funcs.get(f, 0) - bf.get(f, 0)) for f in set(funcs) | set(bf)), key=lambda kv: -abs(kv[1]))
        res["largest_changes"] = dict(deltas[:8])
        for f, d in deltas[:8]:
            if d:
                log(f"  {f}: {d:+,}")
    return res


# ---------------------------------------------------------------------------- main
def load_config(path: Path) -> Dict[str, Any]:
    try:
        with open(path) as f:
            return json.load(f)
    except OSError as e:
        raise GateError(f"{path}: cannot read: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise GateError(f"{path}: not JSON: {e}") from None


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pyllmc.bench.gate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=None, help=f"gate configuration (default <src>/{DEFAULT_CONFIG})")
    ap.add_argument("--out", default="out/bench_gate", help="directory for gate.json and callgrind output")
    ap.add_argument("--src", default=None, help="pyllmc source tree (default: found automatically)")
    ap.add_argument("--skip-ratio", action="store_true")
    ap.add_argument("--skip-callgrind", action="store_true")
    ap.add_argument("--slow", choices=sorted(cdriver.SLOW_VARIANTS), default=None, help="deliberately slowed C core (must fail)")
    ap.add_argument("--rounds", type=int, default=None, help="override the ratio check's rounds")
    ap.add_argument("--update-baseline", action="store_true", help="record this run's callgrind count (and ratio) in the config")
    a = ap.parse_args(argv)
    try:
        src = cdriver.find_source(a.src)
        cfg_path = Path(a.config) if a.config else src / DEFAULT_CONFIG
        cfg = load_config(cfg_path)
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        results: List[Dict[str, Any]] = []
        if not a.skip_callgrind:
            results.append(run_callgrind(cfg["callgrind"], src, out, a.slow))
        if not a.skip_ratio:
            rcfg = dict(cfg["ratio"])
            if a.rounds:
                rcfg["rounds"] = a.rounds
            try:
                results.append(run_ratio(rcfg, a.slow if a.slow == "forward" else None))
            except Skipped as e:
                raise GateError(f"ratio check could not run: {e}") from None
    except (GateError, cdriver.DriverError) as e:
        _log(f"error: {e}")
        return 2
    passed = all(r["passed"] for r in results)
    doc = {"passed": passed, "slow": a.slow, "config": str(cfg_path), "checks": results,
           "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    with open(out / "gate.json", "w") as f:
        json.dump(doc, f, indent=1)
    if a.update_baseline:
        if a.slow:
            _log("refusing to record a baseline from a deliberately slowed build")
            return 2
        _update(cfg_path, cfg, results)
    _log(f"{'PASSED' if passed else 'FAILED'} ({', '.join(r['check'] + (': pass' if r['passed'] else ': FAIL') for r in results)}); {out / 'gate.json'}")
    return 0 if passed or a.update_baseline else 1


def _update(path: Path, cfg: Dict[str, Any], results: List[Dict[str, Any]]) -> None:
    today = datetime.date.today().isoformat()
    for r in results:
        if r["check"] == "callgrind":
            cfg["callgrind"]["baseline"] = {"instructions": r["instructions"], "compiler": r["compiler"],
                                            "recorded": today, "functions": r["functions"]}
            _log(f"recorded callgrind baseline {r['instructions']:,}")
        if r["check"] == "ratio":
            cfg["ratio"]["last_measured"] = {"statistic": round(r["statistic"], 4), "ratio_of_mins": round(r["ratio_of_mins"], 4),
                                             "median_paired_ratio": round(r["median_paired_ratio"], 4), "recorded": today}
            _log(f"recorded measured ratio {r['statistic']:.3f} (max_ratio {cfg['ratio']['max_ratio']} is kept; change it by hand)")
    path.write_text(json.dumps(cfg, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
