"""Guest paths: every function that takes a path (model_load, model_save, dataloader_create,
tokenizer_load, train_start's out_dir) against every kind of escape: '..', an absolute path
outside the preopens, a relative path with no preopen, a symlink to a file outside, a
symlink in a parent directory, a glob that matches a symlink outside, a symlink at the save
target. All PERMISSION_DENIED, nothing read or written outside, messages with guest paths
only. Paths that stay inside (also through a symlink that stays inside) work.
"""

from __future__ import annotations

import os

import pytest

from wasm_guests import Driver, make_shards, require_wasmtime, wrapper_module

require_wasmtime()

from pyllmc.wasm import Host, abi  # noqa: E402


@pytest.fixture()
def world(tmp_path):
    """data/ (preopened as /data) and secret/ (not preopened) with the same kinds of files."""
    data, secret = tmp_path / "data", tmp_path / "secret"
    data.mkdir()
    secret.mkdir()
    from pyllmc import GPTConfig, Model
    from pyllmc.tokenizer import ByteTokenizer

    for d in (data, secret):
        make_shards(d, 3000, names=("train_000.bin",))
        Model.from_config(GPTConfig(64, 257, 384, 2, 2, 64), max_batch=1, max_seq=16, seed=3).save(str(d / "m.bin"))
        ByteTokenizer().save(d / "tok.bin")
    (secret / "sub").mkdir()
    os.symlink(secret / "m.bin", data / "link_m.bin")  # file symlink out
    os.symlink(secret / "train_000.bin", data / "train_999.bin")  # matched by a glob
    os.symlink(secret / "tok.bin", data / "link_tok.bin")
    os.symlink(secret, data / "out")  # directory symlink out
    os.symlink(data / "m.bin", data / "inside_m.bin")  # stays inside: allowed
    (data / "runs").mkdir()
    os.symlink(secret / "victim.bin", data / "dangling.bin")  # save through a dangling symlink out
    return tmp_path, data, secret


def _guest(data, extra_dirs=()):
    return Host(threads=1).instantiate(wrapper_module(pages=4), dirs=[(str(data), "/data"), *extra_dirs])


ESCAPES = {
    "dotdot": "/data/../secret/{f}",
    "dotdot_inside": "/data/runs/../{f}",  # would stay inside, still refused: no '..' at all
    "absolute_outside": "{secret}/{f}",
    "relative_no_preopen": "secret/{f}",
    "symlink_parent": "/data/out/{f}",
    "root": "/{f}",
}


def _call(d, fn, path, tmp):
    p = d.buf(path.encode())
    o = d.out(4)
    if fn == "model_load":
        return d.call("model_load", *p, o)
    if fn == "model_save":
        return d.call("model_save", d.model(), *p)
    if fn == "dataloader_create":
        return d.call("dataloader_create", *p, 2, 16, 0, 0, o)
    if fn == "tokenizer_load":
        return d.call("tokenizer_load", *p, o)
    if fn == "train_start":
        cfg = d.buf(('{"steps": 1, "plot": false, "out_dir": "%s"}' % path).encode())
        return d.call("train_start", d.model(), d.loader("/data/train_000.bin", 2, 16), 0, *cfg, o)
    raise AssertionError(fn)


FILES = {"model_load": "m.bin", "model_save": "new.bin", "dataloader_create": "train_000.bin",
         "tokenizer_load": "tok.bin", "train_start": "runx"}


@pytest.mark.parametrize("fn", list(FILES))
@pytest.mark.parametrize("kind", list(ESCAPES))
def test_escapes_are_denied(world, fn, kind):
    tmp, data, secret = world
    before = sorted(os.listdir(secret))
    path = ESCAPES[kind].format(f=FILES[fn], secret=secret)
    with _guest(data) as g:
        d = Driver(g)
        st = _call(d, fn, path, tmp)
        assert st == abi.PERMISSION_DENIED, (st, d.error)
        assert d.error.startswith(fn + ":")
        assert str(data) not in d.error and str(tmp) not in d.error.replace(str(secret), "")
    assert sorted(os.listdir(secret)) == before  # nothing written outside


SYMLINKS = {"model_load": "/data/link_m.bin", "dataloader_create": "/data/train_9*.bin",
            "tokenizer_load": "/data/link_tok.bin", "model_save": "/data/dangling.bin", "train_start": "/data/out"}


