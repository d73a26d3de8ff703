"""The `pyllmc` command line: thin argument parsing and printing, no logic of its own.

Bad input (a pyllmc error) gives one line on stderr naming the flag or file, and exit
status 2, never a traceback; anything else is a bug and says so, with the traceback (see main).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import List, NoReturn, Optional


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kw):
        from .cli_args import HelpFormatter

        kw.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kw)

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


EPILOG = """\
examples:
  pyllmc demo                                      # offline: parity check, then a GPT-2 learns addition
  pyllmc prepare-data input.txt --out data         # text -> token shards + tokenizer.bin
  pyllmc train --data 'data/train_*.bin'           # train (pyllmc train --help: every setting)
  pyllmc train --resume runs/train                 # continue a stopped run
  pyllmc sample --model runs/train --prompt "ROMEO:"
  pyllmc parity --model d6 --steps 2               # the C core against PyTorch, tensor by tensor

Exit status: 0 done, 1 failed (or an internal error), 2 bad input. --debug shows tracebacks.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pyllmc", description="GPT-2 training with a C core, checked against PyTorch.",
                     epilog=EPILOG)
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of any error")
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
    from .wasm import cli as cli_wasm

    p = sub.add_parser("wasm", help="run WebAssembly guests that train through pyllmc (pyllmc wasm run GUEST.wasm)")
    cli_wasm.add_arguments(p)
    p.set_defaults(func=cli_wasm.run)
    from .cli_args import add_debug

    for p in sub.choices.values():  # `pyllmc train ... --debug` as well as `pyllmc --debug train ...`
        add_debug(p)
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


def format_error(e: BaseException) -> str:
    """The one-line message of a bad-input error; a setting's name (``batch_size``) at its
    start becomes the flag (``--batch``)."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    name = getattr(e, "field", None)
    if name and msg.startswith(name):
        from .config import flag_name

        msg = flag_name(name) + msg[len(name):]
    return msg


_PATH_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)


def _debug_requested(args: Optional[argparse.Namespace]) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get("PYLLMC_DEBUG", "") not in ("", "0")


def main(argv: Optional[List[str]] = None) -> int:
    """Exit status: 0 done, 2 bad input (a pyllmc error naming the flag or file, or a path
    that is missing, not permitted or of the wrong kind: one line), 1 a failed run, another
    OS error or an internal error (an unexpected exception is a bug: "internal error"
    and its traceback), 130 interrupted. ``--debug`` shows the traceback of any error."""
    parser = build_parser()
    from .wasm.cli import split_guest_args

    argv, guest_args = split_guest_args(argv)  # `pyllmc wasm run G.wasm ... -- ARGS`: ARGS are the guest's
    args = parser.parse_args(argv)
    args.argv = list(argv)  # `train --nproc` restarts itself with it
    if guest_args is not None:
        args.guest_args = guest_args
    if args.version:
        from . import __version__

        print(f"pyllmc {__version__}")
        return 0
    if not getattr(args, "func", None):
        parser.error("a command is required (see `pyllmc --help`)")
    if getattr(args, "allow_download", None):
        from .model_source import ALLOW_DOWNLOAD_ENV

        os.environ[ALLOW_DOWNLOAD_ENV] = "1"
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        sys.stderr.write("pyllmc: interrupted\n")
        return 130
    except Exception as e:
        from .errors import PyllmcError

        debug = _debug_requested(args)
        if isinstance(e, PyllmcError):  # typed: bad input, or a model too large for this machine
            if debug:
                traceback.print_exc()
            sys.stderr.write(f"pyllmc: error: {format_error(e)}\n")
            return 2
        if isinstance(e, _PATH_ERRORS):  # a path the user gave: missing, not allowed, wrong kind
            if debug:
                traceback.print_exc()
            sys.stderr.write(f"pyllmc: error: {format_error(e)}\n")
            return 2
        if isinstance(e, (OSError, MemoryError)):  # the machine, not the input and not a bug
            if debug:
                traceback.print_exc()
            sys.stderr.write(f"pyllmc: error: {format_error(e)}\n")
            return 1
        traceback.print_exc()
        sys.stderr.write(f"pyllmc: internal error (a bug in pyllmc; please report it with the traceback "
                         f"above): {type(e).__name__}: {format_error(e)}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
