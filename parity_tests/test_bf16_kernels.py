"""bf16 precision, kernel by kernel: the GEMM, the Linear layer (forward and both backward
products) and attention (its six products) with GEMM operands rounded to bf16, against PyTorch
computing the same scheme (operands rounded with torch's bf16 conversion, products in fp32 and,
for attribution, fp64), on every bf16 kernel this CPU runs: vdpbf16ps (AVX512_BF16) and the
portable fp32 emulations (AVX-512F, AVX2, C), forced with LLMC_GEMM_ISA, and AMX tiles
(TDPBF16PS) where the CPU and the OS offer them. All but AMX must also agree with each other
BITWISE, in single products and over whole training steps; AMX sums each pair in another order
and agrees to fp32 rounding."""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

import pyllmc  # noqa: E402
from kernel_shim import KernelShim, load_shim  # noqa: E402  (parity_tests/kernel_shim.py)
from pyllmc.reference.tolerance import compare, format_rows, gamma  # noqa: E402

from test_kernels import gemm_isa, rand  # noqa: E402  (the same ISA switch and data)

pytestmark = pytest.mark.parity

SETTINGS = settings(max_examples=8, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
NT = 1
ISAS16 = ["amx", "avx512bf16", "avx512", "avx2", "generic"]
BITWISE = ("avx512bf16", "avx512", "avx2", "generic")  # the kernels that give the same bits


def cpu_flag(flag: str) -> bool:
    try:
        return f" {flag}" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


@pytest.fixture(scope="module")
def k() -> KernelShim:
    shim = load_shim()
    shim.set_bf16(True)
    yield shim
    shim.set_bf16(False)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def bf(t):
    """t rounded to bf16 (torch's conversion: nearest even), back in t's dtype."""
    return t.to(torch.bfloat16).to(t.dtype)


def both(fn, *arrays):
    """fn on the inputs as float32 and as float64 tensors (exact widening)."""
    def conv(dt):
        return [torch.from_numpy(np.array(a, dtype=np.float32)).to(dt) if isinstance(a, np.ndarray) else a
                for a in arrays]
    r32, r64 = fn(*conv(torch.float32)), fn(*conv(torch.float64))
    if isinstance(r32, tuple):
        return tuple(x.numpy() for x in r32), tuple(x.numpy() for x in r64)
    return r32.numpy(), r64.numpy()


def check_kernel(name, c, r32, r64):
    """The policy's three attributed measures (RMS, worst element, bulk) against torch's
    fp32 op on the same bf16-rounded operands."""
    row = compare(name, c, r32, r64)
    assert row["passed"], format_rows([row]) + f"\n  attributed ratio {row['attributed_ratio']:.3g}"
    return row


def check_policy(name, c, r32, r64):
    row = compare(name, c, r32, r64)
    assert row["passed"], format_rows([row])
    return row


def check_flip_bound(name, c, r64, bound):
    """|c - r64| <= bound elementwise: for outputs of GEMMs whose operands are bf16
    roundings of COMPUTED values (P, dS), which elements sit on a rounding boundary is
    chance between any two evaluations (one fp32 ulp apart is enough), and one such flip
    moves that operand by a bf16 ulp, 2^-8 of its magnitude at most. So the bound is the
    a-priori one of the scheme: 2^-8 |X| @ |Y| for every rounded computed operand X, plus
    fp32 accumulation (gamma). A wrong stride, block offset or missing term breaks it on
    the elements it touches (unlike rounding, which it covers by construction)."""
    err = np.abs(np.asarray(c, dtype=np.float64) - np.asarray(r64, dtype=np.float64))
    ratio = err / np.maximum(bound, 1e-300)
    i = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
    assert float(ratio[i]) <= 1.0, f"{name}: |c - fp64| = {err[i]:.3g} at {tuple(int(x) for x in i)} exceeds the bf16 bound {bound[i]:.3g}"
    return float(ratio.max())


def test_native_kernel_is_the_dot_product_instruction_where_the_cpu_has_it(k):
    with gemm_isa("native"):
        native = k.gemm_bf16_isa()
    if cpu_flag("avx512_bf16"):  # amx where the OS grants the tile state too
        assert native in (("amx", "avx512bf16") if cpu_flag("amx_bf16") else ("avx512bf16",))
    assert native in ("amx", "avx512bf16", "avx512", "avx2", "generic")
    with gemm_isa("avx512bf16"):
        assert k.gemm_bf16_isa() != "amx"
    with gemm_isa("generic"):
        assert k.gemm_bf16_isa() == "generic"
    with gemm_isa("avx512"):
        assert k.gemm_bf16_isa() in ("avx512", "avx2", "generic")


gemm_dims = st.tuples(st.integers(1, 300), st.integers(1, 600), st.integers(1, 600))


@SETTINGS
@given(dims=gemm_dims, ta=st.booleans(), tb=st.booleans(), beta=st.sampled_from([0.0, 1.0]),
       pad=st.integers(0, 3), shared=st.booleans(), seed=st.integers(0, 2**31 - 1))
@example(dims=(289, 513, 257), ta=False, tb=True, beta=1.0, pad=3, shared=True, seed=1)
@example(dims=(1, 1, 1), ta=True, tb=True, beta=0.0, pad=0, shared=False, seed=2)
@example(dims=(64, 2304, 768), ta=False, tb=True, beta=0.0, pad=0, shared=True, seed=3)
def test_gemm_bf16_every_kernel_same_bits_and_right(k, dims, ta, tb, beta, pad, shared, seed):
    M, N, K = dims
    rng = np.random.default_rng(seed)
    a_rows, a_cols = (K, M) if ta else (M, K)
    b_rows, b_cols = (N, K) if tb else (K, N)
    lda, ldb, ldc = a_cols + pad, b_cols + pad, N + pad
    A = rand(rng, (a_rows, lda))
    B = rand(rng, (b_rows, ldb))
    C0 = rand(rng, (M, ldc))
    results = {}
    for isa in ISAS16:
        with gemm_isa(isa):
            name = k.gemm_bf16_isa()
            C = C0.copy()
            if beta == 0.0:
                C[:, :N] = np.nan  # beta 0 must not read C
            k.sgemm(ta, tb, M, N, K, A.reshape(-1), lda, B.reshape(-1), ldb, beta, C.reshape(-1), ldc,
                    nt=NT, use_shared=shared)
            results[name] = C
    first = next(v for n, v in results.items() if n in BITWISE)
    for name, C in results.items():
        if name in BITWISE:
            assert np.array_equal(C.view(np.uint32), first.view(np.uint32)), f"kernel {name} differs"
        np.testing.assert_array_equal(C[:, N:], C0[:, N:])  # padding columns untouched
    opA = A[:, :a_cols].T if ta else A[:, :a_cols]
    opB = B[:, :b_cols].T if tb else B[:, :b_cols]
    r32, r64 = both(lambda a, b, c: bf(a) @ bf(b) + beta * c, np.ascontiguousarray(opA), np.ascontiguousarray(opB),
                    np.ascontiguousarray(C0[:, :N]))
    for name, C in results.items():
        check_kernel(f"C ({name})", C[:, :N], r32, r64)
    if K >= 16:  # the rounding really happened: fp32 products of the unrounded operands are far off
        exact = opA.astype(np.float64) @ opB.astype(np.float64) + beta * C0[:, :N]
        rm = lambda x: float(np.sqrt(np.mean(np.square(x))))  # noqa: E731
        assert rm(first[:, :N] - exact) > 20 * rm(r64 - r32) + 1e-30


@pytest.mark.parametrize("isa", ["native", "generic"])
@SETTINGS
@given(N=st.integers(1, 80), IC=st.integers(1, 400), OC=st.integers(1, 500), bias=st.booleans(),
       seed=st.integers(0, 2**31 - 1))
@example(N=64, IC=768, OC=2304, bias=True, seed=4)  # a d12 layer's qkv
def test_matmul_bf16_forward_backward(k, isa, N, IC, OC, bias, seed):
    rng = np.random.default_rng(seed)
    x = rand(rng, (N, IC))
    w = rand(rng, (OC, IC), 1 / math.sqrt(IC))
    b = rand(rng, (OC,), 0.1) if bias else None
    dout = rand(rng, (N, OC))
    dw0, db0 = rand(rng, (OC, IC)), rand(rng, (OC,))
    with gemm_isa(isa):
        out = k.matmul_forward(x, w, b, nt=NT, use_shared=True)
        dinp = np.full((N, IC), np.nan, dtype=np.float32)
        dw, db = dw0.copy(), (db0.copy() if bias else None)
        k.matmul_backward(dinp, dw, db, dout, x, w, nt=NT, use_shared=True)
    bb = b if bias else np.zeros(OC, np.float32)
    r32, r64 = both(lambda x_, w_, b_: bf(x_) @ bf(w_).T + b_, x, w, bb)
    check_kernel("out", out, r32, r64)
    (i32, w32, b32), (i64, w64, b64) = both(
        lambda d, x_, w_, dw_, db_: (bf(d) @ bf(w_), dw_ + bf(d).T @ bf(x_), db_ + d.sum(0)), dout, x, w, dw0, db0)
    check_kernel("dinp", dinp, i32, i64)
    check_kernel("dweight", dw, w32, w64)
    if bias:  # the bias gradient is a plain fp32 column sum, as in fp32 precision
        check_kernel("dbias", db, b32, b64)


def _attention_bf16(qkv, dout, NH, bound=False):
    """Causal attention with the C core's bf16 scheme: every GEMM operand rounded to bf16,
    softmax and its backward in the working precision. Returns (att, y, dqkv); bound=True
    (float64 inputs): instead of y and dqkv, their elementwise bf16 flip bounds
    (check_flip_bound)."""
    B, T, C3 = qkv.shape
    C = C3 // 3
    hs = C // NH
    q, kk, v = (t.reshape(B, T, NH, hs).transpose(1, 2) for t in qkv.split(C, dim=2))
    scale = 1.0 / math.sqrt(hs)
    s = (bf(q) @ bf(kk).transpose(-1, -2)) * scale
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    p = torch.softmax(s.masked_fill(~mask, float("-inf")), dim=-1)
    y = bf(p) @ bf(v)
    do = dout.reshape(B, T, NH, hs).transpose(1, 2)
    dv = bf(p).transpose(-1, -2) @ bf(do)
    dp = bf(do) @ bf(v).transpose(-1, -2)
    ds = p * (dp - (p * dp).sum(-1, keepdim=True)) * scale
    dq = bf(ds) @ bf(kk)
    dk = bf(ds).transpose(-1, -2) @ bf(q)
    merge = lambda t: t.transpose(1, 2).reshape(B, T, C)  # noqa: E731
    if bound:
        # flips of bf(P) and bf(dS) (2^-8 relative each), fp32 sums of T terms (gamma(T),
        # doubled for the two sides), and the fp32 noise of dS itself carried into bf16
        u, g = 2.0**-8, 2 * gamma(T + 1)
        ap, ads, av, ado, ak, aq = (t.abs() for t in (bf(p), bf(ds), bf(v), bf(do), bf(kk), bf(q)))
        yb = (u + g) * (ap @ av)
        dvb = (u + g) * (ap.transpose(-1, -2) @ ado)
        dsb = ds.abs() * u + ads * 4 * gamma(T + hs + 2)
        dqb = dsb @ ak + g * (ads @ ak)
        dkb = dsb.transpose(-1, -2) @ aq + g * (ads.transpose(-1, -2) @ aq)
        return p, merge(yb), torch.cat([merge(dqb), merge(dkb), merge(dvb)], dim=2)
    return p, merge(y), torch.cat([merge(dq), merge(dk), merge(dv)], dim=2)


@pytest.mark.parametrize("isa", ["native", "generic"])
@SETTINGS
@given(B=st.integers(1, 2), T=st.integers(1, 150), NH=st.integers(1, 3), hs=st.integers(1, 40),
       seed=st.integers(0, 2**31 - 1))
@example(B=1, T=129, NH=2, hs=64, seed=5)  # three query blocks, GPT-2 head size
def test_attention_bf16_forward_backward(k, isa, B, T, NH, hs, seed):
    rng = np.random.default_rng(seed)
    C = NH * hs
    qkv = rand(rng, (B, T, 3 * C))
    dout = rand(rng, (B, T, C))
    with gemm_isa(isa):
        y, att = k.attention_forward(qkv, NH, nt=NT)
        dqkv = k.attention_backward(dout, qkv, att, NH, nt=NT)
    (a32, y32, g32), (a64, y64, g64) = both(lambda q, d: _attention_bf16(q, d, NH), qkv, dout)
    # the probabilities are fp32 softmaxes of bf16-operand scores; P is rounded again before
    # P V, where one element on either side of a bf16 rounding boundary moves by 2^-9: the
    # whole-tensor policy (RMS attribution), not the per-element kernel test, judges y, dqkv
    check_kernel("att", att, a32, a64)
    _, yb, gb = both(lambda q, d: _attention_bf16(q, d, NH, bound=True), qkv, dout)[1]
    check_flip_bound("atty", y, y64, yb)
    check_flip_bound("dqkv", dqkv, g64, gb)


def _train_checksum(steps=2):
    cfg = pyllmc.GPTConfig(32, 101, 128, 2, 2, 64)
    rng = np.random.default_rng(0)
    h = hashlib.sha256()
    with pyllmc.Model.from_config(cfg, max_batch=2, max_seq=32, seed=3, threads=2, precision="bf16") as m:
        for t in range(1, steps + 1):
            x = rng.integers(0, 101, (2, 32)).astype(np.int32)
            y = rng.integers(0, 101, (2, 32)).astype(np.int32)
            m.forward(x, y)
            m.backward(accumulate=False)
            m.adamw_step(1e-3, t=t)
            for kind in ("params", "grads", "acts"):
                h.update(np.ascontiguousarray(m.flat(kind)).tobytes())
    return h.hexdigest()


def test_bf16_training_steps_identical_on_every_kernel(k):
    sums = {}
    for isa in BITWISE:
        with gemm_isa(isa):
            sums[k.gemm_bf16_isa()] = _train_checksum()
    assert len(set(sums.values())) == 1, sums


def test_bf16_differs_from_fp32_and_is_close():
    cfg = pyllmc.GPTConfig(32, 101, 128, 2, 2, 64)
    x = np.arange(64, dtype=np.int32).reshape(2, 32) % 101
    out = {}
    for prec in ("fp32", "bf16"):
        with pyllmc.Model.from_config(cfg, max_batch=2, seed=1, threads=1, precision=prec) as m:
            m.forward(x, x)
            out[prec] = m.acts["logits"].copy()
    d = np.abs(out["bf16"] - out["fp32"])
    scale = np.abs(out["fp32"]).max()
    assert d.max() > 0 and d.max() < 0.05 * scale


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_bf16_step_on_a_cpu_without_avx512_dispatches_to_a_portable_kernel():
    """valgrind's virtual CPU offers no AVX-512 (valgrind 3.19): a bf16 training step under it,
    with the dispatch left to the core, must detect neither AVX512_BF16 nor AMX and run
    through a portable kernel; an AVX-512 or AMX instruction would stop valgrind with SIGILL."""
    from pyllmc.bench import cdriver

    try:
        exe = cdriver.build("bench_step", cdriver.find_source(str(Path(__file__).resolve().parents[1])))
    except cdriver.DriverError as e:
        pytest.skip(f"cannot build the C driver: {e}")
    env = {k: v for k, v in os.environ.items() if k != "LLMC_GEMM_ISA"}
    r = subprocess.run(["valgrind", "--tool=none", "-q", str(exe), "1", "64", "2", "128", "128", "32", "2", "32",
                        "1", "0", "1", "bf16"], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    loss = json.loads(r.stdout)["losses"][0]
    assert math.isfinite(loss) and 4.0 < loss < 6.0  # ln(128) = 4.85 at initialisation
