"""Cleanup and isolation: 50 guests one after another in one Host, each leaving a model,
loaders, a tokenizer and a running job behind, do not grow the process's RSS; two guests at
once in one Host see nothing of each other (handles, files, budgets) and compute exactly
what each computes alone."""

from __future__ import annotations

import gc
import os
import struct
import threading


from wasm_guests import Driver, make_shards, require_wasmtime, wrapper_module

require_wasmtime()

from pyllmc.wasm import Host, abi  # noqa: E402

CFG = (64, 257, 384, 4, 4, 128)  # ~0.9M parameters: ~15 MB with AdamW state and activations


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _leave_everything_behind(host, data, i):
    g = host.instantiate(wrapper_module(pages=2), dirs=[(str(data), "/data")], name=f"guest{i}")
    d = Driver(g)
    m = d.model(CFG, seed=i)
    tl = d.loader("/data/train_000.bin", 2, 32, 1, i)
    d.loader("/data/train_000.bin", 2, 32)
    d.tokenizer()
    o = d.out(4)
    assert d.call("train_step", m, tl, 1e-3, o) == 0
    d.job(d.model(CFG), d.loader("/data/train_000.bin", 2, 32), '{"steps": 100000, "plot": false}')
    freed = g.close()
    assert freed == {"model": 2, "loader": 3, "tokenizer": 1, "job": 1}, freed
    assert g.context.budget.used == 0


def test_fifty_guests_do_not_grow_rss(tmp_path):
    data = tmp_path
    make_shards(data, 8000, names=("train_000.bin",))
    host = Host(threads=1)
    for i in range(20):  # warm-up: allocator pools and arenas reach their working size (measured: ~20 guests)
        _leave_everything_behind(host, data, i)
    gc.collect()
    r0 = _rss()
    for i in range(20, 70):
        _leave_everything_behind(host, data, i)
    gc.collect()
    grown = _rss() - r0
    assert host.active_guests == 0
    assert not [t for t in threading.enumerate() if t.name == "pyllmc-wasm-job"]
    # a leak of the models alone would be 50 x 2 x ~15 MB = 1.5 GB
    assert grown < (40 << 20), f"RSS grew by {grown / 2**20:.1f} MiB over 50 guests"


def test_two_guests_at_once_are_isolated(tmp_path):
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a_dir.mkdir()
    b_dir.mkdir()
    make_shards(a_dir, 8000, names=("train_000.bin",))
    make_shards(b_dir, 8000, seed=3, names=("train_000.bin",))
    host = Host(threads=1)
    ga = host.instantiate(wrapper_module(pages=2), dirs=[(str(a_dir), "/data")], max_host_memory="64M", max_handles=4)
    gb = host.instantiate(wrapper_module(pages=2), dirs=[(str(b_dir), "/data")])
    try:
        assert host.active_guests == 2
        a, b = Driver(ga), Driver(gb)
        ma = a.model(CFG)
        la = a.loader("/data/train_000.bin", 2, 32)
        # B has no handles: A's numbers mean nothing to it (and B's first handle has A's number)
        assert b.call("model_num_params", ma, b.out(8)) == abi.INVALID_ARGUMENT
        mb = b.model(CFG)
        assert mb == ma  # same number, different table, different model
        assert a.call("model_free", ma) == 0
        assert b.call("model_num_params", mb, b.out(8)) == 0  # B's model is untouched
        # files: each sees its own /data only
        p = b.buf(str(a_dir / "train_000.bin").encode())
        assert b.call("dataloader_create", *p, 2, 32, 0, 0, b.out(4)) == abi.PERMISSION_DENIED
        # budgets and handle limits are per guest
        for _ in range(3):
            a.tokenizer()
        assert a.call("tokenizer_load", *a.buf(b"byte"), a.out(4)) == abi.LIMIT_EXCEEDED
        for _ in range(10):
            b.tokenizer()
        # errors are per guest
        assert a.call("model_free", 999) == abi.INVALID_ARGUMENT
        assert "999" in a.error and "999" not in b.error
        del la
    finally:
        ga.close()
        gb.close()
    assert host.active_guests == 0


def _train_alone(host, data, out):
    g = host.instantiate(wrapper_module(pages=2), dirs=[(str(data), "/data")])
    try:
        d = Driver(g)
        m = d.model(CFG, seed=4)
        tl = d.loader("/data/train_000.bin", 2, 32, 1, 4)
        losses = []
        for _ in range(4):
            o = d.out(4)
            assert d.call("train_step", m, tl, 1e-3, o) == 0
            losses.append(struct.unpack("<f", g.read(o, 4))[0])
        out.append(losses)
    finally:
        g.close()


def test_concurrent_guests_compute_what_each_computes_alone(tmp_path):
    make_shards(tmp_path, 8000, names=("train_000.bin",))
    host = Host(threads=1)
    alone = []
    _train_alone(host, tmp_path, alone)
    together = []
    ts = [threading.Thread(target=_train_alone, args=(host, tmp_path, together)) for _ in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert together == alone * 3
