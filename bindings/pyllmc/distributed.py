"""Data-parallel training on torch.distributed (gloo on the CPU, NCCL on CUDA).

The Trainer joins a process group when the environment describes one (``torchrun`` sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``; so does
``pyllmc train --nproc N``, see ``pyllmc.launch``). Every rank runs the same Trainer:

- Data: the loader reads global batches of ``world * B`` rows and rank r keeps rows
  ``[r*B, (r+1)*B)``: the r-th B x T window of each world-sized step (llm.c's multi-process
  loader). Its state is global (the same on every rank), so a checkpoint holds one position.
- Gradients: each rank's backward uses loss scale ``1 / (K * world)``, so SUMMING the
  gradient buffers over ranks gives the gradient of the mean loss over all ``K * world * B * T``
  tokens. The sum runs on the C core's gradient buffer itself (``torch.from_numpy`` of its
  numpy view on the CPU, ``__cuda_array_interface__`` on CUDA: no copy).
- The update ("split", on the CPU with more than one rank, plain and ``zero=1`` alike): the
  flat parameter buffer is cut into ``world`` contiguous slices; the gradients are
  reduce-scattered (point to point, ``DistContext.reduce_scatter_sum``: rank r ends with the
  sum of slice r), the norm for clipping is the square root of the slices' summed sums of
  squares, each rank runs AdamW on its slice (``Model.adamw_step_range``), and the updated
  slices are all-gathered into every rank's parameters. Plain data parallel uses the model's
  own moments and re-syncs the other slices' moments before checkpoints and at the end of
  train() (``sync_moments``); on CUDA it all-reduces the gradients in buckets of
  ``BUCKET_FLOATS`` and every rank runs the whole AdamW (``PLAIN_DP_UPDATE``).
- ``zero=1``: rank r keeps AdamW m and v of slice r only (the model's own full-size moment
  buffers are never touched, so the OS never backs them with memory).
- Every ``check_every`` steps a checksum of the parameters (the sum of their 32-bit patterns)
  is compared across ranks; a difference is a ``DistributedError`` naming the ranks.
- Faults: the process group's timeout (``timeout`` seconds) bounds every collective; a
  collective that fails (a rank died: its sockets close) raises ``DistributedError`` naming
  the ranks that are gone (peers on this machine are checked by pid), and a watchdog thread
  ends a process stuck in one collective for longer than the timeout plus a grace period.
- Checkpoints: rank 0 writes model.bin and state.json; plain DP writes optimizer.bin once,
  ZeRO-1 writes one ``optimizer.rankR.bin`` per rank (the same format, holding that rank's
  slice), all into the same temporary directory, renamed by rank 0 after a barrier.
  A resume with another world size re-shards: every rank reads its new slice from the saved
  slices (or from a plain optimizer.bin), and the reverse.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import BadFormatError, InvalidArgumentError, PyllmcError, UnsupportedError

#: floats per asynchronous collective (32 MiB): all-reduce of d12's 498 MB gradients over
#: loopback measured 376 ms as one piece and 327 to 351 ms in 8M- or 32M-float pieces
BUCKET_FLOATS = 1 << 23
#: floats per point-to-point message of the reduce-scatter (4 MiB); it holds two such receive
#: chunks per peer. At d12 over loopback (2 ranks, medians of 6): 199 ms in 1 MiB messages,
#: 185 in 2 or 4 MiB, 196 in 8 MiB
RECV_CHUNK_FLOATS = 1 << 20
#: floats per message of the all-gather (1 MiB), which receives in place: 118 ms in 1 MiB
#: messages against 121 to 141 in 0.5, 2, 4 or 8 MiB (the same measurement)
GATHER_CHUNK_FLOATS = 1 << 18
#: slice boundaries are multiples of this many floats (64 bytes: whole cache lines)
SLICE_ALIGN = 16
#: How plain data parallel (zero=0) on the CPU updates the parameters. "split": reduce-scatter
#: the gradients, each rank runs AdamW on its slice (the model's own moments), all-gather the
#: parameters (ZeRO-1's step, without sharding the state); the other slices' moments are
#: brought up to date before a checkpoint and when train() ends. "all_reduce": all-reduce
#: the gradients and every rank runs the whole AdamW. Same results (the same gradient sums;
#: the norm summed slice by slice; bitwise equal in the tests). The split step does half the
#: AdamW per rank for about the all-reduce's traffic: at d12, 2 ranks x 1 thread, the fastest
#: steps measured 1709 to 1762 ms split against 1856 to 1890 ms all-reduce (shared machine;
#: see benchmarks/results/bench_dist_s2).
PLAIN_DP_UPDATE = "split"
#: the watchdog ends a process stuck in one collective this long after the group timeout
WATCHDOG_GRACE_S = 30.0

ENV_KEYS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class DistributedError(PyllmcError, RuntimeError):
    """A data-parallel run failed as a group: a rank ended, timed out, or diverged."""


def env_is_distributed(environ: Optional[Dict[str, str]] = None) -> bool:
    """True when the environment describes a process group (torchrun / pyllmc train --nproc)."""
    env = os.environ if environ is None else environ
    return "WORLD_SIZE" in env and "RANK" in env


def restart_count(environ: Optional[Dict[str, str]] = None) -> int:
    """How often torchrun has restarted the workers (TORCHELASTIC_RESTART_COUNT), else 0."""
    env = os.environ if environ is None else environ
    try:
        return int(env.get("TORCHELASTIC_RESTART_COUNT", "0"))
    except ValueError:
        return 0


def slice_bounds(num_params: int, world: int) -> List[Tuple[int, int]]:
    """(offset, count) of each rank's contiguous slice of the flat parameter buffer: as equal
    as the SLICE_ALIGN boundaries allow, covering [0, num_params) exactly."""
    cuts = [0]
    for r in range(1, world):
        cuts.append(min(num_params, (num_params * r // world) // SLICE_ALIGN * SLICE_ALIGN))
    cuts.append(num_params)
    return [(cuts[r], cuts[r + 1] - cuts[r]) for r in range(world)]


def param_checksum(params: np.ndarray) -> int:
    """Sum of the 32-bit patterns of the parameters (exact, order-independent): equal on two
    ranks unless their parameters differ (a change of any value changes it, barring
    cancellations that a desynchronised run does not produce)."""
    return int(params.view(np.uint32).sum(dtype=np.uint64))


# ---------------------------------------------------------------------- process group
class DistContext:
    """This process's place in the process group, and the collectives the Trainer uses,
    each wrapped so that a failure becomes a DistributedError naming the lost ranks."""

    def __init__(self, *, device: str = "cpu", timeout: float = 300.0):
        import torch.distributed as dist

        if not dist.is_available():
            raise UnsupportedError("this torch build has no torch.distributed")
        self.dist = dist
        self.device = device
        self.timeout = float(timeout)
        self.owns_group = False
        if not dist.is_initialized():
            from datetime import timedelta

            missing = [k for k in ENV_KEYS if k not in os.environ]
            if missing:
                raise InvalidArgumentError(
                    "data-parallel training needs the environment torchrun sets; missing " + ", ".join(missing))
            backend = "nccl" if device == "cuda" else "gloo"
            if backend == "gloo" and "GLOO_SOCKET_IFNAME" not in os.environ and \
                    os.environ.get("MASTER_ADDR") in ("127.0.0.1", "localhost"):
                os.environ["GLOO_SOCKET_IFNAME"] = "lo"  # one machine: stay on loopback
            kw: Dict[str, Any] = {}
            if device == "cuda":
                import torch

                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            try:
                kw["store"] = self._store(timedelta(seconds=self.timeout))
                kw.update(rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]))
                dist.init_process_group(backend, timeout=timedelta(seconds=self.timeout), **kw)
            except Exception as e:  # a rendezvous that never completes, a bad address, ...
                raise DistributedError(f"cannot join the process group ({backend}, "
                                       f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}): "
                                       f"{str(e).splitlines()[0][:300]}") from None
            self.owns_group = True
        self.rank = dist.get_rank()
        self.world = dist.get_world_size()
        self.backend = dist.get_backend()
        self._busy_since: Optional[float] = None
        self._busy_what = ""
        self._closed = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, name="pyllmc-dist-watchdog", daemon=True)
        self._watchdog.start()
        # who is who, so a failure can name the ranks that are gone
        me = (os.getpid(), socket.gethostname())
        peers: List[Any] = [None] * self.world
        self._run("exchange of pids", lambda: dist.all_gather_object(peers, me))
        self.peers: List[Tuple[int, str]] = [(int(p[0]), str(p[1])) for p in peers]

    def _store(self, timeout: Any) -> Any:
        """The rendezvous store, its keys under a prefix per torchrun attempt: the restarted
        workers of torchrun --max-restarts otherwise read the gloo addresses the previous
        attempt's (dead) workers left in the agent's store, and time out connecting to them
        (seen with torch 2.13, gloo, the static and the c10d rendezvous alike)."""
        dist = self.dist
        agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"  # torchrun hosts it
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        base = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                             is_master=rank == 0 and not agent, timeout=timeout, wait_for_workers=False)
        return dist.PrefixStore(f"pyllmc/attempt{restart_count()}", base)

    # -------------------------------------------------------------- failure handling
    def _watch(self) -> None:
        limit = self.timeout + WATCHDOG_GRACE_S
        while not self._closed.wait(1.0):
            since = self._busy_since
            if since is not None and time.monotonic() - since > limit:
                sys.stderr.write(f"pyllmc: error: rank {self.rank}: {self._busy_what} has not completed in "
                                 f"{limit:.0f} s (group timeout {self.timeout:g} s); ending this process\n")
                sys.stderr.flush()
                os._exit(3)

    def lost_ranks(self) -> List[int]:
        """Ranks on this machine whose process no longer exists."""
        host = socket.gethostname()
        gone = []
        for r, (pid, h) in enumerate(getattr(self, "peers", [])):
            if r == self.rank or h != host:
                continue
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                gone.append(r)
            except PermissionError:
                pass
        return gone

    def _run(self, what: str, fn: Callable[[], Any]) -> Any:
        self._busy_what, self._busy_since = what, time.monotonic()
        try:
            return fn()
        except Exception as e:  # gloo: RuntimeError / DistBackendError with a long message
            if isinstance(e, PyllmcError):
                raise
            time.sleep(0.2)  # a peer that just died: let its pid disappear
            gone = self.lost_ranks()
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            if gone:
                who = ", ".join(f"rank {r} (pid {self.peers[r][0]})" for r in gone)
                msg = f"rank {self.rank}: {what} failed: {who} ended"
            else:
                msg = (f"rank {self.rank}: {what} failed: another rank ended or did not answer within "
                       f"{self.timeout:g} s ({first})")
            raise DistributedError(msg) from None
        finally:
            self._busy_since = None

    def close(self) -> None:
        self._closed.set()
        if self.owns_group and self.dist.is_initialized():
            try:
                self.dist.destroy_process_group()
            except Exception:
                pass
            self.owns_group = False

    # -------------------------------------------------------------- collectives
    def barrier(self, what: str = "barrier") -> None:
        if self.world > 1:
            self._run(what, lambda: self.dist.barrier())

    def all_gather_floats(self, value: Any, what: str) -> List[Any]:
        """``value`` (a float, or a list of floats) of every rank, in rank order (float64)."""
        import torch

        vals = [float(v) for v in value] if isinstance(value, (list, tuple)) else [float(value)]
        if self.world == 1:
            rows = [vals]
        else:
            dev = "cuda" if self.device == "cuda" else "cpu"
            mine = torch.tensor(vals, dtype=torch.float64, device=dev)
            out = torch.empty(self.world * len(vals), dtype=torch.float64, device=dev)
            self._run(what, lambda: self._gather(out, mine))
            flat = [float(x) for x in out.cpu().tolist()]
            rows = [flat[r * len(vals): (r + 1) * len(vals)] for r in range(self.world)]
        return rows if isinstance(value, (list, tuple)) else [r[0] for r in rows]

    def all_gather_ints(self, value: int, what: str) -> List[int]:
        import torch

        if self.world == 1:
            return [int(value)]
        dev = "cuda" if self.device == "cuda" else "cpu"
        mine = torch.tensor([value], dtype=torch.int64, device=dev)
        out = torch.empty(self.world, dtype=torch.int64, device=dev)
        self._run(what, lambda: self._gather(out, mine))
        return [int(x) for x in out.cpu().tolist()]

    def _gather(self, out, mine) -> None:
        # all_gather_single is the newer name of all_gather_into_tensor (deprecated in 2.13)
        fn = getattr(self.dist, "all_gather_single", None) or self.dist.all_gather_into_tensor
        fn(out, mine)

    def sum_float(self, value: float, what: str) -> float:
        """The sum over ranks of one double (the same bits on every rank)."""
        return float(sum(self.all_gather_floats(value, what)))

    def from_rank0(self, value: Any, what: str) -> Any:
        """Rank 0's ``value`` on every rank (a picklable object)."""
        if self.world == 1:
            return value
        box = [value if self.rank == 0 else None]
        self._run(what, lambda: self.dist.broadcast_object_list(box, src=0))
        return box[0]

    def buffer(self, model: Any, kind: str):
        """The whole ``kind`` buffer of the C model as a torch tensor sharing its memory."""
        return model.torch_view(kind)

    def all_reduce_sum(self, t, what: str) -> None:
        """In-place sum over ranks of a 1-D tensor, in asynchronous buckets."""
        if self.world == 1:
            return
        n = t.numel()

        def go():
            works = [self.dist.all_reduce(t[o: o + BUCKET_FLOATS], async_op=True) for o in range(0, n, BUCKET_FLOATS)]
            for w in works:
                w.wait()
        self._run(what, go)

    def reduce_scatter_sum(self, t, bounds: Sequence[Tuple[int, int]], what: str,
                           add: Optional[Callable[[int, Any], float]] = None) -> Optional[float]:
        """Slice r of ``t`` summed over ranks into rank r's ``t`` (the other slices of ``t`` are
        left as they were: this rank's own, unreduced values): a reduce-scatter in place.
        ``add(offset, chunk)``, when given, does each ``t[offset:offset + len(chunk)] += chunk``
        instead and returns the sum of squares of the result (Model.grad_add_range); the
        call then returns the sum of squares of this rank's reduced slice (chunk sums added
        in order), else None.

        Point to point, not gloo's collectives: each rank sends every peer that peer's slice
        (straight from ``t``, in chunks) and adds the chunks of its own slice that arrive, in
        rank order, into ``t``; two receive chunks per peer are in flight. Over loopback at
        d12 (2 ranks, 498 MB) this took 248 to 364 ms, against 466 to 591 ms for one gloo
        reduce per slice chunk and 431 to 489 ms for the whole all-reduce. With 2 ranks the
        sum is a + b on both slices, bitwise what gloo's all-reduce gives."""
        if self.world == 1:
            return None
        import torch

        dist, me = self.dist, self.rank
        peers = [r for r in range(self.world) if r != me]
        off, cnt = bounds[me]
        ch = RECV_CHUNK_FLOATS
        nchunks = (cnt + ch - 1) // ch

        def go():
            sends = []
            for r in peers:
                o_r, c_r = bounds[r]
                for k, o in enumerate(range(0, c_r, ch)):
                    sends.append(dist.isend(t[o_r + o: o_r + min(o + ch, c_r)], dst=r, tag=k))
            size = min(ch, cnt)
            bufs = {r: (torch.empty(size, dtype=t.dtype, device=t.device),
                        torch.empty(size, dtype=t.dtype, device=t.device)) for r in peers}

            def post(k):
                n = min(ch, cnt - k * ch)
                return [dist.irecv(bufs[r][k % 2][:n], src=r, tag=k) for r in peers]
            pending = post(0) if nchunks else []
            sumsq = 0.0
            for k in range(nchunks):
                following = post(k + 1) if k + 1 < nchunks else []
                for w in pending:
                    w.wait()
                lo, hi = off + k * ch, off + min((k + 1) * ch, cnt)
                for r in peers:  # rank order: the same sum whichever chunk arrived first
                    if add is None:
                        t[lo:hi] += bufs[r][k % 2][: hi - lo]
                    else:  # the sum of squares after the last peer's add is the chunk's
                        last = add(lo, bufs[r][k % 2][: hi - lo])
                if add is not None:
                    sumsq += last
                pending = following
            for w in sends:
                w.wait()
            return sumsq if add is not None else None
        return self._run(what, go)

    def all_gather_slices(self, t, bounds: Sequence[Tuple[int, int]], what: str) -> None:
        """Every rank's slice of ``t`` from its owner to all (an all-gather in place), point to
        point: each rank sends its slice to every peer and receives theirs straight into ``t``
        (120 to 164 ms at d12 over loopback, against 173 to 238 ms for one gloo broadcast per
        slice chunk; no staging memory)."""
        if self.world == 1:
            return
        dist, me = self.dist, self.rank
        ch = GATHER_CHUNK_FLOATS

        def go():
            works = []
            off, cnt = bounds[me]
            for r in range(self.world):
                if r == me:
                    continue
                o_r, c_r = bounds[r]
                for k, o in enumerate(range(0, c_r, ch)):
                    works.append(dist.irecv(t[o_r + o: o_r + min(o + ch, c_r)], src=r, tag=k))
                for k, o in enumerate(range(0, cnt, ch)):
                    works.append(dist.isend(t[off + o: off + min(o + ch, cnt)], dst=r, tag=k))
            for w in works:
                w.wait()
        self._run(what, go)


