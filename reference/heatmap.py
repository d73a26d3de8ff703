"""Heatmaps of a lockstep parity run: layers x tensor kinds, each cell coloured by how close
the tensor came to its tolerance (tol_ratio = error / tolerance, the worst over steps; <= 1
passes, see tolerance.compare). Three panels: activations, gradients, optimizer state
(parameters after the update, adam_m, adam_v). The first row holds the tensors that belong
to no layer (embeddings, final layernorm, logits, loss, ...).

PNG needs matplotlib (the `plot` extra); the HTML version is self-contained (inline styles,
no scripts, no external files) and always written.
"""
from __future__ import annotations

import html
import math
from typing import Any, Dict, List, Optional, Tuple

#: colour scale: log10(tol_ratio) from LOG_MIN (far inside tolerance) to LOG_MAX (10x past it)
LOG_MIN, LOG_MAX = -4.0, 1.0

PANELS = (("activations", "forward"), ("gradients", "backward"), ("optimizer state", "update"))


def _panel_of(phase: str) -> Optional[str]:
    for title, ph in PANELS:
        if ph == phase:
            return title
    return None


def heatmap_data(result: Any) -> List[Dict[str, Any]]:
    """Per panel and part: title ('activations: layers', 'activations: other', ...), row
    labels ('h0', ... for the layer part; '—' for the tensors of no layer), column labels
    (tensor kinds in data-flow order), values[row][col] = worst tol_ratio or None (no such
    tensor), failed[row][col], and info[row][col] (the worst row, for tooltips)."""
    L = int(result.shape["num_layers"])
    out = []
    for title, phase in PANELS:
        kinds: List[str] = []
        cells: Dict[Tuple[Optional[int], str], Dict[str, Any]] = {}
        for r in result.rows:
            if r["phase"] != phase:
                continue
            k = r["kind"]
            if k not in kinds:
                kinds.append(k)
            cur = cells.get((r["layer"], k))
            worse = cur is None or (not r["passed"] and cur["passed"]) or \
                (r["passed"] == cur["passed"] and _num(r.get("tol_ratio")) > _num(cur.get("tol_ratio")))
            if worse:
                cells[(r["layer"], k)] = r
        layered = [k for k in kinds if any((l, k) in cells for l in range(L))]
        other = [k for k in kinds if k not in layered]
        for part, layers, cols in (("layers", list(range(L)), layered), ("other", [None], other)):
            if not cols:
                continue
            out.append({
                "title": f"{title}: {'per layer' if part == 'layers' else 'embeddings, head, totals'}",
                "panel": title, "part": part,
                "rows": [f"h{l}" if l is not None else "—" for l in layers], "cols": cols,
                "values": [[None if (l, k) not in cells else _num(cells[(l, k)].get("tol_ratio")) for k in cols]
                           for l in layers],
                "failed": [[(l, k) in cells and not cells[(l, k)]["passed"] for k in cols] for l in layers],
                "info": [[cells.get((l, k)) for k in cols] for l in layers],
            })
    return out


def _num(v: Any) -> float:
    if v is None:
        return 0.0
    v = float(v)
    return math.inf if math.isnan(v) else v


def _level(v: float) -> float:
    """log10(tol_ratio) clipped to [LOG_MIN, LOG_MAX]; 0 means exactly at tolerance."""
    if v <= 0:
        return LOG_MIN
    return max(LOG_MIN, min(LOG_MAX, math.log10(v)))


def _mix(a: Tuple[int, int, int], b: Tuple[int, int, int], t: float) -> Tuple[int, int, int]:
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b))  # type: ignore[return-value]


GREEN, YELLOW, ORANGE, RED = (26, 152, 80), (254, 224, 139), (253, 174, 97), (165, 0, 38)


def colour(v: Optional[float], failed: bool) -> str:
    """Within tolerance: green (far) -> yellow (at tolerance). Past it: orange -> dark red."""
    if v is None:
        return "#ffffff"
    lv = _level(v)
    if failed or lv > 0:
        rgb = _mix(ORANGE, RED, max(0.0, lv) / LOG_MAX)
    else:
        rgb = _mix(GREEN, YELLOW, (lv - LOG_MIN) / -LOG_MIN)
    return "#%02x%02x%02x" % rgb


def _tooltip(r: Optional[Dict[str, Any]]) -> str:
    if r is None:
        return ""
    parts = [f"{r['name']} step {r['step']}: {'ok' if r['passed'] else 'OUT OF TOLERANCE'} ({r['method']})",
             f"tol {r.get('tol_ratio')}", f"max_abs {r['max_abs']:.3e}", f"max_rel {r['max_rel']:.3e}",
             f"rmse {r['rmse']:.3e}"]
    if r.get("max_rel_vs_64") is not None:
        parts.append(f"max_rel vs fp64 {r['max_rel_vs_64']:.3e}")
    if r.get("attributed_ratio") is not None:
        parts.append(f"rmse ratio c/64 over 32/64 {r['attributed_ratio']:.3g}")
    return "; ".join(parts)


