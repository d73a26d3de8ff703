"""Building and running the C benchmark drivers of core_c/bench/.

The drivers are CMake targets of core_c/CMakeLists.txt (option LLMC_BUILD_BENCH): they are
linked from the same object library as libllmc, so they compile the kernels with exactly the
flags of `pip install`. They need a source checkout: found from `--src`, `$PYLLMC_SRC`, the
current directory or its parents, or the checkout this package was imported from. The build
lives in `<src>/build-bench/` (a CMake Release build, CPU only; CMake rebuilds what changed),
under a file lock so that concurrent benchmark processes do not build over each other.

Without a source tree, CMake or a C compiler the parts that need a driver (kernel timings,
the C GEMM probe, the `c-driver` implementation, the callgrind gate) are skipped with the
reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Optional

from .spec import Shape

#: Deliberately slowed C cores for the gate's self-test (core_c/bench/slow_wrap.c, the CMake
#: targets bench_step_slow_<name> and llmc_slow_<name>): name -> what it does.
SLOW_VARIANTS = {
    "gelu": "the GELU forward kernel does its work 4 times",
    "matmul": "every Linear layer (forward and backward GEMMs) does its work 3 times",
}
#: what build() makes: the two drivers, and the shared library (for a slowed variant loaded
#: through PYLLMC_LIBRARY)
TARGETS = ("bench_step", "bench_kernels", "libllmc")
#: the build directory, relative to the source tree
BUILD_DIR = "build-bench"
#: the configuration of that build (CPU only: the drivers time the CPU backend)
CMAKE_OPTIONS = ("-DCMAKE_BUILD_TYPE=Release", "-DLLMC_BUILD_BENCH=ON", "-DLLMC_CUDA=OFF",
                 "-DLLMC_KERNEL_SHIM=OFF", "-DLLMC_NATIVE=OFF", "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON")


class DriverError(RuntimeError):
    """No source tree, no CMake or compiler, or a build or run that failed (the message says which)."""


def _is_src(root: Path) -> bool:
    return ((root / "core_c" / "include" / "llmc.h").is_file() and (root / "core_c" / "bench" / "bench_step.c").is_file()
            and (root / "core_c" / "CMakeLists.txt").is_file() and any((root / "core_c" / "src").glob("*.c")))


def find_source(explicit: Optional[str] = None) -> Path:
    cands: List[Path] = []
    if explicit:
        p = Path(explicit).resolve()
        if not _is_src(p):
            raise DriverError(f"{explicit}: not a pyllmc source tree (no core_c/src, core_c/bench, core_c/include/llmc.h)")
        return p
    if os.environ.get("PYLLMC_SRC"):
        cands.append(Path(os.environ["PYLLMC_SRC"]))
    cwd = Path.cwd().resolve()
    cands += [cwd, *cwd.parents]
    cands.append(Path(__file__).resolve().parents[3])  # bindings/pyllmc/bench -> repository root
    for c in cands:
        if _is_src(c):
            return c.resolve()
    raise DriverError("no pyllmc source tree found (pass --src DIR or set PYLLMC_SRC); the C drivers need core_c/")


def compiler() -> str:
    """The C compiler a fresh bench build uses (CMake's choice: $CC, else cc)."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise DriverError("no C compiler found (set CC)")
    return cc


def compiler_id(cc: Optional[str] = None) -> str:
    cc = cc or compiler()
    try:
        out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise DriverError(f"{cc}: cannot run: {e}") from None
    return out.splitlines()[0].strip() if out else cc


def _cmake() -> str:
    exe = shutil.which("cmake")
    if not exe:
        raise DriverError("cmake is not installed (the C drivers are CMake targets of core_c/CMakeLists.txt)")
    return exe


def sources_digest(src: Path) -> str:
    """sha256 (16 hex digits) of the C core's sources, its public header and the step driver:
    what the callgrind count of a step depends on besides the toolchain."""
    h = hashlib.sha256()
    core = src / "core_c"
    files = sorted((core / "src").glob("*.[ch]")) + [core / "include" / "llmc.h", core / "bench" / "bench_step.c"]
    for f in files:
        h.update(f.name.encode() + b"\0")
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _run(cmd: List[str]) -> None:
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        msg = (p.stderr + "\n" + p.stdout).strip().splitlines()
        err = list(dict.fromkeys(line for line in msg if "error" in line.lower())) or msg[-3:]
        raise DriverError(f"build failed: {' '.join(cmd[:3])} ...: " + " | ".join(err[:4]))


@contextlib.contextmanager
def _locked(build_dir: Path) -> Iterator[None]:
    build_dir.mkdir(parents=True, exist_ok=True)
    with open(build_dir / ".lock", "w") as f:
        if sys.platform != "win32":
            import fcntl

            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _configured(src: Path) -> Path:
    """The bench build directory, configured (call with the lock held)."""
    build_dir = src / BUILD_DIR
    if not (build_dir / "CMakeCache.txt").is_file() or not (build_dir / "compile_commands.json").is_file():
        generator = ["-G", "Ninja"] if shutil.which("ninja") else []
        _run([_cmake(), "-S", str(src / "core_c"), "-B", str(build_dir), *generator, *CMAKE_OPTIONS])
    return build_dir


def _cmake_target(target: str, slow: Optional[str]) -> str:
    if target not in TARGETS:
        raise ValueError(target)
    if slow is not None:
        if slow not in SLOW_VARIANTS:
            raise DriverError(f"unknown slow variant {slow!r} (one of {', '.join(SLOW_VARIANTS)})")
        if target == "bench_kernels":
            raise DriverError("bench_kernels has no slowed variant (only bench_step and libllmc)")
        if sys.platform == "darwin" or sys.platform == "win32":
            raise DriverError("the slowed variants need GNU ld's --wrap (Linux)")
    base = "llmc" if target == "libllmc" else target
    return f"{base}_slow_{slow}" if slow else base


def _output(build_dir: Path, cmake_target: str, shared: bool) -> Path:
    if not shared:
        return build_dir / (cmake_target + (".exe" if sys.platform == "win32" else ""))
    for name in (f"lib{cmake_target}.so", f"lib{cmake_target}.dylib", f"{cmake_target}.dll"):
        if (build_dir / name).is_file():
            return build_dir / name
    raise DriverError(f"built {cmake_target} but found no shared library for it in {build_dir}")


def build(target: str, src: Optional[Path] = None, slow: Optional[str] = None) -> Path:
    """Build `bench_step`, `bench_kernels` or `libllmc` (the shared library, for a slowed
    variant loaded through PYLLMC_LIBRARY), optionally a slowed variant; return its path."""
    cmake_target = _cmake_target(target, slow)
    src = src or find_source()
    with _locked(src / BUILD_DIR):
        build_dir = _configured(src)
        _run([_cmake(), "--build", str(build_dir), "--target", cmake_target, "-j", str(max(1, min(4, os.cpu_count() or 1)))])
        return _output(build_dir, cmake_target, target == "libllmc")


def build_flags(src: Path) -> Dict[str, str]:
    """How the C core's objects of the bench build were compiled, from CMake's
    compile_commands.json: {"compiler": its --version line, "cflags": the flags that change
    code (include paths, outputs and warning flags dropped)}. Builds the configuration first
    when needed."""
    with _locked(src / BUILD_DIR):
        build_dir = _configured(src)
    try:
        commands = json.loads((build_dir / "compile_commands.json").read_text())
    except (OSError, ValueError) as e:
        raise DriverError(f"{build_dir}/compile_commands.json: cannot read: {e}") from None
    core = sorted((c for c in commands if Path(c.get("file", "")).parent == src / "core_c" / "src"), key=lambda c: c["file"])
    if not core:
        raise DriverError(f"{build_dir}/compile_commands.json lists no core_c/src source")
    argv = core[0]["arguments"] if "arguments" in core[0] else shlex.split(core[0]["command"])
    flags: List[str] = []
    skip_next = False
    for a in argv[1:]:
        if skip_next:
            skip_next = False
        elif a in ("-o", "-c", "-I", "-MF", "-MT", "-MQ"):
            skip_next = True
        elif not a.startswith(("-I", "-W", "-MD", "-MMD")) and a != core[0]["file"]:
            flags.append(a)
    return {"compiler": compiler_id(argv[0]), "cflags": " ".join(flags)}


def step_args(shape: Shape, B: int, T: int, threads: int, warmup: int, steps: int,
              precision: str = "fp32") -> List[str]:
    s = shape
    args = [str(x) for x in (s.num_layers, s.channels, s.num_heads, s.vocab_size, s.padded_vocab_size,
                             max(T, min(s.max_seq_len, 1 << 30)), B, T, threads, warmup, steps)]
    return args + ([precision] if precision != "fp32" else [])


def _env(threads: int) -> Dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(threads)
    return env


def run_step(exe: Path, shape: Shape, B: int, T: int, threads: int, warmup: int, steps: int, timeout: float = 1800,
             precision: str = "fp32") -> dict:
    """Time steps with the C driver; returns {"steps": [phase dicts], "losses": [...], "peak_rss_mb"}."""
    argv = [str(exe), *step_args(shape, B, T, threads, warmup, steps, precision)]
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=_env(threads))
    except subprocess.TimeoutExpired:
        raise DriverError(f"bench_step timed out after {timeout:.0f} s") from None
    except OSError as e:
        raise DriverError(f"{exe}: {e}") from None
    if p.returncode != 0:
        raise DriverError(f"bench_step exited {p.returncode}: {p.stderr.strip()[-300:]}")
    res = json.loads(p.stdout)
    kb = res.pop("peak_rss_kb", -1)
    res["peak_rss_mb"] = kb / 1024.0 if kb and kb > 0 else None
    return res


