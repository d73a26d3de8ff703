"""The Trainer: GPT-2 training through the C core, with checkpoints and bit-exact resume.

Library use::

    from pyllmc import Trainer, TrainerConfig
    cfg = TrainerConfig(model="d6", data="data/train_*.bin", val_data="data/val_*.bin",
                        batch_size=8, seq_len=256, steps=1000, lr=6e-4, warmup=50,
                        eval_every=100, save_every=200, out_dir="runs/d6")
    history = Trainer(cfg).train()
    print(history.final_loss, history.final_val_loss)

One optimizer step = ``grad_accum`` micro-batches of (B, T) (forward, backward with loss
scale 1/K, so the gradient is that of the mean loss over all K*B*T tokens), the global
gradient norm, one AdamW update at the scheduled LR with clipping to ``grad_clip`` (> 0)
fused into it (``grad_scale = clip_coefficient(norm, grad_clip)``: bitwise the same as
clipping first, one pass over the gradients fewer), weight decay on the 2-D weights only
unless ``decay_matrices_only=False``.

Numerical faults
----------------
A non-finite loss (checked after every micro-batch's forward) or gradient norm (before the
update) is a fault; ``pyllmc.numerics`` then names the step and the first tensor, in
data-flow order, holding a NaN/inf (e.g. ``acts h3.fch_gelu`` or ``grads h3.qkvw``, with
its layer) and any non-finite parameters. ``on_nonfinite="stop"`` (default) ends the run
with ``NonFiniteError`` (after ``on_train_end``; no checkpoint of the broken state is
written). ``"skip"`` skips that step's update, as llm.c skips outlier steps: the step still
counts (LR schedule, data), its metrics row has ``"skipped": true`` and ``"nonfinite"``
naming the tensor, and training goes on; non-finite parameters (which skipping cannot cure)
or more than ``max_skips`` skipped steps in a row still raise ``NonFiniteError``.

Callbacks
---------
``Trainer(config, callbacks=[...])`` takes objects with any of the methods
``on_train_begin(status)``, ``on_step_end(status)``, ``on_eval(status)``, ``on_save(status)``,
``on_train_end(status)`` (subclass ``Callback`` or not); ``trainer.add_callback("step_end", fn)``
adds a plain function. Each gets a ``TrainStatus`` snapshot (step, loss, lr, grad_norm,
tokens_per_s, eta_s, val_loss, ... ; ``on_save``'s has ``checkpoint`` set). A callback stops
training by returning True (the return value of ``on_train_end`` is ignored); ``trainer.stop()``
does the same from any thread. Training then ends after the current step, as ``stop_at`` does:
with a checkpoint when ``out_dir`` is set (so the run can be resumed), then ``on_train_end``;
``History.stop_reason`` says why. The metrics file, the progress display, TensorBoard, sampling
and checkpointing (with keep-best) are built-in callbacks (``pyllmc.callbacks``): a user
callback of the same class replaces one, ``default_callbacks=False`` drops them all.

Status from another thread
--------------------------
``trainer.status`` is an immutable ``TrainStatus`` replaced after every step (and at each
phase change), so any thread may read it while ``train()`` runs; the C calls release the
GIL, so such a reader is not blocked by the computation.

Metrics, checkpoints, resume
----------------------------
With ``out_dir``: ``metrics.jsonl`` gets one JSON object per optimizer step with ``step``
(1-based), ``loss``, ``lr``, ``grad_norm``, ``ms``, ``tokens_per_s`` (and ``val_loss`` on
steps that evaluated); checkpoints are saved every ``save_every`` steps, at the end, at
``stop_at`` and when stopped (see ``pyllmc.checkpoint`` for the layout); a loss-curve
PNG ``loss.png`` is written at the end. ``resume=True`` continues from the newest
checkpoint in ``out_dir``: parameters, AdamW moments, step, data position and sampling RNG
are restored and metrics.jsonl is cut back to that step, so with the same settings and
thread count the results are bit-identical to a run that was never interrupted.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import BadFormatError, FileError, InvalidArgumentError, PyllmcError, StateError
from .config import TrainerConfig  # noqa: F401  (defined there, with the flag metadata; re-exported)

from .callbacks import EVENTS, Callback, ProgressCallback, default_callbacks, merge_callbacks  # noqa: F401

if TYPE_CHECKING:
    from .data import DataLoader
    from .model import Model
    from .tokenizer import Tokenizer

#: Settings that must not change between a run and its resume (they change which batches
#: are read); the others may (e.g. more steps), with a notice.
RESUME_FIXED = ("batch_size", "seq_len", "grad_accum", "shuffle", "seed")
#: what a run writes into out_dir besides its checkpoints (``overwrite`` removes them)
RUN_FILES = ("metrics.jsonl", "loss.png")
RUN_DIRS = ("best", "tensorboard")  # the keep-best checkpoint, TensorBoard event files


@dataclass(frozen=True)
class TrainStatus:
    """A snapshot of the run; ``trainer.status`` is replaced, never mutated."""

    step: int = 0  #: optimizer steps done
    total_steps: int = 0
    loss: Optional[float] = None  #: training loss of the last step
    lr: Optional[float] = None
    grad_norm: Optional[float] = None  #: global gradient norm before clipping
    tokens_per_s: Optional[float] = None
    eta_s: Optional[float] = None  #: estimated seconds to the end of the run
    val_loss: Optional[float] = None  #: latest validation loss
    val_step: Optional[int] = None  #: step of that validation loss
    ms: Optional[float] = None  #: milliseconds of the last step
    elapsed_s: float = 0.0
    tokens_seen: int = 0
    phase: str = "idle"  #: idle | setup | training | evaluating | sampling | saving | done
    running: bool = False
    stop_reason: Optional[str] = None
    checkpoint: Optional[str] = None  #: last checkpoint written
    skipped_steps: int = 0  #: updates skipped for a non-finite loss/gradient (on_nonfinite="skip")

    def as_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def _defaults(config: TrainerConfig) -> List[Any]:
    # (Trainer.__init__'s default_callbacks flag shadows the function's name there)
    return default_callbacks(config)


@dataclass
class History:
    """What ``train()`` returns: every step's metrics row (resumed runs include the rows
    before the resume), samples, and how the run ended."""

    rows: List[Dict[str, Any]] = field(default_factory=list)
    samples: List[Tuple[int, str]] = field(default_factory=list)
    stop_reason: Optional[str] = None  #: None when the run completed all its steps
    final_step: int = 0
    out_dir: Optional[str] = None
    last_checkpoint: Optional[str] = None
    loss_curve: Optional[str] = None
    wall_s: float = 0.0
    #: non-finite steps (skipped, or the one that stopped the run): NonFiniteReport.as_dict()
    faults: List[Dict[str, Any]] = field(default_factory=list)

    @property
    def steps(self) -> List[int]:
        return [r["step"] for r in self.rows]

    @property
    def losses(self) -> List[Optional[float]]:
        """Training loss per step (None for a step whose loss was non-finite)."""
        return [r["loss"] for r in self.rows]

    @property
    def val_losses(self) -> List[Tuple[int, float]]:
        return [(r["step"], r["val_loss"]) for r in self.rows if r.get("val_loss") is not None]

    @property
    def final_loss(self) -> Optional[float]:
        return self.rows[-1]["loss"] if self.rows else None

    @property
    def skipped_steps(self) -> List[int]:
        return [r["step"] for r in self.rows if r.get("skipped")]

    @property
    def final_val_loss(self) -> Optional[float]:
        v = self.val_losses
        return v[-1][1] if v else None

    @property
    def stopped_early(self) -> bool:
        return self.stop_reason is not None

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def _finite_or_none(x: Optional[float]) -> Optional[float]:
    return x if x is not None and math.isfinite(x) else None


class Trainer:
    """Trains one model as ``config`` says; see the module docstring."""

    def __init__(self, config: TrainerConfig, callbacks: Sequence[Any] = (), *, model: Any = None,
                 default_callbacks: bool = True):
        if not isinstance(config, TrainerConfig):
            raise InvalidArgumentError(f"config must be a TrainerConfig, got {type(config).__name__}")
        config.validate()
        self.config = config
        # the built-in output (metrics, progress, sampling, checkpoints, TensorBoard) is done by
        # callbacks from pyllmc.callbacks; a user callback of the same class replaces its default
        self.callbacks: List[Any] = merge_callbacks(_defaults(config) if default_callbacks else [], callbacks)
        for cb in self.callbacks:
            if hasattr(cb, "set_trainer"):
                cb.set_trainer(self)
        self.last_row: Optional[Dict[str, Any]] = None  #: the metrics row of the latest step
        self._fn_callbacks: Dict[str, List[Callable[[TrainStatus], Any]]] = {e: [] for e in EVENTS}
        self._model_arg = model if model is not None else config.model
        self.model: Optional["Model"] = None  # set up by setup()
        self.tokenizer: Optional["Tokenizer"] = None
        self.train_loader: Optional["DataLoader"] = None
        self.val_loader: Optional["DataLoader"] = None
        self.step = 0
        self.rng: Optional[np.random.Generator] = None
        self.history = History(out_dir=config.out_dir)
        self._status = TrainStatus(total_steps=config.steps)
        self._stop_event = threading.Event()
        self._stop_reason: Optional[str] = None
        self._lock = threading.Lock()
        self._ready = False
        self._metrics_file: Optional[IO[bytes]] = None
        self._last_saved_step = -1
        self._resumed_from: Optional[str] = None
        self._skips_in_row = 0  # consecutive non-finite steps skipped (on_nonfinite="skip")
        self._t_start: Optional[float] = None
        self._run_lock: Any = None  # pyllmc.runlock.RunLock on out_dir, taken by setup()
        self._dp: Any = None  # pyllmc.distributed.DataParallel when running in a process group

    @property
    def world_size(self) -> int:
        """Data-parallel ranks of the run (1 without a process group)."""
        return self._dp.world if self._dp is not None else 1

    @property
    def is_primary(self) -> bool:
        """True on the process that logs, writes metrics and saves (rank 0, or the only one)."""
        return self._dp is None or self._dp.primary

    # ------------------------------------------------------------ public API
    @property
    def status(self) -> TrainStatus:
        """The latest TrainStatus (safe to read from any thread)."""
        return self._status

    def stop(self, reason: str = "stop requested") -> None:
        """Ask the run to end after the current step (thread-safe)."""
        with self._lock:
            if self._stop_reason is None:
                self._stop_reason = reason
        self._stop_event.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop_event.is_set()

    def add_callback(self, event: str, fn: Callable[[TrainStatus], Any]) -> None:
        """Call ``fn(status)`` on ``event`` (step_end, eval, save, train_end); True stops."""
        event = event[3:] if event.startswith("on_") else event
        if event not in EVENTS:
            raise InvalidArgumentError(f"unknown callback event {event!r}; expected one of {', '.join(EVENTS)}")
        self._fn_callbacks[event].append(fn)

    def close(self) -> None:
        """Close the metrics file and free the model (unless it was passed in as a Model)."""
        self._close_metrics()
        from .model import Model

        if self.model is not None and not (isinstance(self._model_arg, Model) and self._model_arg is self.model):
            self.model.close()
        self.model = None
        self._ready = False
        if self._run_lock is not None:
            self._run_lock.release()
            self._run_lock = None
        if self._dp is not None:
            self._dp.ctx.close()
            self._dp = None

    def __enter__(self) -> "Trainer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ setup
    def setup(self) -> None:
        """Create (or restore) the model and the loaders; ``train()`` calls it when needed."""
        if self._ready:
            return
        had_lock = self._run_lock is not None
        try:
            self._setup()
        except BaseException:
            if not had_lock and self._run_lock is not None:  # a failed setup holds no lock
                self._run_lock.release()
                self._run_lock = None
            raise

    def _setup(self) -> None:
        cfg = self.config
        from .data import DataLoader, resolve_shards
        from .model_source import check_device, load_model
        from .tokenizer import ByteTokenizer, find_tokenizer_file, load_tokenizer

        device = check_device(cfg.device)
        self._set_status(phase="setup")
        if self._dp is None:
            from .distributed import from_config

            self._dp = from_config(cfg, self)
            if not self.is_primary:  # rank 0 reports for all
                cfg = self.config = dataclasses.replace(cfg, progress="none", plot=False)
        shards = resolve_shards(cfg.data)
        val_shards = resolve_shards(cfg.val_data) if cfg.val_data is not None else None
        # tokenizer: explicit, else next to the data
        tok = None
        if cfg.tokenizer is not None:
            tok = load_tokenizer(cfg.tokenizer)
        else:
            f = find_tokenizer_file(Path(shards[0]).parent)
            if f is not None:
                tok = load_tokenizer(f)
        B, T = cfg.batch_size, cfg.seq_len
        ckpt = None
        out = Path(cfg.out_dir) if cfg.out_dir else None
        if out is not None and self.is_primary:
            from .checkpoint import latest_checkpoint, list_checkpoints
            from .runlock import RunLock

            if self._run_lock is None:  # one trainer per run directory, until close()
                self._run_lock = RunLock(out)
            if cfg.resume:
                ckpt = latest_checkpoint(out)
                if ckpt is None:
                    self._log(f"resume: no checkpoint in {out} yet, starting from step 0")
            elif list_checkpoints(out) or (out / "metrics.jsonl").exists():
                if not cfg.overwrite:
                    raise FileError(f"{out}: already holds a run (checkpoints or metrics.jsonl); continue it "
                                    "with --resume, replace it with --overwrite, or use another --out directory")
                for _, p in list_checkpoints(out):
                    shutil.rmtree(p)
                for name in RUN_FILES:
                    if (out / name).exists():
                        (out / name).unlink()
                for name in RUN_DIRS:
                    if (out / name).is_dir():
                        shutil.rmtree(out / name)
        if self._dp is not None and out is not None:  # every rank resumes what rank 0 found
            ckpt = self._dp.ctx.from_rank0(ckpt, "setup of the output directory")
        state = None
        if ckpt is not None:
            from .checkpoint import load_checkpoint

            load = self._dp.load_checkpoint if self._dp is not None else load_checkpoint
            model, state = load(ckpt, max_batch=B, max_seq=T, threads=cfg.threads, device=device,
                                 precision=cfg.precision)
            self._check_resume(state, ckpt)
            self._resumed_from = str(ckpt)
        else:
            V = cfg.vocab_size or (tok.vocab_size if tok is not None else None)
            model = load_model(self._model_arg, max_batch=B, max_seq=T, threads=cfg.threads, seed=cfg.seed,
                               vocab_size=V, max_seq_len=cfg.max_seq_len, device=device, precision=cfg.precision)
            if model.max_batch < B or model.max_seq < T:
                raise InvalidArgumentError(
                    f"the given model allows B <= {model.max_batch}, T <= {model.max_seq}; the run needs B = {B}, T = {T}")
        self.model = model
        if self._dp is not None:
            self._dp.attach(model)
        V = model.config.vocab_size
        if tok is not None and tok.vocab_size > V:
            raise InvalidArgumentError(
                f"the tokenizer has {tok.vocab_size} tokens but the model's vocabulary is {V}")
        if tok is None:
            if V == 257:
                tok = ByteTokenizer()
            elif V == 50257:
                try:
                    from .tokenizer import gpt2_tokenizer

                    tok = gpt2_tokenizer()
                except PyllmcError:
                    tok = None
        self.tokenizer = tok
        if self._dp is not None:  # rank r reads the r-th B x T window of each global batch
            self.train_loader = self._dp.loader(shards, B, T, shuffle=cfg.shuffle, seed=cfg.seed, vocab_size=V)
        else:
            self.train_loader = DataLoader(shards, B, T, shuffle=cfg.shuffle, seed=cfg.seed, vocab_size=V)
        if val_shards is not None:
            self.val_loader = DataLoader(val_shards, B, T, shuffle=False, vocab_size=V)
        self.rng = np.random.Generator(np.random.PCG64(cfg.seed))
        self.step = 0
        if state is not None:
            self.step = int(state["step"])
            where = Path(ckpt) / "state.json"
            try:
                self.train_loader.load_state(state["data"])
            except PyllmcError as e:  # name the file the bad loader state came from
                raise BadFormatError(f"{where}: data-loader state: {e}") from None
            try:
                self.rng.bit_generator.state = state["rng"]
            except (TypeError, ValueError, KeyError) as e:
                raise BadFormatError(f"{where}: rng state is not a PCG64 state: {e}") from None
            self._skips_in_row = int(state.get("skips_in_row", 0))
            self._last_saved_step = self.step
            if int(state.get("total_steps", cfg.steps)) != cfg.steps:
                self._log(f"note: the run was started with {state.get('total_steps')} steps, now {cfg.steps}: "
                          "the LR schedule changes, so results differ from an uninterrupted run")
        if out is not None and self.is_primary:
            out.mkdir(parents=True, exist_ok=True)
            cfg.to_file(out / "config.toml")  # the resolved settings: `pyllmc train --resume DIR` reads them
            self._open_metrics(out, state)
            if tok is not None and not (out / "tokenizer.bin").exists():
                try:
                    tok.save(out / "tokenizer.bin")
                except PyllmcError:
                    pass
        self._ready = True
        self._set_status(phase="idle", step=self.step)

    def _check_resume(self, state: Dict[str, Any], ckpt: Path) -> None:
        saved = state.get("train", {})
        cfg = self.config
        diffs = []
        for k in RESUME_FIXED:
            if k in saved and saved[k] != getattr(cfg, k):
                diffs.append(f"{k} {saved[k]} -> {getattr(cfg, k)}")
        if "accum_steps" in saved and saved["accum_steps"] != cfg.accum_steps:
            diffs.append(f"grad_accum {saved['accum_steps']} -> {cfg.accum_steps}")
        if diffs:
            raise InvalidArgumentError(f"{ckpt}: cannot resume with different settings: " + ", ".join(diffs))
        if int(state.get("threads", cfg.threads)) != cfg.threads:
            self._log(f"note: the checkpoint was written with threads = {state.get('threads')}, now {cfg.threads}; "
                      "results may differ in the last bits from an uninterrupted run")
        if int(state["step"]) > cfg.steps:
            raise InvalidArgumentError(f"{ckpt}: checkpoint is at step {state['step']}, beyond --steps {cfg.steps}")

    # ------------------------------------------------------------ metrics file
    def _open_metrics(self, out: Path, state: Optional[Dict[str, Any]]) -> None:
        path = out / "metrics.jsonl"
        self.history.rows = []
        if state is not None and path.exists():
            keep = int(state.get("metrics_bytes", 0))
            with open(path, "rb+") as f:
                data = f.read(keep)
                f.truncate(len(data))
            for line in data.decode("utf-8", errors="replace").splitlines():
                line = line.strip()
                if line:
                    try:
                        self.history.rows.append(json.loads(line))
                    except ValueError:
                        pass
            self._metrics_file = open(path, "ab")
        else:
            self._metrics_file = open(path, "wb")

    def _close_metrics(self) -> None:
        f, self._metrics_file = self._metrics_file, None
        if f is not None:
            f.close()

    def write_metrics_row(self, row: Dict[str, Any]) -> None:
        """Append one row to metrics.jsonl (MetricsCallback calls this every step)."""
        if self._metrics_file is not None:
            self._metrics_file.write(json.dumps(row).encode() + b"\n")
            self._metrics_file.flush()

    # ------------------------------------------------------------ output
    def log(self, msg: str) -> None:
        """Print a notice through the progress callback (so a bar is not broken), or plainly."""
        for cb in self.callbacks:
            if isinstance(cb, ProgressCallback):
                cb.write(msg)
                return
        if self.config.progress != "none":
            print(msg, flush=True)

    _log = log

    def _end_progress(self) -> None:
        for cb in self.callbacks:
            if isinstance(cb, ProgressCallback):
                cb.close()

    # ------------------------------------------------------------ status and callbacks
    def _set_status(self, **kw: Any) -> TrainStatus:
        with self._lock:
            self._status = dataclasses.replace(self._status, **kw)
            return self._status

    def _fire(self, event: str, status: TrainStatus) -> bool:
        """Call every callback's ``on_<event>`` by ``order`` (then list order; functions from
        add_callback at order 0 after the objects). A True return asks the run to stop at
        once, so the callbacks after it (checkpointing, order 90) see the request."""
        stop = False
        method = "on_" + event
        calls = [(getattr(cb, "order", 0), i, getattr(cb, method, None)) for i, cb in enumerate(self.callbacks)]
        n = len(calls)
        calls += [(0, n + i, fn) for i, fn in enumerate(self._fn_callbacks[event])]
        for _, _, fn in sorted((c for c in calls if c[2] is not None), key=lambda c: (c[0], c[1])):
            if fn(status) is True:
                stop = True
                if event != "train_end":
                    self.stop(f"callback ({method})")
        return stop

    # ------------------------------------------------------------ pieces
    def evaluate(self, num_batches: Optional[int] = None) -> float:
        """Mean loss over the first ``num_batches`` (default eval_batches) validation batches."""
        self.setup()
        if self.val_loader is None:
            raise StateError("no validation data (val_data / --val-data) was given")
        n = int(num_batches or self.config.eval_batches)
        self.val_loader.reset()
        total = 0.0
        for _ in range(n):
            x, y = self.val_loader.next_batch()
            total += self.model.forward(x, y)
        return total / n

    def sample(self, prompt: Optional[str] = None, max_tokens: Optional[int] = None, *,
               temperature: Optional[float] = None, top_k: Optional[int] = None,
               seed: Optional[int] = None) -> str:
        """Generate text from the current model (uses the run's RNG unless ``seed`` is given)."""
        from .sampling import generate, make_rng

        self.setup()
        cfg = self.config
        tok = self.tokenizer
        prompt = cfg.sample_prompt if prompt is None else prompt
        if prompt and tok is not None and tok.can_encode:
            ids = tok.encode(prompt)
        else:
            prompt = ""
            ids = [tok.eot_id if tok is not None else self.model.config.vocab_size - 1]
        rng = make_rng(seed) if seed is not None else self.rng
        new = generate(self.model, ids, cfg.sample_tokens if max_tokens is None else max_tokens,
                       temperature=cfg.sample_temperature if temperature is None else temperature,
                       top_k=cfg.sample_top_k if top_k is None else top_k, rng=rng)
        if tok is None:
            return " ".join(str(t) for t in new)
        return prompt + tok.decode(new)

    def save_checkpoint(self, directory: Optional[Union[str, os.PathLike]] = None, *,
                        keep_last: Optional[int] = None, val_loss: Optional[float] = None) -> str:
        """Write a checkpoint of the current step into ``directory`` (default out_dir),
        keeping the newest ``keep_last`` (default the config's); returns its path.
        ``val_loss`` is recorded in its state.json (keep-best uses it)."""
        from .checkpoint import save_checkpoint

        self.setup()
        cfg = self.config
        if not cfg.out_dir:
            raise StateError("no out_dir: nowhere to save checkpoints")
        if self._metrics_file is not None:
            self._metrics_file.flush()
            os.fsync(self._metrics_file.fileno())
            metrics_bytes = self._metrics_file.tell()
        else:
            metrics_bytes = 0
        train = {k: getattr(cfg, k) for k in RESUME_FIXED}
        train.update(accum_steps=cfg.accum_steps, lr=cfg.lr, schedule=cfg.schedule, warmup=cfg.warmup,
                     final_frac=cfg.final_frac, weight_decay=cfg.weight_decay, grad_clip=cfg.grad_clip)
        state = {
            "total_steps": cfg.steps,
            "data": self.train_loader.state(),
            "rng": self.rng.bit_generator.state,
            "metrics_bytes": metrics_bytes,
            "train": train,
            "threads": cfg.threads,
            "model_config": dataclasses.asdict(self.model.config),
            "tokens_seen": self.step * cfg.accum_steps * cfg.batch_size * cfg.seq_len * self.world_size,
            "skips_in_row": self._skips_in_row,
        }
        if val_loss is not None:
            state["val_loss"] = float(val_loss)
        keep = cfg.keep_last if keep_last is None else keep_last
        where = cfg.out_dir if directory is None else directory
        if self._dp is not None:  # rank 0 writes, ZeRO-1 ranks add their optimizer slices
            path = self._dp.save_checkpoint(self.model, where, self.step, state, keep_last=keep)
        else:
            path = save_checkpoint(self.model, where, self.step, state, keep_last=keep)
        if directory is not None:  # keep-best: not the run's own checkpoint series
            return str(path)
        self._last_saved_step = self.step
        self.history.last_checkpoint = str(path)
        return str(path)

    def export_hf(self, directory: Union[str, os.PathLike]) -> str:
        """Write the current model as a Hugging Face GPT-2 directory (``Model.save_pretrained``)."""
        self.setup()
        return self.model.save_pretrained(directory)

    def export_bf16(self, path: Union[str, os.PathLike]) -> str:
        """Write the current parameters as an llm.c version 5 checkpoint (bf16, rounded to
        nearest even): half the size, for inference or sharing. Training checkpoints stay
        version 3 (fp32), whatever the precision of the run."""
        self.setup()
        from .reference.convert import model_params, write_llmc_checkpoint

        write_llmc_checkpoint(path, model_params(self.model), self.model.config, version=5)
        return os.fspath(path)

    # ------------------------------------------------------------ the loop
    def train(self) -> History:
        """Run to ``steps`` (or ``stop_at`` / a stop request); returns the History.

        Run from the main thread, the first Ctrl-C (SIGINT) asks the run to stop after the
        current step (with a checkpoint when out_dir is set; ``stop_reason`` "interrupted");
        a second one raises KeyboardInterrupt at once.
        """
        t_start = self._t_start = time.perf_counter()
        if self._ready:  # train() again after a stop: continue the same run
            with self._lock:
                self._stop_event.clear()
                self._stop_reason = None
            if self.config.out_dir and self._metrics_file is None and self.is_primary:
                self._metrics_file = open(Path(self.config.out_dir) / "metrics.jsonl", "ab")
        restore = self._install_sigint()
        try:
            self.setup()  # first: a resumed run's bar starts at the checkpoint's step
            return self._train_loop(t_start)
        finally:
            if restore is not None:
                restore()
            self._end_progress()
            self._close_metrics()
            self._set_status(running=False, phase="done")

    def _install_sigint(self) -> Optional[Callable[[], Any]]:
        import signal

        if threading.current_thread() is not threading.main_thread():
            return None
        try:
            previous = signal.getsignal(signal.SIGINT)
        except (ValueError, OSError):
            return None
        if previous is not signal.default_int_handler:
            return None  # someone else handles SIGINT: leave it alone

        def handler(signum, frame):
            if self._stop_event.is_set():
                raise KeyboardInterrupt
            self.stop("interrupted")
            self._log("interrupt: stopping after this step (press Ctrl-C again to abort at once)")

        try:
            signal.signal(signal.SIGINT, handler)
        except (ValueError, OSError):
            return None
        return lambda: signal.signal(signal.SIGINT, previous)

    def _train_loop(self, t_start: float) -> History:
        cfg = self.config
        sched = cfg.schedule_fn()
        K, B, T = cfg.accum_steps, cfg.batch_size, cfg.seq_len
        tokens_per_step = K * B * T * self.world_size  # global: all ranks together
        start_step = self.step
        if self._resumed_from:
            self._log(f"resumed from {self._resumed_from} (step {self.step})")
        if self.val_loader is None and cfg.eval_every:
            self._log("note: eval_every is set but there is no validation data; skipping evaluation")
        stop_at = cfg.stop_at if cfg.stop_at is not None else cfg.steps
        if cfg.stop_at is not None and self.step >= cfg.stop_at and self.step < cfg.steps:
            # a resume with a stop_at already reached: nothing to run, and no extra step
            self.stop(f"stop_at {cfg.stop_at}")
        st0 = self._set_status(running=True, phase="training", step=self.step, total_steps=cfg.steps,
                               tokens_seen=self.step * tokens_per_step,
                               skipped_steps=sum(1 for r in self.history.rows if r.get("skipped")))
        self._fire("train_begin", st0)
        ema_ms: Optional[float] = None
        val_loss, val_step = None, None
        if self.history.val_losses:
            val_step, val_loss = self.history.val_losses[-1]
        while self.step < cfg.steps:
            if self._stop_event.is_set():
                break
            t0 = time.perf_counter()
            s = self.step + 1
            lr = sched(s)
            loss, gnorm, fault = self._optimizer_step(s, lr)
            self.step = s
            ms = (time.perf_counter() - t0) * 1000.0
            ema_ms = ms if ema_ms is None else 0.9 * ema_ms + 0.1 * ms
            tps = tokens_per_step / (ms / 1000.0) if ms > 0 else float("inf")
            # JSON has no NaN/Infinity: a non-finite value is written as null
            row: Dict[str, Any] = {"step": s, "loss": _finite_or_none(loss), "lr": lr,
                                   "grad_norm": _finite_or_none(gnorm), "ms": round(ms, 3),
                                   "tokens_per_s": round(tps, 1)}
            if fault is not None:
                row.update(skipped=True, nonfinite=fault.tensor or fault.what)
            did_eval = False
            if self.val_loader is not None and cfg.eval_every and (s % cfg.eval_every == 0 or s == cfg.steps):
                self._set_status(phase="evaluating")
                val_loss, val_step = self.evaluate(), s
                row["val_loss"] = _finite_or_none(val_loss)
                did_eval = True
            self.last_row = row
            self.history.rows.append(row)
            st = self._set_status(
                step=s, loss=loss, lr=lr, grad_norm=gnorm, tokens_per_s=tps, ms=ms,
                eta_s=ema_ms / 1000.0 * (cfg.steps - s), val_loss=val_loss, val_step=val_step,
                elapsed_s=time.perf_counter() - t_start, tokens_seen=s * tokens_per_step, phase="training",
                skipped_steps=self._status.skipped_steps + (fault is not None))
            if s >= stop_at and cfg.stop_at is not None:
                self.stop(f"stop_at {cfg.stop_at}")
            if did_eval:
                self._fire("eval", st)
            # metrics row, progress, TensorBoard, the user's callbacks, sampling, checkpoint
            # (and on_save): each a callback, in that order (pyllmc.callbacks)
            self._fire("step_end", st)
        self._finish(t_start)
        if start_step == self.step and start_step >= cfg.steps:
            self._log(f"nothing to do: the run is already at step {self.step} of {cfg.steps}")
        return self.history

    def _optimizer_step(self, s: int, lr: float) -> Tuple[float, float, Optional[Any]]:
        """Step ``s``: K micro-batches (forward, backward with loss scale 1/K), the gradient
        norm, clipping fused into the AdamW update. Returns (loss, grad norm, fault): fault is
        a NonFiniteReport when the loss or the gradient norm was non-finite and the update was
        skipped (on_nonfinite="skip"); in stop mode that raises NonFiniteError instead."""
        from .shapes import clip_coefficient
        from .numerics import diagnose_gradients, diagnose_loss

        cfg, m, K = self.config, self.model, self.config.accum_steps
        dp = self._dp
        loss_scale = dp.loss_scale(K) if dp is not None else 1.0 / K  # dp: summed over ranks
        loss_sum = 0.0
        fault = None
        for k in range(K):
            x, y = self.train_loader.next_batch()
            lk = m.forward(x, y)
            if not math.isfinite(lk):
                # diagnose now: the activations are this micro-batch's, and backward would
                # overwrite probs with the logit gradients
                fault = diagnose_loss(m, s, lk, micro_batch=k, micro_batches=K)
                break
            loss_sum += lk
            # the first micro-batch overwrites the gradients: zero_grad without its own pass
            m.backward(loss_scale=loss_scale, accumulate=k > 0)
        loss = loss_sum / K
        if dp is not None:  # the global loss; every rank learns of a non-finite loss anywhere
            loss, fault = dp.agree_on_loss(loss, fault, s, K)
        if fault is not None:
            self._nonfinite(fault)
            return fault.value, float("nan"), fault
        if dp is not None:
            dp.reduce_gradients(s)
        # the norm is needed for clipping and the metrics anyway; a NaN/inf anywhere in the
        # gradients makes it non-finite, so checking it costs nothing
        gnorm = dp.grad_norm(s) if dp is not None else m.grad_norm()
        if not math.isfinite(gnorm):
            fault = diagnose_gradients(m, s, gnorm)
            self._nonfinite(fault)
            return loss, gnorm, fault
        # clip_coefficient reproduces clip_grad_norm's float32 factor, so this single update
        # is bitwise clip-then-step, one pass over the gradients cheaper
        scale = clip_coefficient(gnorm, cfg.grad_clip) if cfg.grad_clip > 0 else 1.0
        update = dp.adamw_step if dp is not None else m.adamw_step  # dp: ZeRO-1 updates its slice
        update(lr, t=s, beta1=cfg.beta1, beta2=cfg.beta2, eps=cfg.eps, weight_decay=cfg.weight_decay,
               decay_matrices_only=cfg.decay_matrices_only, grad_scale=scale)
        self._skips_in_row = 0
        if dp is not None:
            dp.check_parameters(s, force=s == cfg.steps)
        return loss, gnorm, None

    def _nonfinite(self, fault: Any) -> None:
        """Skip the update of a non-finite step, or end the run with NonFiniteError."""
        cfg = self.config
        self.history.faults.append(fault.as_dict())
        if cfg.on_nonfinite == "skip":
            self._skips_in_row += 1
            if fault.bad_params:
                fault.note = (fault.note + "; " if fault.note else "") + \
                    "skipping updates cannot help: the parameters themselves are non-finite"
            elif self._skips_in_row > cfg.max_skips:
                fault.note = (fault.note + "; " if fault.note else "") + \
                    f"{self._skips_in_row} steps in a row were non-finite (max_skips = {cfg.max_skips})"
            else:
                self._log(f"skipped the update of {fault.message}")
                return
        self.history.faults[-1] = fault.as_dict()
        # the model is not checkpointed: its last good state is the previous checkpoint
        self.history.stop_reason = f"non-finite {fault.what} at step {fault.step}" + \
            (f" (first: {fault.tensor})" if fault.tensor else "")
        self._finish(None, failed=fault)
        raise fault.error()

    def _finish(self, t_start: Optional[float], failed: Any = None) -> None:
        """End of the run (completed, stopped, or failed): history, status, loss curve, on_train_end."""
        cfg = self.config
        self.history.final_step = self.step  # a failed step was not counted
        if self._dp is not None:  # every rank ends here at the same step: whole optimizer state again
            self._dp.sync_moments(f"step {self.step}: end of training")
        if failed is None:
            self.history.stop_reason = None if self.step >= cfg.steps else (self._stop_reason or "stopped")
        if t_start is not None:
            self.history.wall_s = time.perf_counter() - t_start
        elif self._t_start is not None:
            self.history.wall_s = time.perf_counter() - self._t_start
        st = self._set_status(phase="done", running=False, stop_reason=self.history.stop_reason,
                              elapsed_s=self.history.wall_s)
        self._end_progress()  # before the loss-curve message
        if cfg.out_dir and cfg.plot and self.history.rows:
            from .plotting import plot_loss_curve

            p = plot_loss_curve(self.history.rows, Path(cfg.out_dir) / "loss.png",
                                title=f"{self._describe_model()} - " + (
                                    f"{cfg.steps} steps" if self.step >= cfg.steps else f"step {self.step} of {cfg.steps}"))
            self.history.loss_curve = str(p) if p else None
        self._fire("train_end", st)

    def _describe_model(self) -> str:
        c = self.model.config
        return f"GPT-2 L{c.num_layers} C{c.channels} H{c.num_heads} V{c.vocab_size}"
