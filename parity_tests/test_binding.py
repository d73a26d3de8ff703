"""The cffi binding and the Model wrapper: exports, struct sizes, error mapping, lifetimes,
zero-copy views, input validation, CLI. Tiny models only; no torch needed."""

from __future__ import annotations

import gc
import math
import os
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pyllmc
from pyllmc import GPTConfig, Model, errors
from pyllmc import _ffi
from pyllmc._ffi import ffi, lib

TINY = GPTConfig(max_seq_len=16, vocab_size=60, padded_vocab_size=64, num_layers=2, num_heads=2, channels=16)
KIND_ATTRS = ("params", "grads", "adam_m", "adam_v", "acts")


def tiny(seed: int = 0, max_batch: int = 2, **kw) -> Model:
    return Model.from_config(TINY, max_batch=max_batch, threads=1, seed=seed, **kw)


def batch(seed: int = 0, B: int = 2, T: int = 8, V: int = TINY.vocab_size):
    rng = np.random.default_rng(seed)
    return rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))


# ------------------------------------------------------------------ library and header


def _exported_llmc_symbols(path: str):
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm is not available")
    args = [nm, "-gU", path] if sys.platform == "darwin" else [nm, "-D", "--defined-only", path]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    names = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[-2] in ("T", "t", "W"):
            name = parts[-1].lstrip("_") if sys.platform == "darwin" else parts[-1]
            if name.startswith("llmc_"):
                names.add(name)
    return names


def test_every_declared_function_is_exported_and_nothing_else():
    declared = set(_ffi.FUNCTIONS)
    assert "llmc_model_forward" in declared and len(declared) >= 20
    exported = _exported_llmc_symbols(str(_ffi.LIBRARY_PATH))
    assert declared - exported == set(), "declared in llmc.h but not exported"
    assert exported - declared == set(), "exported but not declared in the cdef block"


def test_every_declared_function_resolves_through_cffi():
    for name in _ffi.FUNCTIONS:
        assert callable(getattr(lib, name)), name


def test_cdef_block_is_plain_declarations():
    assert "LLMC_API" not in _ffi.CDEF
    assert "#" not in _ffi.CDEF
    header = _ffi.HEADER_PATH.read_text()
    assert _ffi.CDEF_BEGIN in header and _ffi.CDEF_END in header


def test_abi_version_matches_header():
    assert lib.llmc_abi_version() == _ffi.ABI_VERSION == pyllmc.ABI_VERSION


@pytest.mark.parametrize("name", _ffi.STRUCTS)
def test_struct_sizes_match(name):
    assert lib.llmc_struct_size(name.encode()) == ffi.sizeof(name)


def test_stale_library_is_rejected():
    class Fake:
        def __init__(self, abi, sizes):
            self.abi, self.sizes = abi, sizes

        def llmc_abi_version(self):
            return self.abi

        def llmc_struct_size(self, name):
            return self.sizes.get(name.decode(), ffi.sizeof(name.decode()))

    _ffi.verify_library(ffi, Fake(_ffi.ABI_VERSION, {}), _ffi.ABI_VERSION, "libgood.so")
    with pytest.raises(ImportError, match="stale"):
        _ffi.verify_library(ffi, Fake(_ffi.ABI_VERSION + 1, {}), _ffi.ABI_VERSION, "libold.so")
    with pytest.raises(ImportError, match="llmc_options"):
        _ffi.verify_library(ffi, Fake(_ffi.ABI_VERSION, {"llmc_options": 12}), _ffi.ABI_VERSION, "libold.so")


def test_status_names_and_error_classes():
    codes = {
        lib.LLMC_ERR_INVALID_ARGUMENT: (errors.InvalidArgumentError, ValueError),
        lib.LLMC_ERR_OUT_OF_MEMORY: (errors.OutOfMemoryError, MemoryError),
        lib.LLMC_ERR_IO: (errors.FileError, OSError),
        lib.LLMC_ERR_BAD_FORMAT: (errors.BadFormatError, ValueError),
        lib.LLMC_ERR_BAD_STATE: (errors.StateError, RuntimeError),
        lib.LLMC_ERR_UNSUPPORTED: (errors.UnsupportedError, NotImplementedError),
    }
    assert lib.LLMC_OK == 0
    for code, (cls, builtin) in codes.items():
        assert errors.error_class(code) is cls
        assert issubclass(cls, errors.PyllmcError) and issubclass(cls, builtin)
        assert _ffi.status_name(code)
        e = errors.error_for(code, "what went wrong")
        assert str(e) == "what went wrong" and e.status == code
    assert errors.error_class(99) is errors.PyllmcError
    errors.check(0)  # no exception


