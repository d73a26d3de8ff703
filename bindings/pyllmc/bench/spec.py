"""What is benchmarked: model shapes, the work (FLOPs) of one training step, job descriptions.

Timing depends on a model's shape only, never on its weights, so every model spec the CLI
accepts (size descriptor, llm.c checkpoint, Hugging Face directory) is reduced to a `Shape`
and every implementation builds a fresh model of that shape with random GPT-2 initialisation.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import struct
from dataclasses import dataclass
from typing import Any, Dict, Optional

from ..errors import InvalidArgumentError
from ..shapes import GPT2_MAX_SEQ, GPT2_VOCAB, GPTConfig, check_dims, is_size_descriptor, num_params, pad_vocab, size_dims, size_name

#: Named shapes beyond the dN descriptors (all with the GPT-2 vocabulary).
NAMED = {
    "tiny": dict(num_layers=2, channels=128, num_heads=2),
}


@dataclass(frozen=True)
class Shape:
    """A GPT-2 shape; the fields of llmc_config plus a display name."""

    name: str
    num_layers: int
    channels: int
    num_heads: int
    vocab_size: int = GPT2_VOCAB
    padded_vocab_size: int = 0  # 0: vocab_size rounded up to 128
    max_seq_len: int = GPT2_MAX_SEQ

    def __post_init__(self) -> None:
        dims = {f: getattr(self, f) for f in ("max_seq_len", "vocab_size", "num_layers", "num_heads", "channels")}
        check_dims(dims, f"model {self.name}", SpecError)
        if self.padded_vocab_size == 0:
            object.__setattr__(self, "padded_vocab_size", pad_vocab(self.vocab_size))
        check_dims(dict(dims, padded_vocab_size=self.padded_vocab_size), f"model {self.name}", SpecError)

    @property
    def num_params(self) -> int:
        """Parameters of the C core's layout (wte has Vp rows): 124,475,904 for d12."""
        return num_params(self)

    @classmethod
    def of(cls, name: str, config: GPTConfig) -> "Shape":
        """The shape of a model config, named ``name``."""
        c = config
        return cls(name, c.num_layers, c.channels, c.num_heads, c.vocab_size, c.padded_vocab_size, c.max_seq_len)

    def config(self) -> GPTConfig:
        """The model config of this shape."""
        return GPTConfig(self.max_seq_len, self.vocab_size, self.padded_vocab_size, self.num_layers,
                         self.num_heads, self.channels)

    def flops_per_step(self, B: int, T: int) -> float:
        """Model FLOPs of one training step (forward + backward; the update is not counted):
        6 * params * tokens (the convention that makes a d12 step at B=4, T=64 about 191
        GFLOP) plus attention 12 * L * B * T^2 * C (QK^T and att@V, forward 4BT^2C per
        layer, backward twice that; the causal mask is not discounted)."""
        return 6.0 * self.num_params * B * T + 12.0 * self.num_layers * B * T * T * self.channels

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Shape":
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})

    def with_(self, **kw: Any) -> "Shape":
        return dataclasses.replace(self, **kw)

    def label(self) -> str:
        return f"{self.name} (L{self.num_layers} C{self.channels} NH{self.num_heads} V{self.vocab_size})"


class SpecError(InvalidArgumentError):
    """A model spec that cannot be turned into a shape (bad input: exit 2 at the CLI)."""


def _from_checkpoint(path: str) -> Shape:
    try:
        with open(path, "rb") as f:
            head = f.read(256 * 4)
    except OSError as e:
        raise SpecError(f"{path}: cannot read: {e.strerror or e}") from None
    if len(head) < 256 * 4:
        raise SpecError(f"{path}: too short for an llm.c checkpoint header (256 int32)")
    h = struct.unpack("<256i", head)
    if h[0] != 20240326:
        raise SpecError(f"{path}: bad magic {h[0]} (an llm.c checkpoint starts with 20240326)")
    if h[1] not in (3, 5):
        raise SpecError(f"{path}: checkpoint version {h[1]} is not supported (3 or 5)")
    return Shape.of(os.path.splitext(os.path.basename(path))[0], GPTConfig.from_header(h[2:8]))


def _from_hf_dir(path: str) -> Shape:
    cfg_path = os.path.join(path, "config.json")
    try:
        with open(cfg_path) as f:
            cfg = json.load(f)
    except OSError as e:
        raise SpecError(f"{cfg_path}: cannot read: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise SpecError(f"{cfg_path}: not JSON: {e}") from None
    try:
        V = int(cfg["vocab_size"])
        return Shape(os.path.basename(os.path.normpath(path)), int(cfg["n_layer"]), int(cfg["n_embd"]),
                     int(cfg["n_head"]), V, pad_vocab(V), int(cfg.get("n_positions", GPT2_MAX_SEQ)))
    except (KeyError, TypeError, ValueError) as e:
        raise SpecError(f"{cfg_path}: not a GPT-2 config ({e})") from None


def parse_model(spec: str, *, vocab_size: Optional[int] = None) -> Shape:
    """A shape for a model spec: `dN`, a named shape (`tiny`), `L4-C256-NH4` (explicit),
    an llm.c checkpoint `*.bin`, or a local Hugging Face directory. Hub ids are not
    resolved (a benchmark needs only the shape; pass a local directory)."""
    s = str(spec).strip()
    if is_size_descriptor(s):
        try:
            L, C, NH = size_dims(s)
        except InvalidArgumentError as e:
            raise SpecError(str(e)) from None
        shape = Shape(size_name(s), L, C, NH)
    elif s in NAMED:
        shape = Shape(s, **NAMED[s])
    elif re.fullmatch(r"L(\d+)-C(\d+)-NH(\d+)", s):
        L, C, NH = (int(x) for x in re.findall(r"\d+", s))
        shape = Shape(s, L, C, NH)
    elif s.endswith(".bin") or os.path.isfile(s):
        if not os.path.exists(s):
            raise SpecError(f"{s}: no such checkpoint file")
        shape = _from_checkpoint(s)
    elif os.path.isdir(s):
        shape = _from_hf_dir(s)
    else:
        raise SpecError(
            f"model {spec!r}: not a size descriptor (d12), a named shape ({', '.join(NAMED)}), "
            "an explicit shape (L4-C256-NH4), an llm.c checkpoint file or a local model directory"
        )
    if vocab_size is not None:
        shape = shape.with_(vocab_size=int(vocab_size), padded_vocab_size=pad_vocab(int(vocab_size)))
    return shape


@dataclass
class Job:
    """One measurement run by a worker process."""

    impl: str
    shape: Shape
    B: int
    T: int
    threads: int
    warmup: int = 2
    repeats: int = 5
    seed: int = 0
    options: Dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d["shape"] = self.shape.to_dict()
        return json.dumps(d)

    @classmethod
    def from_json(cls, s: str) -> "Job":
        d = json.loads(s)
        d["shape"] = Shape.from_dict(d["shape"])
        return cls(**d)
