"""``WasmLib``: the C API of one wasm-core instance, with the call surface of the cffi ``lib``.

``pyllmc.Model`` calls ``lib.llmc_model_forward(ptr, inputs, targets, B, T, loss)`` with cffi
objects of the host (``ffi.new("float *")``, ``ffi.from_buffer("int32_t[]", x)``, bytes for
paths). A ``WasmLib`` takes exactly those arguments and runs the function of the same name in
the module, so the Model's logic exists once for both cores:

- a host pointer argument (a scalar or struct to fill, an array to read) is copied into a
  temporary block of linear memory before the call and back afterwards; NULL stays 0; the
  same buffer given twice (in place) is one block;
- ``llmc_model *`` handles are guest addresses carried in a host pointer cdata (never
  dereferenced on the host); ``float **`` results (``llmc_model_buffer``) become the HOST
  address of the guest buffer, so the Model's numpy views look straight into linear memory;
- ``llmc_tensor_info`` is translated field by field (its name pointer is 4 bytes in wasm32);
  the other public structs hold no pointers and have the same layout (checked at start);
- returned ``const char *`` become host strings; messages naming the sandbox path
  (``/sandbox/x.bin``) name the host file instead;
- ``llmc_model_load``/``llmc_model_save`` run with the file's directory preopened, nothing
  else (``runtime``); copies to/from the host go in bounded chunks.
"""

from __future__ import annotations

import os
import stat
import struct
from typing import Any, Dict, List, Optional, Tuple

from .._ffi import STRUCTS, ffi
from ..errors import FileError, PyllmcError, UnsupportedError
from .runtime import Instance, sandbox_path

_STRING_RESULTS = {"llmc_status_name", "llmc_last_error", "llmc_model_last_error", "llmc_cuda_describe"}
_VOID_RESULTS = {"llmc_model_destroy"}
_CHUNK_FLOATS = 1 << 22  # 16 MiB of floats per temporary block in copy_to/from_host
_TENSOR_INFO = struct.Struct("<Iiii4qqq")  # wasm32 llmc_tensor_info: name, kind, ndim, pad, shape, offset, numel


