"""The public API a torch / Hugging Face user expects: pyllmc.load_model,
Model.from_pretrained / save_pretrained / generate, and DLPack over the named tensor views."""

import numpy as np
import pytest

import pyllmc
from pyllmc import GPTConfig, Model, load_model
from pyllmc.sampling import generate


def small():
    return Model.from_config(GPTConfig(32, 257, 384, 1, 2, 32), max_batch=1, max_seq=32, threads=1, seed=3)


def test_generate_is_the_sampler():
    with small() as m:
        a = m.generate([256, 65, 66], 6, temperature=0.8, top_k=5, seed=11)
        b = generate(m, [256, 65, 66], 6, temperature=0.8, top_k=5, seed=11)
        assert a == b and len(a) == 6 and all(0 <= t < 257 for t in a)
        assert m.generate([256], 5, temperature=0) == generate(m, [256], 5, temperature=0)


def test_save_pretrained_from_pretrained_round_trip(tmp_path):
    transformers = pytest.importorskip("transformers")
    with small() as m:
        m.save_pretrained(tmp_path / "hf")
        want = {k: v.copy() for k, v in m.params.items()}
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf")
    assert np.array_equal(hf.transformer.wte.weight.detach().numpy(), want["wte"][:257])
    for m2 in (Model.from_pretrained(tmp_path / "hf", max_batch=1), load_model(str(tmp_path / "hf"))):
        with m2:
            assert set(m2.params) == set(want)
            for k, v in want.items():
                assert np.array_equal(m2.params[k], v), k
    assert "load_model" in pyllmc.__all__


def test_dlpack_shares_the_named_views():
    torch = pytest.importorskip("torch")
    with small() as m:
        t = torch.from_dlpack(m.params["wte"])
        assert t.shape == (384, 32) and t.dtype == torch.float32
        t[0, 0] = 123.0  # the same memory: the C model sees it
        assert m.params["wte"][0, 0] == 123.0
        assert m.copy_to_host("params", "wte")[0, 0] == 123.0
        before = m.forward(np.zeros((1, 4), dtype=np.int32), np.ones((1, 4), dtype=np.int32))
        m.backward()
        g = torch.from_dlpack(m.grads["lnfw"])
        assert torch.equal(g, torch.from_numpy(m.grads["lnfw"].copy())) and np.isfinite(before)
