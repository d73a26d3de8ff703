"""GPT-2 shapes: the one place that says what a model's dimensions are and which ones the C
core accepts. Used by the Model (``GPTConfig``), the PyTorch reference's converters, the
parity harness and the benchmarks.

- size descriptors ``dN`` (llm.c's naming): ``d12`` is GPT-2 124M (L12 C768 NH12); d24, d36
  and d48 are GPT-2 medium, large and xl; any other ``dN`` is L=N, C=64N, NH=N. A descriptor
  is case-insensitive and may be surrounded by white space (``" D12 "`` is ``d12``);
- ``pad_vocab``: the vocabulary rounded up to a multiple of 128 (50257 -> 50304), the rows
  of ``wte`` the C core allocates so that the logits GEMM works on aligned tiles;
- ``check_dims``: the C core's own limits (``llmc_validate_config`` in core_c/src/model.c),
  checked in Python before anything is allocated;
- the 16 parameter tensors (names, order, shapes, count) of the C layout and the llm.c
  checkpoint;
- ``clip_coefficient``: the gradient-clipping factor in the arithmetic of the model it is
  applied to.

Nothing here loads the C library, so the module is importable without it.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np

from .errors import InvalidArgumentError

#: GPT-2's BPE vocabulary and context length, the defaults of every size descriptor
GPT2_VOCAB = 50257
GPT2_MAX_SEQ = 1024
#: the padded vocabulary is a multiple of this (llm.c's choice)
VOCAB_PAD_MULTIPLE = 128

#: descriptors that do not follow dN = (L=N, C=64N, NH=N): N -> (layers, channels, heads)
SPECIAL_SIZES: Dict[int, Tuple[int, int, int]] = {
    12: (12, 768, 12),  # GPT-2 small (124M); the rule gives the same
    24: (24, 1024, 16),  # GPT-2 medium (350M)
    36: (36, 1280, 20),  # GPT-2 large (774M)
    48: (48, 1600, 25),  # GPT-2 xl (1558M)
}

#: the dimensions, in the order of llmc_config (and GPTConfig)
FIELDS: Tuple[str, ...] = ("max_seq_len", "vocab_size", "padded_vocab_size", "num_layers", "num_heads", "channels")
#: the same dimensions in the order of an llm.c checkpoint header's int32 slots 2..7
HEADER_FIELDS: Tuple[str, ...] = ("max_seq_len", "vocab_size", "num_layers", "num_heads", "channels", "padded_vocab_size")

#: the C core's upper limits (llmc_validate_config): sizes stay far from overflow, and an
#: absurd header is refused before anything is allocated
LIMITS: Dict[str, int] = {
    "max_seq_len": 1 << 20,
    "vocab_size": 1 << 24,
    "padded_vocab_size": 1 << 24,
    "num_layers": 1024,
    "num_heads": 1 << 16,
    "channels": 1 << 16,
}

#: the 16 parameter tensors, in checkpoint order
PARAM_NAMES: Tuple[str, ...] = (
    "wte", "wpe", "ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb",
    "ln2w", "ln2b", "fcw", "fcb", "fcprojw", "fcprojb", "lnfw", "lnfb",
)  # fmt: skip
#: parameters with a leading layer dimension
LAYER_PARAMS: Tuple[str, ...] = PARAM_NAMES[2:14]
#: 2-D weight matrices (weight decay applies only to these when decay_matrices_only)
MATRIX_PARAMS: Tuple[str, ...] = ("wte", "wpe", "qkvw", "attprojw", "fcw", "fcprojw")

_DESCRIPTOR = re.compile(r"[dD](\d+)")


# ------------------------------------------------------------------ size descriptors
def is_size_descriptor(spec: Any) -> bool:
    """True for ``dN`` (any case, white space around allowed), N >= 0 digits; ``d0`` is a
    descriptor, though not a valid one (size_dims says why)."""
    return isinstance(spec, str) and _DESCRIPTOR.fullmatch(spec.strip()) is not None


def size_dims(spec: str) -> Tuple[int, int, int]:
    """(layers, channels, heads) of a size descriptor: ``"d12"`` -> (12, 768, 12)."""
    m = _DESCRIPTOR.fullmatch(spec.strip()) if isinstance(spec, str) else None
    if not m or int(m.group(1)) < 1:
        raise InvalidArgumentError(f"bad model size descriptor {spec!r}: expected dN with N >= 1, e.g. d12")
    n = int(m.group(1))
    return SPECIAL_SIZES.get(n, (n, 64 * n, n))


def size_name(spec: str) -> str:
    """The canonical spelling of a size descriptor: ``" D012 "`` -> ``"d12"``."""
    size_dims(spec)  # valid first
    return f"d{int(spec.strip()[1:])}"


def pad_vocab(vocab_size: int, multiple: int = VOCAB_PAD_MULTIPLE) -> int:
    """``vocab_size`` rounded up to a multiple of ``multiple`` (50257 -> 50304; 128 -> 128)."""
    v, m = _positive_int("vocab_size", vocab_size), _positive_int("multiple", multiple)
    return -(-v // m) * m


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidArgumentError(f"{name} must be an integer, got {value!r}")
    if value < 1:
        raise InvalidArgumentError(f"{name} must be >= 1, got {value}")
    return int(value)


# ------------------------------------------------------------------ validation
def dims_problem(dims: Mapping[str, Any]) -> Optional[str]:
    """What is wrong with a shape (a mapping with some or all of FIELDS), or None: each field
    an integer in [1, LIMITS[field]], padded_vocab_size >= vocab_size, channels a multiple of
    num_heads: the rules of the C core's llmc_validate_config."""
    for f in FIELDS:
        if f not in dims:
            continue
        v = dims[f]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            return f"{f} must be an integer, got {v!r}"
        if v < 1:
            return f"{f} = {v} must be positive"
        if v > LIMITS[f]:
            return f"{f} = {v} is above the limit {LIMITS[f]}"
    V, Vp = dims.get("vocab_size"), dims.get("padded_vocab_size")
    if V is not None and Vp is not None and Vp < V:
        return f"padded vocab {Vp} < vocab {V} (padded_vocab_size must be >= vocab_size)"
    C, NH = dims.get("channels"), dims.get("num_heads")
    if C is not None and NH is not None and C % NH:
        return f"channels {C} not divisible by num_heads {NH}"
    return None


