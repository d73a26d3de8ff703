"""Building and running the C benchmark drivers of core_c/bench/.

The drivers link the C core's sources directly (not the installed library), so they need a
source checkout: found from `--src`, `$PYLLMC_SRC`, the current directory or its parents, or
the checkout this package was imported from. Objects are compiled with the flags of the
CMake Release build of the library (-std=c11 -O3 -DNDEBUG -fPIC -fvisibility=hidden
-fopenmp), each source to its own object so GNU ld's --wrap can redirect calls between them
(slow_wrap.c). Builds are cached in `<src>/build-bench/<hash of sources, flags, compiler>/`.

Without a source tree or a C compiler the parts that need a driver (kernel timings, the C
GEMM probe, the `c-driver` implementation, the callgrind gate) are skipped with the reason.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from .spec import Shape

CFLAGS = ["-std=c11", "-O3", "-DNDEBUG", "-fPIC", "-fvisibility=hidden", "-fopenmp"]
SLOW_VARIANTS = {
    "gelu": (["-DLLMC_BENCH_SLOW_GELU"], ["-Wl,--wrap=gelu_forward"], "gelu_forward"),
    "forward": (["-DLLMC_BENCH_SLOW_FORWARD"], ["-Wl,--wrap=llmc_model_forward"], "llmc_model_forward"),
}


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


def _sources(src: Path) -> List[Path]:
    return sorted((src / "core_c" / "src").glob("*.c"))


def _key(src: Path, target: str, extra: Sequence[str], cc: str) -> str:
    h = hashlib.sha256()
    files = sorted((src / "core_c" / "src").glob("*.[ch]")) + [src / "core_c" / "include" / "llmc.h"] + sorted((src / "core_c" / "bench").glob("*.c"))
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    h.update(json.dumps([target, list(extra), CFLAGS, compiler_id(cc)]).encode())
    return h.hexdigest()[:16]


def _run(cmd: List[str]) -> None:
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        msg = (p.stderr or p.stdout).strip().splitlines()
        err = list(dict.fromkeys(l for l in msg if "error" in l)) or msg[-3:]
        raise DriverError(f"build failed: {' '.join(cmd[:2])} ...: " + " | ".join(err[:4]))


def build(target: str, src: Optional[Path] = None, slow: Optional[str] = None) -> Path:
    """Build `bench_step` or `bench_kernels` (optionally a slowed variant) and return its path."""
    if target not in ("bench_step", "bench_kernels"):
        raise ValueError(target)
    src = src or find_source()
    cc = compiler()
    defs, ldflags = [], []
    if slow:
        if slow not in SLOW_VARIANTS:
            raise DriverError(f"unknown slow variant {slow!r} (one of {', '.join(SLOW_VARIANTS)})")
        defs, ldflags, _ = SLOW_VARIANTS[slow]
    key = _key(src, target, defs + ldflags, cc)
    out_dir = src / "build-bench" / f"{target}{'-slow-' + slow if slow else ''}-{key}"
    exe = out_dir / target
    if exe.is_file():
        return exe
    (src / "build-bench").mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target}-", dir=src / "build-bench"))
    try:
        inc = ["-I", str(src / "core_c" / "include"), "-I", str(src / "core_c" / "src")]
        units = _sources(src) + [src / "core_c" / "bench" / f"{target}.c"]
        if slow:
            units.append(src / "core_c" / "bench" / "slow_wrap.c")
        objs = [tmp / f"{i:02d}_{u.stem}.o" for i, u in enumerate(units)]
        cmds = [[cc, *CFLAGS, *defs, *inc, "-c", str(u), "-o", str(o)] for u, o in zip(units, objs)]
        with concurrent.futures.ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1))) as ex:
            for f in [ex.submit(_run, c) for c in cmds]:
                f.result()
        _run([cc, "-fopenmp", *ldflags, *map(str, objs), "-o", str(tmp / target), "-lm"])
        if slow:
            sym = SLOW_VARIANTS[slow][2]
            nm = shutil.which("nm")
            if nm:
                defined = subprocess.run([nm, "--defined-only", *map(str, objs[:-2])], capture_output=True, text=True).stdout
                if not any(l.split()[-1:] == [sym] for l in defined.splitlines()):
                    raise DriverError(f"slow variant {slow!r}: the C core no longer defines {sym}; use another (--slow forward)")
        for o in objs:
            o.unlink()
        try:
            os.replace(tmp, out_dir)
        except OSError:  # built concurrently by someone else
            shutil.rmtree(tmp, ignore_errors=True)
        return exe
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def step_args(shape: Shape, B: int, T: int, threads: int, warmup: int, steps: int) -> List[str]:
    s = shape
    return [str(x) for x in (s.num_layers, s.channels, s.num_heads, s.vocab_size, s.padded_vocab_size,
                             max(T, min(s.max_seq_len, 1 << 30)), B, T, threads, warmup, steps)]


def _env(threads: int) -> Dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(threads)
    return env


def run_step(exe: Path, shape: Shape, B: int, T: int, threads: int, warmup: int, steps: int, timeout: float = 1800) -> dict:
    """Time steps with the C driver; returns {"steps": [phase dicts], "losses": [...], "peak_rss_mb"}."""
    argv = [str(exe), *step_args(shape, B, T, threads, warmup, steps)]
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


def run_kernels(exe: Path, shape: Shape, B: int, T: int, threads: int, repeats: int, timeout: float = 1800) -> dict:
    s = shape
    argv = [str(exe), "kernels", *(str(x) for x in (B, T, s.channels, s.num_heads, s.vocab_size, s.padded_vocab_size, s.num_layers, threads, repeats))]
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=_env(threads))
    except subprocess.TimeoutExpired:
        raise DriverError(f"bench_kernels timed out after {timeout:.0f} s") from None
    if p.returncode != 0:
        raise DriverError(f"bench_kernels exited {p.returncode}: {p.stderr.strip()[-300:]}")
    return json.loads(p.stdout)


def run_gemm(exe: Path, n: int, threads: int, repeats: int = 5, timeout: float = 600) -> dict:
    try:
        p = subprocess.run([str(exe), "gemm", str(n), str(threads), str(repeats)], capture_output=True, text=True,
                           timeout=timeout, env=_env(threads))
    except subprocess.TimeoutExpired:
        raise DriverError(f"bench_kernels gemm timed out after {timeout:.0f} s") from None
    if p.returncode != 0:
        raise DriverError(f"bench_kernels gemm exited {p.returncode}: {p.stderr.strip()[-300:]}")
    return json.loads(p.stdout)
