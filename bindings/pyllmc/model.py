"""GPTConfig and Model: a Python object around one C ``llmc_model*``.

Memory views
------------
``Model.params``, ``grads``, ``adam_m``, ``adam_v`` and ``acts`` are dicts of zero-copy
float32 numpy arrays that look straight into the C model's buffers: writing to them changes
the model, and they show the C side's updates without copying. Every view keeps the C model
alive, so a view may outlive its ``Model`` object (the memory is freed when the last of them
goes). ``Model.close()`` however frees the C model at once: after ``close()`` every view of
that model is invalid and must not be touched (reading it is undefined behaviour), and every
method of the model raises ``StateError``.

The views are plain numpy arrays, so any DLPack consumer shares them without a copy:
``torch.from_dlpack(model.params["wte"])`` is a CPU tensor on the model's memory (numpy
implements ``__dlpack__``; so do JAX's and CuPy's ``from_dlpack``). On a CUDA model use
``torch_view`` (below) instead.

Activation views (``acts``, ``logits()``) have the shapes of the last forward call; they are
rebuilt after each forward, so take them again after calling ``forward``.

Devices
-------
``Model.from_config(..., device="cuda")`` (and ``from_checkpoint``) puts the model on the GPU,
when the library was built with CUDA and a GPU, its driver and cuBLAS are present
(``pyllmc.cuda_available()``; ``pyllmc.cuda_info()`` says why not). Otherwise creation raises
``UnsupportedError`` with the reason. ``precision="bf16"`` (CPU or CUDA) runs the matmuls and the
attention products with bf16 operands (rounded to nearest even) and fp32 accumulation, keeping fp32
master weights, gradients, optimizer state and activations; on a CPU with AVX512_BF16 it uses the
bf16 dot-product instructions, elsewhere an fp32 emulation with the same results. A bf16 CPU model
stores the activations that only matmuls read (ln1, atty, ln2, fch_gelu, lnf) as bf16, rounded as
the matmul rounds them (same results, half their memory): its ``acts`` are then host copies made
on lookup, with those widened to float32 (``torch_view("acts")`` raises ``UnsupportedError``).

On a CUDA model the buffers live in GPU memory, with the same names, shapes and offsets:
  - ``params``, ``grads``, ``adam_m``, ``adam_v``, ``acts`` are read-only mappings whose items
    are HOST COPIES, made when an item is looked up (``m.acts["logits"]`` copies just that
    tensor); writing to them raises. ``flat(kind)`` is a read-only host copy of a whole buffer.
  - ``copy_to_host(kind, name)`` / ``copy_from_host(kind, name, array)`` copy one tensor (or a
    whole buffer with ``name=None``) either way, on both devices.
  - ``torch_view(kind, name)`` is a torch tensor on the GPU sharing the model's memory (no
    copy, through ``__cuda_array_interface__``); on a CPU model a CPU tensor sharing memory.
Every call on a CUDA model has finished on the GPU when it returns. The C library runs on
the legacy default CUDA stream, so PyTorch work on its default stream is ordered with it.

Threads: calls into C release the GIL (cffi does this for every call). One model may be used
from several Python threads; its methods are serialised by a per-model lock.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple, Union

import numpy as np

from . import _ffi
from ._ffi import ffi, lib, string
from .errors import FileError, InvalidArgumentError, PyllmcError, StateError, UnsupportedError, check
from .shapes import GPTConfig

PathLike = Union[str, "os.PathLike[str]"]

KINDS: Dict[str, int] = {"params": 0, "grads": 1, "adam_m": 2, "adam_v": 3, "acts": 4}
# the activations a bf16 CPU model keeps as bf16 (core_c/src/model.c, act_is_gemm_only)
ACTS16_BASES = ("ln1", "atty", "ln2", "fch_gelu", "lnf")
KIND_NAMES: Dict[int, str] = {v: k for k, v in KINDS.items()}
DEVICES: Dict[str, int] = {"cpu": 0, "cuda": 1}
DEVICE_NAMES: Dict[int, str] = {v: k for k, v in DEVICES.items()}
PRECISIONS: Dict[str, int] = {"fp32": 0, "bf16": 1}
PRECISION_NAMES: Dict[int, str] = {v: k for k, v in PRECISIONS.items()}

_INT32_MAX = 2**31 - 1

@dataclass(frozen=True)
class ModelOptions:
    """Limits fixed at creation (``llmc_options``)."""

    max_batch: int
    max_seq: int
    num_threads: int
    device: str = "cpu"
    precision: str = "fp32"


@dataclass(frozen=True)
class TensorInfo:
    """One named tensor of the C model: which buffer (kind), where (offset, in floats), shape."""

    name: str
    kind: str
    shape: Tuple[int, ...]
    offset: int
    numel: int


class _Handle:
    """Owns one ``llmc_model*``; destroys it on close() or when garbage-collected.

    Numpy views hold a reference to this object (not to the Model), so the C memory stays
    valid as long as any view exists, and there are no reference cycles.
    """

    def __init__(self, ptr, core: Any = None):
        self.ptr = ptr
        self.core = lib if core is None else core  # the cffi lib, or a wasm core's WasmLib
        self._destroy = self.core.llmc_model_destroy  # kept so __del__ works at interpreter exit

    def close(self) -> None:
        ptr, self.ptr = self.ptr, None
        if ptr is not None:
            self._destroy(ptr)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class _BufferExport:
    """Presents ``numel`` floats at ``address`` to numpy via ``__array_interface__``.

    ``np.asarray`` keeps this object as the array's base, and this object keeps the handle,
    so a view (and every slice of it) keeps the C model alive.
    """

    def __init__(self, address: int, numel: int, handle: _Handle):
        self.__array_interface__ = {
            "version": 3,
            "shape": (int(numel),),
            "typestr": "<f4",
            "data": (int(address), False),  # False: writable
        }
        self._handle = handle


def _c_path(path: str) -> bytes:
    """``path`` as the C string the core opens. An embedded NUL would end the C string early,
    so "a.bin\\0x" silently opened "a.bin" (another file): rejected, as open() does."""
    b = os.fsencode(path)
    if b"\0" in b:
        raise InvalidArgumentError(f"{path!r}: a path must not contain a NUL character")
    if not b:
        raise FileError("empty path: no file given")
    return b


def _int_arg(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidArgumentError(f"{name} must be an int, got {value!r}")
    if not lo <= int(value) <= hi:
        raise InvalidArgumentError(f"{name} = {value} is outside [{lo}, {hi}]")
    return int(value)


def _float_arg(name: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"{name} must be a number, got {value!r}") from None


def _device_arg(device: Any) -> int:
    name = str(device).strip().lower() if isinstance(device, str) else device
    if name == "wasm":
        return DEVICES["cpu"]  # the wasm core's own device is its CPU backend
    if name not in DEVICES:
        raise InvalidArgumentError(f"device must be one of {list(DEVICES) + ['wasm']}, got {device!r}")
    return DEVICES[name]


def _core_for(device: Any) -> Any:
    """The library a new model of ``device`` runs in: the native cffi ``lib``, or for "wasm" a
    fresh instance of the wasm core (pyllmc.wasm_core: one sandboxed instance per model)."""
    if isinstance(device, str) and device.strip().lower() == "wasm":
        from .wasm_core.lib import WasmLib

        return WasmLib()
    return lib


def _precision_arg(precision: Any) -> int:
    name = str(precision).strip().lower() if isinstance(precision, str) else precision
    if name not in PRECISIONS:
        raise InvalidArgumentError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    return PRECISIONS[name]


def _make_options(max_batch: Any, max_seq: Any, threads: Any, device: Any = "cpu", precision: Any = "fp32"):
    opt = ffi.new("llmc_options *")
    opt.max_batch = _int_arg("max_batch", max_batch, 1, _INT32_MAX)
    opt.max_seq = 0 if max_seq is None else _int_arg("max_seq", max_seq, 1, _INT32_MAX)
    opt.num_threads = _int_arg("threads", threads, 0, _INT32_MAX)
    opt.device = _device_arg(device)
    opt.precision = _precision_arg(precision)
    opt.reserved = 0
    if opt.device == DEVICES["cuda"]:
        _preload_cublas()
    return opt


# ------------------------------------------------------------------ CUDA availability

_CUBLAS_SONAMES = ("libcublas.so.13", "libcublas.so.12")
_cublas_preloaded: List[Any] = []  # keeps the handles (and the libraries) loaded


def _cublas_candidates() -> List[str]:
    """cuBLAS shipped by the nvidia-cublas wheels (installed with CUDA builds of PyTorch:
    nvidia/cu13/lib for CUDA 13, nvidia/cublas/lib for CUDA 12), wherever such a ``nvidia/``
    package directory sits on sys.path; at most one path per soname."""
    import sys

    found: Dict[str, str] = {}
    for entry in sys.path:
        for sub in ("nvidia/cu13/lib", "nvidia/cublas/lib"):
            for soname in _CUBLAS_SONAMES:
                p = os.path.join(entry or ".", sub, soname)
                if soname not in found and os.path.isfile(p):
                    found[soname] = p
    return list(found.values())


def _preload_cublas() -> None:
    """Help the C library find cuBLAS: it opens ``libcublas.so.<CUDA major>`` by name (or
    ``$LLMC_CUBLAS_LIBRARY``); a copy from a Python wheel is not on the loader's path, so load
    it into the process first, where the by-name lookup finds it. Harmless when absent."""
    if _cublas_preloaded or os.environ.get("LLMC_CUBLAS_LIBRARY") or not lib.llmc_built_with_cuda():
        return
    import ctypes

    for path in _cublas_candidates():
        try:
            # RTLD_LOCAL (ctypes' default): loaded and findable by soname, but its symbols
            # stay out of the global scope, where they could bind another library's calls
            # (e.g. PyTorch's, to a different cuBLAS major version)
            _cublas_preloaded.append(ctypes.CDLL(path))
        except OSError:
            continue


def release_threads() -> None:
    """End the calling thread's idle OpenMP worker threads (``llmc_release_threads``).

    Call it in a thread that has run models and now leaves the work to another thread (a
    Trainer in the background, say): while a process holds more OpenMP threads than CPUs,
    libgomp makes every team wait in the kernel at its barriers, and the idle workers of
    the first thread then slow the second one's training (9% per step measured at d6 on
    2 cores). The thread's next model call starts new workers. A no-op without the native
    library."""
    if _ffi.LOAD_ERROR is None:
        lib.llmc_release_threads()


def cuda_built() -> bool:
    """True when the C library was built with the CUDA backend (GPU or not)."""
    return bool(lib.llmc_built_with_cuda())


def cuda_available() -> bool:
    """True when CUDA models can be created: built with CUDA, a GPU, its driver and cuBLAS."""
    _preload_cublas()
    return bool(lib.llmc_has_cuda())


def cuda_info() -> str:
    """One line: the GPU the CUDA backend would use, or why CUDA is not available."""
    _preload_cublas()
    return string(lib.llmc_cuda_describe())


class Model:
    """One GPT-2 model in the C core. Create with ``Model.from_config`` or ``Model.from_checkpoint``.

    The training step is ``forward(inputs, targets)`` -> loss, ``zero_grad()``,
    ``backward()``, optionally ``clip_grad_norm(g)``, then ``adamw_step(lr, t=step)``.
    """

    def __init__(self, _handle: _Handle):
        if not isinstance(_handle, _Handle):
            raise TypeError("use Model.from_config() or Model.from_checkpoint()")
        self._h = _handle
        self._lib = _handle.core
        self._lock = threading.RLock()
        c = ffi.new("llmc_config *")
        self._check(self._lib.llmc_model_get_config(_handle.ptr, c), _handle.ptr)
        self._config = GPTConfig.from_c(c)
        self._device = getattr(self._lib, "device_name", None) or DEVICE_NAMES.get(
            int(self._lib.llmc_model_device(_handle.ptr)), "cpu")
        self._generation = 0  # bumped by every forward: activation shapes may change
        self._last_bt: Optional[Tuple[int, int]] = None
        self._infos: Optional[Tuple[int, List[TensorInfo]]] = None
        self._flats: Dict[int, Tuple[int, int, np.ndarray]] = {}
        self._views: Dict[int, Tuple[int, int, int, Dict[str, np.ndarray]]] = {}
        self._acts_split: Optional[bool] = None  # see _acts_by_copy

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_config(
        cls,
        config: Union[GPTConfig, str],
        *,
        max_batch: int = 4,
        max_seq: Optional[int] = None,
        threads: int = 0,
        seed: int = 0,
        device: str = "cpu",
        precision: str = "fp32",
    ) -> "Model":
        """A freshly initialised model (GPT-2 initialisation drawn from ``seed``).

        ``config`` may also be a size descriptor such as ``"d12"``. ``max_seq`` defaults to
        ``config.max_seq_len``; ``threads=0`` uses the OpenMP default. ``device`` is "cpu" or
        "cuda" (``UnsupportedError`` when CUDA is not available, with the reason);
        ``precision`` "fp32" or "bf16". The same seed gives the same weights on
        every device.
        """
        if isinstance(config, str):
            config = GPTConfig.from_size(config)
        if not isinstance(config, GPTConfig):
            raise InvalidArgumentError(f"config must be a GPTConfig or a descriptor like 'd12', got {config!r}")
        c = config.to_c()
        opt = _make_options(max_batch, max_seq, threads, device, precision)
        seed = _int_arg("seed", seed, 0, 2**64 - 1)
        core = _core_for(device)
        if core is not lib:
            from .wasm_core.memory import check_fits

            check_fits(config, opt.max_batch, opt.max_seq or config.max_seq_len)
        out = ffi.new("llmc_model **")
        check(core.llmc_model_create(c, opt, seed, out), lib=core)
        return cls(_Handle(out[0], core))

    @classmethod
    def from_checkpoint(
        cls,
        path: PathLike,
        *,
        max_batch: int = 4,
        max_seq: Optional[int] = None,
        threads: int = 0,
        device: str = "cpu",
        precision: str = "fp32",
    ) -> "Model":
        """Load an llm.c checkpoint (version 3 fp32 or 5 bf16) onto ``device``."""
        opt = _make_options(max_batch, max_seq, threads, device, precision)
        spath = os.fspath(path)
        cpath = _c_path(spath)
        core = _core_for(device)
        if core is not lib:
            from .wasm_core.memory import check_checkpoint_fits

            check_checkpoint_fits(spath, opt.max_batch, opt.max_seq)
        out = ffi.new("llmc_model **")
        check(core.llmc_model_load(cpath, opt, out), context=str(spath), lib=core)
        return cls(_Handle(out[0], core))

    @classmethod
    def from_pretrained(cls, source: Any, **kwargs: Any) -> "Model":
        """A model from any source ``pyllmc.load_model`` takes: a Hugging Face directory or a
        hub id in the local cache (downloads only with ``PYLLMC_ALLOW_DOWNLOAD=1``), an llm.c
        ``.bin``, a checkpoint or run directory, or a size such as ``"d6"``. ``kwargs``:
        ``max_batch``, ``max_seq``, ``threads``, ``seed``, ``vocab_size``, ``max_seq_len``,
        ``device`` (see ``pyllmc.model_source.load_model``)."""
        from .model_source import load_model

        return load_model(source, **kwargs)

    def save_pretrained(self, directory: PathLike) -> str:
        """Write the parameters as a Hugging Face GPT-2 directory (config.json +
        model.safetensors) that ``Model.from_pretrained`` and transformers'
        ``GPT2LMHeadModel.from_pretrained`` load; needs torch and safetensors."""
        try:
            from .reference import model_params, save_hf_dir
        except ImportError as e:
            from .errors import UnsupportedError

            raise UnsupportedError(f"save_pretrained needs torch, transformers and safetensors: {e}") from None
        save_hf_dir(model_params(self), self.config, directory)
        return os.fspath(directory)

    def generate(self, prompt: Any, max_new_tokens: int, **kwargs: Any) -> List[int]:
        """New token ids continuing ``prompt`` (token ids, at least one); ``kwargs``:
        ``temperature`` (0 = greedy), ``top_k``, ``seed`` or ``rng``, ``stop_token`` (see
        ``pyllmc.sampling.generate``)."""
        from .sampling import generate

        return generate(self, prompt, max_new_tokens, **kwargs)

    def save(self, path: PathLike) -> None:
        """Save the parameters as an llm.c version 3 (fp32) checkpoint."""
        spath = os.fspath(path)
        with self._lock:
            ptr = self._ptr()
            self._check(self._lib.llmc_model_save(ptr, _c_path(spath)), ptr, context=str(spath))

    # ---------------------------------------------------------------- lifetime
    def _ptr(self):
        ptr = self._h.ptr
        if ptr is None:
            raise StateError("the model is closed")
        return ptr

    def _check(self, status: int, ptr: Any = None, context: Optional[str] = None) -> None:
        check(status, ptr, context, lib=self._lib)

    @property
    def closed(self) -> bool:
        return self._h.ptr is None

    def close(self) -> None:
        """Free the C model now. Views taken from it become invalid; methods raise StateError."""
        with self._lock:
            self._flats.clear()
            self._views.clear()
            self._infos = None
            self._h.close()

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # No __del__ here: the C model is freed by _Handle.__del__ with the last reference to
    # the handle, i.e. with this Model unless numpy views taken from it are still alive.

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"Model({self._config}, device={self._device!r}, {state})"

    # ---------------------------------------------------------------- properties
    @property
    def config(self) -> GPTConfig:
        return self._config

    @property
    def options(self) -> ModelOptions:
        with self._lock:
            ptr = self._ptr()
            o = ffi.new("llmc_options *")
            self._check(self._lib.llmc_model_get_options(ptr, o), ptr)
            return ModelOptions(
                int(o.max_batch),
                int(o.max_seq),
                int(o.num_threads),
                self._device if self._device == "wasm" else DEVICE_NAMES.get(int(o.device), str(int(o.device))),
                PRECISION_NAMES.get(int(o.precision), str(int(o.precision))),
            )

    @property
    def device(self) -> str:
        """"cpu" or "cuda": where the model's buffers live."""
        return self._device

    @property
    def precision(self) -> str:
        """"fp32" or "bf16" (see the module docstring)."""
        return self.options.precision

    @property
    def max_batch(self) -> int:
        return self.options.max_batch

    @property
    def max_seq(self) -> int:
        return self.options.max_seq or self._config.max_seq_len

    def set_threads(self, n: int) -> None:
        """OpenMP threads for this model's calls; 0 means the OpenMP default."""
        n = _int_arg("threads", n, 0, _INT32_MAX)
        with self._lock:
            ptr = self._ptr()
            self._check(self._lib.llmc_model_set_threads(ptr, n), ptr)

    # ---------------------------------------------------------------- training step
    def _tokens(self, x: Any, what: str) -> np.ndarray:
        arr = np.asarray(x)
        if not np.issubdtype(arr.dtype, np.integer):
            raise InvalidArgumentError(f"{what} must be an integer array, got dtype {arr.dtype}")
        if arr.ndim != 2:
            raise InvalidArgumentError(f"{what} must have shape (B, T), got shape {arr.shape}")
        V = self._config.vocab_size
        if arr.size:
            bad = (arr < 0) | (arr >= V)
            if bad.any():
                b, t = (int(i) for i in np.argwhere(bad)[0])
                raise InvalidArgumentError(
                    f"{what}[{b}, {t}] = {int(arr[b, t])} is not a token id in [0, {V})"
                )
        return np.ascontiguousarray(arr, dtype=np.int32)

    def forward(self, inputs: Any, targets: Any = None) -> Optional[float]:
        """Forward pass over ``inputs`` (B, T) token ids; the mean loss when ``targets`` given.

        Any integer array-like is accepted (converted to contiguous int32). Logits (and with
        targets probs and per-position losses) are left in ``acts``; see ``logits()``.
        """
        x = self._tokens(inputs, "inputs")
        B, T = x.shape
        opts = self.options
        max_seq = opts.max_seq or self._config.max_seq_len
        if not 1 <= B <= opts.max_batch:
            raise InvalidArgumentError(f"batch size B = {B} is outside [1, max_batch = {opts.max_batch}]")
        if not 1 <= T <= max_seq:
            raise InvalidArgumentError(f"sequence length T = {T} is outside [1, max_seq = {max_seq}]")
        y = None
        if targets is not None:
            y = self._tokens(targets, "targets")
            if y.shape != x.shape:
                raise InvalidArgumentError(f"targets shape {y.shape} differs from inputs shape {x.shape}")
        loss = ffi.new("float *")
        with self._lock:
            ptr = self._ptr()
            self._generation += 1
            self._last_bt = None
            status = self._lib.llmc_model_forward(
                ptr,
                ffi.from_buffer("int32_t[]", x),
                ffi.from_buffer("int32_t[]", y) if y is not None else ffi.NULL,
                B,
                T,
                loss,
            )
            self._check(status, ptr)
            self._last_bt = (B, T)
        return float(loss[0]) if y is not None else None

    def zero_grad(self) -> None:
        with self._lock:
            ptr = self._ptr()
            self._check(self._lib.llmc_model_zero_grad(ptr), ptr)

    def backward(self, loss_scale: float = 1.0, *, accumulate: bool = True) -> None:
        """Backward of the last forward (which needs targets).

        The gradient is that of ``loss_scale * mean loss``: use 1/K for K micro-batches.
        With ``accumulate=True`` it is ADDED to grads; with ``accumulate=False`` it replaces
        them, equal to ``zero_grad()`` then ``backward()`` but one pass over the gradients
        cheaper (use it for the first micro-batch of a step).
        """
        scale = _float_arg("loss_scale", loss_scale)
        with self._lock:
            ptr = self._ptr()
            self._check(self._lib.llmc_model_backward_ex(ptr, scale, 1 if accumulate else 0), ptr)

    def grad_norm(self) -> float:
        """Global L2 norm of all parameter gradients."""
        norm = ffi.new("float *")
        with self._lock:
            ptr = self._ptr()
            self._check(self._lib.llmc_model_grad_norm(ptr, norm), ptr)
        return float(norm[0])

    def clip_grad_norm(self, max_norm: float) -> float:
        """Scale gradients to global norm <= max_norm (as torch); returns the norm before."""
        mn = _float_arg("max_norm", max_norm)
        norm = ffi.new("float *")
        with self._lock:
            ptr = self._ptr()
            self._check(self._lib.llmc_model_clip_grad_norm(ptr, mn, norm), ptr)
        return float(norm[0])

    def adamw_step(
        self,
        lr: float,
        *,
        t: int,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decay_matrices_only: bool = False,
        grad_scale: float = 1.0,
    ) -> None:
        """One AdamW update; ``t`` is the 1-based step number used for bias correction.

        ``grad_scale`` multiplies every gradient as it is read, leaving the gradients in memory
        unchanged: ``adamw_step(..., grad_scale=clip_coefficient(grad_norm(), max_norm))`` is
        bitwise the same update as ``clip_grad_norm(max_norm)`` then ``adamw_step(...)``, with
        one pass over the gradients fewer."""
        p = ffi.new("llmc_adamw_params *")
        p.lr = _float_arg("lr", lr)
        p.beta1 = _float_arg("beta1", beta1)
        p.beta2 = _float_arg("beta2", beta2)
        p.eps = _float_arg("eps", eps)
        p.weight_decay = _float_arg("weight_decay", weight_decay)
        p.t = _int_arg("t", t, 1, _INT32_MAX)
        p.decay_matrices_only = 1 if decay_matrices_only else 0
        p.grad_scale = _float_arg("grad_scale", grad_scale)
        with self._lock:
            ptr = self._ptr()
            self._check(self._lib.llmc_model_adamw_step(ptr, p), ptr)

    def adamw_step_range(self, lr: float, *, t: int, offset: int, count: int, adam_m: Optional[np.ndarray] = None,
                         adam_v: Optional[np.ndarray] = None, beta1: float = 0.9, beta2: float = 0.999,
                         eps: float = 1e-8, weight_decay: float = 0.0, decay_matrices_only: bool = False,
                         grad_scale: float = 1.0) -> None:
        """``adamw_step`` on the parameters [offset, offset + count) of the flat buffer only,
        with the moments in ``adam_m``/``adam_v`` (float32 arrays of ``count`` values, updated in
        place; both None: the model's own moments). ZeRO-1 (pyllmc.distributed) keeps only its
        slice's moments this way. CPU models only."""
        p = ffi.new("llmc_adamw_params *")
        p.lr, p.beta1, p.beta2 = _float_arg("lr", lr), _float_arg("beta1", beta1), _float_arg("beta2", beta2)
        p.eps, p.weight_decay = _float_arg("eps", eps), _float_arg("weight_decay", weight_decay)
        p.t = _int_arg("t", t, 1, _INT32_MAX)
        p.decay_matrices_only = 1 if decay_matrices_only else 0
        p.grad_scale = _float_arg("grad_scale", grad_scale)
        off = _int_arg("offset", offset, 0, 2**62)
        n = _int_arg("count", count, 0, 2**62)
        bufs = []
        for name, a in (("adam_m", adam_m), ("adam_v", adam_v)):
            if a is None:
                bufs.append(ffi.NULL)
                continue
            if not (isinstance(a, np.ndarray) and a.dtype == np.float32 and a.ndim == 1 and a.size == n
                    and a.flags.c_contiguous and a.flags.writeable):
                raise InvalidArgumentError(f"{name} must be a writable contiguous float32 array of {n} values")
            bufs.append(ffi.from_buffer("float[]", a))
        with self._lock:
            ptr = self._ptr()
            self._check(self._lib.llmc_model_adamw_step_range(ptr, p, off, n, bufs[0], bufs[1]), ptr)

    def grad_sumsq_range(self, offset: int, count: int) -> float:
        """Sum of squares (double) of the gradients [offset, offset + count); over the whole
        buffer its square root is ``grad_norm()``. CPU models only."""
        out = ffi.new("double *")
        off = _int_arg("offset", offset, 0, 2**62)
        n = _int_arg("count", count, 0, 2**62)
        with self._lock:
            ptr = self._ptr()
            self._check(self._lib.llmc_model_grad_sumsq_range(ptr, off, n, out), ptr)
        return float(out[0])

    def grad_add_range(self, offset: int, count: int, src: np.ndarray) -> float:
        """Add ``src`` (a contiguous float32 array of ``count`` values, not a view of this
        model's gradients) into the gradients [offset, offset + count); returns the sum of
        squares of the summed slice, bitwise what ``grad_sumsq_range`` would then return. The
        reduce step of data parallel's reduce-scatter: the norm comes without a second pass
        over the gradients. CPU models only."""
        off = _int_arg("offset", offset, 0, 2**62)
        n = _int_arg("count", count, 0, 2**62)
        if not (isinstance(src, np.ndarray) and src.dtype == np.float32 and src.ndim == 1 and src.size == n
                and src.flags.c_contiguous):
            raise InvalidArgumentError(f"src must be a contiguous 1-D float32 array of {n} values")
        out = ffi.new("double *")
        with self._lock:
            ptr = self._ptr()
            if self._device == "cpu" and n:
                g0, gn = self._buffer(self._kind("grads"))
                s0 = int(src.__array_interface__["data"][0])
                if s0 < g0 + 4 * gn and g0 < s0 + 4 * n:
                    raise InvalidArgumentError("src overlaps the model's gradients")
            self._check(self._lib.llmc_model_grad_add_range(ptr, off, n, ffi.from_buffer("float[]", src), out), ptr)
        return float(out[0])

    def debug_set_fault(self, name: Optional[str], delta: float = 0.0) -> None:
        """Testing aid: from the next forward on, add ``delta`` to element 0 of activation
        ``name`` (e.g. "h3.fch") right after the kernel that produces it, so tests can prove
        the parity harness localises a wrong kernel output. ``None`` or "" clears the fault.
        CPU models only (``UnsupportedError`` otherwise); an unknown name is
        ``InvalidArgumentError``."""
        if name is not None and not isinstance(name, str):
            raise InvalidArgumentError(f"fault tensor name must be a str or None, got {name!r}")
        d = _float_arg("delta", delta)
        with self._lock:
            ptr = self._ptr()
            self._check(self._lib.llmc_debug_set_fault(ptr, (name or "").encode(), d), ptr)

    # ---------------------------------------------------------------- tensor views
    def tensors(self, kind: Union[str, int, None] = None) -> List[TensorInfo]:
        """The C model's named-tensor table (optionally of one kind), current shapes."""
        with self._lock:
            infos = self._tensor_infos()
        if kind is None:
            return list(infos)
        k = KIND_NAMES[self._kind(kind)]
        return [i for i in infos if i.kind == k]

    def _tensor_infos(self) -> List[TensorInfo]:
        if self._infos is not None and self._infos[0] == self._generation:
            return self._infos[1]
        ptr = self._ptr()
        n = int(self._lib.llmc_model_num_tensors(ptr))
        if n < 0:
            self._check(n, ptr)
        out: List[TensorInfo] = []
        info = ffi.new("llmc_tensor_info *")
        for i in range(n):
            self._check(self._lib.llmc_model_tensor_info(ptr, i, info), ptr)
            ndim = int(info.ndim)
            if not 0 <= ndim <= 4:
                raise PyllmcError(f"tensor #{i}: the library reported ndim = {ndim}")
            out.append(
                TensorInfo(
                    name=string(info.name),
                    kind=KIND_NAMES.get(int(info.kind), str(int(info.kind))),
                    shape=tuple(int(info.shape[d]) for d in range(ndim)),
                    offset=int(info.offset),
                    numel=int(info.numel),
                )
            )
        self._infos = (self._generation, out)
        return out

    @staticmethod
    def _kind(kind: Union[str, int]) -> int:
        if isinstance(kind, str):
            if kind not in KINDS:
                raise InvalidArgumentError(f"unknown buffer kind {kind!r}; expected one of {list(KINDS)}")
            return KINDS[kind]
        k = int(kind)
        if k not in KIND_NAMES:
            raise InvalidArgumentError(f"unknown buffer kind {kind!r}")
        return k

    def _flat(self, k: int) -> Tuple[int, int, np.ndarray]:
        ptr = self._ptr()
        data = ffi.new("float **")
        numel = ffi.new("int64_t *")
        self._check(self._lib.llmc_model_buffer(ptr, k, data, numel), ptr)
        addr = int(ffi.cast("uintptr_t", data[0]))
        n = int(numel[0])
        cached = self._flats.get(k)
        if cached is not None and cached[0] == addr and cached[1] == n:
            return cached
        if n < 0 or (n > 0 and addr == 0):
            raise PyllmcError(f"the library reported an invalid {KIND_NAMES[k]} buffer")
        if n == 0:
            arr = np.zeros(0, dtype=np.float32)
        else:
            arr = np.asarray(_BufferExport(addr, n, self._h))
        entry = (addr, n, arr)
        self._flats[k] = entry
        return entry

    def _acts_by_copy(self, k: int) -> bool:
        """Whether tensors of kind k are read as host copies although the model is on the CPU:
        the activations of a bf16 CPU model, which keeps ln1, atty, ln2, fch_gelu and lnf as
        bf16 (the C core then hands out no float pointer to them, and its copies widen
        those to float32)."""
        if k != KINDS["acts"] or self._device == "cuda":
            return False
        if self._acts_split is None:
            ptr = self._ptr()
            data = ffi.new("float **")
            numel = ffi.new("int64_t *")
            st = int(self._lib.llmc_model_buffer(ptr, k, data, numel))
            if st not in (0, 6):  # 6: LLMC_ERR_UNSUPPORTED, no pointer to these
                self._check(st, ptr)
            self._acts_split = st == 6
        return self._acts_split

    def flat(self, kind: Union[str, int]) -> np.ndarray:
        """The whole buffer of one kind ("params", "grads", "adam_m", "adam_v", "acts")
        as a 1-D zero-copy float32 view; on a CUDA model, and for the activations of a bf16
        CPU model, a read-only host copy."""
        k = self._kind(kind)
        with self._lock:
            if self._device == "cuda" or self._acts_by_copy(k):
                return self._host_copy(k, 0, self._buffer_numel(k), (self._buffer_numel(k),), writeable=False)
            return self._flat(k)[2]

    def _buffer(self, k: int) -> Tuple[int, int]:
        ptr = self._ptr()
        data = ffi.new("float **")
        numel = ffi.new("int64_t *")
        self._check(self._lib.llmc_model_buffer(ptr, k, data, numel), ptr)
        return int(ffi.cast("uintptr_t", data[0])), int(numel[0])

    def _buffer_numel(self, k: int) -> int:
        # the length alone (data NULL): asking for the parameter POINTER would tell a CUDA
        # bf16 model that its weights may be written unseen (llmc.h, llmc_model_buffer)
        ptr = self._ptr()
        numel = ffi.new("int64_t *")
        self._check(self._lib.llmc_model_buffer(ptr, k, ffi.NULL, numel), ptr)
        return int(numel[0])

    def _host_copy(self, k: int, offset: int, numel: int, shape: Tuple[int, ...], writeable: bool = True) -> np.ndarray:
        ptr = self._ptr()
        flat = np.empty(int(numel), dtype=np.float32)
        if numel:
            self._check(self._lib.llmc_model_copy_to_host(ptr, k, int(offset), int(numel), ffi.from_buffer("float[]", flat)), ptr)
        out = flat.reshape(shape)
        out.flags.writeable = writeable
        return out

    def _find(self, k: int, name: Optional[str]) -> TensorInfo:
        kname = KIND_NAMES[k]
        for ti in self._tensor_infos():
            if ti.kind == kname and ti.name == name:
                return ti
        raise InvalidArgumentError(f"no {kname} tensor named {name!r}")

    def copy_to_host(self, kind: Union[str, int], name: Optional[str] = None) -> np.ndarray:
        """A new float32 array holding one named tensor of ``kind`` (or the whole buffer when
        ``name`` is None), copied from the model on either device."""
        k = self._kind(kind)
        with self._lock:
            if name is None:
                n = self._buffer_numel(k)
                return self._host_copy(k, 0, n, (n,))
            ti = self._find(k, name)
            return self._host_copy(k, ti.offset, ti.numel, ti.shape)

    def copy_from_host(self, kind: Union[str, int], name: Optional[str], value: Any) -> None:
        """Write ``value`` (any array-like of the tensor's shape, or of the whole buffer when
        ``name`` is None) into the model, on either device."""
        k = self._kind(kind)
        with self._lock:
            shape: Tuple[int, ...]
            if name is None:
                n = self._buffer_numel(k)
                offset, shape = 0, (n,)
            else:
                ti = self._find(k, name)
                offset, shape = ti.offset, ti.shape
            arr = np.ascontiguousarray(value, dtype=np.float32)
            if arr.shape != tuple(shape):
                raise InvalidArgumentError(
                    f"{KIND_NAMES[k]} {name if name is not None else 'buffer'}: got shape {arr.shape}, expected {tuple(shape)}"
                )
            ptr = self._ptr()
            if arr.size:
                self._check(self._lib.llmc_model_copy_from_host(ptr, k, int(offset), int(arr.size), ffi.from_buffer("float[]", arr)), ptr)

    def torch_view(self, kind: Union[str, int], name: Optional[str] = None):
        """A torch tensor sharing one named tensor's memory (the whole buffer when ``name`` is
        None): on the GPU for a CUDA model (no copy, via ``__cuda_array_interface__``), on the
        CPU for a CPU model. It keeps the C model alive like the numpy views do; after
        ``close()`` it is invalid. A parameter view of a bf16 model (on the CPU also the numpy
        views: ``params``, ``flat("params")``) makes that model rebuild its bf16 weight copy at
        every forward and backward from then on (writes through the view cannot be seen;
        otherwise it rebuilds once per change). A bf16 CPU model keeps that copy inside its
        master weights until the first parameter view (docs/bf16.md, "planes"): the view turns
        it, once, into float32 weights beside a separate copy, 2 bytes per parameter more."""
        import torch  # optional dependency: only this method needs it

        k = self._kind(kind)
        with self._lock:
            if self._acts_by_copy(k):
                raise UnsupportedError(
                    "the activations of a bf16 CPU model are stored partly as bf16 (ln1, atty, ln2, "
                    "fch_gelu, lnf) and cannot be viewed in place: use acts or copy_to_host, "
                    "which widen them to float32"
                )
            addr, n = self._buffer(k)
            shape: Tuple[int, ...]
            if name is None:
                offset, shape = 0, (n,)
            else:
                ti = self._find(k, name)
                offset, shape = ti.offset, ti.shape
            if self._device != "cuda":
                flat = self._flat(k)[2]
                return torch.from_numpy(flat[offset : offset + int(np.prod(shape, dtype=np.int64))].reshape(shape))
            numel = int(np.prod(shape, dtype=np.int64))
            export = _CudaBufferExport(addr + 4 * int(offset), shape, self._h)
            if numel == 0:
                return torch.empty(shape, dtype=torch.float32, device="cuda")
            return torch.as_tensor(export, device="cuda")

    def _named_views(self, k: int) -> Mapping[str, np.ndarray]:
        if self._device == "cuda" or self._acts_by_copy(k):
            with self._lock:
                kname = KIND_NAMES[k]
                infos = {ti.name: ti for ti in self._tensor_infos() if ti.kind == kname}
            return _HostCopies(self, k, infos)
        with self._lock:
            addr, n, flat = self._flat(k)
            gen = self._generation if k == KINDS["acts"] else 0
            cached = self._views.get(k)
            if cached is not None and cached[:3] == (addr, n, gen):
                return dict(cached[3])
            kname = KIND_NAMES[k]
            views: Dict[str, np.ndarray] = {}
            for ti in self._tensor_infos():
                if ti.kind != kname:
                    continue
                if ti.numel != int(np.prod(ti.shape, dtype=np.int64)) or ti.offset < 0 or ti.offset + ti.numel > n:
                    raise PyllmcError(
                        f"the library reported tensor {ti.name!r} (shape {ti.shape}, offset {ti.offset}) "
                        f"outside its {kname} buffer of {n} floats"
                    )
                views[ti.name] = flat[ti.offset : ti.offset + ti.numel].reshape(ti.shape)
            self._views[k] = (addr, n, gen, views)
            return dict(views)

    @property
    def params(self) -> Mapping[str, np.ndarray]:
        """Parameters by name: zero-copy float32 views (writable); on a CUDA model a read-only
        mapping of host copies made on lookup (see the module docstring)."""
        return self._named_views(KINDS["params"])

    @property
    def grads(self) -> Mapping[str, np.ndarray]:
        return self._named_views(KINDS["grads"])

    @property
    def adam_m(self) -> Mapping[str, np.ndarray]:
        return self._named_views(KINDS["adam_m"])

    @property
    def adam_v(self) -> Mapping[str, np.ndarray]:
        return self._named_views(KINDS["adam_v"])

    @property
    def acts(self) -> Mapping[str, np.ndarray]:
        """Activations of the last forward by name, shaped for its (B, T)."""
        return self._named_views(KINDS["acts"])

    @property
    def acts16_names(self) -> Tuple[str, ...]:
        """Names of the activations this model stores as bf16 (a bf16 CPU model: ln1, atty,
        ln2, fch_gelu of every layer and lnf, the matmul operands that only matmuls read,
        rounded as the matmul rounds them); empty otherwise. ``acts`` widens them to float32:
        their values are the bf16-rounded operands, not the layer's fp32 output."""
        with self._lock:
            if not self._acts_by_copy(KINDS["acts"]):
                return ()
            return tuple(ti.name for ti in self._tensor_infos()
                         if ti.kind == "acts" and ti.name.rsplit(".", 1)[-1] in ACTS16_BASES)

    def logits(self) -> np.ndarray:
        """Logits of the last forward, shape (B, T, V): a view without the padded columns."""
        with self._lock:
            self._ptr()
            if self._last_bt is None:
                raise StateError("no forward pass has completed yet: call forward() first")
            return self.acts["logits"][..., : self._config.vocab_size]


