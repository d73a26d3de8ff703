"""`pyllmc prepare-data`: text files -> llm.c token shards + tokenizer.bin."""

from __future__ import annotations

import argparse

from .cli_args import add_switch


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Tokenize text files into llm.c token shards (train_*.bin, val_*.bin) and a "
                     "tokenizer.bin, streaming large inputs.")
    p.add_argument("inputs", nargs="+", metavar="TEXT", help="text files (each one document)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--tokenizer", default="byte",
                   help="byte (always offline), gpt2 (tiktoken/transformers cache, never downloads), "
                        "a tokenizer.bin or a HF tokenizer directory")
    p.add_argument("--val-frac", type=float, default=0.1, help="fraction of the input for validation")
    p.add_argument("--shard-tokens", type=int, default=100_000_000, help="tokens per shard")
    add_switch(p, "--eot", default=True, takes_value=False,
               help="put end-of-text before each file (default on; --no-eot: do not)")


def run(args: argparse.Namespace) -> int:
    from .prepare import prepare_data

    r = prepare_data(args.inputs, args.out, tokenizer=args.tokenizer, val_frac=args.val_frac,
                     shard_tokens=args.shard_tokens, eot=args.eot)
    print(f"read {r.input_bytes} bytes from {len(args.inputs)} file(s); vocabulary {r.vocab_size}")
    print(f"train: {r.train_tokens} tokens in {len(r.train_shards)} shard(s)"
          + (f": {r.train_shards[0]}" + (" ..." if len(r.train_shards) > 1 else "") if r.train_shards else ""))
    print(f"val:   {r.val_tokens} tokens in {len(r.val_shards)} shard(s)"
          + (f": {r.val_shards[0]}" + (" ..." if len(r.val_shards) > 1 else "") if r.val_shards else ""))
    print(f"tokenizer: {r.tokenizer}")
    return 0
