"""report.md and the PNG plots from a bench.json document."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Sequence

from .kernels import GROUPS

COLORS = {
    "c-core": "#d62728", "c-driver": "#ff9896", "llmc-bin": "#8c564b",
    "torch-hf-eager-foreach": "#1f77b4", "torch-hf-eager-fused": "#6baed6", "torch-hf-sdpa-foreach": "#9467bd",
    "torch-hf-sdpa-fused": "#c5b0d5", "torch-compact-foreach": "#2ca02c", "torch-compact-fused": "#98df8a",
    "torch-compact-fused-compile": "#bcbd22",
}  # fmt: skip
GROUP_COLORS = dict(zip(GROUPS, ["#1f77b4", "#aec7e8", "#ff7f0e", "#d62728", "#2ca02c", "#98df8a", "#9467bd", "#8c564b", "#e377c2"]))


def _f(v: Any, fmt: str = "{:.1f}", none: str = "–") -> str:
    return none if v is None else fmt.format(v)


def _cfg_key(r: Dict[str, Any]) -> str:
    return f"{r['model']} B{r['batch']} T{r['seq']}"


def _groups(results: List[Dict[str, Any]]) -> Dict[tuple, List[Dict[str, Any]]]:
    out: Dict[tuple, List[Dict[str, Any]]] = {}
    for r in results:
        out.setdefault((r["model"], r["batch"], r["seq"], r["threads"]), []).append(r)
    return out


def markdown(doc: Dict[str, Any], pngs: Sequence[str] = ()) -> str:
    m = doc.get("machine", {})
    L: List[str] = ["# pyllmc benchmark", ""]
    L.append(f"{doc.get('created', '')} · {m.get('cpu', '?')} · {m.get('cpus', '?')} cpu(s) · "
             f"load average at start {_f((m.get('loadavg_start') or [None])[0], '{:.2f}')}, "
             f"at end {_f((m.get('loadavg_end') or [None])[0], '{:.2f}')}")
    L.append("")
    peak = doc.get("peak") or {}
    if peak:
        L.append("Peak measured on this machine (GFLOP/s): GEMM probe (best square fp32 GEMM, the MFU denominator) "
                 "and FMA probe (register-only FMAs, the arithmetic ceiling): " + "; ".join(
            f"{n} thread(s): GEMM {_f(p.get('gflops'))} (torch.mm {_f(p.get('torch_mm_gflops'))}, "
            f"C sgemm {_f(p.get('c_sgemm_gflops'))} {p.get('c_sgemm_isa', '')}), FMA {_f(p.get('fma_gflops'))} "
            f"{p.get('fma_isa', '')}" for n, p in peak.items()))
        L.append("")
    t = doc.get("targets")
    if t:
        L.append(f"## Targets (issue 6) — {t['config']}, {t['threads']} thread(s)")
        L.append("")
        L.append("| target | required | measured | met |")
        L.append("|---|---|---|---|")
        tg = t["targets"]
        L.append(f"| C step / best PyTorch eager (median) | <= {tg['ratio_vs_best_torch_eager']} | "
                 f"{_f(t['ratio_vs_best_torch_eager'], '{:.3f}')} | {'yes' if t['ratio_met'] else 'no'} |")
        L.append(f"| MFU | >= {tg['mfu']:.0%} | {_f(t['mfu'] and 100 * t['mfu'], '{:.1f}%')} | {'yes' if t['mfu_met'] else 'no'} |")
        L.append(f"| peak RSS | <= {tg['peak_rss_gib']} GiB | {_f(t['peak_rss_gib'], '{:.2f} GiB')} | {'yes' if t['rss_met'] else 'no'} |")
        L.append("")
    L.append("## Training step")
    L.append("")
    L.append("Min and median over the timed repeats after warm-up; phases are medians; MFU from the median; "
             "`vs C` is this implementation's median over the C core's.")
    L.append("")
    for (model, B, T, n), rows in _groups(doc.get("results", [])).items():
        c = next((r for r in rows if r["impl"] == "c-core"), None)
        L.append(f"### {model} B={B} T={T}, {n} thread(s)")
        L.append("")
        L.append("| impl | ms min | ms median | fwd | bwd | update | tokens/s | MFU | MFU (FMA) | peak RSS MiB | vs C |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in sorted(rows, key=lambda r: r["ms_median"]):
            ph = r.get("phases", {})
            L.append("| " + " | ".join([
                r["impl"], _f(r["ms_min"]), _f(r["ms_median"]),
                _f(ph.get("forward", {}).get("ms_median")), _f(ph.get("backward", {}).get("ms_median")),
                _f(ph.get("update", {}).get("ms_median")), _f(r["tokens_per_s"], "{:.0f}"),
                _f(r["mfu"] and 100 * r["mfu"], "{:.1f}%"), _f(r.get("mfu_fma") and 100 * r["mfu_fma"], "{:.1f}%"),
                _f(r["peak_rss_mb"], "{:.0f}"),
                _f(r["ms_median"] / c["ms_median"] if c else None, "{:.2f}x"),
            ]) + " |")  # fmt: skip
        L.append("")
    for k in doc.get("kernels", []):
        prec = " in bf16 precision (C only)" if k.get("precision") == "bf16" else ""
        L.append(f"## Kernels: C core vs PyTorch op{prec} — {k['model']} B={k['batch']} T={k['seq']}, "
                 f"{k['threads']} thread(s) (ISA {k.get('isa')})")
        L.append("")
        L.append("Min ms per call; per step = per call x calls per step. `C/torch` below 1 means the C kernel is faster.")
        L.append("")
        L.append("| kernel | calls/step | C ms/call | torch ms/call | C/torch | C ms/step | torch ms/step | C GFLOP/s |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for r in k["rows"]:
            L.append(f"| {r['name']} | {r['calls_per_step']} | {_f(r.get('c_ms_min'), '{:.3f}')} | {_f(r.get('torch_ms_min'), '{:.3f}')} | "
                     f"{_f(r.get('c_vs_torch'), '{:.2f}')} | {_f(r.get('c_ms_per_step'))} | {_f(r.get('torch_ms_per_step'))} | "
                     f"{_f(r.get('c_gflops'))} |")
        cs, ts = sum(k["c_ms_per_step"].values()), sum(k["torch_ms_per_step"].values())
        L.append(f"| **sum** | | | | | **{cs:.1f}** | **{ts:.1f}** | |")
        L.append("")
        L.append(f"Measured whole step (min): C core {_f(k.get('c_step_ms_min'))} ms; "
                 f"{k.get('torch_step_impl') or 'torch'} {_f(k.get('torch_step_ms_min'))} ms "
                 "(the rest of the step: zero_grad, grad-norm clip, layout copies, binding and framework overhead).")
        L.append("")
    sc = doc.get("scaling") or {}
    if sc.get("sweeps"):
        b = sc["base"]
        L.append(f"## Scaling (base L{b['num_layers']} C{b['channels']} NH{b['num_heads']}, B={sc['B']}, T={sc['T']}, "
                 f"{sc['threads']} thread(s))")
        L.append("")
        L.append("Fitted exponent k of step time ~ x^k (least squares on log-log, min times).")
        L.append("")
        L.append("| variable | values | " + " | ".join(next(iter(sc["sweeps"].values())).keys()) + " |")
        L.append("|---|---|" + "---:|" * len(next(iter(sc["sweeps"].values()))))
        for var, curves in sc["sweeps"].items():
            vals = sorted({p["x"] for c in curves.values() for p in c["points"]})
            cells = []
            for c in curves.values():
                fit = c.get("fit")
                cell = _f(fit and fit["exponent"], "{:.2f}")
                lq = c.get("fit_linear_quadratic")
                if lq:
                    cell += f" (T^2 share at T={max(vals)}: {lq['quadratic_share_at_max']:.0%})"
                cells.append(cell)
            L.append(f"| {var} | {', '.join(map(str, vals))} | " + " | ".join(cells) + " |")
        L.append("")
        kt = sc.get("kernels_T") or {}
        if kt:
            L.append("Per-kernel exponent in T (C kernels; attention should be ~2, everything else ~1):")
            L.append("")
            L.append("| kernel | exponent | R^2 |")
            L.append("|---|---:|---:|")
            for name, v in kt.items():
                fit = v.get("fit") or {}
                L.append(f"| {name} | {_f(fit.get('exponent'), '{:.2f}')} | {_f(fit.get('r2'), '{:.3f}')} |")
            L.append("")
    if doc.get("skipped"):
        L.append("## Skipped")
        L.append("")
        for s in doc["skipped"]:
            where = ", ".join(f"{k}={v}" for k, v in s.items() if k not in ("impl", "reason"))
            L.append(f"- {s['impl']}{' (' + where + ')' if where else ''}: {s['reason']}")
        L.append("")
    if pngs:
        L.append("## Plots")
        L.append("")
        for p in pngs:
            L.append(f"![{p}]({p})")
        L.append("")
    L.append("## Definitions")
    L.append("")
    for k, v in (doc.get("definitions") or {}).items():
        L.append(f"- **{k}**: {v}")
    L.append("")
    return "\n".join(L)


def plots(doc: Dict[str, Any], out: Path) -> List[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths: List[Path] = []
    res = doc.get("results", [])
    if res:
        paths.append(_plot_steps(plt, res, out))
        paths.append(_plot_phases(plt, res, out))
    if doc.get("kernels"):
        paths.append(_plot_kernels(plt, doc["kernels"], out))
    sc = doc.get("scaling") or {}
    if sc.get("sweeps"):
        paths.append(_plot_scaling(plt, sc, out))
    return paths


def _impl_order(impls: Sequence[str]) -> List[str]:
    known = list(COLORS)
    return sorted(set(impls), key=lambda i: (known.index(i) if i in known else len(known), i))


def _plot_steps(plt, res, out: Path) -> Path:
    threads = sorted({r["threads"] for r in res})
    fig, axes = plt.subplots(len(threads), 1, figsize=(11, 4.2 * len(threads)), squeeze=False)
    for ax, n in zip(axes[:, 0], threads):
        rows = [r for r in res if r["threads"] == n]
        cfgs = list(dict.fromkeys(_cfg_key(r) for r in rows))
        impls = _impl_order([r["impl"] for r in rows])
        w = 0.8 / max(1, len(impls))
        for j, impl in enumerate(impls):
            xs, med, mn = [], [], []
            for i, c in enumerate(cfgs):
                r = next((r for r in rows if r["impl"] == impl and _cfg_key(r) == c), None)
                if r:
                    xs.append(i - 0.4 + w * (j + 0.5))
                    med.append(r["ms_median"])
                    mn.append(r["ms_min"])
            bars = ax.bar(xs, med, w, label=impl, color=COLORS.get(impl))
            ax.scatter(xs, mn, marker="_", color="k", s=60, zorder=3)
            ax.bar_label(bars, labels=[f"{v:.0f}" if v >= 10 else f"{v:.1f}" for v in med], fontsize=6, padding=1)
        ax.set_xticks(range(len(cfgs)))
        ax.set_xticklabels(cfgs)
        meds = [r["ms_median"] for r in rows]
        # configurations from tiny to d12 span orders of magnitude: log scale only then, so
        # that bars of one configuration compare by their heights
        if meds and max(meds) / max(min(meds), 1e-9) > 20:
            ax.set_yscale("log")
            ax.set_ylim(top=max(meds) * 4)  # room for the legend above the bars
        elif meds:
            ax.set_ylim(0, max(meds) * 1.35)
        ax.set_ylabel("ms per training step (median; - = min)")
        ax.set_title(f"Training step time, {n} thread(s)")
        ax.grid(axis="y", alpha=0.3, which="both")
        ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    p = out / "step_time.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


def _plot_phases(plt, res, out: Path) -> Path:
    """Stacked forward/backward/update of each implementation for every configuration."""
    groups = _groups(res)
    keys = list(groups)
    fig, axes = plt.subplots(len(keys), 1, figsize=(10, 2.2 + 0.35 * max(len(v) for v in groups.values()) * len(keys)), squeeze=False)
    for ax, key in zip(axes[:, 0], keys):
        rows = sorted(groups[key], key=lambda r: -r["ms_median"])
        y = range(len(rows))
        left = [0.0] * len(rows)
        for ph, col in (("forward", "#4c72b0"), ("backward", "#dd8452"), ("update", "#55a868"), ("step", "#8c8c8c")):
            v = [r["phases"].get(ph, {}).get("ms_median", 0.0) for r in rows]
            if any(v):
                ax.barh(list(y), v, left=left, color=col, label=ph)
                left = [a + b for a, b in zip(left, v)]
        ax.set_yticks(list(y))
        ax.set_yticklabels([r["impl"] for r in rows], fontsize=8)
        ax.set_xlabel("ms (median per phase)")
        ax.set_title(f"{key[0]} B={key[1]} T={key[2]}, {key[3]} thread(s)", fontsize=9)
        # the fastest implementation is drawn last (top): room on its right for the legend
        ax.set_xlim(0, max(left) * 1.25 if left and max(left) > 0 else None)
        ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    p = out / "step_phases.png"
    fig.savefig(p, dpi=100)
    plt.close(fig)
    return p


def _plot_kernels(plt, ks, out: Path) -> Path:
    fig, axes = plt.subplots(len(ks), 2, figsize=(14, 4.5 * len(ks)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1.6]})
    for (ax1, ax2), k in zip(axes, ks):
        # left: time per step by group, stacked, for C and torch, with the measured step
        bars = [("C core", k["c_ms_per_step"], k.get("c_step_ms_min")),
                ("torch ops", k["torch_ms_per_step"], k.get("torch_step_ms_min"))]
        for i, (_label, groups, step) in enumerate(bars):
            bottom = 0.0
            for g in GROUPS:
                v = groups.get(g, 0.0)
                if v:
                    ax1.bar(i, v, 0.6, bottom=bottom, color=GROUP_COLORS[g], label=g if i == 0 or g not in k["c_ms_per_step"] else None)
                    bottom += v
            if step:
                ax1.plot([i - 0.35, i + 0.35], [step, step], "k--", lw=1)
                ax1.text(i + 0.36, step, "step", fontsize=7, va="center")
        ax1.set_xticks([0, 1])
        ax1.set_xticklabels([b[0] for b in bars])
        ax1.set_ylabel("ms per training step")
        ax1.set_title(f"Where the time goes: {k['model']} B={k['batch']} T={k['seq']}, {k['threads']}t", fontsize=9)
        ax1.legend(fontsize=7)
        # right: per kernel, ms per step, C vs torch
        rows = [r for r in k["rows"] if r.get("c_ms_per_step") or r.get("torch_ms_per_step")]
        y = list(range(len(rows)))
        ax2.barh([v - 0.2 for v in y], [r.get("c_ms_per_step") or 0 for r in rows], 0.4, color="#d62728", label="C core")
        ax2.barh([v + 0.2 for v in y], [r.get("torch_ms_per_step") or 0 for r in rows], 0.4, color="#1f77b4", label="torch op")
        ax2.set_yticks(y)
        ax2.set_yticklabels([r["name"] for r in rows], fontsize=7)
        ax2.invert_yaxis()
        ax2.set_xlabel("ms per training step (min per call x calls)")
        ax2.legend(fontsize=7)
    fig.tight_layout()
    p = out / "kernels.png"
    fig.savefig(p, dpi=100)
    plt.close(fig)
    return p


def _plot_scaling(plt, sc, out: Path) -> Path:
    sweeps = sc["sweeps"]
    extra = 1 if sc.get("kernels_T") else 0
    n = len(sweeps) + extra
    cols = 3 if n > 4 else 2
    rows_n = -(-n // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(6 * cols, 4.2 * rows_n), squeeze=False)
    flat = list(axes.flat)
    for ax, (var, curves) in zip(flat, sweeps.items()):
        for impl, c in curves.items():
            pts = c["points"]
            if not pts:
                continue
            fit = c.get("fit")
            lab = impl + (f" (k={fit['exponent']:.2f})" if fit else "")
            ax.loglog([p["x"] for p in pts], [p["ms_min"] for p in pts], "o-", label=lab, color=COLORS.get(impl))
        xs = sorted({p["x"] for c in curves.values() for p in c["points"]})
        if xs:  # the measured values as plain tick labels, not powers of ten
            ax.set_xticks(xs)
            ax.set_xticklabels([str(x) for x in xs])
            ax.minorticks_off()
        ax.set_xlabel(var)
        ax.set_ylabel("ms per step (min)")
        ax.set_title(f"step time vs {var}")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    if extra:
        ax = flat[len(sweeps)]
        for name, v in sc["kernels_T"].items():
            pts = v["points"]
            fit = v.get("fit")
            ax.loglog([p["x"] for p in pts], [p["ms_min"] for p in pts], ".-", lw=1,
                      label=f"{name} (k={fit['exponent']:.2f})" if fit else name)
        ts = sorted({p["x"] for v in sc["kernels_T"].values() for p in v["points"]})
        if ts:
            ax.set_xticks(ts)
            ax.set_xticklabels([str(t) for t in ts])
            ax.minorticks_off()
        ax.set_xlabel("T")
        ax.set_ylabel("ms per call (min)")
        ax.set_title("C kernels vs T")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=5, ncol=2)
    for ax in flat[n:]:
        ax.axis("off")
    fig.tight_layout()
    p = out / "scaling.png"
    fig.savefig(p, dpi=100)
    plt.close(fig)
    return p
