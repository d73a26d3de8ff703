"""`pyllmc bench`: speed and memory of the C core against PyTorch (argument parsing only;
the work is in pyllmc.bench).

    pyllmc bench --model M --batch B --seq T [--threads N|1,2] [--out DIR]   one configuration
    pyllmc bench --suite d12 [--out DIR]                                the notes' d12 results
    pyllmc bench --suite full [--out DIR]                               tiny..d12, long T,
                                                                        1 and N threads,
                                                                        kernels, scaling
Writes DIR/bench.json ({"results": [{"impl", "ms_min", "ms_median", "tokens_per_s",
"peak_rss_mb", "mfu", ...}], ...}), DIR/report.md and PNG plots.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import List

from .cli_args import add_switch, default_out


def _positive(name: str):
    def conv(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {s!r}") from None
        if v < 1:
            raise argparse.ArgumentTypeError(f"{name} must be >= 1, got {v}")
        return v

    return conv


def _thread_list(s: str) -> List[int]:
    """--threads N or a comma-separated list (1,2): each implementation runs at each count."""
    out = []
    for part in s.split(","):
        try:
            v = int(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--threads must be an integer or a list like 1,2, got {s!r}") from None
        if v < 0:
            raise argparse.ArgumentTypeError(f"--threads must be >= 0, got {v}")
        out.append(v or (os.cpu_count() or 1))  # 0 = the OpenMP default: all cores, as everywhere
    return sorted(set(out))


def _nonneg(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {s!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="size descriptor (d12), named shape (tiny), L4-C256-NH4, llm.c checkpoint "
                   "or local HF directory (only its shape is used); required unless --suite d12 or full")
    p.add_argument("--batch", type=_positive("--batch"), default=4, help="batch size B (default 4)")
    p.add_argument("--seq", type=_positive("--seq"), default=64, help="sequence length T (default 64)")
    p.add_argument("--threads", type=_thread_list, default=None,
                   help="threads for every implementation, N or a list such as 1,2; 0 = the OpenMP default, all cores "
                        "(default: all cores of this process)")
    p.add_argument("--out", default=default_out("bench"), help=f"output directory (default {default_out('bench')})")
    p.add_argument("--suite", choices=("step", "d12", "full"), default="step",
                   help="step: the one configuration given (default); d12: the project notes' results, d12 B=4 "
                        "T=64 on 1 and all threads, the C core and the PyTorch eager/compiled implementations, "
                        "kernels (about 5 minutes on 2 cores); full: tiny..d12 at B4 T64 on 1 and all threads, d12 "
                        "at T=256 and T=1024, kernels and scaling (about an hour)")
    p.add_argument("--impls", default=None, help="comma-separated implementations (see --list-impls)")
    p.add_argument("--precision", choices=("fp32", "bf16", "both"), default="fp32",
                   help="bf16: the C core in bf16 against PyTorch under CPU autocast bf16 (MFU against the bf16 "
                        "dot-product peak); both: fp32 and bf16 side by side (default fp32)")
    p.add_argument("--list-impls", action="store_true", help="list the implementations and exit")
    add_switch(p, "--compile", default=True,
               help="include torch.compile (default on; --no-compile: it is slow to compile on few cores)")
    p.add_argument("--warmup", type=_nonneg, default=2, help="untimed steps first (default 2)")
    p.add_argument("--repeats", type=_positive("--repeats"), default=5, help="timed steps (default 5)")
    add_switch(p, "--kernels", default=None, help="time each kernel (default on)")
    add_switch(p, "--scaling", default=None,
               help="step time against T, B, C, L with fitted exponents (default: on with --suite full)")
    p.add_argument("--quick", action="store_true", help="fewer repeats and smaller probes (for smoke tests)")
    p.add_argument("--src", default=None, help="pyllmc source tree for the C drivers (default: found automatically)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds allowed per measurement (default 1800)")
    p.add_argument("--compile-timeout", type=float, default=900.0, help="seconds allowed for torch.compile (default 900)")
    add_switch(p, "--plot", default=True, off_flags=("--no-plots",),
               help="write the PNG plots (default on; --no-plot: bench.json and report.md only)")
    p.add_argument("--device", choices=("cpu", "wasm"), default="cpu",
                   help="wasm: the C core runs as WebAssembly (implementation c-core-wasm, one thread) in place of "
                        "c-core and c-driver (default cpu)")
    p.add_argument("--render", metavar="BENCH_JSON", default=None,
                   help="measure nothing: write report.md and the plots of an existing bench.json into --out")


def run(args: argparse.Namespace) -> int:
    from .bench import cdriver, suite
    from .bench import impls as impl_mod
    from .bench.spec import parse_model
    from .errors import InvalidArgumentError

    if args.list_impls:
        for name, text in impl_mod.describe().items():
            print(f"{name:30s} {text}")
        return 0
    if args.render:
        import json

        try:
            with open(args.render) as f:
                doc = json.load(f)
        except json.JSONDecodeError as e:
            raise InvalidArgumentError(f"{args.render}: not JSON: {e}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("results"), list):
            raise InvalidArgumentError(f"{args.render}: not a bench.json (no results list)")
        paths = suite.write(doc, Path(args.out), plots=args.plot)
        print("wrote " + ", ".join(str(p) for p in paths))
        return 0
    if args.suite == "d12":
        # a preset of the one-configuration suite; explicit options still win
        args.model = args.model or "d12"
        args.threads = args.threads or sorted({1, suite.cpu_count()})
        args.impls = args.impls or ",".join(impl_mod.NOTES_IMPLS)
    threads = args.threads or [suite.cpu_count()]
    n = max(threads)
    if args.src:
        try:
            cdriver.find_source(args.src)
        except cdriver.DriverError as e:
            raise InvalidArgumentError(f"--src {e}") from None
    if args.impls:
        names = [s.strip() for s in args.impls.split(",") if s.strip()]
        _, unknown = impl_mod.split_impls(names)
        if unknown:
            raise InvalidArgumentError(f"unknown implementation(s) {', '.join(unknown)} (see pyllmc bench --list-impls)")
    else:
        names = list(impl_mod.DEFAULT_IMPLS) + ["c-driver"]
    if args.precision != "fp32" and not args.impls:
        bf16 = list(impl_mod.BF16_IMPLS) if args.suite != "d12" else [impl_mod.to_precision(i, "bf16") for i in names]
        names = bf16 if args.precision == "bf16" else names + [i for i in bf16 if i not in names]
    if not args.compile:
        names = [i for i in names if "-compile" not in i]
    if getattr(args, "device", "cpu") == "wasm":
        from .model_source import check_device

        check_device("wasm")
        names = list(dict.fromkeys(("c-core-wasm" if i == "c-core" else i) for i in names if i != "c-driver"))

    scaling = None
    if args.suite == "full":
        if args.threads:
            configs = [suite.Config(c.shape, c.B, c.T, sorted({1, *threads}) if c.T == 64 else [n]) for c in suite.full_configs()]
        else:
            configs = suite.full_configs()
        if args.model:
            shape = parse_model(args.model)
            configs = [suite.Config(shape, args.batch, args.seq, sorted({1, *threads}))] + configs
        if args.scaling is not False:
            scaling = suite.full_scaling()
            scaling.threads = n
        kernel_cfgs = [c for c in configs if c.shape.name == "d12" and c.B == 4 and c.T == 64] or configs[:1]
    else:
        if not args.model:
            raise InvalidArgumentError("--model is required (or use --suite full)")
        shape = parse_model(args.model)  # SpecError is an InvalidArgumentError: one line, exit 2
        if args.seq > shape.max_seq_len:
            shape = shape.with_(max_seq_len=args.seq)
        configs = [suite.Config(shape, args.batch, args.seq, threads)]
        kernel_cfgs = configs
        if args.scaling:
            scaling = suite.Scaling(base=shape, B=args.batch, T=args.seq, threads=n)
    opts = suite.Options(
        configs=configs, impls=names, warmup=args.warmup, repeats=args.repeats,
        kernels=args.kernels is not False, kernel_configs=kernel_cfgs, scaling=scaling,
        job_timeout=args.timeout, compile_timeout=args.compile_timeout, src=args.src,
        out=Path(args.out), plots=args.plot,
    )  # fmt: skip
    if args.quick:
        opts.warmup = min(opts.warmup, 1)
        opts.repeats = min(opts.repeats, 2)
        opts.kernel_repeats = 3
        opts.peak_sizes = [512]
        opts.peak_repeats = 3
        if scaling:
            scaling.warmup, scaling.repeats = 1, 2
            scaling.sweeps = {k: v[:3] for k, v in scaling.sweeps.items()}
            scaling.kernel_T = scaling.kernel_T[:3]
    doc = suite.Suite(opts).run()
    paths = suite.write(doc, Path(args.out), plots=opts.plots)
    _print_summary(doc)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _print_summary(doc) -> None:
    for s in doc["summary"]:
        line = f"{s['model']} B{s['batch']} T{s['seq']} {s['threads']}t:"
        if "c_ms_median" in s:
            line += f" c-core median {s['c_ms_median']:.1f} ms"
            if s.get("c_mfu") is not None:
                line += f" (MFU {100 * s['c_mfu']:.1f}%)"
        # like with like: medians against the best torch median, mins against the best min
        if "ratio_vs_best_torch_eager_median" in s:
            line += f"; C/torch by median {s['ratio_vs_best_torch_eager_median']:.2f}"
            if "best_torch_eager_by_median" in s:  # absent from bench.json of older versions
                line += f" ({s['best_torch_eager_by_median']} {s['best_torch_eager_ms_median']:.1f} ms)"
        if "ratio_vs_best_torch_eager_min" in s:
            line += (f", by min {s['ratio_vs_best_torch_eager_min']:.2f}"
                     f" ({s['best_torch_eager']} {s['best_torch_eager_ms_min']:.1f} ms)")
        if "c_bf16_ms_median" in s:
            line += f"; c-core-bf16 median {s['c_bf16_ms_median']:.1f} ms"
            if s.get("c_bf16_mfu") is not None:
                line += f" (MFU {100 * s['c_bf16_mfu']:.1f}% of the bf16 dot peak)"
        if "ratio_bf16_vs_best_torch_bf16_median" in s:
            line += (f"; C bf16/torch bf16 by median {s['ratio_bf16_vs_best_torch_bf16_median']:.2f}"
                     f" ({s['best_torch_bf16']} {s['best_torch_bf16_ms_median']:.1f} ms)")
        print(line)
    for s in doc["skipped"]:
        print(f"skipped {s['impl']}: {s['reason']}", file=sys.stderr)