# ---------------------------------------------------------------------- data
class RankLoader:
    """A DataLoader over global batches of ``world * B`` rows of which this rank keeps its
    ``B``: rank r reads the r-th B x T window of every world-sized step. The state (position
    in the data) is the global loader's, identical on every rank; it records the per-rank
    ``B`` and the world size, and loads into any world size (positions count tokens or
    windows, not batches)."""

    def __init__(self, shards: Sequence[str], B: int, T: int, *, rank: int, world: int, **kw: Any):
        from .data import DataLoader

        self.B, self.T, self.rank, self.world = int(B), int(T), int(rank), int(world)
        self.inner = DataLoader(shards, self.B * self.world, T, **kw)

    def next_batch(self) -> Tuple[np.ndarray, np.ndarray]:
        x, y = self.inner.next_batch()
        lo, hi = self.rank * self.B, (self.rank + 1) * self.B
        return np.ascontiguousarray(x[lo:hi]), np.ascontiguousarray(y[lo:hi])

    def state(self) -> Dict[str, Any]:
        s = dict(self.inner.state())
        s["B"] = self.B
        s["world_size"] = self.world
        return s

    def load_state(self, state: Dict[str, Any]) -> None:
        s = dict(state)
        s.pop("world_size", None)
        if "B" in s and s["B"] != self.B:
            raise InvalidArgumentError(f"data loader state was saved with B = {s['B']}, this loader has B = {self.B}")
        s["B"] = self.B * self.world
        self.inner.load_state(s)

    def __getattr__(self, name: str) -> Any:  # shards, num_tokens, batches_served, reset, ...
        return getattr(self.inner, name)


