"""`pyllmc convert SRC DST`: move GPT-2 weights between the formats, exactly.

SRC: a Hugging Face directory (config.json + model.safetensors), an llm.c checkpoint
(*.bin, version 3 or 5), a pyllmc checkpoint or run directory (its model.bin), a hub id
(through transformers), or a size descriptor dN (the C core's GPT-2 initialisation from
--seed). DST: a path ending in .bin is written as an llm.c checkpoint (version 3 fp32, or 5
bf16 with --bf16); anything else is a Hugging Face directory that
GPT2LMHeadModel.from_pretrained loads. Conversions are copies, transposes and zero padding
only, so they are bit-exact (bf16 output rounds to nearest even, as docs/formats.md says); the
written file is read back and checked before the command reports success.
"""

from __future__ import annotations

import argparse
import os
from typing import Any, Dict, Tuple

import numpy as np

from .errors import BadFormatError, FileError, InvalidArgumentError, PyllmcError, UnsupportedError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = __doc__.split("\n\n")[1].replace("\n", " ") if __doc__ else None
    p.add_argument("src", metavar="SRC", help="HF directory or hub id, llm.c .bin, checkpoint/run dir, or dN")
    p.add_argument("dst", metavar="DST", help="*.bin: llm.c checkpoint; otherwise: a HF directory")
    p.add_argument("--bf16", action="store_true", help="write a version 5 (bfloat16) .bin instead of version 3 (fp32)")
    p.add_argument("--seed", type=int, default=0, help="initialisation seed when SRC is a size descriptor")
    p.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    from .cli_args import add_allow_download

    add_allow_download(p)


def _reference():
    try:
        from . import reference
    except ImportError as e:  # the reference needs numpy only for .bin; torch for HF models
        raise UnsupportedError(f"this conversion needs torch, transformers and safetensors "
                               f"(pip install 'pyllmc[torch]'): {e}") from None
    return reference


def read_source(src: str, seed: int = 0) -> Tuple[Any, Dict[str, np.ndarray]]:
    """(GPTConfig, params in the C layout) for any model source."""
    from .model_source import resolve_checkpoint_file
    from .shapes import is_size_descriptor

    ref = _reference()
    if is_size_descriptor(src):
        from .model import Model

        with Model.from_config(src.strip(), max_batch=1, max_seq=1, threads=1, seed=seed) as m:
            return m.config, ref.model_params(m)
    p = os.path.expanduser(src)
    try:
        if os.path.isdir(p) and os.path.isfile(os.path.join(p, "config.json")):
            if not os.path.isfile(os.path.join(p, "model.safetensors")):
                raise FileError(f"{src}: HF directory without model.safetensors (only safetensors weights are read)")
            return ref.load_hf_dir_params(p)
        ck = resolve_checkpoint_file(p) if os.path.exists(p) else None
        if ck is not None:
            return ref.read_llmc_checkpoint(str(ck))
        if os.path.isdir(p):
            raise FileError(f"{src}: directory holds no model (no config.json, model.bin or checkpoint)")
        if src.endswith(".bin") or src.startswith((".", "/", "~")) or src.count("/") > 1:
            raise FileError(f"{src}: no such file")
        from .model_source import resolve_hub_id

        try:
            hub = resolve_hub_id(src)  # cached, or downloads allowed
        except FileError as e:
            raise FileError("SRC" + str(e)[len("model"):]) from None
        model = ref.load_reference(hub)
        cfg = ref.as_llmc_config(model.config)
        return cfg, ref.hf_to_params(model, cfg.padded_vocab_size)
    except PyllmcError:
        raise
    except ref.CheckpointFormatError as e:
        raise BadFormatError(str(e)) from None
    except KeyError as e:
        raise BadFormatError(f"{src}: not a GPT-2 model ({e})") from None
    except ValueError as e:  # includes a config.json that is not JSON
        raise BadFormatError(f"{src}: {str(e).splitlines()[0]}") from None
    except OSError as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise FileError(f"{src}: cannot read ({msg})") from None


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def convert(src: str, dst: str, *, bf16: bool = False, seed: int = 0, overwrite: bool = False) -> str:
    """Convert and verify; returns a one-line description of what was written."""
    ref = _reference()
    to_bin = dst.endswith(".bin")
    if bf16 and not to_bin:
        raise InvalidArgumentError(f"{dst}: --bf16 applies to .bin checkpoints only")
    if os.path.exists(dst) and not overwrite:
        raise FileError(f"{dst}: already exists (use --overwrite to replace it)")
    if os.path.abspath(src) == os.path.abspath(dst):
        raise InvalidArgumentError(f"{dst}: source and destination are the same")
    cfg, params = read_source(src, seed)
    try:
        if to_bin:
            version = 5 if bf16 else 3
            parent = os.path.dirname(os.path.abspath(dst))
            if not os.path.isdir(parent):
                raise FileError(f"{dst}: directory {parent} does not exist")
            ref.write_llmc_checkpoint(dst, params, cfg, version=version)
            cfg2, back = ref.read_llmc_checkpoint(dst)
            expect = params if version == 3 else {n: ref.round_to_bf16(a) for n, a in params.items()}
            what = f"llm.c checkpoint version {version} ({'bf16' if bf16 else 'fp32'})"
        else:
            ref.save_hf_dir(params, cfg, dst)
            cfg2, back = ref.load_hf_dir_params(dst, cfg.padded_vocab_size)
            expect = params
            what = "Hugging Face directory (config.json + model.safetensors)"
    except PyllmcError:
        raise
    except OSError as e:
        raise FileError(f"{dst}: cannot write ({e.strerror or e})") from None
    # the file must hold exactly what was meant to be written
    if (cfg2.vocab_size, cfg2.num_layers, cfg2.num_heads, cfg2.channels, cfg2.max_seq_len) != \
            (cfg.vocab_size, cfg.num_layers, cfg.num_heads, cfg.channels, cfg.max_seq_len):
        raise BadFormatError(f"{dst}: read back a different shape ({cfg2} vs {cfg})")
    for n in ref.PARAM_NAMES:
        if back[n].shape != expect[n].shape or not np.array_equal(_bits(back[n]), _bits(expect[n])):
            raise BadFormatError(f"{dst}: parameter {n} did not read back bit-exactly")
    return (f"wrote {dst}: {what}, GPT-2 L{cfg.num_layers} C{cfg.channels} NH{cfg.num_heads} V{cfg.vocab_size} "
            f"maxT{cfg.max_seq_len} ({ref.num_params(cfg) / 1e6:.2f}M values incl. padding); read back bit-exactly")


def run(args: argparse.Namespace) -> int:
    from .cli_parity import quiet_hub_logging

    quiet_hub_logging()
    print(convert(args.src, args.dst, bf16=args.bf16, seed=args.seed, overwrite=args.overwrite))
    return 0
