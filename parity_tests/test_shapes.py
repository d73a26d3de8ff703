"""pyllmc.shapes, the one module for GPT-2 shapes: size descriptors (one case rule everywhere),
pad_vocab, the shape rules (the same as the C core's), parameter counts and clip_coefficient,
and that the Model, the benchmarks and the reference all use it."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pyllmc
from pyllmc import shapes
from pyllmc.bench.spec import Shape, SpecError, parse_model
from pyllmc.errors import InvalidArgumentError
from pyllmc.shapes import GPTConfig, check_dims, clip_coefficient, dims_problem, pad_vocab, size_dims, size_name

GOOD = {"d12": (12, 768, 12), "D12": (12, 768, 12), " d12 ": (12, 768, 12), "d012": (12, 768, 12),
        "d1": (1, 64, 1), "d6": (6, 384, 6), "D24": (24, 1024, 16), "d36": (36, 1280, 20), "d48": (48, 1600, 25)}
BAD = ["d0", "D0", "dx", "12", "", "d-1", "d 12", "d12x", "gpt2", "dd12"]


@pytest.mark.parametrize("spec", sorted(GOOD))
def test_descriptors_are_case_insensitive_everywhere(spec):
    """The decision: a descriptor is dN in any case, white space around it ignored, and every
    reader agrees (the Model's config, the benchmarks' shapes, the model-source resolver)."""
    L, C, NH = GOOD[spec]
    assert shapes.is_size_descriptor(spec)
    assert size_dims(spec) == (L, C, NH)
    assert size_name(spec) == "d" + spec.strip()[1:].lstrip("0")
    cfg = GPTConfig.from_size(spec)
    assert (cfg.num_layers, cfg.channels, cfg.num_heads, cfg.vocab_size, cfg.padded_vocab_size) == (L, C, NH, 50257, 50304)
    s = parse_model(spec)
    assert s.config() == cfg and s.name == size_name(spec)


@pytest.mark.parametrize("spec", BAD)
def test_bad_descriptors_are_refused_everywhere(spec):
    with pytest.raises(InvalidArgumentError):
        size_dims(spec)
    with pytest.raises(InvalidArgumentError):
        GPTConfig.from_size(spec)
    with pytest.raises(SpecError):
        parse_model(spec)


def test_reference_uses_the_same_descriptors():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from pyllmc.reference import as_llmc_config, is_size_descriptor, size_config

    assert is_size_descriptor is shapes.is_size_descriptor
    for spec in GOOD:
        assert as_llmc_config(size_config(spec)) == GPTConfig.from_size(spec)
    with pytest.raises(InvalidArgumentError):
        size_config("d0")


def test_pad_vocab():
    assert pad_vocab(50257) == 50304 and pad_vocab(128) == 128 and pad_vocab(129) == 256 and pad_vocab(1) == 128
    assert pad_vocab(np.int64(300)) == 384 and pad_vocab(100, 64) == 128 and pad_vocab(7, 1) == 7
    for v, m in ((0, 128), (-5, 128), (10, 0), (True, 128), (1.5, 128), ("50257", 128)):
        with pytest.raises(InvalidArgumentError):
            pad_vocab(v, m)
    # one implementation: the package, the Model's module and the reference export the same function
    assert pyllmc.pad_vocab is pad_vocab
    try:
        from pyllmc.reference import pad_vocab as ref_pad_vocab
    except ImportError:
        return
    assert ref_pad_vocab is pad_vocab


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.fixed_dictionaries({
    "max_seq_len": st.sampled_from([0, 1, 4, (1 << 20) + 1]),
    "vocab_size": st.sampled_from([0, 1, 5, 130]),
    "padded_vocab_size": st.sampled_from([0, 4, 5, 128, 256, (1 << 24) + 1]),
    "num_layers": st.sampled_from([0, 1, 2, 1025]),
    "num_heads": st.sampled_from([0, 1, 2, 3, 8]),
    "channels": st.sampled_from([0, 2, 4, 6, (1 << 16) + 2]),
}))
def test_shape_rules_are_the_c_cores(dims):
    """check_dims accepts exactly the shapes the C core accepts (llmc_validate_config):
    every combination of good, zero and over-the-limit values, created for real."""
    problem = dims_problem(dims)
    cfg = GPTConfig(**dims)
    if problem is None:
        with pyllmc.Model.from_config(cfg, max_batch=1, max_seq=1, threads=1) as m:
            assert m.config == cfg
        assert cfg.check() is cfg
    else:
        with pytest.raises(InvalidArgumentError, match="invalid config"):
            pyllmc.Model.from_config(cfg, max_batch=1, max_seq=1, threads=1)
        with pytest.raises(InvalidArgumentError, match=problem.split(" ")[0]):
            cfg.check()


def test_check_dims_messages_name_the_problem():
    with pytest.raises(ValueError, match=r"x\.bin: channels 30 not divisible by num_heads 4"):
        check_dims({"channels": 30, "num_heads": 4}, "x.bin", ValueError)
    assert "must be positive" in dims_problem({"num_layers": 0})
    assert "padded vocab 100 < vocab 101" in dims_problem({"vocab_size": 101, "padded_vocab_size": 100})
    assert "must be an integer" in dims_problem({"channels": 8.0})
    assert "above the limit" in dims_problem({"num_layers": 1025})
    with pytest.raises(SpecError, match="divisible"):
        Shape("x", 1, 30, 4)


def test_parameter_counts_agree_with_the_c_model():
    assert GPTConfig.from_size("d12").num_params() == 124_475_904
    assert parse_model("d12").num_params == 124_475_904
    for cfg in (GPTConfig(16, 100, 128, 2, 2, 8), GPTConfig(8, 257, 384, 1, 3, 12)):
        assert Shape.of("x", cfg).num_params == cfg.num_params()
        with pyllmc.Model.from_config(cfg, max_batch=1, max_seq=1, threads=1) as m:
            c_shapes = {t.name: t.shape for t in m.tensors("params")}
            assert c_shapes == cfg.param_shapes()
            assert m.flat("params").size == cfg.num_params()


def test_header_slots_round_trip():
    cfg = GPTConfig(1024, 50257, 50304, 12, 12, 768)
    assert cfg.header_slots() == (1024, 50257, 12, 12, 768, 50304)  # maxT V L NH C Vp
    assert GPTConfig.from_header(cfg.header_slots()) == cfg


def test_clip_coefficient_arithmetic():
    """One clip_coefficient: float32 by default (the C core's and torch's for fp32
    gradients), float64 on request (torch's for fp64 gradients); max_norm must be positive,
    as for the C core's clip_grad_norm."""
    norm, max_norm = 3.0000001, 1.0
    f32 = np.float32(max_norm) / (np.float32(norm) + np.float32(1e-6))
    assert clip_coefficient(norm, max_norm) == float(f32)
    assert clip_coefficient(norm, max_norm, np.float64) == max_norm / (norm + 1e-6)
    assert clip_coefficient(0.5, 1.0) == 1.0  # below the limit: no scaling
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(InvalidArgumentError):
            clip_coefficient(1.0, bad)
    assert pyllmc.clip_coefficient is clip_coefficient
    torch = pytest.importorskip("torch")
    for dtype, np_dtype in ((torch.float32, np.float32), (torch.float64, np.float64)):
        for n in (1.7, 2.9, 3.3, 1234.5):  # 2.9: float64 arithmetic would be 1 ulp off in fp32
            g = torch.full((4,), n / 2, dtype=dtype)  # global norm n
            p = torch.nn.Parameter(torch.zeros(4, dtype=dtype))
            p.grad = g.clone()
            total = float(torch.nn.utils.clip_grad_norm_([p], 1.0, foreach=False))
            coef = torch.tensor(clip_coefficient(total, 1.0, np_dtype), dtype=dtype)
            assert torch.equal(p.grad, g * coef), (dtype, n)
