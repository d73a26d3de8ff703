"""One rank of the point-to-point collective tests (parity_tests/test_distributed.py): runs
DistContext.reduce_scatter_sum and all_gather_slices on small buffers, in chunks of 7 floats
(so every slice spans several chunks, the last one short), the reduce-scatter also on a
model's gradients through Model.grad_add_range, and writes argv[1]/rank{R}.npz. Run under
pyllmc.launch."""

import os
import sys

import numpy as np
import torch

from pyllmc import distributed
from pyllmc.distributed import DistContext, slice_bounds

N = 1000


def main() -> int:
    out = sys.argv[1]
    distributed.RECV_CHUNK_FLOATS = distributed.GATHER_CHUNK_FLOATS = 7
    ctx = DistContext(timeout=60.0)
    r, w = ctx.rank, ctx.world
    bounds = slice_bounds(N, w)
    # integers: every sum is exact, so an element summed twice or missed shows
    ints = torch.arange(N, dtype=torch.float32) + 1000.0 * (r + 1)
    before = ints.clone()
    ctx.reduce_scatter_sum(ints, bounds, "test reduce-scatter")
    scattered = ints.clone()
    ctx.all_gather_slices(ints, bounds, "test all-gather")
    # random floats: the reduce-scatter against gloo's all-reduce
    rnd = torch.from_numpy(np.random.default_rng(r).standard_normal(N).astype(np.float32))
    summed = rnd.clone()
    ctx.all_reduce_sum(summed, "test all-reduce")
    ctx.reduce_scatter_sum(rnd, bounds, "test reduce-scatter")
    # the data-parallel reduce: into a model's gradient buffer, with the slice's sum of squares
    from pyllmc import GPTConfig, Model

    model = Model.from_config(GPTConfig(8, 32, 32, 1, 1, 8), max_batch=1, threads=1)
    grads = model.torch_view("grads")
    grads.copy_(torch.from_numpy(np.random.default_rng(10 + r).standard_normal(grads.numel()).astype(np.float32)))
    g_bounds = slice_bounds(grads.numel(), w)
    torch_sum = grads.clone()
    ctx.reduce_scatter_sum(torch_sum, g_bounds, "test reduce-scatter")
    sumsq = ctx.reduce_scatter_sum(grads, g_bounds, "test reduce-scatter into the model",
                                   add=lambda o, c: model.grad_add_range(o, c.numel(), c.numpy()))
    np.savez(os.path.join(out, f"rank{r}.npz"), before=before.numpy(), scattered=scattered.numpy(),
             gathered=ints.numpy(), rs_random=rnd.numpy(), ar_random=summed.numpy(), world=np.array(w),
             rs_model=grads.numpy().copy(), rs_torch=torch_sum.numpy(), rs_sumsq=np.array(sumsq),
             sumsq_range=np.array(model.grad_sumsq_range(*g_bounds[r])))
    model.close()
    ctx.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
