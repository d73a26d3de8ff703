"""Build the guest SDK's examples into wasm32-wasi modules: the C examples with clang and the
Rust crate's examples with cargo. The SDK's tests use it, and so can you:

    python bindings/guest/build.py                 # both languages -> bindings/guest/build/
    python bindings/guest/build.py c --out /tmp/g  # only the C examples, elsewhere

C:    clang --target=wasm32-wasi --sysroot=/usr -O2 -std=c11 -Wall -Wextra -Werror
      -I bindings/guest/c -o NAME.wasm bindings/guest/c/examples/NAME.c
      (Debian: apt-get install clang lld wasi-libc libclang-rt-14-dev-wasm32; CC and
      WASI_SYSROOT override the compiler and the sysroot)
Rust: RUSTC=/usr/bin/rustc /usr/bin/cargo build --offline --locked --release
      --target wasm32-wasi --examples   (in bindings/guest/rust; Debian: rustc cargo
      libstd-rust-dev-wasm32; the distribution's rustc is preferred over a rustup one on PATH,
      which usually lacks the wasm32-wasi standard library; RUSTC and CARGO override)

Exit codes: 0 built, 1 a build failed, 2 bad arguments or a missing toolchain (named).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

GUEST = Path(__file__).resolve().parent
C_DIR = GUEST / "c"
RUST_DIR = GUEST / "rust"
RUST_TARGET = "wasm32-wasi"


class BuildError(RuntimeError):
    """A compiler ran and failed; the message holds its output."""


def _cc() -> str:
    return os.environ.get("CC") or "clang"


def _sysroot() -> str:
    return os.environ.get("WASI_SYSROOT") or "/usr"


def c_command(source: Path, output: Path) -> List[str]:
    """The compiler command for one C guest."""
    return [_cc(), f"--target={RUST_TARGET}", f"--sysroot={_sysroot()}", "-O2", "-std=c11", "-Wall", "-Wextra",
            "-Werror", "-I", str(C_DIR), "-o", str(output), str(source)]


def c_toolchain_missing() -> Optional[str]:
    """None when a C-to-wasm32-wasi build works here, else why not (one line)."""
    if shutil.which(_cc()) is None:
        return f"no C compiler {_cc()!r} on PATH (apt-get install clang lld wasi-libc libclang-rt-14-dev-wasm32)"
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "probe.c"
        src.write_text("#include <stdio.h>\nint main(void) { puts(\"ok\"); return 0; }\n")
        r = subprocess.run(c_command(src, Path(d) / "probe.wasm"), capture_output=True, text=True)
        if r.returncode != 0:
            last = (r.stderr.strip().splitlines() or ["(no output)"])[-1]
            return (f"{_cc()} cannot build for wasm32-wasi with sysroot {_sysroot()}: {last} "
                    "(apt-get install lld wasi-libc libclang-rt-14-dev-wasm32)")
    return None


def build_c(out: Path, names: Optional[List[str]] = None) -> Dict[str, Path]:
    """Compile bindings/guest/c/examples/*.c (or the named ones) into out/NAME.wasm."""
    out.mkdir(parents=True, exist_ok=True)
    sources = sorted((C_DIR / "examples").glob("*.c"))
    if names is not None:
        sources = [s for s in sources if s.stem in names]
    built = {}
    for src in sources:
        dst = out / f"{src.stem}.wasm"
        r = subprocess.run(c_command(src, dst), capture_output=True, text=True)
        if r.returncode != 0:
            raise BuildError(f"{src.name}: {' '.join(c_command(src, dst))}\n{r.stdout}{r.stderr}")
        built[src.stem] = dst
    return built


def _rustc() -> str:
    return os.environ.get("RUSTC") or ("/usr/bin/rustc" if os.path.exists("/usr/bin/rustc") else "rustc")


def _cargo() -> str:
    return os.environ.get("CARGO") or ("/usr/bin/cargo" if os.path.exists("/usr/bin/cargo") else "cargo")


def rust_toolchain_missing() -> Optional[str]:
    """None when cargo and a rustc with the wasm32-wasi standard library are here, else why not."""
    for tool in (_cargo(), _rustc()):
        if shutil.which(tool) is None:
            return f"no {tool!r} (apt-get install rustc cargo libstd-rust-dev-wasm32)"
    r = subprocess.run([_rustc(), "--print", "sysroot"], capture_output=True, text=True)
    if r.returncode != 0:
        return f"{_rustc()} --print sysroot failed: {r.stderr.strip()}"
    if not (Path(r.stdout.strip()) / "lib" / "rustlib" / RUST_TARGET).is_dir():
        return (f"{_rustc()} has no {RUST_TARGET} standard library under {r.stdout.strip()} "
                "(apt-get install libstd-rust-dev-wasm32, or set RUSTC)")
    return None


def rust_env(target_dir: Path) -> Dict[str, str]:
    env = dict(os.environ, RUSTC=_rustc(), CARGO_TARGET_DIR=str(target_dir))
    if os.path.exists("/usr/bin/rustdoc"):
        env.setdefault("RUSTDOC", "/usr/bin/rustdoc")
    return env


def build_rust(out: Path, names: Optional[List[str]] = None) -> Dict[str, Path]:
    """cargo-build the crate's examples (release, wasm32-wasi) and copy them to out/NAME.wasm.
    Cargo's own build tree goes to out/cargo-target, never into the source directory."""
    out.mkdir(parents=True, exist_ok=True)
    target = out / "cargo-target"
    cmd = [_cargo(), "build", "--offline", "--locked", "--release", "--target", RUST_TARGET]
    cmd += [a for n in names for a in ("--example", n)] if names else ["--examples"]
    r = subprocess.run(cmd, cwd=RUST_DIR, env=rust_env(target), capture_output=True, text=True)
    if r.returncode != 0:
        raise BuildError(f"{' '.join(cmd)} (in {RUST_DIR})\n{r.stdout}{r.stderr}")
    built = {}
    for wasm in sorted((target / RUST_TARGET / "release" / "examples").glob("*.wasm")):
        if "-" in wasm.stem:  # cargo's hashed duplicates (train-0123abcd.wasm)
            continue
        if names is None or wasm.stem in names:
            dst = out / wasm.name
            shutil.copyfile(wasm, dst)
            built[wasm.stem] = dst
    return built


def toolchain_required() -> bool:
    """Whether a missing toolchain is an error rather than a reason to skip: in CI (CI=true)
    and in the nox `wasm` session (PYLLMC_REQUIRE_WASM=1)."""
    return (os.environ.get("CI", "").lower() in ("1", "true", "yes")
            or os.environ.get("PYLLMC_REQUIRE_WASM") == "1")


def need(reason: Optional[str]) -> None:
    """For the SDK's tests: nothing when ``reason`` is None; else skip with the reason on a
    developer's machine, fail where the toolchain is required (``toolchain_required``)."""
    if reason is None:
        return
    import pytest

    if toolchain_required():
        pytest.fail(f"the guest SDK tests need this here (CI / PYLLMC_REQUIRE_WASM=1): {reason}")
    pytest.skip(reason)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description="Build the pyllmc guest SDK examples (wasm32-wasi).")
    p.add_argument("language", nargs="?", choices=["c", "rust", "all"], default="all")
    p.add_argument("--out", default=str(GUEST / "build"), help="output directory (default bindings/guest/build)")
    args = p.parse_args(argv)
    out = Path(args.out)
    langs = ["c", "rust"] if args.language == "all" else [args.language]
    for lang in langs:
        missing = c_toolchain_missing() if lang == "c" else rust_toolchain_missing()
        if missing:
            print(f"build.py: {lang}: {missing}", file=sys.stderr)
            return 2
        try:
            built = build_c(out / "c") if lang == "c" else build_rust(out / "rust")
        except BuildError as e:
            print(f"build.py: {lang} build failed: {e}", file=sys.stderr)
            return 1
        for name, path in built.items():
            print(f"{lang}: {name} -> {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
