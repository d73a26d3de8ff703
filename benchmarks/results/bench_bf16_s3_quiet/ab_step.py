"""One process of ab_steps.sh: ``ab_step.py PREC B T N`` trains d12 at 2 threads, 2 warm-up
steps then N timed ones, and prints each timed step by phase (forward, backward, the gradient
norm, AdamW with the clip folded in) and the process's peak RSS."""
import resource
import sys
import time

import numpy as np

from pyllmc import Model


def main() -> None:
    prec, B, T, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    m = Model.from_config("d12", max_batch=B, max_seq=T, threads=2, precision=prec, seed=1)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 50257, (B, T)).astype(np.int32)
    y = rng.integers(0, 50257, (B, T)).astype(np.int32)

    def step():
        t0 = time.perf_counter()
        m.forward(x, y)
        t1 = time.perf_counter()
        m.backward(accumulate=False)
        t2 = time.perf_counter()
        g = m.grad_norm()
        t3 = time.perf_counter()
        m.adamw_step(1e-4, t=1, weight_decay=0.1, grad_scale=min(1.0, 1.0 / (g + 1e-6)))
        t4 = time.perf_counter()
        return (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3, (t4 - t3) * 1e3

    for _ in range(2):
        step()
    rows = [step() for _ in range(n)]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for row in rows:
        print("fwd %.1f bwd %.1f clip %.1f adamw %.1f total %.1f rssMB %.0f" % (*row, sum(row), rss))


if __name__ == "__main__":
    main()
