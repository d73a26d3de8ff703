"""The CUDA kernels' arithmetic against the CPU kernels, run on the host (no GPU needed).

core_c/cuda/shared_math.cuh holds every element-wise formula and per-row partial sum of the
CUDA kernels as __host__ __device__ functions; core_c/cuda/tests/host_emulation.cu runs them
on the host in the kernels' thread layout and order of additions. This file compiles that
with nvcc (skipping, with the reason, where there is none; CI has it) and compares it with the
CPU kernels (the kernel shim) on hard inputs: near-constant long layernorm rows, large
negative GELU inputs, vocabulary-sized softmax rows, repeated tokens. The bounds are ulps of
float32 and come from where the two sides may legitimately differ (the order of a double
sum); most comparisons are bitwise. Each hard-input test also shows that the formula the
CUDA code had before (fp32 layernorm statistics, the tanh GELU) fails the same check.

What this cannot show: the device compiler's code for these functions (the CUDA build uses
--fmad=false so it rounds where the host does), which the GPU tests check
(test_cuda_parity.py, UNVERIFIED until run on a GPU).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
CUDA_DIR = ROOT / "core_c" / "cuda"


def _find_nvcc():
    for cand in (os.environ.get("CUDACXX"), shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if cand and Path(cand).is_file():
            return cand
    return None


NVCC = _find_nvcc()
pytestmark = pytest.mark.skipif(
    NVCC is None, reason="no nvcc ($CUDACXX, PATH or /usr/local/cuda/bin): the host emulation of the CUDA kernels is compiled with it"
)

CDEF = """
int emu_abi(void);
void emu_gelu_forward(float *out, const float *x, int64_t n);
void emu_gelu_backward(float *dinp, const float *x, const float *dout, int64_t n);
void emu_round_bf16(uint16_t *out, const float *x, int64_t n);
void emu_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w, const float *b, int N, int C);
void emu_layernorm_backward_dinp(float *dinp, const float *dout, const float *inp, const float *w, const float *mean, const float *rstd, int N, int C);
void emu_classifier_forward(float *probs, float *losses, const float *logits, const int32_t *targets, int N, int V, int Vp);
void emu_softmax_causal_forward(float *att, int64_t rows, int T);
void emu_adamw(float *param, const float *grad, float *m, float *v, int64_t n, double lr, double beta1, double beta2, double eps, double weight_decay, int t, float grad_scale);
int emu_encoder_backward(float *dwte, float *dwpe, const float *dout, const int32_t *inp, int B, int T, int C, int V);
"""


class Emu:
    def __init__(self, path: Path):
        from cffi import FFI

        self.ffi = FFI()
        self.ffi.cdef(CDEF)
        self.lib = self.ffi.dlopen(str(path))
        assert self.lib.emu_abi() == 1, "stale host emulation library"

    def p(self, a: np.ndarray, ctype: str = "float[]"):
        assert a.flags.c_contiguous
        return self.ffi.from_buffer(ctype, a)


@pytest.fixture(scope="module")
def emu(tmp_path_factory) -> Emu:
    out = tmp_path_factory.mktemp("cuda_emu") / "host_emulation.so"
    cmd = [NVCC, "-std=c++17", "-O2", "-shared", "-Xcompiler", "-fPIC,-ffp-contract=off",
           f"-I{CUDA_DIR}", f"-I{ROOT / 'core_c' / 'src'}", "-o", str(out),
           str(CUDA_DIR / "tests" / "host_emulation.cu"), str(CUDA_DIR / "host_plan.c")]  # fmt: skip
    p = subprocess.run(cmd, capture_output=True, text=True)
    assert p.returncode == 0, f"nvcc failed: {' '.join(cmd)}\n{p.stderr}"
    return Emu(out)


@pytest.fixture(scope="module")
def shim():
    from kernel_shim import load_shim  # parity_tests/kernel_shim.py (builds the test-only shim)

    return load_shim()


def f32(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


def ulps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a - b| in units of float32 spacing (ordered integer distance; +0 and -0 are 0 apart)."""

    def ordered(x):
        i = np.ascontiguousarray(x, dtype=np.float32).view(np.int32).astype(np.int64)
        return np.where(i < 0, -(i & 0x7FFFFFFF), i)

    return np.abs(ordered(a) - ordered(b))


def max_ulps(a, b) -> int:
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    assert np.array_equal(np.isnan(a), np.isnan(b)), "NaNs in different places"
    ok = ~np.isnan(a)
    return int(ulps(a[ok], b[ok]).max()) if ok.any() else 0


# ------------------------------------------------------------------ GELU


