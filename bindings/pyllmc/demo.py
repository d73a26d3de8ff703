"""`pyllmc demo`: the README's main command. Offline, about 3 minutes on 2 cores.

1. Parity: a small GPT-2 in the C core and the same weights in PyTorch (transformers'
   GPT2LMHeadModel): loss, every parameter gradient, and a few AdamW steps in lockstep.
   Skipped with a message when torch/transformers are not installed.
2. Task: multi-digit addition generated here. The model reads ``123+456=`` and writes the
   sum's digits least-significant first, padded to D+1 digits (``579`` -> ``9750``), which
   is how a person adds (carry moves left to right in that order). Held-out problems never
   appear in the training data.
3. Training through the C core with the Trainer (shuffled shards, cosine schedule, AdamW,
   evaluation with a callback that measures held-out exact-match accuracy, checkpoints).
4. The result: held-out accuracy, a few answers, validation loss, the loss-curve path.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

# ------------------------------------------------------------------ the addition task


def format_problem(a: int, b: int, digits: int) -> str:
    """``a+b=`` followed by the sum's D+1 digits reversed, and a newline (one line)."""
    s = str(a + b).zfill(digits + 1)[::-1]
    return f"{a:0{digits}d}+{b:0{digits}d}={s}\n"


def problem_len(digits: int) -> int:
    return 3 * digits + 4  # a + b = s \n


def make_addition_task(digits: int, n_train: int, n_test: int, seed: int = 0
                       ) -> Tuple[List[Tuple[int, int]], List[Tuple[int, int]]]:
    """(train pairs, held-out test pairs), disjoint. Test pairs are uniform over
    [0, 10^D)^2. Each training operand first draws its length k uniformly from 1..D, then
    a number below 10^k: the short problems (many zero digits) are a built-in curriculum
    that makes the long ones learnable in far fewer steps."""
    rng = np.random.default_rng(seed)
    n = 10 ** digits
    if n_test >= n * n // 2:
        raise ValueError("too many test problems for this number of digits")
    test: Set[Tuple[int, int]] = set()
    while len(test) < n_test:
        test.add((int(rng.integers(n)), int(rng.integers(n))))
    train: List[Tuple[int, int]] = []

    def operands(size: int) -> np.ndarray:
        return rng.integers(10 ** rng.integers(1, digits + 1, size=size))

    while len(train) < n_train:
        a = operands(n_train)
        b = operands(n_train)
        for x, y in zip(a.tolist(), b.tolist()):
            if (x, y) not in test:
                train.append((x, y))
                if len(train) == n_train:
                    break
    return train, sorted(test)


def addition_tokens(pairs: Sequence[Tuple[int, int]], digits: int) -> np.ndarray:
    text = "".join(format_problem(a, b, digits) for a, b in pairs)
    return np.frombuffer(text.encode("ascii"), dtype=np.uint8).astype(np.uint16)


def addition_accuracy(model: Any, pairs: Sequence[Tuple[int, int]], digits: int
                      ) -> Tuple[float, List[Tuple[int, int, int, bool]]]:
    """Greedy exact-match accuracy of the model on ``pairs``; also (a, b, answer, ok) rows."""
    from .sampling import generate_batch

    L = 2 * digits + 2  # "aaa+bbb="
    prompts = np.array([list(format_problem(a, b, digits)[:L].encode()) for a, b in pairs], dtype=np.int32)
    out = generate_batch(model, prompts, digits + 1)
    rows = []
    ok_count = 0
    for (a, b), o in zip(pairs, out):
        text = bytes(int(t) if 0 <= t < 256 else 63 for t in o).decode("ascii", errors="replace")
        ans = int(text[::-1]) if text.isdigit() else -1
        ok = ans == a + b
        ok_count += ok
        rows.append((a, b, ans, ok))
    return ok_count / max(1, len(pairs)), rows


# ------------------------------------------------------------------ parity section


