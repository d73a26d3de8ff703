"""Probe for data-parallel training on one machine: what do the gradient collectives cost,
and how much of a gloo all-reduce hides behind a concurrent 1-thread C-core backward?

Two ranks (pyllmc.launch, gloo over 127.0.0.1), each with a d12 model at B=4 T=64 on 1
thread, and a second 498 MB float buffer that the backward does not write. Each repeat
times, after a barrier, in this order:

- ``allreduce``: DistContext.all_reduce_sum of the buffer (gloo, 32 MiB async buckets);
- ``reduce_scatter`` / ``all_gather``: DistContext.reduce_scatter_sum / all_gather_slices
  (point to point, what the data-parallel update step uses);
- ``gloo_reduce`` / ``gloo_broadcast``: one gloo reduce / broadcast per slice chunk (the
  previous ZeRO-1 collectives, for comparison);
- ``adamw`` / ``adamw_half``: the whole AdamW, and AdamW on one rank's slice;
- ``backward``: the backward alone (after a forward);
- ``backward_then_allreduce``: the backward, then the all-reduce;
- ``overlap``: the all-reduce's buckets launched asynchronously, then the backward, then the
  wait.

``hidden`` = (backward + allreduce - overlap) / allreduce of the same repeat: the share of
the all-reduce that the overlap hid (0: none, 1: all). Rank 0 prints each repeat (with the
load average) and the min and median over the repeats after the first.

Run (heavy, ~5 GB, both cores):
    flock /tmp/pyllmc-heavy.lock python benchmarks/dist_overlap_probe.py --repeats 6
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Callable, Dict, List


def rank_main(repeats: int) -> None:
    import numpy as np
    import torch

    from pyllmc import Model
    from pyllmc.distributed import BUCKET_FLOATS, DistContext, slice_bounds

    torch.set_num_threads(1)
    ctx = DistContext(timeout=300.0)
    dist, rank = ctx.dist, ctx.rank
    m = Model.from_config("d12", max_batch=4, max_seq=64, threads=1, seed=0)
    rng = np.random.default_rng(rank)
    x = rng.integers(0, 50257, size=(4, 64)).astype(np.int32)
    y = rng.integers(0, 50257, size=(4, 64)).astype(np.int32)
    buf = torch.ones(m.torch_view("grads").numel())
    n = buf.numel()
    bounds = slice_bounds(n, ctx.world)
    off, cnt = bounds[rank]
    res: Dict[str, List[float]] = {}

    def timed(name: str, fn: Callable[[], object]) -> float:
        dist.barrier()
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        res.setdefault(name, []).append(dt)
        return dt

    def gloo_per_slice(op: str) -> None:
        works = []
        for r, (o0, c0) in enumerate(bounds):
            for o in range(o0, o0 + c0, BUCKET_FLOATS):
                piece = buf[o: min(o + BUCKET_FLOATS, o0 + c0)]
                works.append(dist.reduce(piece, dst=r, async_op=True) if op == "reduce" else
                             dist.broadcast(piece, src=r, async_op=True))
        for w in works:
            w.wait()

    def overlap() -> None:
        works = [dist.all_reduce(buf[o: o + BUCKET_FLOATS], async_op=True) for o in range(0, n, BUCKET_FLOATS)]
        m.backward(0.5, accumulate=False)
        for w in works:
            w.wait()

    for it in range(repeats):
        timed("allreduce", lambda: ctx.all_reduce_sum(buf, "probe all-reduce"))
        timed("reduce_scatter", lambda: ctx.reduce_scatter_sum(buf, bounds, "probe reduce-scatter"))
        timed("all_gather", lambda: ctx.all_gather_slices(buf, bounds, "probe all-gather"))
        timed("gloo_reduce", lambda: gloo_per_slice("reduce"))
        timed("gloo_broadcast", lambda: gloo_per_slice("broadcast"))
        step = it + 1
        timed("adamw", lambda: m.adamw_step(1e-6, t=step))  # noqa: B023 (called at once)
        timed("adamw_half", lambda: m.adamw_step_range(1e-6, t=step, offset=off, count=cnt))  # noqa: B023
        m.forward(x, y)
        timed("backward", lambda: m.backward(0.5, accumulate=False))
        m.forward(x, y)
        timed("backward_then_allreduce", lambda: (m.backward(0.5, accumulate=False),
                                                  ctx.all_reduce_sum(buf, "probe all-reduce")))
        m.forward(x, y)
        timed("overlap", overlap)
        res.setdefault("hidden", []).append(
            (res["backward"][-1] + res["allreduce"][-1] - res["overlap"][-1]) / res["allreduce"][-1])
        if rank == 0:
            row = ", ".join(f"{k} {v[-1]:.2f}" if k == "hidden" else f"{k} {v[-1] * 1000:.0f}" for k, v in res.items())
            print(f"repeat {it}: {row} (ms; load average {os.getloadavg()[0]:.1f})", flush=True)
    if rank == 0 and repeats > 1:
        for label, f in (("min", min), ("median", statistics.median)):
            row = ", ".join(f"{k} {f(v[1:]):.2f}" if k == "hidden" else f"{k} {f(v[1:]) * 1000:.0f}"
                            for k, v in res.items())
            print(f"{label} over repeats 1..{repeats - 1}: {row}", flush=True)
    m.close()
    ctx.close()


def main(argv: object = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--rank", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)  # type: ignore[arg-type]
    if a.rank:
        rank_main(a.repeats)
        return 0
    from pyllmc.launch import launch

    return launch([sys.executable, os.path.abspath(__file__), "--rank", "--repeats", str(a.repeats)], 2)


if __name__ == "__main__":
    sys.exit(main())
