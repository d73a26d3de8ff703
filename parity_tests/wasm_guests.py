"""WAT guests for the host tests: no toolchain needed, wasmtime compiles the text.

``wrapper_module()`` imports every function of the ABI table and exports each as
``w_<name>`` with the same signature, plus a memory of ``pages`` 64 KiB pages and an empty
``_start``: a test then drives the host functions from Python with any arguments it likes
(hostile ones included) through ``Host.instantiate(...).call("w_model_create", ...)``.
"""

from __future__ import annotations

from pyllmc.wasm import abi


def imports() -> str:
    out = []
    for name, sig in abi.FUNCTIONS.items():
        params = " ".join(f"(param {t})" for _, t in sig.params)
        results = " ".join(f"(result {t})" for t in sig.results)
        out.append(f'  (import "{abi.IMPORT_MODULE}" "{name}" (func ${name} {params} {results}))')
    return "\n".join(out)


def wrappers() -> str:
    out = []
    for name, sig in abi.FUNCTIONS.items():
        params = " ".join(f"(param {t})" for _, t in sig.params)
        results = " ".join(f"(result {t})" for t in sig.results)
        gets = " ".join(f"local.get {i}" for i in range(len(sig.params)))
        out.append(f'  (func (export "w_{name}") {params} {results} {gets} call ${name})')
    return "\n".join(out)


#: an export calling job_status n times in a wasm loop (benchmarks and scheduling tests)
STATUS_LOOP = """
  (func (export "status_loop") (param $job i32) (param $out i32) (param $n i32)
    (block $done (loop $l
      (br_if $done (i32.eqz (local.get $n)))
      (drop (call $job_status (local.get $job) (local.get $out)))
      (local.set $n (i32.sub (local.get $n) (i32.const 1)))
      (br $l))))
"""


def wrapper_module(pages: int = 2, max_pages: int = None, extra: str = "", start: str = "") -> str:
    mem = f"(memory (export \"memory\") {pages}{'' if max_pages is None else ' ' + str(max_pages)})"
    return f"""(module
{imports()}
  {mem}
{wrappers()}
  (func (export "_start") {start})
{extra}
)"""


def require_wasmtime():
    """wasmtime, or skip the module (a failure under PYLLMC_REQUIRE_WASM=1, as in CI)."""
    import os

    import pytest

    if os.environ.get("PYLLMC_REQUIRE_WASM") == "1":
        import wasmtime  # noqa: F401  (an ImportError here fails the run)

        return wasmtime
    return pytest.importorskip("wasmtime", reason="the wasm extra (wasmtime) is not installed")


class Driver:
    """Calls a wrapper guest's ``w_<name>`` exports with buffers placed in its memory by a
    bump allocator (from byte 1024 up, so no buffer sits at the null address)."""

    def __init__(self, inst, start: int = 1024):
        import struct

        self.g = inst
        self._next = start
        self._struct = struct

    def alloc(self, n: int, align: int = 8) -> int:
        p = (self._next + align - 1) // align * align
        self._next = p + max(n, 1)
        if self._next > self.g.memory_size:
            raise MemoryError("test guest memory exhausted")
        return p

    def buf(self, data: bytes) -> tuple:
        p = self.alloc(len(data))
        self.g.write(p, data)
        return p, len(data)

    def out(self, n: int = 8, fill: bytes = b"\xAB") -> int:
        p = self.alloc(n)
        self.g.write(p, fill * n)
        return p

    def call(self, name: str, *args):
        return self.g.call("w_" + name, *args)

    def i32(self, p: int) -> int:
        return self._struct.unpack("<i", self.g.read(p, 4))[0]

    def i64(self, p: int) -> int:
        return self._struct.unpack("<q", self.g.read(p, 8))[0]

    def f32(self, p: int) -> float:
        return self._struct.unpack("<f", self.g.read(p, 4))[0]

    @property
    def error(self) -> str:
        return self.g.last_error

    # frequently used objects
    def model(self, cfg=(64, 257, 384, 2, 2, 64), seed: int = 1) -> int:
        c = self.buf(self._struct.pack("<6i", *cfg))[0]
        o = self.out(4)
        st = self.call("model_create", c, seed, o)
        assert st == 0, self.error
        return self.i32(o)

    def loader(self, pattern: str, batch: int = 2, seq: int = 16, shuffle: int = 0, seed: int = 0) -> int:
        p, n = self.buf(pattern.encode())
        o = self.out(4)
        st = self.call("dataloader_create", p, n, batch, seq, shuffle, seed, o)
        assert st == 0, self.error
        return self.i32(o)

    def tokenizer(self, spec: str = "byte") -> int:
        p, n = self.buf(spec.encode())
        o = self.out(4)
        st = self.call("tokenizer_load", p, n, o)
        assert st == 0, self.error
        return self.i32(o)

    def job(self, model: int, loader: int, config: str, val: int = 0) -> int:
        p, n = self.buf(config.encode())
        o = self.out(4)
        st = self.call("train_start", model, loader, val, p, n, o)
        assert st == 0, self.error
        return self.i32(o)


def make_shards(directory, n_tokens: int = 4096, vocab: int = 256, seed: int = 0, names=("train_000.bin",)):
    """Random token shards in ``directory`` (ids < vocab)."""
    import os

    import numpy as np

    from pyllmc.data import write_shard

    rng = np.random.default_rng(seed)
    paths = []
    for name in names:
        p = os.path.join(os.fspath(directory), name)
        write_shard(p, rng.integers(0, vocab, n_tokens))
        paths.append(p)
    return paths
