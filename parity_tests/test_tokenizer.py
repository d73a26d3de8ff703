"""Tokenizers: byte-level round trip, tokenizer.bin read/write and validation, GPT-2 BPE
through a local transformers directory (never the network)."""


import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyllmc.errors import BadFormatError, FileError, UnsupportedError
from pyllmc.tokenizer import (
    EOT_TEXT,
    ByteTokenizer,
    TableTokenizer,
    load_tokenizer,
    read_tokenizer_bin,
    write_tokenizer_bin,
)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_byte_round_trip(text):
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert all(0 <= i < 256 for i in ids)
    assert tok.decode(ids) == text
    assert np.array_equal(tok.encode_array(text), np.array(ids, dtype=np.uint16))


def test_byte_eot():
    tok = ByteTokenizer()
    assert tok.vocab_size == 257 and tok.eot_id == 256
    assert tok.decode([104, 105, 256, 33]) == "hi" + EOT_TEXT + "!"
    assert tok.decode([256], eot_text="") == ""


def test_tokenizer_bin_round_trip(tmp_path):
    tok = ByteTokenizer()
    p = tmp_path / "tokenizer.bin"
    tok.save(p)
    data = p.read_bytes()
    h = np.frombuffer(data[:1024], dtype="<u4")
    assert list(h[:4]) == [20240328, 2, 257, 256]
    assert not h[4:].any()
    assert len(data) == 1024 + 256 * 2 + 1 + len(EOT_TEXT)
    t2 = read_tokenizer_bin(p)
    assert t2.vocab_size == 257 and t2.eot_id == 256 and t2.can_encode
    assert t2.decode(tok.encode("héllo")) == "héllo"
    # load_tokenizer maps a byte-level table to the byte tokenizer
    assert isinstance(load_tokenizer(p), ByteTokenizer)


def test_custom_table_decodes_but_does_not_encode(tmp_path):
    tokens = [b"a", b"b", b" the", b"<|end|>"]
    p = tmp_path / "t.bin"
    write_tokenizer_bin(p, tokens, eot_id=3)
    t = load_tokenizer(p)
    assert isinstance(t, TableTokenizer)
    assert t.decode([2, 0, 1, 3], eot_text="|") == " theab|"
    with pytest.raises(UnsupportedError):
        t.encode("ab")


def test_version_1_implies_gpt2_eot(tmp_path):
    V = 50257
    header = np.zeros(256, dtype="<u4")
    header[:3] = [20240328, 1, V]
    body = b"".join(b"\x01" + bytes([i % 256]) for i in range(V))
    p = tmp_path / "v1.bin"
    p.write_bytes(header.tobytes() + body)
    t = read_tokenizer_bin(p)
    assert t.eot_id == 50256 and t.vocab_size == V


@pytest.mark.parametrize("mutate, msg", [
    (lambda d: d[:100], "shorter than"),
    (lambda d: b"\x00\x00\x00\x00" + d[4:], "bad tokenizer magic"),
    (lambda d: d[:4] + (9).to_bytes(4, "little") + d[8:], "unsupported tokenizer version"),
    (lambda d: d[:-3], "truncated"),
    (lambda d: d + b"xx", "trailing"),
    (lambda d: d[:1024] + b"\x00" + d[1025:], "length 0"),
    (lambda d: d[:12] + (999).to_bytes(4, "little") + d[16:], "end-of-text id"),
])
def test_bad_tokenizer_files(tmp_path, mutate, msg):
    p = tmp_path / "tokenizer.bin"
    ByteTokenizer().save(p)
    bad = tmp_path / "bad.bin"
    bad.write_bytes(mutate(p.read_bytes()))
    with pytest.raises(BadFormatError, match=msg) as e:
        read_tokenizer_bin(bad)
    assert str(bad) in str(e.value)


def test_missing_tokenizer(tmp_path):
    with pytest.raises(FileError):
        load_tokenizer(tmp_path / "nope.bin")
    with pytest.raises(FileError):
        load_tokenizer(tmp_path)  # empty directory


def test_gpt2_never_downloads(monkeypatch, tmp_path):
    """'gpt2' is either found locally or refused with UnsupportedError; no network access."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty-cache"))
    try:
        tok = load_tokenizer("gpt2")
    except UnsupportedError as e:
        assert "offline" in str(e)
    else:
        assert tok.vocab_size == 50257 and tok.eot_id == 50256


def _local_bpe_dir(tmp_path):
    """A small byte-level BPE tokenizer saved as a GPT2TokenizerFast directory."""
    pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tk = HFTokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    text = ["the quick brown fox jumps over the lazy dog. " * 20, "To be, or not to be: that is the question. " * 20]
    tk.train_from_iterator(text, trainer)
    fast = transformers.GPT2TokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>",
                                          bos_token="<|endoftext|>", unk_token="<|endoftext|>")
    d = tmp_path / "bpe"
    fast.save_pretrained(str(d))
    return d


def test_local_gpt2_style_bpe_directory(tmp_path):
    d = _local_bpe_dir(tmp_path)
    tok = load_tokenizer(d)
    assert tok.name == "gpt2" and tok.backend == "transformers"
    text = "the lazy fox: to be or not, ünïcödé!"
    ids = tok.encode(text)
    assert len(ids) < len(text.encode())  # merges happened
    assert tok.decode(ids) == text
    # its vocabulary as tokenizer.bin decodes the same ids to the same text
    p = tmp_path / "tokenizer.bin"
    tok.save(p)
    table = read_tokenizer_bin(p)
    assert table.vocab_size == tok.vocab_size and table.eot_id == tok.eot_id
    assert table.decode(ids) == text