def parity_check(threads: int = 0, steps: int = 3, out=print) -> Optional[bool]:
    """A small GPT-2 in C and PyTorch with identical weights: loss, gradients, AdamW steps.
    Returns True/False, or None when torch/transformers are missing."""
    try:
        import torch  # noqa: F401

        from . import reference as ref
    except ImportError as e:
        out(f"      skipped: PyTorch reference not available ({e}); pip install 'pyllmc[torch]'")
        return None
    from .model import GPTConfig, Model

    L, C, NH, V, T, B = 2, 64, 4, 257, 32, 4
    hf_cfg = ref.make_config(vocab_size=V, n_positions=T, n_layer=L, n_head=NH, n_embd=C)
    torch_model = ref.random_model(hf_cfg, seed=1)
    Vp = 384
    cfg = GPTConfig(T, V, Vp, L, NH, C)
    rng = np.random.default_rng(1)
    x = rng.integers(0, V, size=(B, T))
    y = rng.integers(0, V, size=(B, T))
    ok = True
    with Model.from_config(cfg, max_batch=B, max_seq=T, threads=threads) as m:
        ref.load_into_model(m, ref.hf_to_params(torch_model, Vp))
        loss_c = m.forward(x, y)
        m.zero_grad()
        m.backward()
        cap = ref.capture(torch_model, x, y, backward=True, padded_vocab_size=Vp)
        grads_c = ref.model_tensors(m.grads)
        worst_abs, worst_rel, worst_name = 0.0, 0.0, ""
        for name, g_t in cap.grads.items():
            g_c = grads_c[name]
            err = float(np.max(np.abs(g_c.astype(np.float64) - g_t)))
            scale = float(np.max(np.abs(g_t))) or 1.0
            if err / scale > worst_rel:
                worst_abs, worst_rel, worst_name = err, err / scale, name
        loss_ok = abs(loss_c - cap.loss) <= 1e-5 * max(1.0, abs(cap.loss))
        grad_ok = worst_rel < 1e-4
        out(f"      GPT-2 L{L} C{C} H{NH} V{V}, batch {B}x{T}: loss C {loss_c:.6f} | PyTorch {cap.loss:.6f} "
            f"| diff {abs(loss_c - cap.loss):.1e}")
        out(f"      gradients of all 16 parameter tensors: max |C - PyTorch| {worst_abs:.1e} "
            f"({worst_rel:.1e} of the largest gradient, worst: {worst_name}) -> {'OK' if grad_ok else 'MISMATCH'}")
        ok = loss_ok and grad_ok
        # a few AdamW steps in lockstep (grad clip and weight decay on 2-D weights, as the Trainer)
        rt = ref.ReferenceTrainer(torch_model, lr=1e-3, beta1=0.9, beta2=0.95, weight_decay=0.1,
                                  decay_matrices_only=True, grad_clip=1.0, padded_vocab_size=Vp)
        losses_c, losses_t = [], []
        for t in range(1, steps + 1):
            xb = rng.integers(0, V, size=(B, T))
            yb = rng.integers(0, V, size=(B, T))
            losses_c.append(m.forward(xb, yb))
            m.zero_grad()
            m.backward()
            m.clip_grad_norm(1.0)
            m.adamw_step(1e-3, t=t, beta1=0.9, beta2=0.95, weight_decay=0.1, decay_matrices_only=True)
            losses_t.append(rt.step([(xb, yb)])["loss"])
        p_c = ref.model_tensors(m.params)
        p_t = rt.params()
        pdiff = max(float(np.max(np.abs(p_c[k].astype(np.float64) - p_t[k]))) for k in p_t)
        step_ok = pdiff < 1e-4
        out(f"      {steps} AdamW steps in lockstep: losses C {' '.join(f'{v:.4f}' for v in losses_c)} | "
            f"PyTorch {' '.join(f'{v:.4f}' for v in losses_t)}; max |param diff| {pdiff:.1e} "
            f"-> {'OK' if step_ok else 'MISMATCH'}")
        ok = ok and step_ok
    return ok


