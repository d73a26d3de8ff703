"""Bounds-checked access to a guest's exported linear memory.

A guest pointer is an ``i32`` offset into the memory named ``memory``; wasm32 addresses are
unsigned, so the host reads it as ``ptr & 0xFFFFFFFF`` (a C guest's pointers above 2 GiB
arrive as negative i32). Lengths are signed i32 and must be >= 0. Every (pointer, length)
is checked against the memory's current size *before* any byte moves, in Python integers
(so ``ptr + len`` cannot overflow); pointer 0 (NULL in C) is refused for any access of at
least one byte. Memory may grow (and move) between calls, so the base address is fetched
for every access, never cached across calls.
"""

from __future__ import annotations

import ctypes
import struct
from typing import Any, Optional

from .errors import invalid

_U32 = 0xFFFFFFFF


class GuestMemory:
    """The exported memory of the guest that made the current call (one per host call)."""

    __slots__ = ("_caller", "_mem", "call")

    def __init__(self, caller: Any, call: str, memory: Any = None):
        self.call = call  # the host function's name, for messages
        self._caller = caller
        self._mem: Optional[Any] = memory  # None: looked up through the caller on first use

    def _memory(self) -> Any:
        if self._mem is None:
            mem = self._caller.get("memory")
            if mem is None or not hasattr(mem, "data_len"):
                raise invalid(f"{self.call}: the guest exports no linear memory named 'memory'")
            self._mem = mem
        return self._mem

    def size(self) -> int:
        return int(self._memory().data_len(self._caller))

    def check(self, ptr: int, length: int, what: str) -> int:
        """The unsigned address of ``length`` bytes at ``ptr``; InvalidArgument if they are
        not all inside the memory."""
        if length < 0:
            raise invalid(f"{self.call}: {what}: negative length {length}")
        addr = int(ptr) & _U32
        if length == 0:
            return addr
        if addr == 0:
            raise invalid(f"{self.call}: {what}: null pointer")
        size = self.size()
        if addr + length > size:
            raise invalid(f"{self.call}: {what}: {length} bytes at {addr} are outside the guest memory "
                          f"({size} bytes)")
        return addr

    def _base(self) -> int:
        return ctypes.addressof(self._memory().data_ptr(self._caller).contents)

    def read(self, ptr: int, length: int, what: str) -> bytes:
        addr = self.check(ptr, length, what)
        if length == 0:
            return b""
        return ctypes.string_at(self._base() + addr, length)

    def write(self, ptr: int, data: bytes, what: str) -> None:
        addr = self.check(ptr, len(data), what)
        if data:
            ctypes.memmove(self._base() + addr, data, len(data))

    # fixed-size values: checked the same way
    def write_i32(self, ptr: int, value: int, what: str) -> None:
        self.write(ptr, struct.pack("<i", int(value)), what)

    def write_i64(self, ptr: int, value: int, what: str) -> None:
        self.write(ptr, struct.pack("<q", int(value)), what)

    def write_f32(self, ptr: int, value: float, what: str) -> None:
        from .jobs import f32

        self.write(ptr, struct.pack("<f", f32(value)), what)


def as_u64(value: int) -> int:
    """An i64 from the guest read as unsigned (seeds are u64 in the C core)."""
    return int(value) & 0xFFFFFFFFFFFFFFFF
