"""A bounded fuzz campaign over pyllmc's readers (what `nox -s fuzz` runs).

    python fuzz/run_campaign.py [--c-seconds 60] [--py-seconds 15] [--targets a,b] [--no-atheris]

1. Builds core_c with ASan + UBSan and LLMC_BUILD_FUZZ into build-fuzz/: with clang, the
   libFuzzer harness `fuzz_checkpoint` (coverage-guided); with any compiler, the replay/mutation
   driver `fuzz_checkpoint_replay` (core_c/fuzz/standalone_main.c).
2. Replays every saved regression input (core_c/fuzz/regressions/), then fuzzes the C checkpoint
   loader for --c-seconds from the seed corpus core_c/fuzz/corpus/checkpoint/ (libFuzzer when
   built, else the mutation driver).
3. Fuzzes each Python reader (fuzz/fuzz_loaders.py) for --py-seconds: atheris when installed,
   else its built-in mutator.
Prints executions and crashes per target, writes build-fuzz/summary.json, and exits 1 if
anything crashed (inputs under build-fuzz/crashes/). A crash becomes a regression: save the
input under core_c/fuzz/regressions/ (C loader) or fuzz/regressions/<target>/ (Python), where
parity_tests/test_fuzz_regressions.py and this script replay it from then on.
Growing working corpora stay in build-fuzz/corpus/ (the checked-in seeds are not modified).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
FUZZ_C = ROOT / "core_c" / "fuzz"
PY_TARGETS = ["shard", "tokenizer", "optimizer", "state_json", "checkpoint_model", "checkpoint_py", "hf_config"]
_DONE = re.compile(r"Done (\d+) runs")
_STATS = re.compile(r"stat::number_of_executed_units:\s+(\d+)")


def sanitizer_env() -> Dict[str, str]:
    env = dict(os.environ)
    env["UBSAN_OPTIONS"] = f"halt_on_error=1:print_stacktrace=1:suppressions={FUZZ_C / 'ubsan.supp'}"
    # leaks are errors in the pure-C harness; a failed allocation must be handled, not fatal
    env["ASAN_OPTIONS"] = "detect_leaks=1:allocator_may_return_null=1:abort_on_error=0"
    return env


def build(build_dir: Path, cc: Optional[str]) -> Dict[str, Optional[Path]]:
    env = dict(os.environ)
    if cc:
        env["CC"] = cc
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    subprocess.run(["cmake", "-S", str(ROOT / "core_c"), "-B", str(build_dir), *gen, "-DLLMC_SANITIZE=ON",
                    "-DLLMC_BUILD_FUZZ=ON", "-DLLMC_CUDA=OFF", "-DLLMC_KERNEL_SHIM=OFF",
                    "-DCMAKE_BUILD_TYPE=RelWithDebInfo"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", str(build_dir), "-j"], check=True, env=env, stdout=subprocess.DEVNULL)
    libfuzzer = build_dir / "fuzz_checkpoint"
    return {"libfuzzer": libfuzzer if libfuzzer.exists() else None,
            "replay": build_dir / "fuzz_checkpoint_replay"}


def run(name: str, cmd: List[str], env: Dict[str, str], timeout: float, log: Path) -> Dict[str, object]:
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           errors="replace", timeout=timeout)
        out, rc = p.stdout, p.returncode
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        out += f"\n== timed out after {timeout:.0f} s (a hang is a finding too)\n"
        rc = -999
    log.write_text(out)
    # libFuzzer/atheris print final stats (also after a crash, when "Done" is missing)
    stats = _STATS.findall(out)
    runs = sum(int(m) for m in stats) if stats else sum(int(m) for m in _DONE.findall(out))
    crashed = rc != 0
    status = "CRASH" if crashed else "ok"
    print(f"  {name:28s} {runs:>10d} runs  {time.monotonic() - t0:6.1f} s  {status}", flush=True)
    if crashed:
        print("\n".join(out.splitlines()[-40:]), flush=True)
    return {"target": name, "runs": runs, "crashed": crashed, "rc": rc, "log": str(log)}


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--c-seconds", type=float, default=60.0, help="C checkpoint-loader campaign length")
    ap.add_argument("--py-seconds", type=float, default=15.0, help="length of each Python target's campaign")
    ap.add_argument("--targets", default=",".join(PY_TARGETS), help="Python targets (comma-separated; '' for none)")
    ap.add_argument("--build-dir", type=Path, default=ROOT / "build-fuzz")
    ap.add_argument("--cc", default=None, help="C compiler (default: clang when found, for libFuzzer)")
    ap.add_argument("--no-atheris", action="store_true", help="Python targets use the built-in mutator")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)

    bd = a.build_dir.resolve()
    cc = a.cc or (shutil.which("clang") and "clang") or os.environ.get("CC")
    print(f"== building the harnesses into {bd} (CC={cc or 'default'})", flush=True)
    bins = build(bd, cc)
    crashes = bd / "crashes"
    logs = bd / "logs"
    for d in (crashes, logs):
        d.mkdir(parents=True, exist_ok=True)
    env = sanitizer_env()
    active = [ln for ln in (FUZZ_C / "ubsan.supp").read_text().splitlines() if ln and not ln.startswith("#")]
    if active:
        print(f"   note: UBSan suppressions active (known, reported findings): {', '.join(active)}")
    results = []

    print("== C checkpoint loader (ASan + UBSan)", flush=True)
    regress = FUZZ_C / "regressions"
    if regress.is_dir() and any(regress.iterdir()):
        results.append(run("c:regressions", [str(bins["replay"]), "-runs=0", str(regress)], env, 600,
                           logs / "c_regressions.log"))
    work = bd / "corpus" / "checkpoint"
    work.mkdir(parents=True, exist_ok=True)
    seeds = FUZZ_C / "corpus" / "checkpoint"
    if bins["libfuzzer"]:
        cmd = [str(bins["libfuzzer"]), f"-max_total_time={int(a.c_seconds)}", "-max_len=16384",
               "-use_value_profile=1", "-print_final_stats=1", f"-seed={a.seed}", "-timeout=20",
               f"-artifact_prefix={crashes}/c-", str(work), str(seeds)]
        results.append(run("c:checkpoint (libFuzzer)", cmd, env, a.c_seconds + 300, logs / "c_libfuzzer.log"))
    else:
        cmd = [str(bins["replay"]), "-runs=100000000", f"-max_total_time={a.c_seconds}", f"-seed={a.seed}",
               "-max_len=16384", str(seeds)]
        results.append(run("c:checkpoint (mutator)", cmd, env, a.c_seconds + 300, logs / "c_mutator.log"))

    targets = [t for t in a.targets.split(",") if t]
    if targets:
        print("== Python readers" + (" (built-in mutator)" if a.no_atheris else ""), flush=True)
        pyenv = dict(os.environ)
        for t in targets:
            reg = ROOT / "fuzz" / "regressions" / t
            if reg.is_dir() and any(reg.iterdir()):
                results.append(run(f"py:{t}:regressions", [sys.executable, str(ROOT / "fuzz" / "fuzz_loaders.py"), t,
                                   "--replay", *map(str, sorted(reg.iterdir()))], pyenv, 600,
                                   logs / f"py_{t}_regressions.log"))
            cmd = [sys.executable, str(ROOT / "fuzz" / "fuzz_loaders.py"), t, "--seconds", str(a.py_seconds),
                   "--seed", str(a.seed), "--artifacts", str(crashes / t), "--work", str(bd / "corpus" / t)]
            if a.no_atheris:
                cmd.append("--no-atheris")
            results.append(run(f"py:{t}", cmd, pyenv, a.py_seconds + 300, logs / f"py_{t}.log"))

    total = sum(int(r["runs"]) for r in results)
    bad = [r["target"] for r in results if r["crashed"]]
    (bd / "summary.json").write_text(json.dumps({"total_runs": total, "crashed": bad, "results": results}, indent=1))
    print(f"== fuzz campaign: {total} executions in all, {len(bad)} crashing target(s)"
          + (f": {', '.join(map(str, bad))} (inputs in {crashes})" if bad else ""), flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