# ------------------------------------------------------------------ errors from C


def test_bad_config_is_invalid_argument_with_message():
    bad = GPTConfig(16, 60, 64, 2, 3, 16)  # 16 channels, 3 heads
    with pytest.raises(pyllmc.InvalidArgumentError) as info:
        Model.from_config(bad)
    assert str(info.value).strip()
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "cfg",
    [
        GPTConfig(16, 60, 32, 2, 2, 16),  # Vp < V
        GPTConfig(0, 60, 64, 2, 2, 16),
        GPTConfig(16, 0, 64, 2, 2, 16),
        GPTConfig(16, 60, 64, 0, 2, 16),
        GPTConfig(16, 60, 64, 2, 0, 16),
        GPTConfig(16, 60, 64, 2, 2, -16),
    ],
)
def test_more_bad_configs(cfg):
    with pytest.raises(pyllmc.InvalidArgumentError):
        Model.from_config(cfg)


def test_bad_options():
    for kw in ({"max_batch": 0}, {"max_seq": 17}, {"threads": -1}):
        with pytest.raises(pyllmc.InvalidArgumentError):
            Model.from_config(TINY, **kw)


def test_missing_checkpoint_is_file_error(tmp_path):
    path = tmp_path / "nope.bin"
    with pytest.raises(pyllmc.FileError) as info:
        Model.from_checkpoint(path)
    assert isinstance(info.value, OSError)
    assert "nope.bin" in str(info.value)


def test_wrong_magic_is_bad_format_naming_the_file(tmp_path):
    path = tmp_path / "wrong_magic.bin"
    path.write_bytes(struct.pack("<256i", 1234, 3, 16, 60, 2, 2, 16, 64, *([0] * 248)) + b"\0" * 4096)
    with pytest.raises(pyllmc.BadFormatError) as info:
        Model.from_checkpoint(path)
    assert "wrong_magic.bin" in str(info.value)
    # the C message itself names the file (not only the Python wrapper)
    out = ffi.new("llmc_model **")
    opt = ffi.new("llmc_options *", {"max_batch": 1})
    assert lib.llmc_model_load(os.fsencode(path), opt, out) == lib.LLMC_ERR_BAD_FORMAT
    assert out[0] == ffi.NULL
    assert "wrong_magic.bin" in _ffi.string(lib.llmc_last_error())


@pytest.mark.parametrize("size", [0, 100, 1024, 1024 + 4 * 10])
def test_truncated_checkpoint_is_bad_format(tmp_path, size):
    path = tmp_path / "short.bin"
    header = struct.pack("<256i", 20240326, 3, 16, 60, 2, 2, 16, 64, *([0] * 248))
    path.write_bytes((header + b"\0" * 64)[:size])
    with pytest.raises(pyllmc.BadFormatError, match="short.bin"):
        Model.from_checkpoint(path)


def test_save_to_unwritable_path_is_file_error(tmp_path):
    with tiny() as m:
        with pytest.raises(pyllmc.FileError, match="no_such_dir"):
            m.save(tmp_path / "no_such_dir" / "m.bin")


def test_backward_in_wrong_order_is_state_error():
    x, y = batch()
    with tiny() as m:
        with pytest.raises(pyllmc.StateError):
            m.backward()  # no forward yet
        m.forward(x)
        with pytest.raises(pyllmc.StateError):
            m.backward()  # forward had no targets
        m.forward(x, y)
        m.zero_grad()
        m.backward()


# ------------------------------------------------------------------ lifetime


def test_closed_model_raises_state_error():
    x, y = batch()
    m = tiny()
    m.forward(x, y)
    m.close()
    m.close()  # idempotent
    assert m.closed
    calls = [
        lambda: m.forward(x, y),
        m.zero_grad,
        m.backward,
        m.grad_norm,
        lambda: m.clip_grad_norm(1.0),
        lambda: m.adamw_step(1e-3, t=1),
        m.logits,
        lambda: m.params,
        lambda: m.acts,
        lambda: m.flat("grads"),
        lambda: m.options,
        lambda: m.set_threads(1),
        lambda: m.save("x.bin"),
    ]
    for call in calls:
        with pytest.raises(pyllmc.StateError):
            call()


