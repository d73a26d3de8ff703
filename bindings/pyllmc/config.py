"""TrainerConfig: the settings of one training run, and the one place they are described.

Every field is declared with :func:`setting`, whose metadata (help text, flag name, choices,
lower bound, whether the value may change when a run is resumed) is read by

- ``TrainerConfig.validate`` (bounds and choices),
- ``pyllmc.cli_args`` (the ``pyllmc train`` flags are generated from it, so the command line
  and the library cannot drift apart),
- ``TrainerConfig.from_dict`` / ``from_file`` / ``to_file`` (TOML or JSON config files).

A new field becomes a flag, a config-file key and a validated setting just by being added
here with its metadata, e.g.::

    precision: str = setting("fp32", help="GEMM input precision", choices=("fp32", "bf16"))

Config files are flat tables of field names (``batch_size = 8``); the flag spelling
(``batch = 8``, ``grad-clip = 1.0``) is accepted as well. ``to_file`` writes every field that
has a value, so a run directory's ``config.toml`` is the complete, resolved configuration.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import numbers
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .errors import BadFormatError, FileError, InvalidArgumentError
from .schedule import SCHEDULES, LRSchedule

#: What a field's value means for ``pyllmc train --resume``:
#: "fixed" - changing it would change the run (its batches, its optimisation): refused;
#: "safe" - bookkeeping only (cadences, output): accepted, and said so;
#: "changes-results" - accepted, but the result differs from an uninterrupted run (more
#: steps stretch the LR schedule; the Trainer says so when it resumes).
RESUME_KINDS = ("fixed", "safe", "changes-results")

REPORT_TO = ("tensorboard",)


def setting(default: Any = dataclasses.MISSING, *, help: str, flag: Optional[str] = None,
            aliases: Sequence[str] = (), off_flags: Sequence[str] = (), choices: Optional[Sequence[str]] = None,
            min: Optional[float] = None, type: Optional[type] = None, metavar: Optional[str] = None,
            resume: str = "fixed", cli: bool = True, cli_default: Any = dataclasses.MISSING,
            default_factory: Any = dataclasses.MISSING) -> Any:
    """A TrainerConfig field with its description (see the module docstring).

    ``flag``: the long option (default ``--field-name``); ``aliases``: more spellings of it;
    ``off_flags``: extra spellings that set a boolean to False (``--no-x`` is always there);
    ``type``: the value type when the default does not show it (``None`` defaults);
    ``cli_default``: the command line's default when it differs from the library's;
    ``cli=False``: not a generated flag (the command line handles it itself)."""
    if resume not in RESUME_KINDS:
        raise ValueError(f"resume must be one of {RESUME_KINDS}")
    md = {"help": help, "flag": flag, "aliases": tuple(aliases), "off_flags": tuple(off_flags),
          "choices": tuple(choices) if choices else None, "min": min, "type": type, "metavar": metavar,
          "resume": resume, "cli": cli, "cli_default": cli_default}
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=md)
    return field(default=default, metadata=md)


@dataclass
class TrainerConfig:
    """Settings of one training run. The ``pyllmc train`` flags are generated from these fields."""

    # model and data
    model: Any = setting("d6", type=str, metavar="M", help=(
        "model: a size (d6, d12 = GPT-2 124M shape, ...), an llm.c .bin, a checkpoint or run directory, "
        "a Hugging Face directory, or a hub id already in the local cache"))
    data: Any = setting(None, type=str, metavar="PATH", help="training token shards: a file or a glob "
                        "(make them from text with `pyllmc prepare-data`)")
    val_data: Any = setting(None, type=str, metavar="PATH", resume="safe",
                            help="validation token shards: a file or a glob")
    tokenizer: Any = setting(None, type=str, help="byte, gpt2, or a tokenizer.bin (default: found next to --data)")
    vocab_size: Optional[int] = setting(None, type=int, min=1, help=(
        "vocabulary of a size-descriptor model (default: the tokenizer's, else 50257)"))
    max_seq_len: Optional[int] = setting(None, type=int, min=1,
                                         help="max sequence length of a size-descriptor model (default 1024)")
    # batch
    batch_size: int = setting(4, flag="--batch", min=1, help="micro-batch size B")
    seq_len: int = setting(64, flag="--seq", min=1, help="sequence length T")
    grad_accum: int = setting(1, min=1, help="micro-batches per optimizer step K")
    total_batch_tokens: Optional[int] = setting(None, type=int, min=1, help=(
        "tokens per optimizer step; sets --grad-accum to this / (B*T), which must divide it"))
    # optimisation
    steps: int = setting(100, min=1, resume="changes-results",
                         help="length of the whole run in optimizer steps (the LR schedule follows it)")
    lr: float = setting(3e-4, min=0, help="peak learning rate")
    schedule: str = setting("cosine", choices=tuple(SCHEDULES), help="learning-rate schedule after the warmup")
    warmup: int = setting(0, min=0, help="linear warmup steps")
    final_frac: float = setting(0.1, min=0, help="the last step's lr = lr * this (not for constant)")
    wsd_decay_frac: float = setting(0.2, min=0, help="wsd: fraction of the post-warmup steps spent decaying")
    beta1: float = setting(0.9, min=0, help="AdamW beta1")
    beta2: float = setting(0.95, min=0, help="AdamW beta2")
    eps: float = setting(1e-8, min=0, help="AdamW epsilon")
    weight_decay: float = setting(0.1, min=0, help="AdamW weight decay")
    decay_matrices_only: bool = setting(True, off_flags=("--decay-all",), help=(
        "weight decay on the 2-D weights only; --decay-all decays every parameter (as llm.c)"))
    grad_clip: float = setting(1.0, min=0, help="max global gradient norm (0 = off)")
    on_nonfinite: str = setting("stop", choices=("stop", "skip"), help=(
        "a NaN/inf loss or gradient: stop, naming the first bad tensor, or skip that update"))
    max_skips: int = setting(10, min=0, help="skip mode: more non-finite steps in a row than this stop the run")
    # data order, randomness, machine
    shuffle: bool = setting(True, help="shuffle the training data")
    seed: int = setting(0, min=0, help="seed of the model init (size descriptors), data shuffling and sampling")
    threads: int = setting(0, min=0, resume="changes-results", help=(
        "OpenMP threads (0 = the OpenMP default, all cores); bit-exact resume needs the same count"))
    device: str = setting("cpu", choices=("cpu", "cuda", "wasm"),
                          help="where the C core runs (cuda needs a CUDA build; wasm: the core as WebAssembly in wasmtime)")
    precision: str = setting("fp32", choices=("fp32", "bf16"), resume="changes-results", help=(
        "bf16: matmul and attention operands rounded to bf16 with fp32 accumulation, fp32 weights, gradients "
        "and AdamW state; checkpoints stay fp32"))
    # data parallel (pyllmc.distributed; active under torchrun or `pyllmc train --nproc N`)
    nproc: int = setting(1, min=1, resume="changes-results", help=(
        "data-parallel processes to start on this machine (several machines: torchrun's own flags)"))
    zero: int = setting(0, min=0, resume="changes-results", help=(
        "1: ZeRO-1, AdamW m and v sharded across the data-parallel ranks; 0: plain data parallel"))
    dist_check_every: int = setting(100, min=0, resume="safe", help=(
        "compare a parameter checksum across ranks every N steps (0 = never)"))
    dist_timeout: float = setting(300.0, min=0, resume="safe", help=(
        "seconds a collective waits for the other ranks before the run fails"))
    # evaluation, sampling, checkpoints
    eval_every: int = setting(0, min=0, resume="safe", help="validation loss every N steps and at the end (0 = never)")
    eval_batches: int = setting(10, min=1, resume="safe", help="validation batches per evaluation")
    sample_every: int = setting(0, min=0, resume="safe", help="print a sample every N steps (0 = never)")
    sample_tokens: int = setting(64, min=0, resume="safe", help="tokens per sample")
    sample_prompt: Optional[str] = setting(None, type=str, resume="safe",
                                           help="text the samples continue (default: a document start)")
    sample_temperature: float = setting(1.0, min=0, resume="safe", help="sampling temperature (0 = greedy)")
    sample_top_k: int = setting(0, min=0, resume="safe", help="sample among the k most likely tokens (0 = all)")
    out_dir: Optional[str] = setting(None, type=str, flag="--out", metavar="DIR", cli_default="runs/train", help=(
        "run directory: metrics.jsonl, config.toml, checkpoints, loss.png"))
    save_every: int = setting(0, min=0, resume="safe",
                              help="checkpoint every N steps (and at the end; 0 = only at the end)")
    keep_last: int = setting(2, min=0, resume="safe", help="checkpoints to keep (0 = all)")
    keep_best: bool = setting(False, resume="safe", help=(
        "also keep the checkpoint with the lowest validation loss in DIR/best (needs --val-data and --eval-every)"))
    resume: bool = setting(False, cli=False, help="continue from the newest checkpoint in out_dir")
    stop_at: Optional[int] = setting(None, type=int, min=1, resume="safe", help=(
        "end after this step with a checkpoint, as an interruption would"))
    overwrite: bool = setting(False, resume="safe", help="a fresh run may replace a run already in --out")
    # output
    progress: str = setting("auto", choices=("auto", "bar", "lines", "none"), resume="safe",
                            help="progress display (auto: a bar on a terminal, else lines)")
    log_every: int = setting(10, min=1, resume="safe", help="plain-line progress every N steps")
    plot: bool = setting(True, resume="safe", help="write the loss curve DIR/loss.png at the end (needs matplotlib)")
    report_to: List[str] = setting(default_factory=list, type=list, choices=REPORT_TO, resume="safe", help=(
        "also log to: tensorboard (event files in DIR/tensorboard); comma-separated, or none"))

    # ------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise InvalidArgumentError (with ``field`` set) for the first setting that is wrong."""
        for f in dataclasses.fields(self):
            _check_field(self, f)
        if self.data is None:
            raise _error("data", "data: no training data given (a token shard file or glob)")
        if self.warmup > self.steps:
            raise _error("warmup", f"warmup {self.warmup} is longer than the run ({self.steps} steps)")
        for n in ("beta1", "beta2"):
            if not getattr(self, n) < 1:
                raise _error(n, f"{n} must be in [0, 1), got {getattr(self, n)!r}")
        if self.total_batch_tokens is not None:
            bt = self.batch_size * self.seq_len
            if self.total_batch_tokens % bt:
                raise _error("total_batch_tokens",
                             f"total_batch_tokens {self.total_batch_tokens} is not a multiple of B*T = {bt}")
        if self.stop_at is not None and self.stop_at > self.steps:
            raise _error("stop_at", f"stop_at {self.stop_at} must be in [1, steps = {self.steps}]")
        if self.zero not in (0, 1):
            raise _error("zero", f"zero must be 0 or 1 (the ZeRO stage), got {self.zero!r}")
        if not self.dist_timeout > 0:
            raise _error("dist_timeout", f"dist_timeout must be a number of seconds > 0, got {self.dist_timeout!r}")
        if (self.resume or self.stop_at is not None) and not self.out_dir:
            raise _error("out_dir", "out_dir: resume and stop_at need a run directory")

    @property
    def accum_steps(self) -> int:
        if self.total_batch_tokens is not None:
            return int(self.total_batch_tokens) // (self.batch_size * self.seq_len)
        return int(self.grad_accum)

    def schedule_fn(self) -> LRSchedule:
        return LRSchedule(lr=float(self.lr), steps=int(self.steps), kind=self.schedule, warmup=int(self.warmup),
                          final_frac=float(self.final_frac), decay_frac=float(self.wsd_decay_frac))

    # ------------------------------------------------------------ dicts and files
    def to_dict(self) -> Dict[str, Any]:
        """Every field; values that are not plain data (a Model object) as their repr."""
        d = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, os.PathLike):
                v = os.fspath(v)
            elif isinstance(v, numbers.Number) and not isinstance(v, (int, float)) and hasattr(v, "item"):
                v = v.item()  # a numpy scalar: its Python value
            if not isinstance(v, (str, int, float, bool, type(None), list, tuple)):
                v = repr(v)
            elif isinstance(v, tuple):
                v = list(v)
            d[f.name] = v
        return d

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, source: str = "config") -> "TrainerConfig":
        """A config from ``{field or flag name: value}`` over the defaults. Unknown keys and
        values of the wrong type raise InvalidArgumentError naming ``source`` and the key."""
        return cls(**normalize_keys(values, source=source))

    @classmethod
    def from_file(cls, path: Union[str, os.PathLike], **overrides: Any) -> "TrainerConfig":
        """A config from a TOML (or ``.json``) file, then ``overrides`` (field names)."""
        values = read_config_file(path)
        values.update(normalize_keys(overrides, source="overrides"))
        return cls(**values)

    def to_file(self, path: Union[str, os.PathLike]) -> str:
        """Write this config as TOML (JSON when ``path`` ends in .json), atomically.
        Fields that are None are left out (TOML has no null; None is their default anyway)."""
        p = Path(path)
        d = {k: v for k, v in self.to_dict().items() if v is not None}
        text = json.dumps(d, indent=1) + "\n" if p.suffix == ".json" else to_toml(d)
        from .atomic import atomic_write

        with atomic_write(p, "w", what="the config") as f:
            f.write(text)
        return str(p)