def run_kernels(exe: Path, shape: Shape, B: int, T: int, threads: int, repeats: int, timeout: float = 1800,
                precision: str = "fp32") -> dict:
    s = shape
    dims = (B, T, s.channels, s.num_heads, s.vocab_size, s.padded_vocab_size, s.num_layers, threads, repeats)
    argv = [str(exe), "kernels", *(str(x) for x in dims)]
    if precision != "fp32":
        argv.append(precision)
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=_env(threads))
    except subprocess.TimeoutExpired:
        raise DriverError(f"bench_kernels timed out after {timeout:.0f} s") from None
    if p.returncode != 0:
        raise DriverError(f"bench_kernels exited {p.returncode}: {p.stderr.strip()[-300:]}")
    return json.loads(p.stdout)


def run_gemm(exe: Path, n: int, threads: int, repeats: int = 5, timeout: float = 600, precision: str = "fp32") -> dict:
    try:
        p = subprocess.run([str(exe), "gemm", str(n), str(threads), str(repeats), precision], capture_output=True,
                           text=True, timeout=timeout, env=_env(threads))
    except subprocess.TimeoutExpired:
        raise DriverError(f"bench_kernels gemm timed out after {timeout:.0f} s") from None
    if p.returncode != 0:
        raise DriverError(f"bench_kernels gemm exited {p.returncode}: {p.stderr.strip()[-300:]}")
    return json.loads(p.stdout)


