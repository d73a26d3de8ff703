"""Build each mutant of the catalogue into its own out-of-tree build, run the harness on it in
a fresh process, and classify the outcome.

A mutant's sources are a copy of core_c/src with the one edit applied; CMake builds them
through core_c/CMakeLists.txt's LLMC_SOURCE_DIR (the header and the build rules stay the
repository's) into WORK/<id>/build with -j2, CPU only, without the test shim. The worker
(worker.py) loads that library through PYLLMC_LIBRARY.

Outcomes, per mutant:
  bug:        caught     some config failed (a failing tensor, a crash, a timeout);
              localised  every failing config's first divergence has one of the catalogue's
                         expected tensor kinds;
  equivalent: false_alarm  some config failed.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

from .catalogue import ISSUE_MUTANTS, MUTANTS, check_snippets
from .harness import CLEAN_CONFIGS, MUTANT_CONFIGS

BUILD_TIMEOUT_S = 600
RUN_TIMEOUT_S = 600


class CampaignError(RuntimeError):
    """The campaign cannot run (no compiler or cmake, a catalogue that does not fit the sources)."""


def _run(cmd: Sequence[str], log: Path, timeout: float, env: Optional[Dict[str, str]] = None) -> int:
    with open(log, "ab") as f:
        f.write(("$ " + " ".join(cmd) + "\n").encode())
        f.flush()
        try:
            return subprocess.run(list(cmd), stdout=f, stderr=subprocess.STDOUT, timeout=timeout,
                                  env=env).returncode
        except subprocess.TimeoutExpired:
            f.write(b"\n[timeout]\n")
            return -9


def build(src_root: Path, sources: Path, build_dir: Path, log: Path) -> Path:
    """Build libllmc from `sources` (a directory of *.c, like core_c/src) into build_dir."""
    if not shutil.which("cmake"):
        raise CampaignError("cmake is not on PATH")
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    rc = _run(["cmake", "-S", str(src_root / "core_c"), "-B", str(build_dir), *generator,
               "-DLLMC_CUDA=OFF", "-DLLMC_KERNEL_SHIM=OFF", "-DCMAKE_BUILD_TYPE=Release",
               f"-DLLMC_SOURCE_DIR={sources}"], log, BUILD_TIMEOUT_S)
    if rc == 0:
        rc = _run(["cmake", "--build", str(build_dir), "-j2", "--target", "llmc"], log, BUILD_TIMEOUT_S)
    libs = sorted(build_dir.glob("libllmc.so")) + sorted(build_dir.glob("libllmc.dylib"))
    if rc != 0 or not libs:
        raise CampaignError(f"build failed (exit {rc}), see {log}")
    return libs[0]


def prepare_sources(src_root: Path, dest: Path, m: Optional[Dict[str, Any]]) -> Path:
    """A copy of core_c/src in dest/src, with mutant m's edit applied (None: unmutated)."""
    s = dest / "src"
    if s.exists():
        shutil.rmtree(s)
    shutil.copytree(src_root / "core_c" / "src", s)
    if m is not None:
        p = s / m["file"]
        text = p.read_text()
        if text.count(m["old"]) != 1:
            raise CampaignError(f"{m['id']}: snippet not exactly once in {m['file']}")
        p.write_text(text.replace(m["old"], m["new"]))
    return s


def snapshot_python(src_root: Path, dest: Path) -> Path:
    """A copy of the Python sources as the wheel lays them out (pyllmc, with reference/ as
    pyllmc.reference, and the header where a source checkout has it), so that every mutant of
    one campaign runs the same harness even while the checkout is being edited. Returns the
    directory to put on PYTHONPATH."""
    if dest.exists():
        shutil.rmtree(dest)
    ignore = shutil.ignore_patterns("__pycache__", "*.so", "*.so.*", "*.dylib", "*.dll")
    pkg = dest / "bindings" / "pyllmc"
    shutil.copytree(src_root / "bindings" / "pyllmc", pkg, ignore=ignore)
    shutil.copytree(src_root / "reference", pkg / "reference", ignore=ignore)
    (dest / "core_c" / "include").mkdir(parents=True)
    shutil.copy2(src_root / "core_c" / "include" / "llmc.h", dest / "core_c" / "include" / "llmc.h")
    return dest / "bindings"


