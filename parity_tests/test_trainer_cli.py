"""`pyllmc train / sample / prepare-data` from the command line: the contract of docs/design.md
(flags, metrics.jsonl, --stop-at + --resume bit-identical), and bad input giving one line on
stderr with exit code 2 (never a traceback)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pyllmc.data import write_shard


def pyllmc(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "pyllmc", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """prepare-data on a small text file (byte tokenizer) -> shards + tokenizer.bin."""
    d = tmp_path_factory.mktemp("prep")
    text = d / "input.txt"
    text.write_text("".join(f"Line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(300)))
    r = pyllmc("prepare-data", text, "--out", d / "data", "--val-frac", "0.1", "--shard-tokens", "8000")
    assert r.returncode == 0, r.stderr
    assert "tokenizer" in r.stdout
    return d / "data"


def test_prepare_data_output(prepared):
    from pyllmc.data import read_shard
    from pyllmc.tokenizer import ByteTokenizer, load_tokenizer

    train = sorted(prepared.glob("train_*.bin"))
    val = sorted(prepared.glob("val_*.bin"))
    assert len(train) == 2 and len(val) == 1  # ~15.3k train tokens in shards of 8000
    assert isinstance(load_tokenizer(prepared / "tokenizer.bin"), ByteTokenizer)
    toks = np.concatenate([read_shard(p) for p in train + val])
    assert toks[0] == 256  # end-of-text before the document
    text = bytes(toks[1:].astype(np.uint8)).decode()
    assert text.startswith("Line 0: the quick") and text.endswith("Line 299: the quick brown fox jumps over the lazy dog.\n")
    vtext = bytes(read_shard(val[0]).astype(np.uint8)).decode()
    assert vtext.startswith("Line ") and 0.08 < len(vtext) / len(text) < 0.12  # split at a line end


TRAIN = ["--model", "d1", "--steps", "8", "--batch", "2", "--seq", "16", "--lr", "3e-3", "--warmup", "2",
         "--max-seq-len", "32", "--threads", "2", "--eval-every", "4", "--eval-batches", "2",
         "--progress", "none", "--grad-accum", "2", "--save-every", "3", "--no-plot"]


def _rows(path):
    return [{k: v for k, v in json.loads(line).items() if k not in ("ms", "tokens_per_s")}
            for line in Path(path).read_text().splitlines()]


def test_train_stop_at_resume_bit_identical(prepared, tmp_path):
    data = ["--data", prepared / "train_*.bin", "--val-data", prepared / "val_000000.bin"]
    a = pyllmc("train", *TRAIN, *data, "--out", tmp_path / "a")
    assert a.returncode == 0, a.stderr
    assert "done: step 8/8" in a.stdout and "V257" in a.stdout  # vocabulary from tokenizer.bin
    b1 = pyllmc("train", *TRAIN, *data, "--out", tmp_path / "b", "--stop-at", "5")
    assert b1.returncode == 0, b1.stderr
    assert "stopped (stop_at 5)" in b1.stdout and "--resume" in b1.stdout
    b2 = pyllmc("train", *TRAIN, *data, "--out", tmp_path / "b", "--resume")
    assert b2.returncode == 0, b2.stderr
    for f in ("model.bin", "optimizer.bin"):
        assert (tmp_path / "a/ckpt_00000008" / f).read_bytes() == (tmp_path / "b/ckpt_00000008" / f).read_bytes()
    ra, rb = _rows(tmp_path / "a/metrics.jsonl"), _rows(tmp_path / "b/metrics.jsonl")
    assert ra == rb and [r["step"] for r in ra] == list(range(1, 9))
    assert [r["step"] for r in ra if "val_loss" in r] == [4, 8]
    # sample from the run directory: the newest checkpoint and the run's tokenizer.bin
    s = pyllmc("sample", "--model", tmp_path / "a", "--prompt", "Line 1", "--max-tokens", "12", "--seed", "1",
               "--top-k", "5")
    assert s.returncode == 0, s.stderr
    assert s.stdout.startswith("Line 1") and len(s.stdout) > len("Line 1")
    s2 = pyllmc("sample", "--model", tmp_path / "a/ckpt_00000008/model.bin", "--prompt", "Line 1",
                "--max-tokens", "12", "--seed", "1", "--top-k", "5")
    assert s2.returncode == 0 and s2.stdout == s.stdout


def test_shuffle_off_flag(prepared, tmp_path):
    r = pyllmc("train", "--model", "d1", "--max-seq-len", "16", "--data", prepared / "train_000000.bin",
               "--steps", "2", "--batch", "1", "--seq", "8", "--lr", "1e-3", "--shuffle", "off", "--threads", "1",
               "--out", tmp_path / "o", "--progress", "lines", "--no-plot")
    assert r.returncode == 0, r.stderr
    assert "step 2/2" in r.stdout


def _one_line_exit_2(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    err = r.stderr.strip()
    assert "Traceback" not in r.stderr
    assert len(err.splitlines()) == 1, err
    for n in needles:
        assert str(n) in err, err


def test_bad_input_exit_2(prepared, tmp_path):
    base = ["--model", "d1", "--max-seq-len", "16", "--steps", "2", "--batch", "1", "--seq", "8", "--lr", "1e-3",
            "--progress", "none"]
    missing = tmp_path / "missing.bin"
    _one_line_exit_2(pyllmc("train", *base, "--data", missing, "--out", tmp_path / "o1"), missing, "no such file")
    bad = tmp_path / "bad_magic.bin"
    bad.write_bytes(b"\x01\x02\x03\x04" + (prepared / "train_000000.bin").read_bytes()[4:])
    _one_line_exit_2(pyllmc("train", *base, "--data", bad, "--out", tmp_path / "o2"), bad, "magic")
    toks = np.full(100, 65, dtype=np.uint16)
    toks[13] = 9999
    big = tmp_path / "big_id.bin"
    write_shard(big, toks)
    _one_line_exit_2(pyllmc("train", *base, "--data", big, "--shuffle", "off", "--vocab-size", "257",
                            "--out", tmp_path / "o3"), big, "token 13 has id 9999")
    _one_line_exit_2(pyllmc("train", *base, "--data", prepared / "train_000000.bin", "--device", "cuda",
                            "--out", tmp_path / "o4"), "cuda", "CUDA")
    _one_line_exit_2(pyllmc("train", *base[2:], "--model", tmp_path / "nope.bin",
                            "--data", prepared / "train_000000.bin", "--out", tmp_path / "o5"), "nope.bin")
    _one_line_exit_2(pyllmc("train", *base, "--data", prepared / "train_000000.bin", "--schedule", "exp"), "schedule")
    _one_line_exit_2(pyllmc("sample", "--model", tmp_path / "nope.bin"), "nope.bin")
    _one_line_exit_2(pyllmc("prepare-data", tmp_path / "nope.txt", "--out", tmp_path / "p"), "nope.txt")
    _one_line_exit_2(pyllmc("prepare-data", prepared / "train_000000.bin", "--out", tmp_path / "p",
                            "--tokenizer", tmp_path / "tok.bin"), "tok.bin")
    (tmp_path / "o6").mkdir()
    (tmp_path / "o6" / "metrics.jsonl").write_text("")
    _one_line_exit_2(pyllmc("train", *base, "--data", prepared / "train_000000.bin", "--out", tmp_path / "o6"),
                     "already holds a run")
