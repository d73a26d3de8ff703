"""Hostile input against the wasm core (device="wasm"): the hostile-input tables of
test_hostile_input.py (checkpoints, configs, options, token ids), the checkpoint fuzz corpus
and saved regressions of core_c/fuzz, and seeded byte mutations of a good checkpoint. Each
input must give what the native core gives: a model that then trains a step, or the typed
error of the same class; a trap of the module (WasmTrapError) or any other exception fails.

Runs in `nox -s wasm`; skips without a wasm core unless PYLLMC_REQUIRE_WASM=1."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest

import test_hostile_input as hi
from pyllmc import InvalidArgumentError, Model, PyllmcError
from pyllmc.wasm_core import unavailable_reason

ROOT = Path(__file__).resolve().parents[1]

if unavailable_reason() is not None:
    if os.environ.get("PYLLMC_REQUIRE_WASM") == "1":
        pytest.fail(f"PYLLMC_REQUIRE_WASM=1 but the wasm core is not available: {unavailable_reason()}",
                    pytrace=False)
    pytest.skip(f"no wasm core: {unavailable_reason()}", allow_module_level=True)

from pyllmc.wasm_core.runtime import WasmTrapError  # noqa: E402


def _outcome(fn):
    """("ok", None) or ("error", exception class): never a trap, never an untyped exception."""
    try:
        fn()
    except WasmTrapError as e:
        pytest.fail(f"the wasm core trapped: {e}")
    except PyllmcError as e:
        assert "\n" not in str(e).strip(), str(e)
        return "error", type(e)
    return "ok", None


def _load_and_step(path, device):
    with Model.from_checkpoint(path, max_batch=1, max_seq=1, threads=1, device=device) as m:
        x = np.zeros((1, 1), np.int64)
        m.forward(x, x)
        m.backward(accumulate=False)
        m.clip_grad_norm(1.0)
        m.adamw_step(1e-3, t=1)


def _same_as_native(path):
    native = _outcome(lambda: _load_and_step(path, "cpu"))
    wasm = _outcome(lambda: _load_and_step(path, "wasm"))
    assert wasm == native, (path, native, wasm)
    return wasm


@pytest.mark.parametrize("name,data,fragment", hi.CKPT_CASES, ids=[c[0] for c in hi.CKPT_CASES])
def test_checkpoint_cases(tmp_path, name, data, fragment):
    p = tmp_path / f"{name}.bin"
    p.write_bytes(data)
    hi._raises(lambda: Model.from_checkpoint(p, max_batch=1, max_seq=1, threads=1, device="wasm"),
               hi.BadFormatError, p, fragment)


def test_checkpoint_special_files(tmp_path):
    for kind in hi.SPECIAL:
        p = hi._special(tmp_path, kind)
        hi._raises(lambda p=p: Model.from_checkpoint(p, max_batch=1, device="wasm"), hi.FileError, p)


@pytest.mark.parametrize("name,fields", hi.CONFIG_CASES, ids=[c[0] for c in hi.CONFIG_CASES])
def test_bad_config(name, fields):
    cfg = hi.GPTConfig(*fields)
    hi._raises(lambda: Model.from_config(cfg, max_batch=1, max_seq=1, threads=1, device="wasm"),
               InvalidArgumentError, None)


@pytest.mark.parametrize("name,kw,exc", hi.OPTION_CASES, ids=[c[0] for c in hi.OPTION_CASES])
def test_bad_options(name, kw, exc):
    kw = dict(kw)
    cfg = kw.pop("config", hi.GPTConfig(16, 60, 64, 2, 2, 16))
    args = dict(max_batch=1, threads=1, device="wasm")
    args.update(kw)
    hi._raises(lambda: Model.from_config(cfg, **args), exc, None)


@pytest.fixture(scope="module")
def small_model():
    with Model.from_config(hi.GPTConfig(16, 60, 64, 1, 2, 16), max_batch=2, threads=1, seed=3, device="wasm") as m:
        yield m


@pytest.mark.parametrize("name,x,y,fragment", hi.FORWARD_CASES, ids=[c[0] for c in hi.FORWARD_CASES])
def test_forward_bad_tokens(small_model, name, x, y, fragment):
    hi._raises(lambda: small_model.forward(x, y), InvalidArgumentError, None, fragment)


def _corpus():
    files = sorted((ROOT / "core_c" / "fuzz" / "corpus" / "checkpoint").glob("*"))
    files += sorted((ROOT / "core_c" / "fuzz" / "regressions").glob("*"))
    return [f for f in files if f.is_file()]


def test_fuzz_corpus_and_regressions_as_native(tmp_path):
    files = _corpus()
    assert len(files) >= 10, files
    outcomes = [_same_as_native(f) for f in files]
    assert ("ok", None) in outcomes and any(o[0] == "error" for o in outcomes)  # both kinds are exercised


def test_mutated_checkpoints_as_native(tmp_path):
    """200 seeded mutations (byte flips, truncations, header slots set to extremes) of a good
    checkpoint: the wasm core answers each exactly as the native core does."""
    good = bytearray(hi.ckpt(3))
    rng = random.Random(17)
    kinds = {"ok": 0, "error": 0}
    for i in range(200):
        data = bytearray(good)
        op = i % 4
        if op == 0:
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif op == 1:
            data = data[: rng.randrange(len(data))]
        elif op == 2:
            slot = rng.randrange(2, 8)
            data[4 * slot: 4 * slot + 4] = rng.choice([0, -1, 2**31 - 1, 2**16, 3]).to_bytes(4, "little", signed=True)
        else:  # weights: NaN, Inf, huge
            off = 1024 + 4 * rng.randrange((len(data) - 1024) // 4)
            data[off: off + 4] = rng.choice([b"\x00\x00\xc0\x7f", b"\x00\x00\x80\x7f", b"\xff\xff\x7f\x7f"])
        p = tmp_path / f"m{i}.bin"
        p.write_bytes(bytes(data))
        kinds[_same_as_native(p)[0]] += 1
        p.unlink()
    assert kinds["ok"] > 0 and kinds["error"] > 0, kinds
