"""train_start jobs: busy handles while a job runs, bad JSON configs, stop, free of a running
job, failed jobs (status + job_error), and the bit-for-bit equality with ``pyllmc train``."""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys

import pytest

from wasm_guests import Driver, make_shards, require_wasmtime, wrapper_module

require_wasmtime()

from pyllmc.wasm import Host, abi  # noqa: E402

CFG = (64, 257, 384, 2, 2, 64)


@pytest.fixture()
def data(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    make_shards(d, 8000, names=("train_000.bin",))
    make_shards(d, 3000, seed=2, names=("val_000.bin",))
    return d


def _status(d, job, o=None):
    o = d.out(48) if o is None else o
    assert d.call("job_status", job, o) == 0
    return dict(zip([f for _, _, f in abi.STATUS_STRUCT], struct.unpack(abi.STATUS_STRUCT_FORMAT, d.g.read(o, 48))))


LONG = '{"steps": 100000, "lr": 0.0001, "plot": false}'


def test_busy_model_and_loaders_during_a_job(data):
    with Host(threads=1).instantiate(wrapper_module(pages=4), dirs=[(str(data), "/data")]) as g:
        d = Driver(g)
        m, tl, vl = d.model(), d.loader("/data/train_000.bin", 2, 16), d.loader("/data/val_000.bin", 2, 16)
        tok = d.tokenizer()
        job = d.job(m, tl, '{"steps": 100000, "lr": 0.0001, "plot": false, "eval_every": 1000}', val=vl)
        path = d.buf(b"/data/x.bin")
        text = d.buf(b"a")
        calls = [
            ("model_save", (m, *path)), ("model_num_params", (m, d.out(8))), ("model_free", (m,)),
            ("train_step", (m, tl, 1e-3, d.out(4))), ("train_step", (d.model(), tl, 1e-3, d.out(4))),
            ("evaluate", (m, vl, 1, d.out(4))), ("evaluate", (d.model(), vl, 1, d.out(4))),
            ("sample", (m, tok, *text, 1, 1.0, 0, 0, d.out(8), 8, d.out(4))),
            ("dataloader_free", (tl,)), ("dataloader_free", (vl,)),
            ("train_start", (m, d.loader("/data/train_000.bin", 2, 16), 0, *d.buf(b"{}"), d.out(4))),
            ("train_start", (d.model(), tl, 0, *d.buf(b"{}"), d.out(4))),
        ]
        for fn, args in calls:
            assert d.call(fn, *args) == abi.BAD_STATE, (fn, d.error)
            assert "busy" in d.error and d.error.startswith(fn)
        assert not (data / "x.bin").exists()
        st = _status(d, job)
        assert st["state"] == abi.JOB_STATE["running"] and st["total_steps"] == 100000
        assert d.call("job_wait", job, 10) == abi.BAD_STATE and "still running" in d.error
        assert d.call("job_stop", job) == 0
        assert d.call("job_wait", job, -1) == 0
        st = _status(d, job)
        assert st["state"] == abi.JOB_STATE["stopped"] and 0 < st["step"] < 100000 and st["error"] == 0
        # free again: all calls work
        assert d.call("model_num_params", m, d.out(8)) == 0
        o = d.out(4)
        assert d.call("train_step", m, tl, 1e-3, o) == 0 and math.isfinite(d.f32(o))
        assert d.call("job_free", job) == 0 and d.call("job_status", job, d.out(48)) == abi.INVALID_ARGUMENT
        assert d.call("model_free", m) == 0


def test_job_free_stops_a_running_job_and_status_before_first_step(data):
    with Host(threads=1).instantiate(wrapper_module(pages=4), dirs=[(str(data), "/data")]) as g:
        d = Driver(g)
        m, tl = d.model(), d.loader("/data/train_000.bin", 2, 16)
        job = d.job(m, tl, LONG)
        st = _status(d, job)
        assert st["state"] == 0 and st["total_steps"] == 100000
        assert d.call("job_free", job) == 0
        slot = g.context.handles.get(m, "model", "t")
        assert slot.job is None or not slot.job.running
        assert d.call("model_free", m) == 0


BAD_JSON = {
    "unknown_key": ('{"stepz": 3}', "stepz"),
    "int_as_string": ('{"steps": "3"}', "steps"),
    "int_as_float": ('{"steps": 3.5}', "steps"),
    "int_as_bool": ('{"steps": true}', "steps"),
    "float_as_string": ('{"lr": "0.1"}', "lr"),
    "bool_as_int": ('{"plot": 1}', "plot"),
    "str_as_int": ('{"schedule": 3}', "schedule"),
    "null_not_allowed": ('{"steps": null}', "steps"),
    "host_key_data": ('{"data": "/etc/passwd"}', "data"),
    "host_key_model": ('{"model": "d12"}', "model"),
    "host_key_batch": ('{"batch_size": 64}', "batch_size"),
    "host_key_resume": ('{"resume": true}', "resume"),
    "not_an_object": ('[1, 2]', "object"),
    "not_json": ('{"steps": 3', "JSON"),
    "duplicate_key": ('{"steps": 3, "steps": 4}', "duplicate"),
    "nan_literal": ('{"lr": NaN}', "JSON"),
    "bad_value": ('{"steps": 0}', "steps"),
    "bad_schedule": ('{"schedule": "zigzag"}', "schedule"),
    "warmup_too_long": ('{"steps": 2, "warmup": 5}', "warmup"),
    "stop_at_without_out_dir": ('{"steps": 2, "stop_at": 1}', "out_dir"),
    "not_utf8": (b'{"steps": 3, "x": "\xff"}', "UTF-8"),
    "deep_nesting": ('{"steps": ' + "[" * 100000 + "]" * 100000 + "}", "JSON"),
}


@pytest.mark.parametrize("case", list(BAD_JSON))
def test_bad_json_configs(data, case):
    text, needle = BAD_JSON[case]
    raw = text if isinstance(text, bytes) else text.encode()
    with Host(threads=1).instantiate(wrapper_module(pages=40), dirs=[(str(data), "/data")]) as g:
        d = Driver(g)
        m, tl = d.model(), d.loader("/data/train_000.bin", 2, 16)
        o = d.out(4)
        st = d.call("train_start", m, tl, 0, *d.buf(raw), o)
        assert st == abi.INVALID_ARGUMENT, (st, d.error)
        assert needle in d.error and d.error.startswith("train_start:"), d.error
        assert d.i32(o) == struct.unpack("<i", b"\xAB" * 4)[0]  # nothing written
        assert g.context.handles.live == 2  # no job was made
        assert d.call("model_free", m) == 0  # and the model is not busy


def test_failed_job_reports_its_status_and_message(data, tmp_path):
    # a shard with a token id beyond the model's vocabulary: the job fails at its first batch
    make_shards(data, 3000, vocab=1000, seed=5, names=("wide_000.bin",))
    with Host(threads=1).instantiate(wrapper_module(pages=4), dirs=[(str(data), "/data")]) as g:
        d = Driver(g)
        m, tl = d.model(), d.loader("/data/wide_000.bin", 2, 16)
        job = d.job(m, tl, '{"steps": 3, "plot": false}')
        assert d.call("job_wait", job, -1) == 0
        st = _status(d, job)
        assert st["state"] == abi.JOB_STATE["failed"] and st["error"] == abi.INVALID_ARGUMENT and st["step"] == 0
        buf, ol = d.out(300), d.out(4)
        assert d.call("job_error", job, buf, 300, ol) == 0
        msg = g.read(buf, d.i32(ol)).decode()
        assert "not a token id" in msg, msg
        assert d.call("model_free", m) == 0  # not busy once failed


def test_out_dir_that_already_holds_a_run(data):
    with Host(threads=1).instantiate(wrapper_module(pages=4), dirs=[(str(data), "/data")]) as g:
        d = Driver(g)
        m, tl = d.model(), d.loader("/data/train_000.bin", 2, 16)
        cfg = '{"steps": 1, "plot": false, "out_dir": "/data/run"}'
        job = d.job(m, tl, cfg)
        assert d.call("job_wait", job, -1) == 0 and d.call("job_free", job) == 0
        st = d.call("train_start", m, tl, 0, *d.buf(cfg.encode()), d.out(4))
        assert st == abi.IO and "/data/run" in d.error and str(data) not in d.error, d.error
        job = d.job(m, tl, cfg[:-1] + ', "overwrite": true}')
        assert d.call("job_wait", job, -1) == 0


def test_guest_run_equals_pyllmc_train_bit_for_bit(data, tmp_path):
    """train_start with the settings of a `pyllmc train` command: the same metrics.jsonl
    losses and the same checkpoint bytes (model and optimizer state)."""
    ref = tmp_path / "ref"
    cmd = [sys.executable, "-m", "pyllmc", "train", "--model", "d2", "--vocab-size", "257", "--max-seq-len", "64",
           "--data", str(data / "train_000.bin"), "--val-data", str(data / "val_000.bin"), "--batch", "2", "--seq",
           "32", "--steps", "6", "--lr", "0.001", "--warmup", "2", "--eval-every", "3", "--eval-batches", "2",
           "--seed", "11", "--threads", "1", "--out", str(ref)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        pytest.fail(r.stderr[-2000:])
    with Host(threads=1).instantiate(wrapper_module(pages=4), dirs=[(str(data), "/data")]) as g:
        d = Driver(g)
        m = d.model((64, 257, 384, 2, 2, 128), seed=11)
        tl = d.loader("/data/train_000.bin", 2, 32, 1, 11)
        vl = d.loader("/data/val_000.bin", 2, 32, 0, 0)
        job = d.job(m, tl, json.dumps({"steps": 6, "lr": 0.001, "warmup": 2, "eval_every": 3, "eval_batches": 2,
                                       "seed": 11, "threads": 1, "out_dir": "/data/guest"}), val=vl)
        assert d.call("job_wait", job, -1) == 0
        assert _status(d, job)["state"] == abi.JOB_STATE["finished"]

    def rows(p):
        return [json.loads(x) for x in (p / "metrics.jsonl").read_text().splitlines()]

    a, b = rows(ref), rows(data / "guest")
    def key(x):
        return x["step"], x["loss"], x["grad_norm"], x["lr"], x.get("val_loss")

    assert len(a) == 6 and [key(x) for x in a] == [key(x) for x in b]
    for name in ("model.bin", "optimizer.bin"):
        fa, fb = ref / "ckpt_00000006" / name, data / "guest" / "ckpt_00000006" / name
        if fa.exists() or fb.exists():
            assert fa.read_bytes() == fb.read_bytes(), name
    assert (ref / "ckpt_00000006" / "model.bin").exists()


def test_guest_keeps_running_while_the_job_trains(data):
    """The job trains in a host thread and the C calls release the GIL: the guest's own
    calls go on meanwhile (many job_status calls, each answered while steps advance)."""
    import time

    with Host(threads=1).instantiate(wrapper_module(pages=4), dirs=[(str(data), "/data")]) as g:
        d = Driver(g)
        m = d.model((64, 257, 384, 4, 4, 128))
        job = d.job(m, d.loader("/data/train_000.bin", 4, 64), '{"steps": 30, "plot": false}')
        polls, steps_seen = 0, set()
        o = d.out(48)
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 120:
            st = _status(d, job, o)
            polls += 1
            steps_seen.add(st["step"])
            if st["state"] != abi.JOB_STATE["running"]:
                break
        assert st["state"] == abi.JOB_STATE["finished"] and st["step"] == 30
        # the guest was answered all along, at many different steps of the run
        assert len(steps_seen) >= 10 and polls > 100, (len(steps_seen), polls)
