"""Named test sessions: `nox -s tests|slow|parity|asan` (`nox` alone runs `tests`).

The sessions run in the *current* environment (python=False, no per-session virtualenv):
torch is large and CI (.ci/run) installs it once into a fresh venv together with pyllmc, then
calls `python -m nox` from that venv. So pyllmc must already be installed where nox runs
(`pip install ".[torch,test]"`). Extra arguments after `--` go to pytest.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nox

nox.options.sessions = ["tests"]

ROOT = Path(__file__).resolve().parent
PY = sys.executable  # the interpreter running nox, i.e. the environment pyllmc is in


def _pytest(session: nox.Session, *args: str) -> None:
    # exit code 5 = no tests collected (e.g. no slow tests yet): not a failure
    session.run(PY, "-m", "pytest", "-q", *args, *session.posargs, success_codes=[0, 5])


@nox.session(python=False)
def tests(session: nox.Session) -> None:
    """The default suite: everything under parity_tests/ that is not marked slow."""
    _pytest(session)


@nox.session(python=False)
def slow(session: nox.Session) -> None:
    """Only the tests marked slow."""
    _pytest(session, "-m", "slow")


@nox.session(python=False)
def parity(session: nox.Session) -> None:
    """The parity suites against the PyTorch reference (not slow)."""
    _pytest(session, "parity_tests", "-m", "not slow")


def _libasan(cc: str) -> str:
    out = subprocess.run([cc, "-print-file-name=libasan.so"], capture_output=True, text=True, check=True)
    path = out.stdout.strip()
    if not os.path.isabs(path) or not os.path.exists(path):
        raise RuntimeError(f"{cc} does not know where libasan.so is (got {path!r})")
    return os.path.realpath(path)


@nox.session(python=False)
def asan(session: nox.Session) -> None:
    """Build core_c with AddressSanitizer + UBSan into build-asan/ and drive it from Python.

    Python itself is not instrumented, so libasan is LD_PRELOADed and leak detection is off
    (the interpreter's own allocations would be reported). UBSan findings stop the run.
    """
    build = ROOT / "build-asan"
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    session.run(
        "cmake", "-S", str(ROOT / "core_c"), "-B", str(build), *generator,
        "-DLLMC_SANITIZE=ON", "-DCMAKE_BUILD_TYPE=RelWithDebInfo",
        external=True,
    )  # fmt: skip
    session.run("cmake", "--build", str(build), "-j", external=True)
    libs = sorted(build.glob("libllmc.*"))
    if not libs:
        session.error(f"no libllmc in {build}")
    env = {
        "PYLLMC_LIBRARY": str(libs[0]),
        "LD_PRELOAD": _libasan(os.environ.get("CC", "gcc")),
        "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0:exitcode=23",
        "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1:exitcode=24",
        # the sources under bindings/ (no install needed); the header comes from core_c/include
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "bindings"), os.environ.get("PYTHONPATH")])),
    }
    session.run(PY, str(ROOT / ".ci" / "asan_smoke.py"), env=env)
    session.run(PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "parity_tests" / "test_binding.py"), *session.posargs, env=env)