class WasmLib:
    """The wasm core's ``llmc_*`` functions on one instance (see the module docstring)."""

    device_name = "wasm"
    #: further functions returning ``const char *`` (a module with more than the C API)
    string_results: Tuple[str, ...] = ()

    def __init__(self, instance: Optional[Instance] = None):
        self.instance = instance if instance is not None else Instance()
        self._names: Dict[int, Any] = {}  # guest char* -> host char[] (tensor names: owned by the model)
        self._path_map: Optional[Tuple[bytes, bytes]] = None
        self._model_t = ffi.typeof("llmc_model *")
        self._info_t = ffi.typeof("llmc_tensor_info")
        for name in STRUCTS:
            want = _TENSOR_INFO.size if name == "llmc_tensor_info" else ffi.sizeof(name)
            got = self._struct_size(name)
            if got != want:
                raise UnsupportedError(f"{self.instance.path}: sizeof({name}) is {got} in the wasm core, "
                                       f"{want} expected (stale or foreign build)")

    def _struct_size(self, name: str) -> int:
        p = self._bytes_in(name.encode())
        try:
            return int(self.instance.call("llmc_struct_size", p))
        finally:
            self.instance.free(p)

    # ---------------------------------------------------------------- marshalling
    def _bytes_in(self, data: bytes) -> int:
        p = self.instance.malloc(len(data) + 1)
        self.instance.write(p, data + b"\0")
        return p

    def _message(self, raw: bytes) -> bytes:
        if self._path_map and self._path_map[0] in raw:
            raw = raw.replace(self._path_map[0], self._path_map[1])
        return raw

    def _call(self, name: str, *args: Any) -> Any:
        inst = self.instance
        wargs: List[Any] = []
        temps: List[int] = []
        outs: List[Tuple[Any, int, str]] = []  # (host cdata, guest block, how to copy back)
        self._blocks: Dict[Tuple[int, int], int] = {}  # (host address, bytes) -> guest block of this call
        try:
            for a in args:
                if isinstance(a, (bytes, bytearray)):
                    p = self._bytes_in(bytes(a))
                    temps.append(p)
                    wargs.append(p)
                elif isinstance(a, ffi.CData):
                    wargs.append(self._pointer_arg(a, temps, outs))
                elif isinstance(a, bool):
                    wargs.append(int(a))
                elif isinstance(a, int):
                    wargs.append(a - (1 << 64) if a >= 1 << 63 else a)  # u64 seeds travel as i64
                else:
                    wargs.append(a)
            result = inst.call(name, *wargs)
            for host, guest, how in outs:
                self._copy_back(host, guest, how)
        finally:
            for p in temps:
                inst.free(p)
        if name in _VOID_RESULTS:
            return None
        if name in _STRING_RESULTS or name in self.string_results:
            return ffi.new("char[]", self._message(inst.cstring(result)))
        return result

    def _pointer_arg(self, a: Any, temps: List[int], outs: List[Tuple[Any, int, str]]) -> int:
        t = ffi.typeof(a)
        if a == ffi.NULL:
            return 0
        if t is self._model_t or (t.kind == "pointer" and t.item.cname == "llmc_model"):
            return int(ffi.cast("uintptr_t", a))  # a guest handle
        if t.kind == "array":
            nbytes, how = ffi.sizeof(a), "bytes"
        elif t.kind == "pointer" and t.item is self._info_t:
            nbytes, how = _TENSOR_INFO.size, "info"
        elif t.kind == "pointer" and t.item.kind == "pointer":
            nbytes, how = 4, ("handle" if t.item.item.cname == "llmc_model" else "address")
        elif t.kind == "pointer":
            nbytes, how = ffi.sizeof(t.item), "bytes"
        else:
            raise PyllmcError(f"wasm core: cannot pass a {t.cname} argument")
        # the same host buffer passed twice (an in-place kernel: out is inp) is one guest block,
        # so the call sees the aliasing it was given and one copy-back brings the result home
        key = (int(ffi.cast("uintptr_t", a)), nbytes)
        if how == "bytes" and key in self._blocks:
            return self._blocks[key]
        p = self.instance.malloc(nbytes)
        if how == "bytes":
            self._blocks[key] = p
        temps.append(p)
        if how == "bytes":
            self.instance.write(p, bytes(ffi.buffer(a, nbytes)))
        else:
            self.instance.write(p, bytes(nbytes))
        outs.append((a, p, how))
        return p

    def _copy_back(self, host: Any, guest: int, how: str) -> None:
        inst = self.instance
        if how == "bytes":
            n = ffi.sizeof(host) if ffi.typeof(host).kind == "array" else ffi.sizeof(ffi.typeof(host).item)
            ffi.buffer(host, n)[:] = inst.read(guest, n)
        elif how == "handle":
            (g,) = struct.unpack("<I", inst.read(guest, 4))
            host[0] = ffi.cast("llmc_model *", g)
        elif how == "address":
            (g,) = struct.unpack("<I", inst.read(guest, 4))
            host[0] = ffi.cast(ffi.typeof(host).item, inst.host_address(g) if g else 0)
        elif how == "info":
            name_p, kind, ndim, _pad, s0, s1, s2, s3, offset, numel = _TENSOR_INFO.unpack(inst.read(guest, _TENSOR_INFO.size))
            cname = self._names.get(name_p)
            if cname is None:
                cname = self._names[name_p] = ffi.new("char[]", inst.cstring(name_p, 256))
            host.name = cname
            host.kind, host.ndim = kind, ndim
            for d, v in enumerate((s0, s1, s2, s3)):
                host.shape[d] = v
            host.offset, host.numel = offset, numel

    # ---------------------------------------------------------------- file calls: sandboxed
    def _file_call(self, name: str, path: bytes, write: bool, *args: Any) -> Any:
        host_dir, guest = sandbox_path(path, write)
        self._path_map = (guest, bytes(path))
        if not os.path.isdir(host_dir):
            what = "cannot open for writing" if write else "cannot open"
            raise FileError(f"{os.fsdecode(path)}: {what}: the directory {host_dir} does not exist")
        if not write:
            # A FIFO would block the sandbox's open (WASI has no O_NONBLOCK open that the core's
            # loader could use): what is not a regular file is refused here, as the loader does.
            real = os.path.join(host_dir, os.fsdecode(guest).rsplit("/", 1)[-1])
            if os.path.exists(real) and not stat.S_ISREG(os.stat(real).st_mode):
                raise FileError(f"{os.fsdecode(path)}: not a regular file")
        if name == "llmc_model_load":
            return self.instance.with_dir(host_dir, lambda: self._call(name, guest, *args))
        return self.instance.with_dir(host_dir, lambda: self._call(name, args[0], guest))

    def llmc_model_load(self, path: bytes, options: Any, out: Any) -> int:
        return self._file_call("llmc_model_load", path, False, options, out)

    def llmc_model_save(self, model: Any, path: bytes) -> int:
        return self._file_call("llmc_model_save", path, True, model)

    # ---------------------------------------------------------------- copies in chunks
    def _copy(self, name: str, model: Any, kind: int, offset: int, count: int, host: Any) -> int:
        inst = self.instance
        done = 0
        while True:
            n = min(int(count) - done, _CHUNK_FLOATS)
            p = inst.malloc(4 * max(n, 1))
            try:
                view = ffi.buffer(host + done, 4 * n) if n > 0 else None
                if name == "llmc_model_copy_from_host" and view is not None:
                    inst.write(p, bytes(view))
                st = int(inst.call(name, int(ffi.cast("uintptr_t", model)), kind, int(offset) + done, n, p))
                if st == 0 and name == "llmc_model_copy_to_host" and view is not None:
                    view[:] = inst.read(p, 4 * n)
            finally:
                inst.free(p)
            done += max(n, 0)
            if st != 0 or done >= count:
                return st

    def llmc_model_copy_to_host(self, model: Any, kind: int, offset: int, count: int, dst: Any) -> int:
        return self._copy("llmc_model_copy_to_host", model, kind, offset, count, ffi.cast("float *", dst))

    def llmc_model_copy_from_host(self, model: Any, kind: int, offset: int, count: int, src: Any) -> int:
        return self._copy("llmc_model_copy_from_host", model, kind, offset, count, ffi.cast("float *", src))

    # ---------------------------------------------------------------- everything else
    def __getattr__(self, name: str) -> Any:
        if not name.startswith("llmc_"):
            raise AttributeError(name)
        self.instance.func(name)  # UnsupportedError when the module lacks it

        def call(*args: Any) -> Any:
            return self._call(name, *args)

        call.__name__ = name
        setattr(self, name, call)
        return call
