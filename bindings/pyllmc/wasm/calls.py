"""The host functions of one guest instance (import module ``"pyllmc"``, ABI version 1).

``GuestContext`` holds everything one guest owns: its handle table, its preopened
directories, its host-memory budget, its jobs and its ``last_error`` message. Its methods
``fn_<name>`` implement the functions of ``abi.FUNCTIONS`` on the library (Model,
DataLoader, Tokenizer, Trainer); ``host_function(name)`` wraps one for wasmtime.

Rules every function follows (the tests hit each):
- Arguments are checked first, out pointers included, then the work is done, then the
  results are written: a failed call writes nothing through its out pointers.
- No exception ever leaves a host function: a ``GuestError`` carries its status; a library
  error maps to its ``llmc_status`` (``FileError`` -> IO, ``BadFormatError`` -> BAD_FORMAT,
  ...; a non-finite loss or gradient -> BAD_STATE); anything unexpected is BAD_STATE with
  last_error ``"<call>: internal error: ..."`` and is logged on the ``pyllmc.wasm`` logger.
- Messages are one line, start with the call's name and name guest paths, never host paths.
- A model or loader that a running job uses is busy: every other call on it is BAD_STATE.
- Once the guest's ``--timeout`` has expired every call returns LIMIT_EXCEEDED, and calls
  that loop on the host (``job_wait``, ``evaluate``, ``sample``) stop at their next check.

Models grow on demand. ``model_create``/``model_load`` allocate the C model for one sequence
of up to 64 positions; a call that needs more (a loader's B x T, a longer sample) replaces
it by a larger one with the same parameters and AdamW moments (the C core's results do not
depend on the capacity, only on the actual B and T). Each allocation is charged to the
budget, from ``budget.model_bytes``, before it is made; while growing, old and new model
are both charged.

``evaluate(model, loader, batches)`` is ``Trainer.evaluate``: from the loader's start
(it resets the loader), the mean of ``batches`` batch losses. ``sample`` is ``pyllmc
sample``: the prompt's tokens (end-of-text when empty), ``max_tokens`` new tokens with that
temperature (<= 0: greedy), top-k (0: off) and seed; the text written is the prompt followed
by the decoded new tokens.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from ..errors import BadFormatError, PyllmcError, UnsupportedError
from ..model import release_threads
from . import abi, outdir, sched
from .budget import JOB_BYTES, OBJECT_BYTES, Budget, loader_bytes, model_bytes
from .errors import GuestError, busy, invalid, limit
from .handles import HandleTable
from .jobs import GuestTrainer, Job, jobs_running, parse_train_config, status_code_of, train_one_step
from .memory import GuestMemory, as_u64
from .paths import PathResolver

log = logging.getLogger("pyllmc.wasm")

INITIAL_SEQ = 64  #: capacity of a new model: 1 x min(64, max_seq_len) positions
SAMPLE_CHUNK = 8  #: tokens generated between two cancellation checks
WAIT_SLICE_S = 0.05  #: job_wait checks the guest's deadline this often
GPT2_TOKENIZER_BYTES = 64 << 20  #: budget charge of the GPT-2 BPE tokenizer


@dataclass
class ModelSlot:
    model: Any
    nbytes: int
    steps: int = 0  #: optimizer steps done (AdamW's t of the next train_step is steps + 1)
    job: Optional[Job] = None


@dataclass
class LoaderSlot:
    loader: Any
    nbytes: int
    job: Optional[Job] = None


@dataclass
class TokenizerSlot:
    tok: Any
    nbytes: int


@dataclass
class JobSlot:
    job: Job
    nbytes: int
    slots: List[Any] = field(default_factory=list)


#: host functions a watching guest calls in its loop: they run in the guest's SCHED_BATCH
sched_light = frozenset({"job_status", "last_error", "job_error"})


def _describe_with(to_guest: Callable[[str], str], staging: str, guest_out: str) -> Callable[[str], str]:
    """Messages of a job: its staging directory is named as the guest's out_dir."""
    return lambda text: to_guest(text.replace(staging, guest_out.rstrip("/") or "/"))


def _one_line(text: str) -> str:
    return " ".join(str(text).split()) if "\n" in str(text) or "\r" in str(text) else str(text)


