"""The wasm core against PyTorch and against the native core (device="wasm").

- `pyllmc parity --device wasm` passes the same policy as the native core (fp64-attributed,
  every activation, gradient, parameter and moment of every layer) on several shapes: one to
  three heads, attention over several query blocks with T not a multiple of the block (64),
  B 1 to 3, and d6 with the full GPT-2 vocabulary;
- the two cores train the same 20 steps: the same losses and parameters within the policy's
  fp32 test (reference.tolerance.compare/judge);
- d12 at B=4, T=64 fits the 4 GiB memory: created, one training step.
The heavy ones (d6, d12) run under /tmp/pyllmc-heavy.lock, so they never overlap other
heavy jobs on a shared machine.

Runs in `nox -s wasm`; skips without a wasm core unless PYLLMC_REQUIRE_WASM=1."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from pyllmc import GPTConfig, Model
from pyllmc.wasm_core import unavailable_reason

if unavailable_reason() is not None:
    if os.environ.get("PYLLMC_REQUIRE_WASM") == "1":
        pytest.fail(f"PYLLMC_REQUIRE_WASM=1 but the wasm core is not available: {unavailable_reason()}",
                    pytrace=False)
    pytest.skip(f"no wasm core: {unavailable_reason()}", allow_module_level=True)

pytest.importorskip("torch")
from pyllmc.reference.tolerance import compare, judge  # noqa: E402

HEAVY_LOCK = "/tmp/pyllmc-heavy.lock"


def _parity(tmp_path, *args, heavy=False):
    cmd = [sys.executable, "-m", "pyllmc", "parity", "--device", "wasm", "--threads", "1", "--plot", "off",
           "--out", str(tmp_path / "parity"), *map(str, args)]
    if heavy and os.path.exists("/usr/bin/flock"):
        cmd = ["flock", HEAVY_LOCK, *cmd]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "PASS" in r.stdout, r.stdout[-2000:]
    doc = json.loads((tmp_path / "parity" / "parity.json").read_text())
    return doc, r.stdout


@pytest.mark.parametrize("args", [
    ("--model", "d1", "--vocab-size", "300", "--max-seq-len", "160", "--batch", "1", "--seq", "130"),  # 3 blocks
    ("--model", "d2", "--vocab-size", "512", "--max-seq-len", "128", "--batch", "2", "--seq", "80"),
    ("--model", "d3", "--vocab-size", "700", "--max-seq-len", "128", "--batch", "3", "--seq", "97", "--seed", "4"),
], ids=["d1_T130_B1", "d2_T80_B2", "d3_T97_B3"])
def test_parity_cli_on_wasm(tmp_path, args):
    _parity(tmp_path, "--steps", "2", *args)


def test_parity_cli_on_wasm_d6(tmp_path):
    _parity(tmp_path, "--model", "d6", "--steps", "2", "--batch", "2", "--seq", "64", heavy=True)


CFG = GPTConfig(max_seq_len=96, vocab_size=200, padded_vocab_size=256, num_layers=2, num_heads=4, channels=32)


def test_cores_train_the_same_20_steps():
    ms = [Model.from_config(CFG, max_batch=2, max_seq=80, threads=1, seed=5, device=d) for d in ("cpu", "wasm")]
    rng = np.random.default_rng(0)
    losses = [[], []]
    for t in range(1, 21):
        x, y = rng.integers(0, CFG.vocab_size, (2, 80)), rng.integers(0, CFG.vocab_size, (2, 80))
        for i, m in enumerate(ms):
            losses[i].append(m.forward(x, y))
            m.backward(accumulate=False)
            m.adamw_step(1e-3, t=t, weight_decay=0.1)
    row = judge(compare("losses", np.array(losses[1], np.float32), np.array(losses[0], np.float32)))
    assert row["passed"], row
    cpu, wasm = ms
    C = CFG.channels
    for name, p in cpu.params.items():
        w = wasm.params[name]
        if name == "qkvb":
            # The key bias has an exactly zero gradient (softmax is invariant to a shift of all
            # scores of a row), so both cores hold rounding noise there, which AdamW turns into
            # steps of +-lr: no fp32 test applies to it. Check that it is noise, compare the rest.
            g = cpu.grads["qkvb"]
            assert np.sqrt(np.mean(g[:, C:2 * C] ** 2)) < 1e-4 * np.sqrt(np.mean(g[:, :C] ** 2))
            p, w = np.concatenate([p[:, :C], p[:, 2 * C:]], 1), np.concatenate([w[:, :C], w[:, 2 * C:]], 1)
        row = judge(compare(name, w, p))
        assert row["passed"], (name, row["direct_ratio"])


def test_d12_fits_and_trains_a_step():
    """d12 (GPT-2 124M) at B=4, T=64: about 2.2 GiB of the 4 GiB (under the heavy lock)."""
    import fcntl

    with open(HEAVY_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        m = Model.from_config("d12", max_batch=4, max_seq=64, threads=1, seed=0, device="wasm")
        inst = m._lib.instance
        rng = np.random.default_rng(0)
        x, y = rng.integers(0, 50257, (4, 64)), rng.integers(0, 50257, (4, 64))
        loss = m.forward(x, y)
        m.backward(accumulate=False)
        m.adamw_step(1e-4, t=1)
        assert 10.0 < loss < 11.5  # ~ln(50257) at initialisation
        assert np.isfinite(m.grad_norm())
        assert 2 << 30 < inst.size() <= 4 << 30
        m.close()