#: The worker's entry: the snapshot on PYTHONPATH must be the pyllmc that runs, also where an
#: editable install's import hook (a sys.meta_path finder) would redirect to the checkout.
_BOOT = """
import os, sys
snap = os.environ.get("PYLLMC_MUTATION_PYTHONPATH")
if snap:
    sys.meta_path[:] = [f for f in sys.meta_path if not type(f).__module__.startswith("_editable")]
import pyllmc
if snap and not os.path.abspath(pyllmc.__file__).startswith(os.path.abspath(snap)):
    raise SystemExit(f"mutation worker: imported {pyllmc.__file__}, not the snapshot in {snap}")
from pyllmc.mutation.worker import main
raise SystemExit(main(sys.argv[1:]))
"""


def run_worker(lib: Path, configs: Sequence[str], seeds: Sequence[int], out: Path, log: Path,
               env_extra: Optional[Dict[str, str]] = None, pythonpath: Optional[Path] = None) -> Dict[str, Any]:
    env = dict(os.environ)
    env["PYLLMC_LIBRARY"] = str(lib)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), os.environ.get("PYTHONPATH")]))
        env["PYLLMC_MUTATION_PYTHONPATH"] = str(pythonpath)
    env.setdefault("OMP_WAIT_POLICY", "passive")
    env.update(env_extra or {})
    t0 = time.perf_counter()
    rc = _run([sys.executable, "-c", _BOOT, "--configs", ",".join(configs),
               "--seeds", ",".join(str(s) for s in seeds), "--out", str(out)], log, RUN_TIMEOUT_S, env=env)
    secs = time.perf_counter() - t0
    if rc == 0 and out.is_file():
        d = json.loads(out.read_text())
        d["seconds"] = secs
        return d
    # a crash (signal, exception) or a timeout: the harness saw the mutant, nothing localised
    what = "timeout" if rc == -9 else f"exit {rc}"
    return {"crashed": what, "seconds": secs,
            "results": [{"config": c, "passed": False, "error": what, "first_divergence": None} for c in configs]}


#: The issue-12 mutants also run on this config: one query block (T = 64), the longest
#: sequence the parity suites used before, for the report's before/after.
BEFORE_CONFIG = "t64_1t"


def classify(m: Dict[str, Any], run: Dict[str, Any]) -> Dict[str, Any]:
    extra = [r for r in run["results"] if r["config"] == BEFORE_CONFIG]
    results = [r for r in run["results"] if r["config"] != BEFORE_CONFIG]
    failed = [r for r in results if not r["passed"]]
    out = {"id": m["id"], "file": m["file"], "what": m["what"], "kernel": m["kernel"], "expect": m["expect"],
           "note": m["note"], "seconds": round(run.get("seconds", 0.0), 1), "crashed": run.get("crashed"),
           "configs": [{"config": r["config"], "passed": r["passed"],
                        "first_divergence": r.get("first_divergence"), "error": r.get("error"),
                        "before": r.get("before"), "max_tol_ratio": r.get("max_tol_ratio")} for r in results]}
    if extra:
        out["single_block"] = [{"config": r["config"], "passed": r["passed"], "first_divergence": r.get("first_divergence"),
                                "error": r.get("error"), "before": r.get("before")} for r in extra]
    if m["what"] == "equivalent":
        out["false_alarm"] = bool(failed)
        out["false_alarm_before"] = any(not (r.get("before") or {}).get("passed", False) for r in results)
    else:
        out["caught"] = bool(failed)
        out["localised"] = bool(failed) and all(
            r.get("first_divergence") is not None and r["first_divergence"]["kind"] in m["expect"] for r in failed)
        # a crash or a time-out is seen under any policy
        out["caught_before"] = any(r.get("error") or not (r.get("before") or {}).get("passed", True)
                                   for r in results)
    return out


