"""Exceptions raised by pyllmc, one class per llmc_status code of the C core.

Each class also derives from the matching built-in exception, so callers can catch either
``pyllmc.InvalidArgumentError`` or a plain ``ValueError``.
"""

from __future__ import annotations

from typing import Dict, Optional, Type


class PyllmcError(Exception):
    """Base class of every error pyllmc raises. ``status`` is the C status code (or None).
    ``field``, when set, is the TrainerConfig setting the error is about; the message then
    starts with that name, which the command line replaces with the flag (``--batch``)."""

    status: Optional[int] = None
    field: Optional[str] = None

    def __init__(self, message: str = "", status: Optional[int] = None, *, field: Optional[str] = None):
        super().__init__(message)
        if status is not None:
            self.status = status
        if field is not None:
            self.field = field

    def __str__(self) -> str:  # OSError would otherwise format its args as a tuple
        return str(self.args[0]) if self.args else ""


class InvalidArgumentError(PyllmcError, ValueError):
    """A size, pointer or value the call cannot accept."""


class OutOfMemoryError(PyllmcError, MemoryError):
    """An allocation failed or a size overflowed."""


class FileError(PyllmcError, OSError):
    """A file could not be opened, read or written."""


class BadFormatError(PyllmcError, ValueError):
    """A file's content is not what its format allows."""


class StateError(PyllmcError, RuntimeError):
    """Calls in the wrong order (e.g. backward before forward), or a closed model."""


class UnsupportedError(PyllmcError, NotImplementedError):
    """A feature this build does not have."""


class NonFiniteError(PyllmcError, FloatingPointError):
    """Training met a NaN or infinite loss or gradient. ``report`` (a
    ``pyllmc.numerics.NonFiniteReport``) names the step and the first tensor (and layer) that
    went non-finite; ``step``, ``tensor`` and ``layer`` are shortcuts to it."""

    def __init__(self, message: str = "", status: Optional[int] = None, report=None):
        super().__init__(message, status)
        self.report = report

    @property
    def step(self) -> Optional[int]:
        return getattr(self.report, "step", None)

    @property
    def tensor(self) -> Optional[str]:
        return getattr(self.report, "tensor", None)

    @property
    def layer(self) -> Optional[int]:
        return getattr(self.report, "layer", None)


# llmc_status values (see llmc.h); kept literal so this module imports without the library.
STATUS_OK = 0
ERROR_CLASSES: Dict[int, Type[PyllmcError]] = {
    1: InvalidArgumentError,  # LLMC_ERR_INVALID_ARGUMENT
    2: OutOfMemoryError,  # LLMC_ERR_OUT_OF_MEMORY
    3: FileError,  # LLMC_ERR_IO
    4: BadFormatError,  # LLMC_ERR_BAD_FORMAT
    5: StateError,  # LLMC_ERR_BAD_STATE
    6: UnsupportedError,  # LLMC_ERR_UNSUPPORTED
}
for _code, _cls in ERROR_CLASSES.items():
    _cls.status = _code


def error_class(status: int) -> Type[PyllmcError]:
    return ERROR_CLASSES.get(int(status), PyllmcError)


def error_for(status: int, message: str) -> PyllmcError:
    """The exception for a C status code with the given message."""
    return error_class(status)(message, status=int(status))


def check(status: int, model=None, context: Optional[str] = None, lib=None) -> None:
    """Raise the typed exception for a non-zero llmc_status.

    ``model`` is the ``llmc_model*`` the call was made on, or None for calls without a
    handle (create, load), whose message is per thread. ``context`` (e.g. a file path) is
    prefixed to the message when the C message does not already mention it. ``lib`` is the
    library the call went to (default: the native one; a model on the wasm core passes its
    ``pyllmc.wasm_core.lib.WasmLib``).
    """
    if status == STATUS_OK:
        return
    from ._ffi import ffi, string
    from ._ffi import lib as native

    lib = native if lib is None else lib

    def status_name(code: int) -> str:
        return string(lib.llmc_status_name(int(code)))

    if model is not None and model != ffi.NULL:
        message = string(lib.llmc_model_last_error(model))
    else:
        message = string(lib.llmc_last_error())
    if not message:
        message = status_name(status) or f"error {status}"
    if context and context not in message:
        message = f"{context}: {message}"
    raise error_for(status, message)
