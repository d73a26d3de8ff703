"""pyllmc.wasm: host WebAssembly (wasm32-wasi) guests that train GPT-2 through pyllmc.

The import table is ``pyllmc.wasm.abi`` (plain data, no wasmtime needed). The host itself
(``Host``, ``run``) needs the ``wasm`` extra (``pip install 'pyllmc[wasm]'``, i.e. wasmtime).
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
