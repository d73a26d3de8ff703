"""`pyllmc train`: thin wrapper over Trainer (flags as in DESIGN.md's command-line contract)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .errors import InvalidArgumentError


def _on_off(value: str) -> bool:
    v = value.strip().lower()
    if v in ("on", "true", "1", "yes"):
        return True
    if v in ("off", "false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected on or off, got {value!r}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Train a GPT-2 through the C core. Writes DIR/metrics.jsonl (one row per step), "
                     "checkpoints DIR/ckpt_XXXXXXXX/ and DIR/loss.png.")
    p.add_argument("--model", help="size (d6, d12, ...), llm.c .bin, checkpoint/run dir, or HF dir/hub id "
                                   "(may be omitted with --resume)")
    p.add_argument("--data", required=True, help="training token shards: a file or a glob")
    p.add_argument("--val-data", help="validation token shards: a file or a glob")
    p.add_argument("--steps", type=int, required=True, help="length of the whole run in optimizer steps")
    p.add_argument("--batch", type=int, required=True, help="micro-batch size B")
    p.add_argument("--seq", type=int, required=True, help="sequence length T")
    p.add_argument("--lr", type=float, required=True, help="peak learning rate")
    p.add_argument("--schedule", choices=["cosine", "linear", "constant", "wsd"], default="cosine")
    p.add_argument("--warmup", type=int, default=0, help="linear warmup steps")
    p.add_argument("--final-frac", type=float, default=0.1, help="last step's lr = lr * this (default 0.1)")
    p.add_argument("--wsd-decay-frac", type=float, default=0.2, help="wsd: fraction of steps spent decaying")
    p.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay (2-D weights only)")
    p.add_argument("--decay-all", action="store_true", help="apply weight decay to every parameter (llm.c)")
    p.add_argument("--beta1", type=float, default=0.9)
    p.add_argument("--beta2", type=float, default=0.95)
    p.add_argument("--eps", type=float, default=1e-8)
    p.add_argument("--grad-clip", type=float, default=1.0, help="max gradient norm (0 = off)")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    p.add_argument("--on-nonfinite", choices=["stop", "skip"], default="stop",
                   help="a NaN/inf loss or gradient: stop naming the first bad tensor (default), or skip that update")
    p.add_argument("--shuffle", type=_on_off, default=True, metavar="on|off", help="shuffle training data (default on)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="OpenMP threads (0 = default)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda needs a CUDA build and a GPU)")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="bf16: matmul/attention operands rounded to bf16, fp32 weights and optimizer (default fp32)")
    p.add_argument("--out", default="runs/train", help="output directory (default runs/train)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--stop-at", type=int, help="end after this step with a checkpoint, as an interruption would")
    p.add_argument("--save-every", type=int, default=0, help="checkpoint every K steps (and at the end)")
    p.add_argument("--keep-last", type=int, default=2, help="checkpoints to keep (0 = all)")
    p.add_argument("--eval-every", type=int, default=0, help="validation loss every K steps (and at the end)")
    p.add_argument("--eval-batches", type=int, default=10, help="validation batches per evaluation")
    p.add_argument("--sample-every", type=int, default=0, help="print a sample every K steps")
    p.add_argument("--sample-tokens", type=int, default=64)
    p.add_argument("--sample-prompt", default=None)
    p.add_argument("--tokenizer", default=None, help="byte, gpt2, or a tokenizer.bin (default: next to --data)")
    p.add_argument("--vocab-size", type=int, default=None, help="vocabulary for a size descriptor model")
    p.add_argument("--max-seq-len", type=int, default=None, help="max sequence length for a size descriptor model")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--progress", choices=["auto", "bar", "lines", "none"], default="auto")
    p.add_argument("--log-every", type=int, default=10, help="plain-line progress every N steps")
    p.add_argument("--no-plot", action="store_true", help="do not write loss.png")
    p.add_argument("--export-hf", metavar="DIR", help="at the end, also write a Hugging Face directory")
    p.add_argument("--export-bf16", metavar="FILE", help="at the end, also write an llm.c version 5 (bf16) .bin")


def config_from_args(args: argparse.Namespace) -> Any:
    from .trainer import TrainerConfig

    if not args.model and not args.resume:
        raise InvalidArgumentError("--model is required (unless --resume continues a run in --out)")
    return TrainerConfig(
        model=args.model, data=args.data, val_data=args.val_data, tokenizer=args.tokenizer,
        vocab_size=args.vocab_size, max_seq_len=args.max_seq_len,
        batch_size=args.batch, seq_len=args.seq, grad_accum=args.grad_accum, steps=args.steps, lr=args.lr,
        schedule=args.schedule, warmup=args.warmup, final_frac=args.final_frac, wsd_decay_frac=args.wsd_decay_frac,
        beta1=args.beta1, beta2=args.beta2, eps=args.eps, weight_decay=args.weight_decay,
        decay_matrices_only=not args.decay_all, grad_clip=args.grad_clip, on_nonfinite=args.on_nonfinite,
        shuffle=args.shuffle, seed=args.seed,
        threads=args.threads, device=args.device, precision=args.precision, eval_every=args.eval_every, eval_batches=args.eval_batches,
        sample_every=args.sample_every, sample_tokens=args.sample_tokens, sample_prompt=args.sample_prompt,
        out_dir=args.out, save_every=args.save_every, keep_last=args.keep_last, resume=args.resume,
        stop_at=args.stop_at, overwrite=args.overwrite, progress=args.progress, log_every=args.log_every,
        plot=not args.no_plot,
    )


def run(args: argparse.Namespace) -> int:
    from .errors import NonFiniteError
    from .model_source import check_device
    from .trainer import Trainer

    check_device(args.device)
    cfg = config_from_args(args)
    with Trainer(cfg) as trainer:
        trainer.setup()
        c = trainer.model.config
        print(f"model: GPT-2 L{c.num_layers} C{c.channels} H{c.num_heads} V{c.vocab_size} "
              f"({c.num_params() / 1e6:.2f}M params) | data: {trainer.train_loader.num_tokens} tokens "
              f"in {len(trainer.train_loader.shards)} shard(s) | B={cfg.batch_size} T={cfg.seq_len} "
              f"K={cfg.accum_steps} | {cfg.schedule} lr {cfg.lr:g}", flush=True)
        try:
            h = trainer.train()
        except NonFiniteError as e:
            # a diverged run is not bad input (exit 2) but a failed run: exit 1, one line
            sys.stderr.write(f"pyllmc: training diverged: {e}\n")
            from .checkpoint import latest_checkpoint

            last = latest_checkpoint(cfg.out_dir) if cfg.out_dir else None
            if last is not None:
                print(f"last good checkpoint: {last}")
            return 1
        if args.export_hf:
            trainer.export_hf(args.export_hf)
            print(f"exported Hugging Face directory: {args.export_hf}")
        if args.export_bf16:
            trainer.export_bf16(args.export_bf16)
            print(f"exported bf16 checkpoint (llm.c version 5): {args.export_bf16}")
    parts = [f"step {h.final_step}/{cfg.steps}"]
    if h.final_loss is not None:
        parts.append(f"loss {h.final_loss:.4f}")
    if h.final_val_loss is not None:
        parts.append(f"val loss {h.final_val_loss:.4f}")
    print(("stopped (" + h.stop_reason + "): " if h.stop_reason else "done: ") + ", ".join(parts))
    print(f"metrics: {cfg.out_dir}/metrics.jsonl")
    if h.last_checkpoint:
        print(f"checkpoint: {h.last_checkpoint}" + ("  (continue with --resume)" if h.stop_reason else ""))
    if h.loss_curve:
        print(f"loss curve: {h.loss_curve}")
    if h.stop_reason == "interrupted":
        return 130
    return 0