def gelu_inputs(rng) -> np.ndarray:
    special = [0.0, -0.0, 1e-45, -1e-45, 1e-38, -1e-38, 1e-20, -1e-20, 3.0, -3.0, 10.0, -10.0, 20.0, -20.0,
               88.0, -88.0, 1e30, -1e30, np.inf, -np.inf, np.nan]  # fmt: skip
    return f32(np.concatenate([np.linspace(-30, 30, 20001), -np.logspace(-6, 1.5, 5000), rng.standard_normal(5000) * 4,
                               special]))  # fmt: skip


def test_gelu_forward_and_backward_are_the_cpus_bit_for_bit(emu, shim):
    rng = np.random.default_rng(0)
    x = gelu_inputs(rng)
    d = f32(rng.standard_normal(x.size))
    out = np.empty_like(x)
    emu.lib.emu_gelu_forward(emu.p(out), emu.p(x), x.size)
    np.testing.assert_array_equal(out, shim.gelu_forward(x))
    dinp = np.empty_like(x)
    emu.lib.emu_gelu_backward(emu.p(dinp), emu.p(x), emu.p(d), x.size)
    np.testing.assert_array_equal(dinp, shim.gelu_backward(x, d))


def test_gelu_keeps_relative_precision_for_large_negative_x(emu):
    """x in [-9, -3]: GELU is tiny and 1 + tanh(u) cancels. The sigmoid form stays within a few
    ulps of the exact value; the tanh form the CUDA kernel had loses most digits."""
    x = f32(np.linspace(-9.0, -3.0, 4001))
    out = np.empty_like(x)
    emu.lib.emu_gelu_forward(emu.p(out), emu.p(x), x.size)
    xd = x.astype(np.float64)
    two_u = 2.0 * np.sqrt(2.0 / np.pi) * (xd + 0.044715 * xd**3)
    exact = xd / (1.0 + np.exp(-two_u))  # the sigmoid form in double: no cancellation
    rel = np.abs(out / exact - 1.0)
    # u is formed in float (a few roundings, as on the CPU and in torch), and exp(-2u) turns
    # its relative error into |2u| times as much: the bound is that conditioning, plus a few
    # ulps for exp and the division (measured: at most 9.3e-6 at x = -9, |2u| = 66)
    bound = (4 * np.abs(two_u) + 8) * 2.0**-24
    assert np.all(rel <= bound), (rel / bound).max()
    u = np.float32(0.7978845608028654) * (x + np.float32(0.044715) * x * x * x)
    tanh_form = np.float32(0.5) * x * (np.float32(1.0) + np.tanh(u))
    assert np.mean(np.abs(tanh_form / exact - 1.0) > bound) > 0.9  # what the check catches


# ------------------------------------------------------------------ bf16 rounding


def test_bf16_rounding_is_round_to_nearest_even(emu):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    bits = rng.integers(0, 2**32, 200000, dtype=np.uint64).astype(np.uint32)
    ties = (rng.integers(0, 2**16, 20000, dtype=np.uint64).astype(np.uint32) << 16) | 0x8000  # exactly halfway
    edges = np.array([0, 0x80000000, 0x00000001, 0x807FFFFF, 0x7F7FFFFF, 0xFF7FFFFF, 0x7F7F7FFF, 0x7F7F8000,
                      0x7F800000, 0xFF800000, 0x3F808000, 0x3F818000], dtype=np.uint32)  # fmt: skip
    x = np.concatenate([bits, ties, edges]).view(np.float32)
    x = f32(x[~np.isnan(x)])
    got = np.empty(x.size, np.uint16)
    emu.lib.emu_round_bf16(emu.p(got, "uint16_t[]"), emu.p(x), x.size)
    want = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(got, want)
    nan = f32([np.nan, -np.nan])
    got = np.empty(2, np.uint16)
    emu.lib.emu_round_bf16(emu.p(got, "uint16_t[]"), emu.p(nan), 2)
    assert all((g & 0x7F80) == 0x7F80 and (g & 0x7F) != 0 for g in got)  # still NaN


# ------------------------------------------------------------------ layernorm


def layernorm_rows(rng, C) -> np.ndarray:
    n = 8
    rows = [
        1000.0 + 1e-3 * rng.standard_normal((n, C)),  # near-constant, far from zero
        3e4 + 0.1 * rng.standard_normal((n, C)),
        1e6 + rng.standard_normal((n, C)),
        np.full((2, C), 7.25),  # constant: variance 0
        rng.standard_normal((n, C)),
        rng.standard_normal((n, C)) * 50 + 5,
    ]
    return f32(np.concatenate(rows))


