"""The `pyllmc` command line: thin argument parsing and printing, no logic of its own.

Bad input gives one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, NoReturn, Optional


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2 (argparse prints usage too)
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def _cmd_info(args: argparse.Namespace) -> int:
    from . import __version__
    from ._ffi import ABI_VERSION, HEADER_PATH, LIBRARY_PATH, lib

    print(f"pyllmc {__version__}")
    print(f"abi version: {int(lib.llmc_abi_version())} (header {ABI_VERSION})")
    print(f"library: {LIBRARY_PATH}")
    print(f"header: {HEADER_PATH}")
    print(f"openmp: {'yes' if lib.llmc_has_openmp() else 'no'}")
    from .model import cuda_available, cuda_built, cuda_info

    print(f"cuda backend built: {'yes' if cuda_built() else 'no'}")
    print(f"cuda: {'yes' if cuda_available() else 'no'} ({cuda_info()})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pyllmc", description="GPT-2 training with a C core, checked against PyTorch.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    p = sub.add_parser("info", help="show the C library in use (ABI version, path, OpenMP, CUDA)")
    p.set_defaults(func=_cmd_info)
    _add_trainer_commands(sub)
    from . import cli_bench

    p = sub.add_parser("bench", help="speed, memory and scaling of the C core against PyTorch (bench.json, plots)")
    cli_bench.add_arguments(p)
    p.set_defaults(func=cli_bench.run)
    from . import cli_convert, cli_parity

    p = sub.add_parser("parity", help="the C core against PyTorch in lockstep, every tensor of every layer (parity.json)")
    cli_parity.add_arguments(p)
    p.set_defaults(func=cli_parity.run)
    p = sub.add_parser("convert", help="convert models: HF directory / hub id / dN <-> llm.c .bin checkpoint")
    cli_convert.add_arguments(p)
    p.set_defaults(func=cli_convert.run)
    return parser


def _add_trainer_commands(sub) -> None:
    """train, sample, prepare-data, demo: each lives in its own module (add_arguments/run)."""
    from . import cli_prepare, cli_sample, cli_train, demo

    for name, mod, help_text in (
        ("demo", demo, "offline demo: parity check, then a small GPT-2 learns addition (~3 min)"),
        ("train", cli_train, "train a GPT-2 through the C core (metrics.jsonl, checkpoints, --resume)"),
        ("sample", cli_sample, "generate text from a model"),
        ("prepare-data", cli_prepare, "text files -> token shards + tokenizer.bin"),
    ):
        p = sub.add_parser(name, help=help_text)
        mod.add_arguments(p)
        p.set_defaults(func=mod.run)


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # `train --nproc` restarts itself with it
    if args.version:
        from . import __version__

        print(f"pyllmc {__version__}")
        return 0
    if not getattr(args, "func", None):
        parser.error("a command is required (see `pyllmc --help`)")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        sys.stderr.write("pyllmc: interrupted\n")
        return 130
    except Exception as e:  # a PyllmcError or OS error from bad input: one line, exit 2
        from .errors import PyllmcError

        if isinstance(e, (PyllmcError, OSError, ValueError)):
            sys.stderr.write(f"pyllmc: error: {e}\n")
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
