"""`pyllmc sample --model M --prompt TEXT`: generate text through the C core."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Optional

from .cli_args import add_allow_download, add_switch, add_threads
from .errors import InvalidArgumentError, PyllmcError, UnsupportedError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = "Generate text from a model (temperature / top-k sampling through the C core)."
    p.add_argument("--model", required=True,
                   help="llm.c .bin, checkpoint or run dir (newest checkpoint), HF dir/hub id, or a size (random)")
    p.add_argument("--prompt", default="", help="text to continue (default: start of a document)")
    p.add_argument("--max-tokens", type=int, default=128, help="tokens to generate (default 128)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature, 0 = greedy (default 1)")
    p.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens (0 = all; default 0)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (and the weights of a size) (default 0)")
    p.add_argument("--num-samples", type=int, default=1, help="samples to generate (default 1)")
    p.add_argument("--tokenizer", default=None,
                   help="byte, gpt2, a tokenizer.bin or HF dir (default: found next to the model)")
    add_switch(p, "--stop-at-eot", default=False, help="stop a sample at the end-of-text token (default off)")
    add_threads(p)
    p.add_argument("--device", choices=("cpu", "cuda", "wasm"), default="cpu", help="where the C core runs (default cpu)")
    add_allow_download(p)


def find_tokenizer_for(model_spec: Any, vocab_size: int, explicit: Optional[str] = None):
    """The tokenizer to use with a model: explicit, else a tokenizer.bin next to the model
    (run dir, checkpoint dir or .bin file) or HF tokenizer files in its directory, else by
    vocabulary size (257: bytes, 50257: GPT-2 BPE when available locally)."""
    from .tokenizer import ByteTokenizer, find_tokenizer_file, gpt2_tokenizer, load_tokenizer

    if explicit:
        return load_tokenizer(explicit)
    if isinstance(model_spec, (str, os.PathLike)):
        p = Path(os.fspath(model_spec))
        candidates = []
        if p.is_dir():
            candidates += [p, p.parent]
        elif p.is_file():
            candidates += [p.parent, p.parent.parent]
        for d in candidates:
            if (d / "tokenizer.json").is_file() or (d / "vocab.json").is_file():
                try:
                    return load_tokenizer(d)
                except PyllmcError:
                    pass
            f = find_tokenizer_file(d)
            if f is not None:
                tok = load_tokenizer(f)
                if tok.vocab_size <= vocab_size:
                    return tok
    if vocab_size == 257:
        return ByteTokenizer()
    if vocab_size == 50257:
        return gpt2_tokenizer()
    raise UnsupportedError(f"no tokenizer found for a model with vocabulary {vocab_size}; pass --tokenizer")


def run(args: argparse.Namespace) -> int:
    from .model_source import check_device, load_model
    from .shapes import is_size_descriptor
    from .sampling import generate, make_rng

    check_device(args.device)
    if args.max_tokens < 0 or args.num_samples < 1 or args.top_k < 0:
        raise InvalidArgumentError("--max-tokens and --top-k must be >= 0, --num-samples >= 1")
    tok = None
    vocab = None
    if is_size_descriptor(args.model):  # a random model: its vocabulary follows the tokenizer
        from .tokenizer import load_tokenizer

        tok = load_tokenizer(args.tokenizer or "byte")
        vocab = tok.vocab_size
    model = load_model(args.model, max_batch=1, threads=args.threads, seed=args.seed, vocab_size=vocab,
                       device=args.device)
    with model:
        if tok is None:
            tok = find_tokenizer_for(args.model, model.config.vocab_size, args.tokenizer)
        if tok.vocab_size > model.config.vocab_size:
            raise InvalidArgumentError(
                f"the tokenizer has {tok.vocab_size} tokens, the model only {model.config.vocab_size}")
        if args.prompt:
            if not tok.can_encode:
                raise UnsupportedError("this tokenizer can only decode; pass --tokenizer byte|gpt2|DIR to use --prompt")
            ids = tok.encode(args.prompt)
            if not ids:
                ids = [tok.eot_id]
        else:
            ids = [tok.eot_id]
        rng = make_rng(args.seed)
        for i in range(args.num_samples):
            new = generate(model, ids, args.max_tokens, temperature=args.temperature, top_k=args.top_k, rng=rng,
                           stop_token=tok.eot_id if args.stop_at_eot else None)
            if args.num_samples > 1:
                print(f"--- sample {i + 1} ---")
            print(args.prompt + tok.decode(new), flush=True)
    return 0
