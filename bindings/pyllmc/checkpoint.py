"""Training checkpoints: everything needed to continue a run bit-identically.

Layout of a run directory ``DIR`` (the Trainer's ``out_dir``)::

    DIR/metrics.jsonl            one JSON object per optimizer step
    DIR/loss.png                 loss curve (train and val), written at the end
    DIR/tokenizer.bin            the run's tokenizer, when it has one (llm.c format)
    DIR/ckpt_00000100/           one directory per saved step (8-digit step number)
        model.bin                parameters: llm.c version-3 fp32 checkpoint (docs/formats.md)
        optimizer.bin            AdamW first and second moments (format below)
        state.json               step, data-loader position, RNG state, run settings

Atomicity: a checkpoint is written into a hidden temporary directory
``DIR/.ckpt_00000100.tmp-<pid>``; every file is fsynced, then the directory, then it is
renamed to its final name and ``DIR`` is fsynced. A save that is interrupted (exception,
SIGKILL, power loss) leaves at most a temporary directory, which readers ignore and the
next save removes, so the previous checkpoint is never harmed. After a successful save
only the newest ``keep_last`` checkpoints are kept.

optimizer.bin (little-endian): a header of 256 int32 -
[0] magic 20250117, [1] version 1, [2] AdamW step t of the last update,
[3] 0 (reserved), [4] and [5] the number of parameters P as an int64 (low, high word),
the rest zero - followed by P float32 values of adam_m and then P float32 values of
adam_v, in the order of the model's parameter buffer (checkpoint order, docs/formats.md).
The file is exactly 1024 + 8*P bytes.

state.json: ``{"format": "pyllmc-checkpoint", "version": 1, "step": int,
"files": {name: size in bytes}, "data": DataLoader.state(), "rng": numpy PCG64 state,
"metrics_bytes": size of metrics.jsonl after this step's row, "train": run settings,
"model_config": GPTConfig fields, "threads": int, ...}``. It is written last.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np

from .atomic import atomic_write, fsync_dir, fsync_file
from .errors import BadFormatError, FileError, InvalidArgumentError

OPTIMIZER_MAGIC = 20250117
OPTIMIZER_VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
STATE_FORMAT = "pyllmc-checkpoint"
STATE_VERSION = 1

_CKPT_RE = re.compile(r"^ckpt_(\d{8,})$")

PathLike = Union[str, "os.PathLike[str]"]


def checkpoint_name(step: int) -> str:
    return f"ckpt_{int(step):08d}"


def checkpoint_step(name: str) -> Optional[int]:
    """The step of a checkpoint directory's final name (``ckpt_00000100`` -> 100), else None."""
    m = _CKPT_RE.match(name)
    return int(m.group(1)) if m else None


# ------------------------------------------------------------------ optimizer.bin
def write_optimizer_state(path: PathLike, adam_m: np.ndarray, adam_v: np.ndarray, step: int) -> None:
    """Write AdamW moments (flat float32 arrays of equal length) as optimizer.bin, fsynced."""
    m = np.ascontiguousarray(adam_m, dtype="<f4").reshape(-1)
    v = np.ascontiguousarray(adam_v, dtype="<f4").reshape(-1)
    if m.size != v.size:
        raise InvalidArgumentError(f"adam_m has {m.size} values, adam_v {v.size}")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = OPTIMIZER_MAGIC, OPTIMIZER_VERSION, int(step)
    header[4:6] = np.array([m.size], dtype="<i8").view("<i4")
    with atomic_write(path, "wb") as f:
        for chunk in (header.tobytes(), m.data.cast("B"), v.data.cast("B")):
            f.write(chunk)