def emu_layernorm(emu, x, w, b):
    N, C = x.shape
    out, mean, rstd = np.empty_like(x), np.empty(N, np.float32), np.empty(N, np.float32)
    emu.lib.emu_layernorm_forward(emu.p(out), emu.p(mean), emu.p(rstd), emu.p(x), emu.p(w), emu.p(b), N, C)
    return out, mean, rstd


def fp32_layernorm_stats(x):
    """The statistics as the CUDA kernel computed them before: float lane sums, float
    butterfly, float mean and variance (the defect the issue names)."""
    N, C = x.shape
    lanes = np.zeros((N, 32), np.float32)
    for c0 in range(0, C, 32):
        lanes[:, : min(32, C - c0)] += x[:, c0 : c0 + 32]

    def tree(v):
        v = v.copy()
        for o in (16, 8, 4, 2, 1):
            v = v + v[:, np.arange(32) ^ o]
        return v[:, 0]

    m = tree(lanes) / np.float32(C)
    dev = np.zeros((N, 32), np.float32)
    for c0 in range(0, C, 32):
        d = x[:, c0 : c0 + 32] - m[:, None]
        dev[:, : d.shape[1]] += d * d
    v = tree(dev) / np.float32(C)
    return m, np.float32(1.0) / np.sqrt(v + np.float32(1e-5))


@pytest.mark.parametrize("C", [768, 3072, 100])
def test_layernorm_forward_matches_cpu_on_near_constant_rows(emu, shim, C):
    rng = np.random.default_rng(C)
    x = layernorm_rows(rng, C)
    w, b = f32(rng.standard_normal(C)), f32(rng.standard_normal(C))
    out, mean, rstd = emu_layernorm(emu, x, w, b)
    for nt in (1, 2):
        c_out, c_mean, c_rstd = shim.layernorm_forward(x, w, b, nt=nt)
        # the double sums are added in another order (32 lanes + butterfly vs the CPU's SIMD
        # lanes): the float results may differ in the last bit, no more
        assert max_ulps(mean, c_mean) <= 1
        assert max_ulps(rstd, c_rstd) <= 1
        assert max_ulps(out, c_out) <= 2  # (x - mean) * rstd * w + b: one ulp of mean or rstd
    old_m, old_r = fp32_layernorm_stats(x)
    assert max_ulps(old_r, shim.layernorm_forward(x, w, b)[2]) > 1000  # the fp32 statistics fail


def test_layernorm_backward_dinp_matches_cpu(emu, shim):
    rng = np.random.default_rng(5)
    C = 768
    x = layernorm_rows(rng, C)
    N = x.shape[0]
    w, b = f32(rng.standard_normal(C)), f32(rng.standard_normal(C))
    _, mean, rstd = shim.layernorm_forward(x, w, b)
    dout = f32(rng.standard_normal((N, C)))
    dinp0 = f32(rng.standard_normal((N, C)))
    dinp = dinp0.copy()
    emu.lib.emu_layernorm_backward_dinp(emu.p(dinp), emu.p(dout), emu.p(x), emu.p(w), emu.p(mean), emu.p(rstd), N, C)
    c_dinp = dinp0.copy()
    shim.layernorm_backward(c_dinp, np.zeros(C, np.float32), np.zeros(C, np.float32), dout, x, w, mean, rstd)
    # mean(dn) and mean(dn xhat) from double sums in another order: one ulp of those
    # (then cancelling against dn) moves dinp by a few ulps of its own size at most
    assert max_ulps(dinp, c_dinp) <= 4
    assert np.array_equal(dinp, c_dinp) or np.mean(dinp != c_dinp) < 0.05


# ------------------------------------------------------------------ softmaxes


def test_classifier_softmax_and_loss_match_cpu(emu, shim):
    rng = np.random.default_rng(7)
    V, Vp = 50257, 50304
    rows = [rng.standard_normal(Vp) * 10, rng.standard_normal(Vp) * 1e-3 + 5, rng.standard_normal(Vp)]
    spike = rng.standard_normal(Vp)
    spike[123] = 120.0  # one huge logit: every other probability underflows towards 0
    rows.append(spike)
    logits = f32(np.stack(rows))
    logits[:, V:] = np.nan  # padding columns must not be read
    N = logits.shape[0]
    targets = np.array([5, 50000, 0, 7], np.int32)
    probs, losses = np.empty_like(logits), np.empty(N, np.float32)
    emu.lib.emu_classifier_forward(emu.p(probs), emu.p(losses), emu.p(logits), emu.p(targets, "int32_t[]"), N, V, Vp)
    c_probs, c_losses, _ = shim.crossentropy_forward(logits, targets, V)
    assert np.all(probs[:, V:] == 0)
    # the sum of exps is a double sum in another order; 1/sum rounded to float may differ by
    # one ulp, and so the probabilities
    assert max_ulps(probs, c_probs) <= 1
    assert max_ulps(losses, c_losses) <= 1