def test_context_manager_closes():
    with tiny() as m:
        assert not m.closed
    assert m.closed


def test_views_keep_the_model_alive():
    wte = tiny(seed=3).params["wte"]  # the Model object is gone at once
    acts = tiny(seed=3).flat("acts")
    gc.collect()
    before = float(wte.sum())
    wte[0, 0] += 1.0
    assert float(wte.sum()) == pytest.approx(before + 1.0)
    acts[:] = 0.0
    del wte, acts
    gc.collect()


def test_many_models_created_and_dropped():
    for seed in range(20):
        tiny(seed=seed).forward(*batch(seed))
    gc.collect()


# ------------------------------------------------------------------ independence, views


def test_two_models_are_independent():
    x, y = batch()
    a, b = tiny(seed=1), tiny(seed=2)
    assert not np.array_equal(a.params["wte"], b.params["wte"])
    assert not np.shares_memory(a.flat("params"), b.flat("params"))
    b_params = b.flat("params").copy()
    la = a.forward(x, y)
    lb = b.forward(x, y)
    a.zero_grad()
    a.backward()
    a.adamw_step(1e-2, t=1)
    np.testing.assert_array_equal(b.flat("params"), b_params)
    assert b.forward(x, y) == lb
    assert a.forward(x, y) != la
    a.close()
    assert b.forward(x, y) == lb


def test_same_seed_same_model_and_deterministic_forward():
    x, y = batch()
    a, b = tiny(seed=5), tiny(seed=5)
    np.testing.assert_array_equal(a.flat("params"), b.flat("params"))
    assert a.forward(x, y) == b.forward(x, y) == a.forward(x, y)
    np.testing.assert_array_equal(a.logits(), b.logits())


def test_tensor_table():
    with tiny() as m:
        shapes = TINY.param_shapes()
        for kind in ("params", "grads", "adam_m", "adam_v"):
            views = getattr(m, kind)
            assert {k: v.shape for k, v in views.items()} == shapes
            assert m.flat(kind).size == TINY.num_params()
            for v in views.values():
                assert v.dtype == np.float32 and v.flags.writeable and v.flags.c_contiguous
        names = [t.name for t in m.tensors("params")]
        assert names == list(shapes)  # checkpoint order
        acts = m.acts
        for name in ("encoded", "h0.ln1", "h1.qkv", "h0.att", "h1.residual3", "lnf", "logits", "probs", "losses"):
            assert name in acts, name


def test_views_are_zero_copy():
    x, y = batch()
    with tiny() as m:
        flat = m.flat("params")
        for v in m.params.values():
            assert np.shares_memory(v, flat)
        assert m.params["lnfw"] is not None and m.flat("params") is flat  # cached
        loss = m.forward(x, y)
        # write through the named views: with lnf weight and bias zero every logit is 0
        m.params["lnfw"][:] = 0.0
        m.params["lnfb"][:] = 0.0
        loss0 = m.forward(x, y)
        assert loss0 != loss
        assert loss0 == pytest.approx(math.log(TINY.vocab_size), rel=1e-5)
        np.testing.assert_array_equal(m.logits(), 0.0)
        # and through the flat view
        off = m.tensors("params")[-1].offset  # lnfb
        flat[off] = 1.0
        assert m.params["lnfb"][0] == 1.0
        assert m.forward(x, y) != loss0


def test_acts_follow_last_forward_shape():
    V, Vp, NH = TINY.vocab_size, TINY.padded_vocab_size, TINY.num_heads
    with tiny() as m:
        with pytest.raises(pyllmc.StateError):
            m.logits()
        assert m.acts["logits"].shape == (2, 16, Vp)  # max_batch, max_seq before any forward
        m.forward(np.zeros((1, 3), np.int64))
        acts = m.acts
        assert acts["logits"].shape == (1, 3, Vp)
        assert acts["h0.att"].shape == (1, NH, 3, 3)
        assert acts["h1.fch"].shape == (1, 3, 4 * TINY.channels)
        lg = m.logits()
        assert lg.shape == (1, 3, V)
        assert np.shares_memory(lg, m.flat("acts"))
        np.testing.assert_array_equal(lg, acts["logits"][..., :V])
        x, y = batch(B=2, T=5)
        loss = m.forward(x, y)
        assert m.logits().shape == (2, 5, V)
        probs = m.acts["probs"][..., :V]
        np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
        losses = m.acts["losses"]
        assert losses.shape == (2, 5)
        assert float(losses.mean()) == pytest.approx(loss, rel=1e-5)


