"""Exact conversions between Hugging Face GPT-2 weights, the C core's parameter layout and
the llm.c checkpoint files (docs/formats.md).

The C layout ("params"): a dict name -> numpy array, one entry per checkpoint tensor, in
checkpoint order, with the layer dimension stacked first:

    wte (Vp, C)   wpe (maxT, C)   ln1w ln1b (L, C)   qkvw (L, 3C, C)   qkvb (L, 3C)
    attprojw (L, C, C)   attprojb (L, C)   ln2w ln2b (L, C)   fcw (L, 4C, C)   fcb (L, 4C)
    fcprojw (L, C, 4C)   fcprojb (L, C)   lnfw lnfb (C,)

Weights are in Linear (out, in) layout, so HF's Conv1D weights (stored (in, out)) are
transposed on the way in and out. Every conversion here is a pure copy / transpose / zero
pad, so round trips are bit-exact.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Dict, Mapping, Tuple

import numpy as np

from pyllmc.atomic import atomic_write
from pyllmc.errors import BadFormatError, FileError, InvalidArgumentError
from pyllmc.shapes import (  # noqa: F401  (PARAM_NAMES .. num_params: re-exported by pyllmc.reference)
    FIELDS, LAYER_PARAMS, LIMITS, MATRIX_PARAMS, PARAM_NAMES, GPTConfig, check_dims, num_params, pad_vocab, param_shapes,
)

# --------------------------------------------------------------------------------------
# Names and shapes
# --------------------------------------------------------------------------------------

#: C per-layer parameter name -> (HF module path inside a block, Conv1D weight needing a transpose)
_HF_BLOCK_MAP: Dict[str, Tuple[str, bool]] = {
    "ln1w": ("ln_1.weight", False),
    "ln1b": ("ln_1.bias", False),
    "qkvw": ("attn.c_attn.weight", True),
    "qkvb": ("attn.c_attn.bias", False),
    "attprojw": ("attn.c_proj.weight", True),
    "attprojb": ("attn.c_proj.bias", False),
    "ln2w": ("ln_2.weight", False),
    "ln2b": ("ln_2.bias", False),
    "fcw": ("mlp.c_fc.weight", True),
    "fcb": ("mlp.c_fc.bias", False),
    "fcprojw": ("mlp.c_proj.weight", True),
    "fcprojb": ("mlp.c_proj.bias", False),
}
_HF_TOP_MAP: Dict[str, str] = {
    "wte": "wte.weight",
    "wpe": "wpe.weight",
    "lnfw": "ln_f.weight",
    "lnfb": "ln_f.bias",
}

CHECKPOINT_MAGIC = 20240326
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4


class CheckpointFormatError(BadFormatError):
    """A checkpoint file whose content the format does not allow (message names the file).
    A pyllmc BadFormatError (and so a ValueError): the CLI reports it as bad input."""


def as_llmc_config(cfg: Any, padded_vocab_size: int | None = None) -> GPTConfig:
    """A validated GPTConfig from a GPTConfig, anything with the same attribute names, a
    mapping with those keys, or a Hugging Face GPT2Config (vocabulary padded with pad_vocab
    unless padded_vocab_size is given)."""
    if isinstance(cfg, GPTConfig):
        g = cfg
    elif isinstance(cfg, Mapping):
        g = GPTConfig(**{k: cfg[k] for k in FIELDS})
    elif hasattr(cfg, "n_embd") and hasattr(cfg, "n_layer"):  # transformers GPT2Config
        g = GPTConfig.from_hf(cfg, padded_vocab_size)
    else:
        g = GPTConfig(**{k: getattr(cfg, k) for k in FIELDS})
    return g.check("GPT-2 config")


# --------------------------------------------------------------------------------------
# HF <-> C layout
# --------------------------------------------------------------------------------------

def _to_numpy(t: Any, dtype: Any) -> np.ndarray:
    if hasattr(t, "detach"):  # torch tensor
        t = t.detach().cpu()
        if dtype is None:
            return t.numpy().copy()
        import torch

        tdt = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}.get(np.dtype(dtype))
        if tdt is None:
            raise InvalidArgumentError(f"unsupported dtype {dtype}")
        return t.to(tdt).numpy().copy()
    a = np.asarray(t)
    return a.copy() if dtype is None else a.astype(dtype, copy=True)


def _hf_state_dict(model_or_state_dict: Any) -> Dict[str, Any]:
    """Normalise to a flat dict keyed without the 'transformer.' prefix."""
    sd = model_or_state_dict
    if hasattr(sd, "state_dict") and not isinstance(sd, Mapping):
        sd = sd.state_dict()
    out = {}
    for k, v in sd.items():
        if k.startswith("transformer."):
            k = k[len("transformer."):]
        out[k] = v
    return out


def _hf_num_layers(sd: Mapping[str, Any]) -> int:
    layers = set()
    for k in sd:
        m = re.match(r"h\.(\d+)\.", k)
        if m:
            layers.add(int(m.group(1)))
    if layers and layers != set(range(max(layers) + 1)):
        raise InvalidArgumentError(f"state dict has non-contiguous layers {sorted(layers)}")
    return len(layers)


def hf_to_params(model_or_state_dict: Any, padded_vocab_size: int | None = None,
                 dtype: Any = np.float32) -> Dict[str, np.ndarray]:
    """HF GPT-2 weights (a GPT2LMHeadModel / GPT2Model, or a state dict, with or without the
    'transformer.' prefix) -> dict name -> array in the C layout (see module doc).

    wte is zero-padded to padded_vocab_size rows (default: V rounded up to 128). Also works
    for any dict of tensors keyed like HF parameters (e.g. their gradients). dtype=None
    keeps the source dtype; the default converts to float32 (exact for fp32 sources).
    """
    sd = _hf_state_dict(model_or_state_dict)
    missing = [k for k in _HF_TOP_MAP.values() if k not in sd]
    if missing:
        raise KeyError(f"not a GPT-2 state dict: missing {missing}")
    L = _hf_num_layers(sd)
    wte = _to_numpy(sd["wte.weight"], dtype)
    V, C = wte.shape
    Vp = int(padded_vocab_size) if padded_vocab_size else pad_vocab(V)
    if Vp < V:
        raise InvalidArgumentError(f"padded_vocab_size {Vp} < vocab size {V}")
    if "lm_head.weight" in sd:
        lm = sd["lm_head.weight"]
        if hasattr(lm, "data_ptr") and hasattr(sd["wte.weight"], "data_ptr") and \
                lm.data_ptr() != sd["wte.weight"].data_ptr():
            if not np.array_equal(_to_numpy(lm, None), _to_numpy(sd["wte.weight"], None)):
                raise InvalidArgumentError("lm_head.weight is not tied to wte.weight; the C core requires tying")
    params: Dict[str, np.ndarray] = {}
    wte_p = np.zeros((Vp, C), dtype=wte.dtype)
    wte_p[:V] = wte
    params["wte"] = wte_p
    params["wpe"] = np.ascontiguousarray(_to_numpy(sd["wpe.weight"], dtype))
    for name in LAYER_PARAMS:
        hf_name, transpose = _HF_BLOCK_MAP[name]
        per_layer = []
        for layer in range(L):
            a = _to_numpy(sd[f"h.{layer}.{hf_name}"], dtype)
            per_layer.append(a.T if transpose else a)
        params[name] = np.ascontiguousarray(np.stack(per_layer, axis=0)) if L else \
            np.zeros((0,), dtype=wte.dtype)
    params["lnfw"] = np.ascontiguousarray(_to_numpy(sd["ln_f.weight"], dtype))
    params["lnfb"] = np.ascontiguousarray(_to_numpy(sd["ln_f.bias"], dtype))
    return {k: params[k] for k in PARAM_NAMES}


def hf_parameter(model: Any, name: str, layer: Any = None) -> Tuple[Any, bool]:
    """The torch Parameter of a GPT2LMHeadModel (or GPT2Model) that holds C tensor `name`
    (of `layer` for the per-layer ones), and whether the C layout is its transpose."""
    tr = getattr(model, "transformer", model)
    if name in _HF_TOP_MAP:
        if layer is not None:
            raise InvalidArgumentError(f"{name} has no layers")
        mod, attr = _HF_TOP_MAP[name].split(".")
        return getattr(getattr(tr, mod), attr), False
    if name not in _HF_BLOCK_MAP:
        raise KeyError(f"no parameter named {name!r}")
    if layer is None:
        raise InvalidArgumentError(f"{name} is per layer: give the layer")
    path, transpose = _HF_BLOCK_MAP[name]
    obj = tr.h[int(layer)]
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj, transpose


def check_params(params: Mapping[str, np.ndarray], cfg: Any) -> None:
    """Raise ValueError unless params has exactly the 16 tensors with the config's shapes."""
    shapes = param_shapes(cfg)
    extra = set(params) - set(shapes)
    if extra:
        raise InvalidArgumentError(f"unknown parameter names {sorted(extra)}")
    for name, shape in shapes.items():
        if name not in params:
            raise InvalidArgumentError(f"missing parameter {name}")
        if tuple(np.shape(params[name])) != shape:
            raise InvalidArgumentError(f"parameter {name} has shape {tuple(np.shape(params[name]))}, expected {shape}")


