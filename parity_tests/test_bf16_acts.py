"""The activations a bf16 CPU model keeps in bf16 (core_c/src/model.c, act_is_gemm_only): ln1,
atty, ln2, fch_gelu and lnf are read only by GEMMs, which round them to bf16 anyway, so they
are stored as the rounded bits (half the memory) and training must give BIT-IDENTICAL results
to the layout that stores them in fp32 (LLMC_BF16_ACTS=fp32, read when a model is created).

Each test trains two models from the same weights and batches, one per layout, for several
steps (forward, backward in both gradient modes, AdamW) and requires: the same loss bits at
every step, the same gradients, AdamW moments and weights after every step, every other
activation bitwise the same, and each kept activation exactly the round-to-nearest-even bf16
(denormals to zero, bf16.h) of the fp32 layout's value. Any of the five stored wrongly (a
wrong layer stride, truncation instead of rounding, a missing write, a pack reading the wrong
half of a pair) changes one of these. Every bf16 GEMM kernel this CPU has (LLMC_GEMM_ISA) runs.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from pyllmc import GPTConfig, Model
from pyllmc.errors import InvalidArgumentError, UnsupportedError

KEPT = ("ln1", "atty", "ln2", "fch_gelu", "lnf")
# (config, B, T): C = 64 with even sizes; C = 288 (4C = 1152: two AMX panels of depth) with an
# odd B*T, so the GEMMs have ragged row and depth tails
CASES = {
    "C64": (GPTConfig(32, 101, 128, 2, 2, 64), 2, 16),
    "C288": (GPTConfig(24, 97, 97, 1, 4, 288), 3, 23),
}
ISAS = {"amx": "amx_bf16", "avx512bf16": "avx512_bf16", "avx512": "avx512f", "avx2": "avx2", "generic": None}


def cpu_flag(flag):
    try:
        return f" {flag}" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


@contextmanager
def env(**kv):
    old = {k: os.environ.get(k) for k in kv}
    try:
        for k, v in kv.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def c_round(a):
    """bf16.h's rounding: nearest even, NaN quiet, zeros and denormals to a signed zero"""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint32)
    mag = u & 0x7FFFFFFF
    r = np.where(mag > 0x7F800000, (u >> 16) | 0x40, r)
    r = np.where(mag < 0x00800000, (u >> 16) & 0x8000, r).astype(np.uint32)
    return (r << 16).view(np.float32).reshape(np.shape(a))


def model(cfg, B, T, layout, seed=7):
    with env(LLMC_BF16_ACTS=layout):
        return Model.from_config(cfg, max_batch=B, max_seq=T, threads=2, seed=seed, precision="bf16")


def batches(cfg, B, T, n):
    rng = np.random.default_rng(11)
    return [(rng.integers(0, cfg.vocab_size, (B, T), dtype=np.int32),
             rng.integers(0, cfg.vocab_size, (B, T), dtype=np.int32)) for _ in range(n)]


def bits(a):
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def assert_bits(got, want, what):
    g, w = bits(got), bits(want)
    assert g.shape == w.shape, what
    bad = int(np.count_nonzero(g != w))
    assert bad == 0, f"{what}: {bad} of {g.size} elements differ"


def kept(name):
    return name.rsplit(".", 1)[-1] in KEPT


def compare_acts(m16, m32):
    names = [n for n in m32.acts]
    assert set(m16.acts16_names) == {n for n in names if kept(n)}
    assert m32.acts16_names == ()
    for n in names:
        a16, a32 = m16.acts[n], m32.acts[n]
        if kept(n):
            assert_bits(a16, c_round(a32), f"acts {n} (kept in bf16) vs the rounded fp32 layout")
            # the fp32 layout's value is not a bf16 (else this would not test the rounding)
            assert np.count_nonzero(bits(a32) & 0xFFFF), n
        else:
            assert_bits(a16, a32, f"acts {n}")


def compare_state(m16, m32, what, kinds=("grads",)):
    for kind in kinds:
        assert_bits(m16.copy_to_host(kind), m32.copy_to_host(kind), f"{what}: {kind}")


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("isa", list(ISAS))
def test_bf16_activations_give_the_same_bits_as_fp32_activations(case, isa):
    if ISAS[isa] and not cpu_flag(ISAS[isa]):
        pytest.skip(f"no {ISAS[isa]} on this CPU")
    cfg, B, T = CASES[case]
    m16, m32 = model(cfg, B, T, "bf16"), model(cfg, B, T, "fp32")
    try:
        with env(LLMC_GEMM_ISA=isa):
            for step, (x, y) in enumerate(batches(cfg, B, T, 3), start=1):
                # a short batch at step 2: offsets of every layer must hold at any (B, T)
                if step == 2:
                    x, y = x[:1, : T - 5], y[:1, : T - 5]
                l16, l32 = m16.forward(x, y), m32.forward(x, y)
                assert np.float32(l16).view(np.uint32) == np.float32(l32).view(np.uint32), f"loss at step {step}"
                compare_acts(m16, m32)
                for m in (m16, m32):
                    m.backward(accumulate=step != 1)  # both gradient modes
                compare_state(m16, m32, f"step {step}")
                for m in (m16, m32):
                    m.adamw_step(3e-3, t=step, weight_decay=0.1)
                compare_state(m16, m32, f"after AdamW {step}", ("params", "adam_m", "adam_v"))
    finally:
        m16.close()
        m32.close()


