"""Turn a model source ``M`` (docs/design.md) into a pyllmc.Model.

``M`` may be:
- a size descriptor ``dN`` (``d12`` = GPT-2 124M shape, ``d6``, ...): a fresh model drawn
  from ``seed``, with the given vocabulary size (default 50257) and max sequence length
  (default 1024);
- an llm.c checkpoint file (``*.bin``, version 3 or 5);
- a pyllmc checkpoint directory (``ckpt_XXXXXXXX/`` with model.bin) or a training run
  directory (its newest checkpoint);
- a local Hugging Face GPT-2 directory (config.json + model.safetensors) or a hub id such
  as ``gpt2`` (loaded through ``pyllmc.reference``, which needs torch/transformers).

Offline first: a hub id is looked up in the local Hugging Face cache (``HF_HUB_CACHE``, else
``HF_HOME/hub``, else ``~/.cache/huggingface/hub``) and loaded from there without touching
the network. One that is not cached fails at once with one line and a hint (a typo such as
``d99x`` is not sent to the hub for 30 s of retries), unless downloads are allowed
explicitly: ``PYLLMC_ALLOW_DOWNLOAD=1`` or the commands' ``--allow-download``.
- a ``GPTConfig`` or an already created ``Model`` (library use).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Optional, Tuple

from .errors import FileError, InvalidArgumentError, PyllmcError, UnsupportedError
from .model import GPTConfig, Model
from .shapes import is_size_descriptor


def check_device(device: str) -> str:
    """The normalised device name; UnsupportedError (with the reason) when CUDA is asked for
    but not usable in this build or on this machine."""
    d = str(device or "cpu").strip().lower()
    if d == "cpu":
        return d
    if d == "cuda":
        try:
            from .model import cuda_available, cuda_info
        except ImportError:
            raise UnsupportedError("device 'cuda': this build of pyllmc has no CUDA backend; use --device cpu") from None
        if not cuda_available():
            raise UnsupportedError(f"device 'cuda': CUDA is not usable here ({cuda_info()}); use --device cpu")
        return d
    if d == "wasm":
        from .wasm_core import unavailable_reason

        why = unavailable_reason()
        if why:
            raise UnsupportedError(f"device 'wasm': {why}; use --device cpu")
        return d
    raise InvalidArgumentError(f"unknown device {device!r} (expected cpu, cuda or wasm)")


ALLOW_DOWNLOAD_ENV = "PYLLMC_ALLOW_DOWNLOAD"
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def downloads_allowed() -> bool:
    """Whether a hub id that is not cached may be fetched (``PYLLMC_ALLOW_DOWNLOAD=1``)."""
    return os.environ.get(ALLOW_DOWNLOAD_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache directory, as huggingface_hub finds it."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "huggingface" / "hub"


def cached_hub_snapshot(repo_id: str) -> Optional[Path]:
    """The local snapshot directory of hub model ``repo_id`` (one holding config.json), or
    None. The cache layout is huggingface_hub's: models--ORG--NAME/{refs/main, snapshots/REV/}."""
    if not _HUB_ID.match(repo_id):
        return None
    root = hf_cache_dir() / ("models--" + repo_id.replace("/", "--"))
    snaps = root / "snapshots"
    try:
        rev = (root / "refs" / "main").read_text().strip()
    except OSError:
        rev = ""
    if rev and (snaps / rev / "config.json").is_file():
        return snaps / rev
    try:
        found = [d for d in snaps.iterdir() if (d / "config.json").is_file()]
    except OSError:
        return None
    return max(found, key=lambda d: d.stat().st_mtime) if found else None


def resolve_hub_id(spec: str) -> str:
    """What to load for a model spec that names no local file, directory or size: the local
    snapshot of a cached hub id, else the id itself when downloads are allowed; otherwise
    FileError (``field`` "model") at once, with a hint."""
    snap = cached_hub_snapshot(spec)
    if snap is not None:
        return str(snap)
    if downloads_allowed() and _HUB_ID.match(spec):
        return spec
    if re.match(r"^[dD]\d", spec):
        hint = "a size is d<layers> such as d6 or d12; "
    elif not _HUB_ID.match(spec):
        hint = "no such file or directory; "
    else:
        hint = ""
    raise FileError(f"model {spec!r}: not a local file or directory, a size (d6, d12, ...) or a model in the "
                    f"local Hugging Face cache ({hf_cache_dir()}); {hint}to fetch a hub model, pass "
                    f"--allow-download or set {ALLOW_DOWNLOAD_ENV}=1", field="model")


def resolve_checkpoint_file(spec: Any) -> Optional[Path]:
    """The model.bin that ``spec`` names when it is a checkpoint/run directory or .bin file."""
    p = Path(os.fspath(spec))
    if p.is_file():
        return p
    if p.is_dir():
        from .checkpoint import latest_checkpoint

        if (p / "model.bin").is_file():
            return p / "model.bin"
        ck = latest_checkpoint(p)
        if ck is not None:
            return ck / "model.bin"
    return None