def config_from_params(params: Mapping[str, np.ndarray], vocab_size: int,
                       num_heads: int) -> GPTConfig:
    Vp, C = params["wte"].shape
    return GPTConfig(max_seq_len=int(params["wpe"].shape[0]), vocab_size=int(vocab_size),
                     padded_vocab_size=int(Vp), num_layers=int(params["qkvw"].shape[0]),
                     num_heads=int(num_heads), channels=int(C)).check("parameters")


def params_to_hf_state_dict(params: Mapping[str, np.ndarray], config: Any,
                            prefix: str = "transformer.", tie_lm_head: bool = True) -> Dict[str, Any]:
    """Inverse of hf_to_params: dict of torch tensors keyed like GPT2LMHeadModel.state_dict().

    config is an HF GPT2Config or anything as_llmc_config accepts; only V and L are used
    (wte rows V..Vp-1 are dropped; they must be zero, as docs/formats.md requires).
    Includes 'lm_head.weight' (the same tensor as wte) when tie_lm_head.
    """
    import torch

    c = as_llmc_config(config, padded_vocab_size=params["wte"].shape[0])
    V, L = c.vocab_size, c.num_layers
    if params["qkvw"].shape[0] != L:
        raise InvalidArgumentError(f"params have {params['qkvw'].shape[0]} layers, config says {L}")
    wte = np.asarray(params["wte"])
    if wte.shape[0] < V:
        raise InvalidArgumentError(f"wte has {wte.shape[0]} rows < vocab size {V}")
    if np.any(wte[V:] != 0):
        raise InvalidArgumentError("wte rows V..Vp-1 (padding) are not zero")

    def t(a: np.ndarray) -> "torch.Tensor":
        return torch.from_numpy(np.ascontiguousarray(a).copy())

    sd: Dict[str, Any] = {}
    sd[prefix + "wte.weight"] = t(wte[:V])
    sd[prefix + "wpe.weight"] = t(params["wpe"])
    for layer in range(L):
        for name in LAYER_PARAMS:
            hf_name, transpose = _HF_BLOCK_MAP[name]
            a = np.asarray(params[name][layer])
            sd[f"{prefix}h.{layer}.{hf_name}"] = t(a.T if transpose else a)
    sd[prefix + "ln_f.weight"] = t(params["lnfw"])
    sd[prefix + "ln_f.bias"] = t(params["lnfb"])
    if tie_lm_head:
        sd["lm_head.weight"] = sd[prefix + "wte.weight"]
    return sd