# ---------------------------------------------------------------- field metadata helpers
def config_fields() -> Tuple[dataclasses.Field, ...]:
    return dataclasses.fields(TrainerConfig)


def field_type(f: dataclasses.Field) -> type:
    """The value type of a field: metadata ``type``, else the default's type."""
    t = f.metadata.get("type")
    if t is not None:
        return t
    return type(f.default) if f.default is not dataclasses.MISSING else str


def flag_name(name: str) -> str:
    """The command-line flag of a field (``batch_size`` -> ``--batch``)."""
    f = _FIELDS.get(name)
    if f is None:
        return "--" + name.replace("_", "-")
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _error(name: str, message: str) -> InvalidArgumentError:
    return InvalidArgumentError(message, field=name)


def _check_field(cfg: TrainerConfig, f: dataclasses.Field) -> None:
    md, v, n = f.metadata, getattr(cfg, f.name), f.name
    if not md:
        return
    t = field_type(f)
    if v is None:
        if f.default is None:
            return
        raise _error(n, f"{n} must be set, got None")
    if t is bool:
        if not isinstance(v, bool):
            raise _error(n, f"{n} must be true or false, got {v!r}")
    elif t is int:
        if isinstance(v, bool) or not isinstance(v, int) and not _is_numpy_int(v):
            raise _error(n, f"{n} must be an integer, got {v!r}")
        if md.get("min") is not None and v < md["min"]:
            raise _error(n, f"{n} must be an integer >= {md['min']}, got {v!r}")
    elif t is float:
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
            raise _error(n, f"{n} must be a finite number, got {v!r}")
        if md.get("min") is not None and float(v) < md["min"]:
            raise _error(n, f"{n} must be a finite number >= {md['min']:g}, got {v!r}")
    elif t is list:
        if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) for x in v):
            raise _error(n, f"{n} must be a list of names, got {v!r}")
    choices = md.get("choices")
    if choices:
        for x in (v if t is list else [v]):
            if x not in choices:
                raise _error(n, f"{n} must be one of {', '.join(choices)}, got {x!r}")


