"""Exact conversions: HF GPT-2 <-> C layout <-> llm.c checkpoints (v3 fp32, v5 bf16) <->
Hugging Face safetensors directories. Every round trip must be bit-exact."""
from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from pyllmc.reference import (  # noqa: E402
    LAYER_PARAMS, PARAM_NAMES, CheckpointFormatError, as_llmc_config, bf16_bits_to_f32,
    f32_to_bf16_bits, hf_to_params, load_hf_dir_params, load_reference, make_config, num_params,
    pad_vocab, param_shapes, params_to_hf_model, params_to_hf_state_dict, randomize_params,
    read_llmc_checkpoint, round_to_bf16, save_hf_dir, size_config,
    write_llmc_checkpoint,
)
from pyllmc.reference.convert import HEADER_BYTES  # noqa: E402
from pyllmc.shapes import GPTConfig, size_dims  # noqa: E402

pytestmark = pytest.mark.parity

V, MAXT, L, NH, C = 101, 16, 2, 4, 32


def bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def assert_params_identical(a, b):
    assert list(a) == list(b) == list(PARAM_NAMES)
    for n in PARAM_NAMES:
        assert a[n].shape == b[n].shape, n
        assert a[n].dtype == b[n].dtype == np.float32, n
        np.testing.assert_array_equal(bits(a[n]), bits(b[n]), err_msg=n)


@pytest.fixture(scope="module")
def hf_model():
    model = load_reference(make_config(vocab_size=V, n_positions=MAXT, n_layer=L, n_head=NH, n_embd=C), seed=3)
    randomize_params(model, seed=4)
    return model


@pytest.fixture(scope="module")
def params(hf_model):
    return hf_to_params(hf_model, pad_vocab(V))


@pytest.fixture(scope="module")
def cfg():
    return GPTConfig(max_seq_len=MAXT, vocab_size=V, padded_vocab_size=128, num_layers=L,
                     num_heads=NH, channels=C)


def test_layout_and_transposes(hf_model, params, cfg):
    assert {k: v.shape for k, v in params.items()} == param_shapes(cfg)
    sd = hf_model.state_dict()
    # Conv1D (in, out) -> Linear (out, in)
    for l in range(L):
        w = sd[f"transformer.h.{l}.attn.c_attn.weight"].numpy()
        assert w.shape == (C, 3 * C)
        np.testing.assert_array_equal(params["qkvw"][l], w.T)
        np.testing.assert_array_equal(params["fcw"][l], sd[f"transformer.h.{l}.mlp.c_fc.weight"].numpy().T)
        np.testing.assert_array_equal(params["fcprojw"][l], sd[f"transformer.h.{l}.mlp.c_proj.weight"].numpy().T)
        np.testing.assert_array_equal(params["attprojw"][l], sd[f"transformer.h.{l}.attn.c_proj.weight"].numpy().T)
        np.testing.assert_array_equal(params["ln2b"][l], sd[f"transformer.h.{l}.ln_2.bias"].numpy())
    # the Linear layout means out = W @ x: check against the module itself
    x = torch.randn(5, C)
    blk = hf_model.transformer.h[1]
    with torch.no_grad():
        ref = blk.attn.c_attn(x).numpy()
    ours = x.numpy() @ params["qkvw"][1].T + params["qkvb"][1]
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
    # wte: V real rows, then zero padding up to Vp
    np.testing.assert_array_equal(params["wte"][:V], sd["transformer.wte.weight"].numpy())
    assert not params["wte"][V:].any()
    np.testing.assert_array_equal(params["lnfw"], sd["transformer.ln_f.weight"].numpy())


