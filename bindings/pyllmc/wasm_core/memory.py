"""The 4 GiB check made before a wasm-core model is created or loaded.

A wasm32 module addresses at most 4 GiB. The bytes a model needs are estimated the way the
wasm host's budget does (``pyllmc.wasm.budget.model_bytes``: parameters, gradients, both
AdamW moments, activations, scratch and GEMM workspaces, from the config and capacity
alone), at one thread, plus what the module holds besides (its code, stack and static data,
and malloc's headroom: ``RESERVED``). A model that cannot fit is refused with an
``OutOfMemoryError`` naming the size, instead of failing half-way inside the module.
"""

from __future__ import annotations

import os
import stat
import struct
from typing import Optional

from ..errors import OutOfMemoryError
from ..shapes import GPTConfig, dims_problem
from . import MEMORY_LIMIT

#: module code + data + stack (about 1 MiB) and allocator headroom
RESERVED = 64 << 20
CKPT_MAGIC = 20240326
CKPT_BF16_VERSION = 5


def needed_bytes(config: GPTConfig, max_batch: int, max_seq: int, extra: int = 0) -> int:
    from ..wasm.budget import model_bytes

    return int(model_bytes(config, int(max_batch), int(max_seq), threads=1)) + int(extra) + RESERVED


def _options_valid(config: GPTConfig, max_batch: int, max_seq: int) -> bool:
    """The capacity rules of llmc_model_create (model.c)."""
    return 1 <= max_batch <= 1 << 20 and 1 <= max_seq <= config.max_seq_len and max_batch * max_seq <= 1 << 30


def check_fits(config: GPTConfig, max_batch: int, max_seq: int, extra: int = 0, what: str = "model") -> None:
    from ..wasm.budget import fmt_bytes

    if dims_problem(config.as_dict()) is not None or not _options_valid(config, max_batch, max_seq):
        return  # an invalid shape or capacity: the core's own checks say what is wrong
    need = needed_bytes(config, max_batch, max_seq, extra)
    if need > MEMORY_LIMIT:
        raise OutOfMemoryError(
            f"device 'wasm': this {what} (L={config.num_layers}, C={config.channels}, Vp={config.padded_vocab_size}, "
            f"max_batch={max_batch}, max_seq={max_seq}) needs about {fmt_bytes(need)}, more than the wasm core's "
            f"{fmt_bytes(MEMORY_LIMIT)} of linear memory; use a smaller model, batch or sequence, or device 'cpu'")


def check_checkpoint_fits(path: str, max_batch: int, max_seq: Optional[int]) -> None:
    """``check_fits`` for a checkpoint, from its header. Only a file the loader would accept
    (valid dimensions, and as many bytes as they say) is checked: anything else is left to
    the core's loader, whose errors say what is wrong with the file."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO's open would block
            return
        with open(path, "rb") as f:
            head = f.read(32)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return
    if len(head) < 32:
        return
    magic, version, maxT, V, L, NH, C, Vp = struct.unpack("<8i", head)
    dims = dict(max_seq_len=maxT, vocab_size=V, padded_vocab_size=Vp, num_layers=L, num_heads=NH, channels=C)
    if magic != CKPT_MAGIC or version not in (3, CKPT_BF16_VERSION) or dims_problem(dims) is not None:
        return
    cfg = GPTConfig(**dims)
    value_bytes = 2 if version == CKPT_BF16_VERSION else 4
    if size != 1024 + value_bytes * cfg.num_params() or (max_seq is not None and max_seq > maxT):
        return
    # a bf16 file is read into a temporary buffer of its 2-byte values before widening
    extra = 2 * cfg.num_params() if version == CKPT_BF16_VERSION else 0
    check_fits(cfg, max_batch, max_seq or maxT, extra, what=f"checkpoint {os.fspath(path)}")
