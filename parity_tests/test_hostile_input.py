"""Hostile input, reader by reader (issue 8 §1): every file reader, the config and options
checks, and every CLI subcommand get a table of bad inputs (truncated, wrong magic or version,
zero / negative / huge / inconsistent dimensions, size mismatches, out-of-range token ids,
directories, FIFOs, devices, missing paths, NUL bytes), and each must fail with the right
``pyllmc.errors.PyllmcError`` subclass and a message naming the file; the CLI with exit status
2 and one line on stderr, no traceback. A hang counts as a failure (FIFOs are opened
non-blocking; the CLI batch has a per-case alarm).

The CLI cases run in ONE subprocess (``pyllmc.cli.main`` called per case, stderr captured),
so the whole table costs one interpreter start; a few cases also go through ``python -m
pyllmc`` to check the real process exit status.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pytest

import pyllmc
from pyllmc import (BadFormatError, FileError, GPTConfig, InvalidArgumentError, Model, PyllmcError,
                    UnsupportedError)
from pyllmc.checkpoint import read_optimizer_state, read_state
from pyllmc.data import DataLoader, read_shard, read_shard_header, resolve_shards, write_shard
from pyllmc.tokenizer import load_tokenizer, read_tokenizer_bin, write_tokenizer_bin

# ---------------------------------------------------------------------- file builders
CKPT_MAGIC, SHARD_MAGIC, TOK_MAGIC, OPT_MAGIC = 20240326, 20240520, 20240328, 20250117
DIMS = dict(maxT=4, V=5, Vp=8, L=1, NH=1, C=4)  # a tiny valid model: 300 parameters


def n_params(maxT, V, Vp, L, NH, C) -> int:
    return Vp * C + maxT * C + L * (12 * C * C + 13 * C) + 2 * C


def ckpt_header(version=3, extra: Optional[Dict[int, int]] = None, **kw) -> bytes:
    d = dict(DIMS, **kw)
    h = [0] * 256
    h[:8] = [CKPT_MAGIC, version, d["maxT"], d["V"], d["L"], d["NH"], d["C"], d["Vp"]]
    for k, v in (extra or {}).items():
        h[k] = v
    return struct.pack("<256i", *h)


def ckpt_body(version=3, pad_value=0.0, **kw) -> bytes:
    d = dict(DIMS, **kw)
    vals = np.linspace(-0.1, 0.1, n_params(**d), dtype=np.float32)
    vals[d["V"] * d["C"]: d["Vp"] * d["C"]] = 0.0
    vals[d["V"] * d["C"]] = pad_value
    if version == 5:
        return (vals.view(np.uint32) >> 16).astype("<u2").tobytes()
    return vals.astype("<f4").tobytes()


def ckpt(version=3, **kw) -> bytes:
    return ckpt_header(version, **kw) + ckpt_body(version, **kw)


GOOD = ckpt()


def shard(tokens, magic=SHARD_MAGIC, version=1, count=None) -> bytes:
    h = [0] * 256
    h[:3] = [magic, version, len(tokens) if count is None else count]
    return struct.pack("<256i", *h) + np.asarray(tokens, dtype="<u2").tobytes()


TOKS = list(range(40))


def tokfile(tokens, eot, version=2, vocab=None, magic=TOK_MAGIC) -> bytes:
    h = [0] * 256
    h[:4] = [magic, version, len(tokens) if vocab is None else vocab, eot]
    return struct.pack("<256I", *h) + b"".join(bytes([len(t)]) + t for t in tokens)


VOCAB = [b"a", b"b", b"ab", b"\xff", b"<|endoftext|>"]


def optfile(n, magic=OPT_MAGIC, version=1, count=None) -> bytes:
    h = [0] * 256
    h[:3] = [magic, version, 7]
    h[4], h[5] = struct.unpack("<2i", struct.pack("<q", n if count is None else count))
    return struct.pack("<256i", *h) + np.zeros(2 * n, "<f4").tobytes()


def _special(tmp: Path, kind: str) -> Path:
    """Paths that are not regular files: missing, a directory, a FIFO, a character device."""
    if kind == "missing":
        return tmp / "does_not_exist.bin"
    if kind == "directory":
        d = tmp / "a_directory.bin"
        d.mkdir(exist_ok=True)
        return d
    if kind == "fifo":
        p = tmp / "a_fifo.bin"
        if not p.exists():
            os.mkfifo(p)
        return p
    if kind == "device":
        return Path("/dev/null")
    raise AssertionError(kind)


SPECIAL = ["missing", "directory", "fifo", "device"]


def _raises(fn, exc, path, fragment: str = ""):
    """fn() must raise exactly the typed error ``exc``, naming ``path`` (and matching ``fragment``)."""
    with pytest.raises(PyllmcError) as ei:
        fn()
    assert isinstance(ei.value, exc), f"{type(ei.value).__name__} is not {exc.__name__}: {ei.value}"
    msg = str(ei.value)
    if path is not None:
        assert os.fspath(path) in msg or Path(path).name in msg, msg
    if fragment:
        import re

        assert re.search(fragment, msg), f"{fragment!r} not in {msg!r}"
    assert "\n" not in msg.strip(), msg  # one line, for the CLI
    return msg


# ---------------------------------------------------------------------- model checkpoints
# (id, file bytes, fragment both readers' messages match); every one is a BadFormatError
CKPT_CASES = [
    ("empty", b"", "header"),
    ("short", GOOD[:100], "header"),
    ("header_only", GOOD[:1024], "bytes"),
    ("truncated_1", GOOD[:-1], "bytes"),
    ("truncated_half", GOOD[:1024 + 600], "bytes"),
    ("trailing_bytes", GOOD + b"\0\0\0\0", "bytes"),
    ("magic_zero", struct.pack("<i", 0) + GOOD[4:], "magic"),
    ("magic_of_a_shard", struct.pack("<i", SHARD_MAGIC) + GOOD[4:], "magic"),
    ("magic_of_a_tokenizer", struct.pack("<i", TOK_MAGIC) + GOOD[4:], "magic"),
    ("magic_byte_swapped", struct.pack(">i", CKPT_MAGIC) + GOOD[4:], "magic"),
    ("version_0", ckpt_header(0) + ckpt_body(), "version"),
    ("version_4", ckpt_header(4) + ckpt_body(), "version"),
    ("version_negative", ckpt_header(-3) + ckpt_body(), "version"),
    ("v5_header_fp32_body", ckpt_header(5) + ckpt_body(3), "bytes"),
    ("v3_header_bf16_body", ckpt_header(3) + ckpt_body(5), "bytes"),
    ("v5_truncated", ckpt(5)[:-2], "bytes"),
    ("reserved_slot_8", ckpt_header(extra={8: 1}) + ckpt_body(), "reserved slot 8"),
    ("reserved_slot_255", ckpt_header(extra={255: -1}) + ckpt_body(), "reserved slot 255"),
    ("maxT_zero", ckpt_header(maxT=0) + ckpt_body(), "max_seq_len"),
    ("maxT_negative", ckpt_header(maxT=-4) + ckpt_body(), "max_seq_len"),
    ("maxT_huge", ckpt_header(maxT=2**31 - 1) + ckpt_body(), "max_seq_len|bytes"),
    ("V_zero", ckpt_header(V=0) + ckpt_body(), "vocab_size"),
    ("V_negative", ckpt_header(V=-5) + ckpt_body(), "vocab_size"),
    ("V_above_Vp", ckpt_header(V=9) + ckpt_body(), "padded"),
    ("Vp_zero", ckpt_header(Vp=0) + ckpt_body(), "padded"),
    ("Vp_huge", ckpt_header(Vp=2**31 - 1) + ckpt_body(), "padded|bytes"),
    ("L_zero", ckpt_header(L=0) + ckpt_body(), "num_layers"),
    ("L_negative", ckpt_header(L=-1) + ckpt_body(), "num_layers"),
    ("L_huge", ckpt_header(L=2**30) + ckpt_body(), "num_layers|bytes"),
    ("NH_zero", ckpt_header(NH=0) + ckpt_body(), "num_heads"),
    ("NH_negative", ckpt_header(NH=-2) + ckpt_body(), "num_heads"),
    ("NH_not_dividing_C", ckpt_header(NH=3) + ckpt_body(), "divisible|num_heads"),
    ("NH_above_C", ckpt_header(NH=8) + ckpt_body(), "divisible|num_heads"),
    ("C_zero", ckpt_header(C=0) + ckpt_body(), "channels"),
    ("C_negative", ckpt_header(C=-4) + ckpt_body(), "channels"),
    ("C_huge", ckpt_header(C=2**30, NH=1) + ckpt_body(), "channels|bytes"),
    ("all_dims_max_overflow", ckpt_header(maxT=2**31 - 1, V=2**31 - 1, Vp=2**31 - 1, L=2**31 - 1, NH=1,
                                          C=2**31 - 1) + ckpt_body(), "outside|overflow|bytes"),
    ("dims_claim_1e12_params", ckpt_header(maxT=1 << 20, V=1 << 24, Vp=1 << 24, L=1024, NH=1, C=1 << 16)
     + ckpt_body(), "overflow|bytes"),
    ("dims_consistent_file_short", ckpt_header(L=2) + ckpt_body(), "bytes"),
    ("wte_padding_not_zero", ckpt(pad_value=1.0), "wte row 5"),
    ("wte_padding_nan", ckpt(pad_value=float("nan")), "wte row 5"),
    ("v5_padding_not_zero", ckpt(5, pad_value=-2.0), "wte row 5"),
]


def _read_c(p):
    with Model.from_checkpoint(p, max_batch=1, max_seq=1, threads=1):
        pass


def _read_ref(p):
    from pyllmc.reference import read_llmc_checkpoint

    read_llmc_checkpoint(p)


def _readers():
    out = [pytest.param(_read_c, id="c_loader")]
    try:
        import pyllmc.reference  # noqa: F401  (needs torch: the [torch] extra)
        out.append(pytest.param(_read_ref, id="ref_reader"))
    except ImportError:
        pass
    return out


@pytest.mark.parametrize("reader", _readers())
@pytest.mark.parametrize("name,data,fragment", CKPT_CASES, ids=[c[0] for c in CKPT_CASES])
def test_checkpoint_bad_content(tmp_path, reader, name, data, fragment):
    p = tmp_path / f"{name}.bin"
    p.write_bytes(data)
    _raises(lambda: reader(p), BadFormatError, p, fragment)


@pytest.mark.parametrize("reader", _readers())
@pytest.mark.parametrize("kind", SPECIAL)
def test_checkpoint_not_a_regular_file(tmp_path, reader, kind):
    p = _special(tmp_path, kind)
    _raises(lambda: reader(p), FileError, p)


@pytest.mark.parametrize("reader", _readers())
def test_checkpoint_path_with_nul(tmp_path, reader):
    good = tmp_path / "good.bin"
    good.write_bytes(GOOD)
    # "good.bin\0x" must not silently open good.bin
    _raises(lambda: reader(str(good) + "\0x"), InvalidArgumentError, None, "NUL")


def test_valid_checkpoints_still_load(tmp_path):
    """The tables above are near-misses of these: both versions load and agree."""
    for version in (3, 5):
        p = tmp_path / f"v{version}.bin"
        p.write_bytes(ckpt(version))
        with Model.from_checkpoint(p, max_batch=1, max_seq=2, threads=1) as m:
            assert m.config == GPTConfig(4, 5, 8, 1, 1, 4)
            assert m.forward(np.zeros((1, 2), np.int64), np.ones((1, 2), np.int64)) > 0


@pytest.mark.parametrize("kw,fragment", [
    (dict(max_seq=5), "max_seq"),  # beyond the checkpoint's maxT = 4
    (dict(max_batch=0), "max_batch"),
    (dict(max_batch=2**31), "max_batch"),
    (dict(threads=-1), "threads"),
    (dict(device="tpu"), "device"),
    (dict(precision="fp8"), "precision"),
], ids=["max_seq_above_maxT", "max_batch_0", "max_batch_2e31", "threads_negative", "device_tpu", "precision_fp8"])
def test_checkpoint_bad_options(tmp_path, kw, fragment):
    p = tmp_path / "good.bin"
    p.write_bytes(GOOD)
    _raises(lambda: Model.from_checkpoint(p, **{"max_batch": 1, **kw}), InvalidArgumentError, None, fragment)


# ---------------------------------------------------------------------- configs and options
CONFIG_CASES = [  # GPTConfig(maxT, V, Vp, L, NH, C) the C core must refuse
    ("maxT_0", (0, 60, 64, 2, 2, 16)), ("maxT_neg", (-1, 60, 64, 2, 2, 16)),
    ("maxT_huge", (2**31 - 1, 60, 64, 2, 2, 16)),
    ("V_0", (16, 0, 64, 2, 2, 16)), ("V_neg", (16, -60, 64, 2, 2, 16)), ("V_huge", (16, 2**31 - 1, 2**31 - 1, 2, 2, 16)),
    ("Vp_below_V", (16, 60, 59, 2, 2, 16)), ("Vp_neg", (16, 60, -64, 2, 2, 16)),
    ("L_0", (16, 60, 64, 0, 2, 16)), ("L_neg", (16, 60, 64, -2, 2, 16)), ("L_huge", (16, 60, 64, 2**31 - 1, 2, 16)),
    ("NH_0", (16, 60, 64, 2, 0, 16)), ("NH_neg", (16, 60, 64, 2, -2, 16)), ("NH_not_dividing", (16, 60, 64, 2, 3, 16)),
    ("NH_above_C", (16, 60, 64, 2, 32, 16)),
    ("C_0", (16, 60, 64, 2, 2, 0)), ("C_neg", (16, 60, 64, 2, 2, -16)), ("C_huge", (16, 60, 64, 2, 1, 2**31 - 1)),
    ("int32_overflow", (2**31, 60, 64, 2, 2, 16)), ("int64", (16, 60, 64, 2**40, 2, 16)),
    ("float_field", (16.0, 60, 64, 2, 2, 16)), ("str_field", (16, "60", 64, 2, 2, 16)),
    ("bool_field", (16, 60, 64, True, 2, 16)), ("none_field", (16, 60, 64, 2, None, 16)),
]


@pytest.mark.parametrize("name,fields", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_bad_config(name, fields):
    cfg = GPTConfig(*fields)
    _raises(lambda: Model.from_config(cfg, max_batch=1, max_seq=1, threads=1), InvalidArgumentError, None)


OPTION_CASES = [
    ("max_batch_0", dict(max_batch=0), InvalidArgumentError),
    ("max_batch_neg", dict(max_batch=-1), InvalidArgumentError),
    ("max_batch_float", dict(max_batch=2.0), InvalidArgumentError),
    ("max_batch_tokens_too_many", dict(max_batch=2**21), InvalidArgumentError),
    ("max_seq_0", dict(max_seq=0), InvalidArgumentError),
    ("max_seq_above_maxT", dict(max_seq=17), InvalidArgumentError),
    ("threads_neg", dict(threads=-1), InvalidArgumentError),
    ("seed_neg", dict(seed=-1), InvalidArgumentError),
    ("seed_2e64", dict(seed=2**64), InvalidArgumentError),
    ("device_unknown", dict(device="tpu"), InvalidArgumentError),
    ("precision_unknown", dict(precision="fp16"), InvalidArgumentError),
    ("descriptor_d0", dict(config="d0"), InvalidArgumentError),
    ("descriptor_garbage", dict(config="dx12"), InvalidArgumentError),
    ("config_not_a_config", dict(config=[16, 60]), InvalidArgumentError),
]


@pytest.mark.parametrize("name,kw,exc", OPTION_CASES, ids=[c[0] for c in OPTION_CASES])
def test_bad_options(name, kw, exc):
    kw = dict(kw)
    cfg = kw.pop("config", GPTConfig(16, 60, 64, 2, 2, 16))
    args = dict(max_batch=1, threads=1)
    args.update(kw)
    _raises(lambda: Model.from_config(cfg, **args), exc, None)


FORWARD_CASES = [  # (id, inputs, targets, fragment)
    ("id_equal_V", [[1, 2, 60]], None, r"inputs\[0, 2\] = 60"),
    ("id_negative", [[1, -1, 2]], None, r"inputs\[0, 1\] = -1"),
    ("target_above_V", [[1, 2, 3]], [[0, 0, 1000]], r"targets\[0, 2\] = 1000"),
    ("id_int64_huge", np.array([[2**40]]), None, r"inputs\[0, 0\]"),
    ("float_ids", np.zeros((1, 2), np.float32), None, "integer"),
    ("ndim_1", np.zeros(4, np.int32), None, "shape"),
    ("B_above_max", np.zeros((3, 2), np.int32), None, "batch size|B ="),
    ("T_above_max", np.zeros((1, 17), np.int32), None, "sequence length|T ="),
    ("T_zero", np.zeros((1, 0), np.int32), None, "sequence length|T ="),
    ("targets_shape", np.zeros((1, 2), np.int32), np.zeros((1, 3), np.int32), "shape"),
]


@pytest.fixture(scope="module")
def small_model():
    with Model.from_config(GPTConfig(16, 60, 64, 1, 2, 16), max_batch=2, threads=1, seed=3) as m:
        yield m


@pytest.mark.parametrize("name,x,y,fragment", FORWARD_CASES, ids=[c[0] for c in FORWARD_CASES])
def test_forward_bad_tokens(small_model, name, x, y, fragment):
    _raises(lambda: small_model.forward(x, y), InvalidArgumentError, None, fragment)


# ---------------------------------------------------------------------- token shards
SHARD_CASES = [
    ("empty", b"", "shorter"),
    ("short", shard(TOKS)[:500], "shorter"),
    ("magic_zero", shard(TOKS, magic=0), "magic"),
    ("magic_of_a_checkpoint", shard(TOKS, magic=CKPT_MAGIC), "magic"),
    ("version_0", shard(TOKS, version=0), "version"),
    ("version_2", shard(TOKS, version=2), "version"),
    ("count_negative", shard(TOKS, count=-1), "negative"),
    ("count_too_big", shard(TOKS, count=41), "bytes"),
    ("count_too_small", shard(TOKS, count=39), "bytes"),
    ("count_int32_max", shard(TOKS, count=2**31 - 1), "bytes"),
    ("odd_trailing_byte", shard(TOKS) + b"\0", "bytes"),
    ("header_only_claims_tokens", shard([], count=5), "bytes"),
]


@pytest.mark.parametrize("name,data,fragment", SHARD_CASES, ids=[c[0] for c in SHARD_CASES])
def test_shard_bad_content(tmp_path, name, data, fragment):
    p = tmp_path / f"{name}.bin"
    p.write_bytes(data)
    _raises(lambda: read_shard_header(p), BadFormatError, p, fragment)
    _raises(lambda: read_shard(p), BadFormatError, p, fragment)
    _raises(lambda: DataLoader(p, 1, 4), BadFormatError, p, fragment)


@pytest.mark.parametrize("kind", SPECIAL)
def test_shard_not_a_regular_file(tmp_path, kind):
    p = _special(tmp_path, kind)
    _raises(lambda: read_shard_header(p), FileError, p)
    _raises(lambda: DataLoader(p, 1, 4), FileError, p)


@pytest.mark.parametrize("spec,exc", [
    ("nomatch_*.bin", FileError), ([], InvalidArgumentError), (None, InvalidArgumentError)],
    ids=["glob_no_match", "empty_list", "none"])
def test_shard_specs(tmp_path, spec, exc):
    if isinstance(spec, str):
        spec = str(tmp_path / spec)
    _raises(lambda: resolve_shards(spec), exc, None)


@pytest.mark.parametrize("B,T,shuffle,fragment", [
    (0, 4, False, "batch size"), (1, 0, False, "batch size"), (-1, 4, True, "batch size"),
    (3, 20, False, "fewer than one batch"), (5, 10, True, "fewer than one shuffled batch"),
], ids=["B0", "T0", "Bneg_shuffled", "too_few_tokens", "too_few_windows"])
def test_loader_bad_shapes(tmp_path, B, T, shuffle, fragment):
    p = tmp_path / "s.bin"
    p.write_bytes(shard(TOKS))
    exc = InvalidArgumentError if min(B, T) < 1 else BadFormatError
    _raises(lambda: DataLoader(p, B, T, shuffle=shuffle), exc, None if exc is InvalidArgumentError else p, fragment)


@pytest.mark.parametrize("shuffle", [False, True], ids=["sequential", "shuffled"])
def test_token_id_out_of_range_reported_with_position(tmp_path, shuffle):
    toks = [1] * 41
    toks[13] = 99  # only window 3 ([12, 17)) of the shuffled windows holds it
    p = tmp_path / "ids.bin"
    p.write_bytes(shard(toks))
    dl = DataLoader(p, 2, 4, shuffle=shuffle, seed=5, vocab_size=50)

    def drain():
        for _ in range(dl.batches_per_epoch() + 1):
            dl.next_batch()

    _raises(drain, BadFormatError, p, r"token 13 has id 99")


STATE_CASES = [
    ("missing_epoch", {"shard_index": 0, "position": 0}),
    ("epoch_negative", {"epoch": -1, "shard_index": 0, "position": 0}),
    ("epoch_string", {"epoch": "0", "shard_index": 0, "position": 0}),
    ("epoch_float", {"epoch": 0.5, "shard_index": 0, "position": 0}),
    ("epoch_null", {"epoch": None, "shard_index": 0, "position": 0}),
    ("shard_index_out_of_range", {"epoch": 0, "shard_index": 1, "position": 0}),
    ("position_negative", {"epoch": 0, "shard_index": 0, "position": -8}),
    ("batch_mismatch", {"epoch": 0, "shard_index": 0, "position": 0, "B": 7}),
    ("seed_wrong_type", {"epoch": 0, "shard_index": 0, "position": 0, "seed": [1]}),
    ("not_a_dict", [0, 0, 0]),
]


@pytest.mark.parametrize("name,state", STATE_CASES, ids=[c[0] for c in STATE_CASES])
def test_loader_bad_state(tmp_path, name, state):
    p = tmp_path / "s.bin"
    p.write_bytes(shard(TOKS))
    dl = DataLoader(p, 2, 4)
    _raises(lambda: dl.load_state(state), InvalidArgumentError, None)
    assert dl.state()["position"] == 0  # a refused state leaves the loader as it was


# ---------------------------------------------------------------------- tokenizer files
TOK_CASES = [
    ("empty", b"", "shorter"),
    ("short", tokfile(VOCAB, 4)[:100], "shorter"),
    ("magic_zero", tokfile(VOCAB, 4, magic=0), "magic"),
    ("magic_of_a_shard", tokfile(VOCAB, 4, magic=SHARD_MAGIC), "magic"),
    ("version_0", tokfile(VOCAB, 4, version=0), "version"),
    ("version_3", tokfile(VOCAB, 4, version=3), "version"),
    ("vocab_zero", tokfile(VOCAB, 0, vocab=0), "vocabulary size|positive"),
    ("vocab_huge_small_file", tokfile(VOCAB, 4, vocab=2**32 - 1), "truncated"),
    ("eot_equal_V", tokfile(VOCAB, 5), "end-of-text"),
    ("eot_huge", tokfile(VOCAB, 2**32 - 1), "end-of-text"),
    ("v1_implies_eot_50256", tokfile(VOCAB, 0, version=1), "end-of-text id 50256"),
    ("zero_length_token", tokfile(VOCAB, 4)[:1024] + b"\0", "length 0"),
    ("truncated_between_tokens", tokfile(VOCAB, 4)[:1024 + 4], "truncated"),
    ("truncated_inside_token", tokfile(VOCAB, 4)[:-2], "truncated inside token 4"),
    ("trailing_bytes", tokfile(VOCAB, 4) + b"xy", "trailing"),
]


@pytest.mark.parametrize("name,data,fragment", TOK_CASES, ids=[c[0] for c in TOK_CASES])
def test_tokenizer_bad_content(tmp_path, name, data, fragment):
    p = tmp_path / f"{name}.tokenizer.bin"
    p.write_bytes(data)
    _raises(lambda: read_tokenizer_bin(p), BadFormatError, p, fragment)
    _raises(lambda: load_tokenizer(str(p)), BadFormatError, p, fragment)


@pytest.mark.parametrize("kind", SPECIAL)
def test_tokenizer_not_a_regular_file(tmp_path, kind):
    p = _special(tmp_path, kind)
    _raises(lambda: read_tokenizer_bin(p), FileError, p)
    _raises(lambda: load_tokenizer(str(p)), FileError, p)  # an empty directory: no tokenizer in it


def test_tokenizer_write_rejects_bad_tables(tmp_path):
    _raises(lambda: write_tokenizer_bin(tmp_path / "t.bin", [b"a", b""], 0), InvalidArgumentError, None, "token 1")
    _raises(lambda: write_tokenizer_bin(tmp_path / "t.bin", [b"a" * 256], 0), InvalidArgumentError, None, "token 0")
    _raises(lambda: write_tokenizer_bin(tmp_path / "t.bin", [b"a"], 1), InvalidArgumentError, None, "end-of-text")


# ---------------------------------------------------------------------- optimizer state
OPT_CASES = [
    ("empty", optfile(0)[:0], None, "shorter"),
    ("short", optfile(6)[:512], None, "shorter"),
    ("magic", optfile(6, magic=CKPT_MAGIC), None, "magic"),
    ("version", optfile(6, version=2), None, "version"),
    ("count_negative", optfile(6, count=-6), None, "parameters"),
    ("count_huge", optfile(6, count=2**62), None, "bytes|implies"),
    ("count_vs_size", optfile(6, count=7), None, "bytes|implies"),
    ("truncated", optfile(6)[:-1], None, "bytes|implies"),
    ("count_vs_model", optfile(6), 7, "parameters"),
]


@pytest.mark.parametrize("name,data,nparams,fragment", OPT_CASES, ids=[c[0] for c in OPT_CASES])
def test_optimizer_state_bad_content(tmp_path, name, data, nparams, fragment):
    p = tmp_path / f"{name}.optimizer.bin"
    p.write_bytes(data)
    _raises(lambda: read_optimizer_state(p, num_params=nparams), BadFormatError, p, fragment)


@pytest.mark.parametrize("kind", SPECIAL)
def test_optimizer_state_not_a_regular_file(tmp_path, kind):
    p = _special(tmp_path, kind)
    _raises(lambda: read_optimizer_state(p), FileError, p)


# ---------------------------------------------------------------------- checkpoint state.json
_STATE = {"format": "pyllmc-checkpoint", "version": 1, "step": 3, "files": {}}
STATEJSON_CASES = [
    ("not_json", b"{not json", BadFormatError),
    ("not_utf8", b"\xff\xfe\x00{", BadFormatError),
    ("deeply_nested", b"[" * 100000 + b"]" * 100000, BadFormatError),
    ("a_list", b"[1, 2]", BadFormatError),
    ("wrong_format", json.dumps(dict(_STATE, format="other")).encode(), BadFormatError),
    ("wrong_version", json.dumps(dict(_STATE, version=9)).encode(), BadFormatError),
    ("no_step", json.dumps({k: v for k, v in _STATE.items() if k != "step"}).encode(), BadFormatError),
    ("step_negative", json.dumps(dict(_STATE, step=-1)).encode(), BadFormatError),
    ("step_bool", json.dumps(dict(_STATE, step=True)).encode(), BadFormatError),
    ("step_string", json.dumps(dict(_STATE, step="3")).encode(), BadFormatError),
    ("files_a_list", json.dumps(dict(_STATE, files=["model.bin"])).encode(), BadFormatError),
    ("files_path_escape", json.dumps(dict(_STATE, files={"../model.bin": 1})).encode(), BadFormatError),
    ("files_size_string", json.dumps(dict(_STATE, files={"model.bin": "1"})).encode(), BadFormatError),
    ("files_missing_file", json.dumps(dict(_STATE, files={"gone.bin": 1})).encode(), BadFormatError),
    ("files_wrong_size", json.dumps(dict(_STATE, files={"model.bin": 5})).encode(), BadFormatError),
    ("data_not_object", json.dumps(dict(_STATE, data=[1])).encode(), BadFormatError),
    ("rng_not_object", json.dumps(dict(_STATE, rng="x")).encode(), BadFormatError),
    ("rng_state_string", json.dumps(dict(_STATE, rng={"bit_generator": "PCG64", "state": {"state": "x", "inc": 1},
                                                      "has_uint32": 0, "uinteger": 0})).encode(), BadFormatError),
    ("rng_state_missing", json.dumps(dict(_STATE, rng={"bit_generator": "PCG64"})).encode(), BadFormatError),
    ("rng_state_negative", json.dumps(dict(_STATE, rng={"bit_generator": "PCG64", "state": {"state": -1, "inc": 1},
                                                        "has_uint32": 0, "uinteger": 0})).encode(), BadFormatError),
    ("rng_other_generator", json.dumps(dict(_STATE, rng={"bit_generator": "MT19937"})).encode(), BadFormatError),
]


@pytest.mark.parametrize("name,data,exc", STATEJSON_CASES, ids=[c[0] for c in STATEJSON_CASES])
def test_checkpoint_state_json(tmp_path, name, data, exc):
    (tmp_path / "state.json").write_bytes(data)
    (tmp_path / "model.bin").write_bytes(b"1234")
    _raises(lambda: read_state(tmp_path), exc, None)


@pytest.mark.parametrize("kind", ["missing", "fifo", "directory"])
def test_checkpoint_state_json_not_a_file(tmp_path, kind):
    p = tmp_path / "state.json"
    if kind == "fifo":
        os.mkfifo(p)
    elif kind == "directory":
        p.mkdir()
    _raises(lambda: read_state(tmp_path), FileError, p)


# ---------------------------------------------------------------------- Hugging Face directories
_HF = {"model_type": "gpt2", "vocab_size": 11, "n_positions": 8, "n_layer": 1, "n_head": 2, "n_embd": 8,
       "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5, "n_inner": None}


def _hf_tensors(V=11, T=8, C=8, L=1, drop=None, bad_shape=None):
    rng = np.random.default_rng(0)
    t = {"wte.weight": (V, C), "wpe.weight": (T, C), "ln_f.weight": (C,), "ln_f.bias": (C,)}
    for i in range(L):
        for k, s in {"ln_1.weight": (C,), "ln_1.bias": (C,), "attn.c_attn.weight": (C, 3 * C),
                     "attn.c_attn.bias": (3 * C,), "attn.c_proj.weight": (C, C), "attn.c_proj.bias": (C,),
                     "ln_2.weight": (C,), "ln_2.bias": (C,), "mlp.c_fc.weight": (C, 4 * C), "mlp.c_fc.bias": (4 * C,),
                     "mlp.c_proj.weight": (4 * C, C), "mlp.c_proj.bias": (C,)}.items():
            t[f"h.{i}.{k}"] = s
    if drop:
        t.pop(drop)
    if bad_shape:
        t[bad_shape] = (3,)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in t.items()}


HF_CASES = [  # (id, config.json bytes or None, tensors kwargs or b"garbage" or None, exception)
    ("config_missing", None, {}, FileError),
    ("config_not_json", b"{", {}, BadFormatError),
    ("config_deeply_nested", b"[" * 100000, {}, BadFormatError),
    ("config_a_list", b"[]", {}, BadFormatError),
    ("config_no_n_embd", json.dumps({k: v for k, v in _HF.items() if k != "n_embd"}).encode(), {}, BadFormatError),
    ("config_string_dim", json.dumps(dict(_HF, n_layer="1")).encode(), {}, BadFormatError),
    ("config_float_dim", json.dumps(dict(_HF, n_head=2.0)).encode(), {}, BadFormatError),
    ("config_zero_dim", json.dumps(dict(_HF, n_embd=0)).encode(), {}, BadFormatError),
    ("config_negative_dim", json.dumps(dict(_HF, n_positions=-8)).encode(), {}, BadFormatError),
    ("config_huge_dim", json.dumps(dict(_HF, vocab_size=2**40)).encode(), {}, BadFormatError),
    ("config_heads_not_dividing", json.dumps(dict(_HF, n_head=3)).encode(), {}, BadFormatError),
    ("config_relu", json.dumps(dict(_HF, activation_function="relu")).encode(), {}, BadFormatError),
    ("config_eps", json.dumps(dict(_HF, layer_norm_epsilon=1e-6)).encode(), {}, BadFormatError),
    ("config_n_inner", json.dumps(dict(_HF, n_inner=7)).encode(), {}, BadFormatError),
    ("config_vocab_vs_tensors", json.dumps(dict(_HF, vocab_size=12)).encode(), {}, BadFormatError),
    ("config_layers_vs_tensors", json.dumps(dict(_HF, n_layer=2)).encode(), {}, BadFormatError),
    ("config_maxT_vs_tensors", json.dumps(dict(_HF, n_positions=16)).encode(), {}, BadFormatError),
    ("safetensors_missing", json.dumps(_HF).encode(), None, FileError),
    ("safetensors_garbage", json.dumps(_HF).encode(), b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage", BadFormatError),
    ("safetensors_empty", json.dumps(_HF).encode(), b"", BadFormatError),
    ("tensor_missing", json.dumps(_HF).encode(), {"drop": "h.0.mlp.c_fc.bias"}, BadFormatError),
    ("tensor_bad_shape", json.dumps(_HF).encode(), {"bad_shape": "h.0.attn.c_proj.weight"}, BadFormatError),
    ("top_tensor_missing", json.dumps(_HF).encode(), {"drop": "wpe.weight"}, BadFormatError),
]


def _hf_dir(tmp_path, config, tensors) -> Path:
    d = tmp_path / "hf"
    d.mkdir()
    if config is not None:
        (d / "config.json").write_bytes(config)
    if isinstance(tensors, dict):
        from safetensors.numpy import save_file

        save_file(_hf_tensors(**tensors), str(d / "model.safetensors"))
    elif tensors is not None:
        (d / "model.safetensors").write_bytes(tensors)
    return d


@pytest.mark.parametrize("name,config,tensors,exc", HF_CASES, ids=[c[0] for c in HF_CASES])
def test_hf_directory(tmp_path, name, config, tensors, exc):
    pytest.importorskip("safetensors")
    pytest.importorskip("torch")
    from pyllmc.reference import load_hf_dir_params

    d = _hf_dir(tmp_path, config, tensors)
    _raises(lambda: load_hf_dir_params(d), exc, d)


def test_hf_directory_valid_loads_through_model_source(tmp_path):
    pytest.importorskip("safetensors")
    pytest.importorskip("torch")
    from pyllmc.model_source import load_model

    d = _hf_dir(tmp_path, json.dumps(_HF).encode(), {})
    with load_model(str(d), max_batch=1, threads=1) as m:
        assert (m.config.vocab_size, m.config.num_layers, m.config.channels) == (11, 1, 8)
    # and a bad one through the same path the CLI takes: typed, naming the directory
    (d / "config.json").write_bytes(json.dumps(dict(_HF, n_head=3)).encode())
    _raises(lambda: load_model(str(d), max_batch=1, threads=1), BadFormatError, d, "divisible")


# ---------------------------------------------------------------------- the CLI
_DRIVER = r"""
import contextlib, io, json, signal, sys, traceback
cases = json.load(sys.stdin)
from pyllmc.cli import main

