"""``pyllmc train --nproc N``: start N data-parallel ranks on this machine.

Each rank is a child process running the same command with the environment torchrun would
give it (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR=127.0.0.1, a free
MASTER_PORT, GLOO_SOCKET_IFNAME=lo, OMP_NUM_THREADS = cores / N unless set), so
``pyllmc.distributed`` cannot tell the two apart.
For several machines, restarts and elastic membership use torchrun itself (docs/training.md).

The launcher waits for all ranks. When one fails, it names it (rank, pid, exit status), gives
the others ``grace`` seconds to end on their own (they fail their next collective at once,
or after the group timeout), then terminates them; the exit status is the failed rank's (1
for a signal). Ctrl-C is passed to every rank once; a second one terminates them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that is free now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def rank_env(rank: int, world: int, port: int, base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The environment of one rank on this machine, as torchrun sets it."""
    env = dict(os.environ if base is None else base)
    env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
               GROUP_RANK="0", ROLE_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    # --threads 0 means the OpenMP default, all cores: N ranks would oversubscribe them N times
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // world)))
    env.setdefault("TORCHELASTIC_RESTART_COUNT", "0")
    return env


def _describe(rc: int) -> str:
    if rc < 0:
        try:
            return f"signal {signal.Signals(-rc).name}"
        except ValueError:
            return f"signal {-rc}"
    return f"exit status {rc}"


def launch(cmd: Sequence[str], nproc: int, *, grace: float = 60.0, env: Optional[Dict[str, str]] = None,
           log=None) -> int:
    """Run ``cmd`` as ``nproc`` ranks; returns 0 when every rank succeeded, else the failed
    rank's exit status (1 when it was killed by a signal)."""
    log = log or (lambda msg: sys.stderr.write(msg + "\n"))
    port = free_port()
    procs: List[subprocess.Popen] = []
    for r in range(nproc):
        procs.append(subprocess.Popen(list(cmd), env=rank_env(r, nproc, port, env)))
    failed: Optional[int] = None
    deadline: Optional[float] = None
    interrupts = 0
    previous = signal.getsignal(signal.SIGINT)

    def on_sigint(signum, frame):
        nonlocal interrupts
        interrupts += 1
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT if interrupts == 1 else signal.SIGTERM)

    try:
        signal.signal(signal.SIGINT, on_sigint)
    except ValueError:  # not the main thread
        previous = None
    try:
        while True:
            codes = [p.poll() for p in procs]
            if all(c is not None for c in codes):
                break
            if failed is None:
                for r, c in enumerate(codes):
                    if c not in (None, 0):
                        failed = r
                        log(f"pyllmc: rank {r} (pid {procs[r].pid}) ended with {_describe(c)}; "
                            f"waiting up to {grace:g} s for the other ranks")
                        deadline = time.monotonic() + grace
                        break
            if deadline is not None and time.monotonic() > deadline:
                for r, p in enumerate(procs):
                    if p.poll() is None:
                        log(f"pyllmc: terminating rank {r} (pid {p.pid})")
                        p.terminate()
                time.sleep(2.0)
                for p in procs:
                    if p.poll() is None:
                        p.kill()
                deadline = None
            time.sleep(0.1)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    codes = [p.returncode for p in procs]
    if failed is None:
        bad = [r for r, c in enumerate(codes) if c != 0]
        if not bad:
            return 0
        failed = bad[0]
    rc = codes[failed]
    return rc if rc > 0 else 1


def strip_nproc(argv: Sequence[str]) -> List[str]:
    """``argv`` without its ``--nproc N`` / ``--nproc=N``."""
    out: List[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--nproc":
            skip = True
            continue
        if a.startswith("--nproc="):
            continue
        out.append(a)
    return out
