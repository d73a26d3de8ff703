"""Model sources M (docs/design.md) for the Trainer and `pyllmc sample`: size descriptors, llm.c
.bin files, checkpoint and run directories, local Hugging Face directories; and the
progress bar mode."""

import io
import sys

import numpy as np
import pytest

from pyllmc import GPTConfig, Model, Trainer, TrainerConfig
from pyllmc.data import write_shard
from pyllmc.errors import FileError, InvalidArgumentError, UnsupportedError
from pyllmc.model_source import check_device, load_model


@pytest.fixture(scope="module")
def shard(tmp_path_factory):
    d = tmp_path_factory.mktemp("src")
    toks = np.frombuffer(b"abcdefghij klmnop qrstuv wxyz. " * 40, dtype=np.uint8).astype(np.uint16)
    write_shard(d / "train.bin", toks)
    return d / "train.bin"


def test_descriptor_sizes():
    with load_model("d1", max_batch=1, max_seq=8, vocab_size=257, max_seq_len=16, threads=1) as m:
        c = m.config
        assert (c.num_layers, c.channels, c.num_heads, c.vocab_size, c.padded_vocab_size, c.max_seq_len) == \
            (1, 64, 1, 257, 384, 16)
    with pytest.raises(InvalidArgumentError, match="exceeds"):
        load_model("d1", max_batch=1, max_seq=32, vocab_size=257, max_seq_len=16)


def test_bin_checkpoint_and_dirs(tmp_path):
    cfg = GPTConfig(16, 257, 384, 1, 2, 32)
    with Model.from_config(cfg, max_batch=1, threads=1, seed=4) as m:
        m.save(tmp_path / "m.bin")
        ref = m.flat("params").copy()
    with load_model(str(tmp_path / "m.bin"), max_batch=2, threads=1) as m2:
        assert np.array_equal(m2.flat("params"), ref)
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "m.bin").rename(tmp_path / "ckpt" / "model.bin")
    with load_model(str(tmp_path / "ckpt"), max_batch=1, threads=1) as m3:
        assert np.array_equal(m3.flat("params"), ref)
    with pytest.raises(FileError, match="no such file"):
        load_model(str(tmp_path / "other.bin"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileError, match="holds no model"):
        load_model(str(tmp_path / "empty"))
    with pytest.raises(InvalidArgumentError, match="max sequence length is 16"):
        load_model(str(tmp_path / "ckpt"), max_seq=32)


def test_trainer_from_run_directory_continues_from_its_weights(shard, tmp_path):
    cfg = GPTConfig(16, 257, 384, 1, 2, 32)
    base = dict(data=str(shard), batch_size=2, seq_len=8, steps=3, lr=1e-3, threads=1, progress="none", plot=False)
    with Trainer(TrainerConfig(model=cfg, out_dir=str(tmp_path / "a"), **base)) as t:
        t.train()
        trained = t.model.flat("params").copy()
    # a run directory as M: the newest checkpoint's weights (fine-tuning from it)
    with Trainer(TrainerConfig(model=str(tmp_path / "a"), **base)) as t:
        t.setup()
        assert np.array_equal(t.model.flat("params"), trained)


def test_hf_directory_as_model(shard, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from pyllmc import reference as ref

    hf = ref.random_model(ref.make_config(vocab_size=257, n_positions=16, n_layer=1, n_head=2, n_embd=32), seed=2)
    hf.save_pretrained(str(tmp_path / "hf"))
    want = ref.hf_to_params(hf, 384)
    with load_model(str(tmp_path / "hf"), max_batch=1, threads=1) as m:
        assert m.config == GPTConfig(16, 257, 384, 1, 2, 32)
        got = ref.model_params(m)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])
    with Trainer(TrainerConfig(model=str(tmp_path / "hf"), data=str(shard), batch_size=2, seq_len=8, steps=2,
                               lr=1e-3, threads=1, progress="none")) as t:
        h = t.train()
        assert h.final_step == 2 and np.isfinite(h.final_loss)


def test_device_names():
    assert check_device("cpu") == "cpu" and check_device(None) == "cpu"
    with pytest.raises(InvalidArgumentError, match="unknown device"):
        check_device("tpu")
    try:
        check_device("cuda")
    except UnsupportedError as e:
        assert "cuda" in str(e).lower()


def test_progress_bar_mode(shard, monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    cfg = TrainerConfig(model=GPTConfig(16, 257, 384, 1, 2, 32), data=str(shard), batch_size=2, seq_len=8,
                        steps=5, lr=1e-3, threads=1, progress="bar")
    with Trainer(cfg) as t:
        t.train()
    text = err.getvalue()
    assert "5/5" in text and "loss=" in text
