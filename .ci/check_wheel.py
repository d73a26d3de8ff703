"""Build the wheel (pip wheel, isolated, no dependencies) and check what it ships: the C
library and its header, py.typed, the LICENSE, the package and pyllmc.reference; and no
test-only artefact (the kernel test shim, the benchmark drivers, C sources, tests).

    python .ci/check_wheel.py [--wheel-dir DIR]      # exit 0 ok, 1 with the offending names
"""
from __future__ import annotations

import argparse
import fnmatch
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
METADATA = ["License-Expression: MIT", "Classifier: Typing :: Typed", "Provides-Extra: progress", "Provides-Extra: bpe"]


def check(names: list, metadata: str) -> list:
    problems = [f"missing {pat}" for pat in REQUIRED if not fnmatch.filter(names, pat)]
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
    problems = check(names, meta)
    for p in problems:
        print(f"check_wheel: {wheels[-1].name}: {p}", file=sys.stderr)
    if not problems:
        print(f"check_wheel: {wheels[-1].name}: {len(names)} files, contents as expected")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
