"""Loss-curve PNG (train and val) from metrics rows, with matplotlib's Agg backend."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Union

import numpy as np

from .atomic import atomic_write


def read_metrics(path: Union[str, "os.PathLike[str]"]) -> List[Dict[str, Any]]:
    """The rows of a metrics.jsonl file (lines that are not JSON objects are skipped)."""
    import json

    rows = []
    with open(path, "r", encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if isinstance(r, dict):
                rows.append(r)
    return rows


def _smooth(y: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or y.size < window:
        return y
    k = np.ones(window) / window
    pad = np.concatenate([np.full(window - 1, y[0]), y])
    return np.convolve(pad, k, mode="valid")


def plot_loss_curve(rows: Iterable[Dict[str, Any]], path: Union[str, "os.PathLike[str]"],
                    title: Optional[str] = None) -> Optional[Path]:
    """Write the loss curve; returns the path, or None when matplotlib is missing (or no
    row has a finite loss)."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except Exception:
        return None
    # steps whose loss was non-finite (written as null, e.g. skipped updates) are left out:
    # they have no point on the curve, and NaN would break the axis limits
    all_rows = list(rows)
    rows = [r for r in all_rows if r.get("loss") is not None and np.isfinite(float(r["loss"]))]
    if not rows:
        return None
    steps = np.array([r["step"] for r in rows], dtype=float)
    loss = np.array([r["loss"] for r in rows], dtype=float)
    val = [(r["step"], r["val_loss"]) for r in all_rows
           if r.get("val_loss") is not None and np.isfinite(float(r["val_loss"]))]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    try:
        ax.plot(steps, loss, color="tab:blue", alpha=0.3, lw=1, label="train loss")
        w = max(1, len(loss) // 50)
        if w > 1:
            ax.plot(steps, _smooth(loss, w), color="tab:blue", lw=1.8, label=f"train (mean of {w})")
        if val:
            vs, vl = zip(*val)
            ax.plot(vs, vl, "o-", color="tab:orange", lw=1.8, ms=4, label="val loss")
        # focus on the part of the run after the initial drop (its first values are far above)
        if loss.size >= 20:
            tail = loss[loss.size // 10:]
            top = float(np.percentile(tail, 99))
            vals = [v for _, v in val] + [top]
            hi = max(vals) + 0.1 * (max(vals) - float(np.min(tail)) + 1e-9)
            if hi < float(np.max(loss)):
                ax.set_ylim(min(float(np.min(loss)), min(vals)) - 0.05 * (hi - float(np.min(loss))), hi)
        ax.set_xlabel("step")
        ax.set_ylabel("cross-entropy loss")
        if title:
            ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = Path(path)
        with atomic_write(path, "wb") as f:
            fig.savefig(f, format="png")
    finally:
        plt.close(fig)
    return path
