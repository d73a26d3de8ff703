"""Starting worker processes and reading their results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

from .spec import Job
from .worker import MARK


class Skipped(Exception):
    """An implementation could not be measured; the message is the reason recorded."""


def thread_env(threads: int, extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[k] = str(threads)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    env.setdefault("PYTHONWARNINGS", "ignore")
    if extra:
        env.update(extra)
    return env


def _parse(stdout: str) -> Optional[Dict[str, Any]]:
    res = None
    for line in stdout.splitlines():
        if line.startswith(MARK):
            res = json.loads(line[len(MARK):])
    return res


def _last_lines(text: str, n: int = 3) -> str:
    lines = [l for l in text.strip().splitlines() if l.strip()]
    return " | ".join(lines[-n:])


def run_worker(cmd: str, arg: str, *, threads: int, timeout: float, env_extra: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """Run `python -m pyllmc.bench.worker cmd arg` and return its result; Skipped on failure."""
    argv = [sys.executable, "-m", "pyllmc.bench.worker", cmd, arg]
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=thread_env(threads, env_extra))
    except subprocess.TimeoutExpired:
        raise Skipped(f"timed out after {timeout:.0f} s") from None
    res = _parse(p.stdout)
    if res is None:
        raise Skipped(f"worker exited {p.returncode} without a result: {_last_lines(p.stderr)}")
    if "error" in res:
        raise Skipped(res["error"])
    return res


def run_job(job: Job, timeout: float) -> Dict[str, Any]:
    return run_worker("run", job.to_json(), threads=job.threads, timeout=timeout)


class Served:
    """A worker in `serve` mode: set up once, then one timed step per `step()` call."""

    def __init__(self, job: Job, timeout: float = 600.0, env_extra: Optional[Dict[str, str]] = None):
        self.job = job
        self.timeout = timeout
        self.p = subprocess.Popen(
            [sys.executable, "-m", "pyllmc.bench.worker", "serve", job.to_json()],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=thread_env(job.threads, env_extra),
        )  # fmt: skip
        self.hello = self._read()

    def _read(self) -> Dict[str, Any]:
        assert self.p.stdout is not None
        deadline = time.monotonic() + self.timeout
        while True:
            line = self.p.stdout.readline()
            if not line:
                err = self.p.stderr.read() if self.p.stderr else ""
                self.p.wait()
                raise Skipped(f"{self.job.impl}: worker exited {self.p.returncode}: {_last_lines(err)}")
            if line.startswith(MARK):
                res = json.loads(line[len(MARK):])
                if "error" in res:
                    raise Skipped(f"{self.job.impl}: {res['error']}")
                return res
            if time.monotonic() > deadline:  # pragma: no cover - a hung worker
                self.close()
                raise Skipped(f"{self.job.impl}: no answer within {self.timeout:.0f} s")

    def step(self) -> Dict[str, Any]:
        assert self.p.stdin is not None
        self.p.stdin.write("step\n")
        self.p.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.p.poll() is None:
            try:
                assert self.p.stdin is not None
                self.p.stdin.write("quit\n")
                self.p.stdin.flush()
                self.p.wait(timeout=30)
            except Exception:
                self.p.kill()
                self.p.wait()
        for f in (self.p.stdin, self.p.stdout, self.p.stderr):
            if f:
                f.close()


class Interleaved:
    """Live workers for several jobs (context manager); `rounds(n)` times n steps of every
    job, alternating between them (the order reverses every round), so slow drifts of
    machine load hit all alike. `env` maps an implementation to extra environment variables
    for its worker alone. `info` maps each implementation to its worker's `info` (e.g. the C
    library it loaded)."""

    def __init__(self, jobs: List[Job], timeout: float = 600.0, env: Optional[Dict[str, Dict[str, str]]] = None):
        self.served: List[Served] = []
        try:
            for j in jobs:
                self.served.append(Served(j, timeout, (env or {}).get(j.impl)))
        except BaseException:
            self.close()
            raise
        self.info = {s.job.impl: s.hello.get("info", {}) for s in self.served}

    def rounds(self, n: int) -> Dict[str, List[Dict[str, float]]]:
        out: Dict[str, List[Dict[str, float]]] = {s.job.impl: [] for s in self.served}
        for r in range(n):
            order = self.served if r % 2 == 0 else self.served[::-1]
            for s in order:
                out[s.job.impl].append(s.step()["phases"])
        return out

    def close(self) -> None:
        for s in self.served:
            s.close()

    def __enter__(self) -> "Interleaved":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def interleaved(jobs: List[Job], rounds: int, timeout: float = 600.0,
                env: Optional[Dict[str, Dict[str, str]]] = None) -> Tuple[Dict[str, List[Dict[str, float]]], Dict[str, Dict[str, Any]]]:
    """`rounds` interleaved steps of every job in fresh workers (see Interleaved): returns
    (impl -> list of per-step phase dicts in round order, impl -> worker info)."""
    with Interleaved(jobs, timeout, env) as il:
        return il.rounds(rounds), il.info
