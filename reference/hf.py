"""The PyTorch GPT-2 reference: an unmodified transformers GPT2LMHeadModel configured to
compute exactly what the C core computes (eager attention, no dropout, gelu_new, LN eps 1e-5).
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
from typing import Any, Dict

import torch

from pyllmc.errors import InvalidArgumentError  # a ValueError: bad specs and configs
from pyllmc.shapes import GPT2_MAX_SEQ, GPT2_VOCAB, is_size_descriptor, size_dims  # noqa: F401  (re-exported)

def make_config(vocab_size: int = GPT2_VOCAB, n_positions: int = GPT2_MAX_SEQ, n_layer: int = 12,
                n_head: int = 12, n_embd: int = 768, **overrides: Any):
    """A GPT2Config that matches the C core: gelu_new, LN eps 1e-5, no dropout, eager
    attention, tied embeddings, no attention-weight tricks."""
    from transformers import GPT2Config

    if n_embd % n_head:
        raise InvalidArgumentError(f"n_embd {n_embd} not divisible by n_head {n_head}")
    kw: Dict[str, Any] = dict(
        vocab_size=vocab_size, n_positions=n_positions, n_layer=n_layer, n_head=n_head,
        n_embd=n_embd, n_inner=None, activation_function="gelu_new", layer_norm_epsilon=1e-5,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, summary_first_dropout=0.0,
        scale_attn_weights=True, scale_attn_by_inverse_layer_idx=False,
        reorder_and_upcast_attn=False, tie_word_embeddings=True, use_cache=False,
        initializer_range=0.02,
    )
    if vocab_size <= 50256:  # GPT-2's <|endoftext|> id would be out of range
        kw["bos_token_id"] = kw["eos_token_id"] = vocab_size - 1
    kw.update(overrides)
    cfg = GPT2Config(**kw)
    cfg._attn_implementation = "eager"
    return cfg


def size_config(spec: str, vocab_size: int = GPT2_VOCAB, n_positions: int = GPT2_MAX_SEQ):
    L, C, NH = size_dims(spec)
    return make_config(vocab_size=vocab_size, n_positions=n_positions, n_layer=L, n_head=NH, n_embd=C)


def check_reference_config(cfg: Any) -> None:
    """Raise ValueError if an HF config computes something the C core does not."""
    problems = []
    if cfg.activation_function != "gelu_new":
        problems.append(f"activation_function={cfg.activation_function!r} (need 'gelu_new')")
    if abs(float(cfg.layer_norm_epsilon) - 1e-5) > 0:
        problems.append(f"layer_norm_epsilon={cfg.layer_norm_epsilon} (need 1e-5)")
    if getattr(cfg, "n_inner", None) not in (None, 4 * cfg.n_embd):
        problems.append(f"n_inner={cfg.n_inner} (need 4*n_embd)")
    if getattr(cfg, "scale_attn_by_inverse_layer_idx", False):
        problems.append("scale_attn_by_inverse_layer_idx=True")
    if not getattr(cfg, "scale_attn_weights", True):
        problems.append("scale_attn_weights=False")
    if getattr(cfg, "add_cross_attention", False):
        problems.append("add_cross_attention=True")
    if problems:
        raise InvalidArgumentError("GPT-2 config not supported by the C core: " + "; ".join(problems))


def prepare_reference(model: Any) -> Any:
    """Make a GPT2LMHeadModel compute like the C core: dropout 0, eager attention, eval mode,
    tied lm_head. Returns the same model."""
    check_reference_config(model.config)
    for k in ("resid_pdrop", "embd_pdrop", "attn_pdrop"):
        setattr(model.config, k, 0.0)
    for mod in model.modules():
        if isinstance(mod, torch.nn.Dropout):
            mod.p = 0.0
    model.config._attn_implementation = "eager"
    model.eval()  # dropout is 0 anyway; eval also pins any other train/eval difference
    if model.lm_head.weight is not model.transformer.wte.weight:
        raise InvalidArgumentError("lm_head.weight is not tied to transformer.wte.weight")
    return model


@contextlib.contextmanager
def _seeded(seed: int):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def random_model(config: Any, dtype: torch.dtype = torch.float32, seed: int = 0):
    """A GPT2LMHeadModel with transformers' GPT-2 initialisation drawn from seed."""
    from transformers import GPT2LMHeadModel

    with _seeded(seed):
        model = GPT2LMHeadModel(config)
    return prepare_reference(model.to(dtype))


