"""The implementations a benchmark compares, each as a `Runner` that does one training step.

Every runner does the same step on the same shapes: forward with targets (mean
cross-entropy), zero the gradients, backward, clip the global gradient norm to 1.0, AdamW
(lr 1e-4, betas 0.9/0.999, eps 1e-8, weight decay 0.1 on every parameter). A step reports its
phases: `forward`, `backward` (zero_grad included) and `update` (clip + AdamW).

Names (`describe()` lists them):
  c-core                       the C core through the Python binding (pyllmc.Model)
  c-core-wasm                  the same on the wasm core (device="wasm": libllmc.wasm in
                               wasmtime, one thread)
  torch-hf-eager-foreach       Hugging Face GPT2LMHeadModel, eager attention, AdamW(foreach=True)
  torch-hf-eager-fused         ... AdamW(fused=True)
  torch-hf-sdpa-foreach/fused  Hugging Face GPT2LMHeadModel with scaled_dot_product_attention
  torch-compact-foreach/fused  the hand-written CompactGPT2 (torch_gpt2.py)
  torch-compact-fused-compile  CompactGPT2 under torch.compile (inductor), fused AdamW
  ...-bf16                     bf16 precision: the C core with precision="bf16" (c-core-bf16,
                               c-driver-bf16), a PyTorch variant with its forward and loss
                               under torch.autocast("cpu", dtype=torch.bfloat16)
Heavy imports (torch, transformers, pyllmc) happen inside the runners, so a worker process
measuring the C core never loads torch and its peak RSS is the C core's own.
"""

from __future__ import annotations

import inspect
import re
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from .spec import Job

LR, BETA1, BETA2, EPS, WEIGHT_DECAY, CLIP = 1e-4, 0.9, 0.999, 1e-8, 0.1, 1.0

_TORCH_RE = re.compile(r"torch-(hf-eager|hf-sdpa|compact)-(foreach|fused)(-compile)?(-bf16)?")

DEFAULT_IMPLS = (
    "c-core",
    "torch-hf-eager-foreach",
    "torch-hf-sdpa-fused",
    "torch-compact-foreach",
    "torch-compact-fused",
    "torch-compact-fused-compile",
)


#: `pyllmc bench --suite d12`: the C core (through Python and from C) against every PyTorch
#: variant the project notes compare (HF eager and the compact model, AdamW foreach and
#: fused, and the compact model compiled)
NOTES_IMPLS = (
    "c-core",
    "c-driver",
    "torch-hf-eager-foreach",
    "torch-hf-eager-fused",
    "torch-compact-foreach",
    "torch-compact-fused",
    "torch-compact-fused-compile",
)


#: `pyllmc bench --precision bf16`: the C core in bf16 against PyTorch's bf16 (CPU autocast):
#: HF eager, the compact model, and the compact model compiled
BF16_IMPLS = (
    "c-core-bf16",
    "c-driver-bf16",
    "torch-hf-eager-fused-bf16",
    "torch-compact-fused-bf16",
    "torch-compact-fused-compile-bf16",
)


def precision_of(impl: str) -> str:
    """"bf16" for the bf16 variants (name ending in -bf16), else "fp32"."""
    return "bf16" if impl.endswith("-bf16") else "fp32"


def to_precision(impl: str, precision: str) -> str:
    """The name of `impl` in `precision` (c-core -> c-core-bf16 and back)."""
    base = impl[:-len("-bf16")] if impl.endswith("-bf16") else impl
    return base + "-bf16" if precision == "bf16" and base != "llmc-bin" else base


def describe() -> Dict[str, str]:
    return {
        "c-core-bf16": "C core in bf16 precision (GEMM operands bf16, fp32 accumulation)",
        "c-driver-bf16": "C core in bf16 precision, driven from C",
        "torch-hf-eager-fused-bf16": "HF GPT2LMHeadModel eager, AdamW fused, autocast bf16",
        "torch-compact-fused-bf16": "compact GPT-2 (SDPA), AdamW fused, autocast bf16",
        "torch-compact-fused-compile-bf16": "compact GPT-2 under torch.compile, AdamW fused, autocast bf16",
        "c-core": "C core through the Python binding (pyllmc.Model)",
        "c-core-wasm": "C core as WebAssembly (device='wasm', wasmtime, single-threaded)",
        "c-driver": "C core driven by a C program (core_c/bench/bench_step.c), no Python",
        "torch-hf-eager-foreach": "HF GPT2LMHeadModel, eager attention, AdamW foreach",
        "torch-hf-eager-fused": "HF GPT2LMHeadModel, eager attention, AdamW fused",
        "torch-hf-sdpa-foreach": "HF GPT2LMHeadModel, SDPA attention, AdamW foreach",
        "torch-hf-sdpa-fused": "HF GPT2LMHeadModel, SDPA attention, AdamW fused",
        "torch-compact-foreach": "compact hand-written GPT-2 (SDPA), AdamW foreach",
        "torch-compact-fused": "compact hand-written GPT-2 (SDPA), AdamW fused",
        "torch-compact-fused-compile": "compact GPT-2 under torch.compile, AdamW fused",
        "llmc-bin": "external llm.c train_gpt2 binary named by $LLMC_BIN",
    }


