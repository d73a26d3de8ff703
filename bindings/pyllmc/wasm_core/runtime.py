"""The wasm core's runtime: one compiled module per process, one sandboxed instance per model.

Isolation. Every model gets its own wasmtime store and instance of libllmc.wasm: its own
linear memory (at most 4 GiB), nothing shared with another model or with the process. The
WASI context grants no directory at all between calls; a call that reads or writes a file
(``llmc_model_load``, ``llmc_model_save``) gets a fresh context that preopens exactly the
directory of that file, under the guest name ``/sandbox``, for the duration of the call. So
a bug in the checkpoint parser can at worst corrupt the module's own memory or that one
directory's file, never the process. (wasi-libc reads the preopen table once, at
``_initialize``: the instance starts with an empty directory preopened as ``/sandbox``, so
fd 3 is known as ``/sandbox``, and each later context puts the call's directory at fd 3.)

Zero-copy. The memory is created with ``memory_may_move = False`` and a 4 GiB reservation,
so its base address never changes while it grows: numpy views of the model's buffers stay
valid (``base_address`` is checked after every call that may grow it all the same).

Traps. A trap (out-of-bounds access, ``unreachable``, stack exhaustion) is a bug in the
core, never bad input: it raises ``WasmTrapError`` and the instance is poisoned (every later
call raises ``StateError``), since the core's state after a trap is unknown.
"""

from __future__ import annotations

import ctypes
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

from ..errors import PyllmcError, StateError, UnsupportedError
from . import MEMORY_LIMIT, find_module, unavailable_reason

#: the guest name of the one directory a file call may use
GUEST_DIR = "/sandbox"


class WasmTrapError(PyllmcError, RuntimeError):
    """The wasm core trapped (a bug in the core, or a resource the runtime refused): the
    model's instance is unusable afterwards."""


_compiled: Dict[str, Tuple[Any, Any, Any]] = {}
_compiled_lock = threading.Lock()


def _wasmtime():
    try:
        import wasmtime
    except ImportError as e:
        raise UnsupportedError(f"device 'wasm' needs wasmtime: pip install 'pyllmc[wasm]' ({e})") from None
    return wasmtime


def engine_config(wasmtime: Any) -> Any:
    """The engine settings the core relies on (see the module docstring)."""
    cfg = wasmtime.Config()
    cfg.wasm_simd = True
    # relaxed SIMD, deterministic: f32x4.relaxed_madd is always the fused multiply-add, on
    # every host, so results do not depend on the machine the module runs on
    cfg.wasm_relaxed_simd = True
    cfg.wasm_relaxed_simd_deterministic = True
    cfg.memory_may_move = False
    cfg.memory_reservation = MEMORY_LIMIT
    cfg.memory_reservation_for_growth = 0
    cfg.cranelift_opt_level = "speed"
    return cfg


def compiled(path: Optional[Path] = None) -> Tuple[Any, Any, Any]:
    """(wasmtime module, engine, module path), compiled once per process and path."""
    wasmtime = _wasmtime()
    if path is None:
        why = unavailable_reason()
        if why:
            raise UnsupportedError(f"device 'wasm' is not available: {why}")
        path = find_module()
    key = str(path)
    with _compiled_lock:
        hit = _compiled.get(key)
        if hit is None:
            engine = wasmtime.Engine(engine_config(wasmtime))
            try:
                module = wasmtime.Module.from_file(engine, key)
            except wasmtime.WasmtimeError as e:
                raise UnsupportedError(f"{key}: not a wasm core this runtime can compile: {e}") from None
            hit = (module, engine, path)
            _compiled[key] = hit
    return hit


