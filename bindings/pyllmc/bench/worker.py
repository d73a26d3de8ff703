"""Worker process: measures one implementation in a process of its own.

    python -m pyllmc.bench.worker run   JOB_JSON   one job: set up, warm up, time repeats
    python -m pyllmc.bench.worker serve JOB_JSON   set up and warm up, then one step per
                                                   `step` line on stdin (interleaved runs)
    python -m pyllmc.bench.worker peak  JSON       the torch.mm GEMM probe
    python -m pyllmc.bench.worker ops   JSON       torch op timings (kernels.py)

The result is one line `PYLLMC_BENCH {json}` on stdout. A process of its own per
implementation means its peak RSS (VmHWM, the high-water mark of this process's own memory,
which unlike ru_maxrss does not inherit the parent's peak across fork/exec) is that
implementation's alone, and torch is never loaded where the C core is measured.
"""

from __future__ import annotations

import gc
import json
import sys
import time
import traceback
from typing import Any, Dict

MARK = "PYLLMC_BENCH "


def rss_mb() -> Dict[str, float]:
    """Current and peak resident set size of this process in MiB (Linux /proc; ru_maxrss elsewhere)."""
    out: Dict[str, float] = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(("VmHWM:", "VmRSS:")):
                    key = "peak" if line.startswith("VmHWM") else "current"
                    out[key] = int(line.split()[1]) / 1024.0
    except OSError:  # pragma: no cover - not Linux
        import resource

        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out["peak"] = out["current"] = kb / (1024.0 * 1024.0 if sys.platform == "darwin" else 1024.0)
    return out


def emit(obj: Dict[str, Any]) -> None:
    sys.stdout.write(MARK + json.dumps(obj) + "\n")
    sys.stdout.flush()


def _setup(job_json: str):
    from .impls import make_runner
    from .spec import Job

    job = Job.from_json(job_json)
    base = rss_mb()["current"]
    t0 = time.perf_counter()
    runner = make_runner(job)
    setup_s = time.perf_counter() - t0
    return job, runner, base, setup_s


def cmd_run(job_json: str) -> Dict[str, Any]:
    job, runner, base, setup_s = _setup(job_json)
    steps, losses = [], []
    warm_s = []
    gc.collect()
    gc.disable()
    try:
        for t in range(1, job.warmup + job.repeats + 1):
            phases, loss = runner.step(t)
            losses.append(loss)
            if t <= job.warmup:
                warm_s.append(sum(phases.values()))
            else:
                steps.append(phases)
    finally:
        gc.enable()
    mem = rss_mb()
    out = {
        "impl": job.impl, "steps": steps, "warmup_s": warm_s, "losses": losses, "setup_s": setup_s,
        "peak_rss_mb": mem["peak"], "rss_base_mb": base, "info": getattr(runner, "info", {}),
    }  # fmt: skip
    runner.close()
    return out


def cmd_serve(job_json: str) -> None:
    """Interleaved protocol: after setup and warm-up print `ready`, then for every line
    `step` on stdin run one step and print its phases; `quit` (or EOF) ends."""
    job, runner, base, setup_s = _setup(job_json)
    t = 0
    for _ in range(job.warmup):
        t += 1
        runner.step(t)
    emit({"ready": True, "setup_s": setup_s, "rss_base_mb": base, "info": getattr(runner, "info", {})})
    gc.collect()
    gc.disable()
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "quit":
            break
        if cmd != "step":
            emit({"error": f"unknown command {cmd!r}"})
            continue
        t += 1
        phases, loss = runner.step(t)
        emit({"phases": phases, "loss": loss, "peak_rss_mb": rss_mb()["peak"]})
    runner.close()


def cmd_peak(arg: str) -> Dict[str, Any]:
    """Best FLOP/s of torch.mm on square fp32 matrices over `sizes`, `repeats` each."""
    import torch

    a = json.loads(arg)
    torch.set_num_threads(int(a["threads"]))
    best: Dict[str, float] = {}
    for n in a.get("sizes", [1024, 2048]):
        x = torch.randn(n, n)
        y = torch.randn(n, n)
        z = torch.empty(n, n)
        torch.mm(x, y, out=z)  # warm-up
        ts = []
        for _ in range(int(a.get("repeats", 5))):
            t0 = time.perf_counter()
            torch.mm(x, y, out=z)
            ts.append(time.perf_counter() - t0)
        best[str(n)] = 2.0 * n**3 / min(ts) / 1e9
    return {"gflops": max(best.values()), "by_size": best, "threads": torch.get_num_threads()}


def cmd_ops(arg: str) -> Dict[str, Any]:
    from .kernels import torch_op_timings

    return torch_op_timings(json.loads(arg))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] not in ("run", "serve", "peak", "ops"):
        sys.stderr.write("usage: python -m pyllmc.bench.worker run|serve|peak|ops JSON\n")
        return 2
    cmd, arg = argv
    try:
        if cmd == "serve":
            cmd_serve(arg)
            return 0
        res = {"run": cmd_run, "peak": cmd_peak, "ops": cmd_ops}[cmd](arg)
    except Exception as e:  # reported to the parent, which records the reason
        traceback.print_exc(file=sys.stderr)
        emit({"error": f"{type(e).__name__}: {e}"})
        return 1
    emit(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
