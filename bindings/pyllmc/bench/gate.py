"""The benchmark gate (nox -s bench_gate, run by .ci/run): fails on a real performance
regression of the C core, not on noise. Two checks, configured in benchmarks/gate/gate.json
(thresholds and the baseline live in the repository; benchmarks/README.md explains them):

1. callgrind: instructions executed by one fixed small training step (1 thread) of the C
   core, built from the sources by the C driver core_c/bench/bench_step.c with the library's
   own flags, counted by valgrind's callgrind. Independent of machine load; fails above
   +`max_increase` (3%) over the recorded baseline. Instruction counts also depend on the
   toolchain and on which ISA path the run-time dispatch takes, so these are pinned or
   recorded with the baseline (its `environment`): the GEMM path is forced with
   LLMC_GEMM_ISA (valgrind 3.19 has no AVX-512; `avx2` is the widest path it runs), and
   the compiler, the C flags, the valgrind version and the dispatch seen in the run (GEMM
   micro-kernel, target_clones variants) must match the baseline's, else the gate stops
   with exit 2 and says what differs (counts from another toolchain are not comparable).
2. ratio: the C core's training step against a PyTorch eager baseline measured in the same
   run, interleaved step by step in two live worker processes (the order alternates every
   round), so machine load that comes and goes hits both alike. The statistic is the
   smaller of (ratio of the two minima) and (median of the per-round ratios). An attempt
   (`rounds` rounds) counts only when it is clean, i.e. neither side's median is more than
   `max_spread` above its minimum (other processes stealing a core disturb a measurement
   by chance, in either direction); one clean attempt within `max_ratio` passes, `confirm`
   clean attempts over it fail; when the machine never gets quiet within `max_attempts` /
   `budget_s`, all steps are pooled and judged together (and the result says so). This
   check covers what callgrind cannot see: the AVX-512 path and multi-threading.

    python -m pyllmc.bench.gate [--config FILE] [--out DIR] [--src DIR]
        [--skip-ratio] [--skip-callgrind] [--slow gelu|matmul] [--update-baseline]

--slow builds a deliberately slowed C core (core_c/bench/slow_wrap.c, linked with ld --wrap
into the gate's own builds only): `gelu` makes the GELU forward kernel 4x slower (callgrind
catches it; too small a share of the step for wall-clock timing), `matmul` makes every
Linear layer 3x slower (both checks catch it). The ratio check then loads a slowed
libllmc.so through PYLLMC_LIBRARY. The gate must fail: parity_tests/test_bench.py.
--update-baseline records this run's callgrind count and environment (and the ratio
measured, for information) into the config file.

Exit status: 0 pass, 1 a check failed, 2 the gate could not run (no valgrind, no compiler,
a baseline from another toolchain, bad config).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ..atomic import atomic_write
from ..errors import PyllmcError
from . import cdriver
from .procs import Interleaved, Skipped
from .spec import Job, Shape, parse_model

DEFAULT_CONFIG = Path("benchmarks") / "gate" / "gate.json"
UPDATE_HINT = ("if the change is intended (a deliberate change to the C core or the toolchain), record the new "
               "baseline with `nox -s bench_gate -- --update-baseline` (or `python -m pyllmc.bench.gate "
               "--update-baseline`) and commit benchmarks/gate/gate.json")
SLOW_WHAT = cdriver.SLOW_VARIANTS
#: environment keys that must equal the baseline's for counts to be comparable
ENV_KEYS = ("compiler", "cflags", "valgrind", "gemm_isa_forced", "dispatch")


class GateError(PyllmcError, RuntimeError):
    """The gate could not run (exit 2): bad config, no valgrind, no baseline for this environment."""


def _log(msg: str) -> None:
    sys.stderr.write(f"[bench_gate {time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


# ---------------------------------------------------------------------------- ratio
def ratio_stats(c_ms: List[float], t_ms: List[float]) -> Dict[str, float]:
    """Ratio of minima, median of paired ratios, the gate statistic (the smaller of the two)
    and the spread of each side (median / min - 1: how disturbed the measurement was)."""
    if not c_ms or len(c_ms) != len(t_ms):
        raise ValueError("need the same, nonzero number of C and torch steps")
    of_mins = min(c_ms) / min(t_ms)
    paired = statistics.median(c / t for c, t in zip(c_ms, t_ms))
    spread = max(statistics.median(c_ms) / min(c_ms), statistics.median(t_ms) / min(t_ms)) - 1.0
    return {"ratio_of_mins": of_mins, "median_paired_ratio": paired, "statistic": min(of_mins, paired), "spread": spread}


def ratio_verdict(attempts: List[Dict[str, Any]], max_ratio: float, max_spread: float, confirm: int) -> Optional[str]:
    """'pass', 'fail' or None (measure again), from the attempts so far.

    Only a clean attempt (spread <= max_spread on both sides) is evidence: load from other
    processes slows steps by chance, and can favour either side. One clean attempt within
    max_ratio passes; `confirm` clean attempts over it fail."""
    clean = [a for a in attempts if a["spread"] <= max_spread]
    if any(a["statistic"] <= max_ratio for a in clean):
        return "pass"
    if len(clean) >= confirm:
        return "fail"
    return None


def pooled_stats(attempts: List[Dict[str, Any]]) -> Dict[str, float]:
    """All attempts' steps together (the fallback when no attempt was clean)."""
    return ratio_stats([x for a in attempts for x in a["c_ms"]], [x for a in attempts for x in a["torch_ms"]])


