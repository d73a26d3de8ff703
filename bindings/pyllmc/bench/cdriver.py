"""Building and running the C benchmark drivers of core_c/bench/.

The drivers link the C core's sources directly (not the installed library), so they need a
source checkout: found from `--src`, `$PYLLMC_SRC`, the current directory or its parents, or
the checkout this package was imported from. Objects are compiled with the flags of the
CMake Release build of the library (its optimisation flags are read from
core_c/CMakeLists.txt, plus -std=c11 -DNDEBUG -fPIC -fvisibility=hidden -fopenmp), each
source to its own object so GNU ld's --wrap can redirect calls between them (slow_wrap.c).
Builds are cached in `<src>/build-bench/<target>-<hash of sources, flags, compiler>/`; the
newest few of each kind are kept.

Without a source tree or a C compiler the parts that need a driver (kernel timings, the C
GEMM probe, the `c-driver` implementation, the callgrind gate) are skipped with the reason.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from .spec import Shape

#: Flags every bench build gets beside the library's own optimisation flags (read from
#: core_c/CMakeLists.txt, see cmake_cflags): what CMake adds for a Release build of the
#: object library (C11 without extensions, -DNDEBUG, PIC, hidden visibility, OpenMP).
BASE_CFLAGS = ["-std=c11", "-DNDEBUG", "-fPIC", "-fvisibility=hidden", "-fopenmp"]
#: used when CMakeLists.txt cannot be read or parsed (then recorded as such)
FALLBACK_OPT_FLAGS = ["-O3", "-fno-math-errno"]

#: Deliberately slowed C cores for the gate's self-test (core_c/bench/slow_wrap.c): name ->
#: (compile definitions, symbols wrapped with ld --wrap, what it does).
SLOW_VARIANTS = {
    "gelu": (["-DLLMC_BENCH_SLOW_GELU=4"], ["gelu_forward"], "the GELU forward kernel does its work 4 times"),
    "matmul": (["-DLLMC_BENCH_SLOW_MATMUL=3"], ["matmul_forward", "matmul_backward"],
               "every Linear layer (forward and backward GEMMs) does its work 3 times"),
}
TARGETS = ("bench_step", "bench_kernels", "libllmc")
#: bench builds kept per target and variant (older ones are removed: sources change often)
KEEP_BUILDS = 3


class DriverError(RuntimeError):
    """No source tree, no compiler, or a build or run that failed (the message says which)."""


def _is_src(root: Path) -> bool:
    return (root / "core_c" / "include" / "llmc.h").is_file() and (root / "core_c" / "bench" / "bench_step.c").is_file() and any((root / "core_c" / "src").glob("*.c"))


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
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
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


_CMAKE_OPTS = re.compile(r"target_compile_options\(\s*llmc_objects\s+PRIVATE\s+\$<\$<COMPILE_LANGUAGE:C>:([^>]*)>\s*\)")


def cmake_cflags(src: Path) -> Tuple[List[str], str]:
    """The library's own C optimisation flags, from the first GCC/Clang
    `target_compile_options(llmc_objects PRIVATE $<$<COMPILE_LANGUAGE:C>:...>)` of
    core_c/CMakeLists.txt (warning flags dropped: they do not change the code), so the bench
    drivers and the gate's callgrind build compile the kernels exactly as `pip install` does.
    Returns (flags, where they came from)."""
    path = src / "core_c" / "CMakeLists.txt"
    try:
        text = path.read_text()
    except OSError:
        return list(FALLBACK_OPT_FLAGS), f"fallback ({path} unreadable)"
    m = _CMAKE_OPTS.search(text)
    if not m:
        return list(FALLBACK_OPT_FLAGS), f"fallback (no target_compile_options for llmc_objects in {path.name})"
    flags = [f for f in m.group(1).split() if not f.startswith("-W")]
    return flags, "core_c/CMakeLists.txt"


def cflags(src: Path) -> List[str]:
    return BASE_CFLAGS + cmake_cflags(src)[0]


def _sources(src: Path) -> List[Path]:
    return sorted((src / "core_c" / "src").glob("*.c"))


def sources_digest(src: Path) -> str:
    """sha256 (16 hex digits) of the C core's sources, its public header and the step driver:
    what the callgrind count of a step depends on besides the toolchain."""
    h = hashlib.sha256()
    files = sorted((src / "core_c" / "src").glob("*.[ch]")) + [src / "core_c" / "include" / "llmc.h", src / "core_c" / "bench" / "bench_step.c"]
    for f in files:
        h.update(f.name.encode() + b"\0")
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _key(src: Path, target: str, extra: Sequence[str], cc: str) -> str:
    h = hashlib.sha256()
    files = sorted((src / "core_c" / "src").glob("*.[ch]")) + [src / "core_c" / "include" / "llmc.h"] + sorted((src / "core_c" / "bench").glob("*.c"))
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    h.update(json.dumps([target, list(extra), cflags(src), compiler_id(cc)]).encode())
    return h.hexdigest()[:16]


def _run(cmd: List[str]) -> None:
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        msg = (p.stderr or p.stdout).strip().splitlines()
        err = list(dict.fromkeys(l for l in msg if "error" in l)) or msg[-3:]
        raise DriverError(f"build failed: {' '.join(cmd[:2])} ...: " + " | ".join(err[:4]))


def _prune(root: Path, prefix: str, keep: Path) -> None:
    """Remove all but the newest KEEP_BUILDS builds named prefix-<key> (and never `keep`)."""
    dirs = sorted((d for d in root.glob(prefix + "-*") if d.is_dir() and d.name[len(prefix) + 1:].isalnum()),
                  key=lambda d: d.stat().st_mtime, reverse=True)
    for d in dirs[KEEP_BUILDS:]:
        if d != keep:
            shutil.rmtree(d, ignore_errors=True)


def build(target: str, src: Optional[Path] = None, slow: Optional[str] = None) -> Path:
    """Build `bench_step`, `bench_kernels` or `libllmc` (the shared library, for a slowed
    variant loaded through PYLLMC_LIBRARY), optionally a slowed variant; return its path."""
    if target not in TARGETS:
        raise ValueError(target)
    src = src or find_source()
    cc = compiler()
    defs: List[str] = []
    wraps: List[str] = []
    if slow:
        if slow not in SLOW_VARIANTS:
            raise DriverError(f"unknown slow variant {slow!r} (one of {', '.join(SLOW_VARIANTS)})")
        defs, wraps, _ = SLOW_VARIANTS[slow]
    ldflags = [f"-Wl,--wrap={w}" for w in wraps]
    key = _key(src, target, defs + ldflags, cc)
    prefix = f"{target}{'-slow-' + slow if slow else ''}"
    out_dir = src / "build-bench" / f"{prefix}-{key}"
    name = "libllmc.so" if target == "libllmc" else target
    exe = out_dir / name
    if exe.is_file():
        return exe
    (src / "build-bench").mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target}-", dir=src / "build-bench"))
    try:
        inc = ["-I", str(src / "core_c" / "include"), "-I", str(src / "core_c" / "src")]
        units = _sources(src)
        n_core = len(units)
        if target != "libllmc":
            units = units + [src / "core_c" / "bench" / f"{target}.c"]
        if slow:
            units.append(src / "core_c" / "bench" / "slow_wrap.c")
        objs = [tmp / f"{i:02d}_{u.stem}.o" for i, u in enumerate(units)]
        flags = cflags(src)
        cmds = [[cc, *flags, *defs, *inc, "-c", str(u), "-o", str(o)] for u, o in zip(units, objs)]
        with concurrent.futures.ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1))) as ex:
            for f in [ex.submit(_run, c) for c in cmds]:
                f.result()
        link = [cc, "-fopenmp", *(["-shared"] if target == "libllmc" else []), *ldflags, *map(str, objs), "-o", str(tmp / name), "-lm"]
        _run(link)
        if wraps:
            # --wrap only redirects calls between objects: if the core stopped defining a
            # wrapped kernel (renamed, inlined into model.c) the variant would not be slow
            nm = shutil.which("nm")
            if nm:
                defined = subprocess.run([nm, "--defined-only", *map(str, objs[:n_core])], capture_output=True, text=True).stdout
                names = {l.split()[-1] for l in defined.splitlines() if l.split()}
                missing = [w for w in wraps if w not in names]
                if missing:
                    raise DriverError(f"slow variant {slow!r}: the C core no longer defines {', '.join(missing)}; "
                                      "update core_c/bench/slow_wrap.c and cdriver.SLOW_VARIANTS")
        for o in objs:
            o.unlink()
        try:
            os.replace(tmp, out_dir)
        except OSError:  # built concurrently by someone else
            shutil.rmtree(tmp, ignore_errors=True)
        _prune(src / "build-bench", prefix, out_dir)
        return exe
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


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
    argv = [str(exe), "kernels", *(str(x) for x in (B, T, s.channels, s.num_heads, s.vocab_size, s.padded_vocab_size, s.num_layers, threads, repeats))]
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
