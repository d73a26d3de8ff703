"""The hypothesis property tests of the C kernels (test_kernels.py) against the WASM build of
the core: the same tests, the same policy (each kernel within a small factor of torch fp32's
error against fp64), with the kernel test shim compiled to wasm (_kernel_shim.wasm, built on
demand into build-wasm-shim/ with the wasm32-wasi toolchain file) and called through
pyllmc.wasm_core's marshalling. So the SIMD128 / relaxed-SIMD GEMM micro-kernel is checked
on all three matmul shapes and the attention products, with random shapes and edges.

The GEMM-ISA parametrisation of test_kernels.py (LLMC_GEMM_ISA) is moot in wasm (one kernel;
the module has no environment): its three values run the same wasm kernel, on different
random examples.

Runs in `nox -s wasm`; skips without a wasm toolchain or wasmtime unless PYLLMC_REQUIRE_WASM=1."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "build-wasm-shim"


def _skip_or_fail(why: str):
    if os.environ.get("PYLLMC_REQUIRE_WASM") == "1":
        pytest.fail(f"PYLLMC_REQUIRE_WASM=1 but {why}", pytrace=False)
    pytest.skip(why, allow_module_level=True)


try:
    import wasmtime  # noqa: F401
except ImportError:
    _skip_or_fail("wasmtime is not installed")
pytest.importorskip("torch")

import test_kernels as tk  # noqa: E402
from kernel_shim import CDEF, SHIM_ABI, KernelShim  # noqa: E402


def build_wasm_shim() -> Path:
    out = BUILD / "_kernel_shim.wasm"
    cmake = shutil.which("cmake")
    if not cmake:
        _skip_or_fail("cmake is not installed")
    BUILD.mkdir(exist_ok=True)
    with open(BUILD / ".lock", "w") as lock:
        import fcntl

        fcntl.flock(lock, fcntl.LOCK_EX)
        steps = []
        if not (BUILD / "CMakeCache.txt").is_file():
            steps.append([cmake, "-S", str(REPO / "core_c"), "-B", str(BUILD), "-DLLMC_KERNEL_SHIM=ON",
                          f"-DCMAKE_TOOLCHAIN_FILE={REPO / 'core_c' / 'cmake' / 'wasm32-wasi.cmake'}"])
        steps.append([cmake, "--build", str(BUILD), "-j2", "--target", "llmc_kernel_shim_wasm"])
        for cmd in steps:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            if r.returncode != 0:
                _skip_or_fail(f"the wasm kernel shim does not build: {(r.stdout + r.stderr)[-1500:]}")
    return out


class WasmKernelShim(KernelShim):
    """KernelShim whose functions run in an instance of _kernel_shim.wasm."""

    def __init__(self, path: Path):
        from cffi import FFI

        from pyllmc.wasm_core.lib import WasmLib
        from pyllmc.wasm_core.runtime import Instance

        self.path = path
        self.ffi = FFI()
        self.ffi.cdef(CDEF)
        lib = WasmLib(Instance(path))
        lib.string_results = ("llmc_test_gemm_isa", "llmc_test_gemm_bf16_isa")
        self.lib = lib
        got = int(self.lib.llmc_test_shim_abi())
        if got != SHIM_ABI:
            raise ImportError(f"{path}: kernel shim ABI {got}, expected {SHIM_ABI}")


_SHIM = None


@pytest.fixture(scope="module")
def k():
    global _SHIM
    if _SHIM is None:
        _SHIM = WasmKernelShim(build_wasm_shim())
    return _SHIM


one_torch_thread = tk.one_torch_thread


def test_the_wasm_kernel_is_in_use(k):
    assert k.gemm_isa() in ("wasm-relaxed-simd", "wasm-simd128")


test_sgemm = tk.test_sgemm
test_matmul_forward_backward = tk.test_matmul_forward_backward
test_encoder_forward_backward = tk.test_encoder_forward_backward
test_layernorm_forward_backward = tk.test_layernorm_forward_backward
test_attention_forward_backward = tk.test_attention_forward_backward
test_gelu_forward_backward = tk.test_gelu_forward_backward
test_residual_forward = tk.test_residual_forward
test_crossentropy_forward_backward = tk.test_crossentropy_forward_backward
test_adamw = tk.test_adamw
