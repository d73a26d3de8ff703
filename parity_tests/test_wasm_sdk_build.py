"""The guest SDK's examples build (C with clang, Rust with cargo, both to wasm32-wasi), and
what they import is the host's table: every `pyllmc` import of every example has exactly the
host's wasm signature, the examples of each language together use every function of the ABI,
and nothing else is imported but WASI. The Rust crate's own unit tests (JSON writer, status
codes, struct layout) pass natively.

Without a toolchain these skip with the reason on a developer's machine, and fail in CI."""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path

import pytest

from pyllmc.wasm import abi

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ("steps", "train")


def _load_build():
    spec = importlib.util.spec_from_file_location("pyllmc_guest_build", ROOT / "bindings" / "guest" / "build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


build = _load_build()




def _wasmtime():
    try:
        import wasmtime
    except ImportError as e:
        build.need(f"wasmtime is not installed (pip install 'pyllmc[wasm]'): {e}")
    return wasmtime


def _imports(path: Path):
    wasmtime = _wasmtime()
    module = wasmtime.Module.from_file(wasmtime.Engine(), str(path))
    return [(i.module, i.name, tuple(str(t) for t in i.type.params), tuple(str(t) for t in i.type.results))
            for i in module.imports]


def _check_against_table(built):
    assert sorted(built) == sorted(EXAMPLES)
    host = {n: (tuple(t for _, t in s.params), tuple(s.results)) for n, s in abi.FUNCTIONS.items()}
    used = set()
    for name, path in built.items():
        for module, func, params, results in _imports(path):
            assert module in (abi.IMPORT_MODULE, "wasi_snapshot_preview1"), (name, module, func)
            if module == abi.IMPORT_MODULE:
                assert func in host, f"{name} imports {func}, which the host does not provide"
                assert (params, results) == host[func], (name, func)
                used.add(func)
    assert sorted(used) == sorted(host), f"no example uses {sorted(set(host) - used)}"


@pytest.fixture(scope="module")
def c_examples(tmp_path_factory):
    build.need(build.c_toolchain_missing())
    return build.build_c(tmp_path_factory.mktemp("c_guests"))


@pytest.fixture(scope="module")
def rust_examples(tmp_path_factory):
    build.need(build.rust_toolchain_missing())
    return build.build_rust(tmp_path_factory.mktemp("rust_guests"))


def test_c_examples_build_and_import_the_host_table(c_examples):
    _check_against_table(c_examples)


def test_rust_examples_build_and_import_the_host_table(rust_examples):
    _check_against_table(rust_examples)


def test_c_build_failure_is_reported(tmp_path, monkeypatch):
    """A broken example is a BuildError naming the file, not a silently missing module."""
    build.need(build.c_toolchain_missing())
    examples = tmp_path / "c" / "examples"
    examples.mkdir(parents=True)
    (examples / "broken.c").write_text('#include "pyllmc_guest.h"\nint main(void) { return pyllmc_nope(); }\n')
    (tmp_path / "c" / "pyllmc_guest.h").write_text((build.C_DIR / "pyllmc_guest.h").read_text())
    monkeypatch.setattr(build, "C_DIR", tmp_path / "c")
    with pytest.raises(build.BuildError, match="broken.c"):
        build.build_c(tmp_path / "out")


def test_rust_crate_unit_tests(tmp_path):
    build.need(build.rust_toolchain_missing())
    r = subprocess.run([build._cargo(), "test", "--offline", "--locked"], cwd=build.RUST_DIR,
                       env=build.rust_env(tmp_path / "target"), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "test result: ok" in r.stdout and " 0 failed" in r.stdout
    # the doc test showing that a model cannot be used while its Job lives
    assert re.search(r"src/lib\.rs - Job \(line \d+\) - compile fail \.\.\. ok", r.stdout), r.stdout
