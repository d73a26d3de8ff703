"""An external llm.c `train_gpt2` (CPU) binary as a comparison, when $LLMC_BIN names one.

llm.c's train_gpt2.c has no arguments: it loads `gpt2_124M.bin` from its working directory,
reads token shards from fixed paths, trains GPT-2 124M at B=4, T=64 and prints
`step N: train loss X (took Y ms)` for each step. So it is run only for that configuration,
in a scratch directory holding
  - gpt2_124M.bin: a version-3 (fp32) checkpoint of a random d12 model (timing does not
    depend on the weights);
  - token shards in both layouts llm.c has used: data/tiny_shakespeare_{train,val}.bin
    (raw int32, older llm.c) and dev/data/tinyshakespeare/tiny_shakespeare_{train,val}.bin
    (header 20240520/1/count + uint16 tokens, newer llm.c).
The first `warmup` steps are discarded, the next `repeats` timed, then the process is
stopped (before llm.c's sampling at step 20). Peak RSS is its VmHWM, read just before.
$LLMC_BIN_ARGS (shell-split) is appended to the command line if a build needs arguments.
"""

from __future__ import annotations

import os
import re
import select
import shlex
import shutil
import struct
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from .procs import Skipped
from .spec import Shape

STEP_RE = re.compile(r"step\s+(\d+):.*?took\s+([0-9.eE+-]+)\s*ms")
LLMC_SHAPE = dict(num_layers=12, channels=768, num_heads=12, vocab_size=50257)


def applicable(shape: Shape, B: int, T: int) -> str:
    """'' when llm.c's train_gpt2 runs this configuration, else the reason it does not."""
    same = all(getattr(shape, k) == v for k, v in LLMC_SHAPE.items())
    if not (same and B == 4 and T == 64):
        return "llm.c train_gpt2 is fixed at GPT-2 124M (d12), B=4, T=64"
    return ""


def write_checkpoint(path: Path, shape: Shape, seed: int = 0) -> None:
    s = shape
    L, C, V, Vp, maxT, NH = s.num_layers, s.channels, s.vocab_size, s.padded_vocab_size, s.max_seq_len, s.num_heads
    header = [20240326, 3, maxT, V, L, NH, C, Vp] + [0] * 248
    rng = np.random.default_rng(seed)
    tensors = [("wte", (Vp, C)), ("wpe", (maxT, C)), ("ln1w", (L, C)), ("ln1b", (L, C)),
               ("qkvw", (L, 3 * C, C)), ("qkvb", (L, 3 * C)), ("attprojw", (L, C, C)), ("attprojb", (L, C)),
               ("ln2w", (L, C)), ("ln2b", (L, C)), ("fcw", (L, 4 * C, C)), ("fcb", (L, 4 * C)),
               ("fcprojw", (L, C, 4 * C)), ("fcprojb", (L, C)), ("lnfw", (C,)), ("lnfb", (C,))]  # fmt: skip
    with open(path, "wb") as f:
        f.write(struct.pack("<256i", *header))
        for name, shp in tensors:
            if name in ("ln1w", "ln2w", "lnfw"):
                a = np.ones(shp, np.float32)
            elif name.endswith("b"):
                a = np.zeros(shp, np.float32)
            else:
                a = rng.standard_normal(shp, dtype=np.float32) * np.float32(0.02)
            f.write(a.tobytes())


def write_data(root: Path, V: int, n_tokens: int = 1 << 16) -> None:
    rng = np.random.default_rng(1)
    for split in ("train", "val"):
        tok = rng.integers(0, V, n_tokens, dtype=np.int64)
        old = root / "data" / f"tiny_shakespeare_{split}.bin"
        old.parent.mkdir(parents=True, exist_ok=True)
        old.write_bytes(tok.astype(np.int32).tobytes())
        new = root / "dev" / "data" / "tinyshakespeare" / f"tiny_shakespeare_{split}.bin"
        new.parent.mkdir(parents=True, exist_ok=True)
        with open(new, "wb") as f:
            f.write(struct.pack("<256i", *([20240520, 1, n_tokens] + [0] * 253)))
            f.write(tok.astype(np.uint16).tobytes())


def _vmhwm_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def run(binary: str, shape: Shape, B: int, T: int, threads: int, warmup: int, repeats: int, timeout: float = 1800) -> Dict[str, Any]:
    """Time llm.c's steps; returns {"steps_ms": [...], "warmup_ms": [...], "peak_rss_mb", "losses"}."""
    why = applicable(shape, B, T)
    if why:
        raise Skipped(why)
    exe = Path(binary).expanduser()
    if not (exe.is_file() and os.access(exe, os.X_OK)):
        raise Skipped(f"LLMC_BIN={binary}: not an executable file")
    with tempfile.TemporaryDirectory(prefix="pyllmc-llmc-") as tmp:
        root = Path(tmp)
        write_checkpoint(root / "gpt2_124M.bin", shape.with_(max_seq_len=1024))
        write_data(root, shape.vocab_size)
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        argv = [str(exe.resolve()), *shlex.split(os.environ.get("LLMC_BIN_ARGS", ""))]
        # llm.c prints with printf: into a pipe that is block-buffered, so its step lines would
        # arrive only when 4 KiB have piled up or it exits. stdbuf -oL (coreutils; it execs
        # the binary, so the pid and its VmHWM stay llm.c's own) makes them arrive per line.
        stdbuf = shutil.which("stdbuf")
        if stdbuf:
            argv = [stdbuf, "-oL", *argv]
        p = subprocess.Popen(argv, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        times: List[float] = []
        losses: List[float] = []
        tail: List[str] = []
        peak = float("nan")
        deadline = time.monotonic() + timeout
        pending = b""
        fd = p.stdout.fileno() if p.stdout else -1
        try:
            while len(times) < warmup + repeats:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Skipped(f"llm.c binary timed out after {timeout:.0f} s ({len(times)} steps)")
                # select and os.read on the raw descriptor: a buffered readline would pull
                # several lines into Python's buffer, where select cannot see them
                ready, _, _ = select.select([fd], [], [], min(left, 1.0))
                hwm = _vmhwm_mb(p.pid)  # monotonic while the process lives
                if hwm == hwm:
                    peak = hwm
                if not ready:
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    p.wait()
                    raise Skipped(f"llm.c binary exited {p.returncode} after {len(times)} steps: {' | '.join(tail[-3:])}")
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    line = raw.decode("utf-8", "replace").strip()
                    tail.append(line)
                    m = STEP_RE.search(line)
                    if m and len(times) < warmup + repeats:
                        times.append(float(m.group(2)))
                        lm = re.search(r"loss\s+([0-9.eE+-]+)", line)
                        if lm:
                            losses.append(float(lm.group(1)))
            hwm = _vmhwm_mb(p.pid)
            if hwm == hwm:
                peak = hwm
        finally:
            if p.poll() is None:
                p.kill()
            p.wait()
            if p.stdout:
                p.stdout.close()
    return {"steps_ms": times[warmup:], "warmup_ms": times[:warmup], "peak_rss_mb": peak, "losses": losses,
            "binary": str(exe.resolve())}
