"""Per-check worst error over its bound of parity_tests/test_bf16_operands.py (first forward; second,
after an AdamW step), for the library in PYLLMC_LIBRARY (a mutant of mutants_bf16.py) or the
installed one. Run from the repository root."""
import sys

import numpy as np

sys.path.insert(0, "parity_tests")
import test_bf16_operands as t  # noqa: E402
from pyllmc import Model  # noqa: E402

m = Model.from_config(t.CFG, max_batch=t.B, max_seq=t.T, threads=2, seed=3, precision="bf16")
rng = np.random.default_rng(0)
for ti in m.tensors("params"):  # the same weights as the test
    w = m.copy_to_host("params", ti.name)
    w = (w + rng.standard_normal(w.shape) * 0.05).astype(np.float32)
    if ti.name == "wte":
        w[t.CFG.vocab_size:] = 0.0
    m.copy_from_host("params", ti.name, w)
x, y = (rng.integers(0, t.CFG.vocab_size, size=(t.B, t.T), dtype=np.int32) for _ in range(2))
a = t.operand_ratios(m, x, y)
m.backward(1.0, accumulate=False)
m.adamw_step(1e-2, t=1, weight_decay=0.1)
b = t.operand_ratios(m, x, y)
m.close()
print("first ", {k: round(float(v), 4) for k, v in a.items()})
print("second", {k: round(float(v), 4) for k, v in b.items()})