def check_dims(dims: Mapping[str, Any], where: str = "model", error: type = InvalidArgumentError) -> None:
    """Raise ``error`` ("<where>: <problem>") when dims_problem finds one."""
    problem = dims_problem(dims)
    if problem:
        raise error(f"{where}: {problem}")


# ------------------------------------------------------------------ parameters
def param_shapes(cfg: Any) -> Dict[str, Tuple[int, ...]]:
    """Shapes of the 16 parameter tensors in the C layout, in checkpoint order, for anything
    with the attributes num_layers, channels, padded_vocab_size and max_seq_len."""
    L, C, Vp, T = int(cfg.num_layers), int(cfg.channels), int(cfg.padded_vocab_size), int(cfg.max_seq_len)
    return {
        "wte": (Vp, C), "wpe": (T, C),
        "ln1w": (L, C), "ln1b": (L, C),
        "qkvw": (L, 3 * C, C), "qkvb": (L, 3 * C),
        "attprojw": (L, C, C), "attprojb": (L, C),
        "ln2w": (L, C), "ln2b": (L, C),
        "fcw": (L, 4 * C, C), "fcb": (L, 4 * C),
        "fcprojw": (L, C, 4 * C), "fcprojb": (L, C),
        "lnfw": (C,), "lnfb": (C,),
    }  # fmt: skip


def num_params(cfg: Any) -> int:
    """Number of parameters, wte padding rows included (124,475,904 for d12)."""
    total = 0
    for shape in param_shapes(cfg).values():
        n = 1
        for d in shape:
            n *= d
        total += n
    return total


