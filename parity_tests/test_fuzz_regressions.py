"""Every input that ever crashed a reader stays a test (issue 8 §4).

- core_c/fuzz/regressions/*: inputs of the C checkpoint loader. Replayed here through the
  binding (load, then one training step; typed error or success) and, under ASan/UBSan and
  valgrind, by the nox sessions asan, memcheck and fuzz.
- fuzz/regressions/<target>/*: inputs that made a Python reader raise something other than a
  PyllmcError (or accept what it must refuse). Each must now be REFUSED with a typed error.
- The seed corpora (core_c/fuzz/corpus, fuzz/corpus) are replayed through the same harness
  (fuzz/fuzz_loaders.py): every reader on every seed, typed error or usable result.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from pyllmc import Model, PyllmcError

ROOT = Path(__file__).resolve().parents[1]
C_REGRESSIONS = ROOT / "core_c" / "fuzz" / "regressions"
PY_REGRESSIONS = ROOT / "fuzz" / "regressions"


def _harness_module():
    spec = importlib.util.spec_from_file_location("pyllmc_fuzz_loaders", ROOT / "fuzz" / "fuzz_loaders.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


H = _harness_module()
NEEDS_TORCH = {"checkpoint_py", "hf_config"}


def _files(d: Path):
    return sorted(p for p in d.iterdir() if p.is_file()) if d.is_dir() else []


def _harness(target: str, tmp_path: Path):
    if target in NEEDS_TORCH:
        pytest.importorskip("torch")
        pytest.importorskip("safetensors")
    return H.Harness(target, tmp_path)


def test_regression_sets_are_not_empty():
    # the replays below must not pass vacuously because a directory went missing
    assert _files(C_REGRESSIONS)
    assert any(_files(d) for d in PY_REGRESSIONS.iterdir())


@pytest.mark.parametrize("path", _files(C_REGRESSIONS), ids=lambda p: p.name)
def test_c_loader_regression(tmp_path, path):
    _harness("checkpoint_model", tmp_path).run(path.read_bytes())  # raises on a non-typed error


def test_nan_weights_load_and_propagate(tmp_path):
    """expf_nan_weight_ub.bin: NaN weights are not the loader's business (numerical faults are
    the trainer's); they load, and the NaN reaches the loss instead of crashing anything."""
    p = tmp_path / "nan.bin"
    p.write_bytes((C_REGRESSIONS / "expf_nan_weight_ub.bin").read_bytes())
    with Model.from_checkpoint(p, max_batch=1, max_seq=2, threads=1) as m:
        assert np.isnan(m.params["wte"][0, 0])
        loss = m.forward(np.zeros((1, 2), np.int32), np.ones((1, 2), np.int32))
        assert np.isnan(loss)


_PY_CASES = [(d.name, p) for d in sorted(PY_REGRESSIONS.iterdir()) if d.is_dir() for p in _files(d)]


@pytest.mark.parametrize("target,path", _PY_CASES, ids=[f"{t}/{p.name}" for t, p in _PY_CASES])
def test_python_reader_regression_is_refused(tmp_path, target, path):
    h = _harness(target, tmp_path)
    with pytest.raises(PyllmcError):
        h.fn(path.read_bytes())  # the bare target: a typed error, not success, not another type


_SEEDS = [(t, p) for t, dirs in H.SEEDS.items() for d in dirs for p in _files(d)]


@pytest.mark.parametrize("target,path", _SEEDS, ids=[f"{t}/{p.name}" for t, p in _SEEDS])
def test_seed_corpus_replay(tmp_path, target, path):
    _harness(target, tmp_path).run(path.read_bytes())