def load_reference(spec: Any, dtype: torch.dtype = torch.float32, seed: int = 0):
    """The reference GPT2LMHeadModel for a model spec:

    - a size descriptor 'dN' (d12 = 124M shape, d24/d36/d48 = medium/large/xl): fresh random
      GPT-2 initialisation from seed, V=50257, maxT=1024;
    - an llm.c checkpoint file (*.bin): its weights (wte padding dropped);
    - a transformers GPT2Config: a random model of that config;
    - otherwise a hub id or local directory, through GPT2LMHeadModel.from_pretrained.
    Always eager attention, dropout 0, eval mode, in `dtype`.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    if isinstance(spec, GPT2Config):
        return random_model(spec, dtype=dtype, seed=seed)
    if is_size_descriptor(spec):
        return random_model(size_config(spec), dtype=dtype, seed=seed)
    spec_s = os.fspath(spec)
    if spec_s.endswith(".bin") and os.path.isfile(spec_s):
        from .convert import params_to_hf_model, read_llmc_checkpoint

        cfg, params = read_llmc_checkpoint(spec_s)
        return prepare_reference(params_to_hf_model(params, cfg, dtype=dtype))
    # load in the stored dtype, then widen/convert exactly with .to(dtype): the same on
    # transformers 4.x (torch_dtype=) and 5.x (dtype=), whose keyword names differ
    model = GPT2LMHeadModel.from_pretrained(
        spec_s, attn_implementation="eager", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )
    return prepare_reference(model.to(dtype))


def to_dtype(model: Any, dtype: torch.dtype) -> Any:
    """A deep copy of the reference in another dtype (e.g. float64 for error attribution);
    the weights are the same values, widened exactly."""
    m = copy.deepcopy(model).to(dtype)
    if m.lm_head.weight is not m.transformer.wte.weight:  # deepcopy keeps ties, but be sure
        m.lm_head.weight = m.transformer.wte.weight
    return prepare_reference(m)


@torch.no_grad()
def randomize_params(model: Any, seed: int = 0, weight_scale: float = 1.0) -> Any:
    """Overwrite every parameter with non-trivial random values, so that no parameter of the
    test model is 0 or 1 (GPT-2's init leaves biases 0 and LN weights 1, which would hide bugs
    such as a dropped bias or swapped LN weight/bias), and activations are O(1) so attention
    is far from uniform. Matrices: N(0, weight_scale/sqrt(fan_in)); embeddings N(0, 0.5);
    biases N(0, 0.1); LN weights 1 + N(0, 0.2); LN biases N(0, 0.1). Returns the model."""
    from transformers.pytorch_utils import Conv1D

    g = torch.Generator().manual_seed(seed)

    def fill(p: torch.Tensor, mean: float, std: float) -> None:
        p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * std + mean)

    tr = model.transformer
    fill(tr.wte.weight, 0.0, 0.5)
    fill(tr.wpe.weight, 0.0, 0.5)
    for mod in model.modules():
        if isinstance(mod, Conv1D):
            fan_in = mod.weight.shape[0]  # Conv1D weight is (in, out)
            fill(mod.weight, 0.0, weight_scale / fan_in ** 0.5)
            fill(mod.bias, 0.0, 0.1)
        elif isinstance(mod, torch.nn.LayerNorm):
            fill(mod.weight, 1.0, 0.2)
            fill(mod.bias, 0.0, 0.1)
    return model


def perturb_bf16_ulp(model: Any, seed: int = 0) -> Any:
    """Move every parameter element by one bf16 ulp (2^-7 of the power of two below it, 2^16
    fp32 ulps) up or down (random sign, from seed): an equally valid starting point for a run whose
    products see the weights in bf16. One fp32 ulp hardly moves such a run (a bf16 rounding
    flips only when the weight sits on a tie), so its noise runs start from this instead
    (tolerance_bf16.py). Zeros stay zero. Returns the model."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            sign = torch.where(torch.rand(p.shape, generator=g) < 0.5, -1.0, 1.0).to(p.dtype)
            _, e = torch.frexp(p)  # |p| = m 2^e, m in [0.5, 1): a bf16 ulp is 2^(e - 8)
            p.add_(sign * torch.ldexp(torch.ones_like(p), e - 8) * (p != 0))
    return model


@torch.no_grad()
def perturb_ulp(model: Any, seed: int = 0) -> Any:
    """Move every parameter element by one ulp up or down (random sign, from seed): an
    equally valid fp32 starting point, used to measure how far rounding-level differences
    carry through a trajectory (see tolerance.py). Returns the model."""
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        direction = torch.where(torch.rand(p.shape, generator=g) < 0.5, -math.inf, math.inf).to(p.dtype)
        p.copy_(torch.nextafter(p, direction))
    return model
