"""Named test sessions (`nox` alone runs `tests`): `nox -s tests|slow|dist|wasm|parity|parity_d12|
parity_bf16_d12|mutation|asan|memcheck|fuzz|bench|bench_gate|lint|typecheck`.

The sessions run in the *current* environment (python=False, no per-session virtualenv):
torch is large and CI (.ci/run) installs it once into a fresh venv together with pyllmc, then
calls `python -m nox` from that venv. So pyllmc must already be installed where nox runs
(`pip install ".[torch,test,plot]"`). Extra arguments after `--` go to pytest.
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
    """The default suite: everything under parity_tests/ that is not marked slow (the
    WebAssembly tests, test_wasm_*.py, run in the `wasm` session)."""
    _pytest(session, "--ignore-glob=*/test_wasm_*.py")


@nox.session(python=False)
def wasm(session: nox.Session) -> None:
    """WebAssembly host and guest SDKs (parity_tests/test_wasm_*.py): hostile WAT guests for
    every error path, the host-function fuzz test, cleanup and isolation, the SDK examples.
    Needs the `wasm` extra (wasmtime) and, for the SDK tests, the wasm32-wasi toolchains that
    .ci/run installs. PYLLMC_REQUIRE_WASM=1 (set here) turns a missing wasmtime or toolchain
    into a failure instead of a skip."""
    tests = sorted(str(p) for p in (ROOT / "parity_tests").glob("test_wasm_*.py"))
    session.run(PY, "-m", "pytest", "-q", *tests, *session.posargs, env={"PYLLMC_REQUIRE_WASM": "1"})


@nox.session(python=False)
def lint(session: nox.Session) -> None:
    """ruff over the tree (the rules: pyproject.toml [tool.ruff]); seconds. Arguments after
    -- go to `ruff check` (e.g. --fix)."""
    session.run(PY, "-m", "ruff", "check", str(ROOT), *session.posargs)


@nox.session(python=False)
def typecheck(session: nox.Session) -> None:
    """mypy over bindings/pyllmc and reference/, checked as the installed package is laid out
    (reference/ is pyllmc.reference; the settings: pyproject.toml [tool.mypy]); seconds."""
    session.run(PY, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), "-p", "pyllmc", *session.posargs,
                env={"MYPYPATH": _source_package(session)})


@nox.session(python=False)
def slow(session: nox.Session) -> None:
    """Only the tests marked slow."""
    _pytest(session, "-m", "slow")


@nox.session(python=False)
def dist(session: nox.Session) -> None:
    """Data-parallel tests (parity_tests/test_distributed.py, slow ones included: 2 ranks over
    gloo on 127.0.0.1, a few minutes), then the benchmark at d12 when `-- bench` is given
    (python -m pyllmc.bench.dist -> out/bench_dist/; ~5 GB, every core: run it alone)."""
    bench = "bench" in session.posargs
    _pytest_args = [a for a in session.posargs if a != "bench"]
    session.run(PY, "-m", "pytest", "-q", str(ROOT / "parity_tests" / "test_distributed.py"), "-m", "slow or not slow",
                *_pytest_args, success_codes=[0, 5])
    if bench:
        session.run(PY, "-m", "pyllmc.bench.dist", "--out", str(ROOT / "out" / "bench_dist"))


@nox.session(python=False)
def parity(session: nox.Session) -> None:
    """The parity suites against the PyTorch reference (pytest -m "parity and not slow": each
    kernel under the `thorough` hypothesis profile (300 random examples per property), the
    lockstep engine, fault injection, the CLI, multi-step model parity), then one `pyllmc
    parity` run over several attention query blocks (T = 130, 2 heads, B = 2) on 2 threads,
    whose reports (parity.json, report.txt, heatmaps) land in out/parity/. A few minutes on
    2 cores."""
    session.run(PY, "-m", "pytest", "-q", str(ROOT / "parity_tests"), "-m", "parity and not slow",
                "--hypothesis-profile=thorough", *session.posargs, success_codes=[0, 5])
    session.run(PY, "-m", "pyllmc", "parity", "--model", "d2", "--vocab-size", "512", "--max-seq-len", "160",
                "--steps", "3", "--batch", "2", "--seq", "130", "--threads", "2", "--randomize", "--quiet",
                "--out", str(ROOT / "out" / "parity"))


@nox.session(python=False)
def parity_d12(session: nox.Session) -> None:
    """The GPT-2 124M shape in lockstep with PyTorch (the acceptance run of the parity
    harness): `pyllmc parity --model d12 --steps 3 --batch 1 --seq 256`, four attention query
    blocks, every tensor of every layer judged against fp64 from the C core's own state at
    every step, reports in out/parity_d12/. Measured: 1 min 46 s wall on 2 cores (with the
    heavy-job lock held) and 11.2 GiB peak resident memory (the C model, the fp32 and fp64
    references, each with gradients and AdamW state). The committed results are
    benchmarks/results/parity_d12/. Arguments after -- are added to
    the command (e.g. --threads 8)."""
    session.run(PY, "-m", "pyllmc", "parity", "--model", "d12", "--steps", "3", "--batch", "1", "--seq", "256",
                "--out", str(ROOT / "out" / "parity_d12"), *session.posargs)


@nox.session(python=False)
def parity_bf16_d12(session: nox.Session) -> None:
    """parity_d12 in bf16 precision: the C core in bf16 against PyTorch under CPU autocast bf16,
    attributed against fp64 (docs/bf16.md); reports in out/parity_bf16_d12/. About 8 to 10
    minutes on 2 cores and 16 GB (run it under the heavy-job lock on a shared machine)."""
    session.run(PY, "-m", "pyllmc", "parity", "--model", "d12", "--steps", "3", "--batch", "4", "--seq", "64",
                "--precision", "bf16", "--out", str(ROOT / "out" / "parity_bf16_d12"), *session.posargs)


@nox.session(python=False)
def mutation(session: nox.Session) -> None:
    """Mutation testing of core_c (pyllmc.mutation): every mutant of the catalogue
    (bindings/pyllmc/mutation/catalogue.py) built on its own out of tree, the lockstep parity
    harness run on it at T = 130 with 2 heads on 1 and 2 threads, and the unmutated build on
    every parity config several times; results.json and report.md into out/mutation/ (the
    committed campaign: benchmarks/results/mutation/). Exit 1 unless every bug is caught,
    >= 95% localised and nothing clean or equivalent fails. About 15 minutes on 2 cores,
    under the shared heavy-job lock when flock exists. `nox -s mutation -- --subset ci` runs
    the small fixed subset that .ci/run runs (about 2 minutes)."""
    cmd = [PY, "-m", "pyllmc.mutation", "--src", str(ROOT), "--out", str(ROOT / "out" / "mutation"),
           *session.posargs]
    if shutil.which("flock"):
        cmd = ["flock", "/tmp/pyllmc-heavy.lock", *cmd]
    session.run(*cmd, external=True)


# Known, reported sanitizer findings awaiting a fix (see the file); shared by asan and fuzz.
_UBSAN_SUPP = ROOT / "core_c" / "fuzz" / "ubsan.supp"


def _checkpoint_fuzz_inputs() -> list:
    """The checkpoint fuzz corpus and the saved regressions (directories that exist)."""
    fuzz = ROOT / "core_c" / "fuzz"
    return [str(d) for d in (fuzz / "corpus" / "checkpoint", fuzz / "regressions") if d.is_dir()]


def _source_package(session: nox.Session) -> str:
    """A directory holding `pyllmc` as the wheel lays it out (pyproject's wheel.packages:
    bindings/pyllmc, with reference/ as pyllmc.reference), made of symlinks to the sources, so
    a session can import the checkout's code, reference included, without installing it."""
    root = Path(session.create_tmp()) / "srcpkg"
    pkg = root / "pyllmc"
    if root.exists():
        shutil.rmtree(root)
    pkg.mkdir(parents=True)
    for entry in (ROOT / "bindings" / "pyllmc").iterdir():
        if entry.name != "__pycache__":
            (pkg / entry.name).symlink_to(entry)
    (pkg / "reference").symlink_to(ROOT / "reference")
    return str(root)