# ---------------------------------------------------------------------- the data-parallel step
class AgreedStop:
    """Stands in for the Trainer's stop event in a process group: ``set()`` (a stop request)
    is only noted; ``is_set()`` is true once the ranks have exchanged the request (with the
    next step's loss, so the run ends one step after the request, on every rank at the same
    step), or when ``stop_at`` is reached (the same step everywhere by construction)."""

    def __init__(self, trainer: Any, pending: bool = False):
        self._trainer = trainer
        self.pending = pending
        self.agreed = False

    def set(self) -> None:
        self.pending = True

    def clear(self) -> None:
        self.pending = self.agreed = False

    def is_set(self) -> bool:
        cfg = self._trainer.config
        at = cfg.stop_at is not None and self._trainer.step >= cfg.stop_at and self._trainer.step < cfg.steps
        return self.agreed or at



@dataclass
class DPOptions:
    zero: int = 0  #: 0 = plain data parallel, 1 = ZeRO stage 1 (AdamW state sharded)
    check_every: int = 100  #: parameter checksum across ranks every N steps (0 = never)
    timeout: float = 300.0  #: seconds a collective may take before the run fails


class DataParallel:
    """The data-parallel parts of one Trainer (see the module docstring)."""

    def __init__(self, ctx: DistContext, options: DPOptions):
        self.ctx = ctx
        self.opt = options
        self.rank, self.world = ctx.rank, ctx.world
        self.model: Any = None
        self.bounds: List[Tuple[int, int]] = []
        self.adam_m: Optional[np.ndarray] = None  # ZeRO-1: this rank's slice of the moments
        self.adam_v: Optional[np.ndarray] = None
        self._grads = None
        self._params = None
        self.comm_s = 0.0  #: seconds spent in gradient/parameter collectives (for benchmarks)
        self._moments_behind = False  #: plain DP, split update: other ranks' slices of adam_m/v are stale
        #: the sum of squares of this rank's reduced gradient slice, from the reduce-scatter
        self._slice_sumsq: Optional[float] = None

    @property
    def primary(self) -> bool:
        return self.rank == 0

    @property
    def my_slice(self) -> Tuple[int, int]:
        return self.bounds[self.rank]

    def attach(self, model: Any) -> None:
        """Bind to the run's model (after creation or a checkpoint load)."""
        if self.opt.zero and getattr(model, "device", "cpu") != "cpu":
            raise UnsupportedError("zero=1 (sharded AdamW state) needs a CPU model; use zero=0 on CUDA")
        self.model = model
        self._moments_behind = False
        n = int(model.config.num_params())
        self.bounds = slice_bounds(n, self.world)
        self._grads = self.ctx.buffer(model, "grads")
        self._params = self.ctx.buffer(model, "params")
        if self.opt.zero and self.adam_m is None:
            cnt = self.my_slice[1]
            self.adam_m = np.zeros(cnt, dtype=np.float32)
            self.adam_v = np.zeros(cnt, dtype=np.float32)

    def loader(self, shards: Sequence[str], B: int, T: int, **kw: Any) -> RankLoader:
        return RankLoader(shards, B, T, rank=self.rank, world=self.world, **kw)

    # -------------------------------------------------------------- per step
    def loss_scale(self, K: int) -> float:
        return 1.0 / (K * self.world)

    def bind(self, trainer: Any) -> None:
        """Stop requests (Ctrl-C, a callback, trainer.stop() from a thread) arrive on one rank
        at any moment; acted on there alone they would make the ranks leave the loop or save at
        different steps. So the trainer's stop event becomes an AgreedStop: a request is
        exchanged with the next step's loss and takes effect on every rank together."""
        self._stop = AgreedStop(trainer, trainer._stop_event.is_set())
        trainer._stop_event = self._stop

    def agree_on_loss(self, loss: float, fault: Any, step: int, K: int) -> Tuple[float, Any]:
        """The global mean loss (every rank's mean over its K micro-batches, averaged), and a
        fault on every rank when any rank's loss was non-finite (naming that rank). Carries
        the ranks' stop requests too (see bind)."""
        stop = getattr(self, "_stop", None)
        rows = self.ctx.all_gather_floats([loss if fault is None else float("nan"),
                                           1.0 if stop is not None and stop.pending else 0.0],
                                          f"step {step}: loss exchange")
        losses = [r[0] for r in rows]
        if stop is not None and any(r[1] for r in rows):
            stop.agreed = True
        bad = [r for r, v in enumerate(losses) if not math.isfinite(v)]
        if not bad:
            return (sum(losses) / self.world if self.world > 1 else losses[0]), None
        if fault is None:
            from .numerics import NonFiniteReport

            fault = NonFiniteReport(step=step, what="loss", value=float("nan"), first=None, micro_batches=K)
        who = ", ".join(str(r) for r in bad)
        fault.note = (fault.note + "; " if fault.note else "") + f"non-finite loss on rank {who} of {self.world}"
        return float("nan"), fault

    @property
    def split_update(self) -> bool:
        """True when each rank updates only its slice of the parameters: always with ZeRO-1,
        and for plain data parallel on the CPU with more than one rank unless
        PLAIN_DP_UPDATE is "all_reduce" (see there)."""
        if self.opt.zero:
            return True
        return self.world > 1 and getattr(self.model, "device", "cpu") == "cpu" and PLAIN_DP_UPDATE == "split"

    def reduce_gradients(self, step: int) -> None:
        t0 = time.perf_counter()
        if self.split_update:
            m = self.model

            def add(offset: int, chunk: Any) -> float:
                return m.grad_add_range(offset, chunk.numel(), chunk.numpy())
            self._slice_sumsq = self.ctx.reduce_scatter_sum(self._grads, self.bounds,
                                                            f"step {step}: gradient reduce-scatter", add=add)
        else:
            self.ctx.all_reduce_sum(self._grads, f"step {step}: gradient all-reduce")
        self.comm_s += time.perf_counter() - t0

    def grad_norm(self, step: int) -> float:
        m = self.model
        if not self.split_update:
            return m.grad_norm()  # every rank holds the summed gradient
        sumsq, self._slice_sumsq = self._slice_sumsq, None
        if sumsq is None:  # one rank: nothing was reduced
            sumsq = m.grad_sumsq_range(*self.my_slice)
        total = self.ctx.sum_float(sumsq, f"step {step}: gradient norm")
        return float(np.float32(math.sqrt(total))) if math.isfinite(total) else float("nan")

    def adamw_step(self, lr: float, *, t: int, **hp: Any) -> None:
        m = self.model
        if not self.split_update:
            m.adamw_step(lr, t=t, **hp)
            return
        off, cnt = self.my_slice
        if self.opt.zero:
            m.adamw_step_range(lr, t=t, offset=off, count=cnt, adam_m=self.adam_m, adam_v=self.adam_v, **hp)
        else:  # plain DP: the model's own moments, of which only this slice is now current
            m.adamw_step_range(lr, t=t, offset=off, count=cnt, **hp)
            self._moments_behind = True
        # (running AdamW chunk by chunk inside the all-gather, each chunk sent once updated,
        # measured no faster: fastest steps 1718 against 1705 ms at d12)
        t0 = time.perf_counter()
        self.ctx.all_gather_slices(self._params, self.bounds, f"step {t}: parameter all-gather")
        self.comm_s += time.perf_counter() - t0

    def sync_moments(self, what: str) -> None:
        """Plain data parallel with the split update: bring every rank's full AdamW moments up
        to date (each slice from its owner), so that every rank holds the whole optimizer
        state again, as plain data parallel promises. Called before a checkpoint is written
        and when train() ends; a no-op when nothing changed since."""
        if not self._moments_behind:
            return
        t0 = time.perf_counter()
        for kind in ("adam_m", "adam_v"):
            self.ctx.all_gather_slices(self.ctx.buffer(self.model, kind), self.bounds, f"{what}: {kind} all-gather")
        self._moments_behind = False
        self.comm_s += time.perf_counter() - t0

    def check_parameters(self, step: int, force: bool = False) -> None:
        """Every ``check_every`` steps: the same parameters on every rank, or DistributedError."""
        if self.world == 1 or not (force or (self.opt.check_every and step % self.opt.check_every == 0)):
            return
        sums = self.ctx.all_gather_ints(param_checksum(self.model.flat("params")), f"step {step}: parameter checksum")
        odd = [r for r, s in enumerate(sums) if s != sums[0]]
        if odd:
            raise DistributedError(
                f"step {step}: the parameters differ across ranks: rank {', '.join(map(str, odd))} "
                f"disagree(s) with rank 0 (checksums {', '.join(f'{s:x}' for s in sums)})")

    # -------------------------------------------------------------- checkpoints
    def save_checkpoint(self, model: Any, directory: Any, step: int, state: Dict[str, Any], *,
                        keep_last: int) -> str:
        """Every rank calls this. Rank 0 writes model.bin, state.json (and optimizer.bin for
        plain DP); with ZeRO-1 every rank writes optimizer.rankR.bin into the same temporary
        directory; rank 0 renames it when all are written."""
        from .checkpoint import checkpoint_name, fsync_dir, save_checkpoint, write_optimizer_state

        d = Path(directory)
        self.sync_moments(f"step {step}: checkpoint")
        state = dict(state)
        state["world_size"] = self.world
        state["zero"] = int(self.opt.zero)
        if not self.opt.zero:
            path = None
            if self.primary:
                path = str(save_checkpoint(model, d, step, state, keep_last=keep_last))
            self.ctx.barrier(f"step {step}: checkpoint")
            return path or str(d / checkpoint_name(step))
        # ZeRO-1: one temporary directory that every rank writes its slice into
        # not named .ckpt_*: save_checkpoint removes those as stale temporaries
        tmp = d / f".shards_{checkpoint_name(step)}"
        if self.primary:
            d.mkdir(parents=True, exist_ok=True)
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir()
        self.ctx.barrier(f"step {step}: checkpoint directory")
        err = ""
        try:
            write_optimizer_state(tmp / f"optimizer.rank{self.rank}.bin", self.adam_m, self.adam_v, step)
        except OSError as e:
            err = str(e)
        oks = self.ctx.all_gather_ints(0 if err else 1, f"step {step}: checkpoint shards")
        if not all(oks):
            bad = [r for r, ok in enumerate(oks) if not ok]
            raise DistributedError(f"step {step}: rank {', '.join(map(str, bad))} could not write its optimizer "
                                   f"shard" + (f": {err}" if err else ""))
        state["optimizer_shards"] = [[off, cnt] for off, cnt in self.bounds]
        path = str(d / checkpoint_name(step))
        if self.primary:
            files = [f"optimizer.rank{r}.bin" for r in range(self.world)]

            def write_shards(_path, _m, _v, _step):  # the slices are already there
                for f in files:
                    shutil.move(str(tmp / f), str(Path(_path).parent / f))

            path = str(save_checkpoint(model, d, step, state, keep_last=keep_last, _write_optimizer=write_shards))
            shutil.rmtree(tmp, ignore_errors=True)
            fsync_dir(d)
        self.ctx.barrier(f"step {step}: checkpoint")
        return path

    def load_checkpoint(self, path: Any, *, max_batch: int, max_seq: Optional[int], threads: int,
                        device: str, precision: str = "fp32") -> Tuple[Any, Dict[str, Any]]:
        """(model, state) of a checkpoint written by any world size, with or without ZeRO-1:
        the parameters, and the AdamW moments this rank keeps (all of them, or its slice)."""
        from .checkpoint import read_state
        from .model import Model

        p = Path(path)
        state = read_state(p)
        model = Model.from_checkpoint(p / "model.bin", max_batch=max_batch, max_seq=max_seq, threads=threads,
                                      device=device, precision=precision)
        try:
            n = int(model.config.num_params())
            self.bounds = slice_bounds(n, self.world)
            want = self.my_slice if self.opt.zero else (0, n)
            m, v = read_moments(p, state, n, want)
            if self.opt.zero:
                self.adam_m, self.adam_v = m, v
            else:
                model.copy_from_host("adam_m", None, m)
                model.copy_from_host("adam_v", None, v)
        except BaseException:
            model.close()
            raise
        saved_world = int(state.get("world_size", 1))
        if saved_world != self.world and self.primary:
            print(f"note: {p} was written by {saved_world} rank(s), now {self.world}: optimizer state re-sharded; "
                  f"the global batch changes, so results differ from an uninterrupted run", flush=True)
        return model, state


