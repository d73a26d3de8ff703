"""Host-memory estimates and the per-guest budget (``--max-host-memory``).

``model_bytes`` estimates what the C core allocates for a model, from its config and
capacity alone, before anything is allocated. It follows ``llmc_model_create`` (model.c):
parameters, gradients and the two AdamW moments (4 x ``GPTConfig.num_params()`` floats), the
activations of ``compute_act_sizes`` for (max_batch, max_seq), the backward scratch (6*C
floats per token), the token buffers, the shared GEMM operand (4 MiB) and the per-thread
GEMM and attention workspaces. A test checks it against the RSS a model really takes.
Loaders memory-map their shards (the page cache, not the guest's budget, holds them) and
cost a batch of int32 inputs and targets; a tokenizer its table; a job its Trainer.
"""

from __future__ import annotations

import os
import threading
from typing import Optional

from ..model import GPTConfig
from .errors import limit

FLOAT = 4
GEMM_WS_FLOATS = (288 + 8) * 256 + 256 * 32  # LLMC_GEMM_WS_FLOATS (internal.h)
GEMM_SHARED_FLOATS = 1 << 20  # LLMC_GEMM_SHARED_FLOATS
ATT_BLOCK = 64  # LLMC_ATTN_WS_FLOATS(T) = ATT_BLOCK * T
MAX_THREADS = 256
OBJECT_BYTES = 64 * 1024  # Python-side bookkeeping of one handle (objects, small arrays)
JOB_BYTES = 1 << 20  # a Trainer, its thread and its history


def resolve_threads(threads: int) -> int:
    n = int(threads) if threads and threads > 0 else (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                                      else (os.cpu_count() or 1))
    return max(1, min(n, MAX_THREADS))


def activation_floats(cfg: GPTConfig, max_batch: int, max_seq: int) -> int:
    """Floats of the activation buffer (model.c compute_act_sizes)."""
    B, T, C, L, NH, Vp = max_batch, max_seq, cfg.channels, cfg.num_layers, cfg.num_heads, cfg.padded_vocab_size
    BT = B * T
    per_layer = (BT * C  # ln1
                 + 2 * BT  # ln1 mean, rstd
                 + 3 * BT * C  # qkv
                 + B * NH * T * T  # att
                 + BT * C * 3  # atty, attproj, residual2
                 + BT * C + 2 * BT  # ln2, mean, rstd
                 + 4 * BT * C * 2  # fch, fch_gelu
                 + BT * C * 2)  # fcproj, residual3
    once = BT * C + BT * C + 2 * BT + 2 * BT * Vp + BT  # encoded, lnf (+ mean, rstd), logits, probs, losses
    return L * per_layer + once


def model_bytes(cfg: GPTConfig, max_batch: int, max_seq: int, threads: int = 0) -> int:
    """Estimated host bytes of a CPU model with this config and capacity."""
    nt = resolve_threads(threads)
    BT = max_batch * max_seq
    floats = (4 * cfg.num_params() + activation_floats(cfg, max_batch, max_seq) + 6 * cfg.channels * BT
              + GEMM_SHARED_FLOATS + nt * (GEMM_WS_FLOATS + ATT_BLOCK * max_seq))
    return floats * FLOAT + 2 * 4 * BT + OBJECT_BYTES


def loader_bytes(batch: int, seq: int) -> int:
    return 2 * 4 * batch * seq + 4 * batch * (seq + 1) + OBJECT_BYTES


def tokenizer_bytes(vocab_size: int) -> int:
    return 64 * int(vocab_size) + OBJECT_BYTES


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class Budget:
    """Bytes charged to one guest against an optional limit (thread-safe)."""

    def __init__(self, limit_bytes: Optional[int] = None):
        self.limit = limit_bytes
        self.used = 0
        self._lock = threading.Lock()

    def charge(self, nbytes: int, call: str, what: str) -> int:
        """Reserve ``nbytes`` or raise LIMIT_EXCEEDED (nothing is reserved then)."""
        nbytes = int(nbytes)
        with self._lock:
            if self.limit is not None and self.used + nbytes > self.limit:
                raise limit(f"{call}: {what} needs about {fmt_bytes(nbytes)} of host memory; "
                            f"{fmt_bytes(self.used)} of the {fmt_bytes(self.limit)} budget is in use (--max-host-memory)")
            self.used += nbytes
        return nbytes

    def release(self, nbytes: int) -> None:
        with self._lock:
            self.used = max(0, self.used - int(nbytes))
