"""Why the scalar loss of `pyllmc parity --precision bf16` can fail: its error statistics
over seeds (the measurements of benchmarks/results/parity_bf16_s3/README.md).

For each (model, B, T, seed): one forward of the C core in bf16, of the fp32 reference under
CPU autocast bf16 and of its fp64 twin, from the same weights and batch (step 1 of the
lockstep). Printed per run:

- kernel checks of the C core from its OWN tensors: the logits against the exact product of
  the bf16-rounded lnf output and wte (fp64 sums), relative to sum |terms|; the per-token
  losses against the exact cross-entropy (fp64) of the C logits; the loss against the fp64
  mean of the C per-token losses;
- the loss error against fp64 of each side (e_c, e_t), and the same error as a z-score in the
  units of the standard error of a mean of n = B*T per-token errors, rms(e(losses))/sqrt(n),
  and the mean per-token error (which the loss error must equal, up to fp32 rounding).

Run: PYTHONPATH= .venv/bin/python benchmarks/results/parity_bf16_s3/loss_noise.py d6 2 64 0 1 2 ...
(model B T seeds...). One torch thread, C on 1 thread (bitwise the same on any count).
"""
from __future__ import annotations

import json
import math
import sys

import numpy as np
import torch

from pyllmc.reference.capture import capture
from pyllmc.reference.hf import to_dtype
from pyllmc.reference.lockstep import LockstepConfig, c_model_for, load_reference_for, make_batches
from pyllmc.reference.parity import c_activations


def bf16(a: np.ndarray) -> np.ndarray:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(torch.bfloat16).to(torch.float64).numpy()


def one(model: str, B: int, T: int, seed: int, randomize: bool = False) -> dict:
    torch.set_num_threads(1)
    ref = load_reference_for(model, seed=seed, randomize=randomize)
    V = int(ref.config.vocab_size)
    cfg = LockstepConfig(steps=1, batch=B, seq=T, seed=seed, threads=1, precision="bf16")
    m = c_model_for(ref, cfg)
    try:
        x, y = make_batches(V, B, T, 1, seed)[0]
        loss_c = float(m.forward(x, y))
        acts = c_activations(m, V, ["lnf", "logits", "losses"])
        wte = np.array(m.params["wte"][:V], dtype=np.float32)
    finally:
        m.close()
    ct = capture(ref, x, y, backward=False, autocast=True)
    r64 = to_dtype(ref, torch.float64)
    c64 = capture(r64, x, y, backward=False)
    n = B * T
    # --- the C core's kernels, from its own inputs
    lnf = bf16(acts["lnf"]).reshape(n, -1)
    w = bf16(wte)
    exact = lnf @ w.T
    terms = np.abs(lnf) @ np.abs(w).T
    lg = acts["logits"].reshape(n, V).astype(np.float64)
    logit_err = float(np.max(np.abs(lg - exact) / terms))  # in units of sum |terms|
    mx = lg.max(axis=1, keepdims=True)
    ce = (np.log(np.exp(lg - mx).sum(axis=1)) + mx[:, 0]) - lg[np.arange(n), y.reshape(-1)]
    loss_kernel_err = float(np.max(np.abs(acts["losses"].reshape(-1) - ce)))
    mean_err = abs(loss_c - float(np.mean(acts["losses"].astype(np.float64))))
    # --- the errors against fp64
    l64 = c64.acts["losses"].reshape(-1).astype(np.float64)
    ec = acts["losses"].reshape(-1).astype(np.float64) - l64
    et = ct.acts["losses"].reshape(-1).astype(np.float64) - l64
    e_c, e_t = loss_c - c64.loss, ct.loss - c64.loss
    se_c, se_t = math.sqrt(np.mean(ec ** 2) / n), math.sqrt(np.mean(et ** 2) / n)
    return dict(model=model, B=B, T=T, seed=seed, randomize=randomize, loss64=c64.loss,
                logit_err_over_sum_terms=logit_err, gamma_K_fp32=float(384 * 2.0 ** -24),
                loss_kernel_max_err=loss_kernel_err, loss_vs_mean_of_losses=mean_err,
                e_c=e_c, e_t=e_t, ratio=abs(e_c) / abs(e_t),
                mean_tok_err_c=float(ec.mean()), mean_tok_err_t=float(et.mean()),
                rms_tok_err_c=float(np.sqrt(np.mean(ec ** 2))), rms_tok_err_t=float(np.sqrt(np.mean(et ** 2))),
                z_c=e_c / se_c, z_t=e_t / se_t)


if __name__ == "__main__":
    model, B, T = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rnd = model.endswith("r")
    for s in sys.argv[4:]:
        print(json.dumps(one(model.rstrip("r"), B, T, int(s), randomize=rnd)), flush=True)