# ------------------------------------------------------------------ threads


def probe_threads(model: Any, batch: int, seq: int, candidates: Sequence[int]) -> Tuple[int, Dict[int, float]]:
    """Time forward+backward of ``model`` on random tokens with each thread count, set the
    fastest and return it with the timings (seconds). Parameters and optimizer state are not
    touched (the next training step recomputes activations and gradients)."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, model.config.vocab_size, size=(batch, seq))
    times: Dict[int, float] = {}
    for n in candidates:
        model.set_threads(n)
        best = float("inf")
        for i in range(3):
            t0 = time.perf_counter()
            model.forward(x, x)
            model.zero_grad()
            model.backward()
            if i:
                best = min(best, time.perf_counter() - t0)
        times[n] = best
    n = min(times, key=times.get)
    model.set_threads(n)
    return n, times


def thread_candidates() -> List[int]:
    ncpu = os.cpu_count() or 1
    return [ncpu, 1] if ncpu > 1 else [1]


class ThreadTuner:
    """A Trainer callback that keeps the faster of all cores and one core.

    On a machine shared with busy processes, OpenMP barriers can make two threads many times
    slower than one, and the load changes while the demo runs. So both counts are timed at
    the start (``probe``), again at every evaluation (the machine may have become quieter),
    and whenever the median of the last ``window`` steps is ``factor`` times slower than right
    after the last timing (it became busier), at most once per ``min_gap`` steps."""

    def __init__(self, model: Any, batch: int, seq: int, say=print, window: int = 20, factor: float = 2.0,
                 min_gap: int = 50):
        from collections import deque

        self.model, self.batch, self.seq, self.say = model, batch, seq, say
        self.window, self.factor, self.min_gap = window, factor, min_gap
        self.recent: "deque[float]" = deque(maxlen=window)
        self.baseline: Optional[float] = None
        self.last_probe = 0
        self.threads = 0
        self.times: Dict[int, float] = {}
        self.probes = 0

    def probe(self, step: int = 0) -> int:
        before = self.threads
        self.threads, self.times = probe_threads(self.model, self.batch, self.seq, thread_candidates())
        self.probes += 1
        self.last_probe = step
        self.baseline = None
        self.recent.clear()
        if before and self.threads != before:
            self.say(f"      (step {step}: now {self.threads} OpenMP thread{'s' if self.threads > 1 else ''}, "
                     "faster on this machine at the moment)")
        return self.threads

    def on_step_end(self, status) -> None:
        if status.ms is None:
            return
        self.recent.append(status.ms)
        if len(self.recent) < self.window:
            return
        med = float(np.median(self.recent))
        if self.baseline is None:
            self.baseline = med
        elif med > self.factor * self.baseline and status.step - self.last_probe >= self.min_gap:
            self.probe(status.step)

    def on_eval(self, status) -> None:
        self.probe(status.step)


# ------------------------------------------------------------------ the demo


def _threads_arg(text: str) -> Any:
    if text.strip().lower() == "auto":
        return "auto"
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or an integer >= 0, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected auto or an integer >= 0, got {text!r}")
    return v


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .cli_args import add_switch

    p.description = ("Offline demo (about 3 minutes on 2 cores): a parity check of the C core against "
                     "PyTorch, then a small GPT-2 learns multi-digit addition through the C core.")
    p.add_argument("--out", default="runs/demo", help="output directory (replaced; default runs/demo)")
    p.add_argument("--digits", type=int, default=3, help="digits per operand (default 3)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default: tuned for ~2 minutes)")
    p.add_argument("--threads", type=_threads_arg, default="auto", help=(
        "OpenMP threads: auto (default) times all cores against one and uses the faster; "
        "0 = the OpenMP default (all cores), as in every command"))
    p.add_argument("--seed", type=int, default=0, help="seed of the task, the weights and the data order (default 0)")
    p.add_argument("--target", type=float, default=1.0,
                   help="stop early (through a callback) once held-out accuracy reaches this")
    p.add_argument("--eval-every", type=int, default=250, help="held-out accuracy every N steps (default 250)")
    add_switch(p, "--parity", default=True, help="start with the PyTorch parity check (default on)")
    add_switch(p, "--plot", default=True, help="write the loss curve loss.png (default on; needs matplotlib)")
    p.add_argument("--quick", action="store_true", help="a much shorter run (for smoke tests)")


def run(args: argparse.Namespace) -> int:
    from .data import write_shard
    from .model import GPTConfig
    from .tokenizer import ByteTokenizer
    from .trainer import Callback, Trainer, TrainerConfig

    t_all = time.perf_counter()
    D = int(args.digits)
    if not 1 <= D <= 6:
        from .errors import InvalidArgumentError

        raise InvalidArgumentError(f"--digits must be in 1..6, got {D}")
    out_dir = Path(args.out)
    say = lambda s="": print(s, flush=True)  # noqa: E731

    say("pyllmc demo: GPT-2 trained from scratch through a hand-written C core, offline")
    say(f"             (output in {out_dir}/)")
    say()
    say("[1/4] parity: the C core against PyTorch (transformers GPT2LMHeadModel, same weights)")
    parity = None
    if not args.parity:
        say("      skipped (--no-parity)")
    else:
        t0 = time.perf_counter()
        parity = parity_check(threads=0 if args.threads == "auto" else args.threads, out=say)
        if parity is not None:
            say(f"      {'PASS' if parity else 'FAIL'} ({time.perf_counter() - t0:.1f} s)")
    say()

    # ---- data
    n_train = 20000 if args.quick else 100000
    n_test = 200 if args.quick else 500
    train_pairs, test_pairs = make_addition_task(D, n_train, n_test, seed=args.seed)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    data_dir = out_dir / "data"
    data_dir.mkdir(parents=True)
    write_shard(data_dir / "train_000000.bin", addition_tokens(train_pairs, D))
    write_shard(data_dir / "val_000000.bin", addition_tokens(test_pairs, D))
    tok = ByteTokenizer()
    tok.save(data_dir / "tokenizer.bin")
    ex_a, ex_b = 123 % 10 ** D, 456 % 10 ** D
    ex = format_problem(ex_a, ex_b, D).strip()
    plen = problem_len(D)
    say(f"[2/4] task: {D}-digit addition. The model reads '{ex[:2 * D + 2]}' and writes the sum's digits")
    say(f"      least-significant first, as a person adds: {ex_a}+{ex_b}={ex_a + ex_b} is written '{ex}'.")
    say(f"      {len(train_pairs)} training problems with operands of 1 to {D} digits "
        f"({len(train_pairs) * plen} byte tokens);")
    say(f"      {len(test_pairs)} held-out problems, uniform over all {D}-digit pairs, never in the training data.")
    say()

    # ---- model and trainer
    T = plen  # one problem per row: every problem starts at position 0
    L, C, NH = (2, 128, 4)
    steps = args.steps or (300 if args.quick else 2500)
    model_cfg = GPTConfig(max_seq_len=T, vocab_size=257, padded_vocab_size=384, num_layers=L, num_heads=NH,
                          channels=C)
    auto_threads = args.threads == "auto" and len(thread_candidates()) > 1
    threads = (os.cpu_count() or 1) if args.threads == "auto" else args.threads
    cfg = TrainerConfig(
        model=model_cfg, data=str(data_dir / "train_000000.bin"), val_data=str(data_dir / "val_000000.bin"),
        batch_size=64, seq_len=T, steps=steps, lr=2e-3, schedule="cosine", warmup=min(100, steps // 10),
        final_frac=0.1, weight_decay=0.0, grad_clip=1.0, beta2=0.99, shuffle=True, seed=args.seed,
        threads=threads, eval_every=min(args.eval_every, steps), eval_batches=2, save_every=0,
        out_dir=str(out_dir), progress="lines", log_every=max(1, steps // 10), keep_last=1, plot=args.plot)


    class Accuracy(Callback):
        """On every evaluation: held-out exact-match accuracy; stop once it reaches --target."""

        def __init__(self) -> None:
            self.trainer: Optional[Trainer] = None
            self.history: List[Tuple[int, float]] = []

        def on_eval(self, status):
            acc, _ = addition_accuracy(self.trainer.model, test_pairs, D)
            self.history.append((status.step, acc))
            say(f"      step {status.step}: held-out exact-match accuracy {acc * 100:.1f}%")
            if acc >= args.target and status.step < steps:
                say(f"      reached the target {args.target * 100:.0f}%: the callback stops training")
                return True
            return None

    acc_cb = Accuracy()
    trainer = Trainer(cfg, callbacks=[acc_cb])
    acc_cb.trainer = trainer
    with trainer:
        trainer.setup()
        mc = trainer.model.config
        say(f"[3/4] training GPT-2 L{mc.num_layers} C{mc.channels} H{mc.num_heads} ({mc.num_params() / 1e6:.2f}M "
            f"parameters) through the C core: {steps} steps of {cfg.batch_size}x{T} tokens, AdamW, cosine LR")
        if auto_threads:
            tuner = ThreadTuner(trainer.model, cfg.batch_size, T, say=say)
            tuner.probe(0)
            trainer.callbacks.append(tuner)
            detail = ", ".join(f"{k}: {v * 1000:.0f} ms" for k, v in tuner.times.items())
            say(f"      OpenMP threads: {tuner.threads} (the faster of all cores and one core on a timed step: {detail};")
            say("      timed again at every evaluation and when steps slow down: other busy processes on the")
            say("      machine can make one thread faster than two)")
        else:
            say(f"      OpenMP threads: {threads}")
        t0 = time.perf_counter()
        hist = trainer.train()
        train_s = time.perf_counter() - t0
        acc, rows = addition_accuracy(trainer.model, test_pairs, D)
        val = trainer.evaluate()
    say()
    say(f"[4/4] result after {hist.final_step} steps ({train_s:.0f} s of training, "
        f"{hist.final_step * cfg.batch_size * T / max(train_s, 1e-9):.0f} tokens/s):")
    n_ok = sum(r[3] for r in rows)
    say(f"      held-out exact-match accuracy: {acc * 100:.1f}% ({n_ok}/{len(rows)} problems never seen in training)")
    say(f"      validation loss {val:.4f} (the operands are random digits: the floor is "
        f"{2 * D * np.log(10) / plen:.3f}, reached when every answer digit is right)")
    say("      answers to held-out problems (written reversed by the model, shown here in normal order):")
    pick = np.random.default_rng(args.seed + 1).permutation(len(rows))
    shown = [rows[i] for i in pick[:6]]
    wrong = [r for r in rows if not r[3]][:2]
    for a, b, ans, ok in shown + [w for w in wrong if w not in shown]:
        say(f"        {a:>{D}} + {b:>{D}} = {ans if ans >= 0 else '?':>{D + 1}}   {'ok' if ok else 'wrong, expected ' + str(a + b)}")
    if hist.loss_curve:
        say(f"      loss curve: {hist.loss_curve}")
    elif args.plot:
        say("      loss curve: not drawn (matplotlib is not installed: pip install 'pyllmc[plot]')")
    say(f"      metrics: {out_dir / 'metrics.jsonl'}; checkpoint: {hist.last_checkpoint}; data: {data_dir}/")
    ex_prompt = format_problem(ex_a, ex_b, D)[:2 * D + 2]
    say(f"      try: pyllmc sample --model {out_dir} --prompt '{ex_prompt}' --temperature 0 --max-tokens {D + 1}")
    say(f"demo finished in {time.perf_counter() - t_all:.0f} s"
        + ("" if parity is not False else " (parity check FAILED)"))
    return 0 if parity is not False else 1