def run_campaign(src_root: Path, work: Path, *, ids: Optional[Sequence[str]] = None, clean_seeds: Sequence[int] = (0, 1, 2),
                 configs: Sequence[str] = MUTANT_CONFIGS, clean_configs: Sequence[str] = CLEAN_CONFIGS,
                 say: Callable[[str], None] = print) -> Dict[str, Any]:
    """The whole campaign: the unmutated build on clean_configs x clean_seeds, then each
    selected mutant on configs. Returns the report's data (report.py writes it)."""
    problems = check_snippets(src_root / "core_c" / "src")
    if problems:
        raise CampaignError("the catalogue does not fit the sources:\n  " + "\n  ".join(problems))
    chosen = [m for m in MUTANTS if ids is None or m["id"] in set(ids)]
    if ids is not None:
        unknown = set(ids) - {m["id"] for m in MUTANTS}
        if unknown:
            raise CampaignError(f"unknown mutant ids: {', '.join(sorted(unknown))}")
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    py = snapshot_python(src_root, work / "python")

    # the unmutated sources: the false-alarm baseline
    d = work / "clean"
    d.mkdir(exist_ok=True)
    lib = build(src_root, prepare_sources(src_root, d, None), d / "build", d / "log.txt")
    clean = []
    # every clean config and seed on the GEMM micro-kernel the machine picks, and the mutants'
    # configs on the two lesser ones too (the ISA-forced mutants run on those)
    for isa, cfgs, seeds in ((None, clean_configs, clean_seeds), ("avx2", configs, clean_seeds[:1]),
                             ("generic", configs, clean_seeds[:1])):
        env = {"LLMC_GEMM_ISA": isa} if isa else {}
        run = run_worker(lib, cfgs, seeds, d / "result.json", d / "log.txt", env, py)
        for r in run["results"]:
            r["gemm_isa"] = isa or "native"
        clean += run["results"]
    n_bad = sum(1 for r in clean if not r["passed"])
    say(f"clean build: {len(clean)} runs ({len(clean_configs)} configs x {len(clean_seeds)} seeds), {n_bad} failed")

    rows = []
    for i, m in enumerate(chosen, 1):
        d = work / m["id"]
        d.mkdir(exist_ok=True)
        (d / "log.txt").write_text("")
        try:
            lib = build(src_root, prepare_sources(src_root, d, m), d / "build", d / "log.txt")
        except CampaignError as e:
            # a mutant that does not compile proves nothing about the harness: reported apart
            rows.append({"id": m["id"], "file": m["file"], "what": m["what"], "kernel": m["kernel"],
                         "expect": m["expect"], "note": m["note"], "build_failed": str(e)})
            say(f"[{i}/{len(chosen)}] {m['id']}: BUILD FAILED ({e})")
            continue
        cfgs = list(configs) + ([BEFORE_CONFIG] if m["id"] in ISSUE_MUTANTS else [])
        run = run_worker(lib, cfgs, [0], d / "result.json", d / "log.txt", m["env"], py)
        row = classify(m, run)
        rows.append(row)
        if m["what"] == "equivalent":
            verdict = "FALSE ALARM" if row["false_alarm"] else "passes (equivalent)"
        else:
            verdict = ("caught" if row["caught"] else "MISSED") + (", localised" if row["localised"] else
                                                                  (", NOT localised" if row["caught"] else ""))
        firsts = ", ".join(f"{c['config']}: {(c['first_divergence'] or {}).get('name', c['error'] or '-')}"
                           for c in row["configs"])
        say(f"[{i}/{len(chosen)}] {m['id']}: {verdict} ({firsts}) {row['seconds']:.0f}s")
        shutil.rmtree(d / "build", ignore_errors=True)
        shutil.rmtree(d / "src", ignore_errors=True)
    return {"configs": list(configs), "clean_configs": list(clean_configs), "clean_seeds": list(clean_seeds),
            "clean": clean, "mutants": rows, "seconds": round(time.perf_counter() - t_start, 1)}
