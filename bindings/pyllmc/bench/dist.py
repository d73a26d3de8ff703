"""Data-parallel benchmark: ``python -m pyllmc.bench.dist [--out DIR] [--model d12]``.

At d12 B=4 T=64 (defaults), for grad_accum 1 and 4: 1 process x 2 threads against 2 ranks x
1 thread (gloo over 127.0.0.1, launched as `pyllmc train --nproc` does), plain data parallel
and ZeRO-1. Reports global tokens/s and their ratio, the gradient/parameter collective time
per step, and each rank's peak RSS (getrusage). Writes DIR/bench_dist.json and DIR/report.md.
Steps after the first ``--warmup`` are timed; min and median are given. Run it alone on the
machine (flock /tmp/pyllmc-heavy.lock ...): the runs use every core and ~5 GB at d12.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List


def _worker(spec: Dict[str, Any]) -> None:
    from pyllmc import Trainer, TrainerConfig

    res_path = spec.pop("result")
    update = spec.pop("plain_dp_update", None)
    if update is not None:  # how plain data parallel updates (pyllmc.distributed.PLAIN_DP_UPDATE)
        from pyllmc import distributed

        distributed.PLAIN_DP_UPDATE = update
    comm: List[float] = []
    cfg = TrainerConfig(**spec)
    t = Trainer(cfg)
    last = [0.0]

    def on_step(status):
        if t._dp is not None:
            comm.append(t._dp.comm_s - last[0])
            last[0] = t._dp.comm_s
    t.add_callback("step_end", on_step)
    with t:
        h = t.train()
        rank = t._dp.rank if t._dp is not None else 0
        world = t.world_size
    doc = {"rank": rank, "world": world, "ms": [r["ms"] for r in h.rows], "comm_ms": [c * 1000 for c in comm],
           "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    Path(res_path.format(rank=rank)).write_text(json.dumps(doc))


def _run(name: str, spec: Dict[str, Any], nproc: int, tmp: Path) -> Dict[str, Any]:
    spec = dict(spec, result=str(tmp / (name + "_rank{rank}.json")))
    if nproc == 1:
        cmd = [sys.executable, "-m", "pyllmc.bench.dist", "--worker", json.dumps(spec)]
    else:
        code = ("import sys; from pyllmc.launch import launch; "
                f"sys.exit(launch([sys.executable, '-m', 'pyllmc.bench.dist', '--worker', sys.argv[1]], {nproc}))")
        cmd = [sys.executable, "-c", code, json.dumps(spec)]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{name} failed:\n{p.stderr[-3000:]}")
    ranks = [json.loads((tmp / (name + f"_rank{r}.json")).read_text()) for r in range(nproc)]
    return {"name": name, "nproc": nproc, "ranks": ranks, "wall_s": time.perf_counter() - t0}


def main(argv: Any = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pyllmc.bench.dist", description=__doc__.splitlines()[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--out", default="out/bench_dist")
    ap.add_argument("--model", default="d12")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--steps", type=int, default=6, help="optimizer steps per run (accum 1)")
    ap.add_argument("--steps-accum", type=int, default=4, help="optimizer steps per run (accum 4)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3, help="A/B pairs per grad_accum (0: only the memory runs)")
    ap.add_argument("--accum", default="1,4", help="grad_accum values to compare (default 1,4)")
    ap.add_argument("--plain-update", default="split,all_reduce",
                    help="plain data-parallel update(s) to time, each against the same 1-process run: split "
                         "(reduce-scatter, AdamW on the rank's slice, all-gather; the default) and/or all_reduce")
    ap.add_argument("--rss-world", type=int, default=2, help="also measure peak RSS with this many ranks")
    a = ap.parse_args(argv)
    if a.worker:
        _worker(json.loads(a.worker))
        return 0
    import numpy as np

    from pyllmc.data import write_shard

    tmp = Path(tempfile.mkdtemp(prefix="pyllmc_bench_dist_"))
    rng = np.random.default_rng(0)
    write_shard(tmp / "train.bin", rng.integers(0, 50257, size=400_000))
    base = dict(model=a.model, data=str(tmp / "train.bin"), batch_size=a.batch, seq_len=a.seq, lr=1e-4,
                progress="none", plot=False, vocab_size=50257, max_seq_len=1024, dist_check_every=0)
    results = []

    def measure(name, spec, nproc, K):
        load = os.getloadavg()[0]
        r = _run(name, spec, nproc, tmp)
        r["load_before"], r["load_after"] = load, os.getloadavg()[0]
        ms = r["ranks"][0]["ms"][a.warmup:]
        r.update(K=K, ms_min=min(ms), ms_median=statistics.median(ms),
                 tokens_per_s=a.batch * a.seq * K * nproc / (statistics.median(ms) / 1000.0),
                 comm_ms_median=statistics.median(r["ranks"][0]["comm_ms"][a.warmup:]) if nproc > 1 else 0.0,
                 peak_rss_mib=[x["peak_rss_mib"] for x in r["ranks"]])
        print(f"{name}: {r['ms_median']:.0f} ms/step median ({r['ms_min']:.0f} min), {r['tokens_per_s']:.0f} tok/s, "
              f"comm {r['comm_ms_median']:.0f} ms/step, peak RSS {', '.join(f'{x:.0f}' for x in r['peak_rss_mib'])} MiB, "
              f"load average {r['load_before']:.1f} -> {r['load_after']:.1f}",
              flush=True)
        results.append(r)
        return r

    # A/B in turn (1 process, then 2 ranks), the ratio pair by pair: the machine's speed drifts
    summary: Dict[str, Any] = {}
    accums = [int(x) for x in a.accum.split(",")]
    updates = [u for u in a.plain_update.split(",") if u]
    for K, steps in [(k, a.steps if k == 1 else a.steps_accum) for k in accums] if a.repeats > 0 else ():
        ratios: Dict[str, List[float]] = {u: [] for u in updates}
        comm: Dict[str, List[float]] = {u: [] for u in updates}
        for i in range(a.repeats):
            one = measure(f"1proc_2thr_K{K}#{i}", dict(base, grad_accum=K, steps=steps, threads=2), 1, K)
            for u in updates:
                two = measure(f"2rank_1thr_K{K}_{u}#{i}", dict(base, grad_accum=K, steps=steps, threads=1,
                                                             plain_dp_update=u), 2, K)
                ratios[u].append(two["tokens_per_s"] / one["tokens_per_s"])
                comm[u].append(two["comm_ms_median"])
        for u in updates:
            tag = "" if u == "split" else f"_{u}"
            summary[f"throughput_ratio_K{K}{tag}"] = statistics.median(ratios[u])
            summary[f"throughput_ratio_K{K}{tag}_pairs"] = ratios[u]
            summary[f"comm_ms_K{K}{tag}"] = statistics.median(comm[u])
    rss = {}
    for world in sorted({a.rss_world} if a.repeats == 0 else {2, a.rss_world}):
        for zero in (0, 1):
            r = measure(f"{world}rank_1thr_K1_zero{zero}_rss", dict(base, grad_accum=1, steps=2, threads=1, zero=zero),
                        world, 1)
            rss[(world, zero)] = max(r["peak_rss_mib"])
        summary[f"zero1_rss_ratio_{world}ranks"] = rss[(world, 1)] / rss[(world, 0)]
    summary["zero1_rss_ratio"] = summary.get("zero1_rss_ratio_2ranks")
    doc = {"model": a.model, "B": a.batch, "T": a.seq, "cpus": os.cpu_count(), "runs": results, "summary": summary,
           "targets": {"throughput_ratio_K1": 0.90, "throughput_ratio_K4": 0.95, "zero1_rss_ratio": 0.75}}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_dist.json").write_text(json.dumps(doc, indent=1))
    lines = [f"# Data-parallel benchmark: {a.model} B={a.batch} T={a.seq}, {os.cpu_count()} CPUs", "",
             "2 ranks x 1 thread (gloo, 127.0.0.1) against 1 process x 2 threads; global tokens/s from the median "
             f"step after {a.warmup} warm-up step(s). The machine was shared with other jobs.", "",
             "| run | K | ms/step median | ms/step min | tokens/s (global) | collectives ms/step | peak RSS MiB per rank "
             "| load average before, after |",
             "|---|---:|---:|---:|---:|---:|---|---|"]
    for r in results:
        lines.append(f"| {r['name']} | {r['K']} | {r['ms_median']:.0f} | {r['ms_min']:.0f} | {r['tokens_per_s']:.0f} | "
                     f"{r['comm_ms_median']:.0f} | {', '.join(f'{x:.0f}' for x in r['peak_rss_mib'])} | "
                     f"{r['load_before']:.1f}, {r['load_after']:.1f} |")
    table_at = len(lines)
    lines += ["", "| figure | measured (median of pairs) | pairs | target |", "|---|---:|---|---:|"]
    for K, tgt in [(k, ">= 0.90" if k == 1 else ">= 0.95") for k in accums] if a.repeats > 0 else ():
        for u in updates:
            tag = "" if u == "split" else f"_{u}"
            pairs = ", ".join(f"{x:.3f}" for x in summary[f"throughput_ratio_K{K}{tag}_pairs"])
            lines.append(f"| throughput ratio, grad_accum {K}, plain update {u} | "
                         f"{summary[f'throughput_ratio_K{K}{tag}']:.3f} | {pairs} | {tgt} |")
    for world in sorted({a.rss_world} if a.repeats == 0 else {2, a.rss_world}):
        lines.append(f"| ZeRO-1 / plain peak RSS per rank, {world} ranks | {summary[f'zero1_rss_ratio_{world}ranks']:.3f} "
                     f"| | <= 0.75 |")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[table_at:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