def run_fma(exe: Path, threads: int, repeats: int = 3, timeout: float = 600) -> dict:
    """FMA throughput of `threads` threads (bench_kernels fma): {"gflops", "isa", ...}."""
    try:
        p = subprocess.run([str(exe), "fma", str(threads), str(repeats)], capture_output=True, text=True,
                           timeout=timeout, env=_env(threads))
    except subprocess.TimeoutExpired:
        raise DriverError(f"bench_kernels fma timed out after {timeout:.0f} s") from None
    if p.returncode != 0:
        raise DriverError(f"bench_kernels fma exited {p.returncode}: {p.stderr.strip()[-300:]}")
    return json.loads(p.stdout)


def run_dot(exe: Path, threads: int, repeats: int = 3, timeout: float = 600) -> dict:
    """bf16 dot-product throughput of `threads` threads (bench_kernels dot, vdpbf16ps): the
    bf16 peak, {"gflops" (None without AVX512_BF16), "isa", ...}."""
    try:
        p = subprocess.run([str(exe), "dot", str(threads), str(repeats)], capture_output=True, text=True,
                           timeout=timeout, env=_env(threads))
    except subprocess.TimeoutExpired:
        raise DriverError(f"bench_kernels dot timed out after {timeout:.0f} s") from None
    if p.returncode != 0:
        raise DriverError(f"bench_kernels dot exited {p.returncode}: {p.stderr.strip()[-300:]}")
    return json.loads(p.stdout)
