"""The offline demo: the addition task's data, the accuracy measure, the parity section,
a short run of `pyllmc demo` (fast), and the full demo learning its task (slow)."""

import re
import subprocess
import sys

import numpy as np
import pytest

from pyllmc import GPTConfig, Model
from pyllmc.demo import addition_accuracy, addition_tokens, format_problem, make_addition_task, parity_check


def test_format_problem():
    assert format_problem(123, 456, 3) == "123+456=9750\n"
    assert format_problem(999, 999, 3) == "999+999=8991\n"
    assert format_problem(5, 7, 2) == "05+07=210\n"
    assert all(len(format_problem(a, b, 3)) == 13 for a, b in [(0, 0), (999, 1), (500, 500)])


def test_task_split_is_disjoint():
    train, test = make_addition_task(3, 5000, 300, seed=1)
    assert len(train) == 5000 and len(test) == 300 and len(set(test)) == 300
    assert not set(train) & set(test)
    toks = addition_tokens(train[:2], 3)
    assert bytes(toks.astype(np.uint8)).decode() == format_problem(*train[0], 3) + format_problem(*train[1], 3)


def test_accuracy_measure_on_an_oracle_and_a_random_model():
    class Oracle:
        """Looks like a Model whose logits always point at the right answer digit."""

        max_batch = 8
        max_seq = 16
        config = GPTConfig(16, 257, 384, 1, 1, 8)

        def forward(self, x):
            self._x = np.asarray(x)

        def logits(self):
            B, t = self._x.shape
            out = np.zeros((B, t, 257), dtype=np.float32)
            for i, row in enumerate(self._x):
                s = bytes(row.astype(np.uint8)).decode()
                a, b = int(s[:3]), int(s[4:7])
                ans = format_problem(a, b, 3)[8:12]
                out[i, -1, ord(ans[len(s) - 8])] = 1.0
            return out

    pairs = [(123, 456), (999, 999), (0, 0), (500, 501)]
    acc, rows = addition_accuracy(Oracle(), pairs, 3)
    assert acc == 1.0 and [r[2] for r in rows] == [579, 1998, 0, 1001]
    with Model.from_config(GPTConfig(16, 257, 384, 1, 2, 32), max_batch=4, threads=1) as m:
        acc, rows = addition_accuracy(m, pairs, 3)
        assert acc <= 0.25 and len(rows) == 4


def test_parity_section():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    lines = []
    assert parity_check(threads=1, steps=2, out=lines.append) is True
    text = "\n".join(lines)
    assert "loss C" in text and "gradients of all 16 parameter tensors" in text and "MISMATCH" not in text


def test_demo_short_run(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pyllmc", "demo", "--quick", "--steps", "40", "--no-parity",
                        "--threads", "1", "--out", str(tmp_path / "demo")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for section in ("[1/4]", "[2/4]", "[3/4]", "[4/4]", "held-out exact-match accuracy", "loss curve:"):
        assert section in out, out
    assert (tmp_path / "demo" / "loss.png").is_file()
    assert (tmp_path / "demo" / "metrics.jsonl").is_file()


@pytest.mark.slow
def test_demo_learns_addition(tmp_path):
    """The README's main command: the model must actually learn (held-out accuracy)."""
    r = subprocess.run([sys.executable, "-m", "pyllmc", "demo", "--out", str(tmp_path / "demo")],
                       capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"held-out exact-match accuracy: ([0-9.]+)%", r.stdout)
    assert m, r.stdout
    assert float(m.group(1)) >= 90.0, r.stdout


def test_thread_tuner_probes_again_when_steps_slow_down(monkeypatch):
    """The demo keeps the faster thread count: it times again when the recent steps became
    much slower than right after the last timing (a busier machine), and at evaluations."""
    import types

    from pyllmc import demo

    calls = []
    monkeypatch.setattr(demo, "probe_threads", lambda model, b, t, cands: (calls.append(1) or 1, {1: 0.01}))
    tuner = demo.ThreadTuner(model=None, batch=2, seq=8, say=lambda s: None, window=5, factor=2.0, min_gap=10)
    tuner.probe(0)
    st = lambda step, ms: types.SimpleNamespace(step=step, ms=ms)  # noqa: E731
    for step in range(1, 21):  # steady: no new timing
        tuner.on_step_end(st(step, 10.0))
    assert len(calls) == 1 and tuner.baseline == 10.0
    for step in range(21, 23):  # slower, but most of the window is still fast
        tuner.on_step_end(st(step, 50.0))
    assert len(calls) == 1
    tuner.on_step_end(st(23, 50.0))  # the median of the last 5 steps is now 5x the baseline
    assert len(calls) == 2 and tuner.last_probe == 23 and tuner.baseline is None
    for step in range(25, 30):  # the new baseline is the slow speed: no further timing
        tuner.on_step_end(st(step, 50.0))
    assert len(calls) == 2 and tuner.baseline == 50.0
    tuner.on_eval(st(30, None))
    assert len(calls) == 3
