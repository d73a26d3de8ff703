"""Packaging hygiene: every third-party module the package imports is declared (as a
dependency or in an extra), the license is declared and shipped, the package is marked typed,
and the wheel check of .ci/check_wheel.py recognises a test-only artefact."""
from __future__ import annotations

import ast
import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: import name -> distribution name, where they differ
DIST_OF = {"yaml": "pyyaml"}


def _pyproject():
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _requirement_names(reqs):
    return {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].strip().lower() for r in reqs}


def _third_party_imports():
    stdlib = getattr(sys, "stdlib_module_names", None)
    if stdlib is None:
        pytest.skip("sys.stdlib_module_names needs Python 3.10")
    found = {}
    for p in sorted([*(ROOT / "bindings" / "pyllmc").rglob("*.py"), *(ROOT / "reference").rglob("*.py")]):
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for n in names:
                top = n.split(".")[0]
                if top not in stdlib and top != "pyllmc":
                    found.setdefault(top, p.relative_to(ROOT).as_posix())
    return found


def test_every_imported_package_is_declared():
    project = _pyproject()["project"]
    declared = _requirement_names(project["dependencies"])
    for reqs in project["optional-dependencies"].values():
        declared |= _requirement_names(reqs)
    imported = _third_party_imports()
    assert {"numpy", "cffi", "tqdm", "tiktoken", "torch"} <= set(imported)  # the scan sees them
    missing = {m: where for m, where in imported.items() if DIST_OF.get(m, m) not in declared}
    assert not missing, f"imported but declared nowhere in pyproject.toml: {missing}"


def test_license_and_typing_metadata():
    project = _pyproject()["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "pyllmc developers" in text
    assert "Typing :: Typed" in project["classifiers"]
    assert (ROOT / "bindings" / "pyllmc" / "py.typed").is_file()
    extras = project["optional-dependencies"]
    assert _requirement_names(extras["progress"]) == {"tqdm"} and _requirement_names(extras["bpe"]) == {"tiktoken"}


def test_wheel_check_refuses_test_artefacts():
    spec = importlib.util.spec_from_file_location("check_wheel", ROOT / ".ci" / "check_wheel.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    good = ["pyllmc/__init__.py", "pyllmc/py.typed", "pyllmc/include/llmc.h", "pyllmc/shapes.py", "pyllmc/libllmc.so",
            "pyllmc/reference/__init__.py", "pyllmc-0.1.0.dist-info/licenses/LICENSE", "pyllmc-0.1.0.dist-info/METADATA"]
    meta = "\n".join(mod.METADATA)
    assert mod.check(good, meta) == []
    assert any("_kernel_shim" in p for p in mod.check(good + ["pyllmc/_kernel_shim.so"], meta))
    assert any("bench_step" in p for p in mod.check(good + ["pyllmc/bench_step"], meta))
    assert any("py.typed" in p for p in mod.check([n for n in good if not n.endswith("py.typed")], meta))
    assert any("License-Expression" in p for p in mod.check(good, "")), "metadata lines are checked"


def test_no_reference_to_files_outside_the_repository():
    """The repository keeps its own design and format documents (docs/); nothing in it points
    at the design notes it was planned from."""
    pattern = re.compile(r"DESIGN\.md|FORMATS\.md|WASM_ABI\.md|\.\./shared|/work/shared")
    offenders = []
    for p in ROOT.rglob("*"):
        rel = p.relative_to(ROOT).as_posix()
        if not p.is_file() or rel.split("/")[0].startswith((".git", ".venv", ".nox", "build", ".ci-venv", "out", ".hypothesis",
                                                             ".pytest_cache", ".mypy_cache", ".ruff_cache")):
            continue
        if "__pycache__" in rel or p.suffix in (".png", ".bin", ".so") or p.stat().st_size > 2_000_000:
            continue
        try:
            text = p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        offenders += [f"{rel}:{text.count(chr(10), 0, m.start()) + 1}" for m in pattern.finditer(text)
                      if rel != "parity_tests/test_packaging.py"]
    assert not offenders, offenders
    assert (ROOT / "docs" / "design.md").is_file() and (ROOT / "docs" / "formats.md").is_file()
