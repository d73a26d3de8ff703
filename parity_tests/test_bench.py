"""The benchmark suite (pyllmc.bench, `pyllmc bench`): shapes and FLOPs, statistics, the compact
PyTorch GPT-2 against Hugging Face, the worker protocol, the bench.json contract of docs/design.md,
the llm.c comparison (with a stand-in binary), the C drivers, and the gate (pyllmc.bench.gate):
its decision rules on made-up numbers, and end to end on a tiny model that it must fail
when a kernel is deliberately slowed (the real gate config: slow-marked)."""

from __future__ import annotations

import json
import math
import stat
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from pyllmc.bench import cdriver, external, gate, impls, kernels, report, stats
from pyllmc.bench.spec import Job, Shape, SpecError, parse_model

ROOT = Path(__file__).resolve().parents[1]
TINY = "L1-C32-NH2"  # one layer, 32 channels, GPT-2 vocabulary: a step takes milliseconds
CONTRACT = {"impl": str, "ms_min": float, "ms_median": float, "tokens_per_s": float, "peak_rss_mb": float, "mfu": float}


def test_d12_shape_and_flops():
    s = parse_model("d12")
    assert (s.num_layers, s.channels, s.num_heads, s.vocab_size, s.padded_vocab_size) == (12, 768, 12, 50257, 50304)
    assert s.num_params == 124_475_904
    f = s.flops_per_step(4, 64)
    assert f == 6 * 124_475_904 * 256 + 12 * 12 * 4 * 64 * 64 * 768
    assert 191e9 < f < 194e9  # issue 6: "a 124M step at this size is about 191 GFLOP" (+ attention)


def test_model_specs(tmp_path):
    assert parse_model("tiny").num_layers == 2
    s = parse_model("L3-C96-NH3")
    assert (s.num_layers, s.channels, s.num_heads) == (3, 96, 3)
    assert parse_model("d24").channels == 1024
    ck = tmp_path / "m.bin"
    ck.write_bytes(struct.pack("<256i", *([20240326, 3, 128, 1000, 2, 4, 64, 1024] + [0] * 248)))
    s = parse_model(str(ck))
    assert (s.max_seq_len, s.vocab_size, s.num_layers, s.num_heads, s.channels, s.padded_vocab_size) == (128, 1000, 2, 4, 64, 1024)
    (tmp_path / "hf").mkdir()
    hf_config = {"vocab_size": 500, "n_layer": 2, "n_embd": 32, "n_head": 2, "n_positions": 64}
    (tmp_path / "hf" / "config.json").write_text(json.dumps(hf_config))
    assert parse_model(str(tmp_path / "hf")).padded_vocab_size == 512
    for bad in ("nope", "d0", "L2-C30-NH4", str(tmp_path / "missing.bin")):
        with pytest.raises(SpecError):
            parse_model(bad)
    (tmp_path / "bad.bin").write_bytes(b"\0" * 1024)
    with pytest.raises(SpecError, match="bad magic"):
        parse_model(str(tmp_path / "bad.bin"))


def test_stats():
    s = stats.summarize([{"forward": 0.1, "backward": 0.2}, {"forward": 0.3, "backward": 0.1}, {"forward": 0.1, "backward": 0.1}])
    assert s["ms_min"] == pytest.approx(200.0) and s["ms_median"] == pytest.approx(300.0)
    assert s["phases"]["forward"]["ms_min"] == pytest.approx(100.0)
    xs = [32, 64, 128, 256]
    fit = stats.fit_power(xs, [3e-4 * x**2 for x in xs])
    assert fit["exponent"] == pytest.approx(2.0) and fit["r2"] == pytest.approx(1.0)
    lq = stats.fit_linear_quadratic(xs, [2.0 * x + 0.01 * x * x for x in xs])
    assert lq["linear"] == pytest.approx(2.0) and lq["quadratic"] == pytest.approx(0.01)
    assert 0 < lq["quadratic_share_at_max"] < 1
    assert stats.fit_power([1], [1]) is None