def test_hf_round_trip_bit_exact(hf_model, params, cfg):
    sd = params_to_hf_state_dict(params, hf_model.config)
    ref = hf_model.state_dict()
    assert set(sd) == set(ref)
    for k, v in ref.items():
        assert sd[k].dtype == v.dtype and sd[k].shape == v.shape, k
        assert torch.equal(sd[k], v), k
    assert_params_identical(hf_to_params(sd, 128), params)
    # state dicts without the 'transformer.' prefix (as the hub's gpt2 stores them)
    bare = {k[len("transformer."):] if k.startswith("transformer.") else k: v for k, v in ref.items()}
    assert_params_identical(hf_to_params(bare, 128), params)
    # a model built from params holds exactly these weights, tied
    m2 = params_to_hf_model(params, cfg)
    assert m2.lm_head.weight is m2.transformer.wte.weight
    assert_params_identical(hf_to_params(m2, 128), params)


def test_hf_to_params_rejects_untied_and_bad_padding(hf_model, params):
    sd = dict(hf_model.state_dict())
    sd["lm_head.weight"] = sd["transformer.wte.weight"].clone() + 1
    with pytest.raises(ValueError, match="tied"):
        hf_to_params(sd, 128)
    bad = dict(params)
    bad["wte"] = params["wte"].copy()
    bad["wte"][V + 3, 0] = 1.0
    with pytest.raises(ValueError, match="padding"):
        params_to_hf_state_dict(bad, hf_model.config)


@pytest.mark.parametrize("Vp", [101, 128, 256])
def test_padding_choices(hf_model, Vp):
    p = hf_to_params(hf_model, Vp)
    assert p["wte"].shape == (Vp, C)
    assert not p["wte"][V:].any()
    assert_params_identical(hf_to_params(params_to_hf_state_dict(p, hf_model.config), Vp), p)


def test_checkpoint_v3_round_trip(tmp_path, params, cfg):
    path = tmp_path / "m.bin"
    write_llmc_checkpoint(path, params, cfg, version=3)
    assert os.path.getsize(path) == HEADER_BYTES + 4 * num_params(cfg)
    header = np.fromfile(path, dtype="<i4", count=256)
    assert list(header[:8]) == [20240326, 3, MAXT, V, L, NH, C, 128]
    assert not header[8:].any()
    # payload is the params concatenated in checkpoint order, little-endian float32
    payload = np.fromfile(path, dtype="<f4", offset=HEADER_BYTES)
    np.testing.assert_array_equal(bits(payload), bits(np.concatenate([params[n].ravel() for n in PARAM_NAMES])))
    cfg2, p2 = read_llmc_checkpoint(path)
    assert cfg2 == cfg
    assert_params_identical(p2, params)
    # write -> read -> write gives the same bytes
    path2 = tmp_path / "m2.bin"
    write_llmc_checkpoint(path2, p2, cfg2, version=3)
    assert path.read_bytes() == path2.read_bytes()


def test_checkpoint_v5_round_trip(tmp_path, params, cfg):
    path = tmp_path / "m5.bin"
    write_llmc_checkpoint(path, params, cfg, version=5)
    assert os.path.getsize(path) == HEADER_BYTES + 2 * num_params(cfg)
    assert list(np.fromfile(path, dtype="<i4", count=8)) == [20240326, 5, MAXT, V, L, NH, C, 128]
    cfg2, p2 = read_llmc_checkpoint(path)
    assert cfg2 == cfg
    expected = {n: round_to_bf16(params[n]) for n in PARAM_NAMES}
    assert_params_identical(p2, expected)
    # the widened bf16 values are the nearest bf16 to the fp32 ones (independent oracle: torch)
    for n in PARAM_NAMES:
        t = torch.from_numpy(params[n]).to(torch.bfloat16).to(torch.float32).numpy()
        np.testing.assert_array_equal(bits(p2[n]), bits(t), err_msg=n)
    # bf16 values survive a second v5 trip exactly
    path2 = tmp_path / "m5b.bin"
    write_llmc_checkpoint(path2, p2, cfg2, version=5)
    assert path.read_bytes() == path2.read_bytes()
    # and a v3 file of bf16-representable values equals them exactly
    path3 = tmp_path / "m3.bin"
    write_llmc_checkpoint(path3, p2, cfg2, version=3)
    assert_params_identical(read_llmc_checkpoint(path3)[1], p2)


