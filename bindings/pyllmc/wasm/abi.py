"""The host's import table for WebAssembly guests, version 1, as data.

This module is the single place where the ABI's names, signatures, status codes and the
``pyllmc_status`` layout are written down on the host side. The host (``pyllmc.wasm.host``)
defines its imports from ``FUNCTIONS``; the guest SDK's C header is checked against this
table by a test, so the two cannot drift apart.

Forms (all plain Python data, importable without wasmtime):

- ``IMPORT_MODULE``: the wasm import module name, ``"pyllmc"``.
- ``ABI_VERSION``: what ``abi_version()`` returns.
- ``STATUS``: ``{name: code}`` in code order, e.g. ``STATUS["PERMISSION_DENIED"] == 7``.
  Codes 0..6 are the C core's ``llmc_status``; 7 and 8 are the host's own.
- ``FUNCTIONS``: ``{function name: Signature(params, results)}`` in ABI order, where
  ``params`` is a tuple of ``(parameter name, wasm type)`` and ``results`` a tuple of wasm
  types (always ``("i32",)``: the status, or the version for ``abi_version``). Wasm types
  are ``"i32"``, ``"i64"``, ``"f32"``, ``"f64"``. ``EXTENSIONS`` names the entries the host
  adds to the fixed version-1 set (at the end of ``FUNCTIONS``).
- ``OUT_PARAMS``: ``{function name: {out-pointer parameter: what it points to}}`` with
  ``"i32"``, ``"i64"``, ``"f32"``, ``"i32[6]"`` (the model config), ``"pyllmc_status"``,
  ``"u8[cap]"`` / ``"i32[cap]"`` (output buffers).
- ``STATUS_STRUCT``: tuple of ``(offset, type, field name)`` of ``pyllmc_status``;
  ``STATUS_STRUCT_SIZE`` = 48; ``STATUS_STRUCT_FORMAT`` the ``struct`` format that packs it.
- ``JOB_STATE``: ``{name: value}`` of the ``state`` field.
- ``MODEL_CONFIG_FIELDS``: the 6 i32 that ``model_create``'s config pointer points to.
"""

from __future__ import annotations

import struct
from typing import Dict, NamedTuple, Tuple

IMPORT_MODULE = "pyllmc"
ABI_VERSION = 1

STATUS: Dict[str, int] = {
    "OK": 0,
    "INVALID_ARGUMENT": 1,
    "OUT_OF_MEMORY": 2,
    "IO": 3,
    "BAD_FORMAT": 4,
    "BAD_STATE": 5,
    "UNSUPPORTED": 6,
    "PERMISSION_DENIED": 7,  # a path outside the guest's preopened directories
    "LIMIT_EXCEEDED": 8,  # a host budget: memory, handles (or the run's timeout)
}
STATUS_NAMES: Dict[int, str] = {v: k for k, v in STATUS.items()}

OK = STATUS["OK"]
INVALID_ARGUMENT = STATUS["INVALID_ARGUMENT"]
OUT_OF_MEMORY = STATUS["OUT_OF_MEMORY"]
IO = STATUS["IO"]
BAD_FORMAT = STATUS["BAD_FORMAT"]
BAD_STATE = STATUS["BAD_STATE"]
UNSUPPORTED = STATUS["UNSUPPORTED"]
PERMISSION_DENIED = STATUS["PERMISSION_DENIED"]
LIMIT_EXCEEDED = STATUS["LIMIT_EXCEEDED"]


class Signature(NamedTuple):
    params: Tuple[Tuple[str, str], ...]
    results: Tuple[str, ...] = ("i32",)


def _sig(*params: str) -> Signature:
    """``_sig("model:i32", "seed:i64")`` -> Signature((("model", "i32"), ("seed", "i64")))."""
    return Signature(tuple((p.split(":")[0], p.split(":")[1]) for p in params))


