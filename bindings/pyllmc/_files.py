"""Opening input files safely: only regular files, never blocking.

``open(path, "rb")`` of a FIFO (named pipe) blocks until a writer appears, and reading a
character device such as ``/dev/zero`` or ``/dev/urandom`` never ends: a hostile path made
the loaders hang or exhaust memory. ``open_regular`` opens with ``O_NONBLOCK`` (which
does not change reads of regular files), checks with ``fstat`` that the path is a regular
file, and raises ``FileError`` naming the file otherwise.
"""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING, BinaryIO, Tuple, Union

if TYPE_CHECKING:
    import numpy as np

from .errors import FileError, InvalidArgumentError

PathLike = Union[str, "os.PathLike[str]"]


def open_regular(path: PathLike, what: str = "file") -> Tuple[BinaryIO, int]:
    """(binary file object, size in bytes) of ``path``, which must be a regular file.

    ``what`` names the kind of file in error messages ("token shard", "tokenizer", ...).
    """
    p = os.fspath(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(p, flags)
    except IsADirectoryError:
        raise FileError(f"{p}: is a directory, not a {what} file") from None
    except OSError as e:
        raise FileError(f"{p}: cannot read {what}: {e.strerror or e}") from None
    except ValueError:  # os.open: "embedded null byte"
        raise InvalidArgumentError(f"{p!r}: a path must not contain a NUL character") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise FileError(f"{p}: is a directory, not a {what} file")
        if not stat.S_ISREG(st.st_mode):
            raise FileError(f"{p}: not a regular file (a {what} must be a regular file)")
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    return f, int(st.st_size)


def read_header_ints(path: PathLike, what: str, error_cls: type, nbytes: int = 1024) -> Tuple["np.ndarray", int]:
    """The first ``nbytes`` of an llm.c-format file (checkpoint, optimizer state, token shard)
    as little-endian int32s, plus the file size. A file shorter than its header raises
    ``error_cls`` naming the file; an unreadable one, ``FileError``."""
    import numpy as np

    p = os.fspath(path)
    f, size = open_regular(p, what)
    try:
        with f:
            raw = f.read(nbytes)
    except OSError as e:
        raise FileError(f"{p}: cannot read {what}: {e.strerror or e}") from None
    if len(raw) < nbytes:
        raise error_cls(f"{p}: {size} bytes, shorter than the {nbytes}-byte {what} header")
    return np.frombuffer(raw, dtype="<i4"), size