def test_compact_gpt2_matches_hugging_face():
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import torch.nn.functional as F

    from pyllmc.bench.torch_gpt2 import CompactGPT2

    shape = Shape("t", 2, 32, 4, vocab_size=97, max_seq_len=16)
    job = Job("torch-hf-eager-foreach", shape, 2, 8, 1)
    hf = impls._hf_model(job, "eager").eval()
    compact = CompactGPT2(2, 32, 4, 97, 16).load_hf_state(hf).eval()
    x, y = (torch.from_numpy(a) for a in impls.batch(job))
    with torch.no_grad():
        ref = F.cross_entropy(hf(input_ids=x).logits.reshape(-1, 97), y.reshape(-1))
        got = compact(x, y)
    assert float(got) == pytest.approx(float(ref), rel=1e-5)
    assert compact.lm_head.weight is compact.wte.weight


def test_impl_names():
    assert impls.is_torch_eager("torch-compact-fused") and not impls.is_torch_eager("torch-compact-fused-compile")
    assert impls.known("c-core") and not impls.known("torch-foo-fused")
    rows = [{"impl": "c-core", "ms_median": 1.0}, {"impl": "torch-hf-eager-foreach", "ms_median": 5.0},
            {"impl": "torch-compact-fused", "ms_median": 3.0}, {"impl": "torch-compact-fused-compile", "ms_median": 2.0}]
    assert impls.best_torch_eager(rows)["impl"] == "torch-compact-fused"


def test_worker_runs_each_kind_in_its_own_process():
    from pyllmc.bench.procs import Skipped, interleaved, run_job

    shape = parse_model(TINY)
    r = run_job(Job("c-core", shape, 2, 16, 1, warmup=1, repeats=2), timeout=300)
    assert len(r["steps"]) == 2 and set(r["steps"][0]) == {"forward", "backward", "update"}
    assert r["peak_rss_mb"] > 0 and all(math.isfinite(l) for l in r["losses"])
    assert "torch" not in r["info"]  # the C core's process never imports torch
    with pytest.raises(Skipped, match="unknown implementation|does not run"):
        run_job(Job("llmc-bin", shape, 2, 16, 1), timeout=300)
    steps, info = interleaved([Job("c-core", shape, 2, 16, 1, warmup=1, repeats=0)], rounds=2, timeout=300)
    assert len(steps["c-core"]) == 2 and info["c-core"]["library"]


