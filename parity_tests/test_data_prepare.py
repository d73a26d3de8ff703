"""prepare-data as a library: streaming in blocks, shard splitting, the train/val split at a
line end, several documents with end-of-text, and a local BPE tokenizer directory."""

import numpy as np
import pytest

from pyllmc import prepare as prep
from pyllmc.data import read_shard
from pyllmc.errors import FileError, InvalidArgumentError
from pyllmc.tokenizer import load_tokenizer


def _all_tokens(paths):
    return np.concatenate([read_shard(p) for p in paths]) if paths else np.zeros(0, dtype=np.uint16)


def test_streaming_blocks_and_shards(tmp_path, monkeypatch):
    monkeypatch.setattr(prep, "BLOCK_BYTES", 100)  # many small blocks
    lines = [f"{i:04d} some text, and ünïcode\n" for i in range(200)]
    (tmp_path / "a.txt").write_text("".join(lines[:120]), encoding="utf-8")
    (tmp_path / "b.txt").write_text("".join(lines[120:]), encoding="utf-8")
    r = prep.prepare_data([tmp_path / "a.txt", tmp_path / "b.txt"], tmp_path / "out", val_frac=0.2,
                          shard_tokens=1000, progress=False)
    assert all(p.endswith(f"train_{i:06d}.bin") for i, p in enumerate(r.train_shards))
    assert len(r.train_shards) == -(-r.train_tokens // 1000) and len(r.val_shards) == -(-r.val_tokens // 1000)
    toks = np.concatenate([_all_tokens(r.train_shards), _all_tokens(r.val_shards)])
    assert r.train_tokens + r.val_tokens == toks.size
    # two documents, each after an end-of-text token
    eot = np.flatnonzero(toks == 256)
    assert list(eot) == [0, 1 + len("".join(lines[:120]).encode())]
    docs = [bytes(d[1:].astype(np.uint8)).decode() for d in np.split(toks, eot)[1:]]
    assert docs == ["".join(lines[:120]), "".join(lines[120:])]
    val_text = bytes(_all_tokens(r.val_shards).astype(np.uint8)).decode()
    assert val_text.startswith(tuple(lines)) and val_text.endswith(lines[-1])  # cut at a line end
    assert 0.15 < r.val_tokens / toks.size < 0.25
    assert load_tokenizer(r.tokenizer).vocab_size == 257


def test_no_val_and_no_eot(tmp_path):
    (tmp_path / "t.txt").write_bytes(b"hello\nworld\n")
    r = prep.prepare_data([tmp_path / "t.txt"], tmp_path / "o", val_frac=0.0, eot=False, progress=False)
    assert r.val_shards == [] and bytes(_all_tokens(r.train_shards).astype(np.uint8)) == b"hello\nworld\n"


def test_errors(tmp_path):
    with pytest.raises(FileError, match="missing.txt"):
        prep.prepare_data([tmp_path / "missing.txt"], tmp_path / "o")
    (tmp_path / "t.txt").write_text("x\n")
    with pytest.raises(InvalidArgumentError):
        prep.prepare_data([tmp_path / "t.txt"], tmp_path / "o", val_frac=1.0)
    with pytest.raises(InvalidArgumentError):
        prep.prepare_data([], tmp_path / "o")


def test_local_bpe_tokenizer_directory(tmp_path):
    pytest.importorskip("tokenizers")
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers
    from transformers import GPT2TokenizerFast

    tk = HFTokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(["the quick brown fox jumps over the lazy dog. " * 20],
                           trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                               initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    d = tmp_path / "bpe"
    GPT2TokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>").save_pretrained(str(d))
    text = "the quick brown fox jumps over the lazy dog.\nTo be, or not to be: that is the question.\n" * 30
    (tmp_path / "in.txt").write_text(text)
    r = prep.prepare_data([tmp_path / "in.txt"], tmp_path / "o", tokenizer=str(d), val_frac=0.0, progress=False)
    tok = load_tokenizer(d)
    ids = _all_tokens(r.train_shards)
    assert ids[0] == tok.eot_id and ids.size < 0.7 * len(text)  # BPE merges
    assert tok.decode(ids[1:].tolist()) == text
    table = load_tokenizer(r.tokenizer)  # the written tokenizer.bin decodes the shards too
    assert table.decode(ids[1:].tolist()) == text
