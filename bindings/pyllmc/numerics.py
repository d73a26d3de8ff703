"""Numerical faults: detecting a non-finite loss or gradient, and naming where it began.

Detection costs nothing on a healthy step: the Trainer already has two scalars that turn
non-finite exactly when something upstream did - each micro-batch's loss (the mean of every
position's loss, so one NaN/inf position makes it non-finite) and the global gradient norm
(a sum over every gradient value). Only when one of them is non-finite are tensors scanned,
through the model's named-tensor tables, to find the FIRST one in data-flow order that holds
a NaN or an infinity:

- a non-finite loss: the activations of that forward pass, in the order the forward computes
  them (``encoded``, ``h0.ln1_mean``, ``h0.ln1_rstd``, ``h0.ln1``, ``h0.qkv``, ``h0.att``, ...,
  ``h0.residual3``, ``h1...``, ``lnf``, ``logits``, ``probs``, ``losses``). The scan runs
  before ``backward``, which overwrites ``probs`` with the logit gradients;
- a non-finite gradient norm: first the activations again (a NaN that only the backward
  reads, such as one in ``h0.att`` or a layernorm's ``rstd``, leaves the loss finite; the
  backward overwrites only ``probs``, which is skipped; with gradient accumulation these are
  the last micro-batch's), then the parameter gradients in the order the backward computes
  them (``lnfw``, ``lnfb``, then from the last layer down ``h{l}.fcprojw``, ``h{l}.fcprojb``,
  ``h{l}.fcw``, ... ``h{l}.ln1w``, ``h{l}.ln1b``,
  then ``wpe`` and ``wte``, which collects both the classifier and the embedding gradient).
  The first tensor is the activation when there is one (the forward ran before the
  backward), else the gradient;
- in both cases the parameters themselves (forward order, per layer, e.g. ``h3.fcw``): a
  non-finite weight is the usual root cause and cannot be cured by skipping a batch.

The result is a ``NonFiniteReport`` whose ``message`` names the step, the first non-finite
tensor as ``"<kind> <name>"`` (``"acts h3.fch_gelu"``, ``"grads h3.qkvw"``) and its layer;
``NonFiniteError`` (``pyllmc.errors``) carries it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from .errors import NonFiniteError

# Order of the per-layer activations inside one transformer block, as the forward computes
# them (a layernorm's mean and rstd come before its output).
_LAYER_ACTS = ("ln1_mean", "ln1_rstd", "ln1", "qkv", "att", "atty", "attproj", "residual2",
               "ln2_mean", "ln2_rstd", "ln2", "fch", "fch_gelu", "fcproj", "residual3")
_PRE_ACTS = ("encoded",)
_POST_ACTS = ("lnf_mean", "lnf_rstd", "lnf", "logits", "probs", "losses")
# Parameters read by one block, forward order, as (weight, bias) of each kernel. The backward
# visits the kernels in reverse order (and the blocks from the last to the first); each
# kernel's backward yields its weight and bias gradients together, listed weight first.
_LAYER_KERNELS = (("ln1w", "ln1b"), ("qkvw", "qkvb"), ("attprojw", "attprojb"),
                  ("ln2w", "ln2b"), ("fcw", "fcb"), ("fcprojw", "fcprojb"))
_LAYER_PARAMS = tuple(p for pair in _LAYER_KERNELS for p in pair)
_LAYERED = re.compile(r"^h(\d+)\.(.+)$")
# Scanning in chunks keeps the temporary boolean array small for the large activation
# buffers of big models (logits of d12 at B=8, T=1024 are 400M values).
_CHUNK = 1 << 22


@dataclass(frozen=True)
class Finding:
    """One tensor (or one layer of a layer-stacked parameter) holding non-finite values."""

    kind: str  #: "acts", "grads" or "params"
    name: str  #: tensor name in the model's table, per layer for stacked parameters ("h3.qkvw")
    layer: Optional[int]  #: transformer block, None for wte/wpe/lnf*/logits/...
    count: int  #: how many values are non-finite
    numel: int
    nan: int  #: of which NaN (the rest are +-inf)
    index: Tuple[int, ...]  #: position of the first non-finite value

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name}"

    def describe(self) -> str:
        kinds = []
        if self.nan:
            kinds.append("nan")
        if self.count > self.nan:
            kinds.append("inf")
        where = f"layer {self.layer}; " if self.layer is not None else ""
        return (f"{self.label} ({where}{self.count} of {self.numel} values non-finite ({'/'.join(kinds)}), "
                f"first at index {list(self.index)})")


@dataclass
class NonFiniteReport:
    """What went non-finite at one step (see the module docstring)."""

    step: int
    what: str  #: "loss" or "grad_norm"
    value: float  #: the non-finite loss or gradient norm
    first: Optional[Finding]  #: first non-finite tensor in data-flow order (None: not found)
    bad_params: List[Finding] = field(default_factory=list)
    first_grad: Optional[Finding] = None  #: gradient faults: first non-finite gradient, backward order
    micro_batch: Optional[int] = None  #: 0-based micro-batch of the step (loss faults)
    micro_batches: int = 1
    note: str = ""

    @property
    def tensor(self) -> Optional[str]:
        """``"<kind> <name>"`` of the first non-finite tensor, e.g. ``"acts h3.fch"``."""
        return self.first.label if self.first is not None else None

    @property
    def layer(self) -> Optional[int]:
        return self.first.layer if self.first is not None else None

    @property
    def message(self) -> str:
        if self.what == "loss":
            head = f"step {self.step}: the loss is {_fmt(self.value)}"
            if self.micro_batches > 1 and self.micro_batch is not None:
                head += f" (micro-batch {self.micro_batch + 1} of {self.micro_batches})"
            order = "first non-finite tensor in data-flow order"
        else:
            head = f"step {self.step}: the gradient norm is {_fmt(self.value)}"
            order = "first non-finite tensor in data-flow order"
        parts = [head]
        if self.first is not None:
            parts.append(f"{order}: {self.first.describe()}")
        if self.first_grad is not None and self.first_grad is not self.first:
            parts.append(f"first non-finite gradient in backward order: {self.first_grad.describe()}")
        if self.bad_params:
            names = ", ".join(f.name for f in self.bad_params[:6]) + (" ..." if len(self.bad_params) > 6 else "")
            parts.append(f"non-finite parameters: {names}")
        if self.note:
            parts.append(self.note)
        return "; ".join(parts)

    def as_dict(self) -> Dict[str, Any]:
        return {"step": self.step, "what": self.what, "tensor": self.tensor, "layer": self.layer,
                "grad": self.first_grad.label if self.first_grad is not None else None,
                "bad_params": [f.name for f in self.bad_params], "message": self.message}

    def error(self) -> NonFiniteError:
        return NonFiniteError(self.message, report=self)


def _fmt(v: float) -> str:
    return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")


def is_finite(x: Optional[float]) -> bool:
    return x is not None and math.isfinite(x)


# ------------------------------------------------------------------ orders
def _act_rank(name: str, table_pos: int) -> Tuple[int, int, int]:
    """Sort key putting activation names in forward order; names not known here (a tensor a
    later core adds) keep their table position after the known ones of their group."""
    m = _LAYERED.match(name)
    if m:
        layer, base = int(m.group(1)), m.group(2)
        pos = _LAYER_ACTS.index(base) if base in _LAYER_ACTS else len(_LAYER_ACTS)
        return (1 + layer, pos, table_pos)
    if name in _PRE_ACTS:
        return (0, _PRE_ACTS.index(name), table_pos)
    pos = _POST_ACTS.index(name) if name in _POST_ACTS else len(_POST_ACTS)
    return (1 << 30, pos, table_pos)


def activation_order(names: Iterable[str]) -> List[str]:
    """Activation names in the order the forward pass computes them."""
    names = list(names)
    pos = {n: i for i, n in enumerate(names)}
    return sorted(names, key=lambda n: _act_rank(n, pos[n]))


def parameter_order(num_layers: int, *, backward: bool = False) -> List[Tuple[str, Optional[int]]]:
    """(parameter, layer) pairs in forward order (the order the forward reads them), or in
    the order the backward produces their gradients."""
    fwd: List[Tuple[str, Optional[int]]] = [("wte", None), ("wpe", None)]
    for l in range(num_layers):
        fwd += [(p, l) for p in _LAYER_PARAMS]
    fwd += [("lnfw", None), ("lnfb", None)]
    if not backward:
        return fwd
    bwd: List[Tuple[str, Optional[int]]] = [("lnfw", None), ("lnfb", None)]
    for l in reversed(range(num_layers)):
        bwd += [(p, l) for pair in reversed(_LAYER_KERNELS) for p in pair]
    return bwd + [("wpe", None), ("wte", None)]


# ------------------------------------------------------------------ scanning
def scan(arr: np.ndarray, kind: str, name: str, layer: Optional[int]) -> Optional[Finding]:
    """A Finding when ``arr`` holds a NaN or an infinity, else None."""
    a = np.asarray(arr)
    flat = a.reshape(-1)
    first = -1
    count = nan = 0
    for lo in range(0, flat.size, _CHUNK):
        chunk = flat[lo: lo + _CHUNK]
        bad = ~np.isfinite(chunk)
        c = int(np.count_nonzero(bad))
        if c:
            if first < 0:
                first = lo + int(np.argmax(bad))
            count += c
            nan += int(np.count_nonzero(np.isnan(chunk)))
    if not count:
        return None
    index = tuple(int(i) for i in np.unravel_index(first, a.shape)) if a.ndim else ()
    return Finding(kind, name, layer, count, int(flat.size), nan, index)


def _layer_of(name: str) -> Optional[int]:
    m = _LAYERED.match(name)
    return int(m.group(1)) if m else None


def first_nonfinite_activation(model: Any, skip: Sequence[str] = ()) -> Optional[Finding]:
    """The first activation of the last forward, in forward order, holding a NaN/inf
    (``skip``: names not to look at)."""
    acts = model.acts
    V = model.config.vocab_size
    for name in activation_order(acts.keys()):
        if name in skip:
            continue
        a = acts[name]
        if name in ("logits", "probs"):  # the padded columns V..Vp are not part of the model
            a = a[..., :V]
        f = scan(a, "acts", name, _layer_of(name))
        if f is not None:
            return f
    return None


def _per_layer(model: Any, kind: str, order: Sequence[Tuple[str, Optional[int]]]):
    views = getattr(model, kind)
    cache: Dict[str, np.ndarray] = {}
    for pname, layer in order:
        if pname not in cache:
            cache[pname] = views[pname]  # one host copy per tensor on a CUDA model
        arr = cache[pname]
        if layer is None:
            yield pname, None, arr
        else:
            yield f"h{layer}.{pname}", layer, arr[layer]


def nonfinite_tensors(model: Any, kind: str, *, backward: bool = False, first_only: bool = False) -> List[Finding]:
    """Parameters (``kind="params"``) or gradients (``"grads"``), per layer, that hold
    non-finite values, in forward (or backward) order."""
    out: List[Finding] = []
    for name, layer, arr in _per_layer(model, kind, parameter_order(model.config.num_layers, backward=backward)):
        f = scan(arr, kind, name, layer)
        if f is not None:
            out.append(f)
            if first_only:
                break
    return out


def diagnose_loss(model: Any, step: int, loss: float, *, micro_batch: int = 0, micro_batches: int = 1
                  ) -> NonFiniteReport:
    """Call right after a forward whose loss is non-finite (before backward)."""
    first = first_nonfinite_activation(model)
    bad = nonfinite_tensors(model, "params")
    note = ""
    if first is None:
        note = "every activation is finite (the loss itself overflowed)"
    return NonFiniteReport(step=step, what="loss", value=float(loss), first=first, bad_params=bad,
                           micro_batch=micro_batch, micro_batches=micro_batches, note=note)


def diagnose_gradients(model: Any, step: int, norm: float) -> NonFiniteReport:
    """Call after backward when the global gradient norm is non-finite."""
    act = first_nonfinite_activation(model, skip=("probs",))  # backward wrote d logits over probs
    found = nonfinite_tensors(model, "grads", backward=True, first_only=True)
    grad = found[0] if found else None
    first = act if act is not None else grad
    bad = nonfinite_tensors(model, "params")
    note = ""
    if grad is None:
        # every gradient finite, yet the sum of their squares overflowed float32
        biggest = max(float(np.max(np.abs(g))) if g.size else 0.0 for g in model.grads.values())
        note = f"every gradient is finite but their sum of squares overflowed float32 (largest |g| = {biggest:.3g})"
    return NonFiniteReport(step=step, what="grad_norm", value=float(norm), first=first, bad_params=bad,
                           first_grad=grad, note=note)


def check_parameters(model: Any) -> List[Finding]:
    """Non-finite parameters, per layer, in forward order (empty when all are finite)."""
    return nonfinite_tensors(model, "params")