def gemm_path(src: Optional[Path]) -> str:
    """The fp32 GEMM kernel the C core picks on this CPU (avx512, avx2, generic), as the C
    benchmark driver reports it from the library's own dispatch."""
    try:
        return str(cdriver.run_gemm(cdriver.build("bench_kernels", src), 64, 1, repeats=1)["isa"])
    except (cdriver.DriverError, KeyError, ValueError) as e:
        raise GateError(f"could not tell which GEMM kernel the C core runs here: {e}") from None


def ratio_limit(cfg: Dict[str, Any], path: str) -> float:
    """max_ratio, or the limit measured for this GEMM path (ratio.max_ratio_by_gemm)."""
    return float(cfg.get("max_ratio_by_gemm", {}).get(path, cfg["max_ratio"]))


def run_ratio(cfg: Dict[str, Any], slow_lib: Optional[Path], log=_log, src: Optional[Path] = None,
              path: Optional[str] = None) -> Dict[str, Any]:
    shape = parse_model(cfg["model"])
    B, T, n = int(cfg["batch"]), int(cfg["seq"]), int(cfg["threads"])
    versus = cfg["versus"]
    path = path or gemm_path(src)
    limit = ratio_limit(cfg, path)
    log(f"ratio: the C core's GEMM runs the {path} kernel here: max_ratio {limit}")
    max_spread = float(cfg.get("max_spread", 0.15))
    confirm = int(cfg.get("confirm", 2))
    max_attempts = max(1, int(cfg.get("max_attempts", 6)))
    budget = float(cfg.get("budget_s", 180))
    jobs = [Job("c-core", shape, B, T, n, warmup=int(cfg["warmup"]), repeats=0),
            Job(versus, shape, B, T, n, warmup=int(cfg["warmup"]), repeats=0)]
    # a slowed C core is a separate libllmc.so loaded by the C worker alone
    env = {"c-core": {"PYLLMC_LIBRARY": str(slow_lib)}} if slow_lib else None
    t0 = time.perf_counter()
    attempts: List[Dict[str, Any]] = []
    verdict: Optional[str] = None
    with Interleaved(jobs, timeout=float(cfg.get("timeout_s", 900)), env=env) as il:
        while verdict is None and len(attempts) < max_attempts and (not attempts or time.perf_counter() - t0 < budget):
            steps = il.rounds(int(cfg["rounds"]))
            c_ms = [1e3 * sum(s.values()) for s in steps["c-core"]]
            t_ms = [1e3 * sum(s.values()) for s in steps[versus]]
            st = ratio_stats(c_ms, t_ms)
            attempts.append({"c_ms": c_ms, "torch_ms": t_ms, **st})
            verdict = ratio_verdict(attempts, limit, max_spread, confirm)
            log(f"ratio {shape.name} B{B} T{T} {n}t, attempt {len(attempts)}: C min {min(c_ms):.1f} ms, {versus} min "
                f"{min(t_ms):.1f} ms; ratio of mins {st['ratio_of_mins']:.3f}, median paired {st['median_paired_ratio']:.3f} "
                f"-> {st['statistic']:.3f} (max {limit:.3f}); spread {st['spread']:.2f} "
                f"({'clean' if st['spread'] <= max_spread else 'disturbed: not counted'})")
        c_lib = il.info.get("c-core", {}).get("library")
    res: Dict[str, Any] = {"check": "ratio", "model": shape.name, "batch": B, "seq": T, "threads": n, "versus": versus,
                           "c_library": c_lib, "gemm_path": path, "attempts": attempts, "max_ratio": limit,
                           "max_spread": max_spread}
    clean = [a for a in attempts if a["spread"] <= max_spread]
    if verdict is None:
        # the machine stayed busy: judge from all steps together, and say so
        pooled = pooled_stats(attempts)
        verdict = "pass" if pooled["statistic"] <= limit else "fail"
        res.update(statistic=pooled["statistic"], pooled=True)
        log(f"ratio: no verdict from clean attempts ({len(clean)} of {len(attempts)} clean; the machine is busy): "
            f"judged from all steps together, {pooled['statistic']:.3f}")
    else:
        res.update(statistic=min(a["statistic"] for a in clean), pooled=False)
    res.update(passed=verdict == "pass", elapsed_s=time.perf_counter() - t0)
    if res["passed"]:
        log(f"ratio: {res['statistic']:.3f} <= {limit:.3f}: pass")
    else:
        res["message"] = (f"the C core's step took {res['statistic']:.2f}x the {versus} step "
                          f"({'all steps pooled' if res['pooled'] else f'{len(clean)} clean attempts'}; max_ratio {limit}): a "
                          "slower C core (a slowdown that callgrind does not see is in the AVX-512 or multi-threaded paths). "
                          "If the machine was busy, rerun; if the threshold must change, edit ratio.max_ratio (or "
                          f"ratio.max_ratio_by_gemm.{path}) in benchmarks/gate/gate.json (see benchmarks/README.md)")
        log(f"ratio: FAIL: {res['message']}")
    return res


