"""The CUDA backend's build and API, checked on any machine (no GPU needed).

- a library built where nvcc exists has the CUDA backend, and it still loads and runs the CPU
  backend without a GPU, a driver or cuBLAS (no link-time dependency on any of them);
- asking for a CUDA model where CUDA is not usable is a clear UnsupportedError, never a crash;
- the device-independent parts of the device API (options, copies, views) behave on the CPU.

The GPU parity tests are in test_cuda_parity.py (marked gpu; they skip without a GPU).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import pyllmc
from pyllmc import GPTConfig, Model, _ffi
from pyllmc._ffi import ffi, lib
from pyllmc.model import KINDS, _HostCopies

TINY = GPTConfig(max_seq_len=16, vocab_size=60, padded_vocab_size=64, num_layers=2, num_heads=2, channels=16)


def tiny(**kw) -> Model:
    return Model.from_config(TINY, max_batch=2, threads=1, seed=1, **kw)


def _options(**fields):
    opt = ffi.new("llmc_options *")
    opt.max_batch = 1
    for k, v in fields.items():
        setattr(opt, k, v)
    return opt


# ------------------------------------------------------------------ build


def test_built_with_cuda_where_nvcc_exists():
    """CI machines have nvcc and no GPU: `pip install .` there must compile the CUDA backend.
    PYLLMC_EXPECT_CUDA_BUILD=0/1 overrides the expectation (e.g. for a -DLLMC_CUDA=OFF build)."""
    expect = os.environ.get("PYLLMC_EXPECT_CUDA_BUILD")
    if expect is None:
        if os.environ.get("PYLLMC_LIBRARY"):
            pytest.skip("PYLLMC_LIBRARY points at a custom build; set PYLLMC_EXPECT_CUDA_BUILD to check it")
        if shutil.which("nvcc") is None:
            pytest.skip("no nvcc on PATH: a CPU-only build is expected here")
        expect = "1"
    assert bool(lib.llmc_built_with_cuda()) == (expect == "1"), pyllmc.cuda_info()
    assert pyllmc.cuda_built() == (expect == "1")


def _dynamic_section(path: str) -> str:
    readelf = shutil.which("readelf")
    if readelf is None or sys.platform != "linux":
        pytest.skip("readelf (Linux) is needed to read the library's dynamic section")
    return subprocess.run([readelf, "-d", path], capture_output=True, text=True, check=True).stdout


def test_library_does_not_link_cuda_libraries():
    """The CUDA runtime is static and cuBLAS is opened at run time: the library must load on
    machines without any CUDA library, so none may be a DT_NEEDED entry."""
    dyn = _dynamic_section(str(_ffi.LIBRARY_PATH))
    needed = [line for line in dyn.splitlines() if "(NEEDED)" in line]
    assert needed, dyn
    for line in needed:
        for bad in ("libcuda", "libcudart", "libcublas", "libnvrtc"):
            assert bad not in line, f"the library links {line.strip()}: it would not load without CUDA"


def test_library_exports_no_cuda_runtime_symbols():
    """The static CUDA runtime stays private (--exclude-libs), so it cannot interpose on the
    copy PyTorch loads in the same process."""
    nm = shutil.which("nm")
    if nm is None or sys.platform != "linux":
        pytest.skip("nm (Linux) is needed")
    out = subprocess.run([nm, "-D", "--defined-only", str(_ffi.LIBRARY_PATH)], capture_output=True, text=True, check=True).stdout
    names = [line.split()[-1] for line in out.splitlines() if len(line.split()) >= 3]
    leaked = [n for n in names if n.startswith(("cuda", "__cuda", "cublas", "_Z"))]
    assert leaked == [], leaked[:20]


def test_library_imports_in_a_fresh_process_without_a_gpu():
    """Importing pyllmc and using the CPU backend never touches CUDA, and the CUDA queries
    answer without crashing whatever the machine has (driver or not)."""
    code = (
        "import pyllmc, numpy as np\n"
        "from pyllmc import Model, GPTConfig\n"
        "print(pyllmc.cuda_built(), pyllmc.cuda_available())\n"
        "print(pyllmc.cuda_info())\n"
        "m = Model.from_config(GPTConfig(8, 10, 16, 1, 1, 8), max_batch=1, threads=1)\n"
        "print(m.forward(np.zeros((1, 4), np.int32), np.ones((1, 4), np.int32)))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 3 and lines[1], r.stdout
    assert float(lines[2]) > 0


# ------------------------------------------------------------------ availability


def test_cuda_queries_are_consistent():
    built, has = int(lib.llmc_built_with_cuda()), int(lib.llmc_has_cuda())
    assert built in (0, 1) and has in (0, 1)
    if not built:
        assert has == 0
    text = _ffi.string(lib.llmc_cuda_describe())
    assert text.startswith("available: " if has else "not "), text
    if built and not has:
        assert text.startswith("not available:"), text
    if not built:
        assert "without the CUDA backend" in text
    assert pyllmc.cuda_info() == text


@pytest.mark.skipif(bool(lib.llmc_has_cuda()), reason="a usable GPU is present: CUDA models can be created here")
def test_cuda_model_without_gpu_is_unsupported_with_reason():
    with pytest.raises(pyllmc.UnsupportedError) as info:
        tiny(device="cuda")
    msg = str(info.value)
    assert "cuda" in msg.lower()
    if lib.llmc_built_with_cuda():
        assert "not available" in msg  # and says why (no driver, no device, no cuBLAS)
    else:
        assert "without nvcc" in msg or "LLMC_CUDA=OFF" in msg
    assert isinstance(info.value, NotImplementedError)
    # the failure left nothing behind: the CPU path still works on this thread
    with tiny() as m:
        assert m.device == "cpu"


@pytest.mark.skipif(bool(lib.llmc_has_cuda()), reason="a usable GPU is present: CUDA models can be created here")
def test_cuda_checkpoint_load_without_gpu_names_file(tmp_path):
    path = tmp_path / "tiny.bin"
    with tiny() as m:
        m.save(path)
    with pytest.raises(pyllmc.UnsupportedError) as info:
        Model.from_checkpoint(path, device="cuda")
    assert "tiny.bin" in str(info.value)


@pytest.mark.skipif(bool(lib.llmc_has_cuda()), reason="a usable GPU is present")
def test_c_level_cuda_create_without_gpu():
    out = ffi.new("llmc_model **")
    cfg = TINY.to_c()
    st = lib.llmc_model_create(cfg, _options(device=lib.LLMC_DEVICE_CUDA), 0, out)
    assert st == lib.LLMC_ERR_UNSUPPORTED
    assert out[0] == ffi.NULL
    assert "cuda" in _ffi.string(lib.llmc_last_error()).lower()


# ------------------------------------------------------------------ options


def test_bad_device_and_precision_values():
    with pytest.raises(pyllmc.InvalidArgumentError):
        tiny(device="tpu")
    with pytest.raises(pyllmc.InvalidArgumentError):
        tiny(precision="fp16")
    out = ffi.new("llmc_model **")
    cfg = TINY.to_c()
    assert lib.llmc_model_create(cfg, _options(device=7), 0, out) == lib.LLMC_ERR_INVALID_ARGUMENT
    assert "device" in _ffi.string(lib.llmc_last_error())
    assert lib.llmc_model_create(cfg, _options(precision=9), 0, out) == lib.LLMC_ERR_INVALID_ARGUMENT
    assert "precision" in _ffi.string(lib.llmc_last_error())
    assert lib.llmc_model_create(cfg, _options(reserved=1), 0, out) == lib.LLMC_ERR_INVALID_ARGUMENT


def test_bf16_on_cpu_is_a_cpu_model():
    with tiny(precision="bf16") as m:
        assert m.device == "cpu" and m.precision == "bf16"
        assert m.options.precision == "bf16"


def test_cpu_model_reports_its_device():
    with tiny() as m:
        assert m.device == "cpu" and m.precision == "fp32"
        o = m.options
        assert (o.device, o.precision) == ("cpu", "fp32")
        assert lib.llmc_model_device(m._ptr()) == lib.LLMC_DEVICE_CPU
        assert lib.llmc_model_precision(m._ptr()) == lib.LLMC_PRECISION_FP32
        assert "device='cpu'" in repr(m)
    assert lib.llmc_model_device(ffi.NULL) == -1
    assert lib.llmc_model_precision(ffi.NULL) == -1


def test_options_struct_layout():
    assert ffi.sizeof("llmc_options") == 6 * 4
    assert lib.llmc_struct_size(b"llmc_options") == ffi.sizeof("llmc_options")
    assert lib.LLMC_DEVICE_CPU == 0 and lib.LLMC_DEVICE_CUDA == 1
    assert lib.LLMC_PRECISION_FP32 == 0 and lib.LLMC_PRECISION_BF16 == 1


# ------------------------------------------------------------------ copies and views


def test_copy_to_and_from_host_round_trip():
    with tiny() as m:
        x, y = np.zeros((2, 8), np.int32), np.ones((2, 8), np.int32)
        m.forward(x, y)
        for kind in KINDS:
            flat = m.copy_to_host(kind)
            np.testing.assert_array_equal(flat, m.flat(kind))
            flat[0] += 1.0  # a copy: the model does not see it
            assert m.flat(kind)[0] != flat[0]
        wte = m.copy_to_host("params", "wte")
        np.testing.assert_array_equal(wte, m.params["wte"])
        new = np.arange(wte.size, dtype=np.float32).reshape(wte.shape) * 1e-3
        m.copy_from_host("params", "wte", new)
        np.testing.assert_array_equal(m.params["wte"], new)
        m.copy_from_host("grads", None, np.full(m.flat("grads").size, 0.5, np.float32))
        assert np.all(m.flat("grads") == 0.5)
        with pytest.raises(pyllmc.InvalidArgumentError, match="shape"):
            m.copy_from_host("params", "wte", new[:3])
        with pytest.raises(pyllmc.InvalidArgumentError, match="no params tensor"):
            m.copy_to_host("params", "nope")
        with pytest.raises(pyllmc.InvalidArgumentError):
            m.copy_to_host("weights", "wte")


def test_buffer_length_alone_with_a_null_data_pointer():
    """llmc_model_buffer(m, kind, NULL, &n) gives the length without handing out a pointer
    (what the binding uses for whole-buffer copies, so they do not mark a CUDA bf16 model's
    weights as writable behind its back)."""
    with tiny() as m:
        ptr = m._ptr()
        n = ffi.new("int64_t *")
        for kind, k in KINDS.items():
            assert lib.llmc_model_buffer(ptr, k, ffi.NULL, n) == lib.LLMC_OK
            assert n[0] == m.flat(kind).size
        assert lib.llmc_model_buffer(ptr, 5, ffi.NULL, n) == lib.LLMC_ERR_INVALID_ARGUMENT
        assert lib.llmc_model_buffer(ptr, 0, ffi.new("float **"), ffi.NULL) == lib.LLMC_ERR_INVALID_ARGUMENT


def test_c_level_copy_bounds():
    with tiny() as m:
        ptr = m._ptr()
        n = m.flat("params").size
        buf = np.zeros(n + 8, np.float32)
        dst = ffi.from_buffer("float[]", buf)
        P = lib.LLMC_KIND_PARAMS
        assert lib.llmc_model_copy_to_host(ptr, P, 0, n, dst) == lib.LLMC_OK
        np.testing.assert_array_equal(buf[:n], m.flat("params"))
        for off, cnt in ((-1, 1), (0, -1), (0, n + 1), (n, 1), (n - 3, 4), (2**62, 2**62)):
            assert lib.llmc_model_copy_to_host(ptr, P, off, cnt, dst) == lib.LLMC_ERR_INVALID_ARGUMENT, (off, cnt)
            assert "outside" in _ffi.string(lib.llmc_model_last_error(ptr))
            assert lib.llmc_model_copy_from_host(ptr, P, off, cnt, dst) == lib.LLMC_ERR_INVALID_ARGUMENT
        assert lib.llmc_model_copy_to_host(ptr, 5, 0, 1, dst) == lib.LLMC_ERR_INVALID_ARGUMENT
        assert lib.llmc_model_copy_to_host(ptr, P, 0, 1, ffi.NULL) == lib.LLMC_ERR_INVALID_ARGUMENT
        assert lib.llmc_model_copy_to_host(ptr, P, n, 0, ffi.NULL) == lib.LLMC_OK  # empty copy
        assert lib.llmc_model_copy_to_host(ffi.NULL, P, 0, 1, dst) == lib.LLMC_ERR_INVALID_ARGUMENT


def test_host_copy_mapping_semantics():
    """The mapping a CUDA model returns for params/grads/acts, exercised on a CPU model."""
    with tiny() as m:
        infos = {t.name: t for t in m.tensors("params")}
        hc = _HostCopies(m, KINDS["params"], infos)
        assert len(hc) == 16 and list(hc) == list(m.params)
        for name, arr in hc.items():
            np.testing.assert_array_equal(arr, m.params[name])
            assert not arr.flags.writeable
            with pytest.raises(ValueError):
                arr[...] = 0
        with pytest.raises(KeyError):
            hc["nope"]
        assert "params of a CUDA model" in repr(hc)


def test_torch_view_on_cpu_shares_memory():
    torch = pytest.importorskip("torch")
    with tiny() as m:
        t = m.torch_view("params", "lnfw")
        assert t.device.type == "cpu" and tuple(t.shape) == (TINY.channels,)
        t.fill_(3.0)
        assert np.all(m.params["lnfw"] == 3.0)
        whole = m.torch_view("params")
        assert whole.numel() == m.flat("params").size
        assert whole.dtype == torch.float32


def test_same_seed_same_weights_whatever_the_device_field():
    """Weights are drawn on the host for every device, so a seed fixes them everywhere; on the
    CPU, device=cpu given explicitly is the default."""
    with tiny() as a, tiny(device="cpu", precision="fp32") as b:
        np.testing.assert_array_equal(a.flat("params"), b.flat("params"))
