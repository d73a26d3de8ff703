"""A background job's run directory: written by the host in private, published into the guest's.

A guest keeps running while its ``train_start`` job trains, and it can change its own
directories meanwhile through WASI: rename the job's ``out_dir`` away and put a symlink in
its place, or plant a symlink named ``metrics.jsonl`` (WASI's ``path_symlink`` accepts a
target such as ``../../etc``; it is only *following* such links that WASI refuses). A
Trainer writing by path would follow them out of the sandbox. So a job never writes into
the guest's directory by path:

- ``GuestDir`` holds the guest's ``out_dir`` open by descriptor. It is reached from the
  preopened directory one component at a time with ``O_NOFOLLOW``, so neither a symlink in
  the path nor one swapped in after ``train_start`` is ever followed; every later operation
  is relative to a descriptor (``dir_fd``), never a path string.
- The job's Trainer writes its run directory (metrics, checkpoints, TensorBoard events, the
  loss curve) into a private staging directory of the host, which the guest cannot see.
- ``Publisher`` mirrors the staging directory into the ``GuestDir`` after every step, after
  every checkpoint and when the job ends: new files are written under a temporary name
  (``O_CREAT | O_EXCL | O_NOFOLLOW``) and renamed into place, a new directory (a checkpoint)
  is filled under a temporary name and renamed into place whole, ``metrics.jsonl`` and event
  files grow by their new bytes only, and what the Trainer deleted (checkpoints beyond
  ``keep_last``) is deleted again. Whatever the guest put under a name the job writes is
  replaced, as a trainer writing into that directory would replace it; nothing else of the
  guest's is touched. Hidden staging entries (the Trainer's temporaries and lock) are not
  published.

The staging directory costs the size of the run directory again on the host's temporary
file system for the job's lifetime; it is removed when the job ends.
"""

from __future__ import annotations

import os
import secrets
import shutil
import stat
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple

from ..checkpoint import checkpoint_step
from ..trainer import RUN_DIRS, RUN_FILES
from .errors import denied

_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_NEW_FILE_FLAGS = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
                   | getattr(os, "O_CLOEXEC", 0))
#: files the Trainer only ever appends to: published by their new bytes
APPEND_ONLY_PREFIXES = ("metrics.jsonl", "events.out.tfevents.")
_COPY_CHUNK = 1 << 24


def supported() -> bool:
    """Whether this platform has the descriptor-relative calls the job directory needs."""
    return os.open in os.supports_dir_fd and os.mkdir in os.supports_dir_fd and os.rename in os.supports_dir_fd \
        and bool(getattr(os, "O_NOFOLLOW", 0)) and bool(getattr(os, "O_DIRECTORY", 0))


def _tmp_name(name: str) -> str:
    return f".{name}.pyllmc-{secrets.token_hex(6)}.tmp"


def _remove(name: str, dir_fd: int) -> None:
    """Remove ``name`` (file, symlink or directory tree) under ``dir_fd``, following no link."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):  # walked by descriptors: no symlink inside is followed
        fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
        try:
            for entry in os.listdir(fd):
                _remove(entry, fd)
        finally:
            os.close(fd)
        os.rmdir(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)


def open_subdir(parent_fd: int, name: str, *, create: bool) -> int:
    """A descriptor of directory ``name`` under ``parent_fd``; never through a symlink.

    With ``create``, a missing directory is made, and a non-directory in its place (a
    file, a symlink) is replaced by one."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except FileNotFoundError:
        if not create:
            raise
    except OSError:  # ELOOP (a symlink) or ENOTDIR (a file)
        if not create:
            raise
        _remove(name, parent_fd)
    try:
        os.mkdir(name, 0o755, dir_fd=parent_fd)
    except FileExistsError:
        pass  # made meanwhile: opened below with the same care
    return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)


