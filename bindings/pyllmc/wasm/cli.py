"""``pyllmc wasm run GUEST.wasm [--dir HOST[::GUEST]]... [--env K=V]... [--max-memory SIZE]
[--max-host-memory SIZE] [--max-handles N] [--timeout SECONDS] [--threads N] [-- ARGS...]``

Everything after ``--`` goes to the guest as its argv[1:]. Exit codes: the guest's own, 125
for a trap, 124 for a timeout, 2 for bad input to the runner; each of the last three prints
one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional, Sequence, Tuple


def split_guest_args(argv: Optional[Sequence[str]]) -> Tuple[List[str], Optional[List[str]]]:
    """``pyllmc wasm ... -- ARGS`` -> (the runner's argv, ARGS); argparse alone would mix the
    guest's flags with the runner's."""
    a = list(sys.argv[1:] if argv is None else argv)
    if a[:1] == ["wasm"] and "--" in a:
        i = a.index("--")
        return a[:i], a[i + 1:]
    return a, None


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="wasm_command", metavar="SUBCOMMAND", parser_class=type(p), help="run: run a guest module")
    r = sub.add_parser("run", help="run a wasm32-wasi guest that trains through pyllmc",
                       usage="pyllmc wasm run GUEST.wasm [--dir HOST[::GUEST]]... [--env K=V]... [--max-memory SIZE] "
                             "[--max-host-memory SIZE] [--max-handles N] [--timeout SECONDS] [--threads N] [-- ARGS...]",
                       description="Exit codes: the guest's own; 125 a trap, 124 --timeout, 2 bad input to the runner.")
    r.add_argument("guest", metavar="GUEST.wasm", help="the guest module (.wasm, or .wat text)")
    r.add_argument("--dir", action="append", default=[], metavar="HOST[::GUEST]",
                   help="preopen directory HOST for the guest, as GUEST (default: the same name); repeatable")
    r.add_argument("--env", action="append", default=[], metavar="K=V", help="environment variable for the guest")
    r.add_argument("--max-memory", metavar="SIZE", help="cap of the guest's linear memory (e.g. 256M)")
    r.add_argument("--max-host-memory", metavar="SIZE",
                   help="cap of the host memory of the guest's models, loaders and jobs (e.g. 2G)")
    r.add_argument("--max-handles", type=int, metavar="N", help="cap of the guest's live handles")
    r.add_argument("--timeout", type=float, metavar="SECONDS", help="stop the guest after this long (exit 124)")
    r.add_argument("--threads", type=int, default=0, metavar="N", help="OpenMP threads of the guest's models (0: default)")
    r.set_defaults(guest_args=[])


def run(args: argparse.Namespace) -> int:
    if getattr(args, "wasm_command", None) != "run":
        sys.stderr.write("pyllmc wasm: error: a subcommand is required: run\n")
        return 2

    def bad(msg: str) -> int:
        sys.stderr.write(f"pyllmc wasm run: error: {msg}\n")
        return 2

    env = {}
    for kv in args.env:
        k, sep, v = kv.partition("=")
        if not sep or not k:
            return bad(f"--env {kv!r}: expected K=V")
        env[k] = v
    if args.max_handles is not None and args.max_handles < 0:
        return bad(f"--max-handles must be >= 0, got {args.max_handles}")
    if args.threads < 0:
        return bad(f"--threads must be >= 0, got {args.threads}")
    if args.timeout is not None and not args.timeout > 0:
        return bad(f"--timeout must be > 0 seconds, got {args.timeout}")
    from .host import WasmUnavailableError, parse_size

    try:
        max_memory = parse_size(args.max_memory, "--max-memory")
        max_host_memory = parse_size(args.max_host_memory, "--max-host-memory")
    except ValueError as e:
        return bad(str(e))
    try:
        from .host import run as run_guest

        return run_guest(args.guest, dirs=args.dir, args=args.guest_args or [], env=env, max_memory=max_memory,
                         max_host_memory=max_host_memory, max_handles=args.max_handles, timeout=args.timeout,
                         threads=args.threads)
    except WasmUnavailableError as e:
        return bad(str(e))
