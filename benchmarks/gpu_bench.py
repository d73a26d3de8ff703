"""GPU training-step benchmark: pyllmc's CUDA backend against PyTorch eager and torch.compile.

One call on a GPU machine runs the whole grid and records it:

    python benchmarks/gpu_bench.py                      # GPT-2 124M (d12), T=1024, B=16,64,32,48
    python benchmarks/gpu_bench.py --batches 16 --steps 5 --impls pyllmc-bf16,torch-compile-bf16
    python benchmarks/gpu_bench.py --deadline-s 300     # start no configuration after 300 s
    python benchmarks/gpu_bench.py --plan               # print the grid and exit (no GPU needed)

Each (implementation, B) runs in a fresh subprocess (so an out-of-memory configuration is
recorded as such and cannot disturb the next one) and times full optimizer steps on random
tokens: forward, backward, gradient clipping at 1.0, AdamW. Implementations:

  pyllmc-bf16         the C core on CUDA, bf16 GEMM operands, fp32 master weights
  pyllmc-fp32         the C core on CUDA, fp32 with TF32 off (the parity configuration)
  torch-eager-bf16    a compact GPT-2 in PyTorch (SDPA attention, fused AdamW), autocast bf16
  torch-compile-bf16  the same model under torch.compile

Results: benchmarks/results/gpu/gpu_bench-<gpu>-<time>.json (the bench.json schema: a
"results" list of {impl, ms_min, ms_median, tokens_per_s, mfu, ...}, plus the exact command,
versions and device) and a Markdown table beside it, both rewritten after every
configuration, so a run cut short keeps what it measured. The batch sizes run in the order
given (the default puts 16 and 64 first); with --deadline-s, configurations that would start
after the deadline are recorded as skipped. MFU = (6 N + 6 L C T) FLOPs per token (llm.c's
estimate, N = parameters) times tokens per second over the GPU's dense bf16 peak (H100/H200
989 TFLOPS, A100 312; --peak-tflops overrides), for every implementation alike.

Written in a session without a GPU: this script has not been run yet.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
IMPLS = ("pyllmc-bf16", "pyllmc-fp32", "torch-eager-bf16", "torch-compile-bf16")
SIZES = {"d12": (12, 768, 12), "d24": (24, 1024, 16), "d36": (36, 1280, 20), "d48": (48, 1600, 25)}
V, VP = 50257, 50304


def peak_flops(name: str, override: Optional[float]) -> Optional[float]:
    if override:
        return override * 1e12
    for key, tf in (("H200", 989.4), ("H100", 989.4), ("A100", 312.0), ("L40S", 362.0), ("A10", 125.0)):
        if key in name:
            return tf * 1e12
    return None


def flops_per_token(L: int, C: int, T: int) -> float:
    n = VP * C + 1024 * C + L * (12 * C * C + 13 * C) + 2 * C  # parameters (padded wte)
    return 6.0 * n + 6.0 * L * C * T


# ------------------------------------------------------------------ the PyTorch baseline


def torch_model(L: int, C: int, NH: int, T: int):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(C), nn.LayerNorm(C)
            self.qkv, self.proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
            self.fc, self.fcproj = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)

        def forward(self, x):
            B, Tn, _ = x.shape
            q, k, v = (t.view(B, Tn, NH, C // NH).transpose(1, 2) for t in self.qkv(self.ln1(x)).split(C, 2))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, Tn, C)
            x = x + self.proj(y)
            return x + self.fcproj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(VP, C), nn.Embedding(T, C)
            self.blocks = nn.ModuleList(Block() for _ in range(L))
            self.lnf = nn.LayerNorm(C)

        def forward(self, idx, targets):
            x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
            for b in self.blocks:
                x = b(x)
            logits = F.linear(self.lnf(x), self.wte.weight)[..., :V]
            return F.cross_entropy(logits.float().reshape(-1, V), targets.reshape(-1))

    return GPT()


# ------------------------------------------------------------------ one configuration


def run_worker(impl: str, size: str, B: int, T: int, steps: int, warmup: int) -> Dict:
    import numpy as np

    L, C, NH = SIZES[size]
    rng = np.random.default_rng(0)
    x = rng.integers(0, V, (B, T), dtype=np.int32)
    y = rng.integers(0, V, (B, T), dtype=np.int32)
    times: List[float] = []
    losses: List[float] = []
    out: Dict = {"impl": impl, "model": size, "batch": B, "seq": T}
    import torch

    if impl.startswith("pyllmc"):
        import pyllmc

        if not pyllmc.cuda_available():
            return {**out, "status": "unavailable", "error": pyllmc.cuda_info()}
        precision = impl.split("-")[1]
        cfg = pyllmc.GPTConfig.from_size(size, max_seq_len=max(T, 1024))
        try:
            m = pyllmc.Model.from_config(cfg, max_batch=B, max_seq=T, device="cuda", precision=precision)
        except pyllmc.OutOfMemoryError as e:
            return {**out, "status": "oom", "error": str(e)}
        free, total = torch.cuda.mem_get_info()
        out["gpu_used_mb"] = (total - free) / 2**20
        with m:
            for i in range(warmup + steps):
                t0 = time.perf_counter()
                loss = m.forward(x, y)
                m.zero_grad()
                m.backward()
                m.clip_grad_norm(1.0)
                m.adamw_step(3e-4, t=i + 1, weight_decay=0.1)
                dt = time.perf_counter() - t0  # every call has synchronised
                if i >= warmup:
                    times.append(dt)
                    losses.append(loss)
    else:
        dev = "cuda"
        torch.manual_seed(0)
        torch.backends.cuda.matmul.allow_tf32 = True
        model = torch_model(L, C, NH, T).to(dev)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1, fused=True)
        fwd = torch.compile(model) if impl == "torch-compile-bf16" else model
        xi = torch.as_tensor(x, dtype=torch.long, device=dev)
        yi = torch.as_tensor(y, dtype=torch.long, device=dev)
        torch.cuda.reset_peak_memory_stats()
        try:
            for i in range(warmup + steps):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                opt.zero_grad(set_to_none=True)
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    loss = fwd(xi, yi)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                torch.cuda.synchronize()
                dt = time.perf_counter() - t0
                if i >= warmup:
                    times.append(dt)
                    losses.append(float(loss))
        except torch.cuda.OutOfMemoryError as e:
            return {**out, "status": "oom", "error": str(e).splitlines()[0]}
        out["gpu_used_mb"] = torch.cuda.max_memory_allocated() / 2**20
    times.sort()
    med = times[len(times) // 2]
    out.update(status="ok", ms_min=1e3 * times[0], ms_median=1e3 * med, tokens_per_s=B * T / med,
               steps=steps, warmup=warmup, final_loss=losses[-1] if losses else None,
               flops_per_token=flops_per_token(L, C, T))
    return out


# ------------------------------------------------------------------ the grid


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="d12", choices=sorted(SIZES))
    ap.add_argument("--batches", default="16,64,32,48", help="batch sizes, run in this order")
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--impls", default=",".join(IMPLS))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu"))
    ap.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak of the GPU, for MFU")
    ap.add_argument("--timeout", type=int, default=1200, help="seconds per configuration")
    ap.add_argument("--deadline-s", type=float, default=None,
                    help="seconds from the start after which no configuration starts (recorded as skipped)")
    ap.add_argument("--plan", action="store_true", help="print the configurations and exit")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:  # one configuration, in this process; one JSON line on stdout
        impl, b = args.worker.split(":")
        res = run_worker(impl, args.model, int(b), args.seq, args.steps, args.warmup)
        print("RESULT " + json.dumps(res))
        return 0

    start = time.time()
    impls = [i.strip() for i in args.impls.split(",") if i.strip()]
    if not impls:
        ap.error("--impls names no implementation")
    for i in impls:
        if i not in IMPLS:
            ap.error(f"unknown implementation {i!r}; expected some of {', '.join(IMPLS)}")
    try:
        batches = [int(b) for b in args.batches.split(",")]
    except ValueError:
        ap.error(f"--batches {args.batches!r} is not a comma-separated list of integers")
    if not batches or min(batches) < 1:
        ap.error("--batches needs positive batch sizes")
    if args.plan:
        for B in batches:
            for impl in impls:
                print(f"{impl} {args.model} B={B} T={args.seq} steps={args.steps} warmup={args.warmup}")
        return 0

    import torch

    if not torch.cuda.is_available():
        print("gpu_bench: PyTorch sees no CUDA device; nothing to measure", file=sys.stderr)
        return 2
    gpu = torch.cuda.get_device_name(0)
    peak = peak_flops(gpu, args.peak_tflops)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    tag = re.sub(r"[^A-Za-z0-9]+", "-", gpu).strip("-")
    results: List[Dict] = []
    for B in batches:
        for impl in impls:
            left = None if args.deadline_s is None else args.deadline_s - (time.time() - start)
            if left is not None and left <= 0:
                results.append({"impl": impl, "batch": B, "seq": args.seq, "status": "skipped",
                                "error": f"--deadline-s {args.deadline_s:g} passed"})
                jpath = write_results(args, gpu, peak, stamp, tag, results)
                continue
            cmd = [sys.executable, __file__, "--worker", f"{impl}:{B}", "--model", args.model, "--seq", str(args.seq),
                   "--steps", str(args.steps), "--warmup", str(args.warmup)]
            t0 = time.time()
            timeout = args.timeout if left is None else max(1, min(args.timeout, int(left)))
            try:
                p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
                lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
                if lines:
                    res = json.loads(lines[-1][7:])
                else:
                    tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
                    res = {"impl": impl, "batch": B, "seq": args.seq, "status": "crashed",
                           "error": f"exit {p.returncode}: " + " | ".join(tail)}
            except subprocess.TimeoutExpired:
                res = {"impl": impl, "batch": B, "seq": args.seq, "status": "timeout", "error": f"after {timeout} s"}
            res["wall_s"] = round(time.time() - t0, 1)
            if res.get("status") == "ok" and peak:
                res["mfu"] = res["flops_per_token"] * res["tokens_per_s"] / peak
            results.append(res)
            brief = {k: res.get(k) for k in ("impl", "batch", "status", "ms_median", "tokens_per_s", "mfu")}
            print(json.dumps(brief), flush=True)
            jpath = write_results(args, gpu, peak, stamp, tag, results)
    print(f"wrote {jpath} and {jpath.with_suffix('.md')}")
    return 0 if all(r.get("status") in ("ok", "oom") for r in results) else 1


def write_results(args, gpu: str, peak: Optional[float], stamp: str, tag: str, results: List[Dict]) -> Path:
    """(Re)write the JSON and Markdown of the results so far; returns the JSON's path."""
    import torch

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        import pyllmc

        pv, info = pyllmc.__version__, pyllmc.cuda_info()
    except Exception as e:  # report, do not fail the run
        pv, info = None, f"pyllmc import failed: {e}"
    doc = {
        "command": " ".join([sys.executable] + sys.argv),
        "date": stamp, "gpu": gpu, "peak_flops": peak, "torch": torch.__version__, "cuda": torch.version.cuda,
        "pyllmc": pv, "pyllmc_cuda": info, "python": platform.python_version(), "model": args.model,
        "seq": args.seq, "steps": args.steps, "warmup": args.warmup, "results": results,
    }  # fmt: skip
    jpath = out_dir / f"gpu_bench-{tag}-{stamp}.json"
    jpath.write_text(json.dumps(doc, indent=1))
    rows = ["| impl | B | status | ms/step (median) | tokens/s | MFU |", "|---|---|---|---|---|---|"]
    for r in results:
        ok = r.get("status") == "ok"
        mfu = r.get("mfu")
        rows.append(f"| {r['impl']} | {r['batch']} | {r.get('status')} | "
                    f"{r['ms_median']:.1f} | {r['tokens_per_s']:.0f} | "
                    f"{'' if mfu is None or not math.isfinite(mfu) else f'{100 * mfu:.1f}%'} |" if ok else
                    f"| {r['impl']} | {r['batch']} | {r.get('status')} | | | |")  # fmt: skip
    md = f"# GPU benchmark, {gpu}, {args.model}, T={args.seq}\n\n`{doc['command']}`\n\n" + "\n".join(rows) + "\n"
    (out_dir / f"gpu_bench-{tag}-{stamp}.md").write_text(md)
    return jpath


if __name__ == "__main__":
    sys.exit(main())