# ---------------------------------------------------------------------------- callgrind
def _has_callgrind_header(cc: str) -> bool:
    p = subprocess.run([cc, "-E", "-x", "c", "-", "-o", os.devnull], input="#include <valgrind/callgrind.h>\n",
                       capture_output=True, text=True)
    return p.returncode == 0


def valgrind_version(valgrind: str) -> str:
    p = subprocess.run([valgrind, "--version"], capture_output=True, text=True)
    return (p.stdout or p.stderr).strip()


def parse_callgrind(text: str) -> Tuple[int, Dict[str, int]]:
    """(total Ir, self Ir per function) from a callgrind output file (one event, Ir).

    Cost lines are `positions... cost`; the cost line right after a `calls=` line is the
    inclusive cost of that call and is not the caller's own. Names may be compressed:
    `fn=(id) name` the first time, `fn=(id)` afterwards (cfn= shares the table)."""
    names: Dict[str, str] = {}
    self_cost: Dict[str, int] = {}
    npos = 1
    total: Optional[int] = None
    fn = "?"
    skip_next = False

    def name_of(spec: str) -> str:
        m = re.match(r"\((\d+)\)(?:\s+(.*))?$", spec.strip())
        if not m:
            return spec.strip()
        if m.group(2) is not None:
            names[m.group(1)] = m.group(2)
        return names.get(m.group(1), f"({m.group(1)})")

    for line in text.splitlines():
        if not line:
            continue
        c = line[0]
        if c.isdigit() or c in "+-*":
            if skip_next:
                skip_next = False
                continue
            parts = line.split()
            if len(parts) > npos:
                self_cost[fn] = self_cost.get(fn, 0) + int(parts[npos])
            continue
        if line.startswith("fn="):
            fn = name_of(line[3:])
        elif line.startswith("cfn="):
            name_of(line[4:])
        elif line.startswith("calls="):
            skip_next = True
        elif line.startswith("positions:"):
            npos = len(line.split()[1:])
        elif line.startswith(("summary:", "totals:")):
            # summary (header) is 0 when collection starts switched off; totals (end) is not
            total = max(total or 0, int(line.split()[1]))
    if total is None:
        total = sum(self_cost.values())
    return total, self_cost


def dispatch_of(funcs: Dict[str, int]) -> List[str]:
    """The ISA paths a run took, from the functions it executed: the GEMM micro-kernel
    (ukernel_<isa>) and the variants GCC's target_clones chose (name.<isa>)."""
    seen = set()
    for f in funcs:
        m = re.fullmatch(r"ukernel_(\w+)", f)
        if m:
            seen.add(f"gemm:{m.group(1)}")
        m = re.fullmatch(r"ukernel16_(\w+)", f)  # the bf16 GEMM's kernels (gemm_bf16.c)
        if m:
            seen.add(f"gemm_bf16:{m.group(1)}")
        m = re.search(r"\.(avx512\w*|avx2|default|arch_\w+)$", f)
        if m:
            seen.add(f"clones:{m.group(1)}")
    return sorted(seen)