def test_fp32_models_and_the_fp32_layout_keep_float_views():
    cfg, B, T = CASES["C64"]
    x, y = batches(cfg, B, T, 1)[0]
    with Model.from_config(cfg, max_batch=B, max_seq=T, threads=1) as m:
        m.forward(x, y)
        assert m.acts16_names == ()
        assert np.shares_memory(m.acts["h0.ln1"], m.flat("acts"))  # zero-copy as before
    m32 = model(cfg, B, T, "fp32")
    m32.forward(x, y)
    assert np.shares_memory(m32.acts["h1.fch_gelu"], m32.flat("acts"))
    m32.close()


def test_kept_activations_copy_out_widened_and_in_rounded():
    cfg, B, T = CASES["C64"]
    x, y = batches(cfg, B, T, 1)[0]
    m = model(cfg, B, T, "bf16")
    try:
        m.forward(x, y)
        acts = m.acts
        # widened bf16: low halves zero; the activations kept in fp32 are not
        assert not np.count_nonzero(bits(acts["h1.ln2"]) & 0xFFFF)
        assert np.count_nonzero(bits(acts["h1.fch"]) & 0xFFFF)
        # the whole buffer, copied, holds every tensor at its public offset
        flat = m.copy_to_host("acts")
        assert_bits(m.flat("acts"), flat, "flat")
        for ti in m._tensor_infos():
            if ti.kind == "acts":
                assert_bits(flat[ti.offset: ti.offset + ti.numel].reshape(ti.shape), acts[ti.name], ti.name)
        # into a kept tensor: rounded (bf16.h), as the forward would have stored it
        want = np.random.default_rng(3).standard_normal(acts["lnf"].shape).astype(np.float32)
        m.copy_from_host("acts", "lnf", want)
        assert_bits(m.acts["lnf"], c_round(want), "lnf written")
        assert_bits(m.acts["h0.fch"], acts["h0.fch"], "neighbours untouched")
        with pytest.raises(UnsupportedError, match="bf16"):
            m.torch_view("acts", "lnf")
        # the C API: no float pointer to the activations (UNSUPPORTED, 6), the length still
        # (the public fp32 layout's), and the parameter pointer as before
        from pyllmc._ffi import ffi

        data, numel = ffi.new("float **"), ffi.new("int64_t *")
        assert m._lib.llmc_model_buffer(m._ptr(), 4, data, numel) == 6
        assert "stored as bf16" in ffi.string(m._lib.llmc_model_last_error(m._ptr())).decode()
        assert m._lib.llmc_model_buffer(m._ptr(), 4, ffi.NULL, numel) == 0 and numel[0] == flat.size
        assert m._lib.llmc_model_buffer(m._ptr(), 0, data, numel) == 0 and data[0] != ffi.NULL
    finally:
        m.close()


def test_a_fault_in_a_kept_activation_changes_what_follows():
    cfg, B, T = CASES["C64"]
    x, y = batches(cfg, B, T, 1)[0]
    m = model(cfg, B, T, "bf16")
    try:
        clean = m.forward(x, y), m.acts["h1.atty"], m.acts["h1.attproj"]
        m.debug_set_fault("h1.atty", 3.0)
        hit = m.forward(x, y), m.acts["h1.atty"], m.acts["h1.attproj"]
        assert hit[0] != clean[0]
        assert hit[1].flat[0] == c_round(np.float32(clean[1].flat[0] + 3.0))
        assert_bits(hit[1].ravel()[1:], clean[1].ravel()[1:], "rest of h1.atty")
        assert not np.array_equal(hit[2], clean[2])
    finally:
        m.close()


def test_bad_layout_variable_is_named():
    cfg, B, T = CASES["C64"]
    with pytest.raises(InvalidArgumentError, match="LLMC_BF16_ACTS"):
        model(cfg, B, T, "half")
    # fp32 precision never reads it
    with env(LLMC_BF16_ACTS="half"):
        Model.from_config(cfg, max_batch=B, max_seq=T, threads=1).close()