class Instance:
    """One instance of libllmc.wasm in its own store: calls, linear memory, sandboxed files."""

    def __init__(self, path: Optional[Path] = None):
        wasmtime = _wasmtime()
        self._wt = wasmtime
        module, engine, self.path = compiled(path)
        self._store = wasmtime.Store(engine)
        self._store.set_limits(memory_size=MEMORY_LIMIT)
        linker = wasmtime.Linker(engine)
        linker.define_wasi()
        self.poisoned: Optional[str] = None
        self._empty = tempfile.TemporaryDirectory(prefix="pyllmc-wasm-")
        self._set_dir(self._empty.name)
        try:
            self._instance = linker.instantiate(self._store, module)
        except (wasmtime.WasmtimeError, wasmtime.Trap) as e:
            raise UnsupportedError(f"{self.path}: cannot instantiate the wasm core: {e}") from None
        exports = self._instance.exports(self._store)
        self._memory = exports["memory"]
        self._funcs: Dict[str, Callable] = {}
        for name in ("_initialize", "malloc", "free"):
            if exports.get(name) is None:
                raise UnsupportedError(f"{self.path}: the module does not export {name}: not a wasm core")
        self._exports = exports
        self.call("_initialize")
        self._set_dir(None)  # between calls: no directory at all
        self._empty.cleanup()
        self._base = self.base_address()

    # ---------------------------------------------------------------- sandboxed files
    def _set_dir(self, host_dir: Optional[str]) -> None:
        wasi = self._wt.WasiConfig()
        if host_dir is not None:
            wasi.preopen_dir(host_dir, GUEST_DIR)
        self._store.set_wasi(wasi)

    def with_dir(self, host_dir: str, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` with ``host_dir`` (and nothing else) visible as /sandbox."""
        self._set_dir(host_dir)
        try:
            return fn()
        finally:
            self._set_dir(None)

    # ---------------------------------------------------------------- calls
    def func(self, name: str) -> Callable:
        f = self._funcs.get(name)
        if f is None:
            f = self._exports.get(name)
            if f is None:
                raise UnsupportedError(f"{self.path}: the wasm core does not export {name} (stale build?)")
            self._funcs[name] = f
        return f

    def call(self, name: str, *args: Any) -> Any:
        if self.poisoned:
            raise StateError(f"the wasm core trapped earlier ({self.poisoned}); create a new model")
        f = self.func(name)
        try:
            return f(self._store, *args)
        except self._wt.Trap as e:
            self.poisoned = f"{name}: {str(e).splitlines()[0]}"
            raise WasmTrapError(f"the wasm core trapped in {name}: {e}") from None
        except self._wt.WasmtimeError as e:  # e.g. proc_exit, a host-side failure
            self.poisoned = f"{name}: {str(e).splitlines()[0]}"
            raise WasmTrapError(f"the wasm core failed in {name}: {e}") from None

    # ---------------------------------------------------------------- memory
    def base_address(self) -> int:
        return ctypes.addressof(self._memory.data_ptr(self._store).contents)

    def size(self) -> int:
        return int(self._memory.data_len(self._store))

    def host_address(self, ptr: int) -> int:
        """The host address of guest pointer ``ptr`` (checked to lie in the memory)."""
        addr = int(ptr) & 0xFFFFFFFF
        if not 0 < addr <= self.size():
            raise PyllmcError(f"the wasm core returned pointer {addr} outside its memory ({self.size()} bytes)")
        base = self.base_address()
        if base != self._base:  # never with memory_may_move = False; a view would dangle
            raise PyllmcError("the wasm core's linear memory moved: views taken before are invalid")
        return base + addr

    def malloc(self, nbytes: int) -> int:
        p = int(self.call("malloc", max(int(nbytes), 1))) & 0xFFFFFFFF
        if p == 0:
            from ..errors import OutOfMemoryError

            raise OutOfMemoryError(f"the wasm core cannot allocate {int(nbytes)} bytes in its 4 GiB memory")
        return p

    def free(self, ptr: int) -> None:
        if ptr:
            self.call("free", int(ptr))

    def read(self, ptr: int, nbytes: int) -> bytes:
        if nbytes <= 0:
            return b""
        self._check(ptr, nbytes)
        return ctypes.string_at(self.base_address() + ptr, nbytes)

    def write(self, ptr: int, data: bytes) -> None:
        if not data:
            return
        self._check(ptr, len(data))
        ctypes.memmove(self.base_address() + ptr, data, len(data))

    def cstring(self, ptr: int, limit: int = 1 << 16) -> bytes:
        """The NUL-terminated string at ``ptr`` (b"" for NULL), at most ``limit`` bytes."""
        ptr = int(ptr) & 0xFFFFFFFF
        if ptr == 0:
            return b""
        n = min(limit, self.size() - ptr)
        if n <= 0:
            raise PyllmcError(f"the wasm core returned string pointer {ptr} outside its memory")
        raw = ctypes.string_at(self.base_address() + ptr, n)
        end = raw.find(b"\0")
        return raw if end < 0 else raw[:end]

    def _check(self, ptr: int, nbytes: int) -> None:
        if ptr <= 0 or ptr + nbytes > self.size():
            raise PyllmcError(f"{nbytes} bytes at {ptr} are outside the wasm core's memory ({self.size()} bytes)")


def sandbox_path(path: bytes, for_write: bool) -> Tuple[str, bytes]:
    """(host directory to preopen, the guest path inside /sandbox) for a file call.

    The directory is that of the file after resolving symbolic links (WASI refuses links
    leaving the preopened directory); a file that does not exist yet (a save) is resolved
    through its directory."""
    p = os.fsdecode(path)
    real = os.path.realpath(p)
    if for_write and not os.path.exists(real):
        real = os.path.join(os.path.realpath(os.path.dirname(os.path.abspath(p)) or "."), os.path.basename(p))
    host_dir, name = os.path.split(real)
    if not name:
        name = "."
    return host_dir or "/", os.fsencode(f"{GUEST_DIR}/{name}")