# ------------------------------------------------------------------ the config
@dataclass(frozen=True)
class GPTConfig:
    """GPT-2 shape; the same fields, in the same order, as ``llmc_config``.

    Not validated on construction (the C core validates what it is given, and says why);
    ``check()`` applies the same rules in Python."""

    max_seq_len: int  # maxT
    vocab_size: int  # V
    padded_vocab_size: int  # Vp >= V
    num_layers: int  # L
    num_heads: int  # NH
    channels: int  # C

    @classmethod
    def from_size(
        cls,
        descriptor: str,
        *,
        max_seq_len: int = GPT2_MAX_SEQ,
        vocab_size: int = GPT2_VOCAB,
        padded_vocab_size: Optional[int] = None,
    ) -> "GPTConfig":
        """Config for a size descriptor ``dN`` (see the module docstring)."""
        layers, channels, heads = size_dims(descriptor)
        vp = pad_vocab(vocab_size) if padded_vocab_size is None else int(padded_vocab_size)
        return cls(int(max_seq_len), int(vocab_size), vp, layers, heads, channels)

    @classmethod
    def from_header(cls, slots: Any) -> "GPTConfig":
        """Config from an llm.c checkpoint header's int32 slots 2..7 (HEADER_FIELDS)."""
        return cls(**{f: int(v) for f, v in zip(HEADER_FIELDS, slots)})

    def header_slots(self) -> Tuple[int, ...]:
        """The values of an llm.c checkpoint header's slots 2..7 (HEADER_FIELDS)."""
        return tuple(int(getattr(self, f)) for f in HEADER_FIELDS)

    @classmethod
    def from_hf(cls, hf_config: Any, padded_vocab_size: Optional[int] = None) -> "GPTConfig":
        """Config of a transformers GPT2Config (vocabulary padded with pad_vocab unless given)."""
        V = int(hf_config.vocab_size)
        return cls(int(hf_config.n_positions), V, int(padded_vocab_size) if padded_vocab_size else pad_vocab(V),
                   int(hf_config.n_layer), int(hf_config.n_head), int(hf_config.n_embd))

    def padded(self, multiple: int = VOCAB_PAD_MULTIPLE) -> "GPTConfig":
        """This config with ``padded_vocab_size`` = ``vocab_size`` rounded up to ``multiple``."""
        return dataclasses.replace(self, padded_vocab_size=pad_vocab(self.vocab_size, multiple))

    def check(self, where: str = "model config", error: type = InvalidArgumentError) -> "GPTConfig":
        """This config, when the C core would accept it; else ``error`` saying why."""
        check_dims(self.as_dict(), where, error)
        return self

    def as_dict(self) -> Dict[str, int]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @property
    def head_size(self) -> int:
        return self.channels // self.num_heads

    def param_shapes(self) -> Dict[str, Tuple[int, ...]]:
        """Shapes of the 16 parameter tensors in checkpoint order (docs/formats.md)."""
        return param_shapes(self)

    def num_params(self) -> int:
        """Number of parameters, wte padding rows included (124,475,904 for d12)."""
        return num_params(self)

    def to_c(self) -> Any:
        """A new ``llmc_config *`` (cffi) holding these values."""
        from ._ffi import ffi

        c = ffi.new("llmc_config *")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise InvalidArgumentError(f"config.{f.name} must be an int, got {value!r}")
            if not -(2**31) <= int(value) <= 2**31 - 1:
                raise InvalidArgumentError(f"config.{f.name} = {value} does not fit in int32")
            setattr(c, f.name, int(value))
        return c

    @classmethod
    def from_c(cls, c: Any) -> "GPTConfig":
        return cls(*(int(getattr(c, f.name)) for f in dataclasses.fields(cls)))


# ------------------------------------------------------------------ gradient clipping
def clip_coefficient(norm: float, max_norm: float, dtype: Any = np.float32) -> float:
    """The factor clip_grad_norm(max_norm) scales gradients of global norm ``norm`` by:
    max_norm / (norm + 1e-6), capped at 1, computed in ``dtype``, the precision of the
    gradients it is applied to. float32 (the default) is the C core's arithmetic, so that
    ``adamw_step(grad_scale=clip_coefficient(...))`` reproduces clip-then-step bitwise; it
    is also what torch.nn.utils.clip_grad_norm_ computes for float32 gradients, and
    ``dtype=np.float64`` what it computes for float64 ones. As the C core's clip_grad_norm,
    ``max_norm`` must be positive and finite (no clipping is the caller's 1.0)."""
    if not (isinstance(max_norm, (int, float, np.floating)) and 0 < max_norm < float("inf")):
        raise InvalidArgumentError(f"max_norm must be positive and finite, got {max_norm!r}")
    t = np.dtype(dtype).type
    coef = t(max_norm) / (t(norm) + t(1e-6))
    return float(coef) if coef < t(1.0) else 1.0