def render_html(result: Any) -> str:
    first = result.first_divergence
    first_text = html.escape(f"{first['name']} (step {first['step']}, {first['phase']})") if first else "none"
    sh = result.shape
    head = (f"<h1>pyllmc parity: {html.escape(str(result.model))} — {'PASS' if result.passed else 'FAIL'}</h1>"
            f"<p>L{sh['num_layers']} C{sh['channels']} NH{sh['num_heads']} V{sh['vocab_size']}, "
            f"batch {result.config['batch']} x {result.config['seq']}, {result.config['steps']} steps. "
            "Cell colour: the worst over steps of error / tolerance (green far inside, yellow at the "
            "tolerance, red past it; ✗ marks a failed tensor). Hover for the numbers.</p>"
            f"<p>First divergence: <b>{first_text}</b>"
            + (f"; injected faults: {html.escape('; '.join(result.faults))}" if result.faults else "") + "</p>")
    legend = "".join(
        f"<span class='lg' style='background:{colour(10 ** lv, False)}'>{10 ** lv:g}</span>" for lv in (-4, -3, -2, -1, 0)
    ) + f"<span class='lg' style='background:{colour(10.0, True)}'>&gt;1</span>"
    body = [head, f"<p>tol scale: {legend}</p>"]
    for p in heatmap_data(result):
        body.append(f"<h2>{html.escape(p['title'])}</h2><table><tr><th></th>")
        body += [f"<th class='c'><div>{html.escape(c)}</div></th>" for c in p["cols"]]
        body.append("</tr>")
        for i, label in enumerate(p["rows"]):
            body.append(f"<tr><th>{html.escape(label)}</th>")
            for j in range(len(p["cols"])):
                v, bad, info = p["values"][i][j], p["failed"][i][j], p["info"][i][j]
                body.append(f"<td style='background:{colour(v, bad)}' title='{html.escape(_tooltip(info), quote=True)}'>"
                            f"{'✗' if bad else ''}</td>")
            body.append("</tr>")
        body.append("</table>")
    style = ("body{font-family:sans-serif;font-size:13px} table{border-collapse:collapse}"
             " td{width:16px;height:16px;border:1px solid #eee;text-align:center;color:#fff;font-weight:bold}"
             " th{font-weight:normal;padding:0 4px;text-align:right}"
             " th.c{height:110px;vertical-align:bottom;padding:0} th.c div{writing-mode:vertical-rl;"
             "transform:rotate(180deg);white-space:nowrap} .lg{padding:2px 6px;margin-right:2px}")
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>pyllmc parity heatmap</title>"
            f"<style>{style}</style></head><body>" + "".join(body) + "</body></html>\n")


def write_heatmap_html(result: Any, path: str) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.write(render_html(result))
    return path


def write_heatmap_png(result: Any, path: str) -> Optional[str]:
    """The same heatmap as a PNG; None (nothing written) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
        from matplotlib.colors import LinearSegmentedColormap
    except ImportError:
        return None
    import numpy as np

    parts = heatmap_data(result)
    cmap = LinearSegmentedColormap.from_list(
        "tol", [(0.0, np.array(GREEN) / 255), (-LOG_MIN / (LOG_MAX - LOG_MIN), np.array(YELLOW) / 255),
                (-LOG_MIN / (LOG_MAX - LOG_MIN) + 1e-6, np.array(ORANGE) / 255), (1.0, np.array(RED) / 255)]
    ).with_extremes(bad="white")
    # one row of the figure per part; height follows the number of layers, width the kinds
    heights = [len(p["rows"]) + 4.5 for p in parts]  # + room for the rotated labels and title
    width = max(len(p["cols"]) for p in parts)
    fig, axes = plt.subplots(len(parts), 1, figsize=(max(9.0, 0.24 * width + 3.0), 0.22 * sum(heights) + 1.0),
                             gridspec_kw={"height_ratios": heights}, squeeze=False, layout="constrained")
    im = None
    for ax, p in zip(axes[:, 0], parts):
        vals = np.array([[np.nan if v is None else _level(v) for v in row] for row in p["values"]], dtype=float)
        # pad every part to the same number of columns so cells are the same size everywhere
        pad = np.full((vals.shape[0], width - vals.shape[1]), np.nan)
        im = ax.imshow(np.ma.masked_invalid(np.hstack([vals, pad])), cmap=cmap, vmin=LOG_MIN, vmax=LOG_MAX,
                       aspect="auto", interpolation="nearest")
        ax.set_yticks(range(len(p["rows"])))
        ax.set_yticklabels(p["rows"], fontsize=7)
        ax.set_xticks(range(len(p["cols"])))
        ax.set_xticklabels(p["cols"], rotation=90, fontsize=7)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        for i in range(len(p["rows"])):
            for j in range(len(p["cols"])):
                if p["failed"][i][j]:
                    ax.text(j, i, "x", ha="center", va="center", color="white", fontsize=8, fontweight="bold")
        ax.set_title(p["title"], fontsize=9, loc="left")
    first = result.first_divergence
    fig.suptitle(f"pyllmc parity {result.model}: {'PASS' if result.passed else 'FAIL'}; first divergence: "
                 f"{first['name'] + ' (step ' + str(first['step']) + ')' if first else 'none'}", fontsize=10)
    cb = fig.colorbar(im, ax=axes[:, 0].tolist(), shrink=0.5, aspect=30)
    cb.set_label("log10(error / tolerance), worst over steps (> 0 fails)", fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = ["heatmap_data", "render_html", "write_heatmap_html", "write_heatmap_png", "colour"]
