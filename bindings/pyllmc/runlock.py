"""An exclusive lock on a run directory, so two trainers never write into the same one.

``RunLock(dir)`` holds ``fcntl.flock`` on ``dir/.lock`` until ``release()`` (or until the
process ends, however it ends: the kernel drops a flock with the last descriptor, so a
crashed or killed trainer leaves no stale lock behind; the file itself stays and is
harmless). A second holder - another process, or another Trainer in the same process -
gets ``StateError`` naming the directory and the pid written into the lock file.
On platforms without ``fcntl`` (Windows) the lock is a no-op.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

from .errors import FileError, StateError

LOCK_NAME = ".lock"

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


class RunLock:
    def __init__(self, directory: Union[str, "os.PathLike[str]"]):
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self._fd: Optional[int] = None
        if fcntl is None:
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise FileError(f"{self.path}: cannot create the run lock: {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            except OSError:
                holder = "unknown"
            os.close(fd)
            raise StateError(f"{self.directory}: another trainer (pid {holder}) is using this run directory; "
                             "wait for it to end, or use another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the last descriptor drops the flock

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:
            pass
