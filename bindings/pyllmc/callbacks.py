"""Training callbacks: the hooks of a run, and the built-in ones that do the Trainer's output.

A callback is any object with some of the methods ``on_train_begin``, ``on_step_end``,
``on_eval``, ``on_save``, ``on_train_end`` (each gets a ``TrainStatus``); subclass
``Callback`` for the defaults. Returning True from any but ``on_train_end`` stops the run
after the current step, with a checkpoint. ``Trainer`` calls ``set_trainer(trainer)`` on each
callback that has it (``Callback`` stores it as ``self.trainer``), and runs them by ``order``
(lower first; ties in list order), so checkpointing can come after everything that might
ask the run to stop.

The Trainer's own output is done by built-in callbacks, which a user may replace (pass an
instance of a subclass: it takes the built-in's place) or drop (``default_callbacks=False``):

====================  =====  ==============================================================
class                 order  does
====================  =====  ==============================================================
MetricsCallback       -100   appends each step's row (``trainer.last_row``) to metrics.jsonl
ProgressCallback      -90    the progress bar (tqdm) or plain lines; ``write(msg)`` for logs
TensorBoardCallback   -80    TensorBoard event files (``report_to=["tensorboard"]``)
SamplingCallback      80     a sample every ``sample_every`` steps
CheckpointCallback    90     checkpoints every ``save_every`` steps, at the end and when
                             stopping; ``keep_best`` keeps the lowest-validation-loss one
====================  =====  ==============================================================
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Optional, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from .trainer import Trainer, TrainStatus

EVENTS = ("train_begin", "step_end", "eval", "save", "train_end")
BEST_DIR = "best"  # keep_best: DIR/best/ckpt_XXXXXXXX/


class Callback:
    """Base class for callbacks; override what you need. Return True to stop training."""

    order: int = 0
    trainer: Optional["Trainer"] = None

    def set_trainer(self, trainer: "Trainer") -> None:
        self.trainer = trainer

    def on_train_begin(self, status: "TrainStatus") -> Optional[bool]:
        return None

    def on_step_end(self, status: "TrainStatus") -> Optional[bool]:
        return None

    def on_eval(self, status: "TrainStatus") -> Optional[bool]:
        return None

    def on_save(self, status: "TrainStatus") -> Optional[bool]:
        return None

    def on_train_end(self, status: "TrainStatus") -> None:
        return None


def _fmt_time(s: Optional[float]) -> str:
    if s is None or not math.isfinite(s):
        return "?"
    s = int(round(s))
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


class MetricsCallback(Callback):
    """One JSON object per optimizer step in DIR/metrics.jsonl (the Trainer opens the file,
    and cuts it back to the checkpoint on resume). Override ``row(status)`` to add fields."""

    order = -100

    def row(self, status: "TrainStatus") -> dict:
        return dict(self.trainer.last_row)

    def on_step_end(self, status: "TrainStatus") -> None:
        self.trainer.write_metrics_row(self.row(status))


class ProgressCallback(Callback):
    """``progress``: "bar" (tqdm, on stderr), "lines" (every ``log_every`` steps, stdout),
    "auto" (a bar on a terminal, else lines) or "none". ``write(msg)`` prints a message
    without breaking the bar; the Trainer's notices go through it."""

    order = -90

    def __init__(self, mode: Optional[str] = None) -> None:
        self.mode = mode  # None: the config's progress
        self._bar: Any = None
        self._active = "none"

    def _mode(self) -> str:
        return self.mode or (self.trainer.config.progress if self.trainer is not None else "lines")

    def on_train_begin(self, status: "TrainStatus") -> None:
        mode = self._mode()
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "lines"
        self._active = mode
        if mode == "bar":
            try:
                from tqdm.auto import tqdm
            except ImportError:
                self._active = "lines"
                return
            self._bar = tqdm(total=status.total_steps, initial=status.step, file=sys.stderr, unit="step",
                             dynamic_ncols=True, leave=True)

    def on_step_end(self, st: "TrainStatus") -> None:
        if self._bar is not None:
            post = {"loss": f"{st.loss:.4f}", "lr": f"{st.lr:.2e}", "tok/s": f"{st.tokens_per_s:.0f}"}
            if st.val_loss is not None:
                post["val"] = f"{st.val_loss:.4f}"
            self._bar.set_postfix(post, refresh=False)
            self._bar.update(1)
        elif self._active == "lines":
            every = self.trainer.config.log_every if self.trainer is not None else 1
            if st.step % every == 0 or st.step == st.total_steps or st.step == 1:
                val = f" | val {st.val_loss:.4f}" if st.val_loss is not None and st.val_step == st.step else ""
                print(f"step {st.step:>{len(str(st.total_steps))}}/{st.total_steps} | loss {st.loss:.4f}{val} | "
                      f"lr {st.lr:.2e} | norm {st.grad_norm:.3f} | {st.ms:.0f} ms | {st.tokens_per_s:.0f} tok/s | "
                      f"eta {_fmt_time(st.eta_s)}", flush=True)

    def write(self, msg: str) -> None:
        if self._bar is not None:
            self._bar.write(msg)
        elif self._mode() != "none":
            print(msg, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def on_train_end(self, status: "TrainStatus") -> None:
        self.close()


class TensorBoardCallback(Callback):
    """TensorBoard scalars in ``log_dir`` (default DIR/tensorboard): train/loss, train/lr,
    train/grad_norm, train/tokens_per_s every step, val/loss at each evaluation. Written by
    ``pyllmc.tensorboard.EventWriter`` (no TensorBoard install needed to write them)."""

    order = -80

    def __init__(self, log_dir: Optional[str] = None) -> None:
        self.log_dir = log_dir
        self.writer: Any = None

    def on_train_begin(self, status: "TrainStatus") -> None:
        from .tensorboard import EventWriter

        if not getattr(self.trainer, "is_primary", True):  # data parallel: rank 0 logs for all
            return
        d = self.log_dir or (Path(self.trainer.config.out_dir) / "tensorboard" if self.trainer.config.out_dir else None)
        if d is None:
            self.trainer.log("note: report_to tensorboard needs a run directory (out_dir); not logging")
            return
        if self.writer is None:  # a resumed run replaces what a crash left after its checkpoint
            self.writer = EventWriter(d, purge_step=status.step + 1 if status.step else None)

    def on_step_end(self, st: "TrainStatus") -> None:
        if self.writer is None:
            return
        for tag, v in (("train/loss", st.loss), ("train/lr", st.lr), ("train/grad_norm", st.grad_norm),
                       ("train/tokens_per_s", st.tokens_per_s)):
            if v is not None and math.isfinite(v):
                self.writer.add_scalar(tag, v, st.step)
        self.writer.flush()

    def on_eval(self, st: "TrainStatus") -> None:
        if self.writer is not None and st.val_loss is not None and math.isfinite(st.val_loss):
            self.writer.add_scalar("val/loss", st.val_loss, st.step)

    def on_train_end(self, status: "TrainStatus") -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class SamplingCallback(Callback):
    """Every ``sample_every`` steps, text from the model (``trainer.sample()``, which draws on
    the run's RNG, so it comes before checkpointing and resumes bit-identically), printed and
    kept in ``History.samples``."""

    order = 80

    def on_step_end(self, st: "TrainStatus") -> None:
        t = self.trainer
        every = t.config.sample_every
        if every and st.step % every == 0:
            t._set_status(phase="sampling")
            text = t.sample()
            t.history.samples.append((st.step, text))
            t.log(f"--- sample at step {st.step} ---\n{text}\n---")
            t._set_status(phase="training")


class CheckpointCallback(Callback):
    """A checkpoint every ``save_every`` steps, at the last step and when the run stops (so
    it can be resumed), then ``on_save``. With ``keep_best``, each evaluation that lowers the
    validation loss also writes that step into DIR/best/ (one checkpoint, replaced by the next
    better one; ``pyllmc sample --model DIR/best``); the best loss so far is read back from
    there on resume."""

    order = 90

    def __init__(self) -> None:
        self.best_val_loss: Optional[float] = None
        self.best_step: Optional[int] = None
        self._best_pending = False

    def on_train_begin(self, status: "TrainStatus") -> None:
        cfg = self.trainer.config
        if cfg.keep_best and cfg.out_dir:
            from .checkpoint import latest_checkpoint, read_state

            ck = latest_checkpoint(Path(cfg.out_dir) / BEST_DIR)
            if ck is not None:
                state = read_state(ck)
                if state.get("val_loss") is not None and int(state["step"]) <= status.step:
                    self.best_val_loss, self.best_step = float(state["val_loss"]), int(state["step"])

    def on_eval(self, st: "TrainStatus") -> None:
        cfg = self.trainer.config
        if cfg.keep_best and st.val_loss is not None and math.isfinite(st.val_loss) and (
                self.best_val_loss is None or st.val_loss < self.best_val_loss):
            self.best_val_loss, self.best_step = st.val_loss, st.step
            self._best_pending = True

    def on_step_end(self, st: "TrainStatus") -> None:
        t, cfg = self.trainer, self.trainer.config
        if not cfg.out_dir:
            return
        if self._best_pending:
            self._best_pending = False
            t._set_status(phase="saving")
            t.save_checkpoint(directory=Path(cfg.out_dir) / BEST_DIR, keep_last=1, val_loss=self.best_val_loss)
            t._set_status(phase="training")
        s = st.step
        if (cfg.save_every and s % cfg.save_every == 0) or s == cfg.steps or t.stop_requested:
            t._set_status(phase="saving")
            path = t.save_checkpoint()
            st2 = t._set_status(phase="training", checkpoint=path)
            t._fire("save", st2)


def default_callbacks(config: Any) -> List[Any]:
    """The built-in callbacks a Trainer with ``config`` uses."""
    cbs: List[Any] = [MetricsCallback(), ProgressCallback(), SamplingCallback(), CheckpointCallback()]
    if "tensorboard" in (config.report_to or ()):
        cbs.append(TensorBoardCallback())
    return cbs


def merge_callbacks(defaults: Sequence[Any], user: Sequence[Any]) -> List[Any]:
    """The defaults, less those a user callback replaces (an instance of the same built-in
    class or a subclass of it), then the user's."""
    kept = [d for d in defaults if not any(isinstance(u, type(d)) for u in user)]
    return kept + list(user)

