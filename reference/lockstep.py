"""The lockstep parity engine: the C core and the PyTorch reference trained side by side.

Both sides start from bit-identical weights and get the same batches and hyperparameters.
After every forward, backward and AdamW step of the C core the same step of the reference is
taken, and every tensor the C core exposes is compared under its own name (tolerance.py):

  step 0                every parameter as loaded (the load path is exact: must be equal)
  step s, forward       every activation in forward order, then the loss
  step s, backward      every parameter gradient, per layer, in backward (data-flow) order,
                        then the global gradient norm
  step s, update        per parameter tensor (and layer): adam_m, adam_v, the parameter

Rows come out in that order, so the first failing row is the first divergence in data-flow
order: a bug shows up at the tensor that computes it, not at the many tensors downstream.

Every step is judged from the C core's own state (anchored): at the start of step s both
references (fp32, and fp64 widened exactly) take the C core's parameters, so the forward and
backward of step s are compared as a single pass from bit-identical inputs; and the update
is judged on the C core's own gradients and AdamW moments (the references' .grad and AdamW
state are set to the C core's before they step), so it measures the optimizer alone. Without
this, AdamW turns gradient rounding into steps of order lr wherever a gradient is near zero,
and free-running fp32 trajectories drift apart by 15 to 44 times their typical distance from
fp64 within three steps (docs/parity.md): any verdict against them is either loose or noisy.
Anchored, every comparison has the fp32 reference's own single-pass error as its baseline,
and a bug that carries over between steps (a gradient not cleared, a moment not stored) still
shows: the reference recomputes everything fresh from the same state.

The reference models are HF GPT2LMHeadModels, unmodified, stepped with torch's
clip_grad_norm_ and torch.optim.AdamW. The C model is used through the pyllmc.Model interface
(forward, backward, grads, ...), created here or passed in, and takes its steps exactly as
pyllmc's Trainer does: backward overwriting the gradients, the global norm, the clipping
factor applied inside the AdamW update.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import time
import zlib
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .capture import activation_names, mean_inputs
from .convert import LAYER_PARAMS, PARAM_NAMES, hf_to_params, round_to_bf16
from .parity import c_activations, compare_scalar
from .tolerance import compare
from .tolerance_bf16 import precision_policy

#: Hyperparameter defaults: the same as pyllmc's Trainer (AdamW betas 0.9/0.95, weight decay
#: 0.1 on 2-D weights, clipping at 1.0, cosine schedule), so parity covers what training runs.
DEFAULTS: Dict[str, Any] = dict(lr=1e-3, schedule="cosine", warmup=0, final_frac=0.1, beta1=0.9, beta2=0.95, eps=1e-8,
                                weight_decay=0.1, decay_matrices_only=True, grad_clip=1.0)


@dataclasses.dataclass
class LockstepConfig:
    """What a lockstep run does (the references are anchored to the C core's state at every
    step: module docstring)."""

    steps: int = 3
    batch: int = 4
    seq: int = 64
    seed: int = 0
    lr: float = DEFAULTS["lr"]
    schedule: str = DEFAULTS["schedule"]
    warmup: int = DEFAULTS["warmup"]
    final_frac: float = DEFAULTS["final_frac"]
    beta1: float = DEFAULTS["beta1"]
    beta2: float = DEFAULTS["beta2"]
    eps: float = DEFAULTS["eps"]
    weight_decay: float = DEFAULTS["weight_decay"]
    decay_matrices_only: bool = DEFAULTS["decay_matrices_only"]
    grad_clip: float = DEFAULTS["grad_clip"]
    fp64: bool = True
    threads: int = 0
    device: str = "cpu"
    #: "bf16": the C core in bf16 precision against PyTorch under CPU autocast bf16, attributed
    #: against the fp64 run (tolerance_bf16.py)
    precision: str = "fp32"

    def validate(self) -> None:
        from ..errors import InvalidArgumentError

        def need(ok: bool, what: str) -> None:
            if not ok:
                raise InvalidArgumentError(what)

        for k in ("steps", "batch", "seq"):
            v = getattr(self, k)
            need(isinstance(v, int) and not isinstance(v, bool) and v >= 1, f"{k} must be an int >= 1, got {v!r}")
        need(isinstance(self.seed, int) and self.seed >= 0, f"seed must be an int >= 0, got {self.seed!r}")
        need(isinstance(self.threads, int) and self.threads >= 0, f"threads must be an int >= 0, got {self.threads!r}")
        for k in ("lr", "eps", "weight_decay", "grad_clip", "final_frac"):
            v = getattr(self, k)
            need(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0, f"{k} must be a finite number >= 0, got {v!r}")
        for k in ("beta1", "beta2"):
            v = getattr(self, k)
            need(isinstance(v, (int, float)) and 0 <= v < 1, f"{k} must be in [0, 1), got {v!r}")
        need(self.precision in ("fp32", "bf16"), f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
        need(self.precision == "fp32" or self.fp64,
             "precision bf16 is judged against the fp64 reference: it cannot run without it (--no-fp64)")
        self.lr_schedule()  # validates schedule, warmup, final_frac

    def lr_schedule(self):
        from ..schedule import LRSchedule

        return LRSchedule(lr=float(self.lr), steps=int(self.steps), kind=self.schedule, warmup=int(self.warmup),
                          final_frac=float(self.final_frac))

    def as_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class LockstepResult:
    rows: List[Dict[str, Any]]
    losses_c: List[float]
    losses_torch: List[float]
    losses_fp64: List[Optional[float]]
    grad_norms_c: List[float]
    grad_norms_torch: List[float]
    lrs: List[float]
    config: Dict[str, Any]
    shape: Dict[str, int]
    model: str = ""
    seconds: float = 0.0
    faults: List[str] = dataclasses.field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r["passed"] for r in self.rows)

    @property
    def first_divergence(self) -> Optional[Dict[str, Any]]:
        for r in self.rows:
            if not r["passed"]:
                return r
        return None

    def first_in_phase(self, phase: str) -> Optional[Dict[str, Any]]:
        for r in self.rows:
            if r["phase"] == phase and not r["passed"]:
                return r
        return None


# ------------------------------------------------------------------ names and order

_LAYER_RE = re.compile(r"^(?P<prefix>(?:grad|adam_m|adam_v)\.)?h(?P<layer>\d+)\.(?P<base>\w+)$")


def tensor_kind(name: str) -> Tuple[str, Optional[int]]:
    """'h3.qkv' -> ('qkv', 3); 'grad.h3.qkvw' -> ('grad.qkvw', 3); 'logits' -> ('logits', None)."""
    m = _LAYER_RE.match(name)
    if m:
        return (m.group("prefix") or "") + m.group("base"), int(m.group("layer"))
    return name, None


def backward_param_order(num_layers: int) -> List[Tuple[str, Optional[int]]]:
    """(param, layer) in the order backward produces their gradients: the final layernorm,
    then the blocks from the last to the first (MLP before attention), then the embeddings.
    wte comes last: its gradient is complete only after the encoder's backward (the
    classifier's part comes first)."""
    block = ("fcprojw", "fcprojb", "fcw", "fcb", "ln2w", "ln2b", "attprojw", "attprojb", "qkvw", "qkvb", "ln1w", "ln1b")
    order: List[Tuple[str, Optional[int]]] = [("lnfw", None), ("lnfb", None)]
    for l in range(num_layers - 1, -1, -1):
        order += [(n, l) for n in block]
    return order + [("wpe", None), ("wte", None)]


