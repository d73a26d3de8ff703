"""Reports of a lockstep parity run (lockstep.LockstepResult):

- parity.json: exactly the contract of docs/design.md ("passed", "first_divergence", "tensors"
  with name/step/max_abs/max_rel/rmse/passed, "losses" with "c" and "torch"); scripts and CI
  read it, so it carries nothing else;
- parity_detail.json: every comparison field of every row (fp64 attribution, which test
  decided, worst element), the configuration, learning rates, gradient norms, fp64 losses
  and the worst error per tensor kind;
- report.txt and the terminal: every tensor (worst over steps), losses, worst error per
  tensor kind against fp64, the worst tensors, the first divergence, the verdict;
- heatmaps (heatmap.py).
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Dict, Iterable, List, Mapping, Sequence

CONTRACT_ROW_KEYS = ("name", "step", "max_abs", "max_rel", "rmse", "passed")


def _finite_or_none(v: Any) -> Any:
    """JSON has no inf/NaN: a C value that is not finite is reported as null (the row fails)."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):  # numpy scalars
        try:
            obj = obj.item()
        except (TypeError, ValueError):
            pass
    return _finite_or_none(obj)


def contract_dict(result: Any) -> Dict[str, Any]:
    """The parity.json object (the contract of docs/design.md, nothing more)."""
    first = result.first_divergence
    return _clean({
        "passed": bool(result.passed),
        "first_divergence": None if first is None else first["name"],
        "tensors": [{k: r[k] for k in CONTRACT_ROW_KEYS} for r in result.rows],
        "losses": {"c": list(result.losses_c), "torch": list(result.losses_torch)},
    })