class Hang(Exception):
    pass

def _alarm(*_):
    raise Hang()

signal.signal(signal.SIGALRM, _alarm)
out = []
for argv in cases:
    err, so = io.StringIO(), io.StringIO()
    rc, tb = None, None
    signal.alarm(60)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(so):
            rc = main(argv)
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 1
    except Hang:
        tb = "hang: no answer in 60 s"
    except BaseException:
        tb = traceback.format_exc()
    finally:
        signal.alarm(0)
    out.append({"rc": rc, "stderr": err.getvalue(), "tb": tb})
sys.__stdout__.write(json.dumps(out))
"""


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory) -> Dict[str, str]:
    d = tmp_path_factory.mktemp("cli")
    f: Dict[str, Path] = {}
    f["dir"] = d / "emptydir"
    f["dir"].mkdir()
    f["fifo"] = d / "fifo.bin"
    os.mkfifo(f["fifo"])
    f["missing"] = d / "missing.bin"
    f["shard"] = d / "train.bin"
    write_shard(f["shard"], np.arange(2000) % 250)
    f["shard_ids"] = d / "ids.bin"
    ids = np.full(2000, 3)
    ids[20] = 200  # in the second batch of B*T = 16 tokens
    write_shard(f["shard_ids"], ids)
    f["shard_magic"] = d / "magic_shard.bin"
    f["shard_magic"].write_bytes(shard(TOKS, magic=7))
    f["shard_short"] = d / "short_shard.bin"
    f["shard_short"].write_bytes(shard(TOKS)[:-3])
    f["ckpt"] = d / "good.bin"
    f["ckpt"].write_bytes(GOOD)
    f["ckpt_magic"] = d / "magic_ckpt.bin"
    f["ckpt_magic"].write_bytes(struct.pack("<i", 1) + GOOD[4:])
    f["ckpt_short"] = d / "short_ckpt.bin"
    f["ckpt_short"].write_bytes(GOOD[:-5])
    f["ckpt_dims"] = d / "dims_ckpt.bin"
    f["ckpt_dims"].write_bytes(ckpt_header(NH=3) + ckpt_body())
    f["tok_bad"] = d / "tok" / "bad_tokenizer.bin"  # its own directory: train looks next to --data
    f["tok_bad"].parent.mkdir()
    f["tok_bad"].write_bytes(tokfile(VOCAB, 9))
    f["text"] = d / "input.txt"
    f["text"].write_text("hello world\n" * 50)
    f["afile"] = d / "a_plain_file"
    f["afile"].write_text("x")
    f["state_dir"] = d / "run"
    ck = f["state_dir"] / "ckpt_00000001"
    ck.mkdir(parents=True)
    (ck / "state.json").write_bytes(b"[" * 50000)
    (ck / "model.bin").write_bytes(GOOD)
    return {k: str(v) for k, v in f.items()}


def _cli_cases(f: Dict[str, str]) -> List[tuple]:
    """(id, argv, substrings the one error line must contain)."""
    tr = ["train", "--steps", "2", "--batch", "1", "--seq", "4", "--lr", "1e-3", "--progress", "none",
          "--max-seq-len", "16", "--no-plot"]
    tr_ok = tr + ["--model", "d1", "--vocab-size", "250", "--data", f["shard"]]

    def out(name):
        return ["--out", str(Path(f["dir"]).parent / "out" / name)]

    cases = [
        ("no_command", [], ["command"]),
        ("unknown_command", ["frobnicate"], ["frobnicate"]),
        ("unknown_top_flag", ["--frobnicate"], ["--frobnicate"]),
        # train
        ("train_no_data", tr + out("t0"), ["--data", "prepare-data"]),
        ("train_model_missing", tr + ["--model", f["missing"], "--data", f["shard"]] + out("t1"), [f["missing"]]),
        ("train_model_bad_magic", tr + ["--model", f["ckpt_magic"], "--data", f["shard"]] + out("t2"),
         [f["ckpt_magic"], "magic"]),
        ("train_model_truncated", tr + ["--model", f["ckpt_short"], "--data", f["shard"]] + out("t3"),
         [f["ckpt_short"], "bytes"]),
        ("train_model_bad_dims", tr + ["--model", f["ckpt_dims"], "--data", f["shard"]] + out("t4"),
         [f["ckpt_dims"], "divisible"]),
        ("train_model_fifo", tr + ["--model", f["fifo"], "--data", f["shard"]] + out("t5"), [f["fifo"]]),
        ("train_model_empty_dir", tr + ["--model", f["dir"], "--data", f["shard"]] + out("t6"), [f["dir"]]),
        ("train_resume_bad_state_json", tr_ok + ["--resume", "--out", f["state_dir"]], ["state.json"]),
        ("train_data_missing", tr + ["--model", "d1", "--data", f["missing"]] + out("t7"), [f["missing"]]),
        ("train_data_bad_magic", tr + ["--model", "d1", "--data", f["shard_magic"]] + out("t8"),
         [f["shard_magic"], "magic"]),
        ("train_data_truncated", tr + ["--model", "d1", "--data", f["shard_short"]] + out("t9"), [f["shard_short"]]),
        ("train_data_fifo", tr + ["--model", "d1", "--data", f["fifo"]] + out("t10"), [f["fifo"]]),
        ("train_data_dir", tr + ["--model", "d1", "--data", f["dir"]] + out("t11"), [f["dir"]]),
        ("train_data_glob_nomatch", tr + ["--model", "d1", "--data", f["dir"] + "/*.bin"] + out("t12"), ["*.bin"]),
        ("train_token_id_above_vocab", tr + ["--model", "d1", "--vocab-size", "100", "--data", f["shard_ids"],
                                             "--shuffle", "off", "--batch", "2", "--seq", "8"] + out("t13"),
         [f["shard_ids"], "token 20 has id 200"]),
        ("train_val_data_bad", tr_ok + ["--val-data", f["shard_magic"], "--eval-every", "1"] + out("t14"),
         [f["shard_magic"]]),
        ("train_tokenizer_bad", tr_ok + ["--tokenizer", f["tok_bad"], "--sample-every", "1"] + out("t15"),
         [f["tok_bad"]]),
        ("train_steps_0", tr_ok[:0] + ["train", "--model", "d1", "--data", f["shard"], "--steps", "0", "--batch", "1",
                                       "--seq", "4", "--lr", "1e-3"] + out("t16"), ["steps"]),
        ("train_steps_text", ["train", "--model", "d1", "--data", f["shard"], "--steps", "two", "--batch", "1",
                              "--seq", "4", "--lr", "1e-3"], ["two"]),
        ("train_batch_0", tr_ok + ["--batch", "0"] + out("t17"), ["batch"]),
        ("train_seq_0", tr_ok + ["--seq", "0"] + out("t18"), ["seq"]),
        ("train_seq_above_max", tr_ok + ["--seq", "64"] + out("t19"), ["64"]),
        ("train_lr_negative", tr_ok + ["--lr", "-1"] + out("t20"), ["lr"]),
        ("train_lr_nan", tr_ok + ["--lr", "nan"] + out("t20b"), ["lr"]),
        ("train_beta_1", tr_ok + ["--beta2", "1.0"] + out("t21"), ["beta"]),
        ("train_grad_accum_0", tr_ok + ["--grad-accum", "0"] + out("t22"), ["accum"]),
        ("train_threads_negative", tr_ok + ["--threads", "-1"] + out("t23"), ["threads"]),
        ("train_device_tpu", tr_ok + ["--device", "tpu"] + out("t24"), ["tpu"]),
        ("train_schedule", tr_ok + ["--schedule", "exp"] + out("t25"), ["exp"]),
        ("train_stop_at_beyond", tr_ok + ["--stop-at", "9"] + out("t26"), ["stop"]),
        ("train_out_is_file", tr_ok + ["--out", f["afile"]], [f["afile"]]),
        # sample
        ("sample_no_model", ["sample"], ["--model"]),
        ("sample_model_missing", ["sample", "--model", f["missing"]], [f["missing"]]),
        ("sample_model_bad_magic", ["sample", "--model", f["ckpt_magic"]], [f["ckpt_magic"]]),
        ("sample_model_fifo", ["sample", "--model", f["fifo"]], [f["fifo"]]),
        ("sample_max_tokens_negative", ["sample", "--model", "d1", "--max-tokens", "-1"], ["max-tokens"]),
        ("sample_num_samples_0", ["sample", "--model", "d1", "--num-samples", "0"], ["num-samples"]),
        ("sample_top_k_negative", ["sample", "--model", "d1", "--top-k", "-3"], ["top-k"]),
        ("sample_tokenizer_bad", ["sample", "--model", "d1", "--tokenizer", f["tok_bad"]], [f["tok_bad"]]),
        ("sample_tokenizer_missing", ["sample", "--model", "d1", "--tokenizer", f["missing"]], [f["missing"]]),
        ("sample_device_tpu", ["sample", "--model", "d1", "--device", "tpu"], ["tpu"]),
        # prepare-data
        ("prepare_no_out", ["prepare-data", f["text"]], ["--out"]),
        ("prepare_input_missing", ["prepare-data", f["missing"], "--out", f["dir"] + "/p1"], [f["missing"]]),
        ("prepare_input_dir", ["prepare-data", f["dir"], "--out", f["dir"] + "/p2"], [f["dir"]]),
        ("prepare_input_fifo", ["prepare-data", f["fifo"], "--out", f["dir"] + "/p3"], [f["fifo"]]),
        ("prepare_val_frac", ["prepare-data", f["text"], "--out", f["dir"] + "/p4", "--val-frac", "2"], ["val"]),
        ("prepare_shard_tokens_0", ["prepare-data", f["text"], "--out", f["dir"] + "/p5", "--shard-tokens", "0"],
         ["shard"]),
        ("prepare_tokenizer_bad", ["prepare-data", f["text"], "--out", f["dir"] + "/p6", "--tokenizer", f["tok_bad"]],
         [f["tok_bad"]]),
        ("prepare_out_is_file", ["prepare-data", f["text"], "--out", f["afile"]], [f["afile"]]),
        # bench (argument checks only: nothing is measured)
        ("bench_no_model", ["bench"], ["--model"]),
        ("bench_model_garbage", ["bench", "--model", "x99"], ["x99"]),
        ("bench_model_missing", ["bench", "--model", f["missing"]], [f["missing"]]),
        ("bench_batch_0", ["bench", "--model", "d1", "--batch", "0"], ["--batch"]),
        ("bench_seq_negative", ["bench", "--model", "d1", "--seq", "-4"], ["--seq"]),
        ("bench_impls_unknown", ["bench", "--model", "d1", "--impls", "nosuchimpl"], ["nosuchimpl"]),
    ]
    sub = _subcommands()
    if "convert" in sub:
        cases += [
            ("convert_src_missing", ["convert", f["missing"], f["dir"] + "/c1.bin"], [f["missing"]]),
            ("convert_src_bad_magic", ["convert", f["ckpt_magic"], f["dir"] + "/c2.bin"], [f["ckpt_magic"]]),
            ("convert_src_truncated", ["convert", f["ckpt_short"], f["dir"] + "/c3.bin"], [f["ckpt_short"]]),
            ("convert_src_fifo", ["convert", f["fifo"], f["dir"] + "/c4.bin"], [f["fifo"]]),
            ("convert_no_dst", ["convert", f["ckpt"]], ["DST"]),
        ]
    if "parity" in sub:
        cases += [
            ("parity_model_missing", ["parity", "--model", f["missing"]], [f["missing"]]),
            ("parity_model_bad_magic", ["parity", "--model", f["ckpt_magic"]], [f["ckpt_magic"]]),
            ("parity_steps_0", ["parity", "--model", "d1", "--steps", "0"], ["--steps"]),
        ]
    # every subcommand, present and future: an unknown flag is a one-line error
    cases += [(f"{s}_unknown_flag", [s, "--no-such-flag-xyz"], ["error"]) for s in sub]
    return cases


def _subcommands() -> List[str]:
    import argparse

    from pyllmc.cli import build_parser

    for a in build_parser()._actions:
        if isinstance(a, argparse._SubParsersAction):
            return sorted(a.choices)
    raise AssertionError("the pyllmc parser has no subcommands")


@pytest.fixture(scope="module")
def cli_results(cli_files, tmp_path_factory):
    cases = _cli_cases(cli_files)
    cwd = tmp_path_factory.mktemp("cli_cwd")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    p = subprocess.run([sys.executable, "-c", _DRIVER], input=json.dumps([c[1] for c in cases]), text=True,
                       capture_output=True, cwd=cwd, env=env, timeout=900)
    assert p.returncode == 0, f"CLI driver failed: {p.stderr[-3000:]}"
    res = json.loads(p.stdout)
    return {c[0]: (c, r) for c, r in zip(cases, res)}


def _cli_ids() -> List[str]:
    # the ids only (paths are filled in by the fixture); the same order as _cli_cases
    fake = {k: f"/x/{k}" for k in ("dir", "fifo", "missing", "shard", "shard_ids", "shard_magic", "shard_short",
                                   "ckpt", "ckpt_magic", "ckpt_short", "ckpt_dims", "tok_bad", "text", "afile",
                                   "state_dir")}
    return [c[0] for c in _cli_cases(fake)]


@pytest.mark.parametrize("case_id", _cli_ids())
def test_cli_bad_input(cli_results, case_id):
    (cid, argv, needles), r = cli_results[case_id]
    assert r["tb"] is None, f"pyllmc {' '.join(argv)} raised instead of exiting 2:\n{r['tb']}"
    lines = [ln for ln in r["stderr"].splitlines() if ln.strip()]
    assert r["rc"] == 2, f"exit {r['rc']} for pyllmc {' '.join(argv)}; stderr: {r['stderr'][-2000:]}"
    assert len(lines) == 1, f"stderr is not one line: {r['stderr'][-2000:]}"
    assert "Traceback" not in r["stderr"]
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"


@pytest.mark.parametrize("argv_of", [
    lambda f: ["sample", "--model", f["ckpt_magic"]],
    lambda f: ["train", "--model", "d1", "--data", f["fifo"], "--steps", "1", "--batch", "1", "--seq", "4",
               "--lr", "1e-3", "--out", f["dir"] + "/sp"],
    lambda f: ["info", "--bogus"],
], ids=["bad_checkpoint", "fifo_data", "bad_flag"])
def test_cli_process_exit_status(cli_files, argv_of):
    """The real process: `python -m pyllmc ...` exits 2 with one line on stderr."""
    argv = argv_of(cli_files)
    p = subprocess.run([sys.executable, "-m", "pyllmc", *argv], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2 and len(lines) == 1, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr


def test_pyllmc_error_is_the_base_of_every_typed_error():
    for cls in (InvalidArgumentError, pyllmc.OutOfMemoryError, FileError, BadFormatError, pyllmc.StateError,
                UnsupportedError):
        assert issubclass(cls, PyllmcError)
