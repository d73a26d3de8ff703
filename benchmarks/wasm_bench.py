"""WebAssembly host overhead: what a guest pays for driving training through pyllmc.wasm.

Four measurements, each as ratios taken in the same process with A/B interleaving (the
machine is shared: min and median of the repeats are reported, never one run):

1. ``train_step`` loop. A guest (WAT, exported ``steps(model, loader, n, out)``: n calls of
   ``train_step`` in a wasm loop) against the Trainer's own step on the same model shape,
   batch and thread count (``Trainer.train()``, step times from its step_end callbacks), in
   alternating blocks of ``--steps`` steps. Goal: the guest within 2% of the Trainer.
2. ``job``. A guest's ``train_start`` job (the guest blocks in ``job_wait``) against the
   Trainer run directly, whole runs alternating: the job trains in a host thread, beside
   the guest's thread and its OpenMP workers.
3. ``job_status`` polling, whole jobs. A ``train_start`` job of n steps while the guest polls
   ``job_status`` 1000 times a second (a wasm loop paced on a 1 ms grid with WASI
   ``clock_time_get`` and ``poll_oneoff`` sleeps; the rate reached is reported), against the
   same job while the guest blocks in ``job_wait(-1)``; a third arm runs the job while a
   plain Python thread wakes on the same grid. Compared: the job's per-step times (the
   Trainer's own ``ms`` in metrics.jsonl). Whole jobs differ by several per cent from one
   to the next on a shared machine, as much as the effect looked for.
4. ``polling_windows``: the polling cost inside each job. The guest polls in windows of
   ``--window`` steps and waits in 20 ms ``job_wait`` slices in the windows between; the
   on-window steps over the next off-window's, so the machine's drift cancels. The same
   windows for a C thread that only sleeps to the grid and for a Python thread, both
   beside a Trainer (ordinary threads: what any 1000/s waker costs). Goal: under 2%.

Run (heavy: keep it off other benchmarks):
    flock /tmp/pyllmc-heavy.lock python benchmarks/wasm_bench.py --model d6 --batch 4 --seq 64 \\
        --threads 2 --steps 20 --repeats 5 --out benchmarks/results/wasm
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "parity_tests"))  # the WAT helpers of the tests

from wasm_guests import STATUS_LOOP as WG_STATUS_LOOP  # noqa: E402
from wasm_guests import Driver, wrapper_module  # noqa: E402

from pyllmc import GPTConfig, Model, Trainer, TrainerConfig  # noqa: E402
from pyllmc.data import write_shard  # noqa: E402
from pyllmc.wasm import Host, abi  # noqa: E402

STEPS_LOOP = """
  (func (export "steps") (param $m i32) (param $l i32) (param $n i32) (param $out i32) (result i32)
    (local $i i32) (local $st i32)
    (block $done
      (loop $next
        (br_if $done (i32.ge_s (local.get $i) (local.get $n)))
        (local.set $st (call $train_step (local.get $m) (local.get $l) (f32.const 0.0003) (local.get $out)))
        (br_if $done (i32.ne (local.get $st) (i32.const 0)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (local.get $st))
"""

# poll_oneoff subscription (48 bytes) at 512: userdata 0, tag 0 (clock) at +8, clock id 1
# (monotonic) at +16, timeout (ns) at +24, precision 0 at +32, flags 0 (relative) at +40.
# The loop is paced on a grid of `period_ns`: after the n-th job_status it sleeps until
# t0 + n * period (or not at all when already late), so a sleep that oversleeps (the
# scheduler of a busy machine) is made up by the next polls and the average rate is
# 1e9 / period as long as the machine can deliver it.
POLL_LOOP = """
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
  (func $now (result i64) (drop (call $clock (i32.const 1) (i64.const 0) (i32.const 600))) (i64.load (i32.const 600)))
  (func (export "poll") (param $job i32) (param $out i32) (param $period i64) (result i32)
    (local $n i64) (local $t0 i64) (local $wait i64)
    (i64.store (i32.const 512) (i64.const 0))
    (i64.store (i32.const 520) (i64.const 0))
    (i32.store (i32.const 528) (i32.const 1))
    (i64.store (i32.const 544) (i64.const 0))
    (i64.store (i32.const 552) (i64.const 0))
    (local.set $t0 (call $now))
    (block $done
      (loop $again
        (drop (call $job_status (local.get $job) (local.get $out)))
        (local.set $n (i64.add (local.get $n) (i64.const 1)))
        (br_if $done (i32.ne (i32.load (local.get $out)) (i32.const 0)))
        (local.set $wait (i64.sub (i64.add (local.get $t0) (i64.mul (local.get $n) (local.get $period))) (call $now)))
        (if (i64.gt_s (local.get $wait) (i64.const 0))
          (then
            (i64.store (i32.const 536) (local.get $wait))
            (drop (call $poll_oneoff (i32.const 512) (i32.const 640) (i32.const 1) (i32.const 704)))))
        (br $again)))
    (i32.wrap_i64 (local.get $n)))

  (func (export "poll_windows") (param $job i32) (param $out i32) (param $period i64) (param $w i32) (result i32)
    (local $n i32) (local $next i64) (local $wait i64) (local $off i32)
    (i64.store (i32.const 512) (i64.const 0))
    (i64.store (i32.const 520) (i64.const 0))
    (i32.store (i32.const 528) (i32.const 1))
    (i64.store (i32.const 544) (i64.const 0))
    (i64.store (i32.const 552) (i64.const 0))
    (local.set $off (i32.const 1))
    (block $done
      (loop $again
        (drop (call $job_status (local.get $job) (local.get $out)))
        (br_if $done (i32.ne (i32.load (local.get $out)) (i32.const 0)))
        (if (i32.and (i32.div_u (i32.load offset=4 (local.get $out)) (local.get $w)) (i32.const 1))
          (then
            (local.set $off (i32.const 1))
            (drop (call $job_wait (local.get $job) (i32.const 20))))
          (else
            (local.set $n (i32.add (local.get $n) (i32.const 1)))
            (if (local.get $off) (then (local.set $next (call $now)) (local.set $off (i32.const 0))))
            (local.set $next (i64.add (local.get $next) (local.get $period)))
            (local.set $wait (i64.sub (local.get $next) (call $now)))
            (if (i64.gt_s (local.get $wait) (i64.const 0))
              (then
                (i64.store (i32.const 536) (local.get $wait))
                (drop (call $poll_oneoff (i32.const 512) (i32.const 640) (i32.const 1) (i32.const 704)))))))
        (br $again)))
    (local.get $n))
"""

# A thread that does nothing but wake on a grid, in C (no Python, no GIL): the scheduler's
# own price of a 1000/s waker, compiled by the benchmark with the system C compiler.
WAKER_C = r"""
#include <time.h>
#include <stdint.h>
static int64_t now_ns(void) {
    struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}
/* Until *stop: while *on, sleep to the next point of a period_ns grid; while not, sleep
 * 20 ms at a time (as the windowed guest's job_wait slices). Returns the grid wake-ups. */
long waker_run(long period_ns, volatile const int *on, volatile const int *stop) {
    long n = 0; int64_t next = 0; int was_off = 1;
    while (!*stop) {
        struct timespec ts;
        if (!*on) { was_off = 1; ts.tv_sec = 0; ts.tv_nsec = 20000000L; nanosleep(&ts, 0); continue; }
        if (was_off) { next = now_ns(); was_off = 0; }
        next += period_ns; n++;
        if (next > now_ns()) {
            ts.tv_sec = next / 1000000000LL; ts.tv_nsec = next % 1000000000LL;
            clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, 0);
        }
    }
    return n;
}
"""


def _module(pages: int = 16) -> str:
    """The wrapper guest of the tests plus the two loops above."""
    return _fix_import_order(wrapper_module(pages=pages, extra=STEPS_LOOP + POLL_LOOP))


def _fix_import_order(src: str) -> str:
    """WAT needs imports before definitions: move the WASI imports of the loops up."""
    for line in ('  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))',
                 '  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))'):
        src = src.replace(line, "")
        src = src.replace("(module\n", "(module\n" + line + "\n", 1)
    return src


def _shard(directory: Path, vocab: int, n: int) -> Path:
    import numpy as np

    p = directory / "train_000.bin"
    write_shard(p, np.random.default_rng(0).integers(0, vocab, n))
    return p


def _guest_model(d: "Driver", cfg: GPTConfig, args) -> tuple:
    """model_create of ``cfg`` (seed 1) and a shuffled loader of the shard: (model, loader)."""
    c = d.buf(struct.pack("<6i", cfg.max_seq_len, cfg.vocab_size, cfg.padded_vocab_size, cfg.num_layers,
                          cfg.num_heads, cfg.channels))[0]
    o = d.out(4)
    assert d.call("model_create", c, 1, o) == 0, d.error
    return d.i32(o), d.loader("/data/train_000.bin", args.batch, args.seq, 1, 1)


def _guest_job(d: "Driver", m: int, tl: int, args, nsteps: int, out_dir: Path) -> int:
    """train_start of ``nsteps`` constant-lr steps into the guest's /data/<out_dir name>."""
    return d.job(m, tl, json.dumps({"steps": nsteps, "lr": 3e-4, "schedule": "constant", "plot": False,
                                    "out_dir": f"/data/{out_dir.name}", "threads": args.threads}))


def bench_train_step(args, data: Path, cfg: GPTConfig) -> dict:
    """Blocks of ``--steps`` steps, guest and Trainer alternating (ABAB, then BABA ...), both
    kept alive across blocks; each block's per-step time excludes its first step (the
    Trainer restarting its loop, the guest's first call)."""
    host = Host(threads=args.threads)
    g = host.instantiate(_module(), dirs=[(str(data), "/data")])
    d = Driver(g)
    m, tl = _guest_model(d, cfg, args)
    out = d.out(4)
    model = Model.from_config(cfg, max_batch=args.batch, max_seq=args.seq, threads=args.threads, seed=1)
    tc = TrainerConfig(model=model, data=str(data / "train_000.bin"), batch_size=args.batch, seq_len=args.seq,
                       steps=10**9, lr=3e-4, schedule="constant", seed=1, progress="none", plot=False,
                       threads=args.threads)
    trainer = Trainer(tc, model=model)
    stamps = []

    def on_step(_):
        stamps.append(time.perf_counter())
        return len(stamps) >= args.steps  # True stops train() after this step

    trainer.add_callback("step_end", on_step)

    cpu = []

    def guest_block() -> float:
        assert g.call("steps", m, tl, 1, out) == 0, d.error
        t0, c0 = time.perf_counter(), time.process_time()
        assert g.call("steps", m, tl, args.steps - 1, out) == 0, d.error
        cpu.append((time.process_time() - c0) * 1000 / (args.steps - 1))
        return (time.perf_counter() - t0) * 1000 / (args.steps - 1)

    def trainer_block() -> float:
        stamps.clear()
        cstamps.clear()
        trainer.train()
        cpu.append((cstamps[-1] - cstamps[0]) * 1000 / (len(cstamps) - 1))
        return (stamps[-1] - stamps[0]) * 1000 / (len(stamps) - 1)

    cstamps = []
    trainer.add_callback("step_end", lambda _: cstamps.append(time.process_time()))
    guest_block(), trainer_block()  # warm-up: growth of the guest's model, first-touch of buffers
    guest_ms, trainer_ms, guest_cpu, trainer_cpu = [], [], [], []
    for rep in range(args.repeats):
        for which in (("guest", "trainer") if rep % 2 == 0 else ("trainer", "guest")):
            if which == "guest":
                guest_ms.append(guest_block())
                guest_cpu.append(cpu[-1])
            else:
                trainer_ms.append(trainer_block())
                trainer_cpu.append(cpu[-1])
        print(f"  train_step pair {rep}: guest {guest_ms[-1]:.2f} ms/step ({guest_cpu[-1]:.2f} CPU), "
              f"Trainer {trainer_ms[-1]:.2f} ms/step ({trainer_cpu[-1]:.2f} CPU)", flush=True)
    g.close()
    trainer.close()
    model.close()
    ratios = [gm / tm for gm, tm in zip(guest_ms, trainer_ms)]
    cratios = [gm / tm for gm, tm in zip(guest_cpu, trainer_cpu)]
    return {"guest_ms_per_step": guest_ms, "trainer_ms_per_step": trainer_ms, "ratio_guest_over_trainer": ratios,
            "guest_cpu_ms_per_step": guest_cpu, "trainer_cpu_ms_per_step": trainer_cpu,
            "summary": _summary(guest_ms, trainer_ms, ratios),
            "cpu_summary": _summary(guest_cpu, trainer_cpu, cratios)}


def _waker(period_s: float, stop: "threading.Event", counts: list) -> None:
    """A plain Python thread on the same grid as the polling guest, doing nothing else: what
    any thread that wakes 1000 times a second costs a job on this machine."""
    n, t0 = 0, time.perf_counter()
    while not stop.is_set():
        n += 1
        wait = t0 + n * period_s - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
    counts.append(n / (time.perf_counter() - t0))


def bench_polling(args, data: Path, cfg: GPTConfig) -> dict:
    """The same job three ways, in rotating order: the guest polls job_status on a 1 ms grid
    ("poll"), the guest blocks in job_wait ("wait", the reference), and the guest blocks in
    job_wait while a plain Python thread wakes on the same grid ("wake": the floor that the
    operating system's scheduler sets for any 1000/s poller, with no host call at all)."""
    src = _module()
    host = Host(threads=args.threads)
    steps = {"poll": [], "wait": [], "wake": []}
    rates, wake_rates = [], []
    orders = (("poll", "wait", "wake"), ("wait", "wake", "poll"), ("wake", "poll", "wait"))
    for rep in range(args.repeats):
        for mode in orders[rep % 3]:
            out_dir = data / f"run_{mode}_{rep}"
            with host.instantiate(src, dirs=[(str(data), "/data")]) as g:
                d = Driver(g)
                m, tl = _guest_model(d, cfg, args)
                job = _guest_job(d, m, tl, args, args.warmup + args.steps, out_dir)
                st = d.out(48)
                t0 = time.perf_counter()
                if mode == "poll":
                    n = g.call("poll", job, st, args.poll_period_us * 1000)
                    rates.append(n / (time.perf_counter() - t0))
                elif mode == "wake":
                    stop = threading.Event()
                    th = threading.Thread(target=_waker, args=(args.poll_period_us * 1e-6, stop, wake_rates))
                    th.start()
                    try:
                        assert d.call("job_wait", job, -1) == 0
                    finally:
                        stop.set()
                        th.join()
                else:
                    assert d.call("job_wait", job, -1) == 0
                assert d.call("job_status", job, st) == 0
                assert struct.unpack("<i", g.read(st, 4))[0] == abi.JOB_STATE["finished"]
            rows = _take_rows(out_dir)
            ms = statistics.median(r["ms"] for r in rows[args.warmup:])
            steps[mode].append(ms)
            extra = {"poll": f", {rates[-1]:.0f} polls/s" if rates else "",
                     "wake": f", {wake_rates[-1]:.0f} wake-ups/s" if wake_rates else "", "wait": ""}[mode]
            print(f"  polling rep {rep} {mode}: median step {ms:.2f} ms{extra}", flush=True)
    polled, blocked, woken = steps["poll"], steps["wait"], steps["wake"]
    ratios = [p / w for p, w in zip(polled, blocked)]
    wake_ratios = [k / w for k, w in zip(woken, blocked)]
    host_ratios = [p / k for p, k in zip(polled, woken)]
    return {"polled_step_ms": polled, "blocked_step_ms": blocked, "woken_step_ms": woken, "polls_per_s": rates,
            "wake_ups_per_s": wake_rates, "ratio_polled_over_blocked": ratios, "ratio_woken_over_blocked": wake_ratios,
            "ratio_polled_over_woken": host_ratios, "summary": _summary(polled, blocked, ratios),
            "wake_summary": _summary(woken, blocked, wake_ratios), "host_summary": _summary(polled, woken, host_ratios)}


def _build_waker(directory: Path):
    """WAKER_C as a shared library (ctypes), or None with the reason printed."""
    import ctypes
    import subprocess

    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if not cc:
        print("  native waker: no C compiler, arm skipped", flush=True)
        return None
    src, lib = directory / "waker.c", directory / "libwaker.so"
    src.write_text(WAKER_C)
    subprocess.run([cc, "-O2", "-shared", "-fPIC", str(src), "-o", str(lib)], check=True)
    dll = ctypes.CDLL(str(lib))
    dll.waker_run.restype = ctypes.c_long
    dll.waker_run.argtypes = [ctypes.c_long, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int)]
    return dll


def _direct_trainer(args, data: Path, cfg: GPTConfig, nsteps: int, out_dir: Path) -> "Trainer":
    """The Trainer the guest's train_start job runs, built directly: same model seed, data,
    batch, constant lr and threads, writing into ``out_dir``."""
    model = Model.from_config(cfg, max_batch=args.batch, max_seq=args.seq, threads=args.threads, seed=1)
    tc = TrainerConfig(model=model, data=str(data / "train_000.bin"), batch_size=args.batch, seq_len=args.seq,
                       steps=nsteps, lr=3e-4, schedule="constant", seed=1, progress="none", plot=False,
                       threads=args.threads, out_dir=str(out_dir))
    return Trainer(tc, model=model)


def _take_rows(out_dir: Path) -> list:
    """The run's metrics.jsonl rows; the run directory (its checkpoint) is deleted, so that
    long benchmarks do not fill the disk."""
    rows = [json.loads(x) for x in (out_dir / "metrics.jsonl").read_text().splitlines()]
    shutil.rmtree(out_dir)
    return rows


def bench_job(args, data: Path, cfg: GPTConfig) -> dict:
    """A guest's train_start job (the guest blocks in job_wait) against the Trainer run
    directly in the main thread, the same settings, alternating (one job each per repeat,
    order flipped every repeat); per-step times from each run's metrics.jsonl. The guest
    first runs an evaluate with the host's threads, so its thread holds OpenMP workers as a
    real guest's does after model_create or train_step."""
    host = Host(threads=args.threads)
    nsteps = args.warmup + args.steps
    jobs, direct = [], []
    for rep in range(args.repeats):
        for arm in (("job", "trainer") if rep % 2 == 0 else ("trainer", "job")):
            out_dir = data / f"job_{arm}_{rep}"
            if arm == "job":
                with host.instantiate(_module(), dirs=[(str(data), "/data")]) as g:
                    d = Driver(g)
                    m, tl = _guest_model(d, cfg, args)
                    assert d.call("evaluate", m, tl, 1, d.out(4)) == 0, d.error
                    job = _guest_job(d, m, tl, args, nsteps, out_dir)
                    assert d.call("job_wait", job, -1) == 0
            else:
                _direct_trainer(args, data, cfg, nsteps, out_dir).train()
            rows = _take_rows(out_dir)
            ms = statistics.median(r["ms"] for r in rows[args.warmup:])
            (jobs if arm == "job" else direct).append(ms)
            print(f"  job rep {rep} {arm}: median step {ms:.2f} ms", flush=True)
    ratios = [a / b for a, b in zip(jobs, direct)]
    return {"job_step_ms": jobs, "trainer_step_ms": direct, "ratios": ratios,
            "summary": _summary(jobs, direct, ratios)}


def _window_ratios(ms: list, w: int, warmup: int) -> tuple:
    """Per-step times of one job whose steps alternate between windows of ``w`` steps with the
    poller on (even windows) and off. The first step of each window is left out (the guest
    notices a new window up to one job_wait slice late) and so are the warm-up steps. Returns
    (on-window step times, off-window step times, the ratio of each on window's mean over the
    next off window's)."""
    on, off, ratios = [], [], []
    for j in range(len(ms) // w):
        clean = [ms[k] for k in range(j * w + 1, (j + 1) * w) if k >= warmup]
        (on if j % 2 == 0 else off).extend(clean)
        if j % 2 == 1 and clean:
            prev = [ms[k] for k in range((j - 1) * w + 1, j * w) if k >= warmup]
            if prev:
                ratios.append(statistics.fmean(prev) / statistics.fmean(clean))
    return on, off, ratios


def bench_polling_windows(args, data: Path, cfg: GPTConfig) -> dict:
    """Polling cost measured inside each job, which cancels the machine's drift between jobs:
    the job's steps alternate between windows of ``--window`` steps in which the poller runs and
    windows in which it waits in 20 ms slices. The pollers (``--arms``), in rotating order:
    "guest" (the wasm guest polls job_status on the 1 ms grid, WASI sleeps between, in a
    train_start job), "native" (a C thread that only sleeps to the same grid,
    beside a Trainer: what the operating system charges any ordinary 1000/s waker) and
    "python" (a plain Python thread doing the same)."""
    import ctypes

    host = Host(threads=args.threads)
    w, nsteps = args.window, args.window * 2 * args.windows + args.window
    waker = _build_waker(data) if "native" in args.arms else None
    arms = [a for a in args.arms if a != "native" or waker is not None]
    res = {a: {"on_ms": [], "off_ms": [], "ratios": [], "wakes_per_s": []} for a in arms}
    period = args.poll_period_us * 1e-6

    def direct(arm: str, out_dir: Path) -> float:
        on, stop = ctypes.c_int(1), ctypes.c_int(0)
        count: list = []
        trainer = _direct_trainer(args, data, cfg, nsteps, out_dir)
        done = [0]

        def on_step(_):
            done[0] += 1
            on.value = 1 if (done[0] // w) % 2 == 0 else 0
        trainer.add_callback("step_end", on_step)

        def py_loop():
            n, nxt, was_off = 0, 0.0, True
            while not stop.value:
                if not on.value:
                    was_off = True
                    time.sleep(0.02)
                    continue
                if was_off:
                    nxt, was_off = time.perf_counter(), False
                nxt += period
                n += 1
                wait = nxt - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
            count.append(n)

        def c_loop():
            count.append(waker.waker_run(args.poll_period_us * 1000, ctypes.byref(on), ctypes.byref(stop)))
        th = threading.Thread(target=c_loop if arm == "native" else py_loop)
        th.start()
        try:
            trainer.train()
        finally:
            stop.value = 1
            th.join()
        return count[0]

    for rep in range(args.repeats):
        for arm in arms[rep % len(arms):] + arms[:rep % len(arms)]:
            out_dir = data / f"win_{arm}_{rep}"
            if arm == "guest":
                with host.instantiate(_module(), dirs=[(str(data), "/data")]) as g:
                    d = Driver(g)
                    m, tl = _guest_model(d, cfg, args)
                    job = _guest_job(d, m, tl, args, nsteps, out_dir)
                    st = d.out(48)
                    wakes = g.call("poll_windows", job, st, args.poll_period_us * 1000, w)
                    assert d.call("job_wait", job, -1) == 0
            else:
                wakes = direct(arm, out_dir)
            rows = _take_rows(out_dir)
            on_time_s = sum(r["ms"] for r in rows if ((r["step"] - 1) // w) % 2 == 0) / 1000
            rate = wakes / on_time_s
            on_ms, off_ms, ratios = _window_ratios([r["ms"] for r in rows], w, args.warmup)
            r = res[arm]
            r["on_ms"] += on_ms
            r["off_ms"] += off_ms
            r["ratios"] += ratios
            r["wakes_per_s"].append(rate)
            print(f"  windows rep {rep} {arm}: on {statistics.median(on_ms):.2f} ms, off "
                  f"{statistics.median(off_ms):.2f} ms, window ratios median {statistics.median(ratios):.4f}, "
                  f"{rate:.0f} wake-ups/s while on", flush=True)
    for arm in arms:
        r = res[arm]
        r["summary"] = _summary(r["on_ms"], r["off_ms"], r["ratios"])
    return res


STATUS_LOOP = WG_STATUS_LOOP + """
  (func (export "last_error_loop") (param $unused i32) (param $out i32) (param $n i32)
    (block $done (loop $l
      (br_if $done (i32.eqz (local.get $n)))
      (drop (call $last_error (local.get $out) (i32.const 0) (i32.add (local.get $out) (i32.const 8))))
      (local.set $n (i32.sub (local.get $n) (i32.const 1)))
      (br $l))))
"""


def bench_call_costs(args, data: Path) -> dict:
    """What one host call costs the guest's thread (CPU time, min of 5 runs of 20000 calls):
    job_status (the polled call) and last_error with cap 0 (about the floor of any call:
    trampoline, dispatch, two bounds checks, one write), and building the Trainer object that
    train_step runs each step through. These bound the overheads: 1000 job_status calls per
    second cost 1000 x job_status of one core; train_step adds the floor plus the Trainer
    construction to each step."""
    from pyllmc.wasm.jobs import step_trainer

    host = Host(threads=1)
    res = {}
    with host.instantiate(_fix_import_order(wrapper_module(pages=4, extra=STATUS_LOOP)),
                          dirs=[(str(data), "/data")]) as g:
        d = Driver(g)
        m = d.model()
        tl = d.loader("/data/train_000.bin", 2, 16)
        job = d.job(d.model(), d.loader("/data/train_000.bin", 2, 16), '{"steps": 1, "plot": false}')
        assert d.call("job_wait", job, -1) == 0
        o = d.out(48)
        n = 20000
        for name, fn, h in (("job_status_us", "status_loop", job), ("last_error_us", "last_error_loop", 0)):
            best = []
            for _ in range(5):
                c0 = time.process_time()
                g.call(fn, h, o, n)
                best.append((time.process_time() - c0) * 1e6 / n)
            res[name] = {"min": min(best), "median": statistics.median(best)}
        loader = g.context.handles.get(tl, "loader", "bench").loader
        model = g.context.handles.get(m, "model", "bench").model
        best = []
        for _ in range(5):
            c0 = time.process_time()
            for i in range(2000):
                step_trainer(model, loader, 1e-3, i + 1)
            best.append((time.process_time() - c0) * 1e6 / 2000)
        res["step_trainer_construction_us"] = {"min": min(best), "median": statistics.median(best)}
    for k, v in res.items():
        print(f"  {k}: min {v['min']:.2f} us, median {v['median']:.2f} us", flush=True)
    return res


def _summary(a, b, ratios) -> dict:
    return {"a_min": min(a), "a_median": statistics.median(a), "b_min": min(b), "b_median": statistics.median(b),
            "ratio_of_mins": min(a) / min(b), "ratio_of_medians": statistics.median(a) / statistics.median(b),
            "paired_ratio_median": statistics.median(ratios), "paired_ratio_min": min(ratios),
            "paired_ratio_max": max(ratios)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="d6")
    p.add_argument("--vocab-size", type=int, default=50257)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--poll-period-us", type=int, default=1000,
                   help="the polling guest calls job_status on this grid (1000 us: 1000 polls/s)")
    p.add_argument("--window", type=int, default=4, help="polling_windows: steps per window")
    p.add_argument("--windows", type=int, default=10, help="polling_windows: on/off window pairs per job")
    p.add_argument("--arms", type=lambda v: v.split(","), default=["guest", "native", "python"],
                   help="polling_windows: pollers, comma-separated: guest, native, python")
    p.add_argument("--only", choices=["calls", "train_step", "job", "polling", "polling_windows"], default=None)
    p.add_argument("--out", default=str(ROOT / "out" / "wasm_bench"))
    args = p.parse_args(argv)
    cfg = GPTConfig.from_size(args.model, max_seq_len=1024, vocab_size=args.vocab_size)
    res = {"config": vars(args), "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                             "note": "shared machine (other engineers' jobs ran at the same time)"},
           "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        _shard(data, cfg.vocab_size, max(200_000, 4 * args.batch * args.seq * (args.steps + args.warmup) * 2))
        if args.only in (None, "calls"):
            print("host call costs", flush=True)
            res["call_costs"] = bench_call_costs(args, data)
        if args.only in (None, "train_step"):
            print("train_step loop: guest vs Trainer", flush=True)
            res["train_step"] = bench_train_step(args, data, cfg)
        if args.only in (None, "job"):
            print("train_start job vs the Trainer in the main thread", flush=True)
            res["job"] = bench_job(args, data, cfg)
        if args.only in (None, "polling"):
            print("job_status polling vs job_wait", flush=True)
            res["polling"] = bench_polling(args, data, cfg)
        if args.only in (None, "polling_windows"):
            print("polling in windows: job steps with the poller on over steps with it off", flush=True)
            res["polling_windows"] = bench_polling_windows(args, data, cfg)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "wasm_bench.json").write_text(json.dumps(res, indent=1) + "\n")
    lines = [f"# pyllmc.wasm overhead ({args.model} B={args.batch} T={args.seq}, {args.threads} threads, "
             f"{args.repeats} A/B pairs of {args.steps} steps; {res['started']}; shared machine)", ""]
    names = {"train_step": ("guest train_step loop", "Trainer"), "polling": ("job while polled", "job while job_wait"),
             "job": ("train_start job", "Trainer in the main thread")}
    for k in ("train_step", "job", "polling"):
        if k in res:
            s = res[k]["summary"]
            a, b = names[k]
            line = (f"{k}: {a} min {s['a_min']:.2f} / median {s['a_median']:.2f} ms per step, {b} min "
                    f"{s['b_min']:.2f} / median {s['b_median']:.2f} ms; ratio of mins {s['ratio_of_mins']:.4f}, "
                    f"of medians {s['ratio_of_medians']:.4f}, paired ratios median {s['paired_ratio_median']:.4f} "
                    f"[{s['paired_ratio_min']:.4f}, {s['paired_ratio_max']:.4f}]")
            if k == "polling":
                r = res[k]["polls_per_s"]
                line += f"; polls/s min {min(r):.0f} median {statistics.median(r):.0f}"
                w, h = res[k]["wake_summary"], res[k]["host_summary"]
                wr = res[k]["wake_ups_per_s"]
                line += (f". Floor, a plain Python thread waking on the same grid ({statistics.median(wr):.0f}/s) "
                         f"instead of the guest polling: job min {w['a_min']:.2f} / median {w['a_median']:.2f} ms, "
                         f"over job_wait: ratio of medians {w['ratio_of_medians']:.4f}, paired median "
                         f"{w['paired_ratio_median']:.4f}; the host's own share, polled over that floor: ratio of "
                         f"medians {h['ratio_of_medians']:.4f}, paired median {h['paired_ratio_median']:.4f}")
            if k == "train_step":
                c = res[k]["cpu_summary"]
                line += (f"; CPU time per step: guest median {c['a_median']:.2f}, Trainer {c['b_median']:.2f} ms, "
                         f"ratio of medians {c['ratio_of_medians']:.4f}, paired median {c['paired_ratio_median']:.4f}")
            print(line)
            lines.append("- " + line)
    if "polling_windows" in res:
        for arm, r in res["polling_windows"].items():
            s = r["summary"]
            line = (f"polling_windows {arm}: steps with the poller on median {s['a_median']:.2f} ms, off "
                    f"{s['b_median']:.2f} ms, ratio of medians {s['ratio_of_medians']:.4f}; window ratios "
                    f"(n={len(r['ratios'])}) median {s['paired_ratio_median']:.4f} [{s['paired_ratio_min']:.4f}, "
                    f"{s['paired_ratio_max']:.4f}]; wake-ups/s while on, median {statistics.median(r['wakes_per_s']):.0f}")
            print(line)
            lines.append("- " + line)
    if "call_costs" in res:
        c = res["call_costs"]
        line = ("host call costs (CPU per call, min / median): " + ", ".join(
            f"{k[:-3]} {v['min']:.2f} / {v['median']:.2f} us" for k, v in c.items()))
        print(line)
        lines.append("- " + line)
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print(f"-> {out / 'wasm_bench.json'}, {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
