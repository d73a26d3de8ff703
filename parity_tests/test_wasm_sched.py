"""The guest's thread runs as SCHED_BATCH while guest code runs (its wake-ups then do not
preempt the training threads), and only then: the host's work for it (a training job's
thread and the OpenMP threads under it, train_step in the guest's thread) runs at the
thread's own policy, which comes back when the call returns."""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest

from wasm_guests import STATUS_LOOP, Driver, make_shards, require_wasmtime, wrapper_module

require_wasmtime()

from pyllmc.wasm import Host, sched  # noqa: E402

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="scheduling policies are Linux's")

SPIN = """
  (func (export "spin") (param $n i64) (result i64) (local $i i64)
    (block $d (loop $l (br_if $d (i64.ge_s (local.get $i) (local.get $n)))
      (local.set $i (i64.add (local.get $i) (i64.const 1))) (br $l)))
    (local.get $i))
"""


def _policies() -> dict:
    """{thread id: policy} of every thread of this process."""
    out = {}
    for t in os.listdir("/proc/self/task"):
        try:
            out[int(t)] = os.sched_getscheduler(int(t))
        except OSError:
            pass
    return out


def _watch(tid: int, stop: threading.Event, seen: list) -> None:
    while not stop.is_set():
        seen.append(os.sched_getscheduler(tid))
        time.sleep(0.001)


def test_guest_code_runs_batch_and_the_policy_comes_back(tmp_path):
    me = threading.get_native_id()
    assert os.sched_getscheduler(0) == os.SCHED_OTHER
    with Host(threads=1).instantiate(wrapper_module(pages=4, extra=SPIN + STATUS_LOOP), dirs=[(str(tmp_path), "/data")]) as g:
        stop, seen = threading.Event(), []
        w = threading.Thread(target=_watch, args=(me, stop, seen))
        w.start()
        try:
            n = 1
            while True:  # long enough for the watcher to look a few times
                t0 = time.perf_counter()
                g.call("spin", n)
                if time.perf_counter() - t0 > 0.2 or len(seen) > 20:
                    break
                n *= 4
        finally:
            stop.set()
            w.join()
        assert os.SCHED_BATCH in seen, seen
        assert os.sched_getscheduler(0) == os.SCHED_OTHER


def test_host_work_for_the_guest_runs_at_the_callers_policy(tmp_path):
    """A job's thread and every thread it starts stay ordinary while the guest, polling it,
    is SCHED_BATCH; so do the OpenMP threads of model_create and train_step in the guest's
    own thread. The guest runs in a new thread, whose OpenMP team is made during the test."""
    data = tmp_path / "data"
    data.mkdir()
    make_shards(data, 8000)
    before = set(_policies())
    result = {}

    def guest_thread():
        result["tid"] = threading.get_native_id()
        with Host(threads=2).instantiate(wrapper_module(pages=4, extra=SPIN + STATUS_LOOP), dirs=[(str(data), "/data")]) as g:
            d = Driver(g)
            m, tl = d.model(), d.loader("/data/train_000.bin", 2, 16)
            for _ in range(3):
                assert d.call("train_step", m, tl, 1e-3, d.out(4)) == 0, d.error
            job = d.job(m, tl, '{"steps": 100000, "lr": 0.0001, "plot": false, "threads": 2}')
            g.call("status_loop", job, d.out(48), 20000)  # the job trains meanwhile
            result["during"] = _policies()
            assert d.call("job_stop", job) == 0 and d.call("job_wait", job, -1) == 0
        result["after"] = os.sched_getscheduler(0)

    t = threading.Thread(target=guest_thread)
    t.start()
    t.join()
    new = {tid: p for tid, p in result["during"].items() if tid not in before and tid != result["tid"]}
    assert len(new) >= 2, new  # the guest thread's OpenMP team and the job's thread, at least
    assert set(new.values()) == {os.SCHED_OTHER}, new
    assert result["after"] == os.SCHED_OTHER


def test_guest_code_leaves_a_non_ordinary_thread_alone():
    """A thread the embedding application made SCHED_BATCH itself is neither changed nor
    'restored' to anything else."""
    os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    try:
        with sched.guest_code() as policy:
            assert policy == (os.SCHED_BATCH, 0)
            assert os.sched_getscheduler(0) == os.SCHED_BATCH
        assert os.sched_getscheduler(0) == os.SCHED_BATCH
    finally:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
