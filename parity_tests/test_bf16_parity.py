"""bf16 parity (`pyllmc parity --precision bf16`): the C core in bf16 precision in lockstep
with PyTorch under CPU autocast bf16, every tensor attributed against fp64
(pyllmc.reference.tolerance_bf16); an injected fault is found where it is; and a 20-step
loss trajectory stays inside the spread of autocast bf16 runs from 1-ulp-moved weights."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from pyllmc.shapes import clip_coefficient  # noqa: E402
from pyllmc.reference import LockstepConfig, load_reference, make_batches, make_config, randomize_params, run_lockstep  # noqa: E402
from pyllmc.reference.hf import perturb_bf16_ulp, to_dtype  # noqa: E402
from pyllmc.reference.lockstep import c_model_for  # noqa: E402
from pyllmc.reference.torch_optim import ReferenceTrainer  # noqa: E402

pytestmark = pytest.mark.parity


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def reference(V=101, maxT=16, L=2, NH=2, C=64, randomize=True):
    ref = load_reference(make_config(vocab_size=V, n_positions=maxT, n_layer=L, n_head=NH, n_embd=C), seed=0)
    return randomize_params(ref, seed=1) if randomize else ref


def lockstep_bf16(ref, fault=None, **kw):
    cfg = LockstepConfig(**{**dict(steps=2, batch=2, seq=16, seed=4, threads=1, lr=3e-3,
                                   precision="bf16"), **kw})
    m = c_model_for(ref, cfg)
    try:
        assert m.precision == "bf16"
        if fault:
            m.debug_set_fault(*fault)
        return run_lockstep(ref, m, cfg, model_name="test")
    finally:
        m.close()


def test_bf16_lockstep_passes_attributed_against_fp64():
    res = lockstep_bf16(reference())
    bad = [r for r in res.rows if not r["passed"]]
    assert not bad, bad[0]
    # after the load (exact), every verdict is the attributed one: autocast and the C core differ
    judged = [r for r in res.rows if r["step"] >= 1]
    assert judged and all(r["method"] == "fp64-attributed" for r in judged if not r["direct_passed"])
    assert res.config["precision"] == "bf16"
    # bf16 really is a different computation from fp32 PyTorch, and close to it
    assert res.losses_c[0] != res.losses_fp64[0]
    assert abs(res.losses_c[0] - res.losses_fp64[0]) < 1e-2 * abs(res.losses_fp64[0])


def test_bf16_lockstep_localises_an_injected_fault():
    """One element of h1.fch moved by 4 (its RMS is 0.99 here): the verdict is by RMS
    against autocast's bf16 error, so a single-element fault must stand out of bf16 noise
    over the tensor's 8192 elements (0.5, which the fp32 harness finds, does not)."""
    res = lockstep_bf16(reference(), fault=("h1.fch", 4.0), steps=1)
    first = res.first_divergence
    assert first is not None and first["name"] == "h1.fch" and first["step"] == 1


def test_bf16_lockstep_needs_fp64():
    from pyllmc.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="fp64"):
        LockstepConfig(precision="bf16", fp64=False).validate()


@pytest.mark.parametrize("randomize", [False, True], ids=["gpt2_init", "randomized"])
def test_bf16_20_step_loss_trajectory_inside_the_autocast_spread(randomize):
    """20 clipped AdamW steps. Autocast runs from weights moved by one bf16 ulp
    (hf.perturb_bf16_ulp; one fp32 ulp hardly moves a bf16 run) are equally valid bf16
    trajectories; at every step the C core's loss must be no farther from the fp64 trajectory
    than the farthest of them (and the unmoved autocast run). Measured when written (8 runs):
    C's distance at most 0.55 (GPT-2 init) and 0.66 (randomized) of that spread with the AMX
    kernel, 0.55 and 0.56 with vdpbf16ps (with 4 runs the randomized AMX case reached 1.28 at
    one step: the spread of 4 runs is itself a small sample)."""
    V, maxT, L, NH, C, B, T, steps, runs = 257, 32, 2, 4, 64, 4, 32, 20, 8
    ref = reference(V, maxT, L, NH, C, randomize=randomize)
    cfg = LockstepConfig(steps=steps, batch=B, seq=T, threads=1, precision="bf16")
    hp = dict(lr=3e-3, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1, decay_matrices_only=True, grad_clip=1.0)
    m = c_model_for(ref, cfg)
    kw = dict(hp, padded_vocab_size=m.config.padded_vocab_size)
    with torch.no_grad():
        peers = [ReferenceTrainer(to_dtype(ref, torch.float32), autocast=True, **kw)]
        peers += [ReferenceTrainer(perturb_bf16_ulp(to_dtype(ref, torch.float32), seed=200 + i), autocast=True, **kw)
                  for i in range(runs)]
    exact = ReferenceTrainer(to_dtype(ref, torch.float64), **kw)
    lc, l64, lp = [], [], [[] for _ in peers]
    try:
        for t, (x, y) in enumerate(make_batches(V, B, T, steps, 5), start=1):
            lc.append(m.forward(x, y))
            m.backward(1.0, accumulate=False)
            m.adamw_step(hp["lr"], t=t, beta1=hp["beta1"], beta2=hp["beta2"], eps=hp["eps"],
                         weight_decay=hp["weight_decay"], decay_matrices_only=True,
                         grad_scale=clip_coefficient(m.grad_norm(), hp["grad_clip"]))
            l64.append(exact.step([(x, y)], lr=hp["lr"])["loss"])
            for i, p in enumerate(peers):
                lp[i].append(p.step([(x, y)], lr=hp["lr"])["loss"])
    finally:
        m.close()
    lc, l64, lp = np.array(lc), np.array(l64), np.array(lp)
    spread = np.abs(lp - l64).max(axis=0)
    dist = np.abs(lc - l64)
    assert (spread > 0).all() and (dist > 0).any()  # real, different bf16 computations
    assert (dist <= spread).all(), {"step": int(np.argmax(dist / spread)) + 1, "ratio": float((dist / spread).max()),
                                    "c": lc.tolist(), "fp64": l64.tolist()}


def test_bf16_loss_is_judged_against_the_standard_error_over_seeds():
    """The loss is the mean of the B x T per-position losses; its baseline is autocast's
    standard error of that mean, not autocast's single draw of it (tolerance.py: Means).
    Against the draw, 1 of these 24 loss rows failed when written (seed 9, step 1: 3.2x its
    limit) as d6 B2 T64 seed 0 did; against the standard error none uses more than 0.62 of its
    limit. The rest of every run must pass as well."""
    worst = 0.0
    for seed in range(12):
        ref = randomize_params(load_reference(make_config(vocab_size=257, n_positions=64, n_layer=2, n_head=2,
                                                          n_embd=64), seed=seed), seed=seed + 1)
        res = lockstep_bf16(ref, batch=4, seq=32, seed=seed)
        bad = [(r["name"], r["step"], r["tol_ratio"]) for r in res.rows if not r["passed"]]
        assert not bad, (seed, bad[:3])
        losses = [r for r in res.rows if r["name"] == "loss"]
        assert len(losses) == 2 and all(r["mean_of_n"] == 4 * 32 and r["mean_se_32_vs_64"] > 0 for r in losses)
        worst = max(worst, max(r["tol_ratio"] for r in losses))
    assert worst > 0.05  # the loss rows do judge something: C's loss is not exact