def split_layers(name: str, array: np.ndarray) -> Dict[str, np.ndarray]:
    """'qkvw' (L,3C,C) -> {'h0.qkvw': (3C,C), ...}; non-layer tensors map to themselves."""
    base = name.split(".", 1)[1] if name.startswith(("grad.", "adam_m.", "adam_v.")) else name
    prefix = name[: len(name) - len(base)]
    if base not in LAYER_PARAMS:
        return {name: array}
    return {f"{prefix}h{l}.{base}": array[l] for l in range(array.shape[0])}


# --------------------------------------------------------------------------------------
# bfloat16
# --------------------------------------------------------------------------------------

def f32_to_bf16_bits(a: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), round to nearest, ties to even.
    NaN stays NaN (quiet); values past the largest bf16 round to +-inf as RNE requires."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    bits = a.view(np.uint32).astype(np.uint64)
    lsb = (bits >> 16) & 1
    rounded = ((bits + 0x7FFF + lsb) >> 16).astype(np.uint16)
    nan = np.isnan(a)
    if np.any(nan):
        rounded[nan] = ((bits[nan] >> 16).astype(np.uint16) | np.uint16(0x0040))
    return rounded.reshape(a.shape)


def bf16_bits_to_f32(b: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) -> float32 (exact widening)."""
    b = np.ascontiguousarray(b, dtype=np.uint16)
    return (b.astype(np.uint32) << 16).view(np.float32).reshape(b.shape)


def round_to_bf16(a: np.ndarray) -> np.ndarray:
    """float32 values rounded (RNE) to the nearest bfloat16, returned as float32."""
    return bf16_bits_to_f32(f32_to_bf16_bits(a))


# --------------------------------------------------------------------------------------
# llm.c checkpoint files
# --------------------------------------------------------------------------------------

def write_llmc_checkpoint(path: str | os.PathLike, params: Mapping[str, np.ndarray], cfg: Any,
                          version: int = 3) -> None:
    """Write an llm.c model checkpoint: version 3 (float32) or 5 (bfloat16, RNE rounding)."""
    c = as_llmc_config(cfg)
    if version not in (3, 5):
        raise InvalidArgumentError(f"checkpoint version must be 3 or 5, got {version}")
    check_params(params, c)
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0] = CHECKPOINT_MAGIC
    header[1] = version
    header[2:8] = c.header_slots()
    with atomic_write(path, "wb") as f:
        f.write(header.tobytes())
        for name in PARAM_NAMES:
            a = np.asarray(params[name])
            if a.dtype != np.float32:
                if version == 3 and a.dtype == np.float64:
                    raise InvalidArgumentError(f"{name}: float64 arrays must be cast to float32 explicitly")
                a = a.astype(np.float32)
            if version == 3:
                f.write(np.ascontiguousarray(a, dtype="<f4").tobytes())
            else:
                f.write(f32_to_bf16_bits(a).astype("<u2").tobytes())


def read_llmc_checkpoint_header(path: str | os.PathLike) -> Tuple[int, GPTConfig]:
    path = os.fspath(path)
    from pyllmc._files import read_header_ints  # a FIFO or device must not block or hang the reader

    h, size = read_header_ints(path, "checkpoint", CheckpointFormatError, HEADER_BYTES)
    if int(h[0]) != CHECKPOINT_MAGIC:
        raise CheckpointFormatError(f"{path}: bad magic {int(h[0])} (expected {CHECKPOINT_MAGIC})")
    version = int(h[1])
    if version not in (3, 5):
        raise CheckpointFormatError(f"{path}: unsupported checkpoint version {version} (3 or 5)")
    reserved = np.flatnonzero(h[8:])
    if reserved.size:  # docs/formats.md: slots 8..255 are zero (as the C loader checks)
        slot = 8 + int(reserved[0])
        raise CheckpointFormatError(f"{path}: bad header: reserved slot {slot} is {int(h[slot])} (must be 0)")
    cfg = GPTConfig.from_header(h[2:8]).check(f"{path}: header", CheckpointFormatError)
    itemsize = 4 if version == 3 else 2
    expected = HEADER_BYTES + num_params(cfg) * itemsize
    if size != expected:
        raise CheckpointFormatError(f"{path}: file is {size} bytes, header implies {expected}")
    return version, cfg


def read_llmc_checkpoint(path: str | os.PathLike) -> Tuple[GPTConfig, Dict[str, np.ndarray]]:
    """Read a v3 or v5 checkpoint -> (config, params as float32 arrays in the C layout)."""
    version, cfg = read_llmc_checkpoint_header(path)
    dt = np.dtype("<f4") if version == 3 else np.dtype("<u2")
    data = np.fromfile(os.fspath(path), dtype=dt, offset=HEADER_BYTES)
    if version == 5:
        data = bf16_bits_to_f32(data)
    else:
        data = data.astype(np.float32)
    if data.size != num_params(cfg):  # the file changed after its size was checked
        raise CheckpointFormatError(f"{path}: read {data.size} of {num_params(cfg)} parameters")
    params: Dict[str, np.ndarray] = {}
    off = 0
    for name, shape in param_shapes(cfg).items():
        n = int(np.prod(shape))
        params[name] = data[off:off + n].reshape(shape).copy()
        off += n
    pad = params["wte"][cfg.vocab_size:]
    if pad.size and np.any(pad != 0):  # docs/formats.md: wte rows V..Vp-1 are zero
        row = cfg.vocab_size + int(np.flatnonzero(np.any(pad != 0, axis=1))[0])
        raise CheckpointFormatError(
            f"{path}: wte row {row} is not zero (rows {cfg.vocab_size}..{cfg.padded_vocab_size - 1} "
            "pad the vocabulary and must be zero)")
    return cfg, params


# --------------------------------------------------------------------------------------
# Hugging Face directories
# --------------------------------------------------------------------------------------

def hf_config_from(cfg: Any, **overrides: Any):
    """The transformers GPT2Config matching a GPTConfig (gelu_new, LN eps 1e-5, no dropout)."""
    from .hf import make_config

    c = as_llmc_config(cfg)
    return make_config(vocab_size=c.vocab_size, n_positions=c.max_seq_len, n_layer=c.num_layers,
                       n_head=c.num_heads, n_embd=c.channels, **overrides)


def params_to_hf_model(params: Mapping[str, np.ndarray], cfg: Any, dtype: Any = None):
    """A GPT2LMHeadModel (eager attention, no dropout, eval mode) holding exactly these weights."""
    import torch
    from transformers import GPT2LMHeadModel

    c = as_llmc_config(cfg)
    check_params(params, c)
    hf_cfg = cfg if hasattr(cfg, "n_embd") else hf_config_from(c)
    with torch.device("meta"):
        model = GPT2LMHeadModel(hf_cfg)
    sd = params_to_hf_state_dict(params, c)
    model.load_state_dict(sd, strict=True, assign=True)
    model.tie_weights()
    if model.lm_head.weight is not model.transformer.wte.weight:
        model.lm_head.weight = model.transformer.wte.weight
    model.eval()
    if dtype is not None:
        model = model.to(dtype)
    return model


def save_hf_dir(params: Mapping[str, np.ndarray], cfg: Any, directory: str | os.PathLike) -> None:
    """Write a directory (config.json + model.safetensors) that
    GPT2LMHeadModel.from_pretrained(directory) loads with exactly these weights."""
    from safetensors.torch import save_file

    c = as_llmc_config(cfg)
    check_params(params, c)
    hf_cfg = cfg if hasattr(cfg, "n_embd") else hf_config_from(c)
    os.makedirs(directory, exist_ok=True)
    sd = params_to_hf_state_dict(params, c, tie_lm_head=False)  # lm_head is tied: not stored
    save_file({k: v.contiguous() for k, v in sd.items()},
              os.path.join(os.fspath(directory), "model.safetensors"), metadata={"format": "pt"})
    hf_cfg.save_pretrained(os.fspath(directory))


def load_hf_dir_params(directory: str | os.PathLike, padded_vocab_size: int | None = None
                       ) -> Tuple[GPTConfig, Dict[str, np.ndarray]]:
    """Read a local HF GPT-2 directory's safetensors directly (no model build) -> (cfg, params)."""
    from safetensors.numpy import load_file

    from pyllmc._files import open_regular

    directory = os.fspath(directory)
    cpath = os.path.join(directory, "config.json")
    f, _ = open_regular(cpath, "config.json")  # a FIFO or device must not hang the reader
    try:
        with f:
            conf = json.loads(f.read().decode("utf-8"))
    except OSError as e:
        raise FileError(f"{cpath}: cannot read: {e.strerror or e}") from None
    except (ValueError, UnicodeDecodeError, RecursionError) as e:  # RecursionError: deep nesting
        raise BadFormatError(f"{cpath}: not valid JSON: {str(e)[:200]}") from None
    dims = _hf_dims(conf, cpath)
    st = os.path.join(directory, "model.safetensors")
    open_regular(st, "safetensors")[0].close()  # a clear FileError for a missing/odd file
    try:
        sd = load_file(st)
    except Exception as e:  # safetensors raises its own SafetensorError (not an OSError/ValueError)
        raise BadFormatError(f"{st}: cannot read safetensors: {str(e).splitlines()[0][:200] if str(e) else type(e).__name__}") from None
    try:
        wte = sd.get("transformer.wte.weight", sd.get("wte.weight"))
        if wte is not None and np.ndim(wte) >= 1 and np.shape(wte)[0] != dims["vocab_size"]:
            raise InvalidArgumentError(f"wte has {np.shape(wte)[0]} rows, config.json says vocab_size {dims['vocab_size']}")
        params = hf_to_params(sd, padded_vocab_size)
        cfg = GPTConfig(padded_vocab_size=int(params["wte"].shape[0]), **dims).check(cpath)
        check_params(params, cfg)  # every tensor's shape must be the one config.json implies
    except (KeyError, ValueError, TypeError) as e:
        raise BadFormatError(f"{st}: does not match a GPT-2 of {cpath}: {str(e)[:300]}") from None
    return cfg, params


