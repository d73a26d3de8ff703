"""`pyllmc parity`: the C core against the PyTorch reference in lockstep (the contract of docs/design.md).

Exit 0 when every tensor is within tolerance, 1 when not, 2 on bad input. Writes
DIR/parity.json (the contract), DIR/parity_detail.json, DIR/report.txt and the heatmaps
(heatmap.png with matplotlib, heatmap.html always). The work is pyllmc.reference.lockstep's;
this module parses, prints and picks the exit code.
"""

from __future__ import annotations

import argparse
import sys

from .cli_args import add_allow_download, add_switch, default_out
from .errors import InvalidArgumentError, UnsupportedError


def _positive_int(value: str) -> int:
    try:
        v = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def _nonneg_int(value: str) -> int:
    try:
        v = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


def quiet_hub_logging() -> None:
    """A hub id that cannot be fetched (offline) is reported as one line by the CLI; the
    download libraries' own retry warnings would only repeat it, several lines per try."""
    import importlib

    # each library sets its own level when its logging module is first imported (lazily):
    # import that module first, then lower the level through it
    for mod in ("huggingface_hub.utils.logging", "transformers.utils.logging"):
        try:
            importlib.import_module(mod).set_verbosity_error()
        except (ImportError, AttributeError):
            continue


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Train the C core and the PyTorch reference (transformers GPT2LMHeadModel, same weights, "
                     "same batches) in lockstep and compare every activation, gradient, parameter and AdamW "
                     "moment of every layer after each forward, backward and update. Exit 0 pass, 1 fail, 2 bad input.")
    p.add_argument("--model", required=True, help="size (d6, d12, ...), llm.c .bin, checkpoint/run dir, or HF dir/hub id")
    p.add_argument("--steps", type=_positive_int, default=3, help="training steps in lockstep (default 3)")
    p.add_argument("--batch", type=_positive_int, default=4, help="batch size B (default 4)")
    p.add_argument("--seq", type=_positive_int, default=64, help="sequence length T (default 64)")
    p.add_argument("--seed", type=_nonneg_int, default=0, help="weights of a size descriptor, and the batches")
    p.add_argument("--device", default="cpu", help="where the C core runs: cpu, cuda or wasm (the reference runs on the CPU)")
    p.add_argument("--out", default=default_out("parity"), help=f"output directory (default {default_out('parity')})")
    p.add_argument("--threads", type=_nonneg_int, default=0, help="threads for the C core and torch (0 = the OpenMP default, all cores)")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="bf16: the C core in bf16 against PyTorch under CPU autocast bf16, attributed against fp64")
    g = p.add_argument_group("training hyperparameters (defaults: those of pyllmc train)")
    g.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    g.add_argument("--schedule", choices=["cosine", "linear", "constant", "wsd"], default="cosine",
                   help="learning-rate schedule (default cosine)")
    g.add_argument("--warmup", type=_nonneg_int, default=0, help="linear warmup steps")
    g.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay (2-D weights only)")
    g.add_argument("--decay-all", action="store_true", help="weight decay on every parameter (llm.c)")
    g.add_argument("--beta1", type=float, default=0.9, help="AdamW beta1 (default 0.9)")
    g.add_argument("--beta2", type=float, default=0.95, help="AdamW beta2 (default 0.95)")
    g.add_argument("--eps", type=float, default=1e-8, help="AdamW epsilon (default 1e-08)")
    g.add_argument("--grad-clip", type=float, default=1.0, help="max gradient norm (0 = off)")
    g = p.add_argument_group("reference and model")
    add_switch(g, "--fp64", default=True, help="compare against an fp64 reference too (default on; --no-fp64: "
                                                "the direct fp32 test only)")
    g.add_argument("--vocab-size", type=_positive_int, default=None, help="vocabulary of a size descriptor model")
    g.add_argument("--max-seq-len", type=_positive_int, default=None, help="max sequence length of a size descriptor")
    g.add_argument("--randomize", action="store_true",
                   help="overwrite every weight with non-trivial random values (no zero bias, no unit LN weight)")
    g = p.add_argument_group("fault injection (proves the harness localises bugs)")
    g.add_argument("--fault", metavar="NAME=DELTA",
                   help="add DELTA to element 0 of the C core's activation NAME after its kernel (e.g. h1.fch=0.5)")
    g.add_argument("--weight-fault", metavar="NAME=DELTA", action="append", default=[],
                   help="add DELTA to element 0 of the C core's parameter NAME after loading (e.g. h1.fcw=0.01)")
    g = p.add_argument_group("output")
    g.add_argument("--quiet", action="store_true", help="print the summary only, not every tensor")
    add_switch(g, "--plot", default=True, off_flags=("--no-heatmap",),
               help="write heatmap.png / heatmap.html (default on)")
    add_allow_download(p)


def run(args: argparse.Namespace) -> int:
    try:
        import torch

        from .reference import lockstep, report
    except ImportError as e:
        raise UnsupportedError(f"pyllmc parity needs torch and transformers (pip install 'pyllmc[torch]'): {e}") from None
    from .model_source import check_device

    check_device(args.device)
    quiet_hub_logging()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = lockstep.LockstepConfig(
        steps=args.steps, batch=args.batch, seq=args.seq, seed=args.seed, lr=args.lr, schedule=args.schedule,
        warmup=args.warmup, beta1=args.beta1, beta2=args.beta2, eps=args.eps, weight_decay=args.weight_decay,
        decay_matrices_only=not args.decay_all, grad_clip=args.grad_clip, fp64=args.fp64,
        threads=args.threads, device=args.device, precision=args.precision)
    cfg.validate()
    if args.warmup > args.steps:
        raise InvalidArgumentError(f"--warmup {args.warmup} is longer than --steps {args.steps}")
    faults = [lockstep.parse_fault(args.fault)] if args.fault else []
    weight_faults = [lockstep.parse_fault(w) for w in args.weight_fault]

    def say(line: str) -> None:
        print(line, flush=True)

    result = lockstep.run_parity(args.model, cfg, vocab_size=args.vocab_size, max_seq_len=args.max_seq_len,
                                 randomize=args.randomize, faults=faults, weight_faults=weight_faults, progress=say)
    paths = report.write_reports(result, args.out, heatmaps=args.plot)
    if not args.quiet:
        print("\n".join(report.tensor_listing(result)))
    print("\n".join(report.summary_lines(result, files=list(paths.values()))))
    sys.stdout.flush()
    return 0 if result.passed else 1
