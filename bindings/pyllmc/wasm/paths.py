"""Guest paths, resolved through the guest's preopened directories only.

A guest names files the way its own WASI file calls would: ``/data/train.bin`` for a
directory preopened as ``/data`` (``--dir HOST::/data``), ``train.bin`` or ``./train.bin``
for one preopened as ``.``; a relative path with no ``.`` preopen is taken relative to
``/`` (wasi-libc's default working directory). The longest preopen that is a
component-wise prefix of the path wins.

Refused with PERMISSION_DENIED, always before any file is opened:
- any ``..`` component (even one that would stay inside);
- a path under no preopen (an absolute path elsewhere, a relative one with no preopen);
- a path whose *real* path (``os.path.realpath``: every symlink, in the file itself or in
  any parent directory, followed) is not inside the real path of its preopen.
For writes, the parent directory's real path must be inside and so must the target's if it
already exists (a symlink at the target that points outside is refused, although the
atomic rename would only replace the link). Messages name guest paths: ``to_guest`` rewrites
host directories back to their guest names, so a guest never learns where its files live.

The check is made when the call is made, and the file is opened by its resolved real path
while the guest waits for the call (a guest has one thread, so it cannot swap a symlink in
meanwhile). A background job runs while the guest does: its ``out_dir`` is held open by
descriptor and written only through descriptors (``open_directory``, ``pyllmc.wasm.outdir``).
"""

from __future__ import annotations

import glob as _glob
import os
from dataclasses import dataclass
from typing import List, Sequence, Tuple

from . import abi
from .errors import GuestError, denied, invalid
from .outdir import GuestDir


@dataclass(frozen=True)
class Preopen:
    host: str  #: the directory on the host, as given
    guest: str  #: its name in the guest ("/data", ".", "/")
    real: str  #: os.path.realpath(host)

    @property
    def absolute(self) -> bool:
        return self.guest.startswith("/")

    @property
    def components(self) -> Tuple[str, ...]:
        return _components(self.guest)


def _components(path: str) -> Tuple[str, ...]:
    return tuple(c for c in path.split("/") if c not in ("", "."))


def normalise_guest_name(name: str) -> str:
    """``/data/`` -> ``/data``, ``./x`` -> ``x``, ``""`` or ``./`` -> ``.``."""
    if name.startswith("/"):
        return "/" + "/".join(_components(name))
    c = _components(name)
    return "/".join(c) if c else "."


def make_preopen(host: str, guest: str) -> Preopen:
    """A preopen; ValueError naming the problem if ``host`` is not a directory or ``guest``
    contains ``..``."""
    if not os.path.isdir(host):
        raise ValueError(f"--dir {host}: not a directory")
    if ".." in guest.split("/"):
        raise ValueError(f"--dir {host}::{guest}: the guest path must not contain '..'")
    return Preopen(host=host, guest=normalise_guest_name(guest), real=os.path.realpath(host))


def _inside(real: str, root: str) -> bool:
    if root == os.sep:
        return real.startswith(os.sep)
    return real == root or real.startswith(root + os.sep)


class PathResolver:
    """One guest's view of the host file system."""

    def __init__(self, preopens: Sequence[Preopen]):
        self.preopens = list(preopens)
        # for to_guest: longest host prefixes first
        pairs = []
        for p in self.preopens:
            for h in {p.real, os.path.abspath(p.host)}:
                pairs.append((h, p.guest))
        self._rewrites = sorted(pairs, key=lambda hg: -len(hg[0]))

    # ------------------------------------------------------------ matching
    def _match(self, path: str, call: str) -> Tuple[Preopen, Tuple[str, ...]]:
        if not path:
            raise invalid(f"{call}: empty path")
        if "\0" in path:
            raise invalid(f"{call}: {path!r}: a path must not contain a NUL character")
        if ".." in path.split("/"):
            raise denied(f"{call}: {path}: '..' is not allowed in guest paths")
        comps = _components(path)
        tries = [path.startswith("/")]
        if not path.startswith("/"):
            tries.append(True)  # relative to the working directory "/"
        for absolute in tries:
            best = None
            for p in self.preopens:
                pc = p.components
                if p.absolute == absolute and comps[:len(pc)] == pc and (best is None or len(pc) > len(best.components)):
                    best = p
            if best is not None:
                return best, comps[len(best.components):]
        raise denied(f"{call}: {path}: outside every preopened directory")

    def _check_inside(self, real: str, pre: Preopen, path: str, call: str) -> str:
        if not _inside(real, pre.real):
            raise denied(f"{call}: {path}: leads outside its preopened directory {pre.guest} (through a symlink)")
        return real

    # ------------------------------------------------------------ resolution
    def read(self, path: str, call: str) -> str:
        """The real host path of an existing (or missing) file to read."""
        pre, rest = self._match(path, call)
        host = os.path.join(pre.real, *rest)
        return self._check_inside(os.path.realpath(host), pre, path, call)

    def write(self, path: str, call: str) -> str:
        """The host path to write ``path`` at: real parent directory + file name."""
        pre, rest = self._match(path, call)
        if not rest:
            raise GuestError(abi.IO, f"{call}: {path}: is a directory")
        host = os.path.join(pre.real, *rest)
        parent = self._check_inside(os.path.realpath(os.path.dirname(host)), pre, path, call)
        target = os.path.join(parent, rest[-1])
        if os.path.lexists(target):
            self._check_inside(os.path.realpath(target), pre, path, call)
            if os.path.isdir(target):
                raise GuestError(abi.IO, f"{call}: {path}: is a directory")
        elif not os.path.isdir(parent):
            raise GuestError(abi.IO, f"{call}: {path}: the parent directory does not exist")
        return target

    def directory(self, path: str, call: str) -> str:
        """The real host path of a directory to create or write into (e.g. out_dir)."""
        pre, rest = self._match(path, call)
        host = os.path.join(pre.real, *rest)
        return self._check_inside(os.path.realpath(host), pre, path, call)

    def open_directory(self, path: str, call: str) -> GuestDir:
        """Directory ``path`` (created if missing) held open by descriptor, reached from its
        preopen without following any symlink: the run directory of a background job."""
        real = self.directory(path, call)
        pre, _ = self._match(path, call)
        rel = os.path.relpath(real, pre.real)
        comps = [] if rel == os.curdir else rel.split(os.sep)
        return GuestDir.open(pre.real, comps, path, call)

    def glob(self, pattern: str, call: str) -> List[str]:
        """Real host paths of the files ``pattern`` (a path or glob) names, sorted."""
        if not _glob.has_magic(pattern):
            return [self.read(pattern, call)]
        pre, rest = self._match(pattern, call)
        fixed = 0
        while fixed < len(rest) and not _glob.has_magic(rest[fixed]):
            fixed += 1
        base = self._check_inside(os.path.realpath(os.path.join(pre.real, *rest[:fixed])), pre, pattern, call)
        matches = sorted(_glob.glob(os.path.join(base, *rest[fixed:])))
        if not matches:
            raise GuestError(abi.IO, f"{call}: {pattern}: no files match this pattern")
        return [self._check_inside(os.path.realpath(m), pre, pattern, call) for m in matches]

    # ------------------------------------------------------------ messages
    def to_guest(self, text: str) -> str:
        """``text`` with host directories replaced by their guest names."""
        for h, g in self._rewrites:
            if h and h in text:
                text = text.replace(h + os.sep, ("" if g == "." else g.rstrip("/") + "/"))
                text = text.replace(h, g)
        return text
