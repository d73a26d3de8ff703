"""Drive the C core through the binding under AddressSanitizer/UBSan (see noxfile `asan`).

A tiny model: forward/backward/clip/AdamW steps, tensor views, save/load, and the error paths
(bad config, missing file, bad magic, truncated checkpoint, bad token ids, bad sizes), each
also called directly through cffi so the C side's own validation runs, not only Python's;
non-zero reserved header slots and wte padding, a FIFO and a directory as checkpoints, and
an allocation failure (out of memory) with the cleanup of a half-built model.
"""

import os
import struct
import sys
import tempfile

import numpy as np

import pyllmc
from pyllmc import GPTConfig, Model
from pyllmc._ffi import ffi, lib

cfg = GPTConfig(max_seq_len=16, vocab_size=60, padded_vocab_size=64, num_layers=2, num_heads=2, channels=16)
rng = np.random.default_rng(0)
tmp = tempfile.mkdtemp()

with Model.from_config(cfg, max_batch=2, threads=2, seed=1) as m:
    x = rng.integers(0, cfg.vocab_size, (2, 8))
    y = rng.integers(0, cfg.vocab_size, (2, 8))
    losses = []
    for step in range(1, 4):
        m.zero_grad()
        losses.append(m.forward(x, y))
        m.backward()
        m.clip_grad_norm(1.0)
        m.adamw_step(1e-3, t=step, weight_decay=0.1, decay_matrices_only=True)
    assert all(np.isfinite(losses)) and losses[-1] < losses[0], losses
    m.forward(x[:1, :5])  # smaller B, T and no targets
    assert m.logits().shape == (1, 5, cfg.vocab_size)
    total = sum(float(np.abs(v).sum()) for kind in ("params", "grads", "adam_m", "adam_v", "acts") for v in getattr(m, kind).values())
    assert np.isfinite(total)
    path = os.path.join(tmp, "model.bin")
    m.save(path)
    with Model.from_checkpoint(path, max_batch=1) as m2:
        for name, v in m.params.items():
            np.testing.assert_array_equal(v, m2.params[name])
    # C-side validation, bypassing the Python checks
    ptr = m._h.ptr
    tok = np.zeros(4, np.int32)
    bad = np.full(4, cfg.vocab_size + 5, np.int32)
    neg = np.full(4, -1, np.int32)
    loss = ffi.new("float *")
    for inp, tgt, B, T in [(tok, tok, 3, 1), (tok, tok, 0, 4), (tok, tok, 1, 17), (bad, tok, 1, 4), (neg, tok, 1, 4),
                           (tok, bad, 1, 4), (tok, neg, 2, 2)]:
        status = lib.llmc_model_forward(ptr, ffi.from_buffer("int32_t[]", inp), ffi.from_buffer("int32_t[]", tgt), B, T, loss)
        assert status == 1, (B, T, status)
    assert lib.llmc_model_forward(ptr, ffi.NULL, ffi.NULL, 1, 1, loss) == 1
    assert lib.llmc_model_tensor_info(ptr, -1, ffi.new("llmc_tensor_info *")) == 1
    assert lib.llmc_model_tensor_info(ptr, lib.llmc_model_num_tensors(ptr), ffi.new("llmc_tensor_info *")) == 1
    assert lib.llmc_model_buffer(ptr, 99, ffi.new("float **"), ffi.new("int64_t *")) == 1

for bad_cfg in [GPTConfig(16, 60, 64, 2, 3, 16), GPTConfig(16, 60, 32, 2, 2, 16), GPTConfig(0, 60, 64, 2, 2, 16),
                GPTConfig(16, 60, 64, -1, 2, 16)]:
    try:
        Model.from_config(bad_cfg)
    except pyllmc.InvalidArgumentError:
        pass
    else:
        raise AssertionError(f"accepted {bad_cfg}")

cases = {
    "missing.bin": None,
    "empty.bin": b"",
    "magic.bin": struct.pack("<256i", *([1234] + [0] * 255)),
    "truncated.bin": struct.pack("<256i", *([20240326, 3, 16, 60, 2, 2, 16, 64] + [0] * 248)) + b"\0" * 100,
    "version.bin": struct.pack("<256i", *([20240326, 9, 16, 60, 2, 2, 16, 64] + [0] * 248)),
}
for name, content in cases.items():
    path = os.path.join(tmp, name)
    if content is not None:
        with open(path, "wb") as f:
            f.write(content)
    try:
        Model.from_checkpoint(path)
    except (pyllmc.FileError, pyllmc.BadFormatError) as e:
        assert name in str(e), e
    else:
        raise AssertionError(f"loaded {name}")

# header-valid files the loader must still refuse (after reading them, for the padding case)
good = open(os.path.join(tmp, "model.bin"), "rb").read()
hdr = list(struct.unpack("<256i", good[:1024]))
reserved = hdr.copy()
reserved[100] = 7
padded = bytearray(good)
padded[1024 + 4 * cfg.vocab_size * cfg.channels] = 0x3F  # wte row V: padding, must be zero
for name, content in {"reserved.bin": struct.pack("<256i", *reserved) + good[1024:],
                      "padding.bin": bytes(padded)}.items():
    path = os.path.join(tmp, name)
    with open(path, "wb") as f:
        f.write(content)
    try:
        Model.from_checkpoint(path, max_batch=1)
    except pyllmc.BadFormatError as e:
        assert name in str(e), e
    else:
        raise AssertionError(f"loaded {name}")
fifo = os.path.join(tmp, "fifo.bin")
os.mkfifo(fifo)
for path in (fifo, tmp):  # neither blocks nor reads a directory
    try:
        Model.from_checkpoint(path)
    except pyllmc.FileError:
        pass
    else:
        raise AssertionError(f"loaded {path}")

# Out of memory: a buffer larger than any allocator gives (4 TiB of wte) must come back as
# OUT_OF_MEMORY with everything allocated so far freed (ASan checks the cleanup; the session
# sets allocator_may_return_null=1 so ASan's allocator fails the way malloc does)
try:
    Model.from_config(GPTConfig(16, 1 << 24, 1 << 24, 1, 1, 1 << 16), max_batch=1, threads=1)
except pyllmc.OutOfMemoryError as e:
    assert "MiB" in str(e), e
else:
    raise AssertionError("a 4 TiB model was created")

print("asan smoke: ok", file=sys.stderr)
