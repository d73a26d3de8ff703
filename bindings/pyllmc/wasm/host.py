"""Running WebAssembly guests: ``Host`` (embedding API) and ``run`` (what ``pyllmc wasm run`` calls).

``Host(max_memory=..., max_host_memory=..., max_handles=..., timeout=..., threads=...)``
holds the settings; ``host.run(module, dirs=[(HOST, GUEST)], args=[...], env={...})`` runs
one wasm32-wasi command module (a path, wasm bytes, or WAT text) to its end and returns a
``GuestResult``. Several guests may run in one Host, one after another or at once from
several threads: each gets its own wasmtime engine and store (so its own epoch deadline),
its own handle table, preopens, budget and jobs, and nothing of one is reachable from
another. When a guest ends, however it ends (returns, ``proc_exit``, traps, times out), its
jobs are stopped and joined and everything it held is freed before ``run`` returns.

Outcomes and exit codes (``GuestResult.exit_code``):
- the guest's own exit code (0 when ``_start`` returns);
- 125 and ``"guest trapped: ..."``: a trap (out-of-bounds access, ``unreachable``, stack
  overflow, an instantiation that needs more linear memory than ``max_memory``);
- 124 and ``"guest timed out after N s"``: ``timeout`` expired (epoch interruption stops the
  guest's code; its host calls fail with LIMIT_EXCEEDED and its jobs are stopped);
- 2 and a one-line message: bad input to the runner (no such file, not a wasm module, an
  import the host does not provide or with the wrong signature, no ``_start``).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from . import abi, sched
from .calls import GuestContext
from .paths import PathResolver, make_preopen

log = logging.getLogger("pyllmc.wasm")

EXIT_TRAP = 125
EXIT_TIMEOUT = 124
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class WasmUnavailableError(ImportError):
    """wasmtime (the ``wasm`` extra) is not installed."""


def _wasmtime():
    try:
        import wasmtime
    except ImportError as e:
        raise WasmUnavailableError(
            f"pyllmc.wasm needs wasmtime: pip install 'pyllmc[wasm]' ({e})") from None
    return wasmtime


@dataclass
class GuestResult:
    exit_code: int
    outcome: str  #: "exit" | "trap" | "timeout" | "bad_input" | "interrupted"
    message: str = ""  #: the one line printed for trap / timeout / bad input
    freed: Dict[str, int] = field(default_factory=dict)  #: handles still held at the end, freed by the host


class BadGuest(Exception):
    """Bad input to the runner (exit 2)."""


def parse_size(text: Union[str, int, None], flag: str) -> Optional[int]:
    """Bytes of ``"64M"``, ``"1.5GiB"``, ``"4096"`` ... (K/M/G/T, binary); None for None."""
    if text is None:
        return None
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"{flag}: must be >= 0, got {text}")
        return text
    s = str(text).strip()
    units = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    low = s.lower()
    for suffix in ("ib", "b"):
        if low.endswith(suffix) and len(low) > len(suffix) and low[-len(suffix) - 1] in "kmgt":
            low = low[: -len(suffix)]
            break
    unit = low[-1] if low and low[-1] in "kmgt" else ""
    num = low[:-1] if unit else low
    try:
        v = float(num)
    except ValueError:
        raise ValueError(f"{flag}: {text!r} is not a size (e.g. 512M, 2G, 1048576)") from None
    if not v >= 0 or v == float("inf"):
        raise ValueError(f"{flag}: {text!r} must be a finite size >= 0")
    return int(v * units[unit])


def parse_dir(spec: str) -> Tuple[str, str]:
    """``HOST::GUEST`` -> (HOST, GUEST); ``HOST`` alone is preopened under its own name."""
    host, sep, guest = spec.partition("::")
    if not host:
        raise ValueError(f"--dir {spec!r}: no host directory")
    return host, (guest if sep else host)


class Host:
    """Runs guests with these limits; see the module docstring."""

    def __init__(self, *, max_memory: Union[int, str, None] = None, max_host_memory: Union[int, str, None] = None,
                 max_handles: Optional[int] = None, timeout: Optional[float] = None, threads: int = 0):
        self.max_memory = parse_size(max_memory, "max_memory")
        self.max_host_memory = parse_size(max_host_memory, "max_host_memory")
        if max_handles is not None and (isinstance(max_handles, bool) or int(max_handles) < 0):
            raise ValueError(f"max_handles must be >= 0, got {max_handles}")
        self.max_handles = None if max_handles is None else int(max_handles)
        if timeout is not None and not float(timeout) > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        self.timeout = None if timeout is None else float(timeout)
        if int(threads) < 0:
            raise ValueError(f"threads must be >= 0, got {threads}")
        self.threads = int(threads)
        self._lock = threading.Lock()
        self._active: List[GuestContext] = []

    @property
    def active_guests(self) -> int:
        """Guests running right now."""
        with self._lock:
            return len(self._active)

    # ------------------------------------------------------------ module
    def _module(self, wasmtime, engine, module: Union[str, bytes, os.PathLike]) -> Any:
        if isinstance(module, (bytes, bytearray)):
            data: Union[str, bytes] = bytes(module)
        elif isinstance(module, str) and module.lstrip().startswith("("):
            data = module  # WAT text
        else:
            path = os.fspath(module)
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError as e:
                raise BadGuest(f"{path}: cannot read the guest: {e.strerror or e}") from None
            if not data.startswith(b"\0asm"):
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError:
                    raise BadGuest(f"{path}: not a WebAssembly module") from None
                if not text.lstrip().startswith("("):
                    raise BadGuest(f"{path}: not a WebAssembly module")
                data = text
        try:
            return wasmtime.Module(engine, data)
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise BadGuest(f"not a valid WebAssembly module: {first}") from None

    def _check_imports(self, wasmtime, mod: Any) -> None:
        for imp in mod.imports:
            m, n = imp.module, imp.name
            if m == abi.IMPORT_MODULE:
                sig = abi.FUNCTIONS.get(n)
                if sig is None:
                    raise BadGuest(f"the guest imports {m}.{n}, which the host does not provide (ABI version {abi.ABI_VERSION})")
                ty = imp.type
                if not isinstance(ty, wasmtime.FuncType):
                    raise BadGuest(f"the guest imports {m}.{n} as a non-function")
                got = ([str(p) for p in ty.params], [str(r) for r in ty.results])
                want = ([t for _, t in sig.params], list(sig.results))
                if got != want:
                    raise BadGuest(f"the guest imports {m}.{n} with type {got[0]} -> {got[1]}, "
                                   f"the host provides {want[0]} -> {want[1]}")
            elif m not in ("wasi_snapshot_preview1", "wasi_unstable"):
                raise BadGuest(f"the guest imports {m}.{n}, which the host does not provide")

    # ------------------------------------------------------------ run
    def run(self, module: Union[str, bytes, os.PathLike], *, dirs: Iterable[Union[str, Tuple[str, str]]] = (),
            args: Sequence[str] = (), env: Optional[Mapping[str, str]] = None, name: Optional[str] = None,
            stdout: Optional[str] = None, stderr: Optional[str] = None, stdin: Optional[str] = None,
            max_memory: Union[int, str, None] = None, max_host_memory: Union[int, str, None] = None,
            max_handles: Optional[int] = None, timeout: Optional[float] = None,
            threads: Optional[int] = None) -> GuestResult:
        """Run one guest to its end (see the module docstring). ``dirs``: ``"HOST::GUEST"``
        strings or (HOST, GUEST) pairs; ``stdout``/``stderr``/``stdin``: file paths for the
        guest's streams (default: this process's). Keyword limits override the Host's."""
        try:
            return self._run(module, dirs, args, env, name, stdout, stderr, stdin, max_memory, max_host_memory,
                             max_handles, timeout, threads)
        except BadGuest as e:
            return GuestResult(EXIT_BAD_INPUT, "bad_input", str(e))

    def _run(self, module, dirs, args, env, name, stdout, stderr, stdin, max_memory, max_host_memory, max_handles,
             timeout, threads) -> GuestResult:
        p = self._prepare(module, dirs, args, env, name, stdout, stderr, stdin, max_memory, max_host_memory,
                          max_handles, timeout, threads)
        try:
            p.start_timer()
            result = self._execute(p)
        finally:
            freed = p.finish()
        result.freed = freed
        return result

    def instantiate(self, module: Union[str, bytes, os.PathLike], *, dirs: Iterable[Union[str, Tuple[str, str]]] = (),
                    args: Sequence[str] = (), env: Optional[Mapping[str, str]] = None, name: Optional[str] = None,
                    max_memory: Union[int, str, None] = None, max_host_memory: Union[int, str, None] = None,
                    max_handles: Optional[int] = None, timeout: Optional[float] = None,
                    threads: Optional[int] = None) -> "GuestInstance":
        """An instantiated guest whose exports the caller drives (tests, embedding): see
        ``GuestInstance``. ``_start`` is not run. Raises ``BadGuest`` for bad input."""
        p = self._prepare(module, dirs, args, env, name, None, None, None, max_memory, max_host_memory,
                          max_handles, timeout, threads)
        try:
            p.instance = p.linker.instantiate(p.store, p.module)
            p.ctx.memory = exported_memory(p.wasmtime, p.instance, p.store)
        except BaseException:
            p.finish()
            raise
        p.start_timer()
        return GuestInstance(p)

    def _prepare(self, module, dirs, args, env, name, stdout, stderr, stdin, max_memory, max_host_memory,
                 max_handles, timeout, threads) -> "_Prepared":
        wasmtime = _wasmtime()
        max_memory = self.max_memory if max_memory is None else parse_size(max_memory, "max_memory")
        max_host_memory = self.max_host_memory if max_host_memory is None else parse_size(max_host_memory,
                                                                                           "max_host_memory")
        max_handles = self.max_handles if max_handles is None else int(max_handles)
        timeout = self.timeout if timeout is None else float(timeout)
        threads = self.threads if threads is None else int(threads)
        preopens = []
        for d in dirs:
            h, g = parse_dir(d) if isinstance(d, str) else (os.fspath(d[0]), str(d[1]))
            try:
                preopens.append(make_preopen(h, g))
            except ValueError as e:
                raise BadGuest(str(e)) from None

        config = wasmtime.Config()
        if timeout is not None:
            config.epoch_interruption = True
        engine = wasmtime.Engine(config)
        mod = self._module(wasmtime, engine, module)
        self._check_imports(wasmtime, mod)
        if not any(e.name == "_start" for e in mod.exports):
            raise BadGuest("the guest exports no _start function (it must be a wasm32-wasi command)")

        label = name or (os.path.basename(os.fspath(module)) if isinstance(module, (str, os.PathLike))
                         and not str(module).lstrip().startswith("(") else "guest")
        ctx = GuestContext(PathResolver(preopens), max_host_memory=max_host_memory, max_handles=max_handles,
                           threads=threads, name=label)
        store = wasmtime.Store(engine)
        if max_memory is not None:
            store.set_limits(memory_size=max_memory)
        wasi = wasmtime.WasiConfig()
        wasi.argv = [label, *[str(a) for a in args]]
        wasi.env = [(str(k), str(v)) for k, v in (env or {}).items()]
        for po in preopens:
            wasi.preopen_dir(po.real, po.guest)
        if stdout:
            wasi.stdout_file = stdout
        else:
            wasi.inherit_stdout()
        if stderr:
            wasi.stderr_file = stderr
        else:
            wasi.inherit_stderr()
        if stdin:
            wasi.stdin_file = stdin
        store.set_wasi(wasi)
        linker = wasmtime.Linker(engine)
        linker.define_wasi()
        for fname, sig in abi.FUNCTIONS.items():
            ty = wasmtime.FuncType([getattr(wasmtime.ValType, t)() for _, t in sig.params],
                                   [getattr(wasmtime.ValType, t)() for t in sig.results])
            linker.define_func(abi.IMPORT_MODULE, fname, ty, ctx.host_function(fname), access_caller=True)
        if timeout is not None:
            store.set_epoch_deadline(1)
        p = _Prepared(self, wasmtime, engine, store, linker, mod, ctx, timeout)
        with self._lock:
            self._active.append(ctx)
        return p

    def _execute(self, p: "_Prepared") -> GuestResult:
        wasmtime = p.wasmtime
        try:
            instance = p.linker.instantiate(p.store, p.module)
            p.ctx.memory = exported_memory(wasmtime, instance, p.store)
            start = instance.exports(p.store)["_start"]
            if not isinstance(start, wasmtime.Func):
                raise BadGuest("the guest's _start export is not a function")
            with sched.guest_code() as policy:
                p.ctx.host_policy = policy
                start(p.store)
        except wasmtime.ExitTrap as e:
            return p.timed_out() or GuestResult(int(e.code), "exit")
        except (wasmtime.Trap, wasmtime.WasmtimeError) as e:
            return p.trapped(e)
        except KeyboardInterrupt:
            return GuestResult(EXIT_INTERRUPTED, "interrupted", "guest interrupted")
        return p.timed_out() or GuestResult(0, "exit")