def test_causal_softmax_matches_exact_within_the_exp_error(emu):
    rng = np.random.default_rng(9)
    T, heads = 257, 3  # not a multiple of 32 lanes
    att = f32(rng.standard_normal((heads * T, T)) * 4)
    want = np.zeros_like(att, dtype=np.float64)
    for r in range(att.shape[0]):
        t = r % T
        z = att[r, : t + 1].astype(np.float64)
        e = np.exp(z - z.max())
        want[r, : t + 1] = e / e.sum()
    got = att.copy()
    emu.lib.emu_softmax_causal_forward(emu.p(got), got.shape[0], T)
    assert np.all(got[np.triu_indices(T, 1)[0], np.triu_indices(T, 1)[1]] == 0)
    # z = x - max is rounded to float (as on the CPU), which exp turns into a relative error
    # of up to |z| 2^-24; llmc_expf adds ~2 ulps, 1/sum and the product half an ulp each,
    # and the sum the error of its largest terms: the bound is |z| 2^-24 + 8 ulps
    z = np.zeros_like(att)
    for r in range(att.shape[0]):
        t = r % T
        z[r, : t + 1] = att[r, : t + 1] - att[r, : t + 1].max()
    rel = np.abs(got - want) / np.maximum(want, np.finfo(np.float32).tiny)
    keep = want > 1e-30
    assert np.all(rel[keep] <= np.abs(z[keep]) * 2.0**-24 + 8 * 2.0**-23), rel[keep].max()


# ------------------------------------------------------------------ AdamW and the embedding backward


def test_adamw_matches_cpu_bit_for_bit(emu, shim):
    rng = np.random.default_rng(11)
    n = 10000
    for t, gs, wd in ((1, 1.0, 0.1), (7, 0.5, 0.0), (1000, 1.0, 0.01)):
        p0, g = f32(rng.standard_normal(n)), f32(rng.standard_normal(n) * 1e-3)
        g[::17] = 0.0
        m0, v0 = f32(rng.standard_normal(n) * 1e-3), f32(np.abs(rng.standard_normal(n)) * 1e-6)
        a = [p0.copy(), m0.copy(), v0.copy()]
        b = [p0.copy(), m0.copy(), v0.copy()]
        emu.lib.emu_adamw(emu.p(a[0]), emu.p(g), emu.p(a[1]), emu.p(a[2]), n, 3e-4, 0.9, 0.95, 1e-8, wd, t, gs)
        shim.adamw(b[0], g, b[1], b[2], lr=3e-4, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=wd, t=t, grad_scale=gs)
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)


def test_embedding_backward_is_the_cpus_bit_for_bit(emu, shim):
    """Repeated tokens: each dwte row adds its positions in increasing order, as the CPU."""
    rng = np.random.default_rng(13)
    B, T, C, V = 4, 64, 48, 50
    inp = rng.integers(0, 10, (B, T)).astype(np.int32)  # 10 distinct tokens, ~26 uses each
    inp[0, 0] = V - 1
    dout = f32(rng.standard_normal((B, T, C)) * rng.choice([1e-4, 1.0, 1e4], (B, T, 1)))  # order matters
    dwte0, dwpe0 = f32(rng.standard_normal((V, C))), f32(rng.standard_normal((T, C)))
    dwte, dwpe = dwte0.copy(), dwpe0.copy()
    U = emu.lib.emu_encoder_backward(emu.p(dwte), emu.p(dwpe), emu.p(dout), emu.p(inp, "int32_t[]"), B, T, C, V)
    assert U == len(np.unique(inp))
    c_dwte, c_dwpe = dwte0.copy(), dwpe0.copy()
    shim.encoder_backward(c_dwte, c_dwpe, dout, inp)
    np.testing.assert_array_equal(dwte, c_dwte)
    np.testing.assert_array_equal(dwpe, c_dwpe)
    # and the order is what makes it bitwise: summing the same rows in reverse differs
    rev = dwte0.copy()
    flat = dout.reshape(B * T, C)
    for pos in range(B * T - 1, -1, -1):
        rev[inp.reshape(-1)[pos]] += flat[pos]
    assert not np.array_equal(rev, c_dwte)