def read_optimizer_state(path: PathLike, num_params: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray, int]:
    """Read optimizer.bin -> (adam_m, adam_v, step), validating header and size."""
    path = os.fspath(path)
    from ._files import read_header_ints  # regular files only: a FIFO or device never hangs

    h, size = read_header_ints(path, "optimizer state", BadFormatError, HEADER_BYTES)
    if int(h[0]) != OPTIMIZER_MAGIC:
        raise BadFormatError(f"{path}: bad optimizer-state magic {int(h[0])} (expected {OPTIMIZER_MAGIC})")
    if int(h[1]) != OPTIMIZER_VERSION:
        raise BadFormatError(f"{path}: unsupported optimizer-state version {int(h[1])}")
    n = int(h[4:6].copy().view("<i8")[0])
    if n < 0 or (num_params is not None and n != num_params):
        raise BadFormatError(f"{path}: holds {n} parameters, the model has {num_params}")
    if size != HEADER_BYTES + 8 * n:
        raise BadFormatError(f"{path}: file is {size} bytes, header implies {HEADER_BYTES + 8 * n}")
    data = np.fromfile(path, dtype="<f4", offset=HEADER_BYTES, count=2 * n)
    return data[:n], data[n:], int(h[2])


# ------------------------------------------------------------------ directories
def list_checkpoints(directory: PathLike) -> List[Tuple[int, Path]]:
    """Complete checkpoints in ``directory`` as (step, path), oldest first.

    Complete means: the final name (not a temporary directory) and a state.json."""
    d = Path(directory)
    if not d.is_dir():
        return []
    out = []
    for p in d.iterdir():
        step = checkpoint_step(p.name)
        if step is not None and p.is_dir() and (p / "state.json").is_file():
            out.append((step, p))
    out.sort()
    return out


def latest_checkpoint(directory: PathLike) -> Optional[Path]:
    cks = list_checkpoints(directory)
    return cks[-1][1] if cks else None


def is_checkpoint_dir(path: PathLike) -> bool:
    p = Path(path)
    return p.is_dir() and (p / "state.json").is_file() and (p / "model.bin").is_file()


def remove_stale_temporaries(directory: PathLike) -> None:
    d = Path(directory)
    if not d.is_dir():
        return
    for p in d.iterdir():
        if p.name.startswith(".ckpt_") and (".tmp-" in p.name or ".old-" in p.name) and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)


def _moments(model: Any, kind: str) -> np.ndarray:
    """One AdamW moment buffer on the host: the zero-copy view of a CPU model (no copy of
    what may be gigabytes), an explicit copy from GPU memory for a CUDA model."""
    if getattr(model, "device", "cpu") == "cpu":
        return model.flat(kind)
    return model.copy_to_host(kind)


