"""The C core as WebAssembly (device="wasm", pyllmc.wasm_core): the same Model, named tensors,
errors and checkpoints as the native core, zero-copy views on the module's linear memory,
the sandbox's file access, and the 4 GiB check.

Runs in `nox -s wasm` (test_wasm_*.py); without a built libllmc.wasm or wasmtime it skips,
except under PYLLMC_REQUIRE_WASM=1 (CI), where a missing core fails."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pyllmc
from pyllmc import (BadFormatError, FileError, GPTConfig, InvalidArgumentError, Model, OutOfMemoryError,
                    StateError)
from pyllmc.wasm_core import MEMORY_LIMIT, unavailable_reason

ROOT = Path(__file__).resolve().parents[1]


def _require_core():
    why = unavailable_reason()
    if why is None:
        return
    if os.environ.get("PYLLMC_REQUIRE_WASM") == "1":
        pytest.fail(f"PYLLMC_REQUIRE_WASM=1 but the wasm core is not available: {why}", pytrace=False)
    pytest.skip(f"no wasm core: {why}", allow_module_level=True)


_require_core()

CFG = GPTConfig(max_seq_len=96, vocab_size=200, padded_vocab_size=256, num_layers=2, num_heads=4, channels=32)


def _batch(B=2, T=80, V=200, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))


def _pair(**kw):
    args = dict(max_batch=2, max_seq=80, threads=1, seed=5)
    args.update(kw)
    return Model.from_config(CFG, **args), Model.from_config(CFG, device="wasm", **args)


def test_same_tensors_same_initialisation():
    cpu, wasm = _pair()
    assert wasm.device == "wasm" and wasm.options.device == "wasm"
    assert [(t.name, t.kind, t.shape, t.offset) for t in cpu.tensors()] == \
           [(t.name, t.kind, t.shape, t.offset) for t in wasm.tensors()]
    for name, p in cpu.params.items():
        assert np.array_equal(p, wasm.params[name]), name  # the same seed gives the same weights


def test_forward_and_one_step_agree_with_native():
    from pyllmc.reference.tolerance import compare, judge

    cpu, wasm = _pair()
    x, y = _batch()
    lc, lw = cpu.forward(x, y), wasm.forward(x, y)
    cpu.backward(accumulate=False)
    wasm.backward(accumulate=False)
    row = judge(compare("logits", wasm.acts["logits"], cpu.acts["logits"]))
    assert row["passed"], row
    for name in cpu.grads:
        row = judge(compare(f"grad.{name}", wasm.grads[name], cpu.grads[name]))
        assert row["passed"], (name, row["direct_ratio"])
    assert abs(lc - lw) <= 1e-5 * abs(lc)


def test_views_are_zero_copy_and_survive_growth():
    """numpy views look into linear memory: a write through a view is seen by the core, and
    the memory's base does not move when it grows (memory_may_move = False)."""
    m = Model.from_config(CFG, device="wasm", max_batch=2, max_seq=80, threads=1, seed=1)
    inst = m._lib.instance
    base = inst.base_address()
    wte = m.params["wte"]
    lo, hi = inst.base_address(), inst.base_address() + inst.size()
    assert lo <= wte.__array_interface__["data"][0] < hi
    wte[3, :] = 0.25
    assert np.all(m.copy_to_host("params", "wte")[3] == 0.25)  # the core reads what the view wrote
    size0 = inst.size()
    big = Model.from_config(CFG, device="wasm", max_batch=2, max_seq=80, threads=1, seed=1)  # another instance
    assert big._lib.instance is not inst
    p = inst.malloc(256 << 20)  # grow this instance's memory by 256 MiB
    assert inst.size() > size0 and inst.base_address() == base
    inst.free(p)
    assert np.all(wte[3] == 0.25)  # the old view still sees the model's memory
    x, y = _batch()
    m.forward(x, y)
    assert m.acts["logits"].__array_interface__["data"][0] >= base


def test_errors_are_typed_with_the_core_messages(tmp_path):
    m = Model.from_config(CFG, device="wasm", max_batch=2, max_seq=80, threads=1)
    with pytest.raises(StateError, match="forward"):
        m.backward()
    with pytest.raises(InvalidArgumentError):
        m.debug_set_fault("no.such.tensor", 1.0)
    with pytest.raises(InvalidArgumentError):
        Model.from_config(GPTConfig(16, 60, 64, 2, 3, 16), device="wasm", max_batch=1)
    missing = tmp_path / "nope" / "m.bin"
    with pytest.raises(FileError, match="nope"):
        Model.from_checkpoint(missing, device="wasm")
    with pytest.raises(FileError, match=str(tmp_path / "absent.bin")):
        Model.from_checkpoint(tmp_path / "absent.bin", device="wasm")  # the host path, not /sandbox
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"\0" * 2000)
    with pytest.raises(BadFormatError, match="bad.bin"):
        Model.from_checkpoint(bad, device="wasm")
    m.close()
    with pytest.raises(StateError):
        m.forward(*_batch())