def callgrind_count(exe: Path, shape: Shape, c: Dict[str, Any], out_file: Path, fast_start: bool,
                    isa: str) -> Tuple[int, Dict[str, int], str]:
    """Instructions of the counted steps, the self instructions of every function, and the
    valgrind version."""
    valgrind = shutil.which("valgrind")
    if not valgrind:
        raise GateError("valgrind is not installed (needed for the callgrind check; apt-get install valgrind)")
    argv = [valgrind, "--tool=callgrind", f"--callgrind-out-file={out_file}", "--toggle-collect=bench_counted_steps"]
    if fast_start:
        argv.append("--instr-atstart=no")
    argv += [str(exe), *cdriver.step_args(shape, int(c["batch"]), int(c["seq"]), 1, int(c["warmup"]), int(c["steps"]),
                                          str(c.get("precision", "fp32")))]
    env = dict(os.environ, OMP_NUM_THREADS="1", LLMC_GEMM_ISA=isa)
    try:
        p = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=float(c.get("timeout_s", 1200)))
    except subprocess.TimeoutExpired:
        raise GateError(f"callgrind run timed out after {c.get('timeout_s', 1200)} s") from None
    if p.returncode != 0:
        raise GateError(f"callgrind run failed ({p.returncode}): {p.stderr.strip()[-400:]}")
    total, funcs = parse_callgrind(out_file.read_text())
    if total == 0:
        raise GateError("callgrind counted 0 instructions (bench_counted_steps not reached?)")
    return total, funcs, valgrind_version(valgrind)


def compare_callgrind(total: int, env: Dict[str, Any], base: Dict[str, Any], max_increase: float,
                      slow: Optional[str] = None) -> Dict[str, Any]:
    """The callgrind verdict against a baseline: {"status": pass|fail|no-baseline|env-mismatch, ...}."""
    if not base.get("instructions"):
        return {"status": "no-baseline", "passed": False,
                "message": "no callgrind baseline recorded: run `nox -s bench_gate -- --update-baseline` "
                           "and commit benchmarks/gate/gate.json"}
    benv = base.get("environment") or {}
    diff = {k: {"baseline": benv.get(k), "now": env.get(k)} for k in ENV_KEYS if benv.get(k) != env.get(k)}
    if diff:
        what = "; ".join(f"{k}: baseline {v['baseline']!r}, now {v['now']!r}" for k, v in diff.items())
        return {"status": "env-mismatch", "passed": False, "differs": diff,
                "message": f"the baseline was recorded in another environment, counts are not comparable ({what}); "
                           f"if this environment is the reference now, {UPDATE_HINT}"}
    b = int(base["instructions"])
    change = total / b - 1.0
    passed = change <= max_increase
    out: Dict[str, Any] = {"status": "pass" if passed else "fail", "passed": passed, "baseline": b, "change": change}
    if not passed:
        src_note = ""
        if slow:
            src_note = f" This is the deliberately slowed build --slow {slow} ({SLOW_WHAT.get(slow, slow)})."
        elif base.get("sources") and env.get("sources"):
            src_note = (" The C sources changed since the baseline was recorded" if base["sources"] != env["sources"]
                        else " The C sources are those of the baseline, so the cause is outside them (system libraries?)")
            src_note += f" (baseline {base.get('recorded', '?')}, sources {base['sources']}; now {env['sources']})."
        out["message"] = (f"{total:,} instructions per step, {100 * change:+.2f}% over the baseline {b:,} "
                          f"(max +{100 * max_increase:.0f}%): a slower C core.{src_note} Find the cause in the largest "
                          f"changes listed; {UPDATE_HINT}")
    return out


def environment(src: Path, isa: str, vg: str, funcs: Dict[str, int]) -> Dict[str, Any]:
    built = cdriver.build_flags(src)
    libc = " ".join(platform.libc_ver()) or "?"
    return {"compiler": built["compiler"], "cflags": built["cflags"], "cflags_from": "compile_commands.json of the CMake bench build",
            "valgrind": vg, "gemm_isa_forced": isa, "dispatch": dispatch_of(funcs), "machine": platform.machine(),
            "libc": libc, "sources": cdriver.sources_digest(src)}