class GuestDir:
    """A guest directory held open by descriptor (see the module docstring)."""

    def __init__(self, fd: int, guest_name: str):
        self.fd = fd
        self.guest_name = guest_name

    @classmethod
    def open(cls, root_real: str, components: Sequence[str], guest_name: str, call: str) -> "GuestDir":
        """Walk ``components`` down from the preopened directory ``root_real`` (the
        operator's, trusted), creating what is missing; a symlink met on the way is
        PERMISSION_DENIED (the caller has already resolved the guest's symlinks that stay
        inside, so one here was swapped in meanwhile)."""
        fd = os.open(root_real, _DIR_FLAGS & ~getattr(os, "O_NOFOLLOW", 0))
        try:
            for c in components:
                try:
                    nfd = os.open(c, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    try:
                        os.mkdir(c, 0o755, dir_fd=fd)
                    except FileExistsError:
                        pass
                    nfd = os.open(c, _DIR_FLAGS, dir_fd=fd)
                except OSError as e:
                    raise denied(f"{call}: {guest_name}: is not a directory inside its preopen "
                                 f"(a symlink or a file is in the way: {e.strerror})") from None
                os.close(fd)
                fd = nfd
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, guest_name)

    def holds_run(self) -> bool:
        """A finished checkpoint or a metrics.jsonl is there (the Trainer's own test)."""
        for name in os.listdir(self.fd):
            if name == "metrics.jsonl":
                return True
            if checkpoint_step(name) is not None:
                try:
                    fd = open_subdir(self.fd, name, create=False)
                except OSError:
                    continue
                try:
                    os.stat("state.json", dir_fd=fd, follow_symlinks=False)
                    return True
                except OSError:
                    pass
                finally:
                    os.close(fd)
        return False

    def clear_run(self) -> None:
        """Remove what a run wrote (checkpoints, RUN_FILES, RUN_DIRS), as ``overwrite`` does."""
        for name in os.listdir(self.fd):
            if checkpoint_step(name) is not None or name in RUN_FILES or name in RUN_DIRS:
                _remove(name, self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _copy_into(src_path: str, dst_fd: int, offset: int = 0) -> None:
    with open(src_path, "rb") as src:
        src.seek(offset)
        pos = offset
        while True:
            chunk = src.read(_COPY_CHUNK)
            if not chunk:
                break
            view = memoryview(chunk)
            while view:
                n = os.pwrite(dst_fd, view, pos)
                pos += n
                view = view[n:]


def _signature(st: os.stat_result) -> Tuple[int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class Publisher:
    """Mirrors a private staging directory into a ``GuestDir`` (see the module docstring)."""

    def __init__(self, target: GuestDir, staging: Optional[str] = None):
        self.target = target
        self.staging = staging or tempfile.mkdtemp(prefix="pyllmc-job-")
        # what was published, by relative path: files -> signature, dirs -> staging inode
        self._files: Dict[str, Tuple[int, int, int]] = {}
        self._dirs: Dict[str, int] = {}
        self._append_fds: Dict[str, int] = {}  # append-only files: the published file, open

    # ------------------------------------------------------------ walking
    def _scan(self) -> Tuple[Dict[str, os.stat_result], Dict[str, os.stat_result]]:
        files, dirs = {}, {}
        for base, dnames, fnames in os.walk(self.staging):
            dnames[:] = sorted(d for d in dnames if not d.startswith("."))
            rel = os.path.relpath(base, self.staging)
            rel = "" if rel == "." else rel
            for d in dnames:
                dirs[os.path.join(rel, d)] = os.stat(os.path.join(base, d), follow_symlinks=False)
            for f in sorted(fnames):
                if f.startswith("."):
                    continue
                st = os.stat(os.path.join(base, f), follow_symlinks=False)
                if stat.S_ISREG(st.st_mode):
                    files[os.path.join(rel, f)] = st
        return files, dirs

    def publish(self) -> None:
        """Bring the guest directory up to date with the staging directory."""
        files, dirs = self._scan()
        self._remove_gone(files, dirs)
        # directories new to the guest (or replaced in staging) are built whole, then renamed in
        built: List[str] = []
        for rel in sorted(dirs, key=lambda r: r.count(os.sep)):
            if any(rel.startswith(b + os.sep) for b in built) or self._dirs.get(rel) == dirs[rel].st_ino:
                continue
            self._publish_new_dir(rel, files, dirs)
            built.append(rel)
        for rel, st in files.items():
            if self._files.get(rel) != _signature(st):
                self._publish_file(rel, st)

    def _parent_fd(self, rel: str) -> int:
        fd = os.dup(self.target.fd)
        try:
            for c in [c for c in os.path.dirname(rel).split(os.sep) if c]:
                nfd = open_subdir(fd, c, create=True)
                os.close(fd)
                fd = nfd
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _publish_new_dir(self, rel: str, files: Dict[str, os.stat_result], dirs: Dict[str, os.stat_result]) -> None:
        """Directory ``rel`` and everything in it, built under a temporary name and renamed
        into place (a checkpoint appears whole or not at all)."""
        pfd = self._parent_fd(rel)
        name = os.path.basename(rel)
        tmp = _tmp_name(name)
        try:
            os.mkdir(tmp, 0o755, dir_fd=pfd)
            tfd = os.open(tmp, _DIR_FLAGS, dir_fd=pfd)
            try:
                inner_dirs = sorted((d for d in dirs if d.startswith(rel + os.sep)), key=lambda r: r.count(os.sep))
                fds = {rel: tfd}
                for d in inner_dirs:
                    parent = fds[os.path.dirname(d)]
                    os.mkdir(os.path.basename(d), 0o755, dir_fd=parent)
                    fds[d] = os.open(os.path.basename(d), _DIR_FLAGS, dir_fd=parent)
                for f, st in files.items():
                    if f.startswith(rel + os.sep):
                        fd = os.open(os.path.basename(f), _NEW_FILE_FLAGS, 0o644, dir_fd=fds[os.path.dirname(f)])
                        try:
                            _copy_into(os.path.join(self.staging, f), fd)
                            os.fsync(fd)
                        finally:
                            os.close(fd)
                        self._files[f] = _signature(st)
                for d, fd in fds.items():
                    if d != rel:
                        os.close(fd)
                        self._dirs[d] = dirs[d].st_ino
                os.fsync(tfd)
            finally:
                os.close(tfd)
            old = None
            try:
                st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):  # an older version of it (or the guest's): moved aside
                    old = _tmp_name(name)
                    os.rename(name, old, src_dir_fd=pfd, dst_dir_fd=pfd)
            except FileNotFoundError:
                pass
            os.rename(tmp, name, src_dir_fd=pfd, dst_dir_fd=pfd)  # replaces a file or symlink there
            tmp = ""
            if old is not None:
                _remove(old, pfd)
            os.fsync(pfd)
        finally:
            if tmp:
                _remove(tmp, pfd)
            os.close(pfd)
        self._dirs[rel] = dirs[rel].st_ino

    def _publish_file(self, rel: str, st: os.stat_result) -> None:
        name = os.path.basename(rel)
        if name.startswith(APPEND_ONLY_PREFIXES) and rel in self._append_fds and st.st_size >= self._files[rel][1]:
            fd = self._append_fds[rel]
            _copy_into(os.path.join(self.staging, rel), fd, self._files[rel][1])
            self._files[rel] = _signature(st)
            return
        pfd = self._parent_fd(rel)
        try:
            tmp = _tmp_name(name)
            fd = os.open(tmp, _NEW_FILE_FLAGS, 0o644, dir_fd=pfd)
            keep = False
            try:
                _copy_into(os.path.join(self.staging, rel), fd)
                os.fsync(fd)
                try:
                    st_there = os.stat(name, dir_fd=pfd, follow_symlinks=False)
                    if stat.S_ISDIR(st_there.st_mode):
                        _remove(name, pfd)
                except FileNotFoundError:
                    pass
                os.rename(tmp, name, src_dir_fd=pfd, dst_dir_fd=pfd)
                if name.startswith(APPEND_ONLY_PREFIXES):
                    old = self._append_fds.pop(rel, None)
                    if old is not None:
                        os.close(old)
                    self._append_fds[rel] = fd  # the descriptor follows the file to its name
                    keep = True
            except BaseException:
                _remove(tmp, pfd)
                raise
            finally:
                if not keep:
                    os.close(fd)
        finally:
            os.close(pfd)
        self._files[rel] = _signature(st)

    def _remove_gone(self, files: Dict[str, os.stat_result], dirs: Dict[str, os.stat_result]) -> None:
        """What the Trainer deleted from staging (old checkpoints) goes from the guest's too."""
        for rel in [r for r in self._files if r not in files]:
            del self._files[rel]
            fd = self._append_fds.pop(rel, None)
            if fd is not None:
                os.close(fd)
            if not any(rel.startswith(d + os.sep) for d in self._dirs if d not in dirs):
                self._unlink(rel)
        for rel in sorted((r for r in self._dirs if r not in dirs), key=lambda r: r.count(os.sep)):
            if rel in self._dirs:
                del self._dirs[rel]
                for inner in [d for d in self._dirs if d.startswith(rel + os.sep)]:
                    del self._dirs[inner]
                self._unlink(rel)

    def _unlink(self, rel: str) -> None:
        try:
            pfd = self._parent_fd(rel)
        except OSError:
            return
        try:
            _remove(os.path.basename(rel), pfd)
        finally:
            os.close(pfd)

    def close(self) -> None:
        """Close the descriptors and remove the staging directory (after a last publish)."""
        for fd in self._append_fds.values():
            os.close(fd)
        self._append_fds.clear()
        self.target.close()
        shutil.rmtree(self.staging, ignore_errors=True)