@pytest.mark.parametrize("fn", list(SYMLINKS))
def test_symlinks_out_are_denied(world, fn):
    tmp, data, secret = world
    before = sorted(os.listdir(secret))
    with _guest(data) as g:
        d = Driver(g)
        st = _call(d, fn, SYMLINKS[fn], tmp)
        assert st == abi.PERMISSION_DENIED, (st, d.error)
        assert "symlink" in d.error and str(secret) not in d.error and str(data) not in d.error
    assert sorted(os.listdir(secret)) == before


def test_glob_with_one_bad_match_is_denied_as_a_whole(world):
    _, data, _ = world
    with _guest(data) as g:
        d = Driver(g)
        p = d.buf(b"/data/train_*.bin")
        assert d.call("dataloader_create", *p, 2, 16, 0, 0, d.out(4)) == abi.PERMISSION_DENIED


def test_paths_inside_work(world):
    _, data, secret = world
    with _guest(data, extra_dirs=[(str(data / "runs"), ".")]) as g:
        d = Driver(g)
        for path in ("/data/m.bin", "/data/inside_m.bin", "/data/./m.bin", "//data//m.bin"):
            p = d.buf(path.encode())
            assert d.call("model_load", *p, d.out(4)) == 0, (path, d.error)
        p = d.buf(b"/data/tok.bin")
        assert d.call("tokenizer_load", *p, d.out(4)) == 0, d.error
        # relative paths resolve through the "." preopen (data/runs)
        p = d.buf(b"rel.bin")
        assert d.call("model_save", d.model(), *p) == 0, d.error
        assert (data / "runs" / "rel.bin").is_file()
        p = d.buf(b"./sub_missing/x.bin")  # inside, but the directory does not exist: IO, not denied
        assert d.call("model_save", d.model(), *p) == abi.IO and "sub_missing" in d.error
        cfg = d.buf(b'{"steps": 1, "plot": false, "out_dir": "/data/runs/job1"}')
        o = d.out(4)
        assert d.call("train_start", d.model(), d.loader("/data/train_000.bin", 2, 16), 0, *cfg, o) == 0, d.error
        assert d.call("job_wait", d.i32(o), -1) == 0
        assert (data / "runs" / "job1" / "metrics.jsonl").is_file()
    assert not (secret / "victim.bin").exists()


def test_missing_files_name_the_guest_path(world):
    _, data, _ = world
    with _guest(data) as g:
        d = Driver(g)
        for fn, path in (("model_load", "/data/nope.bin"), ("dataloader_create", "/data/nope_*.bin"),
                         ("tokenizer_load", "/data/nope.bin"), ("dataloader_create", "/data/nope.bin")):
            st = _call(d, fn, path, None)
            assert st == abi.IO, (fn, st, d.error)
            assert "/data/nope" in d.error and str(data) not in d.error, d.error
        # a directory, a file of the wrong format
        assert _call(d, "model_load", "/data/runs", None) == abi.IO
        assert _call(d, "model_load", "/data/train_000.bin", None) == abi.BAD_FORMAT
        assert "/data/train_000.bin" in d.error and str(data) not in d.error
        assert _call(d, "dataloader_create", "/data/m.bin", None) == abi.BAD_FORMAT
        assert _call(d, "model_save", "/data", None) == abi.IO
        for bad in ("", "/data/m\0.bin"):
            assert _call(d, "model_load", bad, None) == abi.INVALID_ARGUMENT
        p = d.buf(b"/data/\xff.bin")
        assert d.call("model_load", *p, d.out(4)) == abi.INVALID_ARGUMENT and "UTF-8" in d.error


def test_save_is_atomic_and_replaces(world):
    _, data, _ = world
    target = data / "m.bin"
    old = target.read_bytes()
    with _guest(data) as g:
        d = Driver(g)
        m = d.model(seed=99)
        p = d.buf(b"/data/m.bin")
        assert d.call("model_save", m, *p) == 0
    new = target.read_bytes()
    assert new != old and len(new) == len(old)
    assert not [f for f in os.listdir(data) if ".tmp" in f]


def test_runner_rejects_bad_dirs(world, tmp_path):
    _, data, _ = world
    from pyllmc.wasm import Host

    r = Host().run(wrapper_module(), dirs=[(str(tmp_path / "none"), "/x")])
    assert r.exit_code == 2 and "not a directory" in r.message
    r = Host().run(wrapper_module(), dirs=[(str(data), "/a/../b")])
    assert r.exit_code == 2 and ".." in r.message
