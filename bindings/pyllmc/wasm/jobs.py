"""Training for guests: ``train_step`` and ``train_start`` jobs, both through the Trainer.

Nothing here trains on its own. ``GuestTrainer`` is the library's ``Trainer`` given the
guest's model and data-loader objects instead of building them from paths: it runs the
Trainer's own setup (metrics, checkpoints, tokenizer next to the data), then uses the
guest's loaders, so a guest's ``train_start`` is the same computation as ``pyllmc train``
with the same settings. ``train_step`` is one ``Trainer._optimizer_step`` (K = 1 micro-batch,
the Trainer's AdamW, clipping and weight-decay defaults, the given lr).

``parse_train_config`` turns the guest's JSON object into a ``TrainerConfig``: keys are
TrainerConfig field names with JSON values of the field's type (an int for int fields, a
number for float fields, true/false for bool, a string or null where the field allows);
an unknown key, a wrong type, a duplicate key or a key the host sets itself (the model, the
data, batch and sequence length, shuffling: they come from the handles) is
INVALID_ARGUMENT naming it. ``out_dir`` is a guest path: the job's Trainer writes into a
private staging directory, published into ``out_dir`` after every step and when the job ends
(``pyllmc.wasm.outdir``: a running guest can swap symlinks into its own directories).
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
import threading
import time
from typing import Any, Callable, Dict, Optional, Tuple

from ..callbacks import Callback
from ..errors import NonFiniteError, PyllmcError
from ..trainer import Trainer, TrainerConfig
from . import abi
from .errors import GuestError, invalid
from .outdir import Publisher

#: TrainerConfig fields a guest may not set: the handles given to train_start decide them.
HOST_SET = {
    "model": "the model handle", "data": "the train_loader handle", "val_data": "the val_loader handle",
    "batch_size": "the loader", "seq_len": "the loader", "shuffle": "the loader",
    "vocab_size": "the model", "max_seq_len": "the model", "device": "the host",
    "resume": "the host (a guest's run starts from its model handle)", "tokenizer": "the host",
    # a guest's job trains in one host process; data parallelism is the host operator's choice
    "nproc": "the host", "zero": "the host", "dist_check_every": "the host", "dist_timeout": "the host",
}

_TYPES = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,)}


def _field_kinds() -> Dict[str, Tuple[str, bool]]:
    """{field: (base type name, nullable)} from TrainerConfig's annotations."""
    out = {}
    for f in dataclasses.fields(TrainerConfig):
        t = str(f.type).replace("typing.", "")
        nullable = t.startswith("Optional[")
        base = t[len("Optional["):-1] if nullable else t
        out[f.name] = (base, nullable)
    return out


