"""Write the seed corpora of the Python loader fuzz harness (fuzz/fuzz_loaders.py).

    python fuzz/make_corpus.py [OUT_DIR]      (default: fuzz/corpus/)

One directory per target (shard, tokenizer, optimizer, state_json, hf_config); the checkpoint
targets use core_c/fuzz/corpus/checkpoint/ (core_c/fuzz/make_corpus.py). Each holds small
valid files and near-misses that break one rule each. Standard library only, deterministic.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def shard(tokens, magic=20240520, version=1, count=None) -> bytes:
    h = [0] * 256
    h[:3] = [magic, version, len(tokens) if count is None else count]
    return struct.pack("<256i", *h) + struct.pack(f"<{len(tokens)}H", *tokens)


def tokenizer(tokens, eot, version=2, vocab=None, magic=20240328) -> bytes:
    h = [0] * 256
    h[:4] = [magic, version, len(tokens) if vocab is None else vocab, eot]
    body = b"".join(bytes([len(t)]) + t for t in tokens)
    return struct.pack("<256I", *h) + body


def optimizer(n, step=3, magic=20250117, version=1, count=None) -> bytes:
    h = [0] * 256
    h[:3] = [magic, version, step]
    h[4], h[5] = struct.unpack("<2i", struct.pack("<q", n if count is None else count))
    return struct.pack("<256i", *h) + struct.pack(f"<{2 * n}f", *[0.01 * i for i in range(2 * n)])


def corpora() -> dict:
    toks = [(i * 7 + 3) % 11 for i in range(40)]
    byte_vocab = [bytes([i]) for i in range(256)] + [b"<|endoftext|>"]
    small_vocab = [b"a", b"b", b"ab", b"\xff", b"<|endoftext|>"]
    state = {"format": "pyllmc-checkpoint", "version": 1, "step": 3, "files": {},
             "data": {"epoch": 0, "shard_index": 0, "position": 8, "batches_served": 2, "shuffle": 0,
                      "seed": 0, "B": 2, "T": 4, "num_shards": 1}}
    hf = {"model_type": "gpt2", "vocab_size": 11, "n_positions": 8, "n_layer": 1, "n_head": 2, "n_embd": 8,
          "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5, "n_inner": None}
    return {
        "shard": {
            "good.bin": shard(toks),
            "empty_tokens.bin": shard([]),
            "big_ids.bin": shard([65535, 11, 12, 0] * 5),
            "short.bin": shard(toks)[:500],
            "count_too_big.bin": shard(toks, count=41),
            "count_negative.bin": shard(toks, count=-1),
            "bad_magic.bin": shard(toks, magic=20240326),
            "bad_version.bin": shard(toks, version=2),
            "odd_size.bin": shard(toks) + b"\0",
        },
        "tokenizer": {
            "byte.bin": tokenizer(byte_vocab, 256),
            "small.bin": tokenizer(small_vocab, 4),
            "v1.bin": tokenizer(small_vocab, 0, version=1),
            "zero_len.bin": tokenizer(small_vocab, 4)[:1024] + b"\0",
            "truncated.bin": tokenizer(small_vocab, 4)[:-2],
            "trailing.bin": tokenizer(small_vocab, 4) + b"x",
            "eot_out.bin": tokenizer(small_vocab, 5),
            "vocab_huge.bin": tokenizer(small_vocab, 4, vocab=2**32 - 1),
            "bad_magic.bin": tokenizer(small_vocab, 4, magic=1),
        },
        "optimizer": {
            "good.bin": optimizer(6),
            "empty.bin": optimizer(0),
            "count_mismatch.bin": optimizer(6, count=7),
            "count_negative.bin": optimizer(6, count=-6),
            "count_huge.bin": optimizer(6, count=2**62),
            "bad_magic.bin": optimizer(6, magic=20240326),
            "truncated.bin": optimizer(6)[:-3],
        },
        "state_json": {
            "good.json": json.dumps(state).encode(),
            "missing_step.json": json.dumps({k: v for k, v in state.items() if k != "step"}).encode(),
            "bad_types.json": json.dumps(dict(state, step="3", files=[], data=[])).encode(),
            "bad_data.json": json.dumps(dict(state, data={"epoch": -1, "shard_index": "x"})).encode(),
            "path_file.json": json.dumps(dict(state, files={"../x": 1})).encode(),
            "nested.json": b"[" * 64 + b"]" * 64,
            "not_utf8.json": b"\xff\xfe{}",
        },
        "hf_config": {
            "good.json": json.dumps(hf).encode(),
            "relu.json": json.dumps(dict(hf, activation_function="relu")).encode(),
            "heads.json": json.dumps(dict(hf, n_head=3)).encode(),
            "zero_layers.json": json.dumps(dict(hf, n_layer=0)).encode(),
            "string_dims.json": json.dumps(dict(hf, n_embd="8")).encode(),
            "huge.json": json.dumps(dict(hf, n_positions=2**40)).encode(),
            "vocab_mismatch.json": json.dumps(dict(hf, vocab_size=12)).encode(),
            "list.json": b"[1, 2, 3]",
        },
    }


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    root = Path(argv[0]) if argv else HERE / "corpus"
    n = size = 0
    for target, files in corpora().items():
        d = root / target
        d.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (d / name).write_bytes(data)
            n += 1
            size += len(data)
    print(f"wrote {n} seed files ({size} bytes) under {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
