"""A background job's out_dir while the guest keeps running: symlinks the guest plants in its
run directory beforehand, or swaps in while the job trains (WASI's path_symlink lets a guest
make a link whose target leaves its preopen), never take a write outside; the run appears
in the guest's directory step by step, checkpoints whole, and what keep_last drops goes;
a shard swapped for a link after dataloader_create is not what the job reads.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
import time

import pytest

from wasm_guests import Driver, make_shards, require_wasmtime, wrapper_module

require_wasmtime()

from pyllmc.wasm import Host, abi  # noqa: E402

WAT_SYMLINK = """
  (import "wasi_snapshot_preview1" "path_symlink" (func $symlink (param i32 i32 i32 i32 i32) (result i32)))
  (func (export "symlink") (param $target i32) (param $tlen i32) (param $name i32) (param $nlen i32) (result i32)
    (call $symlink (local.get $target) (local.get $tlen) (i32.const 3) (local.get $name) (local.get $nlen)))
"""


def _module() -> str:
    src = wrapper_module(pages=4, extra=WAT_SYMLINK)
    line = '  (import "wasi_snapshot_preview1" "path_symlink" (func $symlink (param i32 i32 i32 i32 i32) (result i32)))'
    return src.replace(line, "").replace("(module\n", "(module\n" + line + "\n", 1)


@pytest.fixture()
def world(tmp_path):
    data, secret = tmp_path / "data", tmp_path / "secret"
    data.mkdir()
    secret.mkdir()
    make_shards(data, 8000)
    return data, secret


def _status(d, job):
    o = d.out(48)
    assert d.call("job_status", job, o) == 0
    return dict(zip([f for _, _, f in abi.STATUS_STRUCT], struct.unpack(abi.STATUS_STRUCT_FORMAT, d.g.read(o, 48))))


def _wait_for_step(d, job, step, timeout=120.0):
    end = time.monotonic() + timeout
    while _status(d, job)["step"] < step:
        assert time.monotonic() < end, "the job made no progress"
        time.sleep(0.01)


def _guest_symlink(d, target: str, name: str) -> None:
    """What a guest itself can do through WASI (fd 3 is its first preopen, /data)."""
    t, n = d.buf(target.encode()), d.buf(name.encode())
    assert d.g.call("symlink", *t, *n) == 0


def _outside_untouched(secret):
    assert sorted(os.listdir(secret)) == [], os.listdir(secret)


def test_the_guest_can_plant_an_escaping_symlink(world):
    """The premise of this file: WASI lets a guest create a link that points outside."""
    data, _ = world
    with Host(threads=1).instantiate(_module(), dirs=[(str(data), "/data")]) as g:
        d = Driver(g)
        _guest_symlink(d, "../secret", "escape")
    assert os.readlink(data / "escape") == "../secret"


def test_planted_symlinks_in_the_run_directory_are_replaced_not_followed(world):
    data, secret = world
    (data / "run").mkdir()
    with Host(threads=1).instantiate(_module(), dirs=[(str(data), "/data")]) as g:
        d = Driver(g)
        for name in ("metrics.jsonl", "ckpt_00000002", "ckpt_00000003", "tensorboard", "loss.png", "config.toml"):
            _guest_symlink(d, f"../../secret/{name}", f"run/{name}")
        job = d.job(d.model(), d.loader("/data/train_000.bin", 2, 16),
                    '{"steps": 3, "save_every": 1, "keep_last": 0, "out_dir": "/data/run", "overwrite": true, '
                    '"report_to": ["tensorboard"]}')
        assert d.call("job_wait", job, -1) == 0, d.error
        assert _status(d, job)["state"] == abi.JOB_STATE["finished"]
    _outside_untouched(secret)
    run = data / "run"
    for name in ("metrics.jsonl", "loss.png", "config.toml"):
        assert (run / name).is_file() and not (run / name).is_symlink(), name
    for name in ("ckpt_00000002", "ckpt_00000003", "tensorboard"):
        assert (run / name).is_dir() and not (run / name).is_symlink(), name
    assert [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert os.listdir(run / "tensorboard")


def test_run_directory_swapped_for_a_symlink_while_the_job_trains(world):
    """The guest renames its out_dir away mid-run and links the name to a directory outside:
    the job keeps writing into the directory it was given (now under the new name)."""
    data, secret = world
    with Host(threads=1).instantiate(_module(), dirs=[(str(data), "/data")]) as g:
        d = Driver(g)
        job = d.job(d.model(), d.loader("/data/train_000.bin", 2, 16),
                    '{"steps": 100000, "lr": 0.0001, "save_every": 1, "keep_last": 0, "plot": false, '
                    '"out_dir": "/data/run"}')
        _wait_for_step(d, job, 1)
        os.rename(data / "run", data / "moved")  # (the guest's path_rename; the link is the guest's own)
        _guest_symlink(d, "../secret", "run")
        at_swap = _status(d, job)["step"]
        _wait_for_step(d, job, at_swap + 3)
        assert d.call("job_stop", job) == 0 and d.call("job_wait", job, -1) == 0, d.error
        last = _status(d, job)["step"]
    _outside_untouched(secret)
    moved = data / "moved"
    rows = [json.loads(x)["step"] for x in (moved / "metrics.jsonl").read_text().splitlines()]
    assert rows == list(range(1, last + 1))
    assert (moved / f"ckpt_{last:08d}" / "state.json").is_file()
    assert os.readlink(data / "run") == "../secret"


def test_the_run_appears_while_it_trains_and_keep_last_deletes(world):
    data, _ = world
    staging_before = set(os.listdir(tempfile.gettempdir()))
    with Host(threads=1).instantiate(_module(), dirs=[(str(data), "/data")]) as g:
        d = Driver(g)
        job = d.job(d.model(), d.loader("/data/train_000.bin", 2, 16),
                    '{"steps": 100000, "lr": 0.0001, "save_every": 2, "keep_last": 2, "plot": false, '
                    '"out_dir": "/data/run"}')
        _wait_for_step(d, job, 7)
        lines = (data / "run" / "metrics.jsonl").read_text().splitlines()
        assert len(lines) >= 6  # published step by step, not only at the end
        assert d.call("job_stop", job) == 0 and d.call("job_wait", job, -1) == 0
        last = _status(d, job)["step"]
    run = data / "run"
    ckpts = sorted(p.name for p in run.iterdir() if p.name.startswith("ckpt_"))
    assert len(ckpts) == 2 and ckpts[-1] == f"ckpt_{last:08d}", ckpts
    assert not [p for p in run.iterdir() if p.name.startswith(".")], list(run.iterdir())  # no temporaries
    leftover = [n for n in set(os.listdir(tempfile.gettempdir())) - staging_before if n.startswith("pyllmc-job-")]
    assert leftover == []  # the staging directory went with the job


def test_refusals_name_the_guest_directory_only(world):
    data, secret = world
    with Host(threads=1).instantiate(_module(), dirs=[(str(data), "/data")]) as g:
        d = Driver(g)
        m, tl = d.model(), d.loader("/data/train_000.bin", 2, 16)
        (data / "run").mkdir()
        (data / "run" / "metrics.jsonl").write_text("{}\n")
        st = d.call("train_start", m, tl, 0, *d.buf(b'{"steps": 1, "out_dir": "/data/run"}'), d.out(4))
        assert st == abi.IO and "/data/run" in d.error and "already holds a run" in d.error, d.error
        assert str(data) not in d.error and tempfile.gettempdir() + "/pyllmc-job-" not in d.error
        _guest_symlink(d, "../secret", "link")
        st = d.call("train_start", m, tl, 0, *d.buf(b'{"steps": 1, "out_dir": "/data/link/run"}'), d.out(4))
        assert st == abi.PERMISSION_DENIED and str(secret) not in d.error, d.error
    _outside_untouched(secret)


def test_deleting_a_dropped_checkpoint_never_follows_links_inside_it(world):
    """keep_last removes an old checkpoint from the guest's directory; a link the guest put
    inside it is removed as a link, the directory it points to keeps its files."""
    from pyllmc.wasm.outdir import GuestDir, Publisher

    data, secret = world
    (secret / "precious.txt").write_text("keep me")
    (data / "run").mkdir()
    pub = Publisher(GuestDir.open(str(data), ["run"], "/data/run", "test"))
    try:
        os.mkdir(os.path.join(pub.staging, "ckpt_00000001"))
        with open(os.path.join(pub.staging, "ckpt_00000001", "state.json"), "w") as f:
            f.write("{}")
        pub.publish()
        assert (data / "run" / "ckpt_00000001" / "state.json").read_text() == "{}"
        os.symlink(secret, data / "run" / "ckpt_00000001" / "evil")
        os.remove(os.path.join(pub.staging, "ckpt_00000001", "state.json"))
        os.rmdir(os.path.join(pub.staging, "ckpt_00000001"))
        pub.publish()
    finally:
        pub.close()
    assert not (data / "run" / "ckpt_00000001").exists()
    assert (secret / "precious.txt").read_text() == "keep me"


def test_a_shard_swapped_for_a_link_after_dataloader_create_is_not_read(world, tmp_path):
    """The loader reads what its paths named when it was created: a later shard replaced by
    a link to a shard outside (which the guest could name through its own symlink) is not
    what the job trains on."""
    import numpy as np

    from pyllmc.data import read_shard, write_shard

    data, secret = world
    write_shard(data / "train_001.bin", np.full(4000, 300))
    write_shard(secret / "secret_001.bin", np.full(4000, 301))
    with Host(threads=1).instantiate(_module(), dirs=[(str(data), "/data")]) as g:
        d = Driver(g)
        h = d.loader("/data/train_*.bin", 2, 16)
        os.rename(data / "train_001.bin", data / "gone.bin")
        os.symlink(secret / "secret_001.bin", data / "train_001.bin")
        loader = g.context.handles.get(h, "loader", "test").loader
        seen = set()
        for _ in range(400):  # through both shards
            x, _ = loader.next_batch()
            seen |= set(np.unique(x).tolist())
    assert 301 not in seen and 300 in seen
    assert read_shard(secret / "secret_001.bin")[0] == 301