FIELD_KINDS = _field_kinds()


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _no_duplicates(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise ValueError(f"duplicate key {k!r}")
        d[k] = v
    return d


def parse_train_config(raw: bytes, call: str) -> Dict[str, Any]:
    """The TrainerConfig keyword arguments of a guest's JSON config (see the module docstring)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise invalid(f"{call}: config_json is not UTF-8 ({e.reason} at byte {e.start})") from None
    try:
        doc = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant) if text.strip() else {}
    except (ValueError, RecursionError) as e:
        raise invalid(f"{call}: config_json is not valid JSON: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if not isinstance(doc, dict):
        raise invalid(f"{call}: config_json must be a JSON object, got {type(doc).__name__}")
    kw: Dict[str, Any] = {}
    for key, value in doc.items():
        if key in HOST_SET:
            raise invalid(f"{call}: config key {key!r} cannot be set by a guest (it comes from {HOST_SET[key]})")
        if key not in FIELD_KINDS:
            raise invalid(f"{call}: unknown config key {key!r} (keys are TrainerConfig field names)")
        base, nullable = FIELD_KINDS[key]
        if value is None:
            if not nullable:
                raise invalid(f"{call}: config key {key!r} must not be null")
        elif base in _TYPES:
            ok = isinstance(value, _TYPES[base]) and (base == "bool" or not isinstance(value, bool))
            if not ok:
                raise invalid(f"{call}: config key {key!r} must be {'a number' if base == 'float' else 'a ' + base}, "
                              f"got {json.dumps(value)[:40]}")
            if base == "float":
                value = float(value)
                if not math.isfinite(value):
                    raise invalid(f"{call}: config key {key!r} must be finite")
            if base == "int" and not -(2**63) <= value < 2**63:
                raise invalid(f"{call}: config key {key!r} = {value} is out of range")
        elif base == "List[str]":
            if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                raise invalid(f"{call}: config key {key!r} must be a list of strings, got {json.dumps(value)[:40]}")
        else:  # Any-typed fields are all host-set
            raise invalid(f"{call}: config key {key!r} cannot be set by a guest")
        kw[key] = value
    return kw


class PublishCallback(Callback):
    """Publishes the staged run directory into the guest's after everything else a step,
    a checkpoint or the end of training wrote (order 100: after checkpointing's 90)."""

    order = 100

    def __init__(self, publisher: Publisher):
        self.publisher = publisher

    def on_step_end(self, status: Any) -> None:
        self.publisher.publish()

    def on_save(self, status: Any) -> None:
        self.publisher.publish()

    def on_train_end(self, status: Any) -> None:
        self.publisher.publish()


class GuestTrainer(Trainer):
    """A Trainer that trains the guest's Model on the guest's DataLoaders (see module doc)."""

    def __init__(self, config: TrainerConfig, model: Any, train_loader: Any, val_loader: Any = None,
                 publisher: Optional[Publisher] = None):
        super().__init__(config, [PublishCallback(publisher)] if publisher is not None else [], model=model)
        self._guest_loaders = (train_loader, val_loader)
        self.publisher = publisher

    def setup(self) -> None:
        if self._ready:
            return
        super().setup()
        self.train_loader, self.val_loader = self._guest_loaders


def step_trainer(model: Any, loader: Any, lr: float, step: int) -> GuestTrainer:
    """A ready GuestTrainer for one guest-driven optimizer step number ``step``."""
    cfg = TrainerConfig(data=loader.paths, batch_size=loader.B, seq_len=loader.T, shuffle=loader.shuffle,
                        steps=max(1, step), lr=lr, schedule="constant", progress="none", plot=False)
    t = GuestTrainer(cfg, model, loader)
    t.model, t.train_loader, t._ready = model, loader, True
    return t


def train_one_step(model: Any, loader: Any, lr: float, step: int) -> float:
    """One optimizer step through the Trainer's own step; returns the batch's mean loss."""
    loss, _, _ = step_trainer(model, loader, lr, step)._optimizer_step(step, lr)
    return loss


def status_code_of(exc: BaseException) -> int:
    """The ABI status for an exception from the library."""
    if isinstance(exc, GuestError):
        return exc.status
    if isinstance(exc, NonFiniteError):
        return abi.BAD_STATE
    if isinstance(exc, PyllmcError) and exc.status is not None and exc.status in abi.STATUS_NAMES:
        return int(exc.status)
    if isinstance(exc, MemoryError):
        return abi.OUT_OF_MEMORY
    if isinstance(exc, OSError):
        return abi.IO
    if isinstance(exc, PyllmcError):
        return abi.BAD_STATE
    return abi.BAD_STATE


_running_lock = threading.Lock()
_running = 0  # jobs of every Host in this process whose thread has not ended


def jobs_running() -> int:
    """How many training jobs (of any guest, any Host) this process is running now."""
    return _running


def _count_running(delta: int) -> None:
    global _running
    with _running_lock:
        _running += delta


class Job:
    """A whole training run in a host thread; the guest polls it through its handle."""

    def __init__(self, trainer: GuestTrainer, on_end: Callable[["Job"], None], describe: Callable[[str], str]):
        self.trainer = trainer
        self.model_slot: Any = None  # the guest's model slot it trains (set by train_start)
        self._on_end = on_end
        self._describe = describe  # host paths -> guest paths in messages
        self.error = 0
        self.error_message = ""
        self.stop_reason: Optional[str] = None
        self._done = threading.Event()
        self._t0 = time.perf_counter()
        self._t_end: Optional[float] = None
        self.thread = threading.Thread(target=self._run, name="pyllmc-wasm-job", daemon=True)
        self._packed_key: Any = None  # status_bytes' cache
        self._packed = b""
        self._packed_status: Any = None

    def start(self) -> None:
        _count_running(1)
        try:
            self.thread.start()
        except BaseException:
            _count_running(-1)
            raise

    def _run(self) -> None:
        try:
            history = self.trainer.train()
            self.stop_reason = history.stop_reason
        except BaseException as e:  # the job's thread: record it, the guest reads it in job_status
            self.error = status_code_of(e) or abi.BAD_STATE
            msg = str(e) or type(e).__name__
            if not isinstance(e, (PyllmcError, OSError, MemoryError, GuestError)):
                msg = f"internal error: {type(e).__name__}: {msg}"
            self.error_message = self._describe(msg.splitlines()[0] if msg else msg)
        finally:
            try:  # metrics file and the run directory's lock; the guest's model stays open
                self.trainer.close()
            except Exception:
                pass
            self._publish_last()
            self._t_end = time.perf_counter()
            try:
                self._on_end(self)
            except Exception:
                pass
            _count_running(-1)
            self._done.set()

    def _publish_last(self) -> None:
        """The run directory as the job left it, into the guest's (also after a failure)."""
        pub = self.trainer.publisher
        if pub is None:
            return
        try:
            pub.publish()
        except Exception as e:
            if not self.error:
                self.error = status_code_of(e) or abi.IO
                self.error_message = self._describe(f"publishing the run directory failed: {e}")
        finally:
            pub.close()

    @property
    def running(self) -> bool:
        return not self._done.is_set()

    @property
    def state(self) -> int:
        if not self._done.is_set():
            return abi.JOB_STATE["running"]
        if self.error:
            return abi.JOB_STATE["failed"]
        return abi.JOB_STATE["stopped"] if self.stop_reason is not None else abi.JOB_STATE["finished"]

    def stop(self) -> None:
        self.trainer.stop("stopped by the guest (job_stop)")

    def wait(self, timeout_s: Optional[float]) -> bool:
        return self._done.wait(timeout_s)

    def status_bytes(self) -> bytes:
        """The job's pyllmc_status. A guest may poll it a thousand times a second while the
        job trains: all but the elapsed time is packed once per new ``trainer.status`` (a
        TrainStatus is replaced, never changed) and state."""
        st = self.trainer.status
        done = self._done.is_set()
        key = (id(st), self.state, int(self.error) if done else 0)
        if key != self._packed_key:
            nan = float("nan")

            def f(x: Optional[float]) -> float:
                return nan if x is None else float(x)

            values = (key[1], int(st.step), int(st.total_steps), key[2],
                      f(st.loss), f(st.val_loss), f(st.lr), f(st.grad_norm), f(st.tokens_per_s), f(st.eta_s), 0.0)
            self._packed = pack_status(values)[:-8]
            self._packed_key = key
            self._packed_status = st  # keeps id(st) from being reused while it is the key
        end = self._t_end if self._t_end is not None else time.perf_counter()
        return self._packed + _ELAPSED.pack(end - self._t0)


_ELAPSED = struct.Struct("<d")  # the status struct's last field, elapsed_s


def _i32(x: int) -> int:
    return max(-(2**31), min(2**31 - 1, int(x)))


def f32(x: float) -> float:
    """``x`` as a value struct can pack as f32 (magnitudes past f32's range become inf)."""
    x = float(x)
    if math.isfinite(x) and abs(x) > 3.4028234663852886e38:
        return math.copysign(math.inf, x)
    return x


def pack_status(values: Tuple[Any, ...]) -> bytes:
    """The 48-byte pyllmc_status of (state, step, total_steps, error, loss, val_loss, lr,
    grad_norm, tokens_per_s, eta_s, elapsed_s)."""
    ints = tuple(_i32(v) for v in values[:4])
    floats = tuple(f32(v) for v in values[4:10])
    return struct.pack(abi.STATUS_STRUCT_FORMAT, *ints, *floats, float(values[10]))