def is_torch(impl: str) -> bool:
    return _TORCH_RE.fullmatch(impl) is not None


def is_torch_eager(impl: str) -> bool:
    m = _TORCH_RE.fullmatch(impl)
    return m is not None and not m.group(3)


def known(impl: str) -> bool:
    return impl in ("c-core", "c-driver", "llmc-bin", "c-core-bf16", "c-driver-bf16", "c-core-wasm") or is_torch(impl)


def batch(job: Job) -> Tuple[np.ndarray, np.ndarray]:
    """Fixed random tokens for the job (the same batch every step)."""
    rng = np.random.default_rng(job.seed + 1)
    V = job.shape.vocab_size
    x = rng.integers(0, V, size=(job.B, job.T), dtype=np.int64)
    y = rng.integers(0, V, size=(job.B, job.T), dtype=np.int64)
    return x, y


class Runner:
    """One implementation set up for one job. `step(t)` runs training step t (1-based) and
    returns (phase seconds, loss)."""

    info: Dict[str, object]

    def step(self, t: int) -> Tuple[Dict[str, float], float]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class CCoreRunner(Runner):
    def __init__(self, job: Job):
        from .. import Model

        device = "wasm" if job.impl == "c-core-wasm" else "cpu"
        self.m = Model.from_config(job.shape.config(), max_batch=job.B, max_seq=job.T, threads=job.threads, seed=job.seed,
                                   precision=precision_of(job.impl), device=device)
        self.x, self.y = (a.astype(np.int32) for a in batch(job))

        # Clipping folded into the update (grad_scale) where the binding offers it: the same
        # update as clip_grad_norm + adamw_step with one pass over the gradients fewer.
        self.fused_clip = "grad_scale" in inspect.signature(self.m.adamw_step).parameters
        # backward(accumulate=False) overwrites the gradients: zero_grad + backward without
        # zero_grad's pass, as the trainer does for the first micro-batch (PyTorch's
        # counterpart is zero_grad(set_to_none=True), which costs nothing either)
        self.overwrite = "accumulate" in inspect.signature(self.m.backward).parameters
        if self.fused_clip:
            from ..shapes import clip_coefficient

            self.clip_coefficient = clip_coefficient
        core = self.m._lib
        self.info = {"library": str(core.instance.path) if device == "wasm" else _library_path(),
                     "openmp": bool(core.llmc_has_openmp()),
                     "clip": "grad_scale" if self.fused_clip else "clip_grad_norm",
                     "backward": "overwrite" if self.overwrite else "zero_grad+accumulate"}

    def step(self, t: int):
        m, clock = self.m, time.perf_counter
        hp: Dict[str, Any] = dict(beta1=BETA1, beta2=BETA2, eps=EPS, weight_decay=WEIGHT_DECAY)
        t0 = clock()
        loss = m.forward(self.x, self.y)
        t1 = clock()
        if self.overwrite:
            m.backward(1.0, accumulate=False)
        else:
            m.zero_grad()
            m.backward(1.0)
        t2 = clock()
        if self.fused_clip:
            m.adamw_step(LR, t=t, grad_scale=self.clip_coefficient(m.grad_norm(), CLIP), **hp)
        else:
            m.clip_grad_norm(CLIP)
            m.adamw_step(LR, t=t, **hp)
        t3 = clock()
        return {"forward": t1 - t0, "backward": t2 - t1, "update": t3 - t2}, float(loss)

    def close(self) -> None:
        self.m.close()


def _library_path() -> str:
    from .. import LIBRARY_PATH

    return str(LIBRARY_PATH)