FUNCTIONS: Dict[str, Signature] = {
    "abi_version": _sig(),
    "last_error": _sig("buf:i32", "cap:i32", "out_len:i32"),
    "model_create": _sig("config:i32", "seed:i64", "out_model:i32"),
    "model_load": _sig("path:i32", "path_len:i32", "out_model:i32"),
    "model_save": _sig("model:i32", "path:i32", "path_len:i32"),
    "model_num_params": _sig("model:i32", "out:i32"),
    "model_free": _sig("model:i32"),
    "dataloader_create": _sig("pattern:i32", "pattern_len:i32", "batch:i32", "seq:i32", "shuffle:i32",
                              "seed:i64", "out_loader:i32"),
    "dataloader_free": _sig("loader:i32"),
    "tokenizer_load": _sig("spec:i32", "spec_len:i32", "out_tok:i32"),
    "tokenizer_encode": _sig("tok:i32", "text:i32", "text_len:i32", "out_ids:i32", "cap:i32", "out_n:i32"),
    "tokenizer_decode": _sig("tok:i32", "ids:i32", "n:i32", "out:i32", "cap:i32", "out_len:i32"),
    "tokenizer_free": _sig("tok:i32"),
    "train_step": _sig("model:i32", "loader:i32", "lr:f32", "out_loss:i32"),
    "evaluate": _sig("model:i32", "loader:i32", "batches:i32", "out_loss:i32"),
    "sample": _sig("model:i32", "tok:i32", "prompt:i32", "prompt_len:i32", "max_tokens:i32", "temperature:f32",
                   "top_k:i32", "seed:i64", "out:i32", "cap:i32", "out_len:i32"),
    "train_start": _sig("model:i32", "train_loader:i32", "val_loader:i32", "config_json:i32", "config_len:i32",
                        "out_job:i32"),
    "job_status": _sig("job:i32", "out_status:i32"),
    "job_wait": _sig("job:i32", "timeout_ms:i32"),
    "job_stop": _sig("job:i32"),
    "job_free": _sig("job:i32"),
    # --- additions to version 1 (listed in EXTENSIONS) ---
    "job_error": _sig("job:i32", "buf:i32", "cap:i32", "out_len:i32"),
}

#: Functions the host adds to the version-1 table (they come after the fixed ones):
#: ``job_error(job, buf, cap, out_len)``: the one-line message of a failed job (empty while
#: it runs or when it did not fail), written like ``last_error``.
EXTENSIONS: Tuple[str, ...] = ("job_error",)

OUT_PARAMS: Dict[str, Dict[str, str]] = {
    "last_error": {"buf": "u8[cap]", "out_len": "i32"},
    "model_create": {"out_model": "i32"},
    "model_load": {"out_model": "i32"},
    "model_num_params": {"out": "i64"},
    "dataloader_create": {"out_loader": "i32"},
    "tokenizer_load": {"out_tok": "i32"},
    "tokenizer_encode": {"out_ids": "i32[cap]", "out_n": "i32"},
    "tokenizer_decode": {"out": "u8[cap]", "out_len": "i32"},
    "train_step": {"out_loss": "f32"},
    "evaluate": {"out_loss": "f32"},
    "sample": {"out": "u8[cap]", "out_len": "i32"},
    "train_start": {"out_job": "i32"},
    "job_status": {"out_status": "pyllmc_status"},
    "job_error": {"buf": "u8[cap]", "out_len": "i32"},
}

MODEL_CONFIG_FIELDS: Tuple[str, ...] = (
    "max_seq_len", "vocab_size", "padded_vocab_size", "num_layers", "num_heads", "channels")

JOB_STATE: Dict[str, int] = {"running": 0, "finished": 1, "stopped": 2, "failed": 3}

STATUS_STRUCT: Tuple[Tuple[int, str, str], ...] = (
    (0, "i32", "state"),
    (4, "i32", "step"),
    (8, "i32", "total_steps"),
    (12, "i32", "error"),
    (16, "f32", "loss"),
    (20, "f32", "val_loss"),
    (24, "f32", "lr"),
    (28, "f32", "grad_norm"),
    (32, "f32", "tokens_per_s"),
    (36, "f32", "eta_s"),
    (40, "f64", "elapsed_s"),
)
STATUS_STRUCT_SIZE = 48
STATUS_STRUCT_FORMAT = "<4i6fd"  # little-endian, no padding needed: the fields are naturally aligned

assert struct.calcsize(STATUS_STRUCT_FORMAT) == STATUS_STRUCT_SIZE


def status_name(code: int) -> str:
    """``"PERMISSION_DENIED"`` for 7; ``"status N"`` for a code the ABI does not define."""
    return STATUS_NAMES.get(int(code), f"status {int(code)}")