def test_training_step_pieces():
    x, y = batch()
    with tiny() as m:
        m.zero_grad()
        np.testing.assert_array_equal(m.flat("grads"), 0.0)
        l0 = m.forward(x, y)
        assert l0 == pytest.approx(math.log(TINY.vocab_size), rel=0.2)
        m.backward()
        g = m.flat("grads").astype(np.float64)
        assert np.abs(g).sum() > 0
        norm = m.grad_norm()
        assert norm == pytest.approx(float(np.sqrt((g * g).sum())), rel=1e-4)
        # backward consumes probs (d logits are computed in place): a second one needs a new forward
        with pytest.raises(pyllmc.StateError):
            m.backward()
        # accumulation: a second forward + backward adds the same gradient
        m.forward(x, y)
        m.backward(0.5)
        assert m.grad_norm() == pytest.approx(1.5 * norm, rel=1e-4)
        before = m.clip_grad_norm(0.1 * norm)
        assert before == pytest.approx(1.5 * norm, rel=1e-4)
        assert m.grad_norm() == pytest.approx(0.1 * norm, rel=1e-3)
        p0 = m.flat("params").copy()
        m.adamw_step(1e-2, t=1, weight_decay=0.1)
        assert not np.array_equal(m.flat("params"), p0)
        assert np.abs(m.flat("adam_m")).sum() > 0 and np.abs(m.flat("adam_v")).sum() > 0
        for step in range(2, 6):
            m.zero_grad()
            m.forward(x, y)
            m.backward()
            m.adamw_step(1e-2, t=step)
        assert m.forward(x, y) < l0


def test_adamw_argument_validation():
    with tiny() as m:
        for bad in ({"t": 0}, {"t": 1.5}, {"t": True}):
            with pytest.raises(pyllmc.InvalidArgumentError):
                m.adamw_step(1e-3, **bad)
        with pytest.raises(pyllmc.InvalidArgumentError):
            m.adamw_step("fast", t=1)


def test_save_load_roundtrip(tmp_path):
    path = tmp_path / "m.bin"
    x, y = batch()
    with tiny(seed=7) as m:
        m.save(path)
        assert path.stat().st_size == 1024 + 4 * TINY.num_params()
        header = np.fromfile(path, dtype="<i4", count=256)
        assert list(header[:8]) == [20240326, 3, 16, 60, 2, 2, 16, 64]
        assert not header[8:].any()
        with Model.from_checkpoint(path, max_batch=2, threads=1) as m2:
            assert m2.config == TINY
            np.testing.assert_array_equal(m.flat("params"), m2.flat("params"))
            assert m.forward(x, y) == m2.forward(x, y)


def test_options_and_threads():
    with Model.from_config(TINY, max_batch=3, max_seq=8, threads=1) as m:
        o = m.options
        assert (o.max_batch, o.max_seq) == (3, 8)
        m.set_threads(2)
        m.set_threads(0)
        with pytest.raises(pyllmc.InvalidArgumentError):
            m.set_threads(-1)
        with pytest.raises(pyllmc.InvalidArgumentError):
            m.forward(np.zeros((1, 9), np.int32))  # T > max_seq
    with tiny() as m:
        assert m.options.max_seq in (0, TINY.max_seq_len)
        assert m.max_seq == TINY.max_seq_len


# ------------------------------------------------------------------ input validation


@pytest.mark.parametrize(
    "inputs,targets,match",
    [
        (np.zeros((2, 4), np.float32), None, "integer"),
        (np.zeros(4, np.int32), None, "shape"),
        (np.zeros((1, 2, 3), np.int32), None, "shape"),
        (np.zeros((3, 4), np.int32), None, "batch"),
        (np.zeros((0, 4), np.int32), None, "batch"),
        (np.zeros((1, 0), np.int32), None, "sequence"),
        (np.zeros((1, 17), np.int32), None, "sequence"),
        (np.array([[0, 60]]), None, r"inputs\[0, 1\] = 60"),
        (np.array([[0, -1]]), None, r"inputs\[0, 1\] = -1"),
        (np.array([[0, 1]]), np.array([[0, 99]]), r"targets\[0, 1\] = 99"),
        (np.array([[0, 1]]), np.array([[0, 1, 2]]), "shape"),
        (np.array([[0, 1]]), np.array([[0.0, 1.0]]), "integer"),
        ([[True, False]], None, "integer"),
        (np.array([[2**40, 1]]), None, "token id"),
    ],
)
def test_forward_rejects_bad_input(inputs, targets, match):
    with tiny() as m:
        with pytest.raises(pyllmc.InvalidArgumentError, match=match):
            m.forward(inputs, targets)


