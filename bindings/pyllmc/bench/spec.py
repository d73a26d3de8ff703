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

GPT2_VOCAB = 50257
GPT2_MAX_SEQ = 1024

#: llm.c's special depths (medium/large/xl); any other dN is L=N, C=64N, NH=N.
_SPECIAL = {12: (12, 768, 12), 24: (24, 1024, 16), 36: (36, 1280, 20), 48: (48, 1600, 25)}

#: Named shapes beyond the dN descriptors (all with the GPT-2 vocabulary).
NAMED = {
    "tiny": dict(num_layers=2, channels=128, num_heads=2),
}


def pad_vocab(v: int, multiple: int = 128) -> int:
    return -(-int(v) // multiple) * multiple


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
        if self.padded_vocab_size == 0:
            object.__setattr__(self, "padded_vocab_size", pad_vocab(self.vocab_size))
        for f in ("num_layers", "channels", "num_heads", "vocab_size", "max_seq_len"):
            if int(getattr(self, f)) < 1:
                raise ValueError(f"model {self.name}: {f} must be >= 1")
        if self.channels % self.num_heads:
            raise ValueError(f"model {self.name}: channels {self.channels} not divisible by heads {self.num_heads}")
        if self.padded_vocab_size < self.vocab_size:
            raise ValueError(f"model {self.name}: padded vocab {self.padded_vocab_size} < vocab {self.vocab_size}")

    @property
    def num_params(self) -> int:
        """Parameters of the C core's layout (wte has Vp rows): 124,475,904 for d12."""
        L, C, Vp, T = self.num_layers, self.channels, self.padded_vocab_size, self.max_seq_len
        per_layer = 2 * C + 3 * C * C + 3 * C + C * C + C + 2 * C + 4 * C * C + 4 * C + 4 * C * C + C
        return Vp * C + T * C + L * per_layer + 2 * C

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
    maxT, V, L, NH, C, Vp = h[2], h[3], h[4], h[5], h[6], h[7]
    name = os.path.splitext(os.path.basename(path))[0]
    try:
        return Shape(name, L, C, NH, V, Vp, maxT)
    except ValueError as e:
        raise SpecError(f"{path}: {e}") from None


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
    m = re.fullmatch(r"[dD](\d+)", s)
    if m:
        n = int(m.group(1))
        if n < 1:
            raise SpecError(f"bad model size descriptor {spec!r}: expected dN with N >= 1")
        L, C, NH = _SPECIAL.get(n, (n, 64 * n, n))
        shape = Shape(s.lower(), L, C, NH)
    elif s in NAMED:
        shape = Shape(s, **NAMED[s])
    elif re.fullmatch(r"L(\d+)-C(\d+)-NH(\d+)", s):
        L, C, NH = (int(x) for x in re.findall(r"\d+", s))
        try:
            shape = Shape(s, L, C, NH)
        except ValueError as e:
            raise SpecError(str(e)) from None
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
