"""Peak memory and step time of a bf16 CPU training step, with the GEMM-only activations kept
in bf16 (the default) or in fp32 (LLMC_BF16_ACTS=fp32, the layout before): one process per
run, so VmHWM is that layout's own peak. Run it alternately for the two layouts (A B A B ...)
and compare medians; the machine may be shared.

    python benchmarks/bf16_acts_probe.py --layout bf16 --size d12 --batch 4 --seq 64 --steps 5

Prints one JSON line: layout, shape, VmHWM (KiB) after the steps, and the wall time of each
training step (forward, backward, AdamW) after one untimed warm-up step.
"""
from __future__ import annotations

import argparse
import json
import os
import time


def vm_hwm_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layout", choices=("bf16", "fp32"), required=True)
    p.add_argument("--size", default="d12")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    os.environ["LLMC_BF16_ACTS"] = a.layout
    import numpy as np

    from pyllmc import Model

    m = Model.from_config(a.size, max_batch=a.batch, max_seq=a.seq, threads=a.threads, seed=1, precision="bf16")
    rng = np.random.default_rng(0)
    V = m.config.vocab_size
    x = rng.integers(0, V, (a.batch, a.seq), dtype=np.int32)
    y = rng.integers(0, V, (a.batch, a.seq), dtype=np.int32)
    times = []
    for step in range(a.steps + 1):
        t0 = time.perf_counter()
        m.forward(x, y)
        m.backward(accumulate=False)
        m.adamw_step(1e-4, t=step + 1)
        if step:
            times.append((time.perf_counter() - t0) * 1e3)
    print(json.dumps(dict(layout=a.layout, size=a.size, batch=a.batch, seq=a.seq, vm_hwm_kib=vm_hwm_kib(),
                          step_ms=[round(t, 2) for t in times], median_ms=round(float(np.median(times)), 2))))
    m.close()


if __name__ == "__main__":
    main()
