"""bf16 precision end to end: `pyllmc train --precision bf16` learns, its checkpoints are
llm.c version 3 (fp32, the master weights themselves), --stop-at + --resume is bit-identical in
bf16 as in fp32, --export-bf16 writes a version 5 file of the rounded weights, and a bad
precision is a clean error (exit 2)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pyllmc.reference.convert import read_llmc_checkpoint, read_llmc_checkpoint_header, round_to_bf16


def pyllmc(*args):
    return subprocess.run([sys.executable, "-m", "pyllmc", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("bf16data")
    text = d / "input.txt"
    text.write_text("".join(f"Line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(300)))
    r = pyllmc("prepare-data", text, "--out", d / "data", "--val-frac", "0.1", "--shard-tokens", "8000")
    assert r.returncode == 0, r.stderr
    return d / "data"


TRAIN = ["--model", "d1", "--steps", "12", "--batch", "2", "--seq", "16", "--lr", "3e-3", "--warmup", "2",
         "--max-seq-len", "32", "--threads", "2", "--progress", "none", "--save-every", "4", "--no-plot"]


def _losses(path):
    return [json.loads(line)["loss"] for line in Path(path).read_text().splitlines()]


def test_train_bf16_learns_checkpoints_fp32_resume_exact_export_v5(data, tmp_path):
    args = [*TRAIN, "--data", data / "train_*.bin"]
    a = pyllmc("train", *args, "--precision", "bf16", "--out", tmp_path / "a", "--export-bf16", tmp_path / "m16.bin")
    assert a.returncode == 0, a.stderr
    la = _losses(tmp_path / "a/metrics.jsonl")
    assert len(la) == 12 and la[-1] < la[0] - 0.5
    f = pyllmc("train", *args, "--precision", "fp32", "--out", tmp_path / "f")
    assert f.returncode == 0, f.stderr
    lf = _losses(tmp_path / "f/metrics.jsonl")
    assert la != lf  # bf16 is really another computation ...
    assert abs(la[-1] - lf[-1]) < 0.1 * lf[-1]  # ... of the same training
    ck = tmp_path / "a/ckpt_00000012/model.bin"
    assert read_llmc_checkpoint_header(ck)[0] == 3
    assert read_llmc_checkpoint_header(tmp_path / "m16.bin")[0] == 5
    _, p32 = read_llmc_checkpoint(ck)
    _, p16 = read_llmc_checkpoint(tmp_path / "m16.bin")
    for n, arr in p32.items():
        np.testing.assert_array_equal(p16[n], round_to_bf16(arr), err_msg=n)
    # interrupted and resumed in bf16: the same bits as the uninterrupted run
    b1 = pyllmc("train", *args, "--precision", "bf16", "--out", tmp_path / "b", "--stop-at", "6")
    assert b1.returncode == 0, b1.stderr
    b2 = pyllmc("train", *args, "--precision", "bf16", "--out", tmp_path / "b", "--resume")
    assert b2.returncode == 0, b2.stderr
    for name in ("model.bin", "optimizer.bin"):
        assert (tmp_path / "a/ckpt_00000012" / name).read_bytes() == (tmp_path / "b/ckpt_00000012" / name).read_bytes()


def test_bad_precision_is_exit_2(data, tmp_path):
    r = pyllmc("train", *TRAIN, "--data", data / "train_*.bin", "--precision", "fp16", "--out", tmp_path / "x")
    assert r.returncode == 2 and "precision" in r.stderr and "Traceback" not in r.stderr


def test_trainer_config_precision_is_checked():
    from pyllmc.errors import InvalidArgumentError
    from pyllmc.trainer import TrainerConfig

    with pytest.raises(InvalidArgumentError, match="precision"):
        TrainerConfig(data="x.bin", precision="half").validate()
    TrainerConfig(data="x.bin", precision="bf16").validate()