def test_cli_bench_json_contract(tmp_path):
    """`pyllmc bench --model M --batch B --seq T --threads N --out DIR` writes DIR/bench.json per docs/design.md."""
    out = tmp_path / "b"
    p = subprocess.run(
        [sys.executable, "-m", "pyllmc", "bench", "--model", TINY, "--batch", "2", "--seq", "16", "--threads", "1",
         "--out", str(out), "--impls", "c-core,torch-compact-fused", "--quick", "--no-kernels", "--warmup", "1",
         "--src", str(ROOT)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    doc = json.loads((out / "bench.json").read_text())
    impl_names = [r["impl"] for r in doc["results"]]
    assert impl_names == ["c-core", "torch-compact-fused"]
    for r in doc["results"]:
        for key, typ in CONTRACT.items():
            assert isinstance(r[key], typ), (key, r[key])
        assert r["ms_min"] <= r["ms_median"] and 0 < r["mfu"] < 1.5 and r["peak_rss_mb"] > 10
        assert (r["model"], r["batch"], r["seq"], r["threads"]) == (TINY, 2, 16, 1)
    assert doc["peak"]["1"]["gflops"] > 0
    assert any(s["impl"] == "llmc-bin" for s in doc["skipped"])
    assert doc["summary"][0]["ratio_vs_best_torch_eager_median"] > 0
    assert "| c-core |" in (out / "report.md").read_text()
    assert (out / "step_time.png").stat().st_size > 1000
    assert doc["peak"]["1"]["fma_gflops"] > 0 and set(doc["peak"]["1"]["probes"]) == {"start", "end"}
    # --render redraws report and plots from the JSON alone
    again = tmp_path / "again"
    p = subprocess.run([sys.executable, "-m", "pyllmc", "bench", "--render", str(out / "bench.json"), "--out", str(again),
                        "--no-plots"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    row = next(l for l in (out / "report.md").read_text().splitlines() if l.startswith("| c-core |"))
    assert row in (again / "report.md").read_text()


@pytest.mark.parametrize("argv, msg", [
    (["--model", "nope"], "not a size descriptor"),
    (["--model", "d2", "--impls", "c-core,bogus"], "unknown implementation"),
    (["--model", "d2", "--batch", "0"], "--batch"),
    (["--model", "d2", "--threads", "1,x"], "--threads"),
    (["--model", "d2", "--src", "/nonexistent/tree"], "not a pyllmc source tree"),
    (["--render", "/nonexistent/bench.json"], "bench.json"),
    ([], "--model is required"),
])  # fmt: skip
def test_cli_bench_bad_input(argv, msg):
    p = subprocess.run([sys.executable, "-m", "pyllmc", "bench", *argv], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert msg in p.stderr and "Traceback" not in p.stderr


def test_kernel_join_and_report():
    c = {"isa": "x", "kernels": [
        {"name": "matmul_forward.fc", "group": "matmul_fwd", "calls_per_step": 12, "flops": 2e9, "ms_min": 10.0, "ms_median": 11.0},
        {"name": "gelu_forward", "group": "gelu", "calls_per_step": 12, "flops": 0, "ms_min": 1.0, "ms_median": 1.2}]}
    t = {"kernels": [{"name": "matmul_forward.fc", "ms_min": 8.0, "ms_median": 9.0},
                     {"name": "gelu_forward", "ms_min": 2.0, "ms_median": 2.0},
                     {"name": "adamw_update", "ms_min": 50.0, "ms_median": 51.0}]}  # fmt: skip
    rows = kernels.join(c, t, num_layers=12)
    fc = next(r for r in rows if r["name"] == "matmul_forward.fc")
    assert fc["c_vs_torch"] == pytest.approx(1.25) and fc["c_ms_per_step"] == pytest.approx(120.0)
    assert fc["c_gflops"] == pytest.approx(200.0)
    adam = next(r for r in rows if r["name"] == "adamw_update")
    assert adam["calls_per_step"] == 1 and adam["group"] == "adamw"
    assert kernels.by_group(rows, "torch") == {"matmul_fwd": 96.0, "gelu": 24.0, "adamw": 50.0}
    assert kernels.calls_per_step("layernorm_backward", 12) == 25
    doc = {"results": [], "kernels": [{"model": "d12", "batch": 4, "seq": 64, "threads": 2, "isa": "x", "rows": rows,
                                       "c_ms_per_step": kernels.by_group(rows, "c"), "torch_ms_per_step": kernels.by_group(rows, "torch")}]}
    md = report.markdown(doc)
    assert "matmul_forward.fc" in md and "**sum**" in md


def _fake_llmc(path: Path, lines) -> Path:
    body = "\n".join(f"echo '{l}'" for l in lines)
    path.write_text("#!/bin/sh\n"
                    "test -f gpt2_124M.bin && test -f data/tiny_shakespeare_train.bin && "
                    "test -f dev/data/tinyshakespeare/tiny_shakespeare_val.bin || { echo missing files; exit 3; }\n"
                    f"{body}\nsleep 30\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def test_llmc_bin_comparison_parses_steps(tmp_path, monkeypatch):
    # a stand-in for llm.c's train_gpt2 (nothing of llm.c is in the repo); the checkpoint it
    # would read is replaced by a small file to keep the test fast
    monkeypatch.setattr(external, "write_checkpoint", lambda p, shape, seed=0: Path(p).write_bytes(b"x"))
    lines = ["val loss 10.9", "step 0: train loss 10.9 (took 4300.5 ms)", "step 1: train loss 10.5 (took 4200.0 ms)",
             "step 2: train loss 10.1 (took 4100.25 ms)", "step 3: train loss 9.9 (took 4250.0 ms)"]
    exe = _fake_llmc(tmp_path / "train_gpt2", lines)
    d12 = parse_model("d12")
    r = external.run(str(exe), d12, 4, 64, 1, warmup=1, repeats=3, timeout=60)
    assert r["warmup_ms"] == [4300.5] and r["steps_ms"] == [4200.0, 4100.25, 4250.0]
    assert r["losses"][:2] == [10.9, 10.5]
    assert "d12" in external.applicable(parse_model("d6"), 4, 64) and external.applicable(d12, 4, 64) == ""
    from pyllmc.bench.procs import Skipped

    with pytest.raises(Skipped, match="exited 3|missing"):
        bad = tmp_path / "bad"
        bad.write_text("#!/bin/sh\necho missing files\nexit 3\n")
        bad.chmod(0o755)
        external.run(str(bad), d12, 4, 64, 1, warmup=1, repeats=1, timeout=60)


def test_c_drivers_build_and_run():
    """The C drivers build from the current sources (bench_kernels calls internal kernels, so
    a changed kernel signature must be followed there) and report sane numbers."""
    try:
        cdriver.compiler()
    except cdriver.DriverError as e:
        pytest.skip(str(e))
    src = cdriver.find_source(str(ROOT))
    shape = parse_model(TINY)
    r = cdriver.run_step(cdriver.build("bench_step", src), shape, 2, 16, 1, 1, 2)
    assert len(r["steps"]) == 2 and r["peak_rss_mb"] > 0
    k = cdriver.run_kernels(cdriver.build("bench_kernels", src), shape, 2, 16, 1, 2)
    names = [x["name"] for x in k["kernels"]]
    assert "attention_backward" in names and "adamw_update" in names
    assert all(x["ms_min"] >= 0 for x in k["kernels"])
    g = cdriver.run_gemm(cdriver.build("bench_kernels", src), 128, 1, 2)
    assert g["gflops"] > 0
    f = cdriver.run_fma(cdriver.build("bench_kernels", src), 1, 1)
    assert f["isa"] in ("avx512", "avx2", "none") and (f["gflops"] is None or f["gflops"] > 1)


# ---------------------------------------------------------------------------- the gate


def _attempt(c_ms, t_ms):
    return {"c_ms": c_ms, "torch_ms": t_ms, **gate.ratio_stats(c_ms, t_ms)}


def test_gate_ratio_rules():
    st = gate.ratio_stats([100, 110, 300], [200, 220, 100])
    assert st["ratio_of_mins"] == pytest.approx(1.0) and st["median_paired_ratio"] == pytest.approx(0.5)
    assert st["statistic"] == pytest.approx(0.5) and st["spread"] == pytest.approx(1.0)
    quiet_fast = _attempt([80, 81, 82], [100, 101, 100])      # clean, ratio 0.8
    quiet_slow = _attempt([150, 151, 150], [100, 102, 101])   # clean, ratio 1.5
    busy_slow = _attempt([150, 400, 420], [100, 300, 90])     # disturbed: not evidence either way
    rule = dict(max_ratio=1.1, max_spread=0.15, confirm=2)
    assert gate.ratio_verdict([quiet_fast], **rule) == "pass"
    assert gate.ratio_verdict([quiet_slow], **rule) is None  # one clean failure is confirmed first
    assert gate.ratio_verdict([quiet_slow, quiet_slow], **rule) == "fail"
    assert gate.ratio_verdict([busy_slow, busy_slow, busy_slow], **rule) is None
    assert gate.ratio_verdict([busy_slow, quiet_slow, busy_slow, quiet_slow], **rule) == "fail"
    assert gate.pooled_stats([quiet_fast, busy_slow])["ratio_of_mins"] == pytest.approx(80 / 90)


def test_gate_ratio_limit_follows_the_gemm_path():
    cfg = {"max_ratio": 1.0, "max_ratio_by_gemm": {"avx2": 1.5}}
    assert gate.ratio_limit(cfg, "avx512") == 1.0
    assert gate.ratio_limit(cfg, "avx2") == 1.5
    assert gate.ratio_limit({"max_ratio": 0.9}, "avx2") == 0.9
    # the committed config: the AVX-512 limit is still 1.0, and this CPU's path is one it knows
    real = gate.load_config(ROOT / "benchmarks" / "gate" / "gate.json")["ratio"]
    assert real["max_ratio"] == 1.0 and set(real["max_ratio_by_gemm"]) <= {"avx2", "generic"}


CALLGRIND_OUT = """version: 1
creator: callgrind-3.19.0
positions: line
events: Ir
summary: 0

ob=(1) /x/bench_step
fl=(1) ???
fn=(1) bench_counted_steps
0 5
cfn=(2) ukernel_avx2
calls=2 0
0 1000
fn=(2)
0 600
+3 400
fn=(3) gelu_range.avx2
0 50
cfn=(2)
calls=1 0
0 7
fn=(1)
0 2
totals: 1057
"""


def test_parse_callgrind_self_costs():
    total, funcs = gate.parse_callgrind(CALLGRIND_OUT)
    # the cost lines after calls= are inclusive costs of the callee, not the caller's own
    assert total == 1057 and funcs == {"bench_counted_steps": 7, "ukernel_avx2": 1000, "gelu_range.avx2": 50}
    assert gate.dispatch_of(funcs) == ["clones:avx2", "gemm:avx2"]
    assert gate.dispatch_of({"ukernel_avx512": 1, "softmax.default": 1}) == ["clones:default", "gemm:avx512"]


def test_compare_callgrind_rules():
    env = {"compiler": "gcc 12", "cflags": "-O3", "valgrind": "valgrind-3.19.0", "gemm_isa_forced": "avx2",
           "dispatch": ["clones:avx2", "gemm:avx2"], "sources": "aaaa"}
    base = {"instructions": 1_000_000, "environment": dict(env), "sources": "aaaa", "recorded": "2026-01-01"}
    ok = gate.compare_callgrind(1_029_000, env, base, 0.03)
    assert ok["status"] == "pass" and ok["passed"] and ok["change"] == pytest.approx(0.029)
    bad = gate.compare_callgrind(1_031_000, dict(env, sources="bbbb"), base, 0.03)
    assert bad["status"] == "fail" and not bad["passed"]
    assert "--update-baseline" in bad["message"] and "sources changed" in bad["message"]
    assert gate.compare_callgrind(500_000, env, base, 0.03)["passed"]  # faster always passes
    other = gate.compare_callgrind(1_000_000, dict(env, compiler="gcc 13"), base, 0.03)
    assert other["status"] == "env-mismatch" and "compiler" in other["message"] and "--update-baseline" in other["message"]
    wider = gate.compare_callgrind(1_000_000, dict(env, dispatch=["clones:avx512f", "gemm:avx2"]), base, 0.03)
    assert wider["status"] == "env-mismatch" and "dispatch" in wider["differs"]
    assert gate.compare_callgrind(1, env, {}, 0.03)["status"] == "no-baseline"


def test_bench_builds_use_the_library_flags():
    """The drivers are CMake targets linked from libllmc's own objects: every core source is
    compiled once (for the library and the drivers alike), with the library's optimisation
    flags, and the gate records those flags from the build itself."""
    try:
        cdriver.compiler()
        cdriver.build("bench_step", ROOT)
    except cdriver.DriverError as e:
        pytest.skip(str(e))
    commands = json.loads((ROOT / cdriver.BUILD_DIR / "compile_commands.json").read_text())
    core = [c["file"] for c in commands if Path(c["file"]).parent == ROOT / "core_c" / "src"]
    assert sorted(core) == sorted(str(p) for p in (ROOT / "core_c" / "src").glob("*.c"))
    flags = cdriver.build_flags(ROOT)
    assert "-O3" in flags["cflags"].split() and "-fno-math-errno" in flags["cflags"].split()
    assert "-fno-trapping-math" in flags["cflags"].split()  # else the AVX2 clones' exps run scalar
    assert not any(f.startswith(("-W", "-I")) for f in flags["cflags"].split()), flags
    assert flags["compiler"]


TINY_GATE = {
    "ratio": {"model": TINY, "batch": 1, "seq": 16, "threads": 1, "versus": "torch-compact-fused", "warmup": 1,
              "rounds": 3, "max_ratio": 100.0},
    "callgrind": {"config": {"name": "tiny", "num_layers": 1, "channels": 64, "num_heads": 2, "vocab_size": 256,
                             "padded_vocab_size": 256, "max_seq_len": 32, "batch": 1, "seq": 32, "warmup": 0, "steps": 1},
                  "gemm_isa": "avx2", "max_increase": 0.03},
}  # fmt: skip


def _gate(*args, cwd):
    p = subprocess.run([sys.executable, "-m", "pyllmc.bench.gate", "--src", str(ROOT), *args],
                       capture_output=True, text=True, timeout=900, cwd=cwd)
    return p.returncode, p.stderr


def _need_gate_tools():
    import shutil

    if not shutil.which("valgrind"):
        pytest.skip("valgrind is not installed (the callgrind gate needs it)")
    try:
        cdriver.compiler()
    except cdriver.DriverError as e:
        pytest.skip(str(e))


def test_gate_callgrind_fails_on_a_slowed_kernel(tmp_path):
    """End to end on a tiny model (seconds): record a baseline, pass against it, fail on the
    GELU kernel made 4x slower (--slow gelu), stop with exit 2 on a baseline from another
    toolchain."""
    _need_gate_tools()
    cfg = tmp_path / "gate.json"
    cfg.write_text(json.dumps(TINY_GATE))
    common = ["--config", str(cfg), "--skip-ratio", "--out", str(tmp_path / "out")]
    rc, err = _gate(*common, cwd=tmp_path)
    assert rc == 2 and "no callgrind baseline" in err
    rc, err = _gate(*common, "--update-baseline", cwd=tmp_path)
    assert rc == 0, err
    base = json.loads(cfg.read_text())["callgrind"]["baseline"]
    assert base["instructions"] > 0 and "gemm:avx2" in base["environment"]["dispatch"]
    rc, err = _gate(*common, cwd=tmp_path)
    assert rc == 0 and "pass" in err, err
    rc, err = _gate(*common, "--slow", "gelu", cwd=tmp_path)
    assert rc == 1, err
    assert "FAIL" in err and "gelu_range" in err and "--update-baseline" in err
    doc = json.loads((tmp_path / "out" / "gate.json").read_text())
    assert doc["passed"] is False and doc["checks"][0]["change"] > 0.03
    rc, err = _gate(*common, "--slow", "gelu", "--update-baseline", cwd=tmp_path)
    assert rc == 2 and "refusing" in err
    d = json.loads(cfg.read_text())
    d["callgrind"]["baseline"]["environment"]["compiler"] = "some other cc 1.0"
    cfg.write_text(json.dumps(d))
    rc, err = _gate(*common, cwd=tmp_path)
    assert rc == 2 and "another environment" in err and "compiler" in err


def test_gate_bad_config(tmp_path):
    cfg = tmp_path / "gate.json"
    cfg.write_text(json.dumps({"ratio": {"model": "d2"}, "callgrind": TINY_GATE["callgrind"]}))
    rc, err = _gate("--config", str(cfg), "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert rc == 2 and "lacks" in err and "Traceback" not in err
    rc, err = _gate("--config", str(tmp_path / "none.json"), cwd=tmp_path)
    assert rc == 2 and "cannot read" in err


@pytest.mark.slow
def test_real_gate_passes_on_main_and_fails_on_slowed_matmul(tmp_path):
    """The gate as CI runs it (benchmarks/gate/gate.json): passes on these sources (needs a
    baseline recorded for them: after a deliberate change run --update-baseline), and fails,
    in both checks, when every Linear layer does its work 3 times (--slow matmul)."""
    _need_gate_tools()
    pytest.importorskip("torch")
    rc, err = _gate("--out", str(tmp_path / "main"), cwd=tmp_path)
    assert rc == 0, err
    rc, err = _gate("--slow", "matmul", "--out", str(tmp_path / "slow"), cwd=tmp_path)
    assert rc == 1, err
    doc = json.loads((tmp_path / "slow" / "gate.json").read_text())
    assert [c["passed"] for c in doc["checks"]] == [False, False], err
