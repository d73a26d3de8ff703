"""pyllmc.atomic, the one atomic-write helper: the target gets all of the new content or keeps
its old one, and no temporary file is left behind either way; and the writers of every file
format use it."""
from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from pyllmc.atomic import AtomicFile, atomic_write
from pyllmc.errors import FileError


def _entries(d):
    return sorted(p.name for p in d.iterdir())  # hidden temporaries included


def test_success_replaces_the_target(tmp_path):
    p = tmp_path / "x.bin"
    p.write_bytes(b"old")
    with atomic_write(p) as f:
        f.write(b"new content")
        assert p.read_bytes() == b"old"  # nothing visible before the end
        assert len(_entries(tmp_path)) == 2  # the target and one temporary next to it
    assert p.read_bytes() == b"new content" and _entries(tmp_path) == ["x.bin"]
    with atomic_write(tmp_path / "t.json", "w") as f:
        f.write("ä\n")
    assert (tmp_path / "t.json").read_text(encoding="utf-8") == "ä\n"


def test_an_error_leaves_the_old_file_and_no_partial_one(tmp_path):
    p = tmp_path / "x.bin"
    p.write_bytes(b"old")

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with atomic_write(p) as f:
            f.write(b"half of the new")
            raise Boom
    assert p.read_bytes() == b"old" and _entries(tmp_path) == ["x.bin"]
    with pytest.raises(Boom):  # a new file: none appears
        with atomic_write(tmp_path / "new.bin") as f:
            f.write(b"x")
            raise Boom
    assert _entries(tmp_path) == ["x.bin"]
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(p) as f:
            f.write(b"y")
            raise KeyboardInterrupt
    assert p.read_bytes() == b"old" and _entries(tmp_path) == ["x.bin"]


def test_os_errors_become_file_errors_naming_the_file(tmp_path):
    missing = tmp_path / "no_such_dir" / "x.bin"
    with pytest.raises(FileError, match=r"no_such_dir/x\.bin: cannot write shard"):
        with atomic_write(missing, what="shard"):
            pass
    with pytest.raises(OSError):  # without `what`, the OSError itself
        with atomic_write(missing):
            pass
    target_dir = tmp_path / "is_a_dir"
    target_dir.mkdir()
    with pytest.raises(FileError, match="cannot write tokenizer"):  # the rename fails
        with atomic_write(target_dir, what="tokenizer") as f:
            f.write(b"x")
    assert _entries(tmp_path) == ["is_a_dir"] and _entries(target_dir) == []


def test_concurrent_writers_never_share_a_temporary(tmp_path):
    p = tmp_path / "x.bin"
    errors = []

    def write(i):
        try:
            for _ in range(20):
                with atomic_write(p) as f:
                    f.write(bytes([i]) * 4096)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    ts = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    data = p.read_bytes()
    assert len(data) == 4096 and len(set(data)) == 1  # one writer's whole content
    assert _entries(tmp_path) == ["x.bin"]


def test_umask_applies_as_for_open(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "x.bin") as f:
            f.write(b"x")
        (tmp_path / "y.bin").write_bytes(b"y")
    finally:
        os.umask(old)
    assert (tmp_path / "x.bin").stat().st_mode & 0o777 == (tmp_path / "y.bin").stat().st_mode & 0o777


def test_atomic_file_commit_and_abort(tmp_path):
    af = AtomicFile(tmp_path / "s.bin")
    af.file.write(b"abc")
    af.abort()
    af.abort()  # idempotent
    assert _entries(tmp_path) == []
    af = AtomicFile(tmp_path / "s.bin")
    af.file.write(b"abc")
    af.commit()
    assert (tmp_path / "s.bin").read_bytes() == b"abc"
    with pytest.raises(ValueError):
        af.commit()


def test_the_format_writers_leave_no_partial_file(tmp_path, monkeypatch):
    """Each writer of a file format, failing half-way, leaves neither a partial target nor a
    temporary (they all write through pyllmc.atomic)."""
    from pyllmc import checkpoint, data, tokenizer

    real_write = AtomicFile.__init__

    def failing_after_open(self, *a, **kw):
        real_write(self, *a, **kw)
        f = self.file

        class Failing:
            def __init__(self, inner):
                self.inner, self.n = inner, 0

            def write(self, b):
                self.n += 1
                if self.n > 1:
                    raise OSError(28, "No space left on device")
                return self.inner.write(b)

            def __getattr__(self, name):
                return getattr(self.inner, name)

        self.file = Failing(f)

    monkeypatch.setattr(AtomicFile, "__init__", failing_after_open)
    with pytest.raises(FileError, match="No space left"):
        data.write_shard(tmp_path / "s.bin", np.arange(100))
    with pytest.raises(FileError, match="No space left"):
        tokenizer.write_tokenizer_bin(tmp_path / "tok.bin", [b"a", b"b"], 1)
    with pytest.raises(OSError, match="No space left"):
        checkpoint.write_optimizer_state(tmp_path / "optimizer.bin", np.zeros(4), np.zeros(4), 1)
    assert _entries(tmp_path) == []