def test_bf16_rounding_rules():
    # ties go to even, above/below the tie round to nearest, specials are preserved
    cases = {
        0x3F800000: 0x3F80,  # 1.0
        0x3F808000: 0x3F80,  # exactly halfway, even below
        0x3F818000: 0x3F82,  # exactly halfway, odd below -> up
        0x3F808001: 0x3F81,  # just above halfway
        0x3F807FFF: 0x3F80,  # just below halfway
        0xBF818000: 0xBF82,  # negative tie, odd -> away from zero
        0x7F800000: 0x7F80,  # +inf
        0xFF800000: 0xFF80,  # -inf
        0x7F7FFFFF: 0x7F80,  # max float rounds to inf
        0x00000001: 0x0000,  # smallest subnormal -> +0
        0x80000000: 0x8000,  # -0
    }
    src = np.array(list(cases), dtype=np.uint32).view(np.float32)
    got = f32_to_bf16_bits(src)
    assert [int(g) for g in got] == list(cases.values())
    nan = f32_to_bf16_bits(np.array([np.nan, -np.nan], dtype=np.float32))
    assert np.isnan(bf16_bits_to_f32(nan)).all()
    # random values: same as torch's conversion (round-to-nearest-even)
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(100_000) * np.exp(rng.uniform(-30, 30, 100_000))).astype(np.float32)
    ours = f32_to_bf16_bits(x)
    theirs = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(ours, theirs)
    # widening is exact and idempotent
    np.testing.assert_array_equal(f32_to_bf16_bits(bf16_bits_to_f32(ours)), ours)


def test_checkpoint_readers_reject_bad_files(tmp_path, params, cfg):
    good = tmp_path / "good.bin"
    write_llmc_checkpoint(good, params, cfg, version=3)
    raw = bytearray(good.read_bytes())

    def write(name, data):
        p = tmp_path / name
        p.write_bytes(bytes(data))
        return p

    bad_magic = raw.copy()
    bad_magic[0:4] = np.int32(1234).tobytes()
    bad_version = raw.copy()
    bad_version[4:8] = np.int32(4).tobytes()
    zero_layers = raw.copy()
    zero_layers[16:20] = np.int32(0).tobytes()
    bad_heads = raw.copy()
    bad_heads[20:24] = np.int32(3).tobytes()  # 32 % 3 != 0
    small_vp = raw.copy()
    small_vp[28:32] = np.int32(100).tobytes()
    for name, data, msg in [
        ("magic.bin", bad_magic, "magic"),
        ("version.bin", bad_version, "version"),
        ("layers.bin", zero_layers, "positive"),
        ("heads.bin", bad_heads, "divisible"),
        ("vp.bin", small_vp, "padded vocab"),
        ("short.bin", raw[:-4], "bytes"),
        ("long.bin", raw + b"\0\0\0\0", "bytes"),
        ("header.bin", raw[:100], "header"),
        ("empty.bin", b"", "header"),
    ]:
        p = write(name, data)
        with pytest.raises(CheckpointFormatError, match=msg) as ei:
            read_llmc_checkpoint(p)
        assert name in str(ei.value)
    with pytest.raises(OSError):
        read_llmc_checkpoint(tmp_path / "missing.bin")
    with pytest.raises(ValueError):
        write_llmc_checkpoint(tmp_path / "v4.bin", params, cfg, version=4)
    wrong = dict(params)
    wrong["fcb"] = params["fcb"][:, :-1]
    with pytest.raises(ValueError, match="fcb"):
        write_llmc_checkpoint(tmp_path / "x.bin", wrong, cfg)