def _is_numpy_int(v: Any) -> bool:
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency
        return False
    return isinstance(v, np.integer)


_FIELDS: Dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(TrainerConfig)}


def _key_index() -> Dict[str, str]:
    """Every accepted config-file key spelling -> field name."""
    idx: Dict[str, str] = {}
    for f in _FIELDS.values():
        idx[f.name] = f.name
        for flag in (f.metadata.get("flag"), *f.metadata.get("aliases", ())):
            if flag:
                k = flag.lstrip("-")
                idx[k] = f.name
                idx[k.replace("-", "_")] = f.name
    return idx


def normalize_keys(values: Mapping[str, Any], *, source: str = "config") -> Dict[str, Any]:
    """``values`` with every key mapped to its field name; an unknown key raises
    InvalidArgumentError naming ``source`` and the closest known key."""
    idx = _key_index()
    out: Dict[str, Any] = {}
    for k, v in values.items():
        name = idx.get(str(k)) or idx.get(str(k).replace("-", "_"))
        if name is None:
            close = difflib.get_close_matches(str(k), list(_FIELDS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InvalidArgumentError(f"{source}: unknown setting {k!r}{hint}")
        if name in out and out[name] != v:
            raise InvalidArgumentError(f"{source}: {name!r} is given twice (as {k!r} too)")
        t = field_type(_FIELDS[name])
        if t is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)  # TOML `lr = 1` is an integer
        if t is list and isinstance(v, str):
            v = [] if v in ("", "none") else [x.strip() for x in v.split(",") if x.strip()]
        out[name] = v
    return out


def read_config_file(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    """The settings of a TOML or JSON config file as ``{field name: value}``; checked by type
    when the TrainerConfig is validated. Errors name the file."""
    from ._files import open_regular

    p = os.fspath(path)
    f, _ = open_regular(p, "config")
    try:
        with f:
            raw = f.read()
    except OSError as e:
        raise FileError(f"{p}: cannot read the config: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadFormatError(f"{p}: a config file must be UTF-8 text") from None
    if p.endswith(".json"):
        try:
            doc = json.loads(text)
        except ValueError as e:
            raise BadFormatError(f"{p}: not valid JSON: {e}") from None
    else:
        toml = _toml_module()
        try:
            doc = toml.loads(text)
        except toml.TOMLDecodeError as e:
            raise BadFormatError(f"{p}: not valid TOML: {e}") from None
    if not isinstance(doc, dict):
        raise BadFormatError(f"{p}: a config file must hold a table of settings")
    if isinstance(doc.get("train"), dict) and len(doc) == 1:  # a [train] table is accepted too
        doc = doc["train"]
    for k, v in doc.items():
        if isinstance(v, dict):
            raise BadFormatError(f"{p}: [{k}] tables are not settings; write the settings at the top level")
    return normalize_keys(doc, source=p)


def _toml_module() -> Any:
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib
    try:
        import tomli
    except ImportError:  # pragma: no cover - tomli is a dependency on Python < 3.11
        raise InvalidArgumentError(
            "reading TOML config files on Python < 3.11 needs tomli (pip install tomli)") from None
    return tomli


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)  # round-trips exactly; always has '.' or 'e'
    if isinstance(v, str):
        # a JSON string is a TOML basic string, except that TOML also forbids a raw DEL
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise InvalidArgumentError(f"cannot write {type(v).__name__} {v!r} to TOML")


def to_toml(values: Mapping[str, Any], header: str = "# pyllmc train configuration\n") -> str:
    """A flat table of scalars and lists as TOML text (the subset TrainerConfig needs)."""
    return header + "".join(f"{k} = {_toml_value(v)}\n" for k, v in values.items())
