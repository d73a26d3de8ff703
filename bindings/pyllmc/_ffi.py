"""cffi binding (ABI mode) to the C core.

The declarations are not repeated here: they are read from the one public header,
``llmc.h``, between the ``/* LLMC_CDEF_BEGIN */`` and ``/* LLMC_CDEF_END */`` markers.
The installed package carries the header as ``pyllmc/include/llmc.h`` next to the shared
library; when running from a source checkout the repository's ``core_c/include/llmc.h``
is used instead.

Library search order:
  1. ``$PYLLMC_LIBRARY`` (a path to the shared library, e.g. a sanitizer build);
  2. the package directory (where ``pip install`` puts it);
  3. in a source checkout, ``build/`` at the repository root (``cmake -S core_c -B build``).

After loading, the library's ABI version and the size of every public struct are checked
against the header, so a stale library fails at import with a clear ImportError instead of
corrupting memory later.

Note on threads: cffi releases the GIL around every call into the C library (ABI mode
included), so long forward/backward calls do not block other Python threads.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import List

from cffi import FFI

CDEF_BEGIN = "/* LLMC_CDEF_BEGIN */"
CDEF_END = "/* LLMC_CDEF_END */"
#: public structs whose sizes must agree between the header and the library
STRUCTS = ("llmc_config", "llmc_options", "llmc_tensor_info", "llmc_adamw_params")

_PKG_DIR = Path(__file__).resolve().parent
_REPO_ROOT = _PKG_DIR.parent.parent  # bindings/pyllmc -> repository root (source checkout)


def _package_dirs() -> List[Path]:
    """Directories that make up the package (more than one for some editable installs)."""
    dirs = [_PKG_DIR]
    pkg = sys.modules.get(__package__ or "pyllmc")
    for entry in getattr(pkg, "__path__", None) or []:
        p = Path(entry).resolve()
        if p not in dirs:
            dirs.append(p)
    return dirs


def find_header() -> Path:
    candidates = [d / "include" / "llmc.h" for d in _package_dirs()]
    candidates.append(_REPO_ROOT / "core_c" / "include" / "llmc.h")
    for c in candidates:
        if c.is_file():
            return c
    raise ImportError(
        "pyllmc: cannot find the C header llmc.h (looked in: "
        + ", ".join(str(c) for c in candidates)
        + "); reinstall pyllmc"
    )


def _library_names() -> List[str]:
    if sys.platform == "darwin":
        return ["libllmc.dylib", "libllmc.so"]
    if sys.platform == "win32":
        return ["llmc.dll", "libllmc.dll"]
    return ["libllmc.so"]


def find_library() -> Path:
    override = os.environ.get("PYLLMC_LIBRARY")
    if override:
        p = Path(override)
        if not p.is_file():
            raise ImportError(f"pyllmc: PYLLMC_LIBRARY={override} is not a file")
        return p
    dirs = _package_dirs() + [_REPO_ROOT / "build"]
    for d in dirs:
        for name in _library_names():
            if (d / name).is_file():
                return d / name
    raise ImportError(
        "pyllmc: cannot find the C library ("
        + "/".join(_library_names())
        + ") in "
        + ", ".join(str(d) for d in dirs)
        + "; install with `pip install .` or build with `cmake -S core_c -B build && "
        "cmake --build build`, or set PYLLMC_LIBRARY"
    )


def extract_cdef(header_text: str) -> str:
    """The declarations between the markers, with LLMC_API removed."""
    try:
        start = header_text.index(CDEF_BEGIN) + len(CDEF_BEGIN)
        end = header_text.index(CDEF_END, start)
    except ValueError:
        raise ImportError("pyllmc: llmc.h lacks the LLMC_CDEF_BEGIN/END markers") from None
    return re.sub(r"\bLLMC_API\b", "", header_text[start:end])


def parse_abi_version(header_text: str) -> int:
    m = re.search(r"^\s*#\s*define\s+LLMC_ABI_VERSION\s+(\d+)", header_text, re.MULTILINE)
    if not m:
        raise ImportError("pyllmc: llmc.h does not define LLMC_ABI_VERSION")
    return int(m.group(1))


def function_names(cdef: str) -> List[str]:
    """Names of the functions declared in a cdef block (used by the tests)."""
    no_comments = re.sub(r"/\*.*?\*/|//[^\n]*", "", cdef, flags=re.DOTALL)
    return sorted(set(re.findall(r"\b(llmc_\w+)\s*\(", no_comments)))


def verify_library(ffi_: FFI, lib_, abi_version: int, library_path: str) -> None:
    """Raise ImportError when the loaded library does not match the header."""
    stale = (
        f"pyllmc: the C library {library_path} does not match the header it was loaded with "
        "(stale build?); rebuild/reinstall pyllmc"
    )
    try:
        got = int(lib_.llmc_abi_version())
        if got != abi_version:
            raise ImportError(f"{stale}: library ABI version {got}, header {abi_version}")
        for name in STRUCTS:
            lib_size = int(lib_.llmc_struct_size(name.encode()))
            py_size = ffi_.sizeof(name)
            if lib_size != py_size:
                raise ImportError(f"{stale}: sizeof({name}) is {lib_size} in the library, {py_size} in the header")
    except AttributeError as e:  # a function the header declares is missing from the library
        raise ImportError(f"{stale}: {e}") from None


HEADER_PATH: Path = find_header()
_HEADER_TEXT = HEADER_PATH.read_text(encoding="utf-8")
CDEF: str = extract_cdef(_HEADER_TEXT)
ABI_VERSION: int = parse_abi_version(_HEADER_TEXT)
FUNCTIONS: List[str] = function_names(CDEF)

ffi = FFI()
ffi.cdef(CDEF)

class NativeUnavailable:
    """Stands in for ``lib`` when the native library cannot be loaded but the wasm core can
    run: every function raises UnsupportedError with the load failure, so only models with
    ``device="wasm"`` work."""

    def __init__(self, reason: str):
        self.reason = reason

    def __getattr__(self, name: str):
        from .errors import UnsupportedError

        raise UnsupportedError(f"{self.reason}; the wasm core is available: use device='wasm'")


def _load() -> "tuple":
    path = find_library()
    try:
        lib_ = ffi.dlopen(str(path))
    except OSError as e:
        raise ImportError(f"pyllmc: cannot load the C library {path}: {e}") from None
    verify_library(ffi, lib_, ABI_VERSION, str(path))
    return path, lib_


#: why the native library did not load, when pyllmc runs on the wasm core only (else None)
LOAD_ERROR = None
try:
    LIBRARY_PATH, lib = _load()
except ImportError as _e:
    # Without a usable native library pyllmc still imports when the wasm core can run
    # (device="wasm"), and says so once; with neither, the ImportError stands.
    from .wasm_core import unavailable_reason as _wasm_unavailable

    if _wasm_unavailable() is not None:
        raise
    import warnings

    LOAD_ERROR = str(_e)
    LIBRARY_PATH, lib = None, NativeUnavailable(LOAD_ERROR)
    warnings.warn(f"{LOAD_ERROR}; the wasm core is available: use device='wasm'", RuntimeWarning, stacklevel=2)


def string(ptr) -> str:
    """A C string from the library as str ("" for NULL)."""
    if ptr == ffi.NULL:
        return ""
    return ffi.string(ptr).decode("utf-8", errors="replace")


def status_name(status: int) -> str:
    return string(lib.llmc_status_name(int(status)))