def read_moments(ckpt: Path, state: Dict[str, Any], num_params: int, want: Tuple[int, int]
                 ) -> Tuple[np.ndarray, np.ndarray]:
    """adam_m and adam_v of the parameters [off, off + cnt) from a checkpoint directory:
    its optimizer.bin, or the optimizer.rankR.bin slices of a ZeRO-1 run (any world size).
    Only the wanted values are read (memory-mapped)."""
    from .checkpoint import HEADER_BYTES

    off, cnt = want
    shards = state.get("optimizer_shards")
    if shards is None:
        path = ckpt / "optimizer.bin"
        _check_opt(path, num_params)
        mm = np.memmap(path, dtype="<f4", mode="r", offset=HEADER_BYTES, shape=(2 * num_params,))
        return (np.array(mm[off: off + cnt], dtype=np.float32), np.array(mm[num_params + off: num_params + off + cnt],
                                                                          dtype=np.float32))
    if not (isinstance(shards, list) and all(isinstance(s, list) and len(s) == 2 for s in shards)):
        raise BadFormatError(f"{ckpt / 'state.json'}: 'optimizer_shards' must be a list of [offset, count]")
    if sum(int(c) for _, c in shards) != num_params:
        raise BadFormatError(f"{ckpt / 'state.json'}: optimizer shards cover {sum(int(c) for _, c in shards)} "
                             f"parameters, the model has {num_params}")
    m = np.zeros(cnt, dtype=np.float32)
    v = np.zeros(cnt, dtype=np.float32)
    for r, (s_off, s_cnt) in enumerate(shards):
        lo, hi = max(off, int(s_off)), min(off + cnt, int(s_off) + int(s_cnt))
        if lo >= hi:
            continue
        path = ckpt / f"optimizer.rank{r}.bin"
        _check_opt(path, int(s_cnt))
        mm = np.memmap(path, dtype="<f4", mode="r", offset=HEADER_BYTES, shape=(2 * int(s_cnt),))
        a, b = lo - int(s_off), hi - int(s_off)
        m[lo - off: hi - off] = mm[a:b]
        v[lo - off: hi - off] = mm[int(s_cnt) + a: int(s_cnt) + b]
        del mm
    return m, v


