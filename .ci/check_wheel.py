"""Build the wheel (pip wheel, isolated, no dependencies) and check what it ships: the C
library and its header, py.typed, the LICENSE, the package and pyllmc.reference, the wasm
core libllmc.wasm when this machine can build it (a clang for wasm32-wasi and wasi-libc, or
PYLLMC_REQUIRE_WASM=1); and no test-only artefact (the kernel test shim, the benchmark
drivers, C sources, tests).

    python .ci/check_wheel.py [--wheel-dir DIR]      # exit 0 ok, 1 with the offending names
"""
from __future__ import annotations

import argparse
import fnmatch
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = ["pyllmc/__init__.py", "pyllmc/py.typed", "pyllmc/include/llmc.h", "pyllmc/shapes.py",
            "pyllmc/reference/__init__.py", "pyllmc-*.dist-info/licenses/LICENSE", "pyllmc-*.dist-info/METADATA"]
REQUIRED_ANY = [("pyllmc/libllmc.so", "pyllmc/libllmc.dylib", "pyllmc/llmc.dll")]
FORBIDDEN = ["*_kernel_shim*", "*kernel_shim*", "*bench_step*", "*bench_kernels*", "*slow_wrap*", "*.c", "*.o",
             "*test_*.py", "parity_tests/*", "core_c/*", "*/__pycache__/*"]
WASM_CORE = "pyllmc/libllmc.wasm"
METADATA = ["License-Expression: MIT", "Classifier: Typing :: Typed", "Provides-Extra: progress", "Provides-Extra: bpe"]


def wasm_toolchain() -> bool:
    """Whether the build can make the wasm core (what core_c/cmake/wasm_core.cmake looks for:
    a clang and the WASI sysroot at /usr; CMake's probe decides, this mirrors it)."""
    if os.environ.get("PYLLMC_REQUIRE_WASM") == "1":
        return True
    clang = any(shutil.which(c) for c in ("clang-16", "clang-15", "clang", "clang-14"))
    runtime = any(Path("/usr/lib").glob("llvm-*/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a"))
    return bool(clang and runtime and Path("/usr/lib/wasm32-wasi/libc.a").is_file())


def check(names: list, metadata: str, wasm: bool = False) -> list:
    required = REQUIRED + ([WASM_CORE] if wasm else [])
    problems = [f"missing {pat}" for pat in required if not fnmatch.filter(names, pat)]
    problems += [f"missing one of {alts}" for alts in REQUIRED_ANY if not any(a in names for a in alts)]
    problems += [f"ships {n} (matches {pat})" for pat in FORBIDDEN for n in fnmatch.filter(names, pat)]
    problems += [f"METADATA lacks {line!r}" for line in METADATA if line not in metadata]
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wheel-dir", default=None, help="where to build it (default: a temporary directory)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pyllmc-wheel-") as tmp:
        out = Path(a.wheel_dir or tmp)
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(ROOT)], check=True)
        wheels = sorted(out.glob("pyllmc-*.whl"))
        if not wheels:
            print(f"check_wheel: no pyllmc wheel in {out}", file=sys.stderr)
            return 1
        with zipfile.ZipFile(wheels[-1]) as z:
            names = z.namelist()
            meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    problems = check(names, meta, wasm=wasm_toolchain())
    for p in problems:
        print(f"check_wheel: {wheels[-1].name}: {p}", file=sys.stderr)
    if not problems:
        print(f"check_wheel: {wheels[-1].name}: {len(names)} files, contents as expected")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
