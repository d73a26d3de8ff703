"""Command-line flags generated from TrainerConfig's field metadata, and the flag vocabulary
shared by every subcommand.

``add_config_flags(parser)`` adds one flag per TrainerConfig field (``pyllmc.config.setting``
describes it: flag name, help, choices); values the user did not type are left out of the
namespace (``argparse.SUPPRESS``), so ``given_settings(args)`` is exactly what was typed, to be
laid over a config file, or checked against a resumed run.

The vocabulary, the same in every subcommand:

- booleans are ``--x`` / ``--no-x``; ``--x on|off`` (and true/false, yes/no, 1/0) works too,
  which keeps ``--shuffle on|off`` working;
- ``--threads 0`` is the OpenMP default (all cores) everywhere;
- ``--no-plot`` turns off every picture a command writes;
- output goes under ``runs/<command>`` unless ``--out`` says otherwise;
- ``--debug`` shows the traceback of any error.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Dict, Iterable, List, Optional, Sequence

from .config import TrainerConfig, config_fields, field_type, flag_name

#: The root under which every command writes by default (runs/train, runs/bench, ...).
OUTPUT_ROOT = "runs"

_TRUE = ("on", "true", "yes", "1")
_FALSE = ("off", "false", "no", "0")


def default_out(command: str) -> str:
    return f"{OUTPUT_ROOT}/{command}"


def parse_on_off(value: str) -> bool:
    v = str(value).strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected on or off, got {value!r}")


class Switch(argparse.Action):
    """A boolean flag: ``--x`` (or ``--x on|off``) sets it, ``--no-x`` and any ``off_flags``
    clear it. ``takes_value=False`` (a command with positional arguments, which an optional
    on|off would swallow): ``--x`` and ``--no-x`` only."""

    def __init__(self, option_strings: Sequence[str], dest: str, off_flags: Sequence[str] = (),
                 default: Any = None, help: Optional[str] = None, takes_value: bool = True, **kw: Any):
        self.on_flags = [s for s in option_strings]
        self.off_flags = ["--no-" + s[2:] for s in option_strings if s.startswith("--")] + list(off_flags)
        self.takes_value = takes_value
        super().__init__(self.on_flags + self.off_flags, dest, nargs="?" if takes_value else 0, default=default,
                         help=help, metavar="on|off" if takes_value else None, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string in self.off_flags:
            if values not in (None, []):
                parser.error(f"{option_string} takes no value")
            setattr(namespace, self.dest, False)
            return
        if values is None or values == []:
            setattr(namespace, self.dest, True)
            return
        try:
            setattr(namespace, self.dest, parse_on_off(values))
        except argparse.ArgumentTypeError as e:
            parser.error(f"argument {option_string}: {e}")

    def format_usage(self) -> str:
        return " | ".join(self.option_strings)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Epilogs keep their line breaks; a Switch shows as ``--x [on|off], --no-x``."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if isinstance(action, Switch):
            on = [f"{s} [on|off]" if action.takes_value else s for s in action.on_flags]
            return ", ".join(on + action.off_flags)
        return super()._format_action_invocation(action)


def add_switch(p: Any, flag: str, *, dest: Optional[str] = None, default: Any = None, help: str = "",
               off_flags: Sequence[str] = (), aliases: Sequence[str] = (), takes_value: bool = True) -> None:
    """A ``--x/--no-x`` boolean on parser or group ``p``."""
    kw = {"dest": dest} if dest else {}
    p.add_argument(flag, *aliases, action=Switch, default=default, help=help, off_flags=off_flags,
                   takes_value=takes_value, **kw)


def add_threads(p: Any, *, default: int = 0, extra: str = "") -> None:
    p.add_argument("--threads", type=nonneg_int("--threads"), default=default,
                   help="OpenMP threads (0 = the OpenMP default, all cores)" + extra + _default_text(default))


def add_plot(p: Any, what: str = "the plots") -> None:
    add_switch(p, "--plot", default=True, help=f"write {what} (default on; needs matplotlib)")


def add_allow_download(p: Any) -> None:
    """``--allow-download``: a hub id not in the local cache may be fetched (cli.main sets
    PYLLMC_ALLOW_DOWNLOAD=1 for pyllmc.model_source)."""
    p.add_argument("--allow-download", action="store_true", default=None,
                   help="let a hub model id that is not in the local Hugging Face cache be downloaded "
                        "(also: PYLLMC_ALLOW_DOWNLOAD=1); without it such an id fails at once")


def add_debug(p: Any) -> None:
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show the full traceback of any error")


def _typed(flag: str, conv: Any, what: str, lo: Optional[float] = None):
    def parse(text: str) -> Any:
        try:
            v = conv(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if lo is not None and v < lo:
            raise argparse.ArgumentTypeError(f"must be {what} >= {lo:g}, got {text}")
        return v

    parse.__name__ = what  # argparse names the type in some messages
    return parse


def positive_int(flag: str):
    return _typed(flag, int, "an integer", 1)


def nonneg_int(flag: str):
    return _typed(flag, int, "an integer", 0)


def _default_text(v: Any) -> str:
    if v is None or v == [] or v == "":
        return ""
    if isinstance(v, bool):
        return f" (default {'on' if v else 'off'})"
    if isinstance(v, list):
        return f" (default {','.join(v)})"
    return f" (default {v:g})" if isinstance(v, float) else f" (default {v})"


def _list_parser(choices: Optional[Sequence[str]]):
    def parse(text: str) -> List[str]:
        items = [x.strip() for x in text.split(",") if x.strip()]
        if items == ["none"]:
            return []
        for x in items:
            if choices and x not in choices:
                raise argparse.ArgumentTypeError(f"expected one of {', '.join(choices)} or none, got {x!r}")
        return items

    return parse


def add_config_flags(p: Any, *, skip: Iterable[str] = (), cls: type = TrainerConfig) -> None:
    """One flag per field of ``cls`` (TrainerConfig) with ``cli`` metadata (see
    ``pyllmc.config``), in field order. Nothing is stored for flags that were not given."""
    skip = set(skip)
    defaults = cls()
    for f in dataclasses.fields(cls):
        md = f.metadata
        if not md or not md.get("cli", True) or f.name in skip:
            continue
        flag = md.get("flag") or "--" + f.name.replace("_", "-")
        default = md["cli_default"] if md.get("cli_default", dataclasses.MISSING) is not dataclasses.MISSING \
            else getattr(defaults, f.name)
        t = field_type(f)
        text = md["help"] + _default_text(default)
        if t is bool:
            p.add_argument(flag, *md["aliases"], dest=f.name, action=Switch, off_flags=md["off_flags"],
                           default=argparse.SUPPRESS, help=text)
            continue
        kw: Dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": text}
        if md.get("metavar"):
            kw["metavar"] = md["metavar"]
        if t is list:
            kw["type"] = _list_parser(md.get("choices"))
            kw.setdefault("metavar", ",".join(md["choices"] or ()) or "LIST")
        elif t in (int, float):
            kw["type"] = _typed(flag, t, "an integer" if t is int else "a number", md.get("min"))
            kw.setdefault("metavar", "N" if t is int else "X")
        elif not md.get("choices"):
            kw.setdefault("metavar", "TEXT")
        if md.get("choices") and t is not list:
            kw["choices"] = list(md["choices"])
        p.add_argument(flag, *md["aliases"], **kw)


def given_settings(args: argparse.Namespace, cls: type = TrainerConfig) -> Dict[str, Any]:
    """The fields of ``cls`` (TrainerConfig) the user typed on the command line."""
    names = {f.name for f in dataclasses.fields(cls) if f.metadata and f.metadata.get("cli", True)}
    return {k: v for k, v in vars(args).items() if k in names}


def cli_defaults() -> Dict[str, Any]:
    """The command line's defaults that differ from the library's (e.g. out_dir runs/train)."""
    out = {}
    for f in config_fields():
        d = f.metadata.get("cli_default", dataclasses.MISSING) if f.metadata else dataclasses.MISSING
        if d is not dataclasses.MISSING:
            out[f.name] = d
    return out


def describe(name: str, value: Any) -> str:
    """``--flag value`` as a user would type it."""
    if isinstance(value, bool):
        return flag_name(name) if value else "--no-" + flag_name(name)[2:]
    if isinstance(value, list):
        return f"{flag_name(name)} {','.join(value) or 'none'}"
    return f"{flag_name(name)} {value}"
