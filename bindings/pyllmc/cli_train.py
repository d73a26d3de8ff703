"""`pyllmc train`: a thin wrapper over Trainer. Its flags are generated from TrainerConfig
(``pyllmc.config``); this module adds --config, --resume and the printing."""

from __future__ import annotations

import argparse
import glob
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .cli_args import add_allow_download, add_config_flags, cli_defaults, default_out, describe, given_settings
from .config import TrainerConfig, config_fields, flag_name, read_config_file
from .errors import BadFormatError, FileError, InvalidArgumentError

CONFIG_NAME = "config.toml"  # the resolved config a run directory keeps

EPILOG = """\
examples:
  pyllmc prepare-data input.txt --out data           # text -> token shards + tokenizer.bin
  pyllmc train --data 'data/train_*.bin'             # a small d6 model with the defaults above
  pyllmc train --model d6 --data 'data/train_*.bin' --val-data data/val_000000.bin \\
      --steps 2000 --batch 8 --seq 256 --lr 6e-4 --warmup 100 --eval-every 100 --out runs/d6
  pyllmc train --config run.toml --lr 1e-3           # a TOML file of settings; flags override it
  pyllmc train --resume runs/d6                      # continue a stopped run bit-identically
  pyllmc train --resume runs/d6 --steps 3000         # ... for longer (safe overrides only)
  pyllmc train --data 'data/train_*.bin' --report-to tensorboard   # then: tensorboard --logdir runs

A config file holds the settings by name (batch_size = 8, or as flags: batch = 8); the run
directory keeps the resolved one as DIR/config.toml. Bad input exits with status 2, a run that
diverges with 1.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Train a GPT-2 through the C core. Writes DIR/metrics.jsonl (one row per step),\n"
                     "DIR/config.toml (the resolved settings), checkpoints DIR/ckpt_XXXXXXXX/ and DIR/loss.png.")
    p.epilog = EPILOG
    g = p.add_argument_group("run")
    g.add_argument("--config", metavar="FILE", help="TOML (or .json) file of settings; flags override it")
    g.add_argument("--resume", nargs="?", const=True, default=None, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR (or in --out) from its newest checkpoint, with its "
                        "saved settings; only settings that keep the run the same may be changed")
    add_allow_download(g)
    g.add_argument("--export-hf", metavar="DIR", help="at the end, also write a Hugging Face directory")
    g.add_argument("--export-bf16", metavar="FILE", help="at the end, also write an llm.c version 5 (bf16) .bin")
    add_config_flags(p.add_argument_group("settings (TrainerConfig fields)"))


# ---------------------------------------------------------------- resolving the configuration
def resolve_config(args: argparse.Namespace) -> Tuple[TrainerConfig, List[str]]:
    """The TrainerConfig of this command line, and notices to print. Fresh runs: the
    defaults, then --config, then the flags. --resume: the run's saved config.toml, then
    --config and the flags as overrides, which must be safe to change (see pyllmc.config)."""
    flags = given_settings(args)
    from_file: Dict[str, Any] = read_config_file(args.config) if args.config else {}
    if args.resume is None:
        values = dict(cli_defaults())
        values.update(from_file)
        values.update(flags)
        return TrainerConfig(**values), []
    if flags.get("overwrite"):
        raise InvalidArgumentError("--overwrite starts a new run and --resume continues one: give one of them")
    if isinstance(args.resume, str):
        run_dir = args.resume
        if "out_dir" in flags and os.path.abspath(flags["out_dir"]) != os.path.abspath(run_dir):
            raise InvalidArgumentError(f"--resume {run_dir} and --out {flags['out_dir']} name different "
                                       "directories; give the run directory once")
    else:
        run_dir = flags.get("out_dir") or from_file.get("out_dir") or default_out("train")
    saved_path = Path(run_dir) / CONFIG_NAME
    if not saved_path.is_file():
        if not Path(run_dir).is_dir():
            raise FileError(f"--resume {run_dir}: no such run directory")
        if isinstance(args.resume, str):
            raise FileError(f"{saved_path}: no such file, so the run's settings are unknown (a run from an older "
                            f"pyllmc?); resume it with all its flags: pyllmc train --resume --out {run_dir} ...")
        # the flag form on a run without config.toml: the flags are the settings, and the
        # Trainer checks those that decide the batches against the checkpoint
        values = dict(cli_defaults())
        values.update(from_file)
        values.update(flags)
        values.update(out_dir=run_dir, resume=True)
        return TrainerConfig(**values), []
    saved = read_config_file(saved_path)
    # --stop-at is an interruption of the earlier invocation, not a setting of the run
    saved.pop("stop_at", None)
    overrides = dict(from_file)
    overrides.update(flags)
    overrides.pop("out_dir", None)
    notices = []
    base = TrainerConfig(**saved)
    for name, new in overrides.items():
        old = getattr(base, name)
        if new == old:
            continue
        f = next(f for f in config_fields() if f.name == name)
        kind = f.metadata.get("resume", "fixed")
        where = flag_name(name) if name in flags else f"{args.config}: {name}"
        if kind == "fixed":
            raise InvalidArgumentError(
                f"{where}: cannot change when resuming (the run has {describe(name, old)}); "
                f"start a new run with another --out to change it")
        note = " (so the result differs from an uninterrupted run)" if kind == "changes-results" else ""
        notices.append(f"resume: {describe(name, old)} -> {describe(name, new)}{note}")
    values = dict(saved)
    values.update(overrides)
    values.update(out_dir=run_dir, resume=True, overwrite=False)
    return TrainerConfig(**values), notices


def _text_file_in(spec: Any) -> Optional[str]:
    """A file among the --data paths that holds text rather than token shards, if any."""
    paths = sorted(glob.glob(os.fspath(spec))) if isinstance(spec, (str, os.PathLike)) else list(spec or [])
    for p in paths[:16]:
        try:
            with open(p, "rb") as f:
                head = f.read(4096)
        except OSError:
            continue
        if not head:
            continue
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError:
            continue
        if sum(c.isprintable() or c in "\n\r\t" for c in text) >= 0.95 * len(text):
            return os.fspath(p)
    return None


def run(args: argparse.Namespace) -> int:
    from .distributed import DistributedError, env_is_distributed, restart_count
    from .trainer import Trainer

    cfg, notices = resolve_config(args)
    if cfg.data is None:
        raise InvalidArgumentError("--data is required: training token shards (a file or a glob); "
                                   "make them from text with `pyllmc prepare-data input.txt --out data`")
    if cfg.nproc > 1 and not env_is_distributed():  # start the ranks; each runs this command
        from .launch import launch, strip_nproc

        argv = getattr(args, "argv", None) or sys.argv[1:]
        return launch([sys.executable, "-m", "pyllmc", *strip_nproc(argv)], cfg.nproc,
                      grace=min(cfg.dist_timeout, 60.0) + 10.0)
    if restart_count() > 0 and not cfg.resume:  # torchrun --max-restarts: continue the run
        cfg.resume = True
    try:
        return _train(args, cfg, notices, Trainer(cfg))
    except DistributedError as e:  # a rank ended or diverged: a failed run, not bad input
        sys.stderr.write(f"pyllmc: data-parallel run failed: {e}\n")
        return 1


def _train(args: argparse.Namespace, cfg: TrainerConfig, notices: List[str], trainer: Any) -> int:
    from .errors import NonFiniteError

    with trainer:
        try:
            trainer.setup()
        except (BadFormatError, FileError) as e:
            text = _text_file_in(cfg.data) if isinstance(e, BadFormatError) else None
            if text is not None:
                raise BadFormatError(f"--data {text}: a text file, not token shards; tokenize it first with "
                                     f"`pyllmc prepare-data {text} --out data`, then pass --data 'data/train_*.bin'") from e
            for flag, spec in (("--data", cfg.data), ("--val-data", cfg.val_data)):
                if isinstance(spec, (str, os.PathLike)) and str(e).startswith(os.fspath(spec)):
                    raise type(e)(f"{flag} {e}") from e  # name the flag the path came from
            raise
        c = trainer.model.config
        say = print if trainer.is_primary else _silent  # rank 0 reports for all
        for n in notices:
            say(n, flush=True)
        world = f" x {trainer.world_size} ranks" + (" (ZeRO-1)" if cfg.zero else "") if trainer.world_size > 1 else ""
        say(f"model: GPT-2 L{c.num_layers} C{c.channels} H{c.num_heads} V{c.vocab_size} "
            f"({c.num_params() / 1e6:.2f}M params) | data: {trainer.train_loader.num_tokens} tokens "
            f"in {len(trainer.train_loader.shards)} shard(s) | B={cfg.batch_size} T={cfg.seq_len} "
            f"K={cfg.accum_steps}{world} | {cfg.schedule} lr {cfg.lr:g} | run dir {cfg.out_dir}"
            + (f" | resumed at step {trainer.step}" if trainer.step else ""), flush=True)
        try:
            h = trainer.train()
        except NonFiniteError as e:
            # a diverged run is not bad input (exit 2) but a failed run: exit 1, one line
            sys.stderr.write(f"pyllmc: training diverged: {e}\n")
            from .checkpoint import latest_checkpoint

            last = latest_checkpoint(cfg.out_dir) if cfg.out_dir else None
            if last is not None:
                say(f"last good checkpoint: {last}")
            return 1
        if args.export_hf and trainer.is_primary:
            trainer.export_hf(args.export_hf)
            say(f"exported Hugging Face directory: {args.export_hf}")
        if args.export_bf16 and trainer.is_primary:
            trainer.export_bf16(args.export_bf16)
            say(f"exported bf16 checkpoint (llm.c version 5): {args.export_bf16}")
    parts = [f"step {h.final_step}/{cfg.steps}"]
    if h.final_loss is not None:
        parts.append(f"loss {h.final_loss:.4f}")
    if h.final_val_loss is not None:
        parts.append(f"val loss {h.final_val_loss:.4f}")
    say(("stopped (" + h.stop_reason + "): " if h.stop_reason else "done: ") + ", ".join(parts))
    say(f"metrics: {cfg.out_dir}/metrics.jsonl")
    if h.last_checkpoint:
        say(f"checkpoint: {h.last_checkpoint}" + (f"  (continue with: pyllmc train --resume {cfg.out_dir})"
                                                   if h.stop_reason else ""))
    if h.loss_curve:
        say(f"loss curve: {h.loss_curve}")
    if h.stop_reason == "interrupted":
        return 130
    return 0


def _silent(*args: Any, **kwargs: Any) -> None:
    """print() of the ranks other than 0."""
