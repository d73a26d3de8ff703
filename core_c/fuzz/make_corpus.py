"""Write the seed corpus of the checkpoint-loader fuzz harness (core_c/fuzz/corpus/checkpoint/).

    python core_c/fuzz/make_corpus.py [OUT_DIR]

Small llm.c checkpoints (docs/formats.md), valid ones of both versions and a few shapes, and
near-misses that each break one rule, so the fuzzer starts next to every check of the loader.
Standard library only, deterministic: running it again rewrites the same bytes.
"""

from __future__ import annotations

import os
import random
import struct
import sys
from pathlib import Path

MAGIC = 20240326
HERE = Path(__file__).resolve().parent


def num_params(maxT: int, V: int, Vp: int, L: int, NH: int, C: int) -> int:
    return Vp * C + maxT * C + L * (12 * C * C + 13 * C) + 2 * C


def header(version: int, maxT: int, V: int, Vp: int, L: int, NH: int, C: int, extra=None) -> bytes:
    h = [0] * 256
    h[:8] = [MAGIC, version, maxT, V, L, NH, C, Vp]
    for slot, value in (extra or {}).items():
        h[slot] = value
    return struct.pack("<256i", *h)


def weights(rng: random.Random, maxT: int, V: int, Vp: int, L: int, NH: int, C: int) -> list:
    """Small random values; wte's padding rows (V..Vp-1) zero, as the format requires."""
    vals = [rng.uniform(-0.1, 0.1) for _ in range(num_params(maxT, V, Vp, L, NH, C))]
    for i in range(V * C, Vp * C):
        vals[i] = 0.0
    return vals


def f32(vals) -> bytes:
    return struct.pack(f"<{len(vals)}f", *vals)


def bf16(vals) -> bytes:
    return b"".join(struct.pack("<H", struct.unpack("<I", struct.pack("<f", v))[0] >> 16) for v in vals)


def corpus() -> dict:
    rng = random.Random(20240326)
    out = {}
    shapes = {"tiny": (4, 5, 8, 1, 1, 4), "twolayer": (3, 6, 6, 2, 2, 4), "wide": (2, 3, 4, 1, 4, 8)}
    for name, s in shapes.items():
        w = weights(rng, *s)
        out[f"v3_{name}.bin"] = header(3, *s) + f32(w)
        out[f"v5_{name}.bin"] = header(5, *s) + bf16(w)
    s = shapes["tiny"]
    good = out["v3_tiny.bin"]
    out["empty.bin"] = b""
    out["short.bin"] = good[:100]
    out["header_only.bin"] = good[:1024]
    out["truncated.bin"] = good[:-7]
    out["trailing.bin"] = good + b"\0" * 4
    out["bad_magic.bin"] = struct.pack("<i", 20240520) + good[4:]
    out["bad_version.bin"] = header(4, *s) + good[1024:]
    out["reserved_slot.bin"] = header(3, *s, extra={200: 1}) + good[1024:]
    out["nh_not_dividing.bin"] = header(3, 4, 5, 8, 1, 3, 4) + good[1024:]
    out["vp_below_v.bin"] = header(3, 4, 8, 5, 1, 1, 4) + good[1024:]
    out["zero_layers.bin"] = header(3, 4, 5, 8, 0, 1, 4) + good[1024:]
    out["negative_channels.bin"] = header(3, 4, 5, 8, 1, 1, -4) + good[1024:]
    out["huge_dims.bin"] = header(3, 2**30, 2**24, 2**24, 1024, 1, 2**16) + good[1024:]
    padded = bytearray(good)
    padded[1024 + 4 * (5 * 4)] = 0x3F  # a byte of wte row V (padding) made non-zero
    out["nonzero_padding.bin"] = bytes(padded)
    nan = bytearray(good)
    nan[1024:1028] = struct.pack("<f", float("nan"))
    out["nan_weight.bin"] = bytes(nan)
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    dest = Path(argv[0]) if argv else HERE / "corpus" / "checkpoint"
    dest.mkdir(parents=True, exist_ok=True)
    files = corpus()
    for name, data in files.items():
        (dest / name).write_bytes(data)
    total = sum(len(d) for d in files.values())
    print(f"wrote {len(files)} seed files ({total} bytes) to {os.fspath(dest)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
