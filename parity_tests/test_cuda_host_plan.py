"""The CUDA backend's host-side planning (core_c/cuda/host_plan.c), on any machine.

host_plan.c is plain C: this file compiles it with the C compiler into a small library and
checks
- the GEMM split: every piece of every plan keeps each operand within the span limit and
  every size within int32 (what a 32-bit cuBLAS call can address), and executing the pieces
  (numpy, float64) gives the whole GEMM, beta and the K split included. Small limits force
  splits along M, N, K and the batch on small matrices; GPT-2's classifier GEMMs at B=64,
  T=1024 (3.3e9-element logits) are planned at the real limit;
- the mapping of each piece to cuBLAS's column-major arguments: executed through an emulation
  of cublasGemmEx / cublasGemmStridedBatchedEx's documented semantics (column-major operands,
  op(), leading-dimension rules), every plan computes the row-major GEMM;
- the token order of the embedding backward: a stable sort of positions by token.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "core_c" / "cuda" / "host_plan.c"
I32 = 2**31 - 1


def _find_cc():
    for cand in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cand and shutil.which(cand):
            return shutil.which(cand)
    return None


CC = _find_cc()
pytestmark = pytest.mark.skipif(CC is None, reason="no C compiler ($CC, cc, gcc, clang) to build host_plan.c")

CDEF = """
typedef struct { int tA, tB; int64_t M, N, K; int64_t lda, ldb, ldc; int64_t sA, sB, sC; int64_t batch; } llmc_gemm_shape;
typedef struct { int64_t mc, nc, kc, bc; int64_t nm, nn, nk, nb; } llmc_gemm_split;
typedef struct { int64_t offA, offB, offC; int64_t m, n, k, batch; int first_k; } llmc_gemm_piece;
int64_t llmc_gemm_span_a(const llmc_gemm_shape *s, int64_t m, int64_t k, int64_t batch);
int64_t llmc_gemm_span_b(const llmc_gemm_shape *s, int64_t k, int64_t n, int64_t batch);
int64_t llmc_gemm_span_c(const llmc_gemm_shape *s, int64_t m, int64_t n, int64_t batch);
int llmc_gemm_plan(const llmc_gemm_shape *s, int64_t limit, llmc_gemm_split *out);
int64_t llmc_gemm_num_pieces(const llmc_gemm_split *p);
void llmc_gemm_piece_at(const llmc_gemm_shape *s, const llmc_gemm_split *p, int64_t i, llmc_gemm_piece *out);
typedef struct { int first_trans, second_trans; int64_t m, n, k; int64_t first_off, second_off, c_off; int64_t first_ld, second_ld, ldc; int64_t first_stride, second_stride, c_stride; int64_t batch; } llmc_cublas_call;
void llmc_gemm_cublas_call(const llmc_gemm_shape *s, const llmc_gemm_piece *p, llmc_cublas_call *out);
int32_t llmc_token_segments(const int32_t *inp, int32_t n, int32_t V, int32_t *counts, int32_t *order, int32_t *rows, int32_t *seg);
"""


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    from cffi import FFI

    out = tmp_path_factory.mktemp("host_plan") / "host_plan.so"
    cmd = [CC, "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-o", str(out), str(SRC)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    assert p.returncode == 0, f"{' '.join(cmd)}\n{p.stderr}"
    ffi = FFI()
    ffi.cdef(CDEF)
    return ffi, ffi.dlopen(str(out))


def make_shape(ffi, tA, tB, M, N, K, lda, ldb, ldc, sA=0, sB=0, sC=0, batch=1):
    s = ffi.new("llmc_gemm_shape *")
    s.tA, s.tB, s.M, s.N, s.K = tA, tB, M, N, K
    s.lda, s.ldb, s.ldc, s.sA, s.sB, s.sC, s.batch = lda, ldb, ldc, sA, sB, sC, batch
    return s


def last_index_plus_one(rows, width, ld, batch, stride):
    """Elements spanned from the base: index of the last element touched + 1 (independent of
    host_plan.c's own span functions)."""
    return (batch - 1) * stride + (rows - 1) * ld + (width - 1) + 1


def pieces_of(plan, shape, limit):
    ffi, lib = plan
    split = ffi.new("llmc_gemm_split *")
    assert lib.llmc_gemm_plan(shape, limit, split) == 1
    out = []
    pc = ffi.new("llmc_gemm_piece *")
    for i in range(lib.llmc_gemm_num_pieces(split)):
        lib.llmc_gemm_piece_at(shape, split, i, pc)
        out.append((pc.offA, pc.offB, pc.offC, pc.m, pc.n, pc.k, pc.batch, pc.first_k))
    return split, out


def check_piece_bounds(shape, pieces, limit):
    s = shape
    for _offA, _offB, _offC, m, n, k, b, _ in pieces:
        assert 1 <= min(m, n, k, b) and max(m, n, k, b) <= I32
        a_span = last_index_plus_one(k, m, s.lda, b, s.sA) if s.tA else last_index_plus_one(m, k, s.lda, b, s.sA)
        b_span = last_index_plus_one(n, k, s.ldb, b, s.sB) if s.tB else last_index_plus_one(k, n, s.ldb, b, s.sB)
        c_span = last_index_plus_one(m, n, s.ldc, b, s.sC)
        assert max(a_span, b_span, c_span) <= limit, (a_span, b_span, c_span, limit)


def view(flat, off, rows, cols, ld, batch, stride):
    """(batch, rows, cols) strided view of a flat float64 array at element offset off."""
    it = flat.itemsize
    return np.lib.stride_tricks.as_strided(flat[off:], (batch, rows, cols), (stride * it, ld * it, it), writeable=True)


def execute(shape, pieces, A, B, C, alpha, beta):
    s = shape
    for offA, offB, offC, m, n, k, b, first_k in pieces:
        a = view(A, offA, k, m, s.lda, b, s.sA).transpose(0, 2, 1) if s.tA else view(A, offA, m, k, s.lda, b, s.sA)
        bb = view(B, offB, n, k, s.ldb, b, s.sB).transpose(0, 2, 1) if s.tB else view(B, offB, k, n, s.ldb, b, s.sB)
        c = view(C, offC, m, n, s.ldc, b, s.sC)
        c[...] = alpha * (a @ bb) + (beta if first_k else 1.0) * c


def colmajor(flat, off, rows, cols, ld, it):
    return np.lib.stride_tricks.as_strided(flat[off:], (rows, cols), (it, ld * it), writeable=True)


def emulated_cublas_gemm(c, first, second, C, alpha, beta):
    """cublasGemmStridedBatchedEx as documented: per batch entry b, column-major
    C (m x n, ldc) = alpha op(A) (m x k) op(B) (k x n) + beta C, A = first (lda), B = second
    (ldb), op(X) = X^T when its trans flag is set; X is stored (rows x cols) with ld >= rows,
    and cuBLAS refuses (CUBLAS_STATUS_INVALID_VALUE) sizes or leading dimensions it cannot
    address; as the real one, it reads and writes only what those describe."""
    m, n, k = c.m, c.n, c.k
    a_rows, a_cols = (k, m) if c.first_trans else (m, k)
    b_rows, b_cols = (n, k) if c.second_trans else (k, n)
    for v in (m, n, k, c.batch, c.first_ld, c.second_ld, c.ldc):
        assert 1 <= v <= I32, "cuBLAS would refuse: a size beyond int32"
    assert c.first_ld >= a_rows and c.second_ld >= b_rows and c.ldc >= m, "cuBLAS would refuse: lda/ldb/ldc too small"
    it = C.itemsize
    for b in range(c.batch):
        a = colmajor(first, c.first_off + b * c.first_stride, a_rows, a_cols, c.first_ld, it)
        bb = colmajor(second, c.second_off + b * c.second_stride, b_rows, b_cols, c.second_ld, it)
        cc = colmajor(C, c.c_off + b * c.c_stride, m, n, c.ldc, it)
        cc[...] = alpha * ((a.T if c.first_trans else a) @ (bb.T if c.second_trans else bb)) + beta * cc


@settings(max_examples=150, deadline=None)
@given(
    tA=st.booleans(), tB=st.booleans(), M=st.integers(1, 12), N=st.integers(1, 12), K=st.integers(1, 12),
    pads=st.tuples(st.integers(0, 5), st.integers(0, 5), st.integers(0, 5)), batch=st.integers(1, 4),
    limit=st.integers(1, 1500), beta=st.sampled_from([0.0, 1.0]), seed=st.integers(0, 2**31),
)  # fmt: skip
def test_gemm_pieces_stay_within_the_limit_and_compose_the_gemm(plan, tA, tB, M, N, K, pads, batch, limit, beta, seed):
    ffi, lib = plan
    lda = (M if tA else K) + pads[0]
    ldb = (K if tB else N) + pads[1]
    ldc = N + pads[2]
    sA = (K if tA else M) * lda + 3
    sB = (N if tB else K) * ldb + 1
    sC = M * ldc + 2
    shape = make_shape(ffi, tA, tB, M, N, K, lda, ldb, ldc, sA, sB, sC, batch)
    split, pieces = pieces_of(plan, shape, limit)
    check_piece_bounds(shape, pieces, limit)
    if limit >= max(lib.llmc_gemm_span_a(shape, M, K, batch), lib.llmc_gemm_span_b(shape, K, N, batch),
                    lib.llmc_gemm_span_c(shape, M, N, batch)):  # fmt: skip
        assert len(pieces) == 1  # no split when the whole call fits
    rng = np.random.default_rng(seed)
    A, B = rng.standard_normal(sA * batch + 8), rng.standard_normal(sB * batch + 8)
    C0 = rng.standard_normal(sC * batch + 8)
    alpha = 0.75
    C = C0.copy()
    execute(shape, pieces, A, B, C, alpha, beta)
    want = C0.copy()
    execute(shape, [(0, 0, 0, M, N, K, batch, 1)], A, B, want, alpha, beta)  # the unsplit GEMM
    np.testing.assert_allclose(C, want, rtol=1e-12, atol=1e-12)
    # elements of C outside the matrices (padding, gaps between batch entries) untouched
    mask = np.ones_like(C0, bool)
    for b in range(batch):
        for r in range(M):
            mask[b * sC + r * ldc : b * sC + r * ldc + N] = False
    assert np.array_equal(C[mask], C0[mask])


@settings(max_examples=150, deadline=None)
@given(
    tA=st.booleans(), tB=st.booleans(), M=st.integers(1, 12), N=st.integers(1, 12), K=st.integers(1, 12),
    pads=st.tuples(st.integers(0, 5), st.integers(0, 5), st.integers(0, 5)), batch=st.integers(1, 4),
    limit=st.integers(1, 1500), beta=st.sampled_from([0.0, 1.0]), seed=st.integers(0, 2**31),
)  # fmt: skip
def test_cublas_calls_of_the_pieces_compute_the_row_major_gemm(plan, tA, tB, M, N, K, pads, batch, limit, beta, seed):
    """What backend.cu's gemm() issues: each piece through llmc_gemm_cublas_call, as cuBLAS
    would execute it, gives row-major C = alpha op(A) op(B) + beta C."""
    ffi, lib = plan
    lda, ldb, ldc = (M if tA else K) + pads[0], (K if tB else N) + pads[1], N + pads[2]
    sA, sB, sC = (K if tA else M) * lda + 3, (N if tB else K) * ldb + 1, M * ldc + 2
    shape = make_shape(ffi, tA, tB, M, N, K, lda, ldb, ldc, sA, sB, sC, batch)
    split = ffi.new("llmc_gemm_split *")
    assert lib.llmc_gemm_plan(shape, limit, split) == 1
    rng = np.random.default_rng(seed)
    A, B = rng.standard_normal(sA * batch + 8), rng.standard_normal(sB * batch + 8)
    C0 = rng.standard_normal(sC * batch + 8)
    alpha = -1.25
    C = C0.copy()
    pc, call = ffi.new("llmc_gemm_piece *"), ffi.new("llmc_cublas_call *")
    for i in range(lib.llmc_gemm_num_pieces(split)):
        lib.llmc_gemm_piece_at(shape, split, i, pc)
        lib.llmc_gemm_cublas_call(shape, pc, call)
        emulated_cublas_gemm(call, B, A, C, alpha, beta if pc.first_k else 1.0)
    want = C0.copy()
    for b in range(batch):
        a = view(A, b * sA, K, M, lda, 1, 0)[0].T if tA else view(A, b * sA, M, K, lda, 1, 0)[0]
        bb = view(B, b * sB, N, K, ldb, 1, 0)[0].T if tB else view(B, b * sB, K, N, ldb, 1, 0)[0]
        c = view(want, b * sC, M, N, ldc, 1, 0)[0]
        c[...] = alpha * (a @ bb) + beta * c
    np.testing.assert_allclose(C, want, rtol=1e-12, atol=1e-12)


# GPT-2 124M at B = 64, T = 1024: BT = 65536 tokens, Vp = 50304, C = 768
BT, VP, CH = 65536, 50304, 768
CLASSIFIER = {
    # logits (BT, Vp) = lnf (BT, C) @ wte^T
    "forward": dict(tA=0, tB=1, M=BT, N=VP, K=CH, lda=CH, ldb=CH, ldc=VP),
    # d lnf (BT, C) = d logits (BT, Vp) @ wte
    "backward input": dict(tA=0, tB=0, M=BT, N=CH, K=VP, lda=VP, ldb=CH, ldc=CH),
    # d wte (Vp, C) += d logits^T (Vp, BT) @ lnf
    "backward weight": dict(tA=1, tB=0, M=VP, N=CH, K=BT, lda=VP, ldb=CH, ldc=CH),
}


@pytest.mark.parametrize("which", list(CLASSIFIER))
def test_the_classifier_at_b64_t1024_is_split_into_32_bit_calls(plan, which):
    ffi, lib = plan
    shape = make_shape(ffi, **CLASSIFIER[which])
    limit = 2**31 - 1
    split, pieces = pieces_of(plan, shape, limit)
    assert len(pieces) >= 2  # 3.3e9 elements in one operand: one call cannot address it
    check_piece_bounds(shape, pieces, limit)
    # the pieces tile the product exactly once: volume adds up, and each K range is complete
    assert sum(m * n * k * b for *_, m, n, k, b, _ in pieces) == shape.M * shape.N * shape.K
    assert sum(1 for p in pieces if p[-1]) * split.nk == len(pieces)
    # and at B = 16 nothing is split
    small = make_shape(ffi, **{**CLASSIFIER[which], **{k: v // 4 for k, v in CLASSIFIER[which].items() if v == BT}})
    assert len(pieces_of(plan, small, limit)[1]) == 1


def test_attention_batched_gemm_is_split_over_the_batch(plan):
    """(B*NH) score matrices of T x T: 64 * 25 heads * 1024^2 = 1.7e9 fits; at T = 2048,
    B = 32, NH = 16 the batch spans 2.1e9 and is split over the batch, whole matrices each."""
    ffi, _ = plan
    T, hs, BNH = 2048, 64, 32 * 16
    shape = make_shape(ffi, 0, 1, T, T, hs, hs, hs, T, T * hs, T * hs, T * T, BNH)
    split, pieces = pieces_of(plan, shape, 2**31 - 1)
    assert split.nb >= 2 and split.nm == split.nn == split.nk == 1
    check_piece_bounds(shape, pieces, 2**31 - 1)


def test_impossible_or_invalid_shapes_are_refused(plan):
    ffi, lib = plan
    split = ffi.new("llmc_gemm_split *")
    assert lib.llmc_gemm_plan(make_shape(ffi, 0, 0, 0, 4, 4, 4, 4, 4), 100, split) == 0  # empty
    assert lib.llmc_gemm_plan(make_shape(ffi, 0, 0, 4, 4, 4, 2**31, 4, 4), 2**40, split) == 0  # ld > int32
    assert lib.llmc_gemm_plan(make_shape(ffi, 0, 0, 4, 4, 4, 4, 4, 4), 0, split) == 0  # no room


@settings(max_examples=100, deadline=None)
@given(tokens=st.lists(st.integers(0, 30), min_size=1, max_size=300))
def test_token_segments_are_a_stable_sort_by_token(plan, tokens):
    ffi, lib = plan
    V = 31
    inp = np.array(tokens, np.int32)
    n = inp.size
    counts, order = np.zeros(V + 1, np.int32), np.full(n, -1, np.int32)
    rows, seg = np.full(n, -1, np.int32), np.full(n + 1, -1, np.int32)
    p = lambda a: ffi.from_buffer("int32_t[]", a)  # noqa: E731
    U = lib.llmc_token_segments(p(inp), n, V, p(counts), p(order), p(rows), p(seg))
    uniq = np.unique(inp)
    assert U == uniq.size
    np.testing.assert_array_equal(order, np.argsort(inp, kind="stable"))
    np.testing.assert_array_equal(rows[:U], uniq)
    bounds = np.searchsorted(inp[order], uniq)
    np.testing.assert_array_equal(seg[:U], bounds)
    assert seg[U] == n


def test_token_segments_refuse_out_of_range_tokens(plan):
    ffi, lib = plan
    inp = np.array([1, 2, 40], np.int32)
    bufs = [np.zeros(41, np.int32)] + [np.zeros(4, np.int32) for _ in range(3)]
    p = lambda a: ffi.from_buffer("int32_t[]", a)  # noqa: E731
    assert lib.llmc_token_segments(p(inp), 3, 40, *map(p, bufs)) == -1
