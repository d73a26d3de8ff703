"""Capture the unmodified HF GPT-2's activations and gradients under the C core's names.

Only forward hooks on HF's own modules are used (no copy of the model code). Where a C
tensor is not an HF module output, it is read at the point where HF consumes it:

  encoded         output of transformer.drop (wte + wpe, the input of block 0)
  h{l}.ln1        output of ln_1         h{l}.ln1_mean/_rstd  statistics of ln_1's input
  h{l}.qkv        output of attn.c_attn  h{l}.att             attention probs (attn output[1])
  h{l}.atty       input of attn.c_proj   h{l}.attproj         output of attn.c_proj
  h{l}.residual2  input of ln_2          h{l}.ln2(_mean/_rstd) as ln1
  h{l}.fch        output of mlp.c_fc     h{l}.fch_gelu        input of mlp.c_proj
  h{l}.fcproj     output of mlp.c_proj   h{l}.residual3       output of block l
  lnf(_mean/_rstd) ln_f                  logits (B,T,V)       model output
  probs           softmax(logits)        losses (B,T)         per-position cross-entropy

The loss is computed here from the logits and already-shifted targets (mean
cross-entropy), not through HF's `labels` (which shifts internally).
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F

from .convert import hf_to_params

LAYER_ACTS = ("ln1", "ln1_mean", "ln1_rstd", "qkv", "att", "atty", "attproj", "residual2",
              "ln2", "ln2_mean", "ln2_rstd", "fch", "fch_gelu", "fcproj", "residual3")


def activation_names(num_layers: int, with_targets: bool = True) -> List[str]:
    """The C core's activation names, in forward order."""
    names = ["encoded"]
    for l in range(num_layers):
        names += [f"h{l}.{a}" for a in LAYER_ACTS]
    names += ["lnf", "lnf_mean", "lnf_rstd", "logits"]
    if with_targets:
        names += ["probs", "losses"]
    return names


def mean_inputs(num_layers: int) -> Dict[str, str]:
    """Each layernorm mean statistic -> the activation whose rows it is the mean of (its
    input), for judging it as a tensor of means (tolerance.py: Tensors of means)."""
    out = {}
    for l in range(num_layers):
        out[f"h{l}.ln1_mean"] = "encoded" if l == 0 else f"h{l - 1}.residual3"
        out[f"h{l}.ln2_mean"] = f"h{l}.residual2"
    out["lnf_mean"] = f"h{num_layers - 1}.residual3" if num_layers else "encoded"
    return out


@dataclasses.dataclass
class Capture:
    """One reference forward (and optionally backward), in C names and layouts, as numpy."""

    acts: Dict[str, np.ndarray]
    loss: Optional[float]
    grads: Optional[Dict[str, np.ndarray]]  # C param name -> gradient in the C layout
    act_grads: Optional[Dict[str, np.ndarray]] = None  # d(loss*scale)/d(activation)
    dtype: Any = None


