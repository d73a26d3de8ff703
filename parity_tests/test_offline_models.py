"""Offline-first model resolution: a model spec that is no local path, no size and no model
in the local Hugging Face cache fails at once with one line and a hint, in every command,
unless downloads are allowed explicitly; a cached hub id loads from the cache without the
network. Run with HF_HUB_OFFLINE=1 and an empty (or test-made) HF_HOME."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from pyllmc.data import write_shard
from pyllmc.model_source import cached_hub_snapshot, hf_cache_dir, load_model


def pyllmc(*args, env):
    e = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "PYLLMC_ALLOW"))}
    e.update(env)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "pyllmc", *map(str, args)], capture_output=True, text=True,
                       timeout=300, env=e)
    return r, time.perf_counter() - t0


@pytest.fixture()
def empty_cache(tmp_path):
    (tmp_path / "hf").mkdir()
    return {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}


def _one_line_exit_2(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, err
    return err


def test_a_typo_fails_at_once_in_every_command(tmp_path, empty_cache):
    shard = tmp_path / "train.bin"
    write_shard(shard, np.arange(200, dtype=np.uint16) % 50)
    cache = os.path.join(empty_cache["HF_HOME"], "hub")
    r, secs = pyllmc("train", "--model", "d99x", "--data", shard, "--out", tmp_path / "o", env=empty_cache)
    err = _one_line_exit_2(r, "--model 'd99x'", "a size is d<layers> such as d6", cache, "--allow-download",
                           "PYLLMC_ALLOW_DOWNLOAD=1")
    assert secs < 60, secs  # no network retries (the interpreter start is most of it)
    _one_line_exit_2(pyllmc("sample", "--model", "someone/no-such-model", env=empty_cache)[0],
                     "--model 'someone/no-such-model'", "local Hugging Face cache", "--allow-download")
    pytest.importorskip("transformers")
    _one_line_exit_2(pyllmc("parity", "--model", "d99x", "--out", tmp_path / "p", env=empty_cache)[0],
                     "'d99x'", "--allow-download")
    _one_line_exit_2(pyllmc("convert", "d99x", tmp_path / "x.bin", env=empty_cache)[0], "SRC 'd99x'",
                     "--allow-download")
    assert "d99x" in err


def test_allowing_downloads_sends_the_id_to_the_hub(tmp_path, empty_cache):
    """With --allow-download the id goes to the hub loader; HF_HUB_OFFLINE=1 makes that fail
    fast, as an error naming the model (not the cache refusal)."""
    pytest.importorskip("transformers")
    for args, env in ((["--allow-download"], {}), ([], {"PYLLMC_ALLOW_DOWNLOAD": "1"})):
        r, _ = pyllmc("sample", "--model", "someone/no-such-model", *args, env={**empty_cache, **env})
        assert r.returncode == 2, r.stderr
        assert "someone/no-such-model" in r.stderr and "--allow-download" not in r.stderr, r.stderr


@pytest.fixture()
def cached_model(tmp_path):
    """A tiny GPT-2 saved into a Hugging Face cache layout (models--ORG--NAME), as the hub
    client would leave it."""
    transformers = pytest.importorskip("transformers")
    import torch

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=257, n_positions=32, n_embd=32, n_layer=1, n_head=2)
    model = transformers.GPT2LMHeadModel(cfg)
    root = tmp_path / "hf" / "hub" / "models--tiny-org--tiny-gpt2"
    snap = root / "snapshots" / "0123abcd"
    model.save_pretrained(snap)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text("0123abcd")
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    return model, snap, env


def test_a_cached_hub_id_loads_offline(cached_model, monkeypatch):
    model, snap, env = cached_model
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("PYLLMC_ALLOW_DOWNLOAD", raising=False)
    assert hf_cache_dir() == snap.parents[2]
    assert cached_hub_snapshot("tiny-org/tiny-gpt2") == snap
    assert cached_hub_snapshot("tiny-org/other") is None
    with load_model("tiny-org/tiny-gpt2", max_batch=1, max_seq=8) as m:
        wte = model.transformer.wte.weight.detach().numpy()
        assert np.array_equal(m.params["wte"][: wte.shape[0]], wte)
        assert m.config.num_layers == 1 and m.config.channels == 32
    r, _ = pyllmc("sample", "--model", "tiny-org/tiny-gpt2", "--tokenizer", "byte", "--max-tokens", "4",
                  "--prompt", "ab", env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ab")