#: config.json key -> GPTConfig field (padded_vocab_size is not in config.json)
_HF_KEYS = {"n_positions": "max_seq_len", "vocab_size": "vocab_size", "n_layer": "num_layers",
            "n_head": "num_heads", "n_embd": "channels"}


def _hf_dims(conf: Any, cpath: str) -> Dict[str, int]:
    """GPTConfig fields (all but padded_vocab_size) from an HF GPT-2 config.json, validated
    before anything is allocated: present, integers, within the C core's limits, n_embd
    divisible by n_head (pyllmc.shapes.check_dims), and a model the C core computes
    (gelu_new, LayerNorm eps 1e-5, n_inner 4*n_embd, no attention variants)."""
    if not isinstance(conf, dict):
        raise BadFormatError(f"{cpath}: not a JSON object")
    dims = {}
    for key, field in _HF_KEYS.items():
        v = conf.get(key)
        if isinstance(v, bool) or not isinstance(v, int):
            raise BadFormatError(f"{cpath}: {key!r} must be an integer, got {v!r}")
        dims[field] = v
    check_dims(dims, cpath, BadFormatError)
    vals = {key: dims[field] for key, field in _HF_KEYS.items()}
    problems = []
    if conf.get("activation_function", "gelu_new") != "gelu_new":
        problems.append(f"activation_function {conf.get('activation_function')!r} (need 'gelu_new')")
    eps = conf.get("layer_norm_epsilon", 1e-5)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or eps != 1e-5:
        problems.append(f"layer_norm_epsilon {eps!r} (need 1e-5)")
    if conf.get("n_inner") not in (None, 4 * vals["n_embd"]):
        problems.append(f"n_inner {conf.get('n_inner')!r} (need null or 4*n_embd)")
    for key, ok in (("scale_attn_by_inverse_layer_idx", False), ("scale_attn_weights", True),
                    ("add_cross_attention", False)):
        if conf.get(key, ok) != ok:
            problems.append(f"{key} {conf.get(key)!r}")
    if problems:
        raise BadFormatError(f"{cpath}: a GPT-2 the C core does not compute: " + "; ".join(problems))
    return dims