def test_checkpoints_move_between_cores_bit_exactly(tmp_path):
    cpu, wasm = _pair()
    x, y = _batch()
    for t in range(1, 3):
        for m in (cpu, wasm):
            m.forward(x, y)
            m.backward(accumulate=False)
            m.adamw_step(1e-3, t=t)
    wasm.save(tmp_path / "w.bin")
    cpu.save(tmp_path / "c.bin")
    # wasm -> native -> wasm: every save of the same parameters is the same bytes
    back = Model.from_checkpoint(tmp_path / "w.bin", max_batch=2)
    back.save(tmp_path / "w_native.bin")
    assert (tmp_path / "w_native.bin").read_bytes() == (tmp_path / "w.bin").read_bytes()
    again = Model.from_checkpoint(tmp_path / "c.bin", device="wasm", max_batch=2)
    again.save(tmp_path / "c_wasm.bin")
    assert (tmp_path / "c_wasm.bin").read_bytes() == (tmp_path / "c.bin").read_bytes()
    for name, p in wasm.params.items():
        assert np.array_equal(back.params[name], p), name


def test_sandbox_sees_only_the_directory_of_the_call(tmp_path):
    """Between calls the instance has no directory; a load sees the file's directory only:
    a path that climbs out of it (through a symlink to a directory elsewhere) is resolved
    on the host first, so the preopen is the real directory and nothing above it."""
    from pyllmc.wasm_core.runtime import sandbox_path

    d = tmp_path / "a" / "b"
    d.mkdir(parents=True)
    host_dir, guest = sandbox_path(os.fsencode(d / "m.bin"), True)
    assert host_dir == os.path.realpath(d) and guest == b"/sandbox/m.bin"
    m = Model.from_config(CFG, device="wasm", max_batch=1, threads=1)
    m.save(d / "m.bin")
    link = tmp_path / "link.bin"
    link.symlink_to(d / "m.bin")
    m2 = Model.from_checkpoint(link, device="wasm", max_batch=1)
    assert np.array_equal(m2.params["wpe"], m.params["wpe"])
    # a save leaves no temporary behind and writes nothing but its file
    assert sorted(p.name for p in d.iterdir()) == ["m.bin"]


def test_memory_check_names_the_size():
    cfg = GPTConfig.from_size("d24")
    with pytest.raises(OutOfMemoryError, match=r"GiB.*4\.0 GiB"):
        Model.from_config(cfg, device="wasm", max_batch=4, max_seq=64)
    from pyllmc.wasm_core.memory import needed_bytes

    assert needed_bytes(GPTConfig.from_size("d12"), 4, 64) < MEMORY_LIMIT  # d12 B4 T64 fits


def test_import_without_native_library_offers_the_wasm_core(tmp_path):
    """A native library that cannot be loaded: `import pyllmc` still works, warns once that
    the wasm core is available, and device="wasm" trains; the native device says why not."""
    code = (
        "import warnings, numpy as np\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    import pyllmc\n"
        "msgs = [str(x.message) for x in w]\n"
        "assert len(msgs) == 1 and 'wasm' in msgs[0] and 'not-a-library' in msgs[0], msgs\n"
        "assert pyllmc.LIBRARY_PATH is None\n"
        "m = pyllmc.Model.from_config('d1', device='wasm', max_batch=1, max_seq=8, threads=1)\n"
        "x = np.zeros((1, 8), np.int64)\n"
        "assert m.forward(x, x) > 0\n"
        "try:\n"
        "    pyllmc.Model.from_config('d1', max_batch=1, max_seq=8)\n"
        "except pyllmc.UnsupportedError as e:\n"
        "    assert 'wasm' in str(e)\n"
        "else:\n"
        "    raise SystemExit('the native device worked without a native library')\n"
        "print('ok')\n")
    fake = tmp_path / "not-a-library.so"
    fake.write_bytes(b"this is not an ELF file")
    env = dict(os.environ, PYLLMC_LIBRARY=str(fake))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "pyllmc", *map(str, args)], capture_output=True, text=True, timeout=600)


def test_cli_train_and_sample_on_wasm(tmp_path):
    text = tmp_path / "input.txt"
    text.write_text("".join(f"Line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(300)))
    r = _cli("prepare-data", text, "--out", tmp_path / "data", "--val-frac", "0.1", "--shard-tokens", "8000")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "run"
    r = _cli("train", "--model", "d1", "--max-seq-len", "16", "--data", tmp_path / "data" / "train_000000.bin",
             "--steps", "3", "--batch", "1", "--seq", "8", "--lr", "1e-3", "--threads", "1", "--device", "wasm",
             "--out", out, "--progress", "lines", "--no-plot")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "step 3/3" in r.stdout
    ckpts = sorted(out.rglob("*.bin"))
    assert ckpts, sorted(out.rglob("*"))
    r = _cli("sample", "--model", out, "--device", "wasm", "--max-tokens", "5", "--prompt", "Line",
             "--tokenizer", tmp_path / "data" / "tokenizer.bin")
    assert r.returncode == 0, r.stdout + r.stderr


def test_version_and_exports():
    from pyllmc._ffi import ABI_VERSION
    from pyllmc.wasm_core.lib import WasmLib

    lib = WasmLib()
    assert lib.llmc_abi_version() == ABI_VERSION
    assert lib.llmc_has_openmp() == 0 and lib.llmc_built_with_cuda() == 0
    assert pyllmc.errors.STATUS_OK == 0