def test_forward_accepts_int_array_likes():
    with tiny() as m:
        ref = m.forward(np.array([[1, 2, 3]], np.int32), np.array([[2, 3, 4]], np.int32))
        assert m.forward([[1, 2, 3]], [[2, 3, 4]]) == ref
        assert m.forward(np.array([[1, 2, 3]], np.uint8), np.array([[2, 3, 4]], np.int64)) == ref
        big = np.array([[9, 1, 9, 2, 9, 3]], np.int64)[:, 1::2]  # not contiguous
        assert m.forward(big, [[2, 3, 4]]) == ref
        assert m.forward([[1, 2, 3]]) is None


def test_c_side_validation_without_python_checks():
    """The C core validates on its own: sizes and token ids through the raw cffi call."""
    with tiny() as m:
        ptr = m._h.ptr
        loss = ffi.new("float *")
        ok = np.zeros(8, np.int32)
        for inp, tgt, B, T in [
            (ok, ok, 3, 1),
            (ok, ok, 0, 4),
            (ok, ok, 1, 0),
            (ok, ok, 1, 17),
            (np.full(8, 60, np.int32), ok, 1, 4),
            (np.full(8, -1, np.int32), ok, 1, 4),
            (ok, np.full(8, 60, np.int32), 2, 4),
        ]:
            status = lib.llmc_model_forward(ptr, ffi.from_buffer("int32_t[]", inp), ffi.from_buffer("int32_t[]", tgt), B, T, loss)
            assert status == lib.LLMC_ERR_INVALID_ARGUMENT, (B, T)
            assert _ffi.string(lib.llmc_model_last_error(ptr))
        assert lib.llmc_model_forward(ptr, ffi.NULL, ffi.NULL, 1, 1, loss) == lib.LLMC_ERR_INVALID_ARGUMENT
        n = lib.llmc_model_num_tensors(ptr)
        info = ffi.new("llmc_tensor_info *")
        assert lib.llmc_model_tensor_info(ptr, -1, info) == lib.LLMC_ERR_INVALID_ARGUMENT
        assert lib.llmc_model_tensor_info(ptr, n, info) == lib.LLMC_ERR_INVALID_ARGUMENT
        assert lib.llmc_model_buffer(ptr, 5, ffi.new("float **"), ffi.new("int64_t *")) == lib.LLMC_ERR_INVALID_ARGUMENT
        # and the model still works afterwards
        assert np.isfinite(m.forward(*batch()))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.integers(0, 3),
    st.integers(0, 18),
    st.integers(-3, TINY.vocab_size + 3),
    st.integers(-3, TINY.vocab_size + 3),
)
def test_forward_validation_property(B, T, lo, hi):
    """Any shape and token range: either a finite loss or InvalidArgumentError, never a crash."""
    rng = np.random.default_rng(B * 1000 + T)
    lo, hi = min(lo, hi), max(lo, hi)
    x = rng.integers(lo, hi + 1, (B, T))
    in_range = x.size == 0 or (x.min() >= 0 and x.max() < TINY.vocab_size)
    valid = 1 <= B <= 2 and 1 <= T <= 16 and in_range
    m = _shared_model()
    if valid:
        assert np.isfinite(m.forward(x, x))
    else:
        with pytest.raises(pyllmc.InvalidArgumentError):
            m.forward(x, x)


_SHARED = []


def _shared_model() -> Model:
    if not _SHARED:
        _SHARED.append(tiny(seed=11))
    return _SHARED[0]


# ------------------------------------------------------------------ GPTConfig, CLI


