"""A bf16 CPU model keeps its matrices' master weights in planes, their bf16 image inside them
(core_c/src/bf16_planes.c; core_c/tests/test_bf16_planes.c checks the bits): its peak memory
is that of the model with fp32 master weights (LLMC_BF16_MASTER=fp32) less about the separate
image, 2 bytes per weight of those matrices, and not above the fp32 model's; and training
through the Trainer never asks for a float pointer to the parameters, which would turn the
model back into the bigger layout."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import pyllmc.model as pm
from pyllmc import GPTConfig, Trainer, TrainerConfig

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM is read from /proc")

# about 15M parameters, 14.8M of them in the five matrices: the image is 30 MB, far above the
# noise of a process's peak (interpreter, numpy, the library: the same in every run)
CFG = dict(max_seq_len=64, vocab_size=16384, padded_vocab_size=16384, num_layers=2, num_heads=4, channels=512)

STEP = r"""
import json, sys
import numpy as np
from pyllmc import GPTConfig, Model
m = Model.from_config(GPTConfig(**json.loads(sys.argv[1])), max_batch=4, max_seq=64, threads=1,
                      precision=sys.argv[2])
x = np.arange(256, dtype=np.int32).reshape(4, 64) % 16384
for t in (1, 2):
    m.forward(x, x)
    m.backward(accumulate=False)
    m.adamw_step(1e-3, t=t)
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(json.dumps({"hwm_kib": int(hwm), "matrices": int(sum(m.params[k].size for k in
      ("wte", "qkvw", "attprojw", "fcw", "fcprojw"))) if sys.argv[3] == "count" else 0}))
"""


def _peak(precision: str, master: str = "", count: bool = False) -> dict:
    env = dict(os.environ)
    env.pop("LLMC_BF16_MASTER", None)
    if master:
        env["LLMC_BF16_MASTER"] = master
    r = subprocess.run([sys.executable, "-c", STEP, json.dumps(CFG), precision, "count" if count else "-"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_planes_save_the_image_and_stay_below_fp32():
    planes = _peak("bf16")["hwm_kib"]
    fp32_masters = _peak("bf16", "fp32")["hwm_kib"]
    fp32 = _peak("fp32")["hwm_kib"]
    # counted in a run of its own: looking at the parameters unpacks the planes
    matrices = _peak("bf16", count=True)["matrices"]
    image_kib = 2 * matrices / 1024
    saved = fp32_masters - planes
    # the image less the round-up bits (1/16 of it); page rounding and allocator slack aside
    assert saved > 0.85 * image_kib, (saved, image_kib)
    assert saved < 1.1 * image_kib, (saved, image_kib)
    assert planes <= fp32, (planes, fp32)


def _shard(path, tokens):
    header = np.zeros(256, dtype=np.int32)
    header[:3] = (20240520, 1, tokens.size)
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(tokens.astype(np.uint16).tobytes())


def test_training_never_asks_for_a_parameter_pointer(tmp_path, monkeypatch):
    kinds = []
    flat = pm.Model._flat

    def spy(self, k):
        kinds.append(pm.KIND_NAMES[k])
        return flat(self, k)

    monkeypatch.setattr(pm.Model, "_flat", spy)
    tokens = np.random.default_rng(0).integers(0, 256, 20000)
    _shard(tmp_path / "train.bin", tokens)
    _shard(tmp_path / "val.bin", tokens[:4000])
    cfg = TrainerConfig(model="d2", data=str(tmp_path / "train.bin"), val_data=str(tmp_path / "val.bin"),
                        tokenizer="byte", vocab_size=257, steps=4, batch_size=2, seq_len=32, precision="bf16",
                        out_dir=str(tmp_path / "run"), save_every=2, eval_every=2, eval_batches=1,
                        sample_every=0, progress="none")
    Trainer(cfg).train()
    assert (tmp_path / "run").exists()
    assert "params" not in kinds, kinds
    # the spy sees pointer requests: a parameter view of the same kind of model is one
    with pm.Model.from_config(GPTConfig(**CFG), max_batch=1, max_seq=8, threads=1, precision="bf16") as m:
        m.params["wte"]
    assert kinds[-1] == "params"