def run_callgrind(cfg: Dict[str, Any], src: Path, out: Path, slow: Optional[str], log=_log,
                  check: str = "callgrind") -> Dict[str, Any]:
    """One callgrind section of the config: `callgrind` (the fp32 step) or `callgrind_bf16`
    (the same step in bf16 precision, config.precision = bf16)."""
    c = cfg["config"]
    bf16 = c.get("precision", "fp32") == "bf16"
    shape = Shape(c.get("name", "gate"), int(c["num_layers"]), int(c["channels"]), int(c["num_heads"]),
                  int(c["vocab_size"]), int(c["padded_vocab_size"]), int(c["max_seq_len"]))
    isa = str(cfg.get("gemm_isa", "avx2"))
    max_inc = float(cfg["max_increase"])
    t0 = time.perf_counter()
    try:
        exe = cdriver.build("bench_step", src, slow=slow)
        cc = cdriver.compiler()
    except cdriver.DriverError as e:
        raise GateError(str(e)) from None
    fast = _has_callgrind_header(cc)
    total, funcs, vg = callgrind_count(exe, shape, c, out / f"{check}{'-slow-' + slow if slow else ''}.out", fast, isa)
    try:
        env = environment(src, isa, vg, funcs)
    except cdriver.DriverError as e:
        raise GateError(str(e)) from None
    if f"{'gemm_bf16' if bf16 else 'gemm'}:{isa}" not in env["dispatch"]:
        raise GateError(f"LLMC_GEMM_ISA={isa} was not honoured under valgrind (dispatch seen: {env['dispatch']}); "
                        "set callgrind.gemm_isa in the gate config to a path this CPU and valgrind run")
    top = dict(sorted(funcs.items(), key=lambda kv: -kv[1])[:40])
    base = cfg.get("baseline") or {}
    res: Dict[str, Any] = {"check": check, "instructions": total, "functions": top, "environment": env,
                           "config": c, "slow": slow, "max_increase": max_inc}
    res.update(compare_callgrind(total, env, base, max_inc, slow))
    res["elapsed_s"] = time.perf_counter() - t0
    st = res["status"]
    if st in ("pass", "fail"):
        log(f"{check}: {total:,} instructions vs baseline {res['baseline']:,} ({100 * res['change']:+.2f}%, "
            f"max +{100 * max_inc:.0f}%): {'pass' if res['passed'] else 'FAIL'}")
        if res["change"] < -max_inc:
            log("callgrind: well below the baseline; record the improvement with --update-baseline so it is kept")
        if not res["passed"] or abs(res["change"]) > 0.01:
            bf = base.get("functions") or {}
            deltas = sorted(((f, funcs.get(f, 0) - bf.get(f, 0)) for f in set(top) | set(bf)), key=lambda kv: -abs(kv[1]))
            # changes below 0.01% of the step are allocator and runtime jitter, not the cause
            res["largest_changes"] = {f: d for f, d in deltas[:8] if abs(d) >= 1e-4 * res["baseline"]}
            for f, d in res["largest_changes"].items():
                log(f"  {f}: {d:+,}")
    if st == "fail":  # (no-baseline and env-mismatch stop the gate in main, with the message)
        log(f"callgrind: FAIL: {res['message']}")
    return res


