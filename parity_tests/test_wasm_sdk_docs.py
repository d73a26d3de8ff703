"""docs/wasm.md against the code, so that the guide cannot rot: its function table is the
host's table (names, parameter names and wasm types, results), its status-code and
pyllmc_status tables are the host's, its list of train_start keys is what the host accepts
and refuses, its runner flag table is the CLI's; and the complete C and Rust guests it shows
build and train (run under `pyllmc wasm run` on a small data set, printing what the page says),
as does its Python embedding example.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pyllmc.wasm import abi

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "wasm.md"


def _load_build():
    spec = importlib.util.spec_from_file_location("pyllmc_guest_build", ROOT / "bindings" / "guest" / "build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


build = _load_build()


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text()


def section(doc: str, title: str) -> str:
    m = re.search(r"^#+ " + re.escape(title) + r"\s*$(.*?)(?=^#+ |\Z)", doc, flags=re.M | re.S)
    assert m, f"docs/wasm.md has no section {title!r}"
    return m.group(1)


def code_blocks(doc: str, lang: str):
    return re.findall(r"^```" + lang + r"\n(.*?)^```", doc, flags=re.M | re.S)


def test_function_table_is_the_host_table(doc):
    rows = re.findall(r"^\| `(\w+)` \| `\(([^)]*)\) -> (\w+)` \|", section(doc, "Functions"), flags=re.M)
    got = {}
    for name, params, result in rows:
        ps = tuple(tuple(p.strip().split(": ")) for p in params.split(",") if p.strip())
        got[name] = abi.Signature(ps, (result,))
    assert list(got) == list(abi.FUNCTIONS)
    assert got == abi.FUNCTIONS
    v1 = len(abi.FUNCTIONS) - len(abi.EXTENSIONS)
    assert v1 == 21 and f"Version 1 fixes the first {v1} functions" in doc
    added = [n for n, _, _ in rows if re.search(r"^\| `" + n + r"` \|[^\n]*\| \*addition\*", doc, flags=re.M)]
    assert added == list(abi.EXTENSIONS)
    assert f"adds {len(abi.EXTENSIONS)} function" in doc
    for name in abi.EXTENSIONS:
        assert re.search(r"^- `" + name + r"`: ", doc, flags=re.M), f"the additions list does not explain {name}"


def test_status_tables_are_the_host_tables(doc):
    codes = {name: int(c) for c, name in re.findall(r"^\| (\d+) \| `(\w+)` \|", section(doc, "Status codes"), flags=re.M)}
    assert codes == abi.STATUS
    struct = section(doc, "`pyllmc_status` (48 bytes, little-endian, naturally aligned)")
    fields = tuple((int(o), t, f) for o, t, f in re.findall(r"^\| (\d+) \| (\w+) \| `(\w+)` \|", struct, flags=re.M))
    assert fields == abi.STATUS_STRUCT and abi.STATUS_STRUCT_SIZE == 48
    states = dict((n, int(v)) for v, n in re.findall(r"(\d) (running|finished|stopped|failed)", struct))
    assert states == abi.JOB_STATE
    config = re.search(r"6 x i32 in the order of llm\.c's checkpoint header: (.*?)\.", doc, flags=re.S).group(1)
    assert tuple(re.findall(r"`(\w+)`", config)) == abi.MODEL_CONFIG_FIELDS


def test_train_config_keys_are_what_the_host_accepts(doc):
    from pyllmc.wasm import jobs

    text = section(doc, "`train_start`'s configuration")
    accepted = re.search(r"value of the field's type: (.*?)What is not given", text, flags=re.S).group(1)
    refused = re.search(r"The keys that the\s+handles decide are refused: (.*?)An unknown key", text, flags=re.S).group(1)
    assert set(re.findall(r"`(\w+)`", accepted)) == set(jobs.FIELD_KINDS) - set(jobs.HOST_SET)
    assert set(re.findall(r"`(\w+)`", refused)) == set(jobs.HOST_SET)


def test_runner_flags_are_the_cli_flags(doc):
    from pyllmc.cli import build_parser

    parser = build_parser()
    wasm = next(a for a in parser._subparsers._group_actions[0].choices.items() if a[0] == "wasm")[1]
    run = wasm._subparsers._group_actions[0].choices["run"]
    cli_flags = {s for a in run._actions for s in a.option_strings if s.startswith("--") and s != "--help"}
    table = set(re.findall(r"^\| `(--[\w-]+)", section(doc, "The runner: `pyllmc wasm run`"), flags=re.M))
    assert table == cli_flags


# ---------------------------------------------------------------------- the page's guests run
@pytest.fixture(scope="module")
def work(tmp_path_factory):
    try:
        import wasmtime  # noqa: F401
    except ImportError as e:
        build.need(f"wasmtime is not installed (pip install 'pyllmc[wasm]'): {e}")
    from pyllmc.prepare import prepare_data

    d = tmp_path_factory.mktemp("doc_guests")
    text = d / "input.txt"
    text.write_text("".join(f"{i}: a rose by any other name would smell as sweet.\n" for i in range(300)))
    prepare_data([str(text)], str(d / "data"), tokenizer="byte", val_frac=0.1, shard_tokens=100_000)
    (d / "runs").mkdir()
    return d


def run_guest(work, wasm):
    r = subprocess.run([sys.executable, "-m", "pyllmc", "wasm", "run", str(wasm), "--dir", "data::/data",
                        "--dir", "runs::/runs"], cwd=work, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r.stdout


def test_c_guest_of_the_page_builds_and_trains(doc, work):
    build.need(build.c_toolchain_missing())
    (src,) = [b for b in code_blocks(doc, "c") if b.startswith("/* mini.c */")]
    (work / "mini.c").write_text(src)
    r = subprocess.run(build.c_command(work / "mini.c", work / "mini.wasm"), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = run_guest(work, work / "mini.wasm")
    assert re.fullmatch(r"finished after 20 steps, loss \d+\.\d{4}\n", out), out
    assert (work / "runs" / "mini" / "model.bin").stat().st_size > 0
    assert (work / "runs" / "mini" / "ckpt_00000020" / "model.bin").read_bytes() == \
        (work / "runs" / "mini" / "model.bin").read_bytes()


def test_rust_guest_of_the_page_builds_and_trains(doc, work, tmp_path):
    build.need(build.rust_toolchain_missing())
    (toml,) = [b for b in code_blocks(doc, "toml") if b.startswith("# Cargo.toml")]
    (main,) = [b for b in code_blocks(doc, "rust") if b.startswith("// src/main.rs")]
    proj = tmp_path / "mini"
    (proj / "src").mkdir(parents=True)
    # the page's dependency path is relative to a checkout next to the project; point it here
    toml, n = re.subn(r'path = "[^"]*"', f'path = "{build.RUST_DIR}"', toml)
    assert n == 1
    (proj / "Cargo.toml").write_text(toml)
    (proj / "src" / "main.rs").write_text(main)
    target = tmp_path / "target"
    r = subprocess.run([build._cargo(), "build", "--offline", "--release", "--target", build.RUST_TARGET],
                       cwd=proj, env=build.rust_env(target), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    out = run_guest(work, target / build.RUST_TARGET / "release" / "mini.wasm")
    assert re.fullmatch(r"finished after 20 steps, loss \d+\.\d{4}\n", out), out
    assert (work / "runs" / "mini-rs" / "ckpt_00000020" / "model.bin").read_bytes() == \
        (work / "runs" / "mini-rs" / "model.bin").read_bytes()


def test_python_embedding_of_the_page_runs(doc, work, tmp_path):
    build.need(build.c_toolchain_missing())
    (src,) = [b for b in code_blocks(doc, "python") if b.startswith("import pyllmc.wasm")]
    built = build.build_c(tmp_path / "c", ["train"])
    src = src.replace('"bindings/guest/build/c/train.wasm"', repr(str(built["train"])))
    assert str(built["train"]) in src
    r = subprocess.run([sys.executable, "-c", src], cwd=work, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    expected = re.search(r"# (.*)$", src.splitlines()[-1]).group(1)
    assert r.stdout.splitlines()[-1] == expected == "0 exit {}"
    assert (work / "runs" / "py" / "final.bin").is_file()