def test_safetensors_dir_round_trip(tmp_path, hf_model, params, cfg):
    from transformers import GPT2LMHeadModel

    d = tmp_path / "hfdir"
    save_hf_dir(params, cfg, d)
    assert (d / "model.safetensors").exists() and (d / "config.json").exists()
    m = GPT2LMHeadModel.from_pretrained(d)
    assert m.lm_head.weight is m.transformer.wte.weight or torch.equal(m.lm_head.weight, m.transformer.wte.weight)
    assert_params_identical(hf_to_params(m, 128), params)
    # read back without building a model, too
    cfg2, p2 = load_hf_dir_params(d, 128)
    assert cfg2 == cfg
    assert_params_identical(p2, params)
    # through the reference loader: same weights, same outputs as the original model
    ref = load_reference(d)
    assert ref.config._attn_implementation == "eager" and not ref.training
    assert_params_identical(hf_to_params(ref, 128), params)
    x = torch.randint(0, V, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(ref(x).logits, hf_model(x).logits)


def test_save_pretrained_from_pretrained_tiny(tmp_path, hf_model, params):
    d = tmp_path / "pretrained"
    hf_model.save_pretrained(d)
    ref = load_reference(str(d))
    assert not ref.training
    assert ref.config.resid_pdrop == ref.config.embd_pdrop == ref.config.attn_pdrop == 0.0
    assert all(m.p == 0.0 for m in ref.modules() if isinstance(m, torch.nn.Dropout))
    assert_params_identical(hf_to_params(ref, 128), params)
    ref64 = load_reference(str(d), dtype=torch.float64)
    assert ref64.transformer.wte.weight.dtype == torch.float64
    p64 = hf_to_params(ref64, 128, dtype=None)
    for n in PARAM_NAMES:
        assert p64[n].dtype == np.float64
        np.testing.assert_array_equal(p64[n], params[n].astype(np.float64))


def test_checkpoint_to_hf_via_reference_loader(tmp_path, hf_model, params, cfg):
    path = tmp_path / "c.bin"
    write_llmc_checkpoint(path, params, cfg)
    ref = load_reference(str(path))
    assert_params_identical(hf_to_params(ref, 128), params)
    x = torch.randint(0, V, (1, 5), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(ref(x).logits, hf_model(x).logits)


def test_size_descriptors():
    assert size_dims("d12") == (12, 768, 12)
    assert size_dims("d6") == (6, 384, 6)
    assert size_dims("d24") == (24, 1024, 16)
    assert size_dims("d36") == (36, 1280, 20)
    assert size_dims("d48") == (48, 1600, 25)
    with pytest.raises(ValueError):
        size_dims("d0")
    with pytest.raises(ValueError):
        size_dims("gpt2")
    c12 = as_llmc_config(size_config("d12"))
    assert c12 == GPTConfig(1024, 50257, 50304, 12, 12, 768)
    # docs/formats.md: 124,475,904 values with padding; the fp32 file is 497,904,640 bytes
    assert num_params(c12) == 124_475_904
    assert HEADER_BYTES + 4 * num_params(c12) == 497_904_640
    m = load_reference("d2", seed=0)
    assert (m.config.n_layer, m.config.n_embd, m.config.n_head, m.config.vocab_size, m.config.n_positions) == \
        (2, 128, 2, 50257, 1024)
    assert m.config.activation_function == "gelu_new" and m.config.layer_norm_epsilon == 1e-5
    assert m.config._attn_implementation == "eager"
    # the seed decides the weights
    again = load_reference("d2", seed=0)
    other = load_reference("d2", seed=1)
    assert torch.equal(m.transformer.h[0].attn.c_attn.weight, again.transformer.h[0].attn.c_attn.weight)
    assert not torch.equal(m.transformer.h[0].attn.c_attn.weight, other.transformer.h[0].attn.c_attn.weight)


def test_layer_names_cover_every_parameter(params):
    assert len(PARAM_NAMES) == 16 and set(LAYER_PARAMS) <= set(PARAM_NAMES)
    assert all(params[n].shape[0] == L for n in LAYER_PARAMS)


# ------------------------------------------------------------------ `pyllmc convert SRC DST`


def cli(argv, capsys):
    from pyllmc.cli import main

    try:
        code = main(["convert", *argv])
    except SystemExit as e:  # argparse errors
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_convert_round_trips_bit_exactly(tmp_path, hf_model, params, cfg, capsys):
    """HF directory -> .bin (v3) -> HF directory -> .bin: every file holds the same bits, and
    the HF directory loads with GPT2LMHeadModel.from_pretrained to the same weights."""
    from transformers import GPT2LMHeadModel

    hf_model.save_pretrained(tmp_path / "src")
    code, out, err = cli([str(tmp_path / "src"), str(tmp_path / "a.bin")], capsys)
    assert code == 0 and "read back bit-exactly" in out, err
    c2, p2 = read_llmc_checkpoint(tmp_path / "a.bin")
    assert c2 == cfg
    assert_params_identical(p2, params)
    code, out, err = cli([str(tmp_path / "a.bin"), str(tmp_path / "hf2")], capsys)
    assert code == 0, err
    m = GPT2LMHeadModel.from_pretrained(tmp_path / "hf2")
    assert_params_identical(hf_to_params(m, 128), params)
    code, out, err = cli([str(tmp_path / "hf2"), str(tmp_path / "b.bin")], capsys)
    assert code == 0, err
    assert (tmp_path / "a.bin").read_bytes() == (tmp_path / "b.bin").read_bytes()


def test_cli_convert_bf16_and_descriptor(tmp_path, params, cfg, capsys):
    write_llmc_checkpoint(tmp_path / "f32.bin", params, cfg)
    code, out, err = cli([str(tmp_path / "f32.bin"), str(tmp_path / "bf16.bin"), "--bf16"], capsys)
    assert code == 0 and "version 5" in out, err
    c5, p5 = read_llmc_checkpoint(tmp_path / "bf16.bin")
    assert_params_identical(p5, {n: round_to_bf16(a) for n, a in params.items()})
    # a size descriptor: the C core's initialisation from --seed, written as a checkpoint
    code, out, err = cli(["d1", str(tmp_path / "d1.bin"), "--seed", "5"], capsys)
    assert code == 0, err
    c1, p1 = read_llmc_checkpoint(tmp_path / "d1.bin")
    assert (c1.num_layers, c1.channels, c1.num_heads, c1.vocab_size, c1.padded_vocab_size) == (1, 64, 1, 50257, 50304)
    from pyllmc import Model
    from pyllmc.reference import model_params

    with Model.from_config("d1", max_batch=1, max_seq=1, threads=1, seed=5) as m:
        assert_params_identical(p1, model_params(m))


@pytest.mark.parametrize("case", ["missing", "exists", "bf16_dir", "corrupt", "not_gpt2", "same"])
def test_cli_convert_bad_input_is_one_line_exit_2(tmp_path, params, cfg, capsys, case):
    write_llmc_checkpoint(tmp_path / "ok.bin", params, cfg)
    (tmp_path / "corrupt.bin").write_bytes(b"\x01" * 4096)
    (tmp_path / "notgpt2").mkdir()
    (tmp_path / "notgpt2" / "config.json").write_text("{not json")
    (tmp_path / "notgpt2" / "model.safetensors").write_bytes(b"")
    (tmp_path / "taken.bin").write_bytes(b"x")
    argv, fragment = {
        "missing": ([str(tmp_path / "nope.bin"), str(tmp_path / "o.bin")], "no such file"),
        "exists": ([str(tmp_path / "ok.bin"), str(tmp_path / "taken.bin")], "already exists"),
        "bf16_dir": ([str(tmp_path / "ok.bin"), str(tmp_path / "dir"), "--bf16"], "--bf16"),
        "corrupt": ([str(tmp_path / "corrupt.bin"), str(tmp_path / "o2.bin")], "magic"),
        "not_gpt2": ([str(tmp_path / "notgpt2"), str(tmp_path / "o3.bin")], "notgpt2"),
        "same": ([str(tmp_path / "ok.bin"), str(tmp_path / "ok.bin"), "--overwrite"], "same"),
    }[case]
    code, out, err = cli(argv, capsys)
    assert code == 2, out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in err, err
    assert (tmp_path / "taken.bin").read_bytes() == b"x"  # an existing DST is kept without --overwrite
