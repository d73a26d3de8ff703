"""The wasm core (device="wasm") against the native core at ONE thread: ms per training step,
and where the wasm core's step time goes (the share of the GEMM micro-kernel).

    python benchmarks/wasm_core_bench.py [--configs d6,d2] [--rounds 8] [--out benchmarks/results/wasm_core]
                                         [--profile]     # also a perf profile of the wasm steps

Step: forward with targets, backward (overwriting the gradients), AdamW, at B=4 T=64. The
implementations run in ONE process, interleaved round by round (native, native with its AVX2
kernel, native with the portable kernel, wasm; one step each per round, after a warm-up
round), so a slower or faster phase of a shared machine hits all of them alike; the ratio is
taken per round and its median reported with the min and median of each. The native
variants are chosen with LLMC_GEMM_ISA, which the core reads at every GEMM.
--profile: perf (if installed) samples a separate worker during its wasm steps only (attached
after model creation), with wasmtime's perfmap profiler naming the module's functions;
reported as the share of samples per function (llmc_ukernel_wasm is the SIMD128 kernel,
llmc_sgemm holds the inlined packing).
Writes OUT/wasm_core.json and OUT/README.md's table (results.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

IMPLS = [("native", "cpu", None), ("native-avx2", "cpu", "avx2"), ("native-generic", "cpu", "generic"),
         ("wasm", "wasm", None)]


def _step(m, x, y, t):
    m.forward(x, y)
    m.backward(accumulate=False)
    m.adamw_step(1e-4, t=t)


def bench_config(size: str, rounds: int, B: int = 4, T: int = 64) -> Dict:
    from pyllmc import GPTConfig, Model

    cfg = GPTConfig.from_size(size)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, cfg.vocab_size, (B, T)), rng.integers(0, cfg.vocab_size, (B, T))
    models = {name: Model.from_config(cfg, max_batch=B, max_seq=T, threads=1, seed=1, device=dev)
              for name, dev, _ in IMPLS}
    times: Dict[str, List[float]] = {name: [] for name, _, _ in IMPLS}
    saved = os.environ.get("LLMC_GEMM_ISA")
    try:
        for r in range(rounds + 1):  # round 0 is the warm-up
            for name, _, isa in IMPLS:
                if isa:
                    os.environ["LLMC_GEMM_ISA"] = isa
                else:
                    os.environ.pop("LLMC_GEMM_ISA", None)
                t0 = time.perf_counter()
                _step(models[name], x, y, r + 1)
                if r:
                    times[name].append(time.perf_counter() - t0)
    finally:
        if saved is None:
            os.environ.pop("LLMC_GEMM_ISA", None)
        else:
            os.environ["LLMC_GEMM_ISA"] = saved
    out = {"config": size, "B": B, "T": T, "rounds": rounds, "impls": {}}
    for name in times:
        a = np.array(times[name]) * 1e3
        out["impls"][name] = {"ms_min": float(a.min()), "ms_median": float(np.median(a))}
    w = np.array(times["wasm"])
    for name, _, _ in IMPLS[:-1]:
        out[f"ratio_wasm_vs_{name}_median"] = float(np.median(w / np.array(times[name])))
    for m in models.values():
        m.close()
    return out


def _profile_worker(size: str, steps: int, perf_out: str) -> None:
    import pyllmc.wasm_core.runtime as rt

    base = rt.engine_config

    def config(wasmtime):
        c = base(wasmtime)
        c.profiler = "perfmap"  # /tmp/perf-<pid>.map names the module's functions for perf
        return c

    rt.engine_config = config
    from pyllmc import Model

    m = Model.from_config(size, max_batch=4, max_seq=64, threads=1, seed=1, device="wasm")
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 50257, (4, 64)), rng.integers(0, 50257, (4, 64))
    _step(m, x, y, 1)  # compiled, memory grown: what follows is steps only
    perf = subprocess.Popen(["perf", "record", "-q", "-F", "499", "-p", str(os.getpid()), "-o", perf_out],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    for t in range(2, steps + 2):
        _step(m, x, y, t)
    perf.send_signal(signal.SIGINT)
    perf.wait(timeout=60)


def profile(size: str, steps: int) -> Dict:
    if not shutil.which("perf"):
        return {"error": "perf is not installed"}
    with tempfile.TemporaryDirectory() as d:
        data = os.path.join(d, "perf.data")
        subprocess.run([sys.executable, __file__, "--_profile-worker", size, str(steps), data], check=True, timeout=1200)
        rep = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "sym", "--stdio"],
                             capture_output=True, text=True, timeout=300).stdout
    shares = {}
    for line in rep.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0].endswith("%") and parts[1] in ("[.]", "[k]"):
            shares[parts[2]] = shares.get(parts[2], 0.0) + float(parts[0][:-1])
    top = dict(sorted(shares.items(), key=lambda kv: -kv[1])[:12])
    gemm = sum(shares.get(k, 0.0) for k in ("llmc_ukernel_wasm", "llmc_sgemm"))
    return {"config": size, "steps": steps, "percent_of_samples": top,
            "ukernel_percent": shares.get("llmc_ukernel_wasm", 0.0), "gemm_percent": gemm}


def markdown(results: List[Dict], prof: Dict) -> str:
    lines = ["| config | native ms (min / median) | native AVX2 | native portable | wasm | wasm / native | "
             "wasm / native AVX2 | wasm / native portable |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        im = r["impls"]

        def cell(n: str, im: Dict = im) -> str:
            return f"{im[n]['ms_min']:.0f} / {im[n]['ms_median']:.0f}"

        lines.append(f"| {r['config']} B{r['B']} T{r['T']} | {cell('native')} | {cell('native-avx2')} | "
                     f"{cell('native-generic')} | {cell('wasm')} | {r['ratio_wasm_vs_native_median']:.2f}x | "
                     f"{r['ratio_wasm_vs_native-avx2_median']:.2f}x | {r['ratio_wasm_vs_native-generic_median']:.2f}x |")
    if prof and "percent_of_samples" in prof:
        lines += ["", f"perf profile of {prof['steps']} wasm steps at {prof['config']} B4 T64 (share of samples):", ""]
        lines += [f"- {k}: {v:.1f}%" for k, v in prof["percent_of_samples"].items()]
        lines += ["", f"GEMM (micro-kernel + packing in llmc_sgemm): {prof['gemm_percent']:.1f}%; "
                      f"the micro-kernel alone: {prof['ukernel_percent']:.1f}%"]
    return "\n".join(lines) + "\n"


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--_profile-worker":
        _profile_worker(sys.argv[2], int(sys.argv[3]), sys.argv[4])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default="d6,d2")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "wasm_core"))
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args()
    from pyllmc.wasm_core.runtime import Instance

    results = [bench_config(c.strip(), a.rounds) for c in a.configs.split(",") if c.strip()]
    prof = profile(a.configs.split(",")[0].strip(), 4) if a.profile else {}
    inst = Instance()
    doc = {"machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": sys.version.split()[0],
                       "shared": "yes: other engineers' jobs ran on the same 2 cores"},
           "wasm_core": str(inst.path), "relaxed_simd": bytes([0xfd, 0x85, 0x02]) in Path(inst.path).read_bytes(),
           "results": results, "profile": prof}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "wasm_core.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out / "results.md").write_text(markdown(results, prof))
    print(markdown(results, prof))
    return 0


if __name__ == "__main__":
    sys.exit(main())
