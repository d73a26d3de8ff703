"""A guest's training run is `pyllmc train`'s, bit for bit.

The SDK's `train` example, in C and in Rust, is run with `pyllmc wasm run` on shards in a
preopened directory; `pyllmc train` runs natively with the same settings (d2, byte vocabulary,
a seed that is not the default, warmup, cosine schedule, evaluation and checkpoints every 3
steps, one thread on both sides). Compared: every metrics.jsonl row (loss, lr, grad_norm,
val_loss; only the wall-clock fields ms and tokens_per_s may differ), every checkpoint's
model.bin and optimizer.bin byte for byte, state.json except its wall-clock fields, and the
guest's final model_save output against the last checkpoint's model.bin.

The `steps` example drives its own loop of train_step calls at a constant learning rate; its
losses equal those of `pyllmc train --schedule constant` with that rate (a power of two, so
that the ABI's f32 lr and the CLI's double are the same number), bit for bit in float32.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

STEPS = 6
SETTINGS = {"model": "d2", "vocab-size": 257, "max-seq-len": 64, "steps": STEPS, "batch": 4, "seq": 32,
            "lr": 2e-3, "warmup": 2, "seed": 7, "threads": 1, "eval-every": 3, "eval-batches": 2,
            "save-every": 3}
CONSTANT_LR = "0.0009765625"  # 2**-10: exact in float32 and float64
WALL_CLOCK_ROW = {"ms", "tokens_per_s"}
WALL_CLOCK_STATE = {"saved_at", "metrics_bytes"}  # metrics_bytes: the length of rows holding ms


def _load_build():
    spec = importlib.util.spec_from_file_location("pyllmc_guest_build", ROOT / "bindings" / "guest" / "build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


build = _load_build()




def pyllmc(*args, cwd):
    return subprocess.run([sys.executable, "-m", "pyllmc", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


def flags(settings):
    return [x for k, v in settings.items() for x in (f"--{k}", str(v))]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A work directory with data/ (byte-tokenized shards + tokenizer.bin) and runs/."""
    try:
        import wasmtime  # noqa: F401
    except ImportError as e:
        build.need(f"wasmtime is not installed (pip install 'pyllmc[wasm]'): {e}")
    from pyllmc.prepare import prepare_data

    d = tmp_path_factory.mktemp("guest_run")
    text = d / "input.txt"
    text.write_text("".join(f"Verse {i}: now is the winter of our discontent, made glorious summer {i * 7 % 13}.\n"
                            for i in range(400)))
    prepare_data([str(text)], str(d / "data"), tokenizer="byte", val_frac=0.1, shard_tokens=100_000)
    (d / "runs").mkdir()
    return d


@pytest.fixture(scope="module")
def guests(tmp_path_factory):
    out = tmp_path_factory.mktemp("guests")
    built = {}
    for lang, missing, builder in (("c", build.c_toolchain_missing, build.build_c),
                                   ("rust", build.rust_toolchain_missing, build.build_rust)):
        reason = missing()
        built[lang] = reason if reason else builder(out / lang)
    return built


def guest(guests, lang, name):
    b = guests[lang]
    build.need(b if isinstance(b, str) else None)
    return b[name]


@pytest.fixture(scope="module")
def native(work):
    r = pyllmc("train", "--data", "data/train_*.bin", "--val-data", "data/val_*.bin", "--out", "runs/native",
               "--progress", "none", "--no-plot", *flags(SETTINGS), cwd=work)
    assert r.returncode == 0, r.stderr
    return work / "runs" / "native"


def run_guest(work, wasm, out_name, *args, expect=0):
    r = pyllmc("wasm", "run", wasm, "--dir", "data::/data", "--dir", "runs::/runs", "--",
               "--out", f"/runs/{out_name}", *args, cwd=work)
    assert r.returncode == expect, f"exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def checkpoints(run_dir):
    return sorted(p.name for p in run_dir.iterdir() if re.fullmatch(r"ckpt_\d{8,}", p.name))


def assert_same_run(guest_dir, native_dir):
    g, n = rows(guest_dir), rows(native_dir)
    assert [r["step"] for r in g] == list(range(1, STEPS + 1))
    assert len(g) == len(n)
    for a, b in zip(g, n):
        assert set(a) == set(b), (a, b)
        for k in set(a) - WALL_CLOCK_ROW:
            assert a[k] == b[k], f"step {a['step']}: {k} guest {a[k]!r} native {b[k]!r}"
    assert sum("val_loss" in r for r in g) == 2  # steps 3 and 6 evaluated
    ckpts = checkpoints(native_dir)
    assert ckpts == ["ckpt_00000003", "ckpt_00000006"] and checkpoints(guest_dir) == ckpts
    for c in ckpts:
        for f in ("model.bin", "optimizer.bin"):
            a, b = (guest_dir / c / f).read_bytes(), (native_dir / c / f).read_bytes()
            assert a == b, f"{c}/{f}: guest and native differ"
        sa, sb = (json.loads((d / c / "state.json").read_text()) for d in (guest_dir, native_dir))
        assert set(sa) == set(sb)
        assert {k: v for k, v in sa.items() if k not in WALL_CLOCK_STATE} == \
            {k: v for k, v in sb.items() if k not in WALL_CLOCK_STATE}
    # the guest's own model_save after training writes the same parameters as the last checkpoint
    assert (guest_dir / "final.bin").read_bytes() == (native_dir / ckpts[-1] / "model.bin").read_bytes()


