"""The benchmark suite (pyllmc.bench, `pyllmc bench`): shapes and FLOPs, statistics, the compact
PyTorch GPT-2 against Hugging Face, the worker protocol, the bench.json contract of DESIGN.md,
the llm.c comparison (with a stand-in binary) and the C drivers (slow)."""

from __future__ import annotations

import json
import math
import os
import stat
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from pyllmc.bench import external, impls, kernels, report, stats
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
    (tmp_path / "hf" / "config.json").write_text(json.dumps({"vocab_size": 500, "n_layer": 2, "n_embd": 32, "n_head": 2, "n_positions": 64}))
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
    steps = interleaved([Job("c-core", shape, 2, 16, 1, warmup=1, repeats=0)], rounds=2, timeout=300)
    assert len(steps["c-core"]) == 2


def test_cli_bench_json_contract(tmp_path):
    """`pyllmc bench --model M --batch B --seq T --threads N --out DIR` writes DIR/bench.json per DESIGN.md."""
    out = tmp_path / "b"
    p = subprocess.run(
        [sys.executable, "-m", "pyllmc", "bench", "--model", TINY, "--batch", "2", "--seq", "16", "--threads", "1",
         "--out", str(out), "--impls", "c-core,torch-compact-fused", "--quick", "--no-kernels", "--warmup", "1"],
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


@pytest.mark.parametrize("argv, msg", [
    (["--model", "nope"], "not a size descriptor"),
    (["--model", "d2", "--impls", "c-core,bogus"], "unknown implementation"),
    (["--model", "d2", "--batch", "0"], "--batch"),
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
    t = {"kernels": [{"name": "matmul_forward.fc", "ms_min": 8.0, "ms_median": 9.0}, {"name": "gelu_forward", "ms_min": 2.0, "ms_median": 2.0},
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


@pytest.mark.slow
def test_c_drivers_build_and_run():
    from pyllmc.bench import cdriver

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
