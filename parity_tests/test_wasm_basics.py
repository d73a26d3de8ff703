"""pyllmc.wasm host: the ABI table, a guest's whole happy path (create, load, train_step,
evaluate, sample, train_start / job_status / job_wait, save), and the runner's exit codes."""

from __future__ import annotations

import math
import os
import struct
import subprocess
import sys

import pytest

from wasm_guests import Driver, make_shards, require_wasmtime, wrapper_module

require_wasmtime()

from pyllmc.wasm import Host, abi  # noqa: E402


def test_abi_table_matches_the_status_struct_and_codes():
    assert abi.ABI_VERSION == 1
    assert [abi.STATUS[n] for n in ("OK", "INVALID_ARGUMENT", "OUT_OF_MEMORY", "IO", "BAD_FORMAT", "BAD_STATE",
                                    "UNSUPPORTED", "PERMISSION_DENIED", "LIMIT_EXCEEDED")] == list(range(9))
    assert struct.calcsize(abi.STATUS_STRUCT_FORMAT) == abi.STATUS_STRUCT_SIZE == 48
    sizes = {"i32": 4, "f32": 4, "f64": 8}
    for (off, t, _), nxt in zip(abi.STATUS_STRUCT, list(abi.STATUS_STRUCT[1:]) + [(48, "", "")]):
        assert off % sizes[t] == 0 and off + sizes[t] == nxt[0]
    # the llmc_status codes 1..6 are the library's
    from pyllmc.errors import ERROR_CLASSES

    assert sorted(ERROR_CLASSES) == [1, 2, 3, 4, 5, 6]
    for name, sig in abi.FUNCTIONS.items():
        assert sig.results == ("i32",)
        for pname in abi.OUT_PARAMS.get(name, {}):
            assert pname in dict(sig.params)