def _libasan(cc: str) -> str:
    out = subprocess.run([cc, "-print-file-name=libasan.so"], capture_output=True, text=True, check=True)
    path = out.stdout.strip()
    if not os.path.isabs(path) or not os.path.exists(path):
        raise RuntimeError(f"{cc} does not know where libasan.so is (got {path!r})")
    return os.path.realpath(path)


@nox.session(python=False)
def asan(session: nox.Session) -> None:
    """Build core_c with AddressSanitizer + UBSan into build-asan/: run the C unit tests
    (core_c/tests via ctest) and replay the checkpoint fuzz corpus through the loader, then
    drive the library from Python (.ci/asan_smoke.py; parity_tests/test_binding.py,
    test_hostile_input.py, test_fuzz_regressions.py, test_concurrency.py). About a minute.

    Python itself is not instrumented, so libasan is LD_PRELOADed and leak detection is off
    (the interpreter's own allocations would be reported). UBSan findings stop the run.
    """
    build = ROOT / "build-asan"
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    session.run(
        "cmake", "-S", str(ROOT / "core_c"), "-B", str(build), *generator,
        "-DLLMC_SANITIZE=ON", "-DCMAKE_BUILD_TYPE=RelWithDebInfo",
        "-DLLMC_BUILD_TESTS=ON", "-DLLMC_BUILD_FUZZ=ON",
        external=True,
    )  # fmt: skip
    session.run("cmake", "--build", str(build), "-j", external=True)
    libs = sorted(build.glob("libllmc.*"))
    if not libs:
        session.error(f"no libllmc in {build}")
    # Pure-C programs first: the C unit tests (core_c/tests, via ctest) and the checkpoint
    # fuzz corpus and saved regressions replayed through the loader. No interpreter here, so
    # leak detection is on.
    c_env = {
        "ASAN_OPTIONS": "detect_leaks=1:allocator_may_return_null=1:exitcode=23",
        "UBSAN_OPTIONS": f"print_stacktrace=1:halt_on_error=1:exitcode=24:suppressions={_UBSAN_SUPP}",
    }
    session.run("ctest", "--test-dir", str(build), "--output-on-failure", env=c_env, external=True)
    fuzz_inputs = _checkpoint_fuzz_inputs()
    session.run(str(build / "fuzz_checkpoint_replay"), "-runs=0", *fuzz_inputs, env=c_env, external=True)
    session.run(str(build / "llmc_step_driver"), "2", session.create_tmp(), env=c_env, external=True)
    env = {
        "PYLLMC_LIBRARY": str(libs[0]),
        "LD_PRELOAD": _libasan(os.environ.get("CC", "gcc")),
        # allocator_may_return_null: a failed allocation returns NULL as malloc's does, so the
        # core's out-of-memory paths run (and are checked) instead of ASan aborting
        "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0:exitcode=23:allocator_may_return_null=1",
        "UBSAN_OPTIONS": f"print_stacktrace=1:halt_on_error=1:exitcode=24:suppressions={_UBSAN_SUPP}",
        # the sources (no install needed), laid out as the wheel is: pyllmc with the reference
        # as pyllmc.reference; the header comes from core_c/include
        "PYTHONPATH": os.pathsep.join(filter(None, [_source_package(session), os.environ.get("PYTHONPATH")])),
    }
    session.run(PY, str(ROOT / ".ci" / "asan_smoke.py"), env=env)
    # the binding, then hostile input of every reader, the fuzz regressions and two models in
    # two threads, all through the instrumented library (test_resource_limits is left out:
    # ASan's shadow memory does not fit under its address-space cap)
    tests = [str(ROOT / "parity_tests" / f) for f in ("test_binding.py", "test_hostile_input.py",
                                                         "test_fuzz_regressions.py", "test_concurrency.py")]
    session.run(PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests, *session.posargs, env=env)


