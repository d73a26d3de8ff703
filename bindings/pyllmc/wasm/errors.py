"""The one exception type the host functions use internally: a status code plus message.

Every host function turns a ``GuestError`` (and any other exception) into its status code
and the guest's ``last_error`` message; none ever reaches wasmtime.
"""

from __future__ import annotations

from . import abi


class GuestError(Exception):
    """A failed host call: ``status`` (an ``abi.STATUS`` code) and a one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = int(status)
        self.message = message


def invalid(message: str) -> GuestError:
    return GuestError(abi.INVALID_ARGUMENT, message)


def denied(message: str) -> GuestError:
    return GuestError(abi.PERMISSION_DENIED, message)


def limit(message: str) -> GuestError:
    return GuestError(abi.LIMIT_EXCEEDED, message)


def busy(message: str) -> GuestError:
    return GuestError(abi.BAD_STATE, message)
