"""Writing a file atomically: a reader (or a crash) sees the old content or the new, never
part of it. Every file pyllmc writes for others to read (checkpoints' files, optimizer
state, token shards, tokenizer.bin, llm.c checkpoints, parity reports, plots) goes through
here.

The data goes to a temporary file next to the target (same directory, so the rename cannot
cross filesystems), named ``.<name>.tmp-<pid>-<random>`` and created exclusively (two writers
never share one, even in one process); on success it is flushed, fsynced, renamed over the
target with ``os.replace`` (atomic on POSIX and Windows) and the directory is fsynced, so the
rename itself survives a crash. On any exception the temporary file is removed and the
target is left as it was.

    with atomic_write(path, "wb", what="token shard") as f:
        f.write(data)

``what`` names the kind of file: an OSError (disk full, permissions, no such directory)
then becomes a ``FileError`` "<path>: cannot write <what>: <reason>"; without it OSError
propagates unchanged.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from typing import IO, Any, Iterator, Optional, Union

from .errors import FileError

PathLike = Union[str, "os.PathLike[str]"]


def fsync_file(path: PathLike) -> None:
    """Flush a closed file's data to disk."""
    fd = os.open(os.fspath(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: PathLike) -> None:
    """Flush a directory's entries (a rename in it) to disk, where the platform can."""
    try:
        fd = os.open(os.fspath(path), os.O_RDONLY)
    except OSError:  # Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems do not fsync directories
        pass
    finally:
        os.close(fd)


class AtomicFile:
    """A temporary file that becomes ``path`` on ``commit()`` or disappears on ``abort()``.
    For writers that need the file object across calls (a streamed shard); otherwise use
    ``atomic_write``. ``mode`` is "wb" or "w" (text, UTF-8)."""

    def __init__(self, path: PathLike, mode: str = "wb", *, what: Optional[str] = None, fsync: bool = True):
        if mode not in ("wb", "w"):
            raise ValueError(f"AtomicFile mode must be 'wb' or 'w', got {mode!r}")
        self.path = os.fspath(path)
        self.what = what
        self.fsync = fsync
        directory, name = os.path.split(os.path.abspath(self.path))
        self.directory = directory
        self.tmp = os.path.join(directory, f".{name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        try:
            fd = os.open(self.tmp, flags, 0o666)  # the umask applies, as for open()
        except OSError as e:
            raise self._error(e) from None
        self.file: Optional[IO[Any]] = os.fdopen(fd, "wb") if mode == "wb" else os.fdopen(fd, "w", encoding="utf-8")

    def _error(self, e: OSError) -> OSError:
        if self.what is None:
            return e
        return FileError(f"{self.path}: cannot write {self.what}: {e.strerror or e}")

    def _fail(self, e: BaseException) -> BaseException:
        """Remove the temporary file after ``e``; the exception to raise for it (an OSError
        becomes a FileError when ``what`` is set)."""
        self.abort()
        return self._error(e) if isinstance(e, OSError) else e

    def commit(self) -> None:
        """Flush, fsync, close and rename over the target (then fsync the directory)."""
        f, self.file = self.file, None
        if f is None:
            raise ValueError(f"{self.path}: atomic write already committed or aborted")
        try:
            try:
                f.flush()
                if self.fsync:
                    os.fsync(f.fileno())
            finally:
                f.close()
            os.replace(self.tmp, self.path)
        except BaseException as e:
            err = self._fail(e)
            if err is e:
                raise
            raise err from None
        if self.fsync:
            fsync_dir(self.directory)

    def abort(self) -> None:
        """Close and remove the temporary file; the target is untouched. Idempotent."""
        f, self.file = self.file, None
        if f is not None:
            try:
                f.close()
            except OSError:
                pass
        self._unlink()

    def _unlink(self) -> None:
        try:
            os.unlink(self.tmp)
        except OSError:
            pass


@contextlib.contextmanager
def atomic_path(path: PathLike, *, what: Optional[str] = None) -> Iterator[str]:
    """A temporary path next to ``path`` for a writer that takes a file name (the C core's
    checkpoint save): when the block ends without an exception the file there is fsynced and
    renamed over ``path``, as atomic_write does; otherwise it is removed."""
    af = AtomicFile(path, "wb", what=what)
    assert af.file is not None
    af.file.close()  # the writer opens the path itself
    af.file = None
    try:
        yield af.tmp
        fsync_file(af.tmp)
        os.replace(af.tmp, af.path)
    except OSError as e:
        af._unlink()
        raise af._error(e) from None
    except BaseException:
        af._unlink()
        raise
    fsync_dir(af.directory)


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "wb", *, what: Optional[str] = None, fsync: bool = True) -> Iterator[IO[Any]]:
    """A file object whose content replaces ``path`` when the block ends without an
    exception (see the module docstring)."""
    af = AtomicFile(path, mode, what=what, fsync=fsync)
    assert af.file is not None
    try:
        yield af.file
    except BaseException as e:
        err = af._fail(e)
        if err is e:
            raise
        raise err from None
    af.commit()
