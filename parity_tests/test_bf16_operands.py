"""bf16 precision against its definition, from the C core's OWN tensors: every forward GEMM
output of a bf16 model (qkv, attproj, fch, fcproj, logits, and attention's P V) must be the
exact product of the bf16-rounded operands it was given (its input activation and its weights
as they are now) to within fp32 summation (Higham's gamma_{K+2} times the sum of |terms|, any
order: the AMX kernel's too), the per-position losses the cross-entropy of its own fp32
logits, and the loss their mean.

The parity lockstep compares with autocast, whose own bf16 noise sets the limits there. That
cannot see a bug which changes the rounding without making the result less accurate than
autocast's (an operand truncated, rounded twice, or left unrounded, a stale weight image, the
loss taken from bf16-rounded logits): here each of those is a relative error of order 2^-9
against a bound of order K x 2^-24, found at the GEMM that makes it. The model trains one
AdamW step first, without exposing its parameters (copy_to_host only), so the second forward
runs on the bf16 weight image the update kept. The bf16 reference rounding is torch's."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pyllmc import GPTConfig, Model  # noqa: E402
from pyllmc.reference.tolerance import EPS32, gamma  # noqa: E402

pytestmark = pytest.mark.parity


@pytest.fixture(autouse=True)
def fp32_storage(monkeypatch):
    """Models here store every activation in fp32 (LLMC_BF16_ACTS=fp32, read at creation).
    The default layout keeps attention's output atty as the bf16 of its fp32 product, whose
    rounding (2^-9) would hide the operand errors this check looks for; that layout trains
    to the same bits as this one (parity_tests/test_bf16_acts.py), so checking the products
    here checks both."""
    monkeypatch.setenv("LLMC_BF16_ACTS", "fp32")

# maxT, V, Vp, L, NH, C: C and B*T large enough for the vector packs and AMX tiles
CFG = GPTConfig(64, 257, 384, 2, 2, 128)
B, T = 2, 64


def bf16(a: np.ndarray) -> np.ndarray:
    """round to nearest even bf16 (torch's conversion), as float64"""
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(torch.bfloat16).double().numpy()


def gemm_ratio(out: np.ndarray, a: np.ndarray, w: np.ndarray, bias=None) -> float:
    """worst |out - (bf16(a) @ bf16(w).T + bias)| over its bound gamma_{K+2} (|a||w| + |bias|),
    a (M, K), w (N, K) as the C core stores weights"""
    a16, w16 = bf16(a), bf16(w)
    exact = a16 @ w16.T
    terms = np.abs(a16) @ np.abs(w16).T
    if bias is not None:
        exact = exact + bias.astype(np.float64)
        terms = terms + np.abs(bias.astype(np.float64))
    bound = gamma(a.shape[1] + 2) * terms + 1e-30
    return float(np.max(np.abs(out.astype(np.float64) - exact) / bound))


def operand_ratios(m: Model, x: np.ndarray, y: np.ndarray) -> dict:
    """{check: worst error over its bound} for one forward of m on (x, y)"""
    loss = m.forward(x, y)
    L = CFG.num_layers
    act = {n: np.stack([m.copy_to_host("acts", f"h{l}.{n}") for l in range(L)])
           for n in ("ln1", "qkv", "att", "atty", "attproj", "ln2", "fch", "fch_gelu", "fcproj")}
    act.update({n: m.copy_to_host("acts", n) for n in ("lnf", "logits", "losses")})
    par = {n: m.copy_to_host("params", n) for n in ("wte", "qkvw", "qkvb", "attprojw", "attprojb", "fcw", "fcb",
                                                   "fcprojw", "fcprojb")}
    C, NH, V = CFG.channels, CFG.num_heads, CFG.vocab_size
    hs = C // NH
    r = {}
    for l in range(L):
        for out, inp, w in (("qkv", "ln1", "qkv"), ("attproj", "atty", "attproj"), ("fch", "ln2", "fc"),
                            ("fcproj", "fch_gelu", "fcproj")):
            a = act[inp][l].reshape(B * T, -1)
            r[f"h{l}.{out}"] = gemm_ratio(act[out][l].reshape(B * T, -1), a, par[w + "w"][l], par[w + "b"][l])
        worst = 0.0
        for b in range(B):
            for h in range(NH):
                p = np.tril(act["att"][l, b, h].reshape(T, T))  # the causal probabilities
                v = act["qkv"][l, b, :, 2 * C + h * hs: 2 * C + (h + 1) * hs]
                worst = max(worst, gemm_ratio(act["atty"][l, b, :, h * hs:(h + 1) * hs], p, v.T))
        r[f"h{l}.atty"] = worst
    lg = act["logits"].reshape(B * T, -1)
    r["logits"] = gemm_ratio(lg, act["lnf"].reshape(B * T, C), par["wte"])
    # the cross-entropy of the C core's own fp32 logits (the first V columns), exact in fp64;
    # bound: an fp32 sum of V positive terms (gamma_V relative, absolute after the log) and a
    # few ulp for exp, log and the difference
    z = lg[:, :V].astype(np.float64)
    mx = z.max(axis=1)
    lse = mx + np.log(np.exp(z - mx[:, None]).sum(axis=1))
    zt = z[np.arange(B * T), y.reshape(-1)]
    ce = lse - zt
    bound = gamma(V + 2) + 4 * EPS32 * (np.abs(lse) + np.abs(zt))
    r["losses"] = float(np.max(np.abs(act["losses"].reshape(-1) - ce) / bound))
    lo = act["losses"].astype(np.float64)
    r["loss"] = abs(float(loss) - lo.mean()) / (gamma(B * T) * np.abs(lo).mean() + EPS32 * abs(lo.mean()))
    return r


def test_bf16_forward_is_the_product_of_its_rounded_operands():
    m = Model.from_config(CFG, max_batch=B, max_seq=T, threads=2, seed=3, precision="bf16")
    try:
        rng = np.random.default_rng(0)
        for ti in m.tensors("params"):  # non-trivial weights: no zero bias, no unit LN weight
            w = m.copy_to_host("params", ti.name)
            w = (w + rng.standard_normal(w.shape) * 0.05).astype(np.float32)
            if ti.name == "wte":
                w[CFG.vocab_size:] = 0.0  # the padding rows stay zero
            m.copy_from_host("params", ti.name, w)
        x, y = (rng.integers(0, CFG.vocab_size, size=(B, T), dtype=np.int32) for _ in range(2))
        first = operand_ratios(m, x, y)  # the image made from copy_from_host's weights
        m.backward(1.0, accumulate=False)
        m.adamw_step(1e-2, t=1, weight_decay=0.1)  # moves the weights by far more than a bf16 ulp
        second = operand_ratios(m, x, y)  # the image AdamW kept
    finally:
        m.close()
    bad = {k: v for k, v in {**{"1:" + k: v for k, v in first.items()},
                             **{"2:" + k: v for k, v in second.items()}}.items() if not v <= 1.0}
    assert not bad, bad
    assert max(second.values()) > 1e-3  # (C's products are not exact either: the bound is not vacuous)


def test_the_operand_check_fails_unrounded_and_truncated_operands():
    """The bound separates the definition from its neighbours: the fp32 product of the same
    operands (no rounding), and products of truncated operands, are far outside it."""
    rng = np.random.default_rng(1)
    a, w, b = rng.standard_normal((128, 128)), rng.standard_normal((384, 128)) * 0.05, rng.standard_normal(384)
    a, w, b = (v.astype(np.float32) for v in (a, w, b))
    exact16 = bf16(a) @ bf16(w).T + b
    assert gemm_ratio(exact16.astype(np.float32), a, w, b) <= 1.0
    assert gemm_ratio((a.astype(np.float64) @ w.T.astype(np.float64) + b).astype(np.float32), a, w, b) > 30

    def trunc(v):
        return (np.ascontiguousarray(v, np.float32).view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)

    assert gemm_ratio((trunc(a).astype(np.float64) @ bf16(w).T + b).astype(np.float32), a, w, b) > 30
