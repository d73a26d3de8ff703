"""Building blocks for C-core-vs-reference parity (used by the tests and the harness).

The C model is used only through the pyllmc.Model interface (duck-typed: forward, zero_grad,
backward, acts, grads, params, adam_m, adam_v, ...), so this module does not load the C library.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from .capture import Capture, activation_names, capture, mean_inputs
from .convert import PARAM_NAMES, model_tensors
from .tolerance import compare, compare_dicts


def c_activations(model: Any, vocab_size: int, names: Optional[Sequence[str]] = None) -> Dict[str, np.ndarray]:
    """Copies of the C model's activations under the reference's shapes: logits and probs
    are cut to the first V columns (the reference has no padded columns)."""
    acts = model.acts
    out = {}
    for n in (names if names is not None else list(acts)):
        if n not in acts:
            raise KeyError(f"the C model exposes no activation {n!r}")
        a = np.array(acts[n], copy=True)
        if n in ("logits", "probs"):
            a = a[..., :vocab_size]
        out[n] = a
    return out


def padded_columns(model: Any, name: str, vocab_size: int) -> np.ndarray:
    """The columns V..Vp-1 of a C (B, T, Vp) activation (logits or probs)."""
    return np.array(model.acts[name][..., vocab_size:], copy=True)


def compare_scalar(name: str, c: float, r32: float, r64: Optional[float] = None,
                   ref32_alts: Optional[Sequence[float]] = None, **kw: Any) -> Dict[str, Any]:
    return compare(name, np.array([c]), np.array([r32]), None if r64 is None else np.array([r64]),
                   ref32_alts=[np.array([a]) for a in (ref32_alts or ())], **kw)


def forward_backward_rows(model_c: Any, ref32: Any, ref64: Any, inputs: Any, targets: Any,
                          padded_vocab_size: int, *, step: Optional[int] = None,
                          loss_scale: float = 1.0) -> Dict[str, Any]:
    """One forward + backward of the C model and of the reference (fp32, and fp64 if given)
    on the same batch; returns dict(rows=[...comparison rows...], c_loss, ref=Capture32,
    ref64=Capture64). Rows: loss, every activation in forward order, then grad.<param>
    (per layer)."""
    V = int(ref32.config.vocab_size)
    L = int(ref32.config.n_layer)
    c_loss = model_c.forward(np.asarray(inputs), np.asarray(targets))
    names = activation_names(L, with_targets=True)
    # copied before backward, which turns probs into d logits in place
    c_acts = c_activations(model_c, V, names)
    model_c.zero_grad()
    model_c.backward(loss_scale)
    c_grads = model_tensors(model_c.grads)
    r32: Capture = capture(ref32, inputs, targets, loss_scale=loss_scale, padded_vocab_size=padded_vocab_size)
    r64: Optional[Capture] = None
    if ref64 is not None:
        r64 = capture(ref64, inputs, targets, loss_scale=loss_scale, padded_vocab_size=padded_vocab_size)
    # the loss is the mean of the per-position losses (tolerance.py: Means)
    mean_of = None if r64 is None else (r32.acts["losses"], r64.acts["losses"])
    rows: List[Dict[str, Any]] = [compare_scalar("loss", c_loss, r32.loss, None if r64 is None else r64.loss, step=step,
                                                 mean_of=mean_of)]
    rows += compare_dicts(c_acts, r32.acts, None if r64 is None else r64.acts, names, step=step,
                          mean_inputs=mean_inputs(L))
    rows += compare_dicts(c_grads, r32.grads, None if r64 is None else r64.grads, PARAM_NAMES,
                          prefix="grad.", step=step)
    return {"rows": rows, "c_loss": c_loss, "ref": r32, "ref64": r64}


def state_rows(c: Mapping[str, np.ndarray], r32: Mapping[str, np.ndarray],
               r64: Optional[Mapping[str, np.ndarray]], prefix: str, step: Optional[int] = None,
               **kw: Any) -> List[Dict[str, Any]]:
    """Rows for a parameter-shaped state (params, grads, adam_m, adam_v), per layer."""
    return compare_dicts(c, r32, r64, PARAM_NAMES, prefix=prefix, step=step, **kw)