# --------------------------------------------------------------------------------------
# pyllmc.Model
# --------------------------------------------------------------------------------------

def _stacked_view(views: Mapping[str, np.ndarray], name: str) -> Any:
    """views[name], or for a layer parameter exposed only per layer (h0.qkvw, ...) the list
    of per-layer views."""
    if name in views:
        return views[name]
    if name in LAYER_PARAMS and f"h0.{name}" in views:
        out, l = [], 0
        while f"h{l}.{name}" in views:
            out.append(views[f"h{l}.{name}"])
            l += 1
        return out
    raise KeyError(f"model has no parameter tensor {name!r}")


def load_into_model(model: Any, params: Mapping[str, np.ndarray]) -> None:
    """Copy C-layout params into a pyllmc.Model through its zero-copy m.params views.

    wte may have V or Vp rows; missing padding rows are written as zeros.
    """
    views = model.params
    unknown = set(params) - set(PARAM_NAMES)
    if unknown:
        raise KeyError(f"unknown parameter names {sorted(unknown)}")
    missing = [n for n in PARAM_NAMES if n not in params]
    if missing:
        raise KeyError(f"params lack {missing}")
    for name in PARAM_NAMES:
        dst = _stacked_view(views, name)
        src = np.asarray(params[name])
        if isinstance(dst, list):
            if src.shape[0] != len(dst):
                raise InvalidArgumentError(f"parameter {name}: {src.shape[0]} layers, model has {len(dst)}")
            for l, d in enumerate(dst):
                if src[l].shape != d.shape:
                    raise InvalidArgumentError(f"parameter h{l}.{name}: shape {src[l].shape} != model {d.shape}")
                d[...] = src[l]
            continue
        if name == "wte" and src.shape[0] < dst.shape[0] and src.shape[1:] == dst.shape[1:]:
            dst[: src.shape[0]] = src
            dst[src.shape[0]:] = 0.0
            continue
        if src.shape != dst.shape:
            raise InvalidArgumentError(f"parameter {name}: shape {src.shape} does not match model {dst.shape}")
        dst[...] = src


def model_tensors(views: Mapping[str, np.ndarray], copy: bool = True) -> Dict[str, np.ndarray]:
    """The 16 parameter-shaped tensors (C layout, layers stacked) from one of a pyllmc.Model's
    view dicts (m.params, m.grads, m.adam_m, m.adam_v), copied by default."""
    out = {}
    for name in PARAM_NAMES:
        v = _stacked_view(views, name)
        out[name] = np.stack(v) if isinstance(v, list) else (np.array(v, copy=True) if copy else v)
    return out


def model_params(model: Any) -> Dict[str, np.ndarray]:
    """Copies of a pyllmc.Model's parameters (C layout)."""
    return model_tensors(model.params)