# ---------------------------------------------------------------------------- main
def load_config(path: Path) -> Dict[str, Any]:
    try:
        with open(path) as f:
            cfg = json.load(f)
    except OSError as e:
        raise GateError(f"{path}: cannot read: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise GateError(f"{path}: not JSON: {e}") from None
    need = {"ratio": ("model", "batch", "seq", "threads", "versus", "warmup", "rounds", "max_ratio"),
            "callgrind": ("config", "max_increase")}
    for sec, keys in need.items():
        missing = [k for k in keys if k not in (cfg.get(sec) or {})]
        if missing:
            raise GateError(f"{path}: section {sec!r} lacks {', '.join(missing)}")
    return cfg


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pyllmc.bench.gate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=None, help=f"gate configuration (default <src>/{DEFAULT_CONFIG})")
    ap.add_argument("--out", default="out/bench_gate", help="directory for gate.json and callgrind output")
    ap.add_argument("--src", default=None, help="pyllmc source tree (default: found automatically)")
    ap.add_argument("--skip-ratio", action="store_true")
    ap.add_argument("--skip-callgrind", action="store_true")
    ap.add_argument("--slow", choices=sorted(cdriver.SLOW_VARIANTS), default=None,
                    help="a deliberately slowed C core, to show the gate failing: " +
                         "; ".join(f"{k}: {v}" for k, v in cdriver.SLOW_VARIANTS.items()))
    ap.add_argument("--rounds", type=int, default=None, help="override the ratio check's rounds")
    ap.add_argument("--update-baseline", action="store_true", help="record this run's callgrind count and environment "
                    "(and the ratio measured) in the config")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    try:
        if a.update_baseline and a.slow:
            raise GateError("refusing to record a baseline from a deliberately slowed build (--slow)")
        if a.rounds is not None and a.rounds < 1:
            raise GateError(f"--rounds must be >= 1, got {a.rounds}")
        src = cdriver.find_source(a.src)
        cfg_path = Path(a.config) if a.config else src / DEFAULT_CONFIG
        cfg = load_config(cfg_path)
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        results: List[Dict[str, Any]] = []
        # the fp32 step, then (when configured) the same step in bf16 precision
        for check in [k for k in ("callgrind", "callgrind_bf16") if k in cfg] if not a.skip_callgrind else []:
            r = run_callgrind(cfg[check], src, out, a.slow, check=check)
            if r["status"] in ("env-mismatch", "no-baseline") and not a.update_baseline:
                _write(out, a, cfg_path, results + [r], t0)
                raise GateError(r["message"])
            results.append(r)
        if not a.skip_ratio:
            rcfg = dict(cfg["ratio"])
            if a.rounds:
                rcfg["rounds"] = a.rounds
            slow_lib = None
            if a.slow:
                slow_lib = cdriver.build("libllmc", src, slow=a.slow)
            try:
                results.append(run_ratio(rcfg, slow_lib, src=src))
            except Skipped as e:
                raise GateError(f"ratio check could not run: {e}") from None
    except (GateError, cdriver.DriverError) as e:
        _log(f"error: {e}")
        return 2
    passed = all(r["passed"] for r in results)
    _write(out, a, cfg_path, results, t0)
    if a.update_baseline:
        _update(cfg_path, cfg, results)  # marks the callgrind result `recorded`
        passed = all(r["passed"] for r in results)  # a failed ratio check still fails
        _write(out, a, cfg_path, results, t0)
    elapsed = time.perf_counter() - t0
    verdicts = ", ".join(f"{r['check']}: {'recorded' if r.get('status') == 'recorded' else 'pass' if r['passed'] else 'FAIL'}"
                         for r in results)
    _log(f"{'PASSED' if passed else 'FAILED'} ({verdicts}) "
         f"in {elapsed:.0f} s; {out / 'gate.json'}")
    return 0 if passed else 1


def _write(out: Path, a: argparse.Namespace, cfg_path: Path, results: List[Dict[str, Any]], t0: float) -> None:
    doc = {"passed": bool(results) and all(r["passed"] for r in results), "slow": a.slow, "config": str(cfg_path),
           "checks": results, "elapsed_s": time.perf_counter() - t0,
           "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    with open(out / "gate.json", "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


def _update(path: Path, cfg: Dict[str, Any], results: List[Dict[str, Any]]) -> None:
    today = datetime.date.today().isoformat()
    for r in results:
        if r["check"] in ("callgrind", "callgrind_bf16"):
            r.update(passed=True, status="recorded")
            cfg[r["check"]]["baseline"] = {"instructions": r["instructions"], "recorded": today,
                                           "environment": r["environment"], "functions": r["functions"]}
            cfg[r["check"]]["baseline"]["sources"] = r["environment"]["sources"]
            _log(f"recorded callgrind baseline {r['instructions']:,} ({r['environment']['compiler']}, "
                 f"{r['environment']['valgrind']}, dispatch {', '.join(r['environment']['dispatch'])})")
        if r["check"] == "ratio":
            clean = [x for x in r["attempts"] if x["spread"] <= r["max_spread"]] or r["attempts"]
            att = min(clean, key=lambda x: x["statistic"])
            cfg["ratio"]["last_measured"] = {"statistic": round(r["statistic"], 4), "ratio_of_mins": round(att["ratio_of_mins"], 4),
                                             "median_paired_ratio": round(att["median_paired_ratio"], 4),
                                             "gemm_path": r["gemm_path"], "recorded": today}
            _log(f"recorded measured ratio {r['statistic']:.3f} (max_ratio {cfg['ratio']['max_ratio']} is kept; change it by hand)")
    with atomic_write(path, "w") as f:  # the committed config: never left half-written
        f.write(json.dumps(cfg, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
