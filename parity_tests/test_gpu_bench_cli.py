"""The CPU side of the GPU benchmark and of the GPU session script (benchmarks/gpu_bench.py,
benchmarks/gpu/run_all.sh): argument checks, the plan, the result files, the no-GPU exit.
Nothing here needs a GPU; the measurements themselves are UNVERIFIED until run on one."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks" / "gpu_bench.py"


def bench(*args):
    return subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=120)


def load_bench():
    spec = importlib.util.spec_from_file_location("gpu_bench", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_plan_lists_the_grid_in_the_order_given():
    p = bench("--plan", "--batches", "16,64", "--impls", "pyllmc-bf16,torch-compile-bf16", "--steps", "4")
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == [
        "pyllmc-bf16 d12 B=16 T=1024 steps=4 warmup=3",
        "torch-compile-bf16 d12 B=16 T=1024 steps=4 warmup=3",
        "pyllmc-bf16 d12 B=64 T=1024 steps=4 warmup=3",
        "torch-compile-bf16 d12 B=64 T=1024 steps=4 warmup=3",
    ]
    default = bench("--plan").stdout.splitlines()
    assert [ln.split()[2] for ln in default[::4]] == ["B=16", "B=64", "B=32", "B=48"]


@pytest.mark.parametrize("args, msg", [
    (["--batches", "16,x"], "not a comma-separated list"),
    (["--batches", "0"], "positive batch sizes"),
    (["--impls", "pyllmc-int8"], "unknown implementation 'pyllmc-int8'"),
    (["--impls", ","], "names no implementation"),
    (["--model", "d99"], "invalid choice"),
])  # fmt: skip
def test_bad_arguments_exit_2_naming_the_flag(args, msg):
    p = bench(*args, "--plan")
    assert p.returncode == 2 and msg in p.stderr, p.stderr


def test_without_a_gpu_it_says_so_and_exits_2(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: this checks the no-GPU path")
    p = bench("--batches", "16", "--out", str(tmp_path))
    assert p.returncode == 2 and "PyTorch sees no CUDA device" in p.stderr
    assert not list(tmp_path.iterdir())  # nothing written


def test_results_files_are_rewritten_with_every_configuration(tmp_path):
    pytest.importorskip("torch")
    mod = load_bench()
    args = SimpleNamespace(out=str(tmp_path), model="d12", seq=1024, steps=5, warmup=2)
    ok = {"impl": "pyllmc-bf16", "batch": 16, "seq": 1024, "status": "ok", "ms_median": 412.34, "ms_min": 400.0,
          "tokens_per_s": 39733.2, "flops_per_token": mod.flops_per_token(12, 768, 1024), "mfu": 0.123}  # fmt: skip
    rows = [ok]
    path = mod.write_results(args, "NVIDIA H200", 989.4e12, "20260101-000000", "NVIDIA-H200", rows)
    rows += [{"impl": "pyllmc-fp32", "batch": 64, "seq": 1024, "status": "oom", "error": "cannot allocate"},
             {"impl": "torch-compile-bf16", "batch": 64, "seq": 1024, "status": "skipped", "error": "--deadline-s 60 passed"}]  # fmt: skip
    assert mod.write_results(args, "NVIDIA H200", 989.4e12, "20260101-000000", "NVIDIA-H200", rows) == path
    doc = json.loads(path.read_text())
    assert [r["status"] for r in doc["results"]] == ["ok", "oom", "skipped"] and doc["gpu"] == "NVIDIA H200"
    md = path.with_suffix(".md").read_text().splitlines()
    assert "| pyllmc-bf16 | 16 | ok | 412.3 | 39733 | 12.3% |" in md
    assert "| pyllmc-fp32 | 64 | oom | | | |" in md and "| torch-compile-bf16 | 64 | skipped | | | |" in md


def test_flops_per_token_is_llm_c_s_estimate_for_gpt2_124m():
    mod = load_bench()
    n = 50304 * 768 + 1024 * 768 + 12 * (12 * 768 * 768 + 13 * 768) + 2 * 768  # 124.5M with padded wte
    assert mod.flops_per_token(12, 768, 1024) == 6 * n + 6 * 12 * 768 * 1024


def test_session_script_parses():
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    for script in ("run_all.sh", "fetch_wheels.sh"):
        p = subprocess.run([bash, "-n", str(ROOT / "benchmarks" / "gpu" / script)], capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
