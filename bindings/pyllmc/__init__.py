"""pyllmc: GPT-2 training through a hand-written C core, bound with cffi, checked against PyTorch."""

__version__ = "0.1.0"

from . import errors
from ._ffi import ABI_VERSION, LIBRARY_PATH
from .errors import (
    BadFormatError,
    FileError,
    InvalidArgumentError,
    NonFiniteError,
    OutOfMemoryError,
    PyllmcError,
    StateError,
    UnsupportedError,
)
from .model import (
    Model,
    ModelOptions,
    TensorInfo,
    cuda_available,
    cuda_built,
    cuda_info,
    release_threads,
)
from .model_source import load_model
from .callbacks import (
    CheckpointCallback,
    MetricsCallback,
    ProgressCallback,
    SamplingCallback,
    TensorBoardCallback,
)
from .shapes import GPTConfig, clip_coefficient, pad_vocab
from .trainer import Callback, History, Trainer, TrainerConfig, TrainStatus

__all__ = [
    "__version__",
    "ABI_VERSION",
    "LIBRARY_PATH",
    "GPTConfig",
    "Model",
    "ModelOptions",
    "TensorInfo",
    "pad_vocab",
    "clip_coefficient",
    "cuda_available",
    "cuda_built",
    "cuda_info",
    "release_threads",
    "load_model",
    "Trainer",
    "TrainerConfig",
    "TrainStatus",
    "Callback",
    "MetricsCallback",
    "ProgressCallback",
    "SamplingCallback",
    "CheckpointCallback",
    "TensorBoardCallback",
    "History",
    "errors",
    "PyllmcError",
    "InvalidArgumentError",
    "NonFiniteError",
    "OutOfMemoryError",
    "FileError",
    "BadFormatError",
    "StateError",
    "UnsupportedError",
]
