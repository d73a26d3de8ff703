"""``release_threads``: a thread that leaves its C work to another thread ends its idle
OpenMP workers, and the wasm host does so for the guest's thread while a training job runs.

Why it matters: libgomp makes every team wait in the kernel at its barriers once a process
holds more OpenMP threads than CPUs, so the idle workers of the guest's thread (left by
model_create, train_step, ...) slowed the job's training: d6 B=4 T=64 on 2 cores, 255 against
234 ms per step. The threads are counted by name: a thread created by a thread inherits its
name (Linux), so naming the test's own thread first singles out its OpenMP workers."""

from __future__ import annotations

import ctypes
import os
import struct
import sys
import threading
import time

import numpy as np
import pytest

import pyllmc
from pyllmc import GPTConfig, Model

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts threads in /proc/self/task"),
    pytest.mark.skipif(not pyllmc._ffi.lib.llmc_has_openmp(), reason="the library was built without OpenMP"),
]

TINY = GPTConfig(max_seq_len=16, vocab_size=64, padded_vocab_size=64, num_layers=1, num_heads=2, channels=16)


def _name_this_thread(name: bytes) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(15, name, 0, 0, 0) == 0  # PR_SET_NAME


def _named(name: str) -> int:
    """Threads of this process called ``name``."""
    n = 0
    for t in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{t}/comm") as f:
                n += f.read().strip() == name
        except OSError:
            pass
    return n


def _in_thread(fn):
    """Run fn in a fresh thread (its own OpenMP pool, none of pytest's), return its result."""
    out, err = [], []

    def run():
        try:
            out.append(fn())
        except BaseException as e:  # re-raised in the test's thread
            err.append(e)
    th = threading.Thread(target=run)
    th.start()
    th.join()
    if err:
        raise err[0]
    return out[0]


def test_release_ends_the_calling_threads_workers_and_the_next_call_starts_them():
    def body():
        _name_this_thread(b"llmc-rt-api")
        m = Model.from_config(TINY, max_batch=1, max_seq=8, threads=2, seed=1)
        x = np.arange(8, dtype=np.int32).reshape(1, 8) % 64
        m.forward(x)
        first = m.logits().copy()
        with_pool = _named("llmc-rt-api")
        pyllmc.release_threads()
        released = _named("llmc-rt-api")
        m.forward(x)
        again = m.logits().copy()
        return with_pool, released, _named("llmc-rt-api"), first, again

    with_pool, released, after, first, again = _in_thread(body)
    assert with_pool == 2, "a 2-thread model call leaves the thread and one worker"
    assert released == 1, "release_threads ended the worker"
    assert after == 2, "the next call started a new one"
    assert np.array_equal(first, again)


def test_release_in_a_thread_without_workers_is_harmless():
    def body():
        _name_this_thread(b"llmc-rt-none")
        pyllmc.release_threads()
        m = Model.from_config(TINY, max_batch=1, max_seq=8, threads=1, seed=1)
        pyllmc.release_threads()
        m.forward(np.zeros((1, 8), np.int32))
        return _named("llmc-rt-none"), m.logits().shape

    assert _in_thread(body) == (1, (1, 8, 64))


def test_wasm_host_leaves_no_idle_workers_beside_a_running_job(tmp_path):
    """The guest's thread holds OpenMP workers after model_create; train_start ends them (the
    job's thread brings its own), and so does every later call that used OpenMP while the job
    runs (evaluate here). Counted as differences: wasmtime's own threads, created by the
    guest's thread too, stay the same throughout."""
    from wasm_guests import Driver, make_shards, require_wasmtime, wrapper_module

    require_wasmtime()
    from pyllmc.wasm import Host, abi

    d = tmp_path / "data"
    d.mkdir()
    make_shards(d, 8000, names=("train_000.bin",))
    make_shards(d, 3000, seed=2, names=("val_000.bin",))
    name = "llmc-rt-wasm"

    def running(drv, job) -> dict:
        o = drv.out(48)
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 60:
            assert drv.call("job_status", job, o) == 0
            st = dict(zip([f for _, _, f in abi.STATUS_STRUCT],
                          struct.unpack(abi.STATUS_STRUCT_FORMAT, drv.g.read(o, 48))))
            if st["step"] >= 1:  # the job's thread has run OpenMP steps: its workers exist
                return st
            time.sleep(0.01)
        raise AssertionError("the job made no step in 60 s")

    def body():
        _name_this_thread(name.encode())
        with Host(threads=2).instantiate(wrapper_module(pages=4), dirs=[(str(d), "/data")]) as g:
            drv = Driver(g)
            m, other = drv.model(), drv.model()
            tl, vl = drv.loader("/data/train_000.bin", 2, 16), drv.loader("/data/val_000.bin", 2, 16)
            o = drv.out(4)
            assert drv.call("evaluate", other, vl, 1, o) == 0  # OpenMP in the guest's thread
            base = _named(name)
            job = drv.job(m, tl, '{"steps": 100000, "lr": 0.0001, "plot": false}')
            st = running(drv, job)
            assert st["state"] == abi.JOB_STATE["running"]
            during = _named(name)
            assert drv.call("evaluate", other, vl, 1, o) == 0
            after_call = _named(name)
            assert drv.call("job_stop", job) == 0 and drv.call("job_wait", job, -1) == 0
            return base, during, after_call

    base, during, after_call = _in_thread(body)
    # base: the guest's thread and its worker (and wasmtime's threads). During the job: the
    # worker gone, the job's thread and its worker there: one more, not two.
    assert during == base + 1, (base, during)
    assert after_call == base + 1, (base, after_call)
