"""pyllmc.reference: the PyTorch GPT-2 reference (Hugging Face transformers) that the C core
is proven against: loading, exact weight/checkpoint conversion, activation and gradient
capture in the C core's names, reference AdamW steps, and the tolerance policy."""
from .convert import (
    LAYER_PARAMS, MATRIX_PARAMS, PARAM_NAMES, CheckpointFormatError, as_llmc_config,
    bf16_bits_to_f32, check_params, f32_to_bf16_bits, hf_config_from, hf_to_params,
    load_hf_dir_params, load_into_model, model_params, model_tensors, num_params, pad_vocab, param_shapes,
    params_to_hf_model, params_to_hf_state_dict, read_llmc_checkpoint, round_to_bf16,
    save_hf_dir, split_layers, write_llmc_checkpoint,
)
from .hf import (
    is_size_descriptor, load_reference, make_config, perturb_ulp, prepare_reference, random_model,
    randomize_params, size_config, to_dtype,
)
from .capture import Capture, activation_names, capture, lm_losses, param_grads
from .torch_optim import ReferenceTrainer, adamw_on_arrays, adamw_param_groups, total_grad_norm
from .tolerance import compare, compare_dicts, first_failure, format_rows
from .parity import c_activations, compare_scalar, forward_backward_rows, padded_columns, state_rows
from .lockstep import (
    LockstepConfig, LockstepResult, backward_param_order, forward_param_order, load_reference_for,
    make_batches, run_lockstep, run_parity, tensor_kind,
)

__all__ = [
    "PARAM_NAMES", "LAYER_PARAMS", "MATRIX_PARAMS", "CheckpointFormatError",
    "as_llmc_config", "bf16_bits_to_f32", "check_params", "f32_to_bf16_bits", "hf_config_from",
    "hf_to_params", "load_hf_dir_params", "load_into_model", "model_params", "model_tensors", "num_params",
    "pad_vocab", "param_shapes", "params_to_hf_model", "params_to_hf_state_dict",
    "read_llmc_checkpoint", "round_to_bf16", "save_hf_dir", "split_layers",
    "write_llmc_checkpoint", "is_size_descriptor", "load_reference", "make_config", "perturb_ulp",
    "prepare_reference", "random_model", "randomize_params", "size_config",
    "to_dtype", "Capture", "activation_names", "capture", "lm_losses", "param_grads",
    "ReferenceTrainer", "adamw_on_arrays", "adamw_param_groups", "total_grad_norm",
    "compare", "compare_dicts", "first_failure", "format_rows", "c_activations", "compare_scalar",
    "forward_backward_rows", "padded_columns", "state_rows", "LockstepConfig", "LockstepResult",
    "backward_param_order", "forward_param_order", "load_reference_for", "make_batches", "run_lockstep",
    "run_parity", "tensor_kind",
]