class GuestContext:
    """What one guest instance owns; see the module docstring."""

    def __init__(self, resolver: PathResolver, *, max_host_memory: Optional[int] = None,
                 max_handles: Optional[int] = None, threads: int = 0, name: str = "guest"):
        self.name = name
        self.resolver = resolver
        self.handles = HandleTable(max_handles)
        self.budget = Budget(max_host_memory)
        self.threads = int(threads)
        self.last_error = ""
        self.expired = threading.Event()  # the guest's --timeout has passed
        self.lock = threading.RLock()  # handle table and busy flags (job threads end asynchronously)
        self.memory: Any = None  # the instance's exported memory, once instantiated (host.exported_memory)
        self.host_policy: Any = None  # the scheduling policy of the thread that runs the guest (pyllmc.wasm.sched)
        self.closed = False

    # ------------------------------------------------------------ dispatch
    def host_function(self, name: str) -> Callable[..., int]:
        """The Python callable wasmtime calls for import ``pyllmc.<name>`` (caller first)."""
        impl = getattr(self, "fn_" + name)
        if name == "abi_version":
            return lambda caller: abi.ABI_VERSION

        def host_fn(caller: Any, *args: Any) -> int:
            return self.dispatch(name, impl, caller, args)

        host_fn.__name__ = name
        return host_fn

    def dispatch(self, name: str, impl: Callable[..., None], caller: Any, args: Any) -> int:
        try:
            if self.expired.is_set():
                raise limit(f"{name}: the guest's time is up (--timeout)")
            if self.closed:
                raise GuestError(abi.BAD_STATE, f"{name}: the guest has ended")
            if name in sched_light:
                with self.lock:
                    impl(GuestMemory(caller, name, self.memory), *args)
            else:
                try:
                    with sched.host_work(self.host_policy), self.lock:
                        impl(GuestMemory(caller, name, self.memory), *args)
                finally:
                    if jobs_running():
                        # the OpenMP workers this call left idle would slow the job's own
                        # team (libgomp waits in the kernel past one thread per CPU)
                        release_threads()
            return abi.OK
        except GuestError as e:
            return self._fail(e.status, e.message)
        except (PyllmcError, OSError, MemoryError) as e:
            msg = str(e) or type(e).__name__
            return self._fail(status_code_of(e), f"{name}: {msg}")
        except Exception as e:  # a bug: report it as a status, never as a trap
            log.exception("pyllmc.wasm: internal error in host function %s", name)
            return self._fail(abi.BAD_STATE, f"{name}: internal error: {type(e).__name__}: {e}")

    def _fail(self, status: int, message: str) -> int:
        try:
            self.last_error = _one_line(self.resolver.to_guest(message))
        except Exception:
            self.last_error = _one_line(message)
        return int(status) if status else abi.BAD_STATE

    # ------------------------------------------------------------ helpers
    def _str(self, mem: GuestMemory, ptr: int, length: int, what: str) -> str:
        raw = mem.read(ptr, length, what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise invalid(f"{mem.call}: {what} is not UTF-8 ({e.reason} at byte {e.start})") from None

    def _room(self, call: str) -> None:
        h = self.handles
        if h.max_handles is not None and h.live >= h.max_handles:
            raise limit(f"{call}: {h.live} handles are live, the limit is {h.max_handles} (--max-handles)")

    def _idle(self, slot: Any, handle: int, what: str, call: str) -> None:
        j = getattr(slot, "job", None)
        if j is not None and j.running:
            raise busy(f"{call}: {what} {handle} is busy: a training job is using it (job_wait or job_stop first)")

    def _model(self, handle: int, call: str, what: str = "model") -> ModelSlot:
        slot = self.handles.get(handle, "model", call, what)
        self._idle(slot, handle, what, call)
        return slot

    def _loader(self, handle: int, call: str, what: str = "loader") -> LoaderSlot:
        slot = self.handles.get(handle, "loader", call, what)
        self._idle(slot, handle, what, call)
        return slot

    def _cancel_check(self, call: str) -> None:
        if self.expired.is_set():
            raise limit(f"{call}: the guest's time is up (--timeout)")

    def _new_model(self, make: Callable[[], Any], nbytes: int, call: str, what: str) -> ModelSlot:
        self._room(call)
        self.budget.charge(nbytes, call, what)
        try:
            model = make()
        except BaseException:
            self.budget.release(nbytes)
            raise
        return ModelSlot(model, nbytes)

    def ensure_capacity(self, slot: ModelSlot, batch: int, seq: int, call: str) -> None:
        """Grow ``slot``'s model to hold (batch, seq) if it cannot yet (module docstring)."""
        from ..model import Model

        m = slot.model
        cfg = m.config
        if seq > cfg.max_seq_len:
            raise invalid(f"{call}: sequence length {seq} exceeds the model's max_seq_len {cfg.max_seq_len}")
        opts = m.options
        cur_b, cur_t = opts.max_batch, opts.max_seq or cfg.max_seq_len
        if cur_b >= batch and cur_t >= seq:
            return
        nb, nt = max(batch, cur_b), max(seq, cur_t)
        nbytes = model_bytes(cfg, nb, nt, self.threads)
        self.budget.charge(nbytes, call, f"growing the model to batch {nb} x {nt} positions")
        try:
            new = Model.from_config(cfg, max_batch=nb, max_seq=nt, threads=opts.num_threads, seed=0)
            try:
                for kind in ("params", "adam_m", "adam_v"):
                    new.copy_from_host(kind, None, m.copy_to_host(kind))
            except BaseException:
                new.close()
                raise
        except BaseException:
            self.budget.release(nbytes)
            raise
        m.close()
        self.budget.release(slot.nbytes)
        slot.model, slot.nbytes = new, nbytes

    # ------------------------------------------------------------ error message
    def fn_last_error(self, mem: GuestMemory, buf: int, cap: int, out_len: int) -> None:
        data = self.last_error.encode("utf-8")
        mem.check(buf, cap, "buf")
        mem.check(out_len, 4, "out_len")
        mem.write(buf, data[:cap], "buf")
        mem.write_i32(out_len, len(data), "out_len")

    def fn_abi_version(self, mem: GuestMemory) -> None:  # answered in host_function
        return None

    # ------------------------------------------------------------ models
    def fn_model_create(self, mem: GuestMemory, config: int, seed: int, out_model: int) -> None:
        from ..model import GPTConfig, Model

        call = mem.call
        raw = mem.read(config, 24, "config")
        mem.check(out_model, 4, "out_model")
        vals = struct.unpack("<6i", raw)
        names = abi.MODEL_CONFIG_FIELDS
        for n, v in zip(names, vals):
            if v < 1:
                raise invalid(f"{call}: config.{n} = {v} must be >= 1")
        cfg = GPTConfig(*vals)
        if cfg.padded_vocab_size < cfg.vocab_size:
            raise invalid(f"{call}: padded_vocab_size {cfg.padded_vocab_size} is smaller than vocab_size {cfg.vocab_size}")
        if cfg.channels % cfg.num_heads:
            raise invalid(f"{call}: channels {cfg.channels} is not divisible by num_heads {cfg.num_heads}")
        seq = min(INITIAL_SEQ, cfg.max_seq_len)
        nbytes = model_bytes(cfg, 1, seq, self.threads)
        slot = self._new_model(lambda: Model.from_config(cfg, max_batch=1, max_seq=seq, threads=self.threads,
                                                         seed=as_u64(seed)), nbytes, call, "the model")
        self._register("model", slot, out_model, mem)

    def _register(self, kind: str, slot: Any, out: int, mem: GuestMemory) -> None:
        try:
            h = self.handles.add(kind, slot, mem.call)
        except BaseException:
            self._dispose(kind, slot)
            raise
        mem.write_i32(out, h, "out handle")

    def fn_model_load(self, mem: GuestMemory, path: int, path_len: int, out_model: int) -> None:
        from .._files import read_header_ints
        from ..model import GPTConfig, Model

        call = mem.call
        p = self._str(mem, path, path_len, "path")
        mem.check(out_model, 4, "out_model")
        real = self.resolver.read(p, call)
        h, _ = read_header_ints(real, "checkpoint", BadFormatError)
        maxT = int(h[2])
        hdr = [int(x) for x in h[2:8]]
        # header: maxT, V, L, NH, C, Vp -> estimate before loading (the C loader validates it)
        nbytes = OBJECT_BYTES
        seq = max(1, min(INITIAL_SEQ, maxT)) if maxT > 0 else None
        if all(v > 0 for v in hdr):
            guess = GPTConfig(hdr[0], hdr[1], max(hdr[5], hdr[1]), hdr[2], hdr[3], hdr[4])
            nbytes = model_bytes(guess, 1, seq or 1, self.threads)
        slot = self._new_model(lambda: Model.from_checkpoint(real, max_batch=1, max_seq=seq, threads=self.threads),
                               nbytes, call, "the checkpoint's model")
        actual = model_bytes(slot.model.config, 1, seq or slot.model.config.max_seq_len, self.threads)
        if actual > slot.nbytes:  # the file changed under us: charge the difference, or give up
            try:
                self.budget.charge(actual - slot.nbytes, call, "the checkpoint's model")
            except BaseException:
                self._dispose("model", slot)
                raise
            slot.nbytes = actual
        self._register("model", slot, out_model, mem)

    def fn_model_save(self, mem: GuestMemory, model: int, path: int, path_len: int) -> None:
        from ..atomic import atomic_path

        call = mem.call
        slot = self._model(model, call)
        p = self._str(mem, path, path_len, "path")
        target = self.resolver.write(p, call)
        with atomic_path(target) as tmp:
            slot.model.save(tmp)

    def fn_model_num_params(self, mem: GuestMemory, model: int, out: int) -> None:
        slot = self._model(model, mem.call)
        mem.check(out, 8, "out")
        mem.write_i64(out, slot.model.config.num_params(), "out")

    def fn_model_free(self, mem: GuestMemory, model: int) -> None:
        self._model(model, mem.call)
        slot = self.handles.remove(model, "model", mem.call)
        self._dispose("model", slot)

    # ------------------------------------------------------------ data
    def fn_dataloader_create(self, mem: GuestMemory, pattern: int, pattern_len: int, batch: int, seq: int,
                             shuffle: int, seed: int, out_loader: int) -> None:
        from ..data import DataLoader

        call = mem.call
        p = self._str(mem, pattern, pattern_len, "pattern")
        mem.check(out_loader, 4, "out_loader")
        if batch < 1 or seq < 1:
            raise invalid(f"{call}: batch and seq must be >= 1 (got batch {batch}, seq {seq})")
        if shuffle not in (0, 1):
            raise invalid(f"{call}: shuffle must be 0 or 1, got {shuffle}")
        paths = self.resolver.glob(p, call)
        self._room(call)
        nbytes = self.budget.charge(loader_bytes(batch, seq), call, f"a loader of batch {batch} x {seq}")
        try:
            loader = DataLoader(paths, batch, seq, shuffle=bool(shuffle), seed=as_u64(seed))
            loader.map_all()  # checked paths now; a job reading later must not re-walk them
        except BaseException:
            self.budget.release(nbytes)
            raise
        self._register("loader", LoaderSlot(loader, nbytes), out_loader, mem)

    def fn_dataloader_free(self, mem: GuestMemory, loader: int) -> None:
        self._loader(loader, mem.call)
        self._dispose("loader", self.handles.remove(loader, "loader", mem.call))

    # ------------------------------------------------------------ tokenizers
    def fn_tokenizer_load(self, mem: GuestMemory, spec: int, spec_len: int, out_tok: int) -> None:
        from ..tokenizer import load_tokenizer

        call = mem.call
        s = self._str(mem, spec, spec_len, "spec")
        mem.check(out_tok, 4, "out_tok")
        self._room(call)
        if s in ("byte", "gpt2"):
            src, nbytes = s, (OBJECT_BYTES if s == "byte" else GPT2_TOKENIZER_BYTES)
        else:
            src = self.resolver.read(s, call)
            if os.path.isdir(src):
                raise GuestError(abi.IO, f"{call}: {s}: is a directory, not a tokenizer.bin file")
            try:
                size = os.path.getsize(src)
            except OSError:
                size = 0
            nbytes = OBJECT_BYTES + 64 * size  # a Python bytes object per token
        self.budget.charge(nbytes, call, "the tokenizer")
        try:
            tok = load_tokenizer(src)
        except BaseException:
            self.budget.release(nbytes)
            raise
        self._register("tokenizer", TokenizerSlot(tok, nbytes), out_tok, mem)

    def fn_tokenizer_encode(self, mem: GuestMemory, tok: int, text: int, text_len: int, out_ids: int, cap: int,
                            out_n: int) -> None:
        call = mem.call
        t = self.handles.get(tok, "tokenizer", call).tok
        s = self._str(mem, text, text_len, "text")
        if cap < 0:
            raise invalid(f"{call}: negative cap {cap}")
        mem.check(out_ids, 4 * cap, "out_ids")
        mem.check(out_n, 4, "out_n")
        ids = t.encode(s)
        k = min(cap, len(ids))
        mem.write(out_ids, struct.pack(f"<{k}i", *ids[:k]), "out_ids")
        mem.write_i32(out_n, len(ids), "out_n")

    def fn_tokenizer_decode(self, mem: GuestMemory, tok: int, ids: int, n: int, out: int, cap: int,
                            out_len: int) -> None:
        call = mem.call
        t = self.handles.get(tok, "tokenizer", call).tok
        if n < 0:
            raise invalid(f"{call}: negative token count n = {n}")
        raw = mem.read(ids, 4 * n, "ids")
        if cap < 0:
            raise invalid(f"{call}: negative cap {cap}")
        mem.check(out, cap, "out")
        mem.check(out_len, 4, "out_len")
        data = t.decode(struct.unpack(f"<{n}i", raw)).encode("utf-8")
        mem.write(out, data[:cap], "out")
        mem.write_i32(out_len, len(data), "out_len")

    def fn_tokenizer_free(self, mem: GuestMemory, tok: int) -> None:
        self._dispose("tokenizer", self.handles.remove(tok, "tokenizer", mem.call))

    # ------------------------------------------------------------ training
    def fn_train_step(self, mem: GuestMemory, model: int, loader: int, lr: float, out_loss: int) -> None:
        call = mem.call
        slot = self._model(model, call)
        ls = self._loader(loader, call)
        mem.check(out_loss, 4, "out_loss")
        if not math.isfinite(lr) or lr < 0:
            raise invalid(f"{call}: lr must be a finite number >= 0, got {lr}")
        ld = ls.loader
        self.ensure_capacity(slot, ld.B, ld.T, call)
        step = slot.steps + 1
        loss = train_one_step(slot.model, ld, lr, step)
        slot.steps = step
        mem.write_f32(out_loss, loss, "out_loss")

    def fn_evaluate(self, mem: GuestMemory, model: int, loader: int, batches: int, out_loss: int) -> None:
        call = mem.call
        slot = self._model(model, call)
        ls = self._loader(loader, call)
        mem.check(out_loss, 4, "out_loss")
        if batches < 1:
            raise invalid(f"{call}: batches must be >= 1, got {batches}")
        ld = ls.loader
        self.ensure_capacity(slot, ld.B, ld.T, call)
        ld.reset()  # as Trainer.evaluate: the first `batches` batches of the loader
        total = 0.0
        for _ in range(batches):
            self._cancel_check(call)
            x, y = ld.next_batch()
            total += slot.model.forward(x, y)
        mem.write_f32(out_loss, total / batches, "out_loss")

    def fn_sample(self, mem: GuestMemory, model: int, tok: int, prompt: int, prompt_len: int, max_tokens: int,
                  temperature: float, top_k: int, seed: int, out: int, cap: int, out_len: int) -> None:
        from ..sampling import generate, make_rng

        call = mem.call
        slot = self._model(model, call)
        t = self.handles.get(tok, "tokenizer", call).tok
        text = self._str(mem, prompt, prompt_len, "prompt")
        if cap < 0:
            raise invalid(f"{call}: negative cap {cap}")
        mem.check(out, cap, "out")
        mem.check(out_len, 4, "out_len")
        if max_tokens < 0 or top_k < 0:
            raise invalid(f"{call}: max_tokens and top_k must be >= 0 (got {max_tokens}, {top_k})")
        if not math.isfinite(temperature):
            raise invalid(f"{call}: temperature must be finite, got {temperature}")
        cfg = slot.model.config
        if t.vocab_size > cfg.vocab_size:
            raise invalid(f"{call}: the tokenizer has {t.vocab_size} tokens, the model only {cfg.vocab_size}")
        if text:
            if not t.can_encode:
                raise UnsupportedError("this tokenizer can only decode, it cannot encode the prompt")
            ids = t.encode(text) or [t.eot_id]
        else:
            ids = [t.eot_id]
        self.ensure_capacity(slot, 1, min(cfg.max_seq_len, len(ids) + max_tokens), call)
        rng = make_rng(as_u64(seed))
        tokens, new = list(ids), []  # type: List[int], List[int]
        while len(new) < max_tokens:  # in chunks: the same draws as one call, with checks between
            self._cancel_check(call)
            chunk = generate(slot.model, tokens, min(SAMPLE_CHUNK, max_tokens - len(new)), temperature=temperature,
                             top_k=top_k, rng=rng)
            tokens += chunk
            new += chunk
        data = (text + t.decode(new)).encode("utf-8")
        mem.write(out, data[:cap], "out")
        mem.write_i32(out_len, len(data), "out_len")

    # ------------------------------------------------------------ jobs
    def fn_train_start(self, mem: GuestMemory, model: int, train_loader: int, val_loader: int, config_json: int,
                       config_len: int, out_job: int) -> None:
        from ..trainer import TrainerConfig

        call = mem.call
        slot = self._model(model, call)
        ts = self._loader(train_loader, call, "train_loader")
        vs = None
        if val_loader != 0:
            vs = self._loader(val_loader, call, "val_loader")
            if vs is ts:
                raise invalid(f"{call}: val_loader must not be the train_loader")
        raw = mem.read(config_json, config_len, "config_json")
        mem.check(out_job, 4, "out_job")
        kw = parse_train_config(raw, call)
        kw.setdefault("progress", "none")
        guest_out = kw.get("out_dir")
        tl = ts.loader
        cfg = TrainerConfig(data=list(tl.paths), val_data=list(vs.loader.paths) if vs else None, batch_size=tl.B,
                            seq_len=tl.T, shuffle=tl.shuffle, **kw)
        self._room(call)
        b = max(tl.B, vs.loader.B if vs else 1)
        s = max(tl.T, vs.loader.T if vs else 1)
        self.ensure_capacity(slot, b, s, call)
        if cfg.threads:
            slot.model.set_threads(cfg.threads)
        nbytes = self.budget.charge(JOB_BYTES, call, "the training job")
        trainer = None
        publisher = None
        describe: Callable[[str], str] = self.resolver.to_guest
        try:
            if guest_out is not None:
                if not outdir.supported():
                    raise UnsupportedError(f"{call}: out_dir needs descriptor-relative file calls, which this "
                                           "platform lacks")
                target = self.resolver.open_directory(guest_out, call)
                publisher = outdir.Publisher(target)
                if cfg.overwrite:
                    target.clear_run()
                elif target.holds_run():  # the Trainer's own check, on the guest's directory
                    raise GuestError(abi.IO, f"{call}: {guest_out}: already holds a run (checkpoints or "
                                             "metrics.jsonl); set \"overwrite\": true or use another out_dir")
                cfg = dataclasses.replace(cfg, out_dir=publisher.staging)
                describe = _describe_with(self.resolver.to_guest, publisher.staging, guest_out)
            trainer = GuestTrainer(cfg, slot.model, tl, vs.loader if vs else None, publisher)
            trainer.setup()  # errors in the settings, out_dir, or data come back here, not later
            job = Job(trainer, self._job_ended, describe)
            js = JobSlot(job, nbytes, [s_ for s_ in (slot, ts, vs) if s_ is not None])
            h = self.handles.add("job", js, call)
        except BaseException as e:
            if trainer is not None:
                trainer.close()
            if publisher is not None:
                publisher.close()
            self.budget.release(nbytes)
            if publisher is not None and isinstance(e, (PyllmcError, OSError)) and not isinstance(e, GuestError):
                # the Trainer's messages name the staging directory: the guest hears its out_dir
                raise GuestError(status_code_of(e), describe(f"{call}: {str(e) or type(e).__name__}")) from None
            raise
        for s_ in js.slots:
            s_.job = job
        job.model_slot = slot
        job.start()
        mem.write_i32(out_job, h, "out_job")

    def _job_ended(self, job: Job) -> None:
        """In the job's thread, after train() returned or raised: the handles are free again."""
        with self.lock:
            ms = getattr(job, "model_slot", None)
            if ms is not None:
                ms.steps = int(job.trainer.step)

    def _job(self, handle: int, call: str) -> JobSlot:
        return self.handles.get(handle, "job", call)

    def fn_job_status(self, mem: GuestMemory, job: int, out_status: int) -> None:
        js = self._job(job, mem.call)
        mem.write(out_status, js.job.status_bytes(), "out_status")  # checked before a byte moves

    def fn_job_wait(self, mem: GuestMemory, job: int, timeout_ms: int) -> None:
        call = mem.call
        js = self._job(job, call)
        if timeout_ms < -1:
            raise invalid(f"{call}: timeout_ms must be >= 0, or -1 for no limit (got {timeout_ms})")


        end = None if timeout_ms == -1 else time.monotonic() + timeout_ms / 1000.0
        self.lock.release()  # the job's end callback takes the lock: never wait holding it
        try:
            while True:
                left = WAIT_SLICE_S if end is None else min(WAIT_SLICE_S, end - time.monotonic())
                if js.job.wait(max(0.0, left)):
                    return
                self._cancel_check(call)
                if end is not None and time.monotonic() >= end:
                    raise busy(f"{call}: job {job} is still running after {timeout_ms} ms")
        finally:
            self.lock.acquire()

    def fn_job_error(self, mem: GuestMemory, job: int, buf: int, cap: int, out_len: int) -> None:
        js = self._job(job, mem.call)
        mem.check(buf, cap, "buf")
        mem.check(out_len, 4, "out_len")
        data = (js.job.error_message if not js.job.running else "").encode("utf-8")
        mem.write(buf, data[:cap], "buf")
        mem.write_i32(out_len, len(data), "out_len")

    def fn_job_stop(self, mem: GuestMemory, job: int) -> None:
        self._job(job, mem.call).job.stop()

    def fn_job_free(self, mem: GuestMemory, job: int) -> None:
        js = self._job(job, mem.call)
        self._stop_and_join(js.job)
        self.handles.remove(job, "job", mem.call)
        self._dispose("job", js)

    def _stop_and_join(self, job: Job) -> None:
        job.stop()
        self.lock.release()
        try:
            job.thread.join()
        finally:
            self.lock.acquire()

    # ------------------------------------------------------------ freeing
    def _dispose(self, kind: str, slot: Any) -> None:
        if kind == "model":
            slot.model.close()
        elif kind == "loader":
            slot.loader = None
        elif kind == "tokenizer":
            slot.tok = None
        elif kind == "job":
            for s in slot.slots:
                if s.job is slot.job:
                    s.job = None
            slot.job.trainer.model = None
        self.budget.release(slot.nbytes)

    def close(self) -> Dict[str, int]:
        """The guest has ended: stop and join its jobs, free everything; returns the counts
        of what was still held, by kind."""
        with self.lock:
            self.closed = True
            entries = list(self.handles.items())
            jobs = [obj.job for _, kind, obj in entries if kind == "job"]
            for j in jobs:
                j.stop()
            for j in jobs:
                self._stop_and_join(j)
            order = {"job": 0, "tokenizer": 1, "loader": 2, "model": 3}
            for _, kind, obj in sorted(entries, key=lambda e: order.get(e[1], 9)):
                try:
                    self._dispose(kind, obj)
                except Exception:
                    log.exception("pyllmc.wasm: freeing a %s of guest %s", kind, self.name)
            return self.handles.clear()

    def expire(self) -> None:
        """The guest's --timeout passed: every later call fails and its jobs stop."""
        self.expired.set()
        try:
            entries = list(self.handles.items())
        except Exception:  # the guest's thread changed the table meanwhile: its next call fails anyway
            entries = []
        for _, kind, obj in entries:
            if kind == "job":
                obj.job.stop()