class _CudaBufferExport:
    """Presents float32 device memory to torch/cupy/numba via ``__cuda_array_interface__``;
    holds the handle so the C model outlives every tensor made from it."""

    def __init__(self, address: int, shape: Tuple[int, ...], handle: _Handle):
        self.__cuda_array_interface__ = {
            "version": 3,
            "shape": tuple(int(d) for d in shape),
            "typestr": "<f4",
            "data": (int(address), False),  # False: writable
            "strides": None,  # C-contiguous
            "stream": None,  # every C call has synchronised before returning
        }
        self._handle = handle


class _HostCopies(Mapping):
    """Named tensors of one kind of a CUDA model (or the activations of a bf16 CPU model):
    each lookup copies that tensor to the host (a read-only array). Iterating names copies
    nothing; ``items()``/``values()`` copy all."""

    def __init__(self, model: "Model", kind: int, infos: Dict[str, TensorInfo]):
        self._model = model
        self._kind = kind
        self._infos = infos

    def __getitem__(self, name: str) -> np.ndarray:
        ti = self._infos[name]  # KeyError for an unknown name, as a dict
        with self._model._lock:
            return self._model._host_copy(self._kind, ti.offset, ti.numel, ti.shape, writeable=False)

    def __iter__(self) -> Iterator[str]:
        return iter(self._infos)

    def __len__(self) -> int:
        return len(self._infos)

    def __repr__(self) -> str:
        which = "bf16 CPU" if self._model._acts_by_copy(self._kind) else "CUDA"
        return f"<{KIND_NAMES[self._kind]} of a {which} model: {len(self)} tensors, host copies on lookup>"