@nox.session(python=False)
def memcheck(session: nox.Session) -> None:
    """valgrind memcheck over the C core (no sanitizers, no Python): core_c/fuzz/step_driver.c
    (create, three training steps on 2 threads, the tensor table, save/load, error paths), then
    the checkpoint fuzz corpus and saved regressions through the loader. Any memcheck error
    or definite/indirect leak fails the session (--error-exitcode). About a minute."""
    if not shutil.which("valgrind"):
        session.error("valgrind is not installed")
    build = ROOT / "build-memcheck"
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    session.run(
        "cmake", "-S", str(ROOT / "core_c"), "-B", str(build), *generator,
        "-DLLMC_CUDA=OFF", "-DLLMC_KERNEL_SHIM=OFF", "-DLLMC_BUILD_FUZZ=ON",
        "-DCMAKE_BUILD_TYPE=RelWithDebInfo",
        external=True,
    )  # fmt: skip
    session.run("cmake", "--build", str(build), "-j", "--target", "llmc_step_driver", "fuzz_checkpoint_replay", external=True)
    vg = ["valgrind", "--tool=memcheck", "--error-exitcode=99", "--leak-check=full",
          "--errors-for-leak-kinds=definite,indirect", "--show-leak-kinds=definite,indirect",
          "--track-origins=yes", "--quiet"]  # fmt: skip
    tmp = session.create_tmp()
    session.run(*vg, str(build / "llmc_step_driver"), "2", tmp, external=True)
    fuzz_inputs = _checkpoint_fuzz_inputs()
    session.run(*vg, str(build / "fuzz_checkpoint_replay"), "-runs=0", *fuzz_inputs, external=True)


