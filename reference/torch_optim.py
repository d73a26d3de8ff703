"""Reference training steps: the HF GPT-2 + torch.optim.AdamW (+ torch's grad clipping), so
multi-step trajectories of the C core can be compared step by step."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .capture import capture, param_grads
from .convert import hf_to_params


def adamw_param_groups(model: Any, weight_decay: float, decay_matrices_only: bool) -> List[Dict[str, Any]]:
    """AdamW parameter groups: with decay_matrices_only, weight decay on the 2-D weights only
    (wte, wpe and the four Conv1D weights: exactly the C core's MATRIX_PARAMS; the tied
    lm_head is the same Parameter as wte), else on every parameter as llm.c does."""
    params = list(model.parameters())  # deduplicated: lm_head.weight is wte
    if not decay_matrices_only:
        return [{"params": params, "weight_decay": weight_decay}]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def total_grad_norm(model: Any) -> float:
    """Global L2 norm of all gradients, computed as torch.nn.utils.clip_grad_norm_ does."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return 0.0
    norms = torch.stack([torch.linalg.vector_norm(g, 2.0) for g in grads])
    return float(torch.linalg.vector_norm(norms, 2.0))


class ReferenceTrainer:
    """Steps a reference GPT2LMHeadModel with torch.optim.AdamW.

    One `step` = zero grads, forward/backward of every micro-batch (loss_scale 1/K each),
    optional clip_grad_norm_, AdamW update. The model is updated in place.
    """

    def __init__(self, model: Any, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, weight_decay: float = 0.0, decay_matrices_only: bool = False,
                 grad_clip: float = 0.0, padded_vocab_size: Optional[int] = None, autocast: bool = False):
        self.model = model
        self.autocast = bool(autocast)  # forward under torch.autocast("cpu", bfloat16) (capture)
        self.grad_clip = float(grad_clip)
        self.padded_vocab_size = padded_vocab_size
        self.opt = torch.optim.AdamW(adamw_param_groups(model, weight_decay, decay_matrices_only),
                                     lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay,
                                     foreach=False, fused=False)
        self.t = 0

    def step(self, micro_batches: Sequence[Tuple[Any, Any]], lr: Optional[float] = None,
             keep_capture: bool = False) -> Dict[str, Any]:
        """micro_batches: [(inputs, targets), ...]. Returns dict(loss = mean over micro-batches,
        losses, grad_norm (before clipping), grads (C layout, after clipping), capture (of the
        last micro-batch, if keep_capture))."""
        out = self.forward_backward(micro_batches, keep_capture=keep_capture)
        out.update(self.update(lr, collect_grads=True))
        return out

    def forward_backward(self, micro_batches: Sequence[Tuple[Any, Any]], keep_capture: bool = False,
                         collect_grads: bool = True) -> Dict[str, Any]:
        """The first half of step(): zero grads, forward/backward of every micro-batch (loss
        scale 1/K each). The gradients are left in the parameters' .grad (unclipped) until
        update(). Returns dict(loss, losses, capture (of the last micro-batch, if keep_capture;
        with C-layout grads only if collect_grads))."""
        if isinstance(micro_batches, tuple) and len(micro_batches) == 2 and not isinstance(micro_batches[0], tuple):
            micro_batches = [micro_batches]
        k = len(micro_batches)
        self.model.zero_grad(set_to_none=True)
        losses, cap = [], None
        for x, y in micro_batches:
            cap = capture(self.model, x, y, backward=True, loss_scale=1.0 / k, zero_grad=False,
                          padded_vocab_size=self.padded_vocab_size, collect_grads=collect_grads,
                          autocast=self.autocast)
            losses.append(cap.loss)
        return {"loss": float(np.mean(losses)), "losses": losses, "capture": cap if keep_capture else None}

    def update(self, lr: Optional[float] = None, collect_grads: bool = False) -> Dict[str, Any]:
        """The second half of step(): optional clip_grad_norm_, then the AdamW update at `lr`
        (or the current one). Returns dict(grad_norm (before clipping), t, and with
        collect_grads the clipped gradients in the C layout as grads)."""
        params = [p for p in self.model.parameters() if p.grad is not None]
        if self.grad_clip > 0:
            norm = float(torch.nn.utils.clip_grad_norm_(params, self.grad_clip, foreach=False))
        else:
            norm = total_grad_norm(self.model)
        grads = param_grads(self.model, self.padded_vocab_size) if collect_grads else None
        if lr is not None:
            for g in self.opt.param_groups:
                g["lr"] = lr
        self.opt.step()
        self.t += 1
        return {"grad_norm": norm, "grads": grads, "t": self.t}

    def state_tensor(self, name: str, layer: Optional[int], what: str) -> np.ndarray:
        """One tensor in the C layout and name, without converting the rest: what is 'param',
        'grad' (the current .grad), 'adam_m' or 'adam_v'; layer for the per-layer
        parameters. A view of the torch memory where the layout allows (wte is padded to
        padded_vocab_size rows, a copy)."""
        from .convert import hf_parameter

        p, transpose = hf_parameter(self.model, name, layer)
        if what == "param":
            t = p
        elif what == "grad":
            t = p.grad if p.grad is not None else torch.zeros_like(p)
        elif what in ("adam_m", "adam_v"):
            st = self.opt.state.get(p, {})
            key = "exp_avg" if what == "adam_m" else "exp_avg_sq"
            t = st[key] if key in st else torch.zeros_like(p)
        else:
            raise ValueError(f"unknown state {what!r}")
        a = t.detach().cpu().numpy()
        if transpose:
            a = a.T
        if name == "wte":
            V, C = a.shape
            Vp = int(self.padded_vocab_size) if self.padded_vocab_size else ((V + 127) // 128) * 128
            padded = np.zeros((Vp, C), dtype=a.dtype)
            padded[:V] = a
            a = padded
        return a

    def params(self, dtype: Any = None) -> Dict[str, np.ndarray]:
        """Current parameters in the C layout (wte padded with zero rows)."""
        return hf_to_params(self.model, self.padded_vocab_size, dtype=dtype)

    def optimizer_state(self) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
        """AdamW first and second moments (adam_m, adam_v) in the C layout."""
        m, v = {}, {}
        for name, p in self.model.named_parameters():
            st = self.opt.state.get(p, {})
            m[name] = st.get("exp_avg", torch.zeros_like(p))
            v[name] = st.get("exp_avg_sq", torch.zeros_like(p))
        return (hf_to_params(m, self.padded_vocab_size, dtype=None),
                hf_to_params(v, self.padded_vocab_size, dtype=None))


def adamw_on_arrays(params: Dict[str, np.ndarray], grads_per_step: Sequence[Dict[str, np.ndarray]],
                    lr: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                    weight_decay: float = 0.0, decay_matrices_only: bool = False,
                    grad_clip: float = 0.0, dtype: torch.dtype = torch.float32
                    ) -> Dict[str, Any]:
    """torch.optim.AdamW (and clip_grad_norm_) applied directly to C-layout arrays, one step
    per entry of grads_per_step, isolating the optimizer from the model. Returns dict(params,
    adam_m, adam_v, grad_norms) as numpy arrays in `dtype`."""
    from .convert import MATRIX_PARAMS

    names = list(params)
    ps = {n: torch.nn.Parameter(torch.from_numpy(np.array(params[n], copy=True)).to(dtype)) for n in names}
    if decay_matrices_only:
        groups = [{"params": [ps[n] for n in names if n in MATRIX_PARAMS], "weight_decay": weight_decay},
                  {"params": [ps[n] for n in names if n not in MATRIX_PARAMS], "weight_decay": 0.0}]
    else:
        groups = [{"params": [ps[n] for n in names], "weight_decay": weight_decay}]
    opt = torch.optim.AdamW(groups, lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay,
                            foreach=False, fused=False)
    norms = []
    for grads in grads_per_step:
        for n in names:
            ps[n].grad = torch.from_numpy(np.array(grads[n], copy=True)).to(dtype)
        plist = [ps[n] for n in names]
        if grad_clip > 0:
            norms.append(float(torch.nn.utils.clip_grad_norm_(plist, grad_clip, foreach=False)))
        else:
            norms.append(float(torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(p.grad) for p in plist]))))
        opt.step()
    return {
        "params": {n: ps[n].detach().numpy().copy() for n in names},
        "adam_m": {n: opt.state[ps[n]]["exp_avg"].numpy().copy() for n in names},
        "adam_v": {n: opt.state[ps[n]]["exp_avg_sq"].numpy().copy() for n in names},
        "grad_norms": norms,
    }


__all__ = ["ReferenceTrainer", "adamw_on_arrays", "adamw_param_groups", "total_grad_norm"]