def _hf_params(spec: str) -> Tuple[GPTConfig, dict]:
    try:
        from .reference import hf_to_params, load_hf_dir_params, load_reference  # noqa: F401
    except ImportError as e:
        raise UnsupportedError(
            f"{spec}: loading a Hugging Face model needs torch and transformers "
            f"(pip install 'pyllmc[torch]'): {e}") from None
    p = Path(spec)
    try:
        if p.is_dir() and (p / "model.safetensors").is_file() and (p / "config.json").is_file():
            cfg, params = load_hf_dir_params(p)
        else:
            from .reference import hf_to_params as _h2p

            ref = load_reference(spec)
            cfg = GPTConfig.from_hf(ref.config)
            params = _h2p(ref, cfg.padded_vocab_size)
    except PyllmcError:
        raise
    except OSError as e:
        raise FileError(f"{spec}: cannot load this Hugging Face model (offline, or not a model): "
                        f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    except ValueError as e:
        raise InvalidArgumentError(f"{spec}: {str(e).splitlines()[0]}") from None
    g = GPTConfig(cfg.max_seq_len, cfg.vocab_size, cfg.padded_vocab_size, cfg.num_layers, cfg.num_heads,
                  cfg.channels)
    return g, params


def load_model(
    spec: Any,
    *,
    max_batch: int = 1,
    max_seq: Optional[int] = None,
    threads: int = 0,
    seed: int = 0,
    vocab_size: Optional[int] = None,
    max_seq_len: Optional[int] = None,
    device: str = "cpu",
    precision: str = "fp32",
) -> Model:
    """A Model for source ``spec`` (see the module docstring) on ``device``, computing in
    ``precision`` (fp32 or bf16; the parameters are fp32 either way)."""
    device = check_device(device)
    if isinstance(spec, Model):
        if spec.device != device:  # a model is never moved behind the caller's back
            raise InvalidArgumentError(f"the given Model is on {spec.device}, but device {device!r} was asked for")
        if spec.precision != precision:
            raise InvalidArgumentError(f"the given Model computes in {spec.precision}, but precision {precision!r} was asked for")
        return spec
    dev = {"device": device, "precision": precision}
    if isinstance(spec, GPTConfig):
        return Model.from_config(spec, max_batch=max_batch, max_seq=max_seq, threads=threads, seed=seed, **dev)
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        raise InvalidArgumentError("no model given (a size like d6, a .bin checkpoint, or a HF directory/id)")
    if is_size_descriptor(spec):
        V = int(vocab_size) if vocab_size else 50257
        cfg = GPTConfig.from_size(spec.strip(), max_seq_len=int(max_seq_len or 1024), vocab_size=V)
        if max_seq is not None and max_seq > cfg.max_seq_len:
            raise InvalidArgumentError(f"sequence length {max_seq} exceeds the model's max_seq_len {cfg.max_seq_len}")
        return Model.from_config(cfg, max_batch=max_batch, max_seq=max_seq, threads=threads, seed=seed, **dev)
    s = os.fspath(spec)
    p = Path(s)
    if p.is_dir() and (p / "config.json").is_file() and (p / "model.safetensors").is_file():
        cfg, params = _hf_params(s)
        return _model_from_params(cfg, params, max_batch, max_seq, threads, dev)
    ck = resolve_checkpoint_file(s)
    if ck is not None:
        _check_max_seq(ck, max_seq)
        return Model.from_checkpoint(ck, max_batch=max_batch, max_seq=max_seq, threads=threads, **dev)
    if p.is_dir():
        raise FileError(f"{s}: directory holds no model (no model.bin, checkpoint, or config.json)")
    if s.endswith(".bin") or s.startswith((".", "/", "~")) or s.count("/") > 1:
        raise FileError(f"{s}: no such file")
    # a Hugging Face hub id: from the local cache, or fetched only when allowed
    cfg, params = _hf_params(resolve_hub_id(s))
    return _model_from_params(cfg, params, max_batch, max_seq, threads, dev)


def _check_max_seq(path: Path, max_seq: Optional[int]) -> None:
    if max_seq is None:
        return
    try:
        with open(path, "rb") as f:
            import numpy as np

            h = np.frombuffer(f.read(1024), dtype="<i4")
        if h.size == 256 and h[0] == 20240326 and 0 < int(h[2]) < max_seq:
            raise InvalidArgumentError(
                f"{path}: the model's max sequence length is {int(h[2])}, shorter than T = {max_seq}")
    except OSError:
        pass  # Model.from_checkpoint reports it


def _model_from_params(cfg: GPTConfig, params: dict, max_batch: int, max_seq: Optional[int], threads: int,
                       dev: dict) -> Model:
    if max_seq is not None and max_seq > cfg.max_seq_len:
        raise InvalidArgumentError(f"sequence length {max_seq} exceeds the model's max_seq_len {cfg.max_seq_len}")
    m = Model.from_config(cfg, max_batch=max_batch, max_seq=max_seq, threads=threads, seed=0, **dev)
    try:
        load_params(m, params)
    except BaseException:
        m.close()
        raise
    return m


def load_params(model: Model, params: dict) -> None:
    """Copy C-layout parameters (checkpoint names, layers stacked) into ``model``, on either
    device; a ``wte`` with V rows is padded with zero rows to Vp."""
    if getattr(model, "device", "cpu") != "cuda":  # cpu and wasm: zero-copy views
        from .reference import load_into_model

        load_into_model(model, params)
        return
    import numpy as np

    for name, arr in params.items():
        a = np.asarray(arr, dtype=np.float32)
        if name == "wte" and a.shape[0] < model.config.padded_vocab_size:
            pad = np.zeros((model.config.padded_vocab_size, a.shape[1]), dtype=np.float32)
            pad[: a.shape[0]] = a
            a = pad
        model.copy_from_host("params", name, a)
