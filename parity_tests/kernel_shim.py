"""Each C kernel on its own, from Python: a loader for the test-only shared library
`_kernel_shim` (core_c/tests/shim/kernel_shim.c) and numpy wrappers that allocate outputs,
check shapes and pass contiguous buffers. parity_tests/test_kernels.py compares every kernel
with the matching torch op through these.

The shim is a test artefact, never part of the package: it is built from the checkout's
C sources on first use, by CMake (option LLMC_KERNEL_SHIM, off by default) into
`build-shim/` at the repository root, under a file lock (CMake rebuilds what changed, so it
always holds the current kernels). $PYLLMC_KERNEL_SHIM names a prebuilt one instead.

The kernels' signatures follow core_c/src/internal.h and change with it.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

#: must equal SHIM_ABI in kernel_shim.c (a stale shim is refused)
SHIM_ABI = 4

#: the shim's exported functions, as in kernel_shim.c (the tests compare the two)
CDEF = """
int llmc_test_shim_abi(void);
const char *llmc_test_gemm_isa(void);
const char *llmc_test_gemm_bf16_isa(void);
void llmc_test_set_bf16(int on);
int llmc_test_sgemm(int transA, int transB, int M, int N, int K, const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc, int nt, int use_shared);
void llmc_test_encoder_forward(float *out, const int32_t *inp, const float *wte, const float *wpe, int B, int T, int C, int nt);
void llmc_test_encoder_backward(float *dwte, float *dwpe, const float *dout, const int32_t *inp, int B, int T, int C, int nt);
void llmc_test_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight, const float *bias, int N, int C, int nt);
void llmc_test_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp, const float *weight, const float *mean, const float *rstd, int N, int C, int nt);
int llmc_test_matmul_forward(float *out, const float *inp, const float *weight, const float *bias, int N, int IC, int OC, int nt, int use_shared);
int llmc_test_matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp, const float *weight, int N, int IC, int OC, int nt, int use_shared, int accumulate);
int llmc_test_attention_forward(float *out, float *att, const float *qkv, int B, int T, int C, int NH, int nt);
int llmc_test_attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att, int B, int T, int C, int NH, int nt);
void llmc_test_gelu_forward(float *out, const float *inp, int64_t N, int nt);
void llmc_test_gelu_backward(float *dinp, const float *inp, const float *dout, int64_t N, int nt);
void llmc_test_residual_forward(float *out, const float *a, const float *b, int64_t N, int nt);
float llmc_test_crossentropy_forward(float *probs, float *losses, const float *logits, const int32_t *targets, int N, int V, int Vp, int nt);
void llmc_test_crossentropy_backward(float *dlogits, const float *probs, const int32_t *targets, float dloss, int N, int V, int Vp, int nt);
void llmc_test_adamw(float *param, const float *grad, float *m, float *v, int64_t n, double lr, double beta1, double beta2, double eps, double weight_decay, int t, float grad_scale, int nt);
"""


def _shim_names() -> List[str]:
    if sys.platform == "win32":
        return ["_kernel_shim.dll"]
    if sys.platform == "darwin":
        return ["_kernel_shim.dylib", "_kernel_shim.so"]
    return ["_kernel_shim.so"]


REPO = Path(__file__).resolve().parents[1]
#: where the tests build the shim (git-ignored, as every build-*/)
BUILD_DIR = REPO / "build-shim"


def build_shim(build_dir: Path = BUILD_DIR) -> Path:
    """Configure (once) and build the shim with CMake; the path of the library."""
    cmake = shutil.which("cmake")
    if not cmake:
        raise ImportError("cmake is not installed: it builds the kernel test shim (core_c/tests/shim)")
    build_dir.mkdir(parents=True, exist_ok=True)
    with open(build_dir / ".lock", "w") as lock:
        if sys.platform != "win32":
            import fcntl

            fcntl.flock(lock, fcntl.LOCK_EX)  # pytest processes sharing the checkout
        steps = []
        if not (build_dir / "CMakeCache.txt").is_file():
            generator = ["-G", "Ninja"] if shutil.which("ninja") else []
            steps.append([cmake, "-S", str(REPO / "core_c"), "-B", str(build_dir), *generator,
                          "-DCMAKE_BUILD_TYPE=Release", "-DLLMC_KERNEL_SHIM=ON", "-DLLMC_CUDA=OFF"])
        steps.append([cmake, "--build", str(build_dir), "--target", "llmc_kernel_shim"])
        for cmd in steps:
            p = subprocess.run(cmd, capture_output=True, text=True)
            if p.returncode != 0:
                raise ImportError(f"building the kernel test shim failed ({' '.join(cmd[:3])} ...):\n"
                                  + (p.stdout + p.stderr)[-2000:])
    for n in _shim_names():
        if (build_dir / n).is_file():
            return build_dir / n
    raise ImportError(f"CMake built llmc_kernel_shim but no {'/'.join(_shim_names())} is in {build_dir}")


def find_shim() -> Path:
    env = os.environ.get("PYLLMC_KERNEL_SHIM")
    if env:
        if not Path(env).is_file():
            raise ImportError(f"PYLLMC_KERNEL_SHIM={env} is not a file")
        return Path(env)
    return build_shim()


def _f32(a, name: str, shape: Optional[Tuple[int, ...]] = None) -> np.ndarray:
    arr = np.ascontiguousarray(a, dtype=np.float32)
    if shape is not None and arr.shape != tuple(shape):
        raise ValueError(f"{name}: shape {arr.shape}, expected {tuple(shape)}")
    return arr


def _i32(a, name: str) -> np.ndarray:
    arr = np.ascontiguousarray(a, dtype=np.int32)
    return arr


class KernelShim:
    """The C kernels as numpy functions. Outputs are new arrays; the accumulating kernels
    (`+=` in internal.h) take the arrays to accumulate into and update them in place."""

    def __init__(self, path: Optional[Path] = None):
        from cffi import FFI

        self.path = Path(path) if path else find_shim()
        self.ffi = FFI()
        self.ffi.cdef(CDEF)
        self.lib = self.ffi.dlopen(str(self.path))
        got = int(self.lib.llmc_test_shim_abi())
        if got != SHIM_ABI:
            raise ImportError(f"{self.path}: kernel shim ABI {got}, this loader expects {SHIM_ABI} (stale build?)")

    def _p(self, a: np.ndarray, ctype: str = "float[]"):
        if not a.flags.c_contiguous:
            raise ValueError("buffers must be C-contiguous")
        return self.ffi.from_buffer(ctype, a)

    def _null_or(self, a: Optional[np.ndarray]):
        return self.ffi.NULL if a is None else self._p(a)

    @staticmethod
    def _check(status: int, what: str) -> None:
        if status != 0:
            raise MemoryError(f"{what}: the shim could not allocate its workspace")

    def gemm_isa(self) -> str:
        return self.ffi.string(self.lib.llmc_test_gemm_isa()).decode()

    def gemm_bf16_isa(self) -> str:
        """The bf16 GEMM's kernel: avx512bf16 (vdpbf16ps), or avx512, avx2, generic (fp32
        emulation of the same arithmetic)."""
        return self.ffi.string(self.lib.llmc_test_gemm_bf16_isa()).decode()

    def set_bf16(self, on: bool) -> None:
        """Run sgemm, matmul and attention in bf16 precision from now on (False: fp32)."""
        self.lib.llmc_test_set_bf16(int(bool(on)))

    # -------------------------------------------------------------- GEMM and matmul
    def sgemm(self, transA: bool, transB: bool, M: int, N: int, K: int, A: np.ndarray, lda: int,
              B: np.ndarray, ldb: int, beta: float, C: np.ndarray, ldc: int, nt: int = 1,
              use_shared: bool = False) -> None:
        """C (M, N; row stride ldc) = beta * C + op(A) @ op(B), in place on C (float32,
        contiguous). A and B are flat float32 buffers read with their leading dimensions.
        In bf16 precision (set_bf16) the GEMM rounds A and B to bf16."""
        for name, arr, rows, ld, cols in (("A", A, K if transA else M, lda, M if transA else K),
                                          ("B", B, N if transB else K, ldb, K if transB else N),
                                          ("C", C, M, ldc, N)):
            if arr.dtype != np.float32 or not arr.flags.c_contiguous:
                raise ValueError(f"{name} must be contiguous float32")
            if ld < cols or (rows > 0 and arr.size < (rows - 1) * ld + cols):
                raise ValueError(f"{name}: buffer too small for {rows} rows of {cols} at stride {ld}")
        self._check(self.lib.llmc_test_sgemm(int(transA), int(transB), M, N, K, self._p(A), lda, self._p(B), ldb,
                                             float(beta), self._p(C), ldc, nt, int(use_shared)), "sgemm")

    def matmul_forward(self, inp: np.ndarray, weight: np.ndarray, bias: Optional[np.ndarray], nt: int = 1,
                       use_shared: bool = False) -> np.ndarray:
        inp = _f32(inp, "inp")
        N, IC = inp.shape
        weight = _f32(weight, "weight")
        OC = weight.shape[0]
        weight = _f32(weight, "weight", (OC, IC))
        b = None if bias is None else _f32(bias, "bias", (OC,))
        out = np.full((N, OC), np.nan, dtype=np.float32)  # must be overwritten everywhere
        self._check(self.lib.llmc_test_matmul_forward(self._p(out), self._p(inp), self._p(weight), self._null_or(b),
                                                      N, IC, OC, nt, int(use_shared)), "matmul_forward")
        return out

    def matmul_backward(self, dinp: Optional[np.ndarray], dweight: np.ndarray, dbias: Optional[np.ndarray],
                        dout: np.ndarray, inp: np.ndarray, weight: np.ndarray, nt: int = 1,
                        use_shared: bool = False, accumulate: bool = True) -> None:
        """dinp (N, IC) overwritten (None: skipped), dbias (OC) accumulates, dweight (OC, IC)
        accumulates, or with accumulate=False is overwritten (the model's first micro-batch)."""
        inp, weight = _f32(inp, "inp"), _f32(weight, "weight")
        N, IC = inp.shape
        OC = weight.shape[0]
        dout = _f32(dout, "dout", (N, OC))
        for name, a, shape in (("dinp", dinp, (N, IC)), ("dweight", dweight, (OC, IC)), ("dbias", dbias, (OC,))):
            if a is not None and (a.dtype != np.float32 or a.shape != shape or not a.flags.c_contiguous):
                raise ValueError(f"{name} must be contiguous float32 of shape {shape}")
        self._check(self.lib.llmc_test_matmul_backward(self._null_or(dinp), self._p(dweight), self._null_or(dbias),
                                                       self._p(dout), self._p(inp), self._p(weight), N, IC, OC, nt,
                                                       int(use_shared), int(accumulate)), "matmul_backward")

    # -------------------------------------------------------------- the other kernels
    def encoder_forward(self, inp: np.ndarray, wte: np.ndarray, wpe: np.ndarray, nt: int = 1) -> np.ndarray:
        x = _i32(inp, "inp")
        B, T = x.shape
        wte, wpe = _f32(wte, "wte"), _f32(wpe, "wpe")
        C = wte.shape[1]
        if wpe.shape[1] != C or wpe.shape[0] < T or x.min() < 0 or x.max() >= wte.shape[0]:
            raise ValueError("encoder_forward: inconsistent shapes or token ids")
        out = np.full((B, T, C), np.nan, dtype=np.float32)
        self.lib.llmc_test_encoder_forward(self._p(out), self._p(x, "int32_t[]"), self._p(wte), self._p(wpe),
                                           B, T, C, nt)
        return out

    def encoder_backward(self, dwte: np.ndarray, dwpe: np.ndarray, dout: np.ndarray, inp: np.ndarray,
                         nt: int = 1) -> None:
        x = _i32(inp, "inp")
        B, T = x.shape
        C = dwte.shape[1]
        dout = _f32(dout, "dout", (B, T, C))
        for a in (dwte, dwpe):
            if a.dtype != np.float32 or not a.flags.c_contiguous or a.shape[1] != C:
                raise ValueError("dwte / dwpe must be contiguous float32 (rows, C)")
        self.lib.llmc_test_encoder_backward(self._p(dwte), self._p(dwpe), self._p(dout), self._p(x, "int32_t[]"),
                                            B, T, C, nt)

    def layernorm_forward(self, inp: np.ndarray, weight: np.ndarray, bias: np.ndarray, nt: int = 1):
        x = _f32(inp, "inp")
        N, C = x.shape
        w, b = _f32(weight, "weight", (C,)), _f32(bias, "bias", (C,))
        out = np.full((N, C), np.nan, dtype=np.float32)
        mean = np.full(N, np.nan, dtype=np.float32)
        rstd = np.full(N, np.nan, dtype=np.float32)
        self.lib.llmc_test_layernorm_forward(self._p(out), self._p(mean), self._p(rstd), self._p(x), self._p(w),
                                             self._p(b), N, C, nt)
        return out, mean, rstd

    def layernorm_backward(self, dinp: np.ndarray, dweight: np.ndarray, dbias: np.ndarray, dout: np.ndarray,
                           inp: np.ndarray, weight: np.ndarray, mean: np.ndarray, rstd: np.ndarray,
                           nt: int = 1) -> None:
        """dinp, dweight, dbias accumulate (+=)."""
        x = _f32(inp, "inp")
        N, C = x.shape
        args = [_f32(dout, "dout", (N, C)), x, _f32(weight, "weight", (C,)), _f32(mean, "mean", (N,)),
                _f32(rstd, "rstd", (N,))]
        for name, a, shape in (("dinp", dinp, (N, C)), ("dweight", dweight, (C,)), ("dbias", dbias, (C,))):
            if a.dtype != np.float32 or a.shape != shape or not a.flags.c_contiguous:
                raise ValueError(f"{name} must be contiguous float32 of shape {shape}")
        self.lib.llmc_test_layernorm_backward(self._p(dinp), self._p(dweight), self._p(dbias),
                                              *(self._p(a) for a in args), N, C, nt)

    def attention_forward(self, qkv: np.ndarray, NH: int, nt: int = 1) -> Tuple[np.ndarray, np.ndarray]:
        q = _f32(qkv, "qkv")
        B, T, C3 = q.shape
        C = C3 // 3
        if C3 != 3 * C or C % NH:
            raise ValueError("attention_forward: qkv must be (B, T, 3C) with C divisible by NH")
        out = np.full((B, T, C), np.nan, dtype=np.float32)
        att = np.full((B, NH, T, T), np.nan, dtype=np.float32)
        self._check(self.lib.llmc_test_attention_forward(self._p(out), self._p(att), self._p(q), B, T, C, NH, nt),
                    "attention_forward")
        return out, att

    def attention_backward(self, dout: np.ndarray, qkv: np.ndarray, att: np.ndarray, NH: int,
                           nt: int = 1) -> np.ndarray:
        q = _f32(qkv, "qkv")
        B, T, C3 = q.shape
        C = C3 // 3
        d = _f32(dout, "dout", (B, T, C))
        a = _f32(att, "att", (B, NH, T, T))
        dqkv = np.full((B, T, 3 * C), np.nan, dtype=np.float32)  # overwritten
        self._check(self.lib.llmc_test_attention_backward(self._p(dqkv), self._p(d), self._p(q), self._p(a), B, T, C,
                                                          NH, nt), "attention_backward")
        return dqkv

    def gelu_forward(self, x: np.ndarray, nt: int = 1) -> np.ndarray:
        x = _f32(x, "x")
        out = np.full(x.shape, np.nan, dtype=np.float32)
        self.lib.llmc_test_gelu_forward(self._p(out), self._p(x), x.size, nt)
        return out

    def gelu_backward(self, x: np.ndarray, dout: np.ndarray, nt: int = 1, in_place: bool = False) -> np.ndarray:
        """dinp = gelu'(x) * dout; in_place: written over (a copy of) dout, as the model does."""
        x = _f32(x, "x")
        d = np.array(dout, dtype=np.float32, order="C", copy=True)
        if d.shape != x.shape:
            raise ValueError("gelu_backward: dout shape differs from x")
        out = d if in_place else np.full(x.shape, np.nan, dtype=np.float32)
        self.lib.llmc_test_gelu_backward(self._p(out), self._p(x), self._p(d), x.size, nt)
        return out

    def residual_forward(self, a: np.ndarray, b: np.ndarray, nt: int = 1) -> np.ndarray:
        a, b = _f32(a, "a"), _f32(b, "b", np.shape(a))
        out = np.full(a.shape, np.nan, dtype=np.float32)
        self.lib.llmc_test_residual_forward(self._p(out), self._p(a), self._p(b), a.size, nt)
        return out

    def crossentropy_forward(self, logits: np.ndarray, targets: np.ndarray, V: int, nt: int = 1):
        """logits (N, Vp); returns probs (N, Vp), losses (N,), mean loss."""
        lg = _f32(logits, "logits")
        N, Vp = lg.shape
        t = _i32(targets, "targets")
        if t.shape != (N,) or not 0 < V <= Vp or (N and (t.min() < 0 or t.max() >= V)):
            raise ValueError("crossentropy_forward: bad targets or V")
        probs = np.full((N, Vp), np.nan, dtype=np.float32)
        losses = np.full(N, np.nan, dtype=np.float32)
        mean = self.lib.llmc_test_crossentropy_forward(self._p(probs), self._p(losses), self._p(lg),
                                                       self._p(t, "int32_t[]"), N, V, Vp, nt)
        return probs, losses, float(mean)

    def crossentropy_backward(self, probs: np.ndarray, targets: np.ndarray, dloss: float, V: int,
                              nt: int = 1) -> np.ndarray:
        p = _f32(probs, "probs")
        N, Vp = p.shape
        t = _i32(targets, "targets")
        dl = np.full((N, Vp), np.nan, dtype=np.float32)
        self.lib.llmc_test_crossentropy_backward(self._p(dl), self._p(p), self._p(t, "int32_t[]"), float(dloss),
                                                 N, V, Vp, nt)
        return dl

    def adamw(self, param: np.ndarray, grad: np.ndarray, m: np.ndarray, v: np.ndarray, *, lr: float,
              beta1: float, beta2: float, eps: float, weight_decay: float, t: int, grad_scale: float = 1.0,
              nt: int = 1) -> None:
        """One AdamW update of param, m, v in place (float32, contiguous, equal sizes)."""
        g = _f32(grad, "grad")
        for name, a in (("param", param), ("m", m), ("v", v)):
            if a.dtype != np.float32 or not a.flags.c_contiguous or a.size != g.size:
                raise ValueError(f"{name} must be contiguous float32 with {g.size} elements")
        self.lib.llmc_test_adamw(self._p(param), self._p(g), self._p(m), self._p(v), g.size, lr, beta1, beta2, eps,
                                 weight_decay, t, grad_scale, nt)


_SHIM: Optional[KernelShim] = None


def load_shim() -> KernelShim:
    """The process-wide KernelShim (loaded once)."""
    global _SHIM
    if _SHIM is None:
        _SHIM = KernelShim()
    return _SHIM
