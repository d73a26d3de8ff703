"""The benchmark suite: runs every measurement, writes bench.json, report.md and the plots.

Everything timed runs in a process of its own (worker.py, or a C driver), one after the
other, so implementations never compete for the cores and each one's peak RSS is its own.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import cdriver, external, impls, kernels
from .procs import Skipped, run_job, run_worker
from .spec import Job, Shape, parse_model
from .stats import fit_linear_quadratic, fit_power, summarize

SCHEMA = "pyllmc-bench/1"
#: issue 6's targets, checked for d12 at B=4, T=64 on the largest thread count measured
TARGETS = {"ratio_vs_best_torch_eager": 0.80, "mfu": 0.75, "peak_rss_gib": 2.2}


@dataclass
class Config:
    shape: Shape
    B: int
    T: int
    threads: List[int]

    def key(self) -> str:
        return f"{self.shape.name} B{self.B} T{self.T}"


@dataclass
class Scaling:
    base: Shape
    B: int = 4
    T: int = 64
    threads: int = 2
    impls: List[str] = field(default_factory=lambda: ["c-core", "torch-compact-fused"])
    sweeps: Dict[str, List[int]] = field(default_factory=lambda: {
        "T": [32, 64, 128, 256, 512], "B": [1, 2, 4, 8], "C": [128, 256, 384, 512], "L": [1, 2, 4, 8]})
    kernel_T: List[int] = field(default_factory=lambda: [64, 128, 256, 512, 1024])
    warmup: int = 1
    repeats: int = 3


@dataclass
class Options:
    configs: List[Config]
    impls: List[str] = field(default_factory=lambda: list(impls.DEFAULT_IMPLS))
    warmup: int = 2
    repeats: int = 5
    kernels: bool = True
    kernel_configs: Optional[List[Config]] = None  # default: the first config
    kernel_repeats: int = 10
    scaling: Optional[Scaling] = None
    peak_sizes: List[int] = field(default_factory=lambda: [1024, 2048])
    peak_repeats: int = 5
    job_timeout: float = 1800.0
    compile_timeout: float = 900.0
    src: Optional[str] = None
    out: Path = Path("out/bench")
    plots: bool = True


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        return os.cpu_count() or 1


def full_configs() -> List[Config]:
    """tiny..d12 at B=4, T=64 on 1 and all threads; d12 at longer T on all threads."""
    n = cpu_count()
    both = sorted({1, n})
    cfgs = [Config(parse_model(m), 4, 64, both) for m in ("d2", "d4", "d6", "d12")]
    cfgs += [Config(parse_model("d12"), 4, 256, [n]), Config(parse_model("d12"), 1, 1024, [n])]
    return cfgs


def full_scaling() -> Scaling:
    return Scaling(base=parse_model("d4"), threads=cpu_count())


def _log(msg: str) -> None:
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


def machine_info() -> Dict[str, Any]:
    info: Dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(), "cpus": cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            txt = f.read()
        for line in txt.splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        flags = next((l.split(":", 1)[1].split() for l in txt.splitlines() if l.startswith("flags")), [])
        info["simd"] = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
    except OSError:
        pass
    try:
        info["loadavg_start"] = list(os.getloadavg())
    except OSError:
        pass
    try:
        from .. import LIBRARY_PATH, __version__

        info["pyllmc"] = __version__
        info["library"] = str(LIBRARY_PATH)
    except Exception as e:  # pragma: no cover
        info["pyllmc"] = f"unavailable: {e}"
    return info


class Suite:
    def __init__(self, opts: Options, log: Callable[[str], None] = _log):
        self.o = opts
        self.log = log
        self.results: List[Dict[str, Any]] = []
        self.skipped: List[Dict[str, Any]] = []
        self.peak: Dict[str, Dict[str, Any]] = {}
        self.kernels: List[Dict[str, Any]] = []
        self.scaling: Dict[str, Any] = {}
        self._src: Any = None
        self._exe: Dict[str, Any] = {}

    # ------------------------------------------------------------------ helpers
    def skip(self, what: str, reason: str, **where: Any) -> None:
        self.log(f"skipped {what}: {reason}")
        self.skipped.append({"impl": what, "reason": reason, **where})

    def driver(self, target: str) -> Path:
        """Build (once) and return a C driver; raises DriverError with the reason."""
        if target not in self._exe:
            try:
                if self._src is None:
                    self._src = cdriver.find_source(self.o.src)
                self._exe[target] = cdriver.build(target, self._src)
            except cdriver.DriverError as e:
                self._exe[target] = e
        v = self._exe[target]
        if isinstance(v, Exception):
            raise v
        return v

    def threads_all(self) -> List[int]:
        ts = {t for c in self.o.configs for t in c.threads}
        if self.o.scaling:
            ts.add(self.o.scaling.threads)
        return sorted(ts)

    # ------------------------------------------------------------------ peak
    def measure_peak(self, when: str = "start") -> None:
        """The GEMM and FMA probes at every thread count. Run at the start and again at the
        end: other processes can only lower a probe, so the higher of the two is kept
        (both are recorded under `probes`), and every MFU is computed from it."""
        for n in self.threads_all():
            entry: Dict[str, Any] = {}
            try:
                r = run_worker("peak", json.dumps({"threads": n, "sizes": self.o.peak_sizes, "repeats": self.o.peak_repeats}),
                               threads=n, timeout=600)
                entry["torch_mm_gflops"] = r["gflops"]
                entry["torch_mm_by_size"] = r["by_size"]
            except Skipped as e:
                if when == "start":  # (recorded once; the end probe fails the same way)
                    self.skip("peak:torch.mm", str(e), threads=n)
            try:
                exe = self.driver("bench_kernels")
                best = max((cdriver.run_gemm(exe, s, n, self.o.peak_repeats) for s in self.o.peak_sizes), key=lambda r: r["gflops"])
                entry["c_sgemm_gflops"] = best["gflops"]
                entry["c_sgemm_isa"] = best["isa"]
            except cdriver.DriverError as e:
                if when == "start":
                    self.skip("peak:c-sgemm", str(e), threads=n)
            cands = [v for k, v in entry.items() if k.endswith("_gflops")]
            if cands:
                entry["gflops"] = max(cands)
                entry["source"] = "best of torch.mm and the C core's sgemm on square fp32 matrices"
            try:  # the arithmetic ceiling: register-only FMAs on every thread
                r = cdriver.run_fma(self.driver("bench_kernels"), n, self.o.peak_repeats)
                if r.get("gflops"):
                    entry["fma_gflops"] = r["gflops"]
                    entry["fma_isa"] = r["isa"]
            except cdriver.DriverError as e:
                if when == "start":
                    self.skip("peak:fma", str(e), threads=n)
            if self.bf16:  # bf16 runs: the bf16 dot-product ceiling and the C core's bf16 GEMM
                try:
                    exe = self.driver("bench_kernels")
                    r = cdriver.run_dot(exe, n, self.o.peak_repeats)
                    if r.get("gflops"):
                        entry["bf16_dot_gflops"] = r["gflops"]
                    best = max((cdriver.run_gemm(exe, sz, n, self.o.peak_repeats, precision="bf16")
                                for sz in self.o.peak_sizes), key=lambda r: r["gflops"])
                    entry["c_gemm_bf16_gflops"] = best["gflops"]
                    entry["c_gemm_bf16_isa"] = best["isa"]
                except cdriver.DriverError as e:
                    if when == "start":
                        self.skip("peak:bf16-dot", str(e), threads=n)
            prev = self.peak.get(str(n), {})
            probes = prev.pop("probes", {})
            probes[when] = dict(entry)
            merged = dict(prev)
            for k, v in entry.items():
                if k.endswith("gflops") and isinstance(v, (int, float)):
                    if not isinstance(merged.get(k), (int, float)) or v > merged[k]:
                        merged[k] = v
                        if k == "c_sgemm_gflops":
                            merged["c_sgemm_isa"] = entry.get("c_sgemm_isa")
                        if k == "fma_gflops":
                            merged["fma_isa"] = entry.get("fma_isa")
                elif k not in merged:
                    merged[k] = v
            merged["probes"] = probes
            self.peak[str(n)] = merged
            entry = merged
            self.log(f"peak {n} thread(s), {when}: " + ", ".join(f"{k}={v:.1f}" for k, v in probes[when].items() if k.endswith("gflops")))

    @property
    def bf16(self) -> bool:
        return any(impls.precision_of(i) == "bf16" for i in self.o.impls)

    def peak_gflops(self, threads: int, precision: str = "fp32") -> Optional[float]:
        """The MFU denominator: fp32, the best fp32 GEMM probe; bf16, the bf16 dot-product
        probe (vdpbf16ps), the bf16 arithmetic ceiling of the C core's kernels."""
        key = "bf16_dot_gflops" if precision == "bf16" else "gflops"
        return self.peak.get(str(threads), {}).get(key)

    def fma_gflops(self, threads: int, precision: str = "fp32") -> Optional[float]:
        key = "bf16_dot_gflops" if precision == "bf16" else "fma_gflops"
        return self.peak.get(str(threads), {}).get(key)

    # ------------------------------------------------------------------ step results
    def _row(self, impl: str, cfg: Config, threads: int, steps: List[Dict[str, float]], extra: Dict[str, Any]) -> Dict[str, Any]:
        s = summarize(steps)
        tokens = cfg.B * cfg.T
        flops = cfg.shape.flops_per_step(cfg.B, cfg.T)
        prec = impls.precision_of(impl)
        peak = self.peak_gflops(threads, prec)
        fma = self.fma_gflops(threads, prec)
        row: Dict[str, Any] = {
            "impl": impl,
            "precision": prec,
            "ms_min": s["ms_min"],
            "ms_median": s["ms_median"],
            "tokens_per_s": tokens / (s["ms_median"] * 1e-3),
            "peak_rss_mb": extra.pop("peak_rss_mb", None),
            "mfu": (flops / (s["ms_median"] * 1e-3) / 1e9 / peak) if peak else None,
            "model": cfg.shape.name, "shape": cfg.shape.to_dict(), "batch": cfg.B, "seq": cfg.T, "threads": threads,
            "tokens_per_s_best": tokens / (s["ms_min"] * 1e-3),
            "mfu_best": (flops / (s["ms_min"] * 1e-3) / 1e9 / peak) if peak else None,
            "mfu_fma": (flops / (s["ms_median"] * 1e-3) / 1e9 / fma) if fma else None,
            "gflops_per_s": flops / (s["ms_median"] * 1e-3) / 1e9,
            "flops_per_step": flops, "phases": s["phases"], "ms_all": s["ms_all"], "repeats": s["repeats"],
        }  # fmt: skip
        row.update(extra)
        return row

    def _recompute_mfu(self) -> None:
        """MFU of every result against the final (higher of start and end) peak."""
        for r in self.results:
            prec = impls.precision_of(r["impl"])
            peak, fma, flops = self.peak_gflops(r["threads"], prec), self.fma_gflops(r["threads"], prec), r["flops_per_step"]
            r["mfu"] = flops / (r["ms_median"] * 1e-3) / 1e9 / peak if peak else None
            r["mfu_best"] = flops / (r["ms_min"] * 1e-3) / 1e9 / peak if peak else None
            r["mfu_fma"] = flops / (r["ms_median"] * 1e-3) / 1e9 / fma if fma else None

    def run_impl(self, impl: str, cfg: Config, threads: int) -> None:
        where = {"model": cfg.shape.name, "batch": cfg.B, "seq": cfg.T, "threads": threads}
        t0 = time.perf_counter()
        try:
            if impl in ("c-driver", "c-driver-bf16"):
                exe = self.driver("bench_step")
                r = cdriver.run_step(exe, cfg.shape, cfg.B, cfg.T, threads, self.o.warmup, self.o.repeats, self.o.job_timeout,
                                     precision=impls.precision_of(impl))
                row = self._row(impl, cfg, threads, r["steps"], {"peak_rss_mb": r["peak_rss_mb"], "losses": r["losses"]})
            elif impl == "llmc-bin":
                binary = os.environ.get("LLMC_BIN")
                if not binary:
                    raise Skipped("LLMC_BIN is not set")
                r = external.run(binary, cfg.shape, cfg.B, cfg.T, threads, self.o.warmup, self.o.repeats, self.o.job_timeout)
                steps = [{"step": ms * 1e-3} for ms in r["steps_ms"]]
                row = self._row(impl, cfg, threads, steps, {"peak_rss_mb": r["peak_rss_mb"], "losses": r["losses"],
                                                            "binary": r["binary"], "warmup_s": [ms * 1e-3 for ms in r["warmup_ms"]]})
            else:
                compiled = "-compile" in impl
                job = Job(impl, cfg.shape, cfg.B, cfg.T, threads, self.o.warmup, self.o.repeats)
                r = run_job(job, self.o.compile_timeout if compiled else self.o.job_timeout)
                extra = {k: r[k] for k in ("peak_rss_mb", "rss_base_mb", "setup_s", "warmup_s", "losses", "info")}
                if compiled and r["warmup_s"]:
                    extra["compile_s"] = r["warmup_s"][0]
                row = self._row(impl, cfg, threads, r["steps"], extra)
        except (Skipped, cdriver.DriverError) as e:
            self.skip(impl, str(e), **where)
            return
        self.results.append(row)
        rss = row["peak_rss_mb"]
        self.log(f"{cfg.key()} {threads}t {impl}: median {row['ms_median']:.1f} ms, min {row['ms_min']:.1f} ms, "
                 f"{row['tokens_per_s']:.0f} tok/s, mfu {_pct(row['mfu'])}, rss {rss if rss is None else round(rss)} MB "
                 f"({time.perf_counter() - t0:.0f} s)")

    def run_steps(self) -> None:
        wanted = list(self.o.impls)
        if os.environ.get("LLMC_BIN") and "llmc-bin" not in wanted:
            wanted.append("llmc-bin")
        for cfg in self.o.configs:
            for n in cfg.threads:
                for impl in wanted:
                    if impl == "llmc-bin" and external.applicable(cfg.shape, cfg.B, cfg.T):
                        continue  # only d12 B4 T64; recorded once below
                    self.run_impl(impl, cfg, n)
        if "llmc-bin" not in wanted:
            self.skipped.append({"impl": "llmc-bin", "reason": "LLMC_BIN is not set"})
        elif not any(not external.applicable(c.shape, c.B, c.T) for c in self.o.configs):
            self.skipped.append({"impl": "llmc-bin", "reason": external.applicable(self.o.configs[0].shape, 0, 0)})

    # ------------------------------------------------------------------ kernels
    def run_kernels(self) -> None:
        cfgs = self.o.kernel_configs or self.o.configs[:1]
        for cfg in cfgs:
            for n in cfg.threads:
                where = {"model": cfg.shape.name, "batch": cfg.B, "seq": cfg.T, "threads": n}
                c_res = t_res = None
                try:
                    c_res = cdriver.run_kernels(self.driver("bench_kernels"), cfg.shape, cfg.B, cfg.T, n,
                                                self.o.kernel_repeats, self.o.job_timeout)
                except cdriver.DriverError as e:
                    self.skip("kernels:c", str(e), **where)
                try:
                    arg = json.dumps({"shape": cfg.shape.to_dict(), "B": cfg.B, "T": cfg.T, "threads": n, "repeats": self.o.kernel_repeats})
                    t_res = run_worker("ops", arg, threads=n, timeout=self.o.job_timeout)
                except Skipped as e:
                    self.skip("kernels:torch", str(e), **where)
                if c_res is None and t_res is None:
                    continue
                rows = kernels.join(c_res, t_res, cfg.shape.num_layers)
                step_c = self._find("c-core", cfg, n)
                step_t = self._best_torch(cfg, n)
                self.kernels.append({
                    **where, "isa": (c_res or {}).get("isa"), "rows": rows,
                    "c_ms_per_step": kernels.by_group(rows, "c"), "torch_ms_per_step": kernels.by_group(rows, "torch"),
                    "c_step_ms_min": step_c["ms_min"] if step_c else None,
                    "torch_step_impl": step_t["impl"] if step_t else None,
                    "torch_step_ms_min": step_t["ms_min"] if step_t else None,
                })  # fmt: skip
                self.log(f"kernels {cfg.key()} {n}t: C sum {sum(kernels.by_group(rows, 'c').values()):.1f} ms/step, "
                         f"torch sum {sum(kernels.by_group(rows, 'torch').values()):.1f} ms/step")
                if self.bf16:  # where the bf16 step's time goes: the C kernels in bf16 precision
                    try:
                        c16 = cdriver.run_kernels(self.driver("bench_kernels"), cfg.shape, cfg.B, cfg.T, n,
                                                  self.o.kernel_repeats, self.o.job_timeout, precision="bf16")
                    except cdriver.DriverError as e:
                        self.skip("kernels:c-bf16", str(e), **where)
                        continue
                    rows16 = kernels.join(c16, None, cfg.shape.num_layers)
                    step16 = self._find("c-core-bf16", cfg, n)
                    self.kernels.append({
                        **where, "precision": "bf16", "isa": c16.get("isa"), "rows": rows16,
                        "c_ms_per_step": kernels.by_group(rows16, "c"), "torch_ms_per_step": {},
                        "c_step_ms_min": step16["ms_min"] if step16 else None,
                        "torch_step_impl": None, "torch_step_ms_min": None,
                    })  # fmt: skip
                    self.log(f"kernels bf16 {cfg.key()} {n}t: C sum {sum(kernels.by_group(rows16, 'c').values()):.1f} ms/step")

    def _find(self, impl: str, cfg: Config, n: int) -> Optional[Dict[str, Any]]:
        for r in self.results:
            if r["impl"] == impl and r["model"] == cfg.shape.name and r["batch"] == cfg.B and r["seq"] == cfg.T and r["threads"] == n:
                return r
        return None

    def _best_torch(self, cfg: Config, n: int) -> Optional[Dict[str, Any]]:
        rows = [r for r in self.results if r["model"] == cfg.shape.name and r["batch"] == cfg.B and r["seq"] == cfg.T and r["threads"] == n]
        return impls.best_torch_eager(rows, "ms_min")

    # ------------------------------------------------------------------ scaling
    def run_scaling(self) -> None:
        sc = self.o.scaling
        assert sc is not None
        base = sc.base
        out: Dict[str, Any] = {"base": base.to_dict(), "B": sc.B, "T": sc.T, "threads": sc.threads, "sweeps": {}, "kernels_T": {}}
        for var, values in sc.sweeps.items():
            curves: Dict[str, Any] = {}
            for impl in sc.impls:
                pts: List[Dict[str, Any]] = []
                for v in values:
                    shape, B, T = base, sc.B, sc.T
                    if var == "T":
                        T = v
                        shape = base.with_(max_seq_len=max(base.max_seq_len, v))
                    elif var == "B":
                        B = v
                    elif var == "C":
                        shape = base.with_(name=f"{base.name}-C{v}", channels=v, num_heads=max(1, v // 64))
                    elif var == "L":
                        shape = base.with_(name=f"{base.name}-L{v}", num_layers=v)
                    try:
                        job = Job(impl, shape, B, T, sc.threads, sc.warmup, sc.repeats)
                        if impl == "c-driver":
                            r = cdriver.run_step(self.driver("bench_step"), shape, B, T, sc.threads, sc.warmup, sc.repeats)
                        else:
                            r = run_job(job, self.o.job_timeout)
                    except (Skipped, cdriver.DriverError) as e:
                        self.skip(f"scaling:{impl}", str(e), variable=var, value=v)
                        continue
                    s = summarize(r["steps"])
                    pts.append({"x": v, "ms_min": s["ms_min"], "ms_median": s["ms_median"],
                                "flops": shape.flops_per_step(B, T)})
                xs, ys = [p["x"] for p in pts], [p["ms_min"] for p in pts]
                curves[impl] = {"points": pts, "fit": fit_power(xs, ys)}
                if var == "T":
                    curves[impl]["fit_linear_quadratic"] = fit_linear_quadratic(xs, ys)
                fit = curves[impl]["fit"]
                self.log(f"scaling {var} {impl}: exponent {fit['exponent']:.2f}" if fit else f"scaling {var} {impl}: no fit")
            out["sweeps"][var] = curves
        # per-kernel exponents in T from the C kernel driver (attention should be ~2, the rest ~1)
        try:
            exe = self.driver("bench_kernels")
            per: Dict[str, List[Tuple[int, float]]] = {}
            for T in sc.kernel_T:
                shape = base.with_(max_seq_len=max(base.max_seq_len, T))
                r = cdriver.run_kernels(exe, shape, sc.B, T, sc.threads, max(3, sc.repeats))
                for k in r["kernels"]:
                    per.setdefault(k["name"], []).append((T, k["ms_min"]))
            for name, kpts in per.items():
                out["kernels_T"][name] = {"points": [{"x": x, "ms_min": y} for x, y in kpts],
                                          "fit": fit_power([p[0] for p in kpts], [p[1] for p in kpts])}
        except cdriver.DriverError as e:
            self.skip("scaling:kernels", str(e))
        self.scaling = out

    # ------------------------------------------------------------------ summary
    def summary(self) -> List[Dict[str, Any]]:
        out = []
        for cfg in self.o.configs:
            for n in cfg.threads:
                c = self._find("c-core", cfg, n)
                t = self._best_torch(cfg, n)
                rows = [r for r in self.results
                        if r["model"] == cfg.shape.name and r["batch"] == cfg.B and r["seq"] == cfg.T and r["threads"] == n]
                t_med = impls.best_torch_eager(rows, "ms_median")
                e = {"model": cfg.shape.name, "batch": cfg.B, "seq": cfg.T, "threads": n}
                if c:
                    e.update(c_ms_min=c["ms_min"], c_ms_median=c["ms_median"], c_mfu=c["mfu"], c_peak_rss_mb=c["peak_rss_mb"])
                if t:
                    e.update(best_torch_eager=t["impl"], best_torch_eager_ms_min=t["ms_min"])
                if c and t:
                    e["ratio_vs_best_torch_eager_min"] = c["ms_min"] / t["ms_min"]
                if t_med:
                    e.update(best_torch_eager_by_median=t_med["impl"], best_torch_eager_ms_median=t_med["ms_median"])
                if c and t_med:
                    e["ratio_vs_best_torch_eager_median"] = c["ms_median"] / t_med["ms_median"]
                # bf16: the C core in bf16 against the best PyTorch bf16 run (compiled included)
                c16 = self._find("c-core-bf16", cfg, n)
                t16 = impls.best_torch_bf16(rows, "ms_median")
                if c16:
                    e.update(c_bf16_ms_min=c16["ms_min"], c_bf16_ms_median=c16["ms_median"], c_bf16_mfu=c16["mfu"],
                             c_bf16_peak_rss_mb=c16["peak_rss_mb"])
                if t16:
                    e.update(best_torch_bf16=t16["impl"], best_torch_bf16_ms_median=t16["ms_median"])
                if c16 and t16:
                    e["ratio_bf16_vs_best_torch_bf16_median"] = c16["ms_median"] / t16["ms_median"]
                out.append(e)
        return out

    def targets(self, summary: List[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
        d12 = [s for s in summary if s["model"] == "d12" and s["batch"] == 4 and s["seq"] == 64 and "c_ms_min" in s]
        if not d12:
            return None
        s = max(d12, key=lambda s: s["threads"])
        ratio = s.get("ratio_vs_best_torch_eager_median")
        mfu = s.get("c_mfu")
        rss = s.get("c_peak_rss_mb")
        return {
            "config": "d12 B4 T64", "threads": s["threads"], "targets": TARGETS,
            "ratio_vs_best_torch_eager": ratio, "ratio_met": ratio is not None and ratio <= TARGETS["ratio_vs_best_torch_eager"],
            "mfu": mfu, "mfu_met": mfu is not None and mfu >= TARGETS["mfu"],
            "peak_rss_gib": rss / 1024 if rss else None, "rss_met": bool(rss) and rss / 1024 <= TARGETS["peak_rss_gib"],
        }  # fmt: skip

    # ------------------------------------------------------------------ run all
    def run(self) -> Dict[str, Any]:
        t0 = time.perf_counter()
        machine = machine_info()
        self.log(f"machine: {machine.get('cpu', '?')}, {machine['cpus']} cpu(s); out {self.o.out}")
        self.measure_peak()
        self.run_steps()
        if self.o.kernels:
            self.run_kernels()
        if self.o.scaling:
            self.run_scaling()
        try:
            machine["loadavg_end"] = list(os.getloadavg())
        except OSError:
            pass
        self.measure_peak("end")
        self._recompute_mfu()
        summary = self.summary()
        doc = {
            "schema": SCHEMA,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "results": self.results,
            "skipped": self.skipped,
            "summary": summary,
            "targets": self.targets(summary),
            "peak": self.peak,
            "kernels": self.kernels,
            "scaling": self.scaling,
            "machine": machine,
            "definitions": DEFINITIONS,
            "options": _options_json(self.o),
            "elapsed_s": time.perf_counter() - t0,
        }
        return doc


DEFINITIONS = {
    "step": "forward with targets, zero_grad, backward, clip grad norm 1.0, AdamW (lr 1e-4, wd 0.1) on a fixed random batch; "
            "the C core's zero_grad + backward is one backward that overwrites the gradients (same result, one pass fewer), "
            "PyTorch's zero_grad sets them to None",
    "ms_min / ms_median": "fastest / median whole step over the timed repeats, after the warm-up steps",
    "phases": "forward; backward (zero_grad included); update (clip + AdamW)",
    "tokens_per_s": "B*T / median step time (tokens_per_s_best: from the fastest step)",
    "mfu": "model FLOP/s (median step) / peak FLOP/s measured on this machine at the same thread count; "
           "model FLOPs = 6 * params * tokens + 12 * L * B * T^2 * C; peak = best of torch.mm and the C core's sgemm "
           "on square fp32 matrices (the GEMM probe)",
    "mfu_fma": "the same against the FMA probe: register-only fused multiply-adds on every thread at the widest "
               "vector width (the arithmetic ceiling, above any GEMM)",
    "peak_rss_mb": "high-water resident memory (VmHWM) of the process that ran the implementation, alone (MiB)",
}


def _pct(v: Optional[float]) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def _options_json(o: Options) -> Dict[str, Any]:
    d = {k: v for k, v in dataclasses.asdict(o).items() if k not in ("configs", "kernel_configs", "scaling", "out")}
    d["configs"] = [{"model": c.shape.name, "B": c.B, "T": c.T, "threads": c.threads} for c in o.configs]
    d["out"] = str(o.out)
    return d


def write(doc: Dict[str, Any], out: Path, plots: bool = True, log: Callable[[str], None] = _log) -> List[Path]:
    """bench.json, report.md and (optionally) the PNG plots into `out`; returns the paths."""
    from . import report

    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "bench.json"]
    with open(paths[0], "w") as f:
        json.dump(doc, f, indent=1, default=_json_default)
        f.write("\n")
    png: List[Path] = []
    if plots:
        try:
            png = report.plots(doc, out)
        except Exception as e:  # plots are a convenience; never lose the JSON over them
            log(f"plots failed: {type(e).__name__}: {e}")
    md = out / "report.md"
    md.write_text(report.markdown(doc, [p.name for p in png]))
    return paths + [md] + png


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o).__name__)