def lm_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-position cross-entropy (B, T) of logits (B, T, V) against targets (B, T)."""
    B, T, V = logits.shape
    return F.cross_entropy(logits.reshape(B * T, V), targets.reshape(B * T).long(),
                           reduction="none").reshape(B, T)


def _ln_stats(x: torch.Tensor, eps: float):
    mean = x.mean(dim=-1)
    var = (x - mean.unsqueeze(-1)).pow(2).mean(dim=-1)
    return mean, torch.rsqrt(var + eps)


class _Recorder:
    def __init__(self, want_grads: bool):
        self.tensors: Dict[str, torch.Tensor] = {}
        self.grads: Dict[str, torch.Tensor] = {}
        self.want_grads = want_grads

    def put(self, name: str, t: torch.Tensor) -> None:
        if name in self.tensors:
            raise RuntimeError(f"activation {name} captured twice (module called twice?)")
        self.tensors[name] = t.detach().clone()
        if self.want_grads and t.requires_grad:
            t.register_hook(lambda g, name=name: self._grad(name, g))

    def _grad(self, name: str, g: torch.Tensor) -> None:
        if name in self.grads:
            self.grads[name] = self.grads[name] + g.detach()
        else:
            self.grads[name] = g.detach().clone()


def _install_hooks(model: Any, rec: _Recorder) -> List[Any]:
    tr = model.transformer
    eps = float(model.config.layer_norm_epsilon)
    handles = []

    def out_hook(name: str, index: Optional[int] = None) -> Callable:
        def hook(mod, inp, out):
            t = out if index is None else out[index]
            if isinstance(t, (tuple, list)):  # blocks of older transformers return tuples
                t = t[0]
            if t is None:
                raise RuntimeError(f"{name}: module returned no tensor (attention must be eager)")
            rec.put(name, t)
        return hook

    def in_hook(name: str) -> Callable:
        def hook(mod, inp, out):
            rec.put(name, inp[0])
        return hook

    def ln_hook(prefix: str, in_name: Optional[str] = None) -> Callable:
        def hook(mod, inp, out):
            x = inp[0]
            if in_name is not None:
                rec.put(in_name, x)
            with torch.no_grad():
                mean, rstd = _ln_stats(x.detach(), eps)
            rec.tensors[prefix + "_mean"] = mean
            rec.tensors[prefix + "_rstd"] = rstd
            rec.put(prefix, out)
        return hook

    handles.append(tr.drop.register_forward_hook(out_hook("encoded")))
    for l, block in enumerate(tr.h):
        p = f"h{l}."
        handles.append(block.ln_1.register_forward_hook(ln_hook(p + "ln1")))
        handles.append(block.attn.c_attn.register_forward_hook(out_hook(p + "qkv")))
        handles.append(block.attn.register_forward_hook(out_hook(p + "att", index=1)))

        def cproj_hook(mod, inp, out, p=p):
            rec.put(p + "atty", inp[0])
            rec.put(p + "attproj", out)
        handles.append(block.attn.c_proj.register_forward_hook(cproj_hook))
        handles.append(block.ln_2.register_forward_hook(ln_hook(p + "ln2", in_name=p + "residual2")))
        handles.append(block.mlp.c_fc.register_forward_hook(out_hook(p + "fch")))

        def mproj_hook(mod, inp, out, p=p):
            rec.put(p + "fch_gelu", inp[0])
            rec.put(p + "fcproj", out)
        handles.append(block.mlp.c_proj.register_forward_hook(mproj_hook))
        handles.append(block.register_forward_hook(out_hook(p + "residual3")))
    handles.append(tr.ln_f.register_forward_hook(ln_hook("lnf")))
    return handles


def _as_long(x: Any) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.long()
    return torch.as_tensor(np.asarray(x), dtype=torch.long)


def capture(model: Any, inputs: Any, targets: Any = None, *, backward: bool = True,
            loss_scale: float = 1.0, zero_grad: bool = True, act_grads: bool = False,
            padded_vocab_size: Optional[int] = None, collect_grads: bool = True,
            autocast: bool = False) -> Capture:
    """Run the reference on inputs (B, T) [and targets (B, T)] and return its tensors in C
    names. With targets and backward=True, also backpropagates loss_scale * mean loss and
    returns the parameter gradients in the C layout (wte padded to padded_vocab_size rows,
    default V rounded up to 128; the padding rows are zero). zero_grad=False accumulates
    into the model's existing .grad (micro-batches). collect_grads=False leaves the gradients
    in the parameters' .grad only (Capture.grads is None): no copy of a model-sized dict.
    autocast: the forward and the loss run under torch.autocast("cpu", bfloat16), as a PyTorch
    user trains in bf16 (backward outside it, as torch recommends); bf16 tensors are captured
    widened to fp32."""
    x = _as_long(inputs)
    y = None if targets is None else _as_long(targets)
    if x.dim() != 2 or (y is not None and y.shape != x.shape):
        raise ValueError("inputs (and targets) must be (B, T)")
    do_backward = backward and y is not None
    rec = _Recorder(want_grads=act_grads and do_backward)
    handles = _install_hooks(model, rec)
    try:
        if zero_grad:
            model.zero_grad(set_to_none=True)
        amp = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
        with torch.set_grad_enabled(do_backward):
            with amp:
                out = model(input_ids=x, use_cache=False, output_attentions=True)
                logits = out.logits
                rec.put("logits", logits)
                loss_val = None
                if y is not None:
                    probs = torch.softmax(logits.detach(), dim=-1)
                    rec.tensors["probs"] = probs
                    losses = lm_losses(logits, y)
                    rec.put("losses", losses)
                    loss = losses.mean()
                    loss_val = float(loss.detach())
            if y is not None and do_backward:
                (loss * loss_scale).backward()
    finally:
        for h in handles:
            h.remove()
    acts = {k: (v.float() if v.dtype == torch.bfloat16 else v).cpu().numpy() for k, v in rec.tensors.items()}
    order = activation_names(len(model.transformer.h), with_targets=y is not None)
    acts = {k: acts[k] for k in order if k in acts}
    grads = None
    if do_backward and collect_grads:
        grads = param_grads(model, padded_vocab_size)
    ag = {k: v.float().cpu().numpy() if v.dtype == torch.bfloat16 else v.cpu().numpy()
          for k, v in rec.grads.items()} if rec.want_grads else None
    return Capture(acts=acts, loss=loss_val, grads=grads, act_grads=ag,
                   dtype=next(model.parameters()).dtype)


def param_grads(model: Any, padded_vocab_size: Optional[int] = None) -> Dict[str, np.ndarray]:
    """The model's current parameter .grad in the C layout and names (missing grads = 0)."""
    sd = {}
    for name, p in model.named_parameters():
        sd[name] = p.grad if p.grad is not None else torch.zeros_like(p)
    return hf_to_params(sd, padded_vocab_size, dtype=None)
