"""Budgets and endings: --max-host-memory (refused before allocating), --max-handles,
--max-memory (the guest's linear memory), --timeout (epoch interruption, jobs stopped),
traps (exit 125), bad runner input (exit 2): one line each, never a traceback."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import threading
import time

import pytest

from wasm_guests import Driver, imports, make_shards, require_wasmtime, wrapper_module

require_wasmtime()

from pyllmc.wasm import Host, abi  # noqa: E402
from pyllmc.wasm.budget import model_bytes  # noqa: E402


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.fixture()
def data(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    make_shards(d, 20000, names=("train_000.bin",))
    return d


def _job_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "pyllmc-wasm-job" and t.is_alive())


# ------------------------------------------------------------------ host memory budget
def test_host_memory_budget_refuses_before_allocating(data):
    big = (1024, 50257, 50304, 48, 25, 1600)  # GPT-2 XL: ~25 GB with AdamW state
    with Host(max_host_memory="64M").instantiate(wrapper_module(), dirs=[(str(data), "/data")]) as g:
        d = Driver(g)
        r0 = _rss()
        t0 = time.perf_counter()
        c = d.buf(struct.pack("<6i", *big))[0]
        o = d.out(4)
        assert d.call("model_create", c, 0, o) == abi.LIMIT_EXCEEDED
        assert "max-host-memory" in d.error and "GiB" in d.error, d.error
        assert time.perf_counter() - t0 < 1.0 and _rss() - r0 < (16 << 20)
        assert g.context.budget.used == 0 and g.context.handles.live == 0
        assert d.i32(o) == struct.unpack("<i", b"\xAB" * 4)[0]
        # a model that fits, then one more that does not, then it fits again after a free
        small = (64, 257, 384, 2, 2, 64)
        per = model_bytes(__import__("pyllmc").GPTConfig(*small), 1, 64, 0)
        n = (64 << 20) // per
        hs = [d.model(small) for _ in range(n)]
        c = d.buf(struct.pack("<6i", *small))[0]
        assert d.call("model_create", c, 0, d.out(4)) == abi.LIMIT_EXCEEDED
        assert d.call("model_free", hs[0]) == 0
        assert d.call("model_create", c, 0, d.out(4)) == 0


def test_growing_a_model_is_budgeted(data):
    small = (64, 257, 384, 2, 2, 64)
    from pyllmc import GPTConfig

    need = model_bytes(GPTConfig(*small), 1, 64, 1) + model_bytes(GPTConfig(*small), 64, 64, 1)
    with Host(threads=1, max_host_memory=need - 1).instantiate(wrapper_module(), dirs=[(str(data), "/data")]) as g:
        d = Driver(g)
        m = d.model(small)
        tl = d.loader("/data/train_000.bin", 64, 64)
        o = d.out(4)
        assert d.call("train_step", m, tl, 1e-3, o) == abi.LIMIT_EXCEEDED and "growing the model" in d.error
        tl2 = d.loader("/data/train_000.bin", 2, 32)
        assert d.call("train_step", m, tl2, 1e-3, o) == 0, d.error  # the old model is intact and works
    with Host(threads=1, max_host_memory=need + (1 << 20)).instantiate(wrapper_module(),
                                                                        dirs=[(str(data), "/data")]) as g:
        d = Driver(g)
        m = d.model(small)
        tl = d.loader("/data/train_000.bin", 64, 64)
        assert d.call("train_step", m, tl, 1e-3, d.out(4)) == 0, d.error


MEASURE = """
import os, sys, numpy as np
from pyllmc import GPTConfig, Model
from pyllmc.wasm.budget import model_bytes
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
cfg = GPTConfig(256, 257, 384, 4, 4, 256)
B, T = 8, 128
r0 = rss()
m = Model.from_config(cfg, max_batch=B, max_seq=T, threads=2, seed=1)
x = np.zeros((B, T), dtype=np.int32)
m.forward(x, x); m.backward(accumulate=False); m.adamw_step(1e-3, t=1)
print(rss() - r0, model_bytes(cfg, B, T, 2))
"""


def test_budget_estimate_matches_the_memory_a_model_takes():
    """model_bytes against the RSS a model really adds in a fresh process once every buffer
    has been touched (forward, backward, AdamW): within 5% (0.2% measured when written)."""
    r = subprocess.run([sys.executable, "-c", MEASURE], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    grown, est = (int(v) for v in r.stdout.split())
    assert abs(est - grown) / grown < 0.05, (est, grown)


def test_loader_and_tokenizer_budgets(data):
    with Host(max_host_memory="1M").instantiate(wrapper_module(), dirs=[(str(data), "/data")]) as g:
        d = Driver(g)
        p = d.buf(b"/data/train_000.bin")
        assert d.call("dataloader_create", *p, 4096, 1024, 0, 0, d.out(4)) == abi.LIMIT_EXCEEDED
        assert d.call("dataloader_create", *p, 2, 16, 0, 0, d.out(4)) == 0
        p = d.buf(b"gpt2")
        assert d.call("tokenizer_load", *p, d.out(4)) == abi.LIMIT_EXCEEDED


# ------------------------------------------------------------------ handles
def test_max_handles(data):
    with Host(max_handles=3).instantiate(wrapper_module(), dirs=[(str(data), "/data")]) as g:
        d = Driver(g)
        hs = [d.model(), d.tokenizer(), d.loader("/data/train_000.bin")]
        used = g.context.budget.used
        for fn in ("model_create", "tokenizer_load", "dataloader_create"):
            if fn == "model_create":
                st = d.call(fn, d.buf(struct.pack("<6i", 64, 257, 384, 2, 2, 64))[0], 0, d.out(4))
            elif fn == "tokenizer_load":
                st = d.call(fn, *d.buf(b"byte"), d.out(4))
            else:
                st = d.call(fn, *d.buf(b"/data/train_000.bin"), 2, 16, 0, 0, d.out(4))
            assert st == abi.LIMIT_EXCEEDED and "max-handles" in d.error, (fn, st, d.error)
        st = d.call("train_start", hs[0], hs[2], 0, *d.buf(b'{"steps": 1, "plot": false}'), d.out(4))
        assert st == abi.LIMIT_EXCEEDED
        assert g.context.budget.used == used and g.context.handles.live == 3
        assert d.call("tokenizer_free", hs[1]) == 0
        assert d.call("model_create", d.buf(struct.pack("<6i", 64, 257, 384, 2, 2, 64))[0], 0, d.out(4)) == 0


def test_handle_slots_are_reused_with_new_generations():
    with Host().instantiate(wrapper_module()) as g:
        d = Driver(g)
        seen = set()
        for _ in range(200):
            t = d.tokenizer()
            assert t not in seen and t > 0
            seen.add(t)
            assert d.call("tokenizer_free", t) == 0
        assert len({h & 0xFFFF for h in seen}) == 1  # one slot, 200 generations
        for h in seen:
            assert d.call("tokenizer_free", h) == abi.INVALID_ARGUMENT


# ------------------------------------------------------------------ linear memory
GROW = """(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    ;; memory.grow past --max-memory returns -1: exit 3 then, 4 if it grew
    (if (i32.eq (memory.grow (i32.const 64)) (i32.const -1)) (then (call $exit (i32.const 3))))
    (call $exit (i32.const 4))))"""


def test_max_memory():
    assert Host(max_memory="1M").run(GROW).exit_code == 3
    assert Host(max_memory="16M").run(GROW).exit_code == 4
    r = Host(max_memory="1M").run("(module (memory (export \"memory\") 100) (func (export \"_start\")))")
    assert r.exit_code == 125 and r.message.startswith("guest trapped:") and "memory" in r.message


# ------------------------------------------------------------------ timeouts
SPIN = '(module (memory (export "memory") 1) (func (export "_start") (loop $l br $l)))'


def test_timeout_stops_a_spinning_guest():
    t0 = time.perf_counter()
    r = Host(timeout=0.5).run(SPIN)
    assert r.exit_code == 124 and r.outcome == "timeout" and "timed out" in r.message
    assert time.perf_counter() - t0 < 10


def _job_guest(loop_wait: bool) -> str:
    """A guest that creates a model + loader + a long job from data at /data, then waits on
    it (in a loop, or one job_wait(-1) call), never freeing anything."""
    cfg = b'{"steps": 1000000, "plot": false}'
    pat = b"/data/train_000.bin"
    cfg_wat = cfg.decode().replace('"', '\\"')
    wait = ("(loop $l (br_if $l (i32.ne (call $job_wait (i32.load (i32.const 3008)) (i32.const 10)) (i32.const 0))))"
            if loop_wait else "(drop (call $job_wait (i32.load (i32.const 3008)) (i32.const -1)))")
    return f"""(module
{imports()}
  (memory (export "memory") 2)
  (data (i32.const 1024) "\\40\\00\\00\\00\\01\\01\\00\\00\\80\\01\\00\\00\\02\\00\\00\\00\\02\\00\\00\\00\\40\\00\\00\\00")
  (data (i32.const 2048) "{pat.decode()}")
  (data (i32.const 2560) "{cfg_wat}")
  (func (export "_start")
    (drop (call $model_create (i32.const 1024) (i64.const 1) (i32.const 3000)))
    (drop (call $dataloader_create (i32.const 2048) (i32.const {len(pat)}) (i32.const 2) (i32.const 16)
                                   (i32.const 0) (i64.const 0) (i32.const 3004)))
    (drop (call $train_start (i32.load (i32.const 3000)) (i32.load (i32.const 3004)) (i32.const 0)
                             (i32.const 2560) (i32.const {len(cfg)}) (i32.const 3008)))
    {wait}))"""


@pytest.mark.parametrize("loop_wait", [True, False], ids=["job_wait_loop", "job_wait_forever"])
def test_timeout_stops_the_guests_jobs(data, loop_wait):
    t0 = time.perf_counter()
    # 4 s: the guest sets its job up in milliseconds, so the job is running when time is up
    r = Host(timeout=4.0, threads=1).run(_job_guest(loop_wait), dirs=[(str(data), "/data")])
    assert r.exit_code == 124, r
    assert r.freed == {"model": 1, "loader": 1, "job": 1}
    assert _job_threads() == 0
    assert time.perf_counter() - t0 < 30


def test_guest_end_stops_jobs_without_timeout(data):
    """A guest that starts a long job and returns: the host stops and joins it, frees all."""
    src = _job_guest(False).replace("(drop (call $job_wait (i32.load (i32.const 3008)) (i32.const -1)))", "")
    r = Host(threads=1).run(src, dirs=[(str(data), "/data")])
    assert r.exit_code == 0 and r.freed == {"model": 1, "loader": 1, "job": 1}
    assert _job_threads() == 0


# ------------------------------------------------------------------ traps and bad input (CLI)
TRAPS = {
    "unreachable": "unreachable",
    "out_of_bounds": "i32.const 1000000 i32.load drop",
    "div_by_zero": "i32.const 1 i32.const 0 i32.div_s drop",
    "stack_overflow": "call $f",
    "host_call_then_trap": "i32.const 8 i32.const 1 i32.const 12 call $last_error drop unreachable",
}


def _cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "pyllmc", "wasm", "run", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("kind", list(TRAPS))
def test_traps_exit_125_with_one_line(tmp_path, kind):
    src = f"""(module
{imports()}
  (memory (export "memory") 1)
  (func $f (export "_start") {TRAPS[kind]}))"""
    g = tmp_path / "g.wat"
    g.write_text(src)
    r = _cli(str(g))
    assert r.returncode == 125, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("guest trapped: wasm trap:"), r.stderr
    assert "Traceback" not in r.stderr


def test_timeout_exit_124_with_one_line(tmp_path):
    g = tmp_path / "spin.wat"
    g.write_text(SPIN)
    r = _cli(str(g), "--timeout", "0.5")
    assert r.returncode == 124 and r.stderr.strip() == "guest timed out after 0.5 s"


BAD_INPUT = {
    "no_such_file": (None, "cannot read"),
    "not_wasm": (b"hello world", "not a WebAssembly module"),
    "garbage_after_magic": (b"\0asm\x01\0\0\0\xff\xff\xff", "not a valid WebAssembly module"),
    "unknown_pyllmc_import": ('(module (import "pyllmc" "model_explode" (func)) (memory (export "memory") 1) '
                              '(func (export "_start")))', "does not provide"),
    "wrong_signature": ('(module (import "pyllmc" "model_free" (func (param i64) (result i32))) '
                        '(memory (export "memory") 1) (func (export "_start")))', "type"),
    "other_module": ('(module (import "env" "foo" (func)) (memory (export "memory") 1) (func (export "_start")))',
                     "env.foo"),
    "no_start": ('(module (memory (export "memory") 1))', "_start"),
}


@pytest.mark.parametrize("kind", list(BAD_INPUT))
def test_bad_runner_input_exit_2(tmp_path, kind):
    content, needle = BAD_INPUT[kind]
    g = tmp_path / ("g.wat" if isinstance(content, str) else "g.wasm")
    if content is not None:
        g.write_bytes(content.encode() if isinstance(content, str) else content)
    r = _cli(str(g))
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in r.stderr, r.stderr


@pytest.mark.parametrize("flags,needle", [
    (["--max-memory", "12Q"], "--max-memory"), (["--max-host-memory", "-3"], "--max-host-memory"),
    (["--timeout", "0"], "--timeout"), (["--max-handles", "-1"], "--max-handles"), (["--env", "NOEQUALS"], "--env"),
    (["--threads", "x"], "--threads"), (["--dir", "/nonexistent/dir"], "not a directory"),
])
def test_bad_runner_flags_exit_2(tmp_path, flags, needle):
    g = tmp_path / "g.wat"
    g.write_text('(module (memory (export "memory") 1) (func (export "_start")))')
    r = _cli(str(g), *flags)
    assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_trap_stops_the_guests_jobs(data):
    """A guest that starts a long job and then traps: exit 125, the job stopped, all freed."""
    src = _job_guest(False).replace("(drop (call $job_wait (i32.load (i32.const 3008)) (i32.const -1)))",
                                    "unreachable")
    r = Host(threads=1).run(src, dirs=[(str(data), "/data")])
    assert r.exit_code == 125 and "unreachable" in r.message
    assert r.freed == {"model": 1, "loader": 1, "job": 1}
    assert _job_threads() == 0
