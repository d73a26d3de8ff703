"""Two models trained in two Python threads at once (issue 8 §6).

1. Results: each model's losses, parameters and AdamW state after a few steps are bitwise the
   same whether the two models are trained one after the other or in two threads at once
   (distinct handles share nothing; per-thread state such as the error message is per thread).
2. Overlap: the threads really ran inside the C core at the same time, which needs the GIL
   released during C calls. Proved by observation, not by timing: a watcher thread polls one
   activation element written FIRST by a forward (``encoded``) and one written LAST
   (``logits``) of each model, both reset to NaN before every forward. "encoded written,
   logits still NaN" can only be seen while that forward is inside C. If the watcher sees
   model A mid-forward, then model B mid-forward, then A mid-forward again in the SAME call
   of A (a per-call generation number, bumped before each call, is unchanged), both models
   were inside C at the moment B was seen. No threshold is involved, so a loaded machine can
   at worst make the observation rarer (the test then repeats), never make it false. A
   control run (both models stepped alternately in ONE thread) must never show it.
   The timestamps of every call are also recorded and the overlap reported.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Dict, List, Optional

import numpy as np
import pytest

from pyllmc import FileError, GPTConfig, Model, PyllmcError

CFG = GPTConfig(max_seq_len=128, vocab_size=500, padded_vocab_size=512, num_layers=4, num_heads=4, channels=128)
B, T, STEPS = 4, 128, 3


def _batches(seed: int) -> List[tuple]:
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, CFG.vocab_size, (B, T)), rng.integers(0, CFG.vocab_size, (B, T))) for _ in range(STEPS)]


class Runner:
    """One model and its batches; ``step(i)`` is one full training step. Keeps views of the
    first- and last-written forward activations for the watcher (views take no lock)."""

    def __init__(self, seed: int, lock=None):
        self.lock = lock if lock is not None else contextlib.nullcontext()
        self.m = Model.from_config(CFG, max_batch=B, max_seq=T, threads=1, seed=seed)
        self.batches = _batches(100 + seed)
        self.m.forward(*self.batches[0])  # activation views of shape (B, T, ...)
        self.enc = self.m.acts["encoded"]
        self.logits = self.m.acts["logits"]
        self.gen = 0  # bumped BEFORE each forward call
        self.losses: List[float] = []
        self.calls: List[tuple] = []  # (start, end) of every C call, perf_counter seconds

    def _c(self, fn, *a, **k):
        with self.lock:  # a shared lock here emulates a binding that holds the GIL in C
            t0 = time.perf_counter()
            r = fn(*a, **k)
            self.calls.append((t0, time.perf_counter()))
        return r

    def step(self, i: int, barrier: Optional[threading.Barrier] = None) -> None:
        x, y = self.batches[i]
        self.m.zero_grad()
        # encoded first: in between, (encoded NaN, logits old) does not look like "mid-forward";
        # the other order would, for an instant, outside C (backward and AdamW touch neither)
        self.enc[0, 0, 0] = np.nan
        self.logits[-1, -1, -1] = np.nan
        if barrier is not None:
            barrier.wait()  # both forwards start together: more chances to overlap
        self.gen += 1
        self.losses.append(self._c(self.m.forward, x, y))
        self._c(self.m.backward)
        norm = self._c(self.m.clip_grad_norm, 1.0)
        assert np.isfinite(norm)
        self._c(self.m.adamw_step, 1e-3, t=i + 1, weight_decay=0.1)

    def mid_forward(self) -> Optional[int]:
        """The generation of the forward this model is inside of, if observably mid-call."""
        g = self.gen
        if not np.isnan(self.enc[0, 0, 0]) and np.isnan(self.logits[-1, -1, -1]):
            return g
        return None

    def state(self) -> Dict[str, np.ndarray]:
        return {k: self.m.flat(k).copy() for k in ("params", "adam_m", "adam_v")}

    def close(self) -> None:
        self.m.close()


class Watcher(threading.Thread):
    """Looks for: A mid-call (gen g), then B mid-call, then A mid-call with the same gen g."""

    def __init__(self, a: Runner, b: Runner):
        super().__init__(daemon=True)
        self.a, self.b = a, b
        self.stop = threading.Event()
        self.both_inside = 0  # proven moments with both models inside C
        self.seen_a = self.seen_b = 0  # single-model observations (the GIL is released at all)

    def run(self) -> None:
        while not self.stop.is_set():
            for first, second in ((self.a, self.b), (self.b, self.a)):
                g1 = first.mid_forward()
                if g1 is None:
                    continue
                if first is self.a:
                    self.seen_a += 1
                else:
                    self.seen_b += 1
                if second.mid_forward() is not None and first.mid_forward() == g1:
                    self.both_inside += 1


def _sequential(seed_a: int, seed_b: int):
    out = []
    for seed in (seed_a, seed_b):
        r = Runner(seed)
        try:
            for i in range(STEPS):
                r.step(i)
            out.append((list(r.losses), r.state()))
        finally:
            r.close()
    return out


def _concurrent(seed_a: int, seed_b: int, lock=None):
    a, b = Runner(seed_a, lock), Runner(seed_b, lock)
    watcher = Watcher(a, b)
    barrier = threading.Barrier(2)
    errors: List[BaseException] = []

    def train(r: Runner) -> None:
        try:
            for i in range(STEPS):
                r.step(i, barrier)
        except BaseException as e:  # reported by the main thread
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=train, args=(r,)) for r in (a, b)]
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    watcher.stop.set()
    watcher.join()
    try:
        assert not errors, errors
        assert not any(t.is_alive() for t in threads), "a training thread did not finish"
        return [(list(a.losses), a.state()), (list(b.losses), b.state())], watcher, (a.calls, b.calls)
    finally:
        a.close()
        b.close()


def _overlap_seconds(ca: List[tuple], cb: List[tuple]) -> float:
    return sum(max(0.0, min(e1, e2) - max(s1, s2)) for s1, e1 in ca for s2, e2 in cb)


def test_two_threads_bitwise_equal_to_sequential_and_overlapping():
    seq = _sequential(1, 2)
    assert seq[0][0] != seq[1][0]  # two different models: equal results would prove nothing
    proofs, attempts, report = 0, 0, []
    while attempts < 5 and proofs == 0:  # more attempts only if the watcher got no CPU in time
        attempts += 1
        conc, watcher, (ca, cb) = _concurrent(1, 2)
        for (l_seq, s_seq), (l_con, s_con) in zip(seq, conc):
            assert l_seq == l_con, (l_seq, l_con)  # Python floats from the same float32: exact
            for k in s_seq:
                np.testing.assert_array_equal(s_seq[k], s_con[k], err_msg=k)
        proofs = watcher.both_inside
        report.append(f"attempt {attempts}: both inside C observed {watcher.both_inside}x "
                      f"(A alone {watcher.seen_a}x, B alone {watcher.seen_b}x); call-interval overlap "
                      f"{_overlap_seconds(ca, cb) * 1e3:.0f} ms of {sum(e - s for s, e in ca) * 1e3:.0f} ms")
    print("\n".join(report))
    assert proofs > 0, "the two models were never seen inside C at the same time:\n" + "\n".join(report)


def test_watcher_control_one_thread_never_sees_both():
    """The negative control: A and B stepped alternately in ONE thread are never both inside C,
    so the watcher's proof must never fire (while it still sees each model mid-forward, which
    shows the GIL is released and the watcher was looking)."""
    a, b = Runner(3), Runner(4)
    watcher = Watcher(a, b)
    watcher.start()
    try:
        for i in range(STEPS):
            a.step(i)
            b.step(i)
    finally:
        watcher.stop.set()
        watcher.join()
        a.close()
        b.close()
    assert watcher.both_inside == 0
    assert watcher.seen_a + watcher.seen_b > 0, "the watcher never ran during a forward"


def test_watcher_control_serialised_threads_never_see_both():
    """The second control, the failure this test exists to catch: two threads whose C calls
    are serialised by one lock (as if the binding held the GIL inside C). Results are still
    bitwise equal, but the watcher must never prove overlap."""
    seq = _sequential(5, 6)
    conc, watcher, _ = _concurrent(5, 6, lock=threading.Lock())
    for (l_seq, _), (l_con, _) in zip(seq, conc):
        assert l_seq == l_con
    assert watcher.both_inside == 0
    assert watcher.seen_a + watcher.seen_b > 0, "the watcher never ran during a forward"


def test_per_thread_errors_do_not_mix(tmp_path):
    """Failures before a handle exists report through a per-thread message: two threads failing
    at once on different files each see their own file named."""
    paths = []
    for name in ("first_bad.bin", "second_bad.bin"):
        p = tmp_path / name
        p.write_bytes(b"\x01\x00\x00\x00" * 300)
        paths.append(p)
    mixed: List[str] = []
    barrier = threading.Barrier(2)

    def load_many(p) -> None:
        barrier.wait()
        for _ in range(300):
            try:
                Model.from_checkpoint(p, max_batch=1, threads=1)
                mixed.append(f"{p} loaded")
            except PyllmcError as e:
                if p.name not in str(e):
                    mixed.append(str(e))

    ts = [threading.Thread(target=load_many, args=(p,)) for p in paths]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not mixed, mixed[:3]
    with pytest.raises(FileError):
        Model.from_checkpoint(tmp_path / "missing.bin")