def forward_param_order(num_layers: int) -> List[Tuple[str, Optional[int]]]:
    """(param, layer) in the order the forward uses them."""
    order: List[Tuple[str, Optional[int]]] = [("wte", None), ("wpe", None)]
    for l in range(num_layers):
        order += [(n, l) for n in LAYER_PARAMS]
    return order + [("lnfw", None), ("lnfb", None)]


def _label(prefix: str, name: str, layer: Optional[int]) -> str:
    return f"{prefix}h{layer}.{name}" if layer is not None else prefix + name


def _annotate(row: Dict[str, Any], phase: str, c: Any = None) -> Dict[str, Any]:
    """Phase, kind and layer of a row; with the C tensor, its CRC-32 (c_crc): the C core's
    results do not depend on the thread count, bit for bit, so runs at 1 and 2 threads can be
    compared exactly (pyllmc.mutation.harness does)."""
    kind, layer = tensor_kind(row["name"])
    row["phase"], row["kind"], row["layer"] = phase, kind, layer
    if c is not None:
        row["c_crc"] = zlib.crc32(np.ascontiguousarray(c, dtype=np.float32).tobytes())
    return row


class _CViews:
    """Parameter-shaped tensors of one kind of the C model by (name, layer): zero-copy views
    on a CPU model; on a CUDA model one host copy per name, made on first use."""

    def __init__(self, c_model: Any, kind: str):
        self.model, self.kind = c_model, kind
        self.cpu = getattr(c_model, "device", "cpu") == "cpu"
        self.views = getattr(c_model, kind) if self.cpu else None
        self.cache: Dict[str, np.ndarray] = {}

    def get(self, name: str, layer: Optional[int]) -> np.ndarray:
        if self.cpu:
            a = self.views[name]
        else:
            a = self.cache.get(name)
            if a is None:
                a = self.cache[name] = self.model.copy_to_host(self.kind, name)
        return a[layer] if layer is not None else a