@pytest.mark.parametrize("lang", ["c", "rust"])
def test_guest_train_equals_pyllmc_train(work, guests, native, lang):
    wasm = guest(guests, lang, "train")
    r = run_guest(work, wasm, f"train_{lang}", *flags(SETTINGS), "--sample-tokens", "16")
    out = r.stdout
    assert "model: GPT-2 L2 C128 H2 V257" in out
    assert re.search(rf"^step {STEPS}/{STEPS} \| loss \d+\.\d{{4}} \| val \d", out, flags=re.M), out
    assert re.search(r"^val loss \d+\.\d{4} \(2 batches\)$", out, flags=re.M), out
    assert "--- sample ---" in out and f"saved /runs/train_{lang}/final.bin" in out
    assert_same_run(work / "runs" / f"train_{lang}", native)


@pytest.mark.parametrize("lang", ["c", "rust"])
def test_guest_train_reports_why_its_job_failed(work, guests, lang):
    """A diverging run (lr 1e30): the job fails with BAD_STATE, and the example prints the
    host's reason from job_error (an addition to version 1) and exits 1."""
    wasm = guest(guests, lang, "train")
    r = run_guest(work, wasm, f"diverged_{lang}", "--steps", "5", "--lr", "1e30", "--threads", "1", expect=1)
    line = r.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"train\.wasm: the job ended failed at step 1 \(BAD_STATE: step 2: the loss is nan; "
                        r"first non-finite tensor in data-flow order: .+\)", line), r.stderr


BAD_FLAGS = [
    (["--steps", "0"], r"--steps: expected an integer (>= 1|in \[1, \d+\]), got '0'"),
    (["--lr", "fast"], r"--lr: expected a finite number >= 0, got 'fast'"),
    (["--model", "x2"], r"--model: expected a size dN \(e\.g\. d2\), got 'x2'"),
    (["--bogus", "1"], r"unknown flag '--bogus'"),
]


@pytest.mark.parametrize("lang", ["c", "rust"])
@pytest.mark.parametrize("args,message", BAD_FLAGS, ids=[a[0] for a, _ in BAD_FLAGS])
def test_train_example_rejects_bad_flags(work, guests, lang, args, message):
    """The examples treat their own command line as input: exit 2, one message naming the flag."""
    r = run_guest(work, guest(guests, lang, "train"), f"bad_{lang}", *args, expect=2)
    assert re.search(r"^train\.wasm: " + message, r.stderr, flags=re.M), r.stderr
    assert not (work / "runs" / f"bad_{lang}").exists()


def test_c_train_example_refuses_an_overlong_path(work, guests):
    r = run_guest(work, guest(guests, "c", "train"), "x" * 401, expect=2)
    assert "train.wasm: --out: the path is longer than 400 bytes" in r.stderr


@pytest.mark.parametrize("lang", ["c", "rust"])
def test_guest_json_escaping_reaches_the_host_intact(work, guests, lang):
    """train_start's JSON is written by the SDK side (the C example's escaper, the Rust crate's
    writer): an out_dir with a quote, a backslash, a tab and non-ASCII letters arrives as exactly
    that directory name."""
    wasm = guest(guests, lang, "train")
    name = f'odd {lang} "q" back\\slash\ttab été'
    run_guest(work, wasm, name, "--steps", "1", "--threads", "1", "--sample-tokens", "0")
    made = work / "runs" / name
    assert made.is_dir(), sorted(p.name for p in (work / "runs").iterdir())
    assert (made / "metrics.jsonl").is_file() and (made / "final.bin").is_file()


@pytest.fixture(scope="module")
def native_constant(work):
    s = dict(SETTINGS, lr=CONSTANT_LR, warmup=0)
    for k in ("eval-every", "save-every"):
        s.pop(k)
    r = pyllmc("train", "--data", "data/train_*.bin", "--out", "runs/native_constant", "--progress", "none",
               "--no-plot", "--schedule", "constant", *flags(s), cwd=work)
    assert r.returncode == 0, r.stderr
    return [np.float32(row["loss"]) for row in rows(work / "runs" / "native_constant")]


@pytest.mark.parametrize("lang", ["c", "rust"])
def test_guest_train_step_loop_equals_pyllmc_train(work, guests, native_constant, lang):
    wasm = guest(guests, lang, "steps")
    s = {k: v for k, v in SETTINGS.items() if k in ("model", "vocab-size", "max-seq-len", "steps", "batch", "seq",
                                                     "seed")}
    r = run_guest(work, wasm, f"steps_{lang}", *flags(s), "--lr", CONSTANT_LR)
    losses = [np.float32(x) for x in re.findall(r"^step \d+/\d+ \| loss (\S+)$", r.stdout, flags=re.M)]
    assert len(losses) == STEPS
    assert losses == native_constant
    # the rest of the example's tour of the ABI
    assert "decoded back: 'To be'" in r.stdout and "(differs)" not in r.stdout
    assert re.search(r"^val loss (\S+), reloaded \1$", r.stdout, flags=re.M), r.stdout
    assert re.search(r"^background job: stopped after \d+ of 1000000 steps$", r.stdout, flags=re.M), r.stdout