def exported_memory(wasmtime: Any, instance: Any, store: Any) -> Any:
    """The instance's exported ``memory`` (a wasmtime.Memory), or None. Host calls use it
    instead of looking the export up through their Caller each time (about 3 us a call);
    its size and base are still read at every access, since memory can grow."""
    mem = instance.exports(store).get("memory")
    return mem if isinstance(mem, wasmtime.Memory) else None


def trap_line(e: BaseException) -> str:
    """The cause of a wasmtime trap/error in one line: wasmtime's text is a backtrace, then
    "Caused by:" and the cause, e.g. "wasm trap: out of bounds memory access"."""
    import re

    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    if not lines:
        return type(e).__name__
    if "Caused by:" in lines:
        return re.sub(r"^\d+:\s*", "", lines[-1])
    return lines[0]


class _Prepared:
    """One guest's engine, store, linker, module and context, between _prepare and finish."""

    def __init__(self, host: Host, wasmtime, engine, store, linker, module, ctx: GuestContext,
                 timeout: Optional[float]):
        self.host, self.wasmtime, self.engine, self.store = host, wasmtime, engine, store
        self.linker, self.module, self.ctx, self.timeout = linker, module, ctx, timeout
        self.instance = None
        self.timer: Optional[threading.Timer] = None
        self._finished = False

    def start_timer(self) -> None:
        if self.timeout is None:
            return
        ctx, engine = self.ctx, self.engine

        def expire() -> None:
            ctx.expire()
            engine.increment_epoch()

        self.timer = threading.Timer(self.timeout, expire)
        self.timer.daemon = True
        self.timer.start()

    def timed_out(self) -> Optional[GuestResult]:
        if self.ctx.expired.is_set():
            return GuestResult(EXIT_TIMEOUT, "timeout", f"guest timed out after {self.timeout:g} s")
        return None

    def trapped(self, e: BaseException) -> GuestResult:
        t = self.timed_out()
        if t is not None:
            return t
        return GuestResult(EXIT_TRAP, "trap", "guest trapped: " + trap_line(e))

    def finish(self) -> Dict[str, int]:
        if self._finished:
            return {}
        self._finished = True
        if self.timer is not None:
            self.timer.cancel()
        try:
            return self.ctx.close()
        finally:
            with self.host._lock:
                if self.ctx in self.host._active:
                    self.host._active.remove(self.ctx)