def make_batches(vocab_size: int, batch: int, seq: int, steps: int, seed: int) -> List[Tuple[np.ndarray, np.ndarray]]:
    """Uniformly random token windows (inputs, targets shifted by one), one per step."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        tok = rng.integers(0, vocab_size, size=(batch, seq + 1), dtype=np.int64)
        out.append((np.ascontiguousarray(tok[:, :-1], dtype=np.int32), np.ascontiguousarray(tok[:, 1:], dtype=np.int32)))
    return out


# ------------------------------------------------------------------ the engine


def _torch_like(p: Any, arr: np.ndarray, transpose: bool) -> Any:
    """A C-layout array as a tensor shaped and typed like torch parameter p (transposed where
    the layouts differ; wte's padded rows cut off)."""
    import torch

    a = arr.T if transpose else arr
    if a.shape[0] != p.shape[0]:
        a = a[: p.shape[0]]
    # always a copy: a view of the C core's memory (its arrays are zero-copy views) would let
    # torch's in-place AdamW and clipping write into the C model's state, and every
    # comparison of that state would then compare the C core with itself
    return torch.from_numpy(np.array(a, copy=True)).to(p.dtype)


def anchor(trainer: Any, c_model: Any, num_layers: int, what: Sequence[str], step: int = 1) -> None:
    """Set a ReferenceTrainer's state to the C model's: what = 'param' (the weights), 'grad'
    (each .grad), 'adam' (AdamW's moments, with the step count step - 1, as before update
    `step`). fp32 values widen exactly into an fp64 reference."""
    import torch

    from .convert import hf_parameter

    views = {k: _CViews(c_model, k) for k, w in (("params", "param"), ("grads", "grad"), ("adam_m", "adam"),
                                                 ("adam_v", "adam")) if w in what}
    with torch.no_grad():
        for name, layer in forward_param_order(num_layers):
            p, transpose = hf_parameter(trainer.model, name, layer)
            if "param" in what:
                p.copy_(_torch_like(p, views["params"].get(name, layer), transpose))
            if "grad" in what:
                p.grad = _torch_like(p, views["grads"].get(name, layer), transpose)
            if "adam" in what:
                trainer.opt.state[p] = {
                    "step": torch.tensor(float(step - 1)),
                    "exp_avg": _torch_like(p, views["adam_m"].get(name, layer), transpose),
                    "exp_avg_sq": _torch_like(p, views["adam_v"].get(name, layer), transpose)}


def _finite(c_model: Any, num_layers: int, kinds: Sequence[str]) -> bool:
    """Whether every element of the C model's tensors of these kinds (params, grads, adam_m,
    adam_v) is finite: the references can be anchored only to a finite state."""
    for kind in kinds:
        v = _CViews(c_model, kind)
        for name, layer in forward_param_order(num_layers):
            if not np.isfinite(v.get(name, layer)).all():
                return False
    return True


def run_lockstep(ref32: Any, c_model: Any, cfg: LockstepConfig, *,
                 batches: Optional[Sequence[Tuple[Any, Any]]] = None,
                 progress: Optional[Callable[[str], None]] = None,
                 model_name: str = "", faults: Sequence[str] = ()) -> LockstepResult:
    """Train `c_model` (a pyllmc.Model already holding the reference's weights) for cfg.steps
    steps, each judged against the reference `ref32` (a GPT2LMHeadModel in float32, whose
    weights this overwrites) and its fp64 twin, both anchored to the C core's state at every
    step (module docstring). Returns the rows and trajectories."""
    import torch

    from ..shapes import clip_coefficient
    from .hf import to_dtype
    from .torch_optim import ReferenceTrainer

    cfg.validate()
    if getattr(c_model, "precision", "fp32") != cfg.precision:
        raise ValueError(f"the C model computes in {c_model.precision}, the run is for {cfg.precision}")
    say = progress or (lambda s: None)
    t_start = time.perf_counter()
    # thresholds of the precision (fp32: tolerance.py's defaults); the peer of a bf16 C core is
    # the fp32 reference under torch.autocast bf16
    kw = precision_policy(cfg.precision)
    amp = cfg.precision == "bf16"
    V = int(ref32.config.vocab_size)
    L = int(ref32.config.n_layer)
    Vp = int(c_model.config.padded_vocab_size)
    B, T = cfg.batch, cfg.seq
    if batches is None:
        batches = make_batches(V, B, T, cfg.steps, cfg.seed)
    if len(batches) < cfg.steps:
        raise ValueError(f"{len(batches)} batches for {cfg.steps} steps")
    schedule = cfg.lr_schedule()
    hp: Dict[str, Any] = dict(beta1=cfg.beta1, beta2=cfg.beta2, eps=cfg.eps, weight_decay=cfg.weight_decay,
              decay_matrices_only=cfg.decay_matrices_only, grad_clip=cfg.grad_clip, padded_vocab_size=Vp)

    ref64 = to_dtype(ref32, torch.float64) if cfg.fp64 else None
    tr32 = ReferenceTrainer(ref32, lr=schedule(1), autocast=amp, **hp)
    tr64 = ReferenceTrainer(ref64, lr=schedule(1), **hp) if ref64 is not None else None
    trainers = [t for t in (tr32, tr64) if t is not None]

    rows: List[Dict[str, Any]] = []
    # step 0: the C model's weights as loaded are the reference's, bit for bit
    cv = _CViews(c_model, "params")
    for name, layer in forward_param_order(L):
        rows.append(_annotate(compare(_label("", name, layer), cv.get(name, layer),
                                      tr32.state_tensor(name, layer, "param"), step=0), "init"))
    del cv

    res = LockstepResult(rows=rows, losses_c=[], losses_torch=[], losses_fp64=[], grad_norms_c=[], grad_norms_torch=[],
                         lrs=[], config=cfg.as_dict(), shape=dict(vocab_size=V, padded_vocab_size=Vp, num_layers=L,
                                                                  num_heads=int(ref32.config.n_head),
                                                                  channels=int(ref32.config.n_embd),
                                                                  max_seq_len=int(ref32.config.n_positions)),
                         model=model_name, faults=list(faults))
    act_names = activation_names(L, with_targets=True)
    means = mean_inputs(L)
    # activations the C core stores as bf16 (a bf16 CPU model: ln1, atty, ln2, fch_gelu, lnf):
    # its tensor is then the matmul's bf16 operand, so the peer's is too (autocast rounds the
    # same tensor as it enters its matmul); fp64 stays the unrounded truth. That the stored
    # bits are exactly the rounded fp32 outputs is tested bitwise (test_bf16_acts.py).
    acts16 = set(getattr(c_model, "acts16_names", ())) if amp else set()
    for step in range(1, cfg.steps + 1):
        x, y = (np.asarray(a) for a in batches[step - 1])
        lr = schedule(step)
        res.lrs.append(lr)
        t0 = time.perf_counter()
        # ---- the references start this step from the C core's weights
        if step > 1 and not _finite(c_model, L, ("params", "adam_m", "adam_v")):
            say(f"step {step}: the C core's state is not finite (failed above); nothing after it can be judged")
            res.lrs.pop()
            break
        if step > 1:
            for t in trainers:
                anchor(t, c_model, L, ("param",))
        t_anchor = time.perf_counter() - t0
        t0 = time.perf_counter()
        # ---- forward and backward on every side; gradients stay in place (unclipped)
        loss_c = c_model.forward(x, y)
        acts_c = c_activations(c_model, V, act_names)  # copied: backward overwrites probs
        # as pyllmc's Trainer: the first (here: only) micro-batch overwrites the gradients
        c_model.backward(1.0, accumulate=False)
        t_c = time.perf_counter() - t0
        t0 = time.perf_counter()
        o32 = tr32.forward_backward([(x, y)], keep_capture=True, collect_grads=False)
        t_32 = time.perf_counter() - t0
        t0 = time.perf_counter()
        o64 = tr64.forward_backward([(x, y)], keep_capture=True, collect_grads=False) if tr64 is not None else None
        t_64 = time.perf_counter() - t0
        # ---- forward: every activation in forward order, then the loss
        t0 = time.perf_counter()
        a32 = o32["capture"].acts
        a64 = o64["capture"].acts if o64 else None
        for n in act_names:
            peer = round_to_bf16(a32[n]) if n in acts16 else a32[n]
            src = means.get(n)  # a layernorm mean: judged as a tensor of means (tolerance.py)
            mean_of = (a32[src], a64[src]) if src is not None and a64 is not None else None
            rows.append(_annotate(compare(n, acts_c[n], peer, None if a64 is None else a64[n], step=step,
                                          mean_of=mean_of, **kw), "forward", acts_c[n]))
        # the loss is the mean of the per-position losses: its baseline is the reference's
        # standard error of that mean, not its single draw (tolerance.py: Means)
        mean_of = None if a64 is None else (a32["losses"], a64["losses"])
        rows.append(_annotate(compare_scalar("loss", loss_c, o32["loss"], o64["loss"] if o64 else None, step=step,
                                             mean_of=mean_of, **kw), "forward", np.float32(loss_c)))
        del acts_c, a32, a64
        for o in (o32, o64):
            if o:
                o["capture"] = None
        # ---- backward: every gradient, per layer, in the order backward makes them
        gv = _CViews(c_model, "grads")
        for name, layer in backward_param_order(L):
            rows.append(_annotate(compare(
                _label("grad.", name, layer), gv.get(name, layer), tr32.state_tensor(name, layer, "grad"),
                tr64.state_tensor(name, layer, "grad") if tr64 is not None else None, step=step, **kw), "backward",
                gv.get(name, layer)))
        del gv
        t_cmp = time.perf_counter() - t0
        # ---- the update, judged on the C core's own gradients and moments: the references
        # take them (their own gradients were compared above), then every side clips and
        # steps. The C side as pyllmc's Trainer does it: the norm, then the clipping factor
        # applied inside the update (bitwise the same as clip-then-step); torch clips with
        # clip_grad_norm_ and steps torch.optim.AdamW
        if not _finite(c_model, L, ("grads",)):
            res.losses_c.append(float(loss_c))
            res.losses_torch.append(float(o32["loss"]))
            res.losses_fp64.append(float(o64["loss"]) if o64 else None)
            res.grad_norms_c.append(float(c_model.grad_norm()))
            res.grad_norms_torch.append(math.nan)  # the reference has no finite state to take
            say(f"step {step}: the C core's gradients are not finite (failed above); the run stops here")
            break
        t0 = time.perf_counter()
        for t in trainers:
            anchor(t, c_model, L, ("grad", "adam"), step=step)
        t_anchor += time.perf_counter() - t0
        t0 = time.perf_counter()
        norm_c = c_model.grad_norm()
        scale = clip_coefficient(norm_c, cfg.grad_clip) if cfg.grad_clip > 0 else 1.0
        c_model.adamw_step(lr, t=step, beta1=cfg.beta1, beta2=cfg.beta2, eps=cfg.eps,
                           weight_decay=cfg.weight_decay, decay_matrices_only=cfg.decay_matrices_only,
                           grad_scale=scale)
        t_c += time.perf_counter() - t0
        t0 = time.perf_counter()
        u32 = tr32.update(lr)
        t_32 += time.perf_counter() - t0
        t0 = time.perf_counter()
        u64 = tr64.update(lr) if tr64 is not None else None
        t_64 += time.perf_counter() - t0
        t0 = time.perf_counter()
        rows.append(_annotate(compare_scalar("grad_norm", norm_c, u32["grad_norm"], u64["grad_norm"] if u64 else None,
                                             step=step, **kw), "backward", np.float32(norm_c)))
        # ---- after the update: moments and parameters, per tensor and layer
        views = {"adam_m": _CViews(c_model, "adam_m"), "adam_v": _CViews(c_model, "adam_v"),
                 "param": _CViews(c_model, "params")}
        for name, layer in forward_param_order(L):
            for what, prefix in (("adam_m", "adam_m."), ("adam_v", "adam_v."), ("param", "")):
                rows.append(_annotate(compare(
                    _label(prefix, name, layer), views[what].get(name, layer), tr32.state_tensor(name, layer, what),
                    tr64.state_tensor(name, layer, what) if tr64 is not None else None, step=step, **kw), "update",
                    views[what].get(name, layer)))
        del views
        t_cmp += time.perf_counter() - t0
        res.losses_c.append(float(loss_c))
        res.losses_torch.append(float(o32["loss"]))
        res.losses_fp64.append(float(o64["loss"]) if o64 else None)
        res.grad_norms_c.append(float(norm_c))
        res.grad_norms_torch.append(float(u32["grad_norm"]))
        bad = sum(1 for r in rows if r["step"] == step and not r["passed"])
        say(f"step {step}/{cfg.steps}: lr {lr:.3g}  loss C {loss_c:.6f} torch {o32['loss']:.6f}  "
            f"grad norm C {norm_c:.6g} torch {u32['grad_norm']:.6g}  {bad} out of tolerance  "
            f"[C {t_c:.1f}s, torch fp32 {t_32:.1f}s, fp64 {t_64:.1f}s, anchoring {t_anchor:.1f}s, "
            f"compare {t_cmp:.1f}s]")
    res.seconds = time.perf_counter() - t_start
    return res


# ------------------------------------------------------------------ from a model spec


def describe_spec(spec: Any) -> str:
    return spec if isinstance(spec, str) else os.fspath(spec) if isinstance(spec, os.PathLike) else type(spec).__name__


def load_reference_for(spec: Any, *, seed: int = 0, vocab_size: Optional[int] = None,
                       max_seq_len: Optional[int] = None, randomize: bool = False) -> Any:
    """The fp32 reference GPT2LMHeadModel for a model source M (docs/design.md): a size
    descriptor dN (random GPT-2 initialisation from seed; vocab_size / max_seq_len override
    50257 / 1024), an llm.c .bin checkpoint, a pyllmc checkpoint or run directory, a local HF
    directory or a hub id. randomize: overwrite every parameter with non-trivial values
    (hf.randomize_params), so no bias is 0 and no LN weight 1. Bad input raises a
    PyllmcError subclass naming the problem."""
    from ..errors import FileError, InvalidArgumentError
    from .convert import CheckpointFormatError
    from .hf import is_size_descriptor, load_reference, randomize_params, size_config

    if isinstance(spec, str) and not spec.strip():
        raise InvalidArgumentError("no model given (a size like d6, a .bin checkpoint, or a HF directory/id)")
    try:
        if is_size_descriptor(spec):
            kw = {}
            if vocab_size:
                kw["vocab_size"] = int(vocab_size)
            if max_seq_len:
                kw["n_positions"] = int(max_seq_len)
            ref = load_reference(size_config(spec, **kw), seed=seed)
        else:
            if vocab_size or max_seq_len:
                raise InvalidArgumentError("--vocab-size / --max-seq-len apply to size descriptors (dN) only")
            s = os.fspath(spec)
            from ..model_source import resolve_checkpoint_file

            p = os.path.abspath(os.path.expanduser(s))
            if os.path.isdir(p) and os.path.isfile(os.path.join(p, "config.json")):
                ref = load_reference(p)
            else:
                ck = resolve_checkpoint_file(p) if os.path.exists(p) else None
                if ck is not None:
                    ref = load_reference(str(ck))
                elif os.path.isdir(p):
                    raise FileError(f"{s}: directory holds no model (no config.json, model.bin or checkpoint)")
                elif s.endswith(".bin") or s.startswith((".", "/", "~")) or s.count("/") > 1:
                    raise FileError(f"{s}: no such file")
                else:
                    from ..model_source import resolve_hub_id

                    ref = load_reference(resolve_hub_id(s))  # a hub id: cached, or downloads allowed
    except CheckpointFormatError as e:
        from ..errors import BadFormatError

        raise BadFormatError(str(e)) from None
    except ValueError as e:
        if isinstance(e, InvalidArgumentError):
            raise
        raise InvalidArgumentError(f"{describe_spec(spec)}: {str(e).splitlines()[0]}") from None
    except OSError as e:
        if isinstance(e, FileError):
            raise
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise FileError(f"{describe_spec(spec)}: cannot load this model ({msg})") from None
    if randomize:
        randomize_params(ref, seed=seed + 1)
    return ref


def c_model_for(ref32: Any, cfg: LockstepConfig) -> Any:
    """A pyllmc.Model with exactly the reference's weights (wte padded to Vp = V rounded up
    to 128), sized for cfg.batch x cfg.seq, on cfg.device."""
    from ..errors import InvalidArgumentError
    from ..model import GPTConfig, Model
    from ..model_source import check_device, load_params

    g = GPTConfig.from_hf(ref32.config)
    if cfg.seq > g.max_seq_len:
        raise InvalidArgumentError(f"sequence length {cfg.seq} exceeds the model's max_seq_len {g.max_seq_len}")
    device = check_device(cfg.device)
    m = Model.from_config(g, max_batch=cfg.batch, max_seq=cfg.seq, threads=cfg.threads, seed=0, device=device,
                          precision=cfg.precision)
    try:
        load_params(m, hf_to_params(ref32, g.padded_vocab_size))
    except BaseException:
        m.close()
        raise
    return m


def parse_fault(spec: str) -> Tuple[str, float]:
    """'h1.fch=0.5' -> ('h1.fch', 0.5) (for --fault / --weight-fault)."""
    from ..errors import InvalidArgumentError

    name, sep, val = str(spec).partition("=")
    try:
        delta = float(val) if sep else 1.0
    except ValueError:
        raise InvalidArgumentError(f"fault {spec!r}: expected NAME=DELTA, e.g. h1.fch=0.5") from None
    if not name.strip():
        raise InvalidArgumentError(f"fault {spec!r}: expected NAME=DELTA, e.g. h1.fch=0.5")
    return name.strip(), delta


def apply_weight_fault(c_model: Any, name: str, delta: float) -> None:
    """Add delta to element 0 of one parameter of the C model through its zero-copy view:
    'h3.fcw' (a layer's slice) or 'wte'."""
    from ..errors import InvalidArgumentError

    base, layer = tensor_kind(name)
    if base not in PARAM_NAMES or (layer is None) != (base not in LAYER_PARAMS):
        raise InvalidArgumentError(f"weight fault {name!r}: not a parameter name (e.g. h0.qkvw, wte, lnfw)")
    L = int(c_model.config.num_layers)
    if layer is not None and not 0 <= layer < L:
        raise InvalidArgumentError(f"weight fault {name!r}: the model has layers 0..{L - 1}")
    if getattr(c_model, "device", "cpu") != "cpu":
        arr = c_model.copy_to_host("params", base)
        (arr[layer] if layer is not None else arr).reshape(-1)[0] += np.float32(delta)
        c_model.copy_from_host("params", base, arr)
        return
    view = c_model.params[base]
    (view[layer] if layer is not None else view).reshape(-1)[0] += np.float32(delta)


def run_parity(spec: Any, cfg: LockstepConfig, *, vocab_size: Optional[int] = None,
               max_seq_len: Optional[int] = None, randomize: bool = False,
               faults: Sequence[Tuple[str, float]] = (), weight_faults: Sequence[Tuple[str, float]] = (),
               progress: Optional[Callable[[str], None]] = None) -> LockstepResult:
    """Everything `pyllmc parity` does before reporting: load the reference for model source
    `spec`, make a C model with its weights, inject the requested faults into the C side
    (faults: kernel outputs via Model.debug_set_fault; weight_faults: parameters via the
    zero-copy view, after loading), and run the lockstep comparison."""
    from ..errors import InvalidArgumentError

    cfg.validate()
    if len(faults) > 1:  # the C core holds one injected fault at a time
        raise InvalidArgumentError(f"one kernel-output fault at a time, got {len(faults)}")
    say = progress or (lambda s: None)
    t0 = time.perf_counter()
    ref32 = load_reference_for(spec, seed=cfg.seed, vocab_size=vocab_size, max_seq_len=max_seq_len,
                               randomize=randomize)
    c = ref32.config
    say(f"model {describe_spec(spec)}: L{c.n_layer} C{c.n_embd} NH{c.n_head} V{c.vocab_size} maxT{c.n_positions} "
        f"({sum(p.numel() for p in ref32.parameters()) / 1e6:.1f}M parameters), reference loaded in "
        f"{time.perf_counter() - t0:.1f}s")
    c_model = c_model_for(ref32, cfg)
    try:
        labels = []
        for name, delta in weight_faults:
            apply_weight_fault(c_model, name, delta)
            labels.append(f"weight {name} += {delta:g}")
        for name, delta in faults:
            c_model.debug_set_fault(name, delta)
            labels.append(f"kernel output {name} += {delta:g}")
        if labels:
            say("injected into the C core: " + "; ".join(labels))
        return run_lockstep(ref32, c_model, cfg, progress=say, model_name=describe_spec(spec), faults=labels)
    finally:
        c_model.close()