def save_checkpoint(
    model: Any,
    directory: PathLike,
    step: int,
    state: Dict[str, Any],
    *,
    keep_last: int = 2,
    adam_step: Optional[int] = None,
    _write_optimizer: Optional[Callable[..., None]] = None,
) -> Path:
    """Atomically write checkpoint ``step`` of ``model`` (a pyllmc.Model) into ``directory``.

    ``state`` is stored as state.json (with ``step``, ``format``, ``version`` and ``files``
    filled in). Keeps the newest ``keep_last`` checkpoints (0 keeps all). Returns the path.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(d)
    name = checkpoint_name(step)
    final = d / name
    tmp = d / f".{name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    writer = _write_optimizer or write_optimizer_state
    try:
        model.save(tmp / "model.bin")
        fsync_file(tmp / "model.bin")
        writer(tmp / "optimizer.bin", _moments(model, "adam_m"), _moments(model, "adam_v"),
               step if adam_step is None else adam_step)
        doc = dict(state)
        doc.update({
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "step": int(step),
            # every file written (optimizer.bin, or a ZeRO-1 run's optimizer.rankR.bin slices)
            "files": {f.name: os.path.getsize(f) for f in sorted(tmp.iterdir()) if f.is_file()},
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        })
        with atomic_write(tmp / "state.json", "wb") as f:
            f.write(json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n")
        fsync_dir(tmp)
        old = None
        if final.exists():  # re-saving the same step: move the old one aside first
            old = d / f".{name}.old-{os.getpid()}"
            os.replace(final, old)
        os.replace(tmp, final)
        fsync_dir(d)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if keep_last and keep_last > 0:
        cks = list_checkpoints(d)
        for _, p in cks[:-keep_last]:
            if p != final:
                shutil.rmtree(p, ignore_errors=True)
    return final


def read_state(path: PathLike) -> Dict[str, Any]:
    """state.json of a checkpoint directory, validated."""
    p = Path(path) / "state.json"
    from ._files import open_regular  # a FIFO named state.json must not hang the reader

    if not p.exists():
        raise FileError(f"{p}: no such file (not a pyllmc checkpoint directory)")
    f, _ = open_regular(p, "checkpoint state")
    try:
        with f:
            doc = json.loads(f.read().decode("utf-8"))
    except OSError as e:
        raise FileError(f"{p}: cannot read: {e.strerror or e}") from None
    except (ValueError, UnicodeDecodeError, RecursionError) as e:  # RecursionError: deeply nested JSON
        raise BadFormatError(f"{p}: not valid JSON: {str(e)[:200]}") from None
    if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT:
        raise BadFormatError(f"{p}: not a pyllmc checkpoint state (format != {STATE_FORMAT!r})")
    if doc.get("version") != STATE_VERSION:
        raise BadFormatError(f"{p}: unsupported checkpoint version {doc.get('version')!r}")
    for key in ("step", "files"):
        if key not in doc:
            raise BadFormatError(f"{p}: missing {key!r}")
    # types too: a hand-edited or corrupted state.json must not end in a TypeError later
    if isinstance(doc["step"], bool) or not isinstance(doc["step"], int) or doc["step"] < 0:
        raise BadFormatError(f"{p}: 'step' must be an integer >= 0, got {doc['step']!r}")
    if not isinstance(doc["files"], dict) or not all(
            isinstance(k, str) and "/" not in k and "\\" not in k and k not in ("", ".", "..")
            and isinstance(v, int) and not isinstance(v, bool) for k, v in doc["files"].items()):
        raise BadFormatError(f"{p}: 'files' must map plain file names to sizes in bytes")
    for key in ("data", "rng", "train"):
        if key in doc and not isinstance(doc[key], dict):
            raise BadFormatError(f"{p}: {key!r} must be a JSON object, got {type(doc[key]).__name__}")
    if "rng" in doc:  # the trainer's PCG64 state: tried here, so a damaged one is a format error
        try:
            np.random.PCG64().state = doc["rng"]
        except (TypeError, ValueError, KeyError, OverflowError) as e:
            raise BadFormatError(f"{p}: 'rng' is not a PCG64 generator state: {str(e)[:200]}") from None
    for fname, size in dict(doc["files"]).items():
        fp = Path(path) / fname
        if not fp.is_file():
            raise BadFormatError(f"{fp}: missing from the checkpoint")
        if os.path.getsize(fp) != int(size):
            raise BadFormatError(f"{fp}: {os.path.getsize(fp)} bytes, the checkpoint recorded {size}")
    return doc


def load_checkpoint(path: PathLike, *, max_batch: int, max_seq: Optional[int] = None,
                    threads: int = 0, device: str = "cpu", precision: str = "fp32") -> Tuple[Any, Dict[str, Any]]:
    """(Model with parameters and AdamW state restored, state dict) of a checkpoint directory.
    Checkpoints are fp32 whatever the precision of the run, so either may resume either."""
    from .model import Model

    p = Path(path)
    state = read_state(p)
    model = Model.from_checkpoint(p / "model.bin", max_batch=max_batch, max_seq=max_seq, threads=threads,
                                  device=device, precision=precision)
    try:
        n = int(model.config.num_params())
        if "optimizer_shards" in state:  # a ZeRO-1 run's slices (pyllmc.distributed)
            from .distributed import read_moments

            m, v = read_moments(p, state, n, (0, n))
        else:
            m, v, _ = read_optimizer_state(p / "optimizer.bin", num_params=n)
        # copy_from_host writes into the model's buffers on either device (GPU memory for CUDA)
        model.copy_from_host("adam_m", None, m)
        model.copy_from_host("adam_v", None, v)
    except BaseException:
        model.close()
        raise
    return model, state