def test_gptconfig_from_size():
    assert GPTConfig.from_size("d12") == GPTConfig(1024, 50257, 50304, 12, 12, 768)
    assert GPTConfig.from_size("d24") == GPTConfig(1024, 50257, 50304, 24, 16, 1024)
    assert GPTConfig.from_size("d36") == GPTConfig(1024, 50257, 50304, 36, 20, 1280)
    assert GPTConfig.from_size("d48") == GPTConfig(1024, 50257, 50304, 48, 25, 1600)
    assert GPTConfig.from_size("d6") == GPTConfig(1024, 50257, 50304, 6, 6, 384)
    assert GPTConfig.from_size("d2", max_seq_len=64, vocab_size=300) == GPTConfig(64, 300, 384, 2, 2, 128)
    assert GPTConfig.from_size("d12").num_params() == 124_475_904
    assert GPTConfig(8, 50257, 50257, 1, 1, 8).padded().padded_vocab_size == 50304
    assert pyllmc.pad_vocab(128) == 128 and pyllmc.pad_vocab(129) == 256
    for bad in ("12", "d0", "dx", "", "d-1"):
        with pytest.raises(pyllmc.InvalidArgumentError):
            GPTConfig.from_size(bad)


def test_model_from_descriptor_string():
    with Model.from_config("d1", max_batch=1, max_seq=4, threads=1) as m:
        assert m.config == GPTConfig.from_size("d1")


def test_cli_info(capsys):
    from pyllmc.cli import main

    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"abi version: {_ffi.ABI_VERSION}" in out
    assert str(_ffi.LIBRARY_PATH) in out
    assert "openmp: yes" in out or "openmp: no" in out


@pytest.mark.parametrize("argv", [[], ["no-such-command"], ["info", "--bogus"]])
def test_cli_bad_input_is_one_line_exit_2(capsys, argv):
    from pyllmc.cli import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "error" in err


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps (Linux)")
def test_library_stays_mapped_after_dlclose():
    """cffi closes the library when its lib object is collected at interpreter exit. If that
    unmaps it (and libgomp with it) while an OpenMP worker thread still spins after the last
    parallel region, the worker crashes: `pyllmc sample` died with SIGSEGV at exit in about 1
    run of 40. The library is linked -z nodelete; here a forward on 2 threads, then an
    explicit dlclose, and the library must still be mapped."""
    code = (
        "import numpy as np, pyllmc\n"
        "from pyllmc import _ffi\n"
        "m = pyllmc.Model.from_config(pyllmc.GPTConfig(32, 65, 128, 1, 2, 32), seed=1, threads=2)\n"
        "m.forward(np.zeros((1, 8), np.int32))\n"
        "m.close()\n"
        "path = str(_ffi.LIBRARY_PATH.resolve())\n"
        "_ffi.ffi.dlclose(_ffi.lib)\n"
        "maps = open('/proc/self/maps').read()\n"
        "print('mapped' if path in maps else 'unmapped')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "mapped"


def test_grad_add_range_adds_and_returns_the_sum_of_squares():
    """The data-parallel reduce (Model.grad_add_range): a float add into one slice of the
    gradients, the rest untouched, and bitwise grad_sumsq_range of the slice afterwards."""
    with tiny() as m:
        g = m.flat("grads")
        rng = np.random.default_rng(5)
        g[:] = rng.standard_normal(g.size).astype(np.float32)
        before = g.copy()
        off, cnt = 3, g.size - 10
        src = rng.standard_normal(cnt).astype(np.float32)
        s = m.grad_add_range(off, cnt, src)
        want = before.copy()
        want[off: off + cnt] += src
        assert g.tobytes() == want.tobytes()
        assert s == m.grad_sumsq_range(off, cnt) and s > 0


@pytest.mark.parametrize("make_src, count, message", [
    (lambda m: np.zeros(8, np.float64), 8, "float32"),
    (lambda m: np.zeros(7, np.float32), 8, "8 values"),
    (lambda m: np.zeros((2, 4), np.float32), 8, "1-D"),
    (lambda m: np.zeros(16, np.float32)[::2], 8, "contiguous"),
    (lambda m: m.flat("grads")[100:108], 8, "overlaps"),
    (lambda m: np.zeros(m.flat("grads").size, np.float32), None, "outside"),
])
def test_grad_add_range_bad_input_is_invalid_argument(make_src, count, message):
    with tiny() as m:
        src = make_src(m)
        n = src.size if count is None else count
        off = 1 if count is None else 0  # None: one float past the end of the buffer
        before = m.flat("grads").copy()
        with pytest.raises(errors.InvalidArgumentError, match=message):
            m.grad_add_range(off, n, src)
        assert m.flat("grads").tobytes() == before.tobytes()