def worst_per_kind(rows: Iterable[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """Per tensor kind (layers and steps pooled: 'qkv', 'grad.qkvw', 'adam_v.qkvw', 'qkvw',
    'logits', ...): how many tensors, how many failed, and the worst of each measure with
    the tensor it came from. Kinds come out in first-seen (data-flow) order."""
    out: Dict[str, Dict[str, Any]] = {}
    for r in rows:
        if r.get("phase") == "init":
            continue
        k = r["kind"]
        e = out.setdefault(k, {"kind": k, "count": 0, "failed": 0})
        e["count"] += 1
        e["failed"] += 0 if r["passed"] else 1
        for key in ("max_rel", "max_abs", "max_rel_vs_64", "attributed_ratio", "tol_ratio"):
            v = r.get(key)
            if v is None:
                continue
            cur = e.get(key)
            if cur is None or v > cur or (isinstance(v, float) and math.isnan(v)):
                e[key] = v
                e[key + "_at"] = f"{r['name']}@{r['step']}"
    return list(out.values())


def detail_dict(result: Any) -> Dict[str, Any]:
    first = result.first_divergence
    return _clean({
        "passed": bool(result.passed),
        "model": result.model,
        "shape": result.shape,
        "config": result.config,
        "faults": result.faults,
        "seconds": result.seconds,
        "first_divergence": first,
        "first_divergence_by_phase": {p: result.first_in_phase(p) for p in ("init", "forward", "backward", "update")},
        "losses": {"c": result.losses_c, "torch": result.losses_torch, "torch_fp64": result.losses_fp64},
        "grad_norms": {"c": result.grad_norms_c, "torch": result.grad_norms_torch},
        "lrs": result.lrs,
        "worst_per_kind": worst_per_kind(result.rows),
        "tensors": result.rows,
    })


def write_json(obj: Any, path: str) -> None:
    from ..atomic import atomic_write

    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=1, allow_nan=False)
        f.write("\n")


# ------------------------------------------------------------------ text


def _e(v: Any) -> str:
    if v is None:
        return "      -  "
    if isinstance(v, float) and not math.isfinite(v):
        return f"{v!s:>9}"
    return f"{v:9.2e}"


def _r(v: Any) -> str:
    if v is None:
        return "     -"
    if isinstance(v, float) and not math.isfinite(v):
        return f"{v!s:>6}"
    return f"{v:6.3f}" if v < 10 else f"{v:6.0f}" if v < 1e6 else f"{v:6.0e}"


ROW_HEADER = (f"  {'tensor':<22} {'':3} {'step':>4} {'max_abs':>9} {'max_rel':>9} {'rmse':>9} "
              f"{'rel vs64':>9} {'c/64 ÷ 32/64':>12} {'tol':>6}  test")


def format_row(r: Mapping[str, Any]) -> str:
    """One tensor: errors against fp32 torch, max_rel against fp64, the attribution ratio
    (C's RMS error vs fp64 over fp32 torch's), tol = error / tolerance (<= 1 passes)."""
    s = (f"  {r['name']:<22} {'ok ' if r['passed'] else 'BAD'} {r['step']:>4} {_e(r['max_abs'])} {_e(r['max_rel'])} "
         f"{_e(r['rmse'])} {_e(r.get('max_rel_vs_64'))} {_r(r.get('attributed_ratio')):>12} {_r(r.get('tol_ratio'))}  "
         f"{r['method']}")
    if not r["passed"] and "worst_index" in r:
        s += f"  worst at {r['worst_index']}: C {r['worst_c']:.7g} torch {r['worst_ref']:.7g}"
    return s


def _worst_by_name(rows: Sequence[Mapping[str, Any]]) -> List[Mapping[str, Any]]:
    """One row per tensor name (the step where it came closest to failing), first-seen order."""
    best: Dict[str, Mapping[str, Any]] = {}
    for r in rows:
        cur = best.get(r["name"])
        if cur is None or (not r["passed"] and cur["passed"]) or \
                (r["passed"] == cur["passed"] and (r.get("tol_ratio") or 0) > (cur.get("tol_ratio") or 0)):
            best[r["name"]] = r
    return list(best.values())


def tensor_listing(result: Any) -> List[str]:
    """Every tensor of every layer, worst step each, grouped: embeddings/head, then layers."""
    rows = [r for r in result.rows if r["phase"] != "init"]
    worst = _worst_by_name(rows)
    init = [r for r in result.rows if r["phase"] == "init"]
    lines = []
    n_init_bad = sum(1 for r in init if not r["passed"])
    lines.append(f"step 0: {len(init)} parameter tensors as loaded into the C core: "
                 + ("all bit-identical to the reference" if all(r["max_abs"] == 0 for r in init) else
                    f"{n_init_bad} differ beyond tolerance" if n_init_bad else "within tolerance"))
    lines += [format_row(r) for r in init if not r["passed"]]
    lines.append("every tensor, at the step where it came closest to its tolerance "
                 "(tol = error / tolerance, <= 1 passes):")
    lines.append(ROW_HEADER)
    groups: Dict[Any, List[Mapping[str, Any]]] = {}
    for r in worst:
        groups.setdefault(r["layer"], []).append(r)
    if None in groups:
        lines.append(" embeddings, final layernorm, head, loss, gradient norm:")
        lines += [format_row(r) for r in groups.pop(None)]
    for layer in sorted(groups):
        lines.append(f" layer {layer}:")
        lines += [format_row(r) for r in groups[layer]]
    return lines


def per_step_listing(result: Any) -> List[str]:
    lines = [ROW_HEADER]
    last = None
    for r in result.rows:
        key = (r["step"], r["phase"])
        if key != last:
            lines.append(f" step {r['step']}, {r['phase']}:")
            last = key
        lines.append(format_row(r))
    return lines


def kind_table(result: Any) -> List[str]:
    lines = [f"  {'kind':<16} {'n':>4} {'bad':>4} {'max_rel vs fp32':>15} {'max_rel vs fp64':>15} "
             f"{'c/64 ÷ 32/64':>12} {'tol':>6}  worst (vs fp64) at"]
    for e in worst_per_kind(result.rows):
        lines.append(f"  {e['kind']:<16} {e['count']:>4} {e['failed']:>4} {_e(e.get('max_rel')):>15} "
                     f"{_e(e.get('max_rel_vs_64')):>15} {_r(e.get('attributed_ratio')):>12} {_r(e.get('tol_ratio'))}  "
                     f"{e.get('max_rel_vs_64_at', e.get('max_rel_at', ''))}")
    return lines


def summary_lines(result: Any, top: int = 10, files: Sequence[str] = ()) -> List[str]:
    cfg = result.config
    sh = result.shape
    lines = []
    lines.append(f"model {result.model}: L{sh['num_layers']} C{sh['channels']} NH{sh['num_heads']} "
                 f"V{sh['vocab_size']} (Vp {sh['padded_vocab_size']}), batch {cfg['batch']} x {cfg['seq']}, "
                 f"{cfg['steps']} steps, seed {cfg['seed']}, {cfg['schedule']} lr {cfg['lr']:g} "
                 f"(warmup {cfg['warmup']}), AdamW betas ({cfg['beta1']}, {cfg['beta2']}) eps {cfg['eps']:g} "
                 f"weight decay {cfg['weight_decay']:g}{' (2-D weights)' if cfg['decay_matrices_only'] else ''}, "
                 f"grad clip {cfg['grad_clip']:g}; fp64 reference {'on' if cfg['fp64'] else 'OFF'}, "
                 "every step judged from the C core's state")
    if result.faults:
        lines.append("injected faults (C side): " + "; ".join(result.faults))
    lines.append("losses:")
    lines.append(f"  {'step':>4} {'lr':>9} {'C':>12} {'torch fp32':>12} {'torch fp64':>12} {'|C - fp32|':>10} "
                 f"{'grad norm C':>12} {'torch':>12}")
    for i, (lc, lt) in enumerate(zip(result.losses_c, result.losses_torch)):
        l64 = result.losses_fp64[i]
        lines.append(f"  {i + 1:>4} {result.lrs[i]:9.3g} {lc:12.7f} {lt:12.7f} "
                     f"{(f'{l64:12.7f}' if l64 is not None else '           -')} {abs(lc - lt):10.2e} "
                     f"{result.grad_norms_c[i]:12.6g} {result.grad_norms_torch[i]:12.6g}")
    lines.append("worst error per tensor kind (layers and steps pooled; c/64 ÷ 32/64 = C's RMS error "
                 "against fp64 over fp32 torch's own):")
    lines += kind_table(result)
    ranked = sorted((r for r in result.rows if r.get("tol_ratio") is not None),
                    key=lambda r: (r["passed"], -(r["tol_ratio"] if not math.isnan(r["tol_ratio"]) else math.inf)))
    lines.append(f"worst {min(top, len(ranked))} tensors (closest to or past their tolerance):")
    lines.append(ROW_HEADER)
    lines += [format_row(r) for r in ranked[:top]]
    n = len(result.rows)
    bad = [r for r in result.rows if not r["passed"]]
    n_att = sum(1 for r in result.rows if r["passed"] and r["method"] == "fp64-attributed")
    first = result.first_divergence
    if first is None:
        lines.append("first divergence: none")
    else:
        lines.append(f"first divergence: {first['name']} (step {first['step']}, {first['phase']}): "
                     f"max_abs {first['max_abs']:.3e}, max_rel {first['max_rel']:.3e}"
                     + (f", worst at {first['worst_index']}: C {first['worst_c']:.7g} vs torch {first['worst_ref']:.7g}"
                        if 'worst_index' in first else ""))
    if files:
        lines.append("wrote " + ", ".join(files))
    verdict = "PASS" if not bad else "FAIL"
    lines.append(f"{verdict}: {n - len(bad)} of {n} tensor comparisons within tolerance "
                 f"({n - len(bad) - n_att} by the fp32 test, {n_att} fp64-attributed), {len(bad)} out of tolerance; "
                 f"{result.seconds:.0f} s")
    return lines


def write_reports(result: Any, out_dir: str, *, heatmaps: bool = True) -> Dict[str, str]:
    """parity.json, parity_detail.json, report.txt and the heatmaps (PNG when matplotlib is
    installed, HTML always) into out_dir; returns {what: path}."""
    from .heatmap import write_heatmap_html, write_heatmap_png

    os.makedirs(out_dir, exist_ok=True)
    paths = {"parity.json": os.path.join(out_dir, "parity.json"),
             "parity_detail.json": os.path.join(out_dir, "parity_detail.json"),
             "report.txt": os.path.join(out_dir, "report.txt")}
    write_json(contract_dict(result), paths["parity.json"])
    write_json(detail_dict(result), paths["parity_detail.json"])
    if heatmaps:
        paths["heatmap.html"] = write_heatmap_html(result, os.path.join(out_dir, "heatmap.html"))
        png = write_heatmap_png(result, os.path.join(out_dir, "heatmap.png"))
        if png:
            paths["heatmap.png"] = png
    text = summary_lines(result, files=list(paths.values()))
    with open(paths["report.txt"], "w") as f:
        f.write("\n".join(tensor_listing(result) + [""] + text + ["", "every comparison, in data-flow order:"]
                          + per_step_listing(result)) + "\n")
    return paths