@pytest.fixture()
def data(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    make_shards(d, 6000, names=("train_000.bin", "train_001.bin"))
    make_shards(d, 3000, seed=1, names=("val_000.bin",))
    return d


def test_happy_path_every_function(data):
    host = Host(threads=2)
    with host.instantiate(wrapper_module(pages=4), dirs=[(str(data), "/data")]) as g:
        d = Driver(g)
        assert d.call("abi_version") == 1
        m = d.model()
        o = d.out(8)
        assert d.call("model_num_params", m, o) == 0 and d.i64(o) == 64 * 64 + 384 * 64 + 2 * (12 * 64 * 64 + 13 * 64) + 128
        tl = d.loader("/data/train_*.bin", 4, 32, 1, 3)
        vl = d.loader("/data/val_000.bin", 4, 32)
        losses = []
        for _ in range(3):
            o = d.out(4)
            assert d.call("train_step", m, tl, 1e-3, o) == 0, d.error
            losses.append(d.f32(o))
        assert all(math.isfinite(x) for x in losses)
        o = d.out(4)
        assert d.call("evaluate", m, vl, 2, o) == 0 and math.isfinite(d.f32(o))
        tok = d.tokenizer("byte")
        text = d.buf(b"Hello")
        ids, n = d.out(64), d.out(4)
        assert d.call("tokenizer_encode", tok, *text, ids, 16, n) == 0 and d.i32(n) == 5
        assert struct.unpack("<5i", g.read(ids, 20)) == tuple(b"Hello")
        out, olen = d.out(64), d.out(4)
        assert d.call("tokenizer_decode", tok, ids, 5, out, 64, olen) == 0 and g.read(out, d.i32(olen)) == b"Hello"
        out, olen = d.out(256), d.out(4)
        assert d.call("sample", m, tok, *text, 10, 0.0, 0, 1, out, 256, olen) == 0, d.error
        s1 = g.read(out, d.i32(olen))
        assert s1.startswith(b"Hello")
        job = d.job(m, tl, '{"steps": 4, "lr": 0.001, "eval_every": 2, "eval_batches": 1, "out_dir": "/data/run", '
                           '"plot": false}', val=vl)
        assert d.call("job_wait", job, -1) == 0
        st = d.out(48)
        assert d.call("job_status", job, st) == 0
        state, step, total, err, loss, vloss, lr, gn, tps, eta, el = struct.unpack(abi.STATUS_STRUCT_FORMAT, g.read(st, 48))
        assert (state, step, total, err) == (abi.JOB_STATE["finished"], 4, 4, 0)
        assert math.isfinite(loss) and math.isfinite(vloss) and el > 0
        assert (data / "run" / "ckpt_00000004" / "model.bin").is_file()
        assert d.call("job_free", job) == 0
        p = d.buf(b"/data/final.bin")
        assert d.call("model_save", m, *p) == 0, d.error
        assert d.call("model_load", *p, d.out(4)) == 0, d.error
        assert (data / "final.bin").is_file()
        assert not [f for f in os.listdir(data) if ".tmp" in f]
        for fn, h in (("tokenizer_free", tok), ("dataloader_free", tl), ("dataloader_free", vl), ("model_free", m)):
            assert d.call(fn, h) == 0
        assert g.context.handles.live == 1  # the loaded model: freed by close()
    assert host.active_guests == 0


def test_guest_train_step_equals_the_trainers_step(data):
    """train_step is the Trainer's optimizer step: same losses and parameters as a Trainer
    run with a constant LR on the same loader settings."""
    from pyllmc import GPTConfig, Model, Trainer, TrainerConfig

    cfg = (64, 257, 384, 2, 2, 64)
    lr32 = struct.unpack("<f", struct.pack("<f", 1e-3))[0]  # the ABI's lr is an f32
    shards = sorted(str(p) for p in data.glob("train_*.bin"))
    tc = TrainerConfig(model=Model.from_config(GPTConfig(*cfg), max_batch=4, max_seq=32, seed=5, threads=2),
                       data=shards, batch_size=4, seq_len=32, steps=3, lr=lr32, schedule="constant", seed=9,
                       shuffle=True, progress="none", plot=False, threads=2)
    t = Trainer(tc, model=tc.model)
    hist = t.train()
    with Host(threads=2).instantiate(wrapper_module(pages=4), dirs=[(str(data), "/data")]) as g:
        d = Driver(g)
        m = d.model(cfg, seed=5)
        tl = d.loader("/data/train_*.bin", 4, 32, 1, 9)
        got = []
        for _ in range(3):
            o = d.out(4)
            assert d.call("train_step", m, tl, 1e-3, o) == 0
            got.append(d.f32(o))
        slot = g.context.handles.get(m, "model", "test")
        same = (slot.model.flat("params") == tc.model.flat("params")).all()
    assert got == [struct.unpack("<f", struct.pack("<f", x))[0] for x in hist.losses]
    assert same


WAT_EXIT = """(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (import "pyllmc" "abi_version" (func $v (result i32)))
  (memory (export "memory") 1)
  (func (export "_start") call $v i32.const 40 i32.add call $exit))"""


def _cli(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "pyllmc", "wasm", "run", *args], capture_output=True, text=True,
                          timeout=timeout)


WAT_ARGC = """(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $envs (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  ;; exit code = 10 * argc + number of environment variables
  (func (export "_start")
    (drop (call $sizes (i32.const 16) (i32.const 20)))
    (drop (call $envs (i32.const 24) (i32.const 28)))
    (call $exit (i32.add (i32.mul (i32.load (i32.const 16)) (i32.const 10)) (i32.load (i32.const 24))))))"""


def test_cli_exit_code_passes_through_and_args(tmp_path):
    g = tmp_path / "g.wat"
    g.write_text(WAT_EXIT)
    r = _cli(str(g), "--", "--steps", "3")
    assert r.returncode == 41 and r.stderr == ""
    from pyllmc.wasm import run

    assert run(str(g)) == 41
    a = tmp_path / "argc.wat"
    a.write_text(WAT_ARGC)
    # argv = [name, --steps, 3, --dir] (runner flags after -- belong to the guest), 2 env vars
    r = _cli(str(a), "--env", "A=1", "--env", "B=2", "--", "--steps", "3", "--dir")
    assert r.returncode == 42, r.stderr
    assert run(str(a), args=["x"]) == 20
