"""Parity thresholds of bf16 precision (`pyllmc parity --precision bf16`), beside tolerance.py's
fp32 policy, whose compare() they parameterise.

The C core's bf16 rounds the OPERANDS of every matmul and attention GEMM to bf16 (8
significant bits) and keeps fp32 products, outputs and everything else. Its peer, PyTorch's
CPU autocast bf16 (torch.autocast("cpu", dtype=torch.bfloat16) around an fp32 model), rounds
the same operands and also the OUTPUTS of those products (qkv, attention scores and
probabilities, attproj, fch, fcproj, logits) and runs GELU and the softmaxes on bf16 tensors.
The two therefore differ by bf16 rounding noise (~2^-9 relative per rounding), far beyond
any fp32 test, and neither is "the" answer: the verdict is ATTRIBUTED only, by the same three
measures and factors as fp32 (tolerance.py: RMS, worst element, bulk), with autocast bf16 as
the peer whose own error against fp64 sets the limits, and rtol 0 (a direct comparison with
autocast passes a tensor only when it is bit-identical).

The lockstep engine anchors both references to the C core's state every step, so the
moments and parameters after an update are judged on C's own gradients: the sign of a
near-zero gradient is no longer chance between the sides, and no noise runs are needed.

Measured (lockstep, 2-3 steps, 1 and 2 threads, 2026-12-01; V101 B2 T16 L2 NH2 C64 randomized
and GPT-2 init, V257 B2 T130 L2 NH2 C64, V512 B4 T32 L4 NH4 C128), C's error against fp64 over
autocast's, per tensor after step 0: RMS median 0.72-1.00, max 2.43; worst element median
0.66-1.00, max 4.25; bulk median 0.73-1.00, max 3.59. All inside tolerance.py's factors (4, 6,
4); a bug moves the ratio by orders of magnitude (an injected fault of 4 in one element of
h1.fch is found at that tensor: parity_tests/test_bf16_parity.py).

The loss is the one scalar that is a noisy sample: the mean of B x T per-position losses whose
bf16 errors have random signs, so autocast's error on it is a single draw and C's error over it
ranged 0.01 to 67 over 64 clean runs (7 over the factor 4; `pyllmc parity --model d6 --steps 2
--batch 2 --seq 64` failed this way). It is judged against autocast's standard error of the
mean instead (tolerance.py: Means; benchmarks/results/parity_bf16_s3/).
"""
from __future__ import annotations

from typing import Any, Dict



def precision_policy(precision: str) -> Dict[str, Any]:
    """compare() keyword arguments for a precision: {} (tolerance.py's fp32 defaults) or bf16's."""
    if precision == "fp32":
        return {}
    if precision == "bf16":
        return {"rtol": 0.0}
    raise ValueError(f"unknown precision {precision!r}")
