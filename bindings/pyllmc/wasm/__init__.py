"""pyllmc.wasm: host WebAssembly (wasm32-wasi) guests that train GPT-2 through pyllmc.

The import table is ``pyllmc.wasm.abi`` (plain data, no wasmtime needed). The host itself
(``Host``, ``run``) needs the ``wasm`` extra (``pip install 'pyllmc[wasm]'``, i.e. wasmtime).

Modules:
- ``abi``: import module, functions and signatures, status codes, ``pyllmc_status`` layout,
  ``EXTENSIONS`` (functions added to version 1: ``job_error``).
- ``host``: ``Host`` (limits; ``run`` a guest to its end, ``instantiate`` one to drive its
  exports), ``run(path, dirs=..., args=..., ...) -> exit code``, the runner's exit codes.
- ``calls``: the host functions of one guest (``GuestContext``): argument rules, busy
  handles, model growth, what ``evaluate`` and ``sample`` compute.
- ``jobs``: ``train_step`` and ``train_start`` through the Trainer; the JSON config rules.
- ``memory``, ``handles``, ``paths``, ``budget``: bounds checks, the typed handle table,
  preopen-only path resolution, host-memory estimates.
- ``cli``: ``pyllmc wasm run``.
"""

from __future__ import annotations

from . import abi

_HOST_NAMES = ("Host", "GuestResult", "GuestInstance", "BadGuest", "run", "parse_size", "WasmUnavailableError")
__all__ = ["abi", *_HOST_NAMES]


def __getattr__(name: str):  # the host part imports wasmtime only when it is used
    if name in _HOST_NAMES:
        from . import host

        return getattr(host, name)
    raise AttributeError(name)
