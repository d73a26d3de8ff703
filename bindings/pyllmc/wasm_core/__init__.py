"""pyllmc.wasm_core: the C core itself compiled to WebAssembly, a backend of ``pyllmc.Model``.

``Model.from_config(..., device="wasm")`` (and ``from_checkpoint``, ``load_model``, the
command line's ``--device wasm``) runs the same C sources, built as ``libllmc.wasm`` (a WASI
reactor module; core_c/cmake/wasm_module.cmake), inside wasmtime instead of the native
library. Not to be confused with ``pyllmc.wasm``, which HOSTS wasm guest programs that call
pyllmc; here the guest is the core itself and the Model is its only caller.

- ``runtime``: the compiled module (once per process), one sandboxed instance per model,
  the WASI preopen of exactly the directory a file call needs, traps as typed errors;
- ``lib``: ``WasmLib``, an object with the call surface of the cffi ``lib`` the Model uses
  (the same ``llmc_*`` names and cffi arguments), marshalling through linear memory.

Needs the ``wasm`` extra (wasmtime) and a ``libllmc.wasm`` (shipped in the wheel when the
build found a clang for wasm32-wasi; ``$PYLLMC_WASM_CORE`` points at another).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

#: the file name of the module, next to the native library
MODULE_NAME = "libllmc.wasm"
#: a wasm32 module addresses at most 4 GiB of linear memory
MEMORY_LIMIT = 1 << 32


def _search_dirs() -> List[Path]:
    from .._ffi import _REPO_ROOT, _package_dirs

    return _package_dirs() + [_REPO_ROOT / "build"]


def find_module() -> Optional[Path]:
    """The path of libllmc.wasm: ``$PYLLMC_WASM_CORE``, the package directory, or ``build/``
    of a source checkout; None when there is none."""
    override = os.environ.get("PYLLMC_WASM_CORE")
    if override:
        p = Path(override)
        return p if p.is_file() else None
    for d in _search_dirs():
        if (d / MODULE_NAME).is_file():
            return d / MODULE_NAME
    return None


def unavailable_reason() -> Optional[str]:
    """None when ``device="wasm"`` can work here, else why not (one line)."""
    override = os.environ.get("PYLLMC_WASM_CORE")
    path = find_module()
    if path is None:
        if override:
            return f"PYLLMC_WASM_CORE={override} is not a file"
        return (f"no {MODULE_NAME} in " + ", ".join(str(d) for d in _search_dirs())
                + " (the build found no clang for wasm32-wasi; see docs/wasm_core.md)")
    try:
        import wasmtime  # noqa: F401
    except ImportError:
        return "the wasm core needs wasmtime: pip install 'pyllmc[wasm]'"
    return None


def available() -> bool:
    """True when ``device="wasm"`` models can be created: libllmc.wasm and wasmtime exist."""
    return unavailable_reason() is None
