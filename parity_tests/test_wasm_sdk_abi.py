"""The guest SDKs' declarations against the host's import table (pyllmc.wasm.abi), so that
neither SDK can drift from the host.

C (bindings/guest/c/pyllmc_guest.h), parsed from the header's text (no toolchain needed):
every import's wasm name, parameter names and wasm types, result type, which pointers are
outputs and what they point to; the status codes and their names; the job states; the layout
of pyllmc_status (offsets computed from the fields with natural alignment, and the offsets its
static asserts pin) and the model config; the section of the host's additions. Mutated
headers must be caught (the checks can fail). With clang for wasm32-wasi: a probe that calls
every declared import compiles against the header and its import section equals the host's
table; the header compiles cleanly as C11, C++11 and natively, and its static asserts reject a
wrong layout.

Rust (bindings/guest/rust/src/sys.rs and status.rs), parsed the same way: the `imports!`
declarations, RawStatus and RawModelConfig, the Status and JobState codes and names, the
additions; mutated sources must be caught too.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Tuple

import pytest

from pyllmc.wasm import abi

ROOT = Path(__file__).resolve().parents[1]
HEADER = ROOT / "bindings" / "guest" / "c" / "pyllmc_guest.h"

# C types of the header -> wasm value types (wasm32: every pointer is an i32 offset)
C_SCALARS = {"int32_t": "i32", "int64_t": "i64", "float": "f32", "double": "f64"}
# what an output pointer points to, in abi.OUT_PARAMS' words
C_POINTEES = {"int32_t": "i32", "int64_t": "i64", "float": "f32", "pyllmc_status": "pyllmc_status"}
SIZES = {"i32": 4, "f32": 4, "i64": 8, "f64": 8}


def _load_build():
    spec = importlib.util.spec_from_file_location("pyllmc_guest_build", ROOT / "bindings" / "guest" / "build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


build = _load_build()


# ---------------------------------------------------------------------- parsing the header
class Param(NamedTuple):
    name: str
    c_type: str  # "int32_t", "const char *", ...
    wasm: str
    out_pointee: Optional[str]  # for a non-const pointer: what it points to ("i32", "u8[cap]", ...)


class Decl(NamedTuple):
    import_name: str
    c_name: str
    result: str
    params: Tuple[Param, ...]


def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


def _param(text: str, func: str, has_cap: bool) -> Param:
    m = re.fullmatch(r"\s*(const\s+)?(\w+)\s*(\*?)\s*(\w+)\s*", text)
    if not m:
        raise ValueError(f"{func}: cannot read parameter {text!r}")
    const, base, star, name = m.groups()
    if star:
        pointee = None
        if not const:  # an output: what the host writes through it
            if base == "char":
                pointee = "u8[cap]"
            elif base == "int32_t" and has_cap and name != "out_n" and name != "out_len":
                pointee = "i32[cap]"
            else:
                pointee = C_POINTEES.get(base, base)
        return Param(name, f"{'const ' if const else ''}{base} *", "i32", pointee)
    if base not in C_SCALARS:
        raise ValueError(f"{func}: parameter {name} has type {base}, which has no wasm form")
    return Param(name, base, C_SCALARS[base], None)


def parse_imports(text: str) -> List[Decl]:
    """Every `PYLLMC_IMPORT(name) result c_name(params);` of the header, in order."""
    body = _strip_comments(text)
    decls = []
    for m in re.finditer(r"PYLLMC_IMPORT\((\w+)\)\s+(\w+)\s+(\w+)\s*\(([^)]*)\)\s*;", body):
        import_name, result, c_name, params = m.groups()
        raw = [p for p in params.split(",") if p.strip() and p.strip() != "void"]
        has_cap = any(re.search(r"\bcap\s*$", p) for p in raw)
        if result not in C_SCALARS:
            raise ValueError(f"{c_name}: result type {result} has no wasm form")
        decls.append(Decl(import_name, c_name, C_SCALARS[result], tuple(_param(p, c_name, has_cap) for p in raw)))
    return decls


def parse_enum(text: str, enum: str, prefix: str) -> Dict[str, int]:
    body = _strip_comments(text)
    m = re.search(r"enum\s+" + enum + r"\s*\{(.*?)\}", body, flags=re.S)
    if not m:
        raise ValueError(f"no enum {enum}")
    return {k: int(v) for k, v in re.findall(prefix + r"(\w+)\s*=\s*(-?\d+)", m.group(1))}


def parse_struct(text: str, name: str) -> List[Tuple[str, str]]:
    """[(field, wasm type)] of `typedef struct NAME { ... } NAME;`."""
    body = _strip_comments(text)
    m = re.search(r"typedef\s+struct\s+" + name + r"\s*\{(.*?)\}\s*" + name + r"\s*;", body, flags=re.S)
    if not m:
        raise ValueError(f"no struct {name}")
    fields = []
    for decl in m.group(1).split(";"):
        decl = decl.strip()
        if not decl:
            continue
        fm = re.fullmatch(r"(\w+)\s+(\w+)", decl)
        if not fm or fm.group(1) not in C_SCALARS:
            raise ValueError(f"struct {name}: cannot read field {decl!r}")
        fields.append((fm.group(2), C_SCALARS[fm.group(1)]))
    return fields


def natural_layout(fields: List[Tuple[str, str]]) -> Tuple[List[Tuple[int, str, str]], int]:
    """C's layout with natural alignment: [(offset, type, field)] and the padded size."""
    off, out, align = 0, [], 1
    for name, t in fields:
        size = SIZES[t]
        off = -(-off // size) * size
        out.append((off, t, name))
        off += size
        align = max(align, size)
    return out, -(-off // align) * align


def parse_static_offsets(text: str, struct: str) -> Dict[str, int]:
    return {f: int(o) for f, o in re.findall(
        r"PYLLMC_STATIC_ASSERT\(\s*offsetof\(\s*" + struct + r"\s*,\s*(\w+)\s*\)\s*==\s*(\d+)", _strip_comments(text))}


def parse_static_size(text: str, struct: str) -> Optional[int]:
    m = re.search(r"PYLLMC_STATIC_ASSERT\(\s*sizeof\(\s*" + struct + r"\s*\)\s*==\s*(\d+)", _strip_comments(text))
    return int(m.group(1)) if m else None


def parse_status_names(text: str) -> Dict[str, str]:
    """The pyllmc_status_name helper's {enumerator: returned string}."""
    body = _strip_comments(text)
    m = re.search(r"pyllmc_status_name\s*\(.*?\{(.*?)\n\}", body, flags=re.S)
    if not m:
        raise ValueError("no pyllmc_status_name helper")
    return dict(re.findall(r"case\s+PYLLMC_(\w+)\s*:\s*return\s+\"(\w+)\"", m.group(1)))


# ---------------------------------------------------------------------- the comparison
def drift(text: str) -> List[str]:
    """Every difference between a header text and the host's table (empty = in sync)."""
    problems = []
    decls = parse_imports(text)
    by_name = {d.import_name: d for d in decls}
    if len(by_name) != len(decls):
        problems.append("an import is declared twice")
    if list(by_name) != list(abi.FUNCTIONS):
        missing = [n for n in abi.FUNCTIONS if n not in by_name]
        extra = [n for n in by_name if n not in abi.FUNCTIONS]
        if missing or extra:
            problems.append(f"imports differ: missing {missing}, not in the host's table {extra}")
        else:
            problems.append("imports are declared in another order than the host's table")
    for name, sig in abi.FUNCTIONS.items():
        d = by_name.get(name)
        if d is None:
            continue
        if d.c_name != f"pyllmc_{name}":
            problems.append(f"{name}: C name is {d.c_name}, expected pyllmc_{name}")
        got = tuple((p.name, p.wasm) for p in d.params)
        if got != sig.params:
            problems.append(f"{name}: parameters {got} != host {sig.params}")
        if (d.result,) != tuple(sig.results):
            problems.append(f"{name}: result {d.result} != host {sig.results}")
        outs = {p.name: p.out_pointee for p in d.params if p.out_pointee is not None}
        host_outs = abi.OUT_PARAMS.get(name, {})
        if outs != host_outs:
            problems.append(f"{name}: output pointers {outs} != host {host_outs}")
    codes = parse_enum(text, "pyllmc_status_code", "PYLLMC_")
    if codes != abi.STATUS:
        problems.append(f"status codes {codes} != host {abi.STATUS}")
    names = parse_status_names(text)
    if any(k != v for k, v in names.items()) or set(names) != set(abi.STATUS):
        problems.append(f"pyllmc_status_name maps {names}, expected each code to its own name")
    states = {k.lower(): v for k, v in parse_enum(text, "pyllmc_job_state", "PYLLMC_JOB_").items()}
    if states != abi.JOB_STATE:
        problems.append(f"job states {states} != host {abi.JOB_STATE}")
    layout, size = natural_layout(parse_struct(text, "pyllmc_status"))
    if tuple(layout) != abi.STATUS_STRUCT or size != abi.STATUS_STRUCT_SIZE:
        problems.append(f"pyllmc_status layout {layout} (size {size}) != host {abi.STATUS_STRUCT} "
                        f"(size {abi.STATUS_STRUCT_SIZE})")
    pinned = parse_static_offsets(text, "pyllmc_status")
    if pinned != {f: o for o, _, f in abi.STATUS_STRUCT}:
        problems.append(f"the header's static asserts pin {pinned}, host {abi.STATUS_STRUCT}")
    if parse_static_size(text, "pyllmc_status") != abi.STATUS_STRUCT_SIZE:
        problems.append("the header's static assert on sizeof(pyllmc_status) differs from the host's size")
    cfg = parse_struct(text, "pyllmc_model_config")
    if tuple(f for f, _ in cfg) != abi.MODEL_CONFIG_FIELDS or {t for _, t in cfg} != {"i32"}:
        problems.append(f"pyllmc_model_config {cfg} != host {abi.MODEL_CONFIG_FIELDS} (all i32)")
    marker = "additions to ABI version 1"
    added = [d.import_name for d in parse_imports(text.split(marker, 1)[1])] if marker in text else None
    if added != list(abi.EXTENSIONS):
        problems.append(f"the header's section '{marker}' declares {added}, the host's additions are "
                        f"{list(abi.EXTENSIONS)}")
    m = re.search(r"#define\s+PYLLMC_ABI_VERSION\s+(\d+)", text)
    if not m or int(m.group(1)) != abi.ABI_VERSION:
        problems.append(f"PYLLMC_ABI_VERSION is {m and m.group(1)}, host {abi.ABI_VERSION}")
    return problems


@pytest.fixture(scope="module")
def header() -> str:
    return HEADER.read_text()


def test_header_matches_host_table(header):
    decls = parse_imports(header)
    # version 1's 21 functions, then the host's additions
    assert len(decls) == len(abi.FUNCTIONS) == 21 + len(abi.EXTENSIONS)
    assert drift(header) == []


def test_every_import_carries_the_pyllmc_attributes(header):
    # the macro is what turns a declaration into an import of module "pyllmc" under its ABI name
    m = re.search(r"#define\s+PYLLMC_IMPORT\(name\)\s+(.*)", header)
    assert m and 'import_module("pyllmc")' in m.group(1) and "import_name(#name)" in m.group(1)
    assert abi.IMPORT_MODULE == "pyllmc"
    # no import declared without the macro
    protos = re.findall(r"^\s*int32_t\s+pyllmc_\w+\s*\(", _strip_comments(header), flags=re.M)
    assert protos == []


MUTATIONS = [
    ("a parameter's type", "int64_t seed, int32_t *out_model", "int32_t seed, int32_t *out_model"),
    ("a parameter dropped", "int32_t timeout_ms", "void"),
    ("an import renamed", "PYLLMC_IMPORT(job_stop)", "PYLLMC_IMPORT(job_halt)"),
    ("an import removed", "PYLLMC_IMPORT(job_free) int32_t pyllmc_job_free(int32_t job);", ""),
    ("an output pointer made const", "(int32_t model, int64_t *out)", "(int32_t model, const int64_t *out)"),
    ("an output's pointee type", "int32_t *out_job)", "int64_t *out_job)"),
    ("a float parameter as double", "float lr, float *out_loss", "double lr, float *out_loss"),
    ("a status code renumbered", "PYLLMC_LIMIT_EXCEEDED = 8", "PYLLMC_LIMIT_EXCEEDED = 9"),
    ("a status name misspelt", 'return "BAD_STATE"', 'return "BADSTATE"'),
    ("a job state renumbered", "PYLLMC_JOB_FAILED = 3", "PYLLMC_JOB_FAILED = 4"),
    ("two status fields swapped", "float lr;\n    float grad_norm;", "float grad_norm;\n    float lr;"),
    ("a status field widened", "int32_t error;", "int64_t error;"),
    ("a static assert moved", "elapsed_s) == 40", "elapsed_s) == 44"),
    ("a config field reordered", "int32_t num_layers;\n    int32_t num_heads;",
     "int32_t num_heads;\n    int32_t num_layers;"),
    ("an addition declared among version 1's functions",
     "/* ------------------------------------------------------------------ additions to ABI version 1 */",
     "/* (the host's additions follow) */"),
    ("the version bumped", "#define PYLLMC_ABI_VERSION 1", "#define PYLLMC_ABI_VERSION 2"),
]


@pytest.mark.parametrize("what,old,new", MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_a_drifted_header_is_caught(header, what, old, new):
    assert header.count(old) == 1, f"mutation {what!r} no longer applies to the header"
    assert drift(header.replace(old, new)) != [], what


# ---------------------------------------------------------------------- compiled
def test_compiled_imports_equal_host_table(header, tmp_path):
    """A probe that calls every import compiles against the header with -Werror (its static
    asserts hold on the real compiler) and its import section is exactly the host's table."""
    build.need(build.c_toolchain_missing())
    try:
        import wasmtime
    except ImportError as e:
        build.need(f"wasmtime is not installed (pip install 'pyllmc[wasm]'): {e}")
    # 0 converts to every parameter type (NULL for pointers); the calls never run
    calls = [f"        r += {d.c_name}({', '.join('0' for _ in d.params)});" for d in parse_imports(header)]
    probe = tmp_path / "probe.c"
    probe.write_text('#include "pyllmc_guest.h"\n#include <stdio.h>\n'
                     "int main(int argc, char **argv) {\n    (void)argv;\n    int32_t r = 0;\n"
                     "    if (argc > 1000) {\n" + "\n".join(calls) + "\n    }\n"
                     '    printf("%s %d\\n", pyllmc_status_name(r), (int)sizeof(pyllmc_status));\n    return 0;\n}\n')
    out = tmp_path / "probe.wasm"
    r = subprocess.run(build.c_command(probe, out), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    module = wasmtime.Module.from_file(wasmtime.Engine(), str(out))
    got = {}
    for imp in module.imports:
        if imp.module == abi.IMPORT_MODULE:
            got[imp.name] = (tuple(str(t) for t in imp.type.params), tuple(str(t) for t in imp.type.results))
    want = {n: (tuple(t for _, t in s.params), tuple(s.results)) for n, s in abi.FUNCTIONS.items()}
    assert got == want


HEADER_USER = '#include "pyllmc_guest.h"\nint first_letter(void) { return pyllmc_status_name(PYLLMC_OK)[0]; }\n'
MODES = {
    "wasm32 C11": ["clang", "--target=wasm32-wasi", "--sysroot=/usr", "-std=c11", "-x", "c"],
    "wasm32 C++11": ["clang++", "--target=wasm32-wasi", "--sysroot=/usr", "-std=c++11", "-x", "c++"],
    # not a guest: an editor's or a native tool's view of the header (PYLLMC_IMPORT is empty)
    "native C11": ["cc", "-std=c11", "-x", "c"],
}


def _syntax_check(mode, include_dir, tmp_path):
    import shutil

    cmd = MODES[mode]
    if shutil.which(cmd[0]) is None:
        build.need(f"no {cmd[0]} on PATH")
    if mode.startswith("wasm32"):
        build.need(build.c_toolchain_missing())
    src = tmp_path / "user.c"
    src.write_text(HEADER_USER)
    return subprocess.run([*cmd, "-Wall", "-Wextra", "-Wpedantic", "-Werror", "-fsyntax-only", "-I", str(include_dir),
                           str(src)], capture_output=True, text=True)


@pytest.mark.parametrize("mode", list(MODES))
def test_header_compiles_cleanly(mode, tmp_path):
    r = _syntax_check(mode, HEADER.parent, tmp_path)
    assert r.returncode == 0, r.stderr


def test_static_asserts_reject_a_wrong_layout(header, tmp_path):
    """On the real compiler: with two status fields swapped the header no longer compiles."""
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "pyllmc_guest.h").write_text(header.replace("float lr;\n    float grad_norm;", "float grad_norm;\n    float lr;"))
    r = _syntax_check("wasm32 C11", bad, tmp_path)
    assert r.returncode != 0 and "pyllmc_status.lr at 24" in r.stderr, r.stderr


# ---------------------------------------------------------------------- the Rust crate
RUST = ROOT / "bindings" / "guest" / "rust" / "src"
RUST_SCALARS = {"i32": "i32", "i64": "i64", "f32": "f32", "f64": "f64"}
RUST_POINTEES = {"u8": "u8[cap]", "i32": "i32", "i64": "i64", "f32": "f32", "RawStatus": "pyllmc_status"}


def parse_rust_imports(text: str) -> List[Decl]:
    """The `pub fn name(params) -> i32;` declarations of sys.rs's `imports!` block, in order."""
    block = re.search(r"^imports! \{(.*?)^\}", text, flags=re.M | re.S)
    if not block:
        raise ValueError("sys.rs has no imports! block")
    body = re.sub(r"//[^\n]*", " ", block.group(1))
    decls = []
    for name, params, result in re.findall(r"pub fn (\w+)\(([^)]*)\)\s*->\s*(\w+);", body):
        raw = [p.strip() for p in params.split(",") if p.strip()]
        has_cap = any(p.startswith("cap:") for p in raw)
        out = []
        for p in raw:
            m = re.fullmatch(r"(\w+):\s*(\*(mut|const)\s+)?(\w+)", p)
            if not m:
                raise ValueError(f"{name}: cannot read parameter {p!r}")
            pname, ptr, mut, base = m.groups()
            if ptr:
                pointee = None
                if mut == "mut":
                    pointee = "i32[cap]" if base == "i32" and has_cap and pname not in ("out_n", "out_len") \
                        else RUST_POINTEES.get(base, base)
                out.append(Param(pname, f"*{mut} {base}", "i32", pointee))
            else:
                if base not in RUST_SCALARS:
                    raise ValueError(f"{name}: parameter {pname} has type {base}, which has no wasm form")
                out.append(Param(pname, base, RUST_SCALARS[base], None))
        decls.append(Decl(name, name, RUST_SCALARS.get(result, result), tuple(out)))
    return decls


def parse_rust_struct(text: str, name: str) -> List[Tuple[str, str]]:
    m = re.search(r"pub struct " + name + r" \{(.*?)\}", text, flags=re.S)
    if not m:
        raise ValueError(f"no struct {name}")
    return [(f, RUST_SCALARS[t]) for f, t in re.findall(r"pub (\w+):\s*(\w+),", m.group(1))]


def rust_codes(text: str, enum: str) -> Dict[str, int]:
    """{ABI name: code} of a Rust enum from its from_code arms and name() arms."""
    block = re.search(r"impl " + enum + r" \{(.*?)^\}", text, flags=re.M | re.S).group(1)
    from_code = re.search(r"fn from_code.*?\{(.*?)\n    \}", block, flags=re.S).group(1)
    names = re.search(r"fn name.*?\{(.*?)\n    \}", block, flags=re.S).group(1)
    by_variant = {v: int(c) for c, v in re.findall(r"(\d+) => " + enum + r"::(\w+),", from_code)}
    return {n: by_variant[v] for v, n in re.findall(enum + r"::(\w+) => \"(\w+)\",", names) if v in by_variant}


def rust_drift(sys_rs: str, status_rs: str) -> List[str]:
    problems = []
    decls = parse_rust_imports(sys_rs)
    got = {d.import_name: d for d in decls}
    if list(got) != list(abi.FUNCTIONS):
        problems.append(f"sys.rs declares {list(got)}, the host {list(abi.FUNCTIONS)}")
    for name, sig in abi.FUNCTIONS.items():
        d = got.get(name)
        if d is None:
            continue
        params = tuple((p.name, p.wasm) for p in d.params)
        if params != sig.params or (d.result,) != tuple(sig.results):
            problems.append(f"{name}: sys.rs {params} -> {d.result}, host {sig.params} -> {sig.results}")
        outs = {p.name: p.out_pointee for p in d.params if p.out_pointee is not None}
        if outs != abi.OUT_PARAMS.get(name, {}):
            problems.append(f"{name}: output pointers {outs} != host {abi.OUT_PARAMS.get(name, {})}")
    marker = "additions to version 1"
    added = [d.import_name for d in parse_rust_imports("imports! {\n" + sys_rs.split(marker, 1)[1])] \
        if marker in sys_rs else None
    if added != list(abi.EXTENSIONS):
        problems.append(f"sys.rs's additions {added} != host {list(abi.EXTENSIONS)}")
    layout, size = natural_layout(parse_rust_struct(sys_rs, "RawStatus"))
    if tuple(layout) != abi.STATUS_STRUCT or size != abi.STATUS_STRUCT_SIZE:
        problems.append(f"RawStatus {layout} != host {abi.STATUS_STRUCT}")
    cfg = parse_rust_struct(sys_rs, "RawModelConfig")
    if tuple(f for f, _ in cfg) != abi.MODEL_CONFIG_FIELDS or {t for _, t in cfg} != {"i32"}:
        problems.append(f"RawModelConfig {cfg} != host {abi.MODEL_CONFIG_FIELDS}")
    if rust_codes(status_rs, "Status") != abi.STATUS:
        problems.append(f"Status {rust_codes(status_rs, 'Status')} != host {abi.STATUS}")
    if rust_codes(status_rs, "JobState") != abi.JOB_STATE:
        problems.append(f"JobState {rust_codes(status_rs, 'JobState')} != host {abi.JOB_STATE}")
    m = re.search(r"pub const ABI_VERSION: i32 = (\d+);", (RUST / "lib.rs").read_text())
    if not m or int(m.group(1)) != abi.ABI_VERSION:
        problems.append("lib.rs's ABI_VERSION differs from the host's")
    return problems


@pytest.fixture(scope="module")
def rust_sources() -> Tuple[str, str]:
    return (RUST / "sys.rs").read_text(), (RUST / "status.rs").read_text()


def test_rust_crate_matches_host_table(rust_sources):
    assert len(parse_rust_imports(rust_sources[0])) == len(abi.FUNCTIONS)
    assert rust_drift(*rust_sources) == []


RUST_MUTATIONS = [
    ("sys.rs", "a seed as i32", "seed: i64, out_model", "seed: i32, out_model"),
    ("sys.rs", "an output pointer made const", "out_job: *mut i32", "out_job: *const i32"),
    ("sys.rs", "an import removed", "    pub fn job_stop(job: i32) -> i32;\n", ""),
    ("sys.rs", "lr as f64", "lr: f32, out_loss", "lr: f64, out_loss"),
    ("sys.rs", "status fields swapped", "pub loss: f32,\n    pub val_loss: f32,", "pub val_loss: f32,\n    pub loss: f32,"),
    ("sys.rs", "elapsed_s narrowed", "pub elapsed_s: f64,", "pub elapsed_s: f32,"),
    ("status.rs", "a code renumbered", "8 => Status::LimitExceeded,", "9 => Status::LimitExceeded,"),
    ("status.rs", "a name misspelt", 'Status::PermissionDenied => "PERMISSION_DENIED",',
     'Status::PermissionDenied => "PERMISSION",'),
    ("status.rs", "a job state renumbered", "2 => JobState::Stopped,", "4 => JobState::Stopped,"),
]


@pytest.mark.parametrize("where,what,old,new", RUST_MUTATIONS, ids=[m[1] for m in RUST_MUTATIONS])
def test_a_drifted_rust_crate_is_caught(rust_sources, where, what, old, new):
    sys_rs, status_rs = rust_sources
    src = sys_rs if where == "sys.rs" else status_rs
    assert src.count(old) == 1, f"mutation {what!r} no longer applies to {where}"
    mutated = src.replace(old, new)
    args = (mutated, status_rs) if where == "sys.rs" else (sys_rs, mutated)
    assert rust_drift(*args) != [], what