@nox.session(python=False)
def fuzz(session: nox.Session) -> None:
    """A bounded fuzz campaign (fuzz/run_campaign.py; a few minutes): the C checkpoint loader
    under ASan + UBSan (libFuzzer when clang is installed, else a mutation driver) and every
    Python file reader (atheris when installed, else a built-in mutator), from the checked-in
    seed corpora, after replaying the saved regression inputs. Prints executions and crashes;
    fails on any crash. Arguments after -- go to the script, e.g.
    `nox -s fuzz -- --c-seconds 600 --py-seconds 60`."""
    session.run(PY, str(ROOT / "fuzz" / "run_campaign.py"), *session.posargs)


def _cublas_include_dir() -> str:
    """The include directory of the nvidia-cublas wheel, if installed (for the compile-time
    check of core_c/cuda/cublas_loader.h against the real cublas_v2.h)."""
    import sys as _sys

    for entry in _sys.path:
        for sub in ("nvidia/cu13/include", "nvidia/cublas/include"):
            p = Path(entry or ".") / sub / "cublas_v2.h"
            if p.is_file():
                return str(p.parent)
    return ""


@nox.session(python=False)
def cuda_build(session: nox.Session) -> None:
    """Both builds of core_c, each driven from Python (no GPU needed):

    - with the CUDA backend (-DLLMC_CUDA=ON, needs nvcc) into build-cuda/: the library must
      load here, link no CUDA library dynamically, export nothing but llmc_*, and report
      `built with CUDA`; cublas_loader.h is checked against cublas_v2.h when the nvidia-cublas
      wheel is installed;
    - CPU only (-DLLMC_CUDA=OFF) into build-cpuonly/: the install that machines without nvcc
      get; device="cuda" must be a clean UnsupportedError there.
    Then the binding and CUDA API tests run against each library (PYLLMC_LIBRARY).
    """
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    tests = [str(ROOT / "parity_tests" / "test_binding.py"), str(ROOT / "parity_tests" / "test_cuda_backend.py")]
    builds = [("build-cpuonly", "OFF", "0")]
    if shutil.which("nvcc"):
        builds.insert(0, ("build-cuda", "ON", "1"))
    else:
        session.warn("no nvcc on PATH: only the CPU-only build is checked")
    for name, flag, expect in builds:
        build = ROOT / name
        extra = []
        inc = _cublas_include_dir() if flag == "ON" else ""
        if inc:
            extra.append(f"-DLLMC_CUBLAS_INCLUDE_DIR={inc}")
        session.run(
            "cmake", "-S", str(ROOT / "core_c"), "-B", str(build), *generator,
            f"-DLLMC_CUDA={flag}", "-DCMAKE_BUILD_TYPE=Release", *extra,
            external=True,
        )  # fmt: skip
        session.run("cmake", "--build", str(build), "-j", external=True)
        libs = sorted(build.glob("libllmc.*"))
        if not libs:
            session.error(f"no libllmc in {build}")
        env = {
            "PYLLMC_LIBRARY": str(libs[0]),
            "PYLLMC_EXPECT_CUDA_BUILD": expect,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "bindings"), os.environ.get("PYTHONPATH")])),
        }
        session.run(PY, "-m", "pyllmc", "info", env=env)
        session.run(PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests, *session.posargs, env=env)