class GuestInstance:
    """An instantiated guest driven from Python: ``call(export, *args)`` returns the export's
    result, or a ``GuestResult`` (trap / timeout / exit) if the call did not return normally;
    ``read``/``write`` access its memory (unchecked: test and embedding use); ``close()``
    (or the ``with`` block's end) ends the guest: jobs stopped, everything freed."""

    def __init__(self, p: _Prepared):
        self._p = p
        self.context = p.ctx

    def _export(self, name: str):
        inst = self._p.instance
        if inst is None:
            raise KeyError(f"the guest is not instantiated (no export {name!r})")
        ex = inst.exports(self._p.store).get(name)
        if ex is None:
            raise KeyError(f"the guest has no export {name!r}")
        return ex

    def call(self, export: str, *args: Any) -> Any:
        w = self._p.wasmtime
        try:
            with sched.guest_code() as policy:
                self._p.ctx.host_policy = policy
                return self._export(export)(self._p.store, *args)
        except w.ExitTrap as e:
            return self._p.timed_out() or GuestResult(int(e.code), "exit")
        except (w.Trap, w.WasmtimeError) as e:
            return self._p.trapped(e)

    @property
    def memory_size(self) -> int:
        return self._export("memory").data_len(self._p.store)

    def read(self, ptr: int, n: int) -> bytes:
        return bytes(self._export("memory").read(self._p.store, ptr, ptr + n))

    def write(self, ptr: int, data: bytes) -> None:
        self._export("memory").write(self._p.store, bytearray(data), ptr)

    @property
    def last_error(self) -> str:
        return self.context.last_error

    def close(self) -> Dict[str, int]:
        return self._p.finish()

    def __enter__(self) -> "GuestInstance":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def run(path: Union[str, bytes, os.PathLike], *, dirs: Iterable[Union[str, Tuple[str, str]]] = (),
        args: Sequence[str] = (), env: Optional[Mapping[str, str]] = None,
        max_memory: Union[int, str, None] = None, max_host_memory: Union[int, str, None] = None,
        max_handles: Optional[int] = None, timeout: Optional[float] = None, threads: int = 0,
        stdout: Optional[str] = None, stderr: Optional[str] = None, report=None) -> int:
    """Run the guest at ``path`` and return its exit code (124 timeout, 125 trap, 2 bad
    input); the one-line message of those goes to ``report`` (default: stderr)."""
    import sys

    try:
        host = Host(max_memory=max_memory, max_host_memory=max_host_memory, max_handles=max_handles,
                    timeout=timeout, threads=threads)
    except ValueError as e:
        (report or sys.stderr).write(f"pyllmc wasm run: error: {e}\n")
        return EXIT_BAD_INPUT
    res = host.run(path, dirs=dirs, args=args, env=env, stdout=stdout, stderr=stderr)
    if res.message:
        prefix = "pyllmc wasm run: error: " if res.outcome == "bad_input" else ""
        out = report or sys.stderr
        try:
            out.flush()
        except Exception:
            pass
        out.write(prefix + res.message + "\n")
        out.flush()
    return res.exit_code