def _check_opt(path: Path, count: int) -> None:
    """Header and size of an optimizer file holding ``count`` parameters, without reading it."""
    from ._files import read_header_ints
    from .checkpoint import HEADER_BYTES, OPTIMIZER_MAGIC, OPTIMIZER_VERSION

    h, size = read_header_ints(str(path), "optimizer state", BadFormatError, HEADER_BYTES)
    if int(h[0]) != OPTIMIZER_MAGIC or int(h[1]) != OPTIMIZER_VERSION:
        raise BadFormatError(f"{path}: not a pyllmc optimizer state (magic/version)")
    n = int(h[4:6].copy().view("<i8")[0])
    if n != count or size != HEADER_BYTES + 8 * n:
        raise BadFormatError(f"{path}: holds {n} parameters ({size} bytes), expected {count}")


def from_config(config: Any, trainer: Any = None) -> Optional[DataParallel]:
    """The DataParallel of a Trainer run (bound to ``trainer``), or None when no process
    group is described (nor already initialised)."""
    try:
        import torch.distributed as dist

        initialised = dist.is_available() and dist.is_initialized()
    except ImportError:
        initialised = False
    if not (initialised or env_is_distributed()):
        if getattr(config, "zero", 0):
            raise InvalidArgumentError("zero=1 shards the optimizer state across data-parallel ranks: start the run "
                                       "with torchrun or pyllmc train --nproc N")
        return None
    try:
        import torch  # noqa: F401
    except ImportError:
        raise UnsupportedError("data-parallel training needs torch (pip install 'pyllmc[torch]')") from None
    ctx = DistContext(device=str(config.device), timeout=float(config.dist_timeout))
    dp = DataParallel(ctx, DPOptions(zero=int(config.zero), check_every=int(config.dist_check_every),
                                     timeout=float(config.dist_timeout)))
    if trainer is not None:
        dp.bind(trainer)
    return dp