def _hf_model(job: Job, attn: str):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    s = job.shape
    # The same settings the parity reference uses (pyllmc.reference.make_config): gelu_new,
    # LN eps 1e-5, no dropout, tied embeddings, no KV cache.
    cfg = GPT2Config(
        vocab_size=s.vocab_size, n_positions=s.max_seq_len, n_layer=s.num_layers, n_head=s.num_heads,
        n_embd=s.channels, activation_function="gelu_new", layer_norm_epsilon=1e-5, resid_pdrop=0.0,
        embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True, use_cache=False,
        bos_token_id=min(50256, s.vocab_size - 1), eos_token_id=min(50256, s.vocab_size - 1),
    )  # fmt: skip
    cfg._attn_implementation = attn
    torch.manual_seed(job.seed)
    model = GPT2LMHeadModel(cfg)
    model.train()
    return model


class TorchRunner(Runner):
    def __init__(self, job: Job):
        import torch
        import torch.nn.functional as F

        m = _TORCH_RE.fullmatch(job.impl)
        if not m:
            raise ValueError(f"unknown implementation {job.impl!r}")
        kind, opt, compiled = m.group(1), m.group(2), bool(m.group(3))
        # bf16: the forward and the loss under CPU autocast, backward outside it (torch's advice)
        import contextlib

        self.amp = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if m.group(4) else contextlib.nullcontext
        torch.set_num_threads(job.threads)
        self.torch, self.F = torch, F
        s = job.shape
        if kind == "compact":
            from .torch_gpt2 import CompactGPT2

            torch.manual_seed(job.seed)
            self.model = CompactGPT2(s.num_layers, s.channels, s.num_heads, s.vocab_size, s.max_seq_len)
            self.hf = False
        else:
            self.model = _hf_model(job, "eager" if kind == "hf-eager" else "sdpa")
            self.hf = True
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(
            self.params, lr=LR, betas=(BETA1, BETA2), eps=EPS, weight_decay=WEIGHT_DECAY,
            **({"fused": True} if opt == "fused" else {"foreach": True}),
        )  # fmt: skip
        self.fwd: Callable = self.model
        if compiled:
            self.fwd = torch.compile(self.model)
        x, y = batch(job)
        self.x, self.y = torch.from_numpy(x), torch.from_numpy(y)
        self.V = s.vocab_size
        self.info = {"torch": torch.__version__, "torch_threads": torch.get_num_threads()}
        if self.hf:
            import transformers

            self.info["transformers"] = transformers.__version__

    def _loss(self):
        if self.hf:
            logits = self.fwd(input_ids=self.x).logits
            return self.F.cross_entropy(logits.reshape(-1, self.V), self.y.reshape(-1))
        return self.fwd(self.x, self.y)

    def step(self, t: int):
        clock = time.perf_counter
        t0 = clock()
        with self.amp():
            loss = self._loss()
        t1 = clock()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        t2 = clock()
        self.torch.nn.utils.clip_grad_norm_(self.params, CLIP, foreach=True)
        self.opt.step()
        t3 = clock()
        return {"forward": t1 - t0, "backward": t2 - t1, "update": t3 - t2}, float(loss.detach())


def make_runner(job: Job) -> Runner:
    if job.impl in ("c-core", "c-core-bf16", "c-core-wasm"):
        return CCoreRunner(job)
    if is_torch(job.impl):
        return TorchRunner(job)
    raise ValueError(f"implementation {job.impl!r} does not run in a Python worker")


def split_impls(impls: List[str]) -> Tuple[List[str], List[str]]:
    """(known, unknown) implementation names."""
    ok = [i for i in impls if known(i)]
    return ok, [i for i in impls if not known(i)]


def best_torch_eager(results: List[dict], key: str = "ms_median") -> Optional[dict]:
    """The fastest PyTorch eager (not compiled) fp32 result among `results`."""
    cands = [r for r in results if is_torch_eager(r["impl"]) and precision_of(r["impl"]) == "fp32"]
    return min(cands, key=lambda r: r[key]) if cands else None


def best_torch_bf16(results: List[dict], key: str = "ms_median") -> Optional[dict]:
    """The fastest PyTorch bf16 result (any configuration, compiled included) in `results`."""
    cands = [r for r in results if is_torch(r["impl"]) and precision_of(r["impl"]) == "bf16"]
    return min(cands, key=lambda r: r[key]) if cands else None