@nox.session(python=False)
def gpu(session: nox.Session) -> None:
    """The GPU tests (pytest -m gpu): CUDA parity against PyTorch on the GPU (fp32, bf16,
    trajectory) and the device API. They skip, with the reason, without a usable GPU, a
    CUDA build of pyllmc or a CUDA build of torch. The benchmark is separate:
    `python benchmarks/gpu_bench.py` (see its docstring)."""
    session.run(PY, "-m", "pyllmc", "info")
    _pytest(session, "-m", "gpu", "-ra")


@nox.session(python=False)
def demo(session: nox.Session) -> None:
    """The README's main command: `pyllmc demo` (offline; about 3 minutes on 2 cores).
    Arguments after `--` go to the demo, e.g. `nox -s demo -- --quick`."""
    session.run(PY, "-m", "pyllmc", "demo", *session.posargs)


@nox.session(python=False)
def bench(session: nox.Session) -> None:
    """The benchmark suite into out/bench/ (bench.json, report.md, plots): by default the full
    suite (tiny..d12 at B4 T64 on 1 and all threads, d12 at T=256 and 1024, kernels, scaling;
    about an hour on 2 cores). Arguments after -- replace `--suite full`, e.g.
    `nox -s bench -- --suite d12 --out out/bench_d12` (the notes' d12 results, ~5 min) or
    `nox -s bench -- --model d6 --batch 4 --seq 64 --threads 1,2`. See benchmarks/README.md."""
    args = session.posargs or ["--suite", "full"]
    session.run(PY, "-m", "pyllmc", "bench", "--src", str(ROOT), "--out", str(ROOT / "out" / "bench"), *args)


@nox.session(python=False)
def bench_gate(session: nox.Session) -> None:
    """The performance gate (about a minute on a quiet 2-core machine): callgrind instructions
    of a fixed small step against the recorded baseline (+3% fails), and the C core / PyTorch
    step-time ratio, measured interleaved in one run, against benchmarks/gate/gate.json's
    max_ratio. Exit 1 = regression, 2 = could not judge. Needs valgrind and a C compiler.
    Arguments after -- go to `python -m pyllmc.bench.gate`: --update-baseline (after a
    deliberate change; commit gate.json), --slow gelu|matmul (a deliberately slowed core,
    must fail), --skip-ratio, ... See benchmarks/README.md."""
    session.run(PY, "-m", "pyllmc.bench.gate", "--src", str(ROOT), "--out", str(ROOT / "out" / "bench_gate"), *session.posargs)
