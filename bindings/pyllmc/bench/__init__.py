"""pyllmc.bench: speed, memory and scaling of the C core against PyTorch, and the CI gate.

    pyllmc bench --model d12 --batch 4 --seq 64 --threads 2 --out DIR   (see cli_bench.py)
    python -m pyllmc.bench.gate                                          (nox -s bench_gate)

Modules: spec (shapes, FLOPs, jobs), impls (the implementations), torch_gpt2 (the compact
PyTorch GPT-2), worker/procs (one process per measurement), cdriver (C drivers in
core_c/bench), kernels, external (llm.c via $LLMC_BIN), stats, suite, report, gate.
Only spec/stats are imported here; the rest load on use (torch is never imported by the
parent process of a benchmark).
"""

from .spec import Job, Shape, SpecError, parse_model
from .stats import fit_power, summarize

__all__ = ["Job", "Shape", "SpecError", "parse_model", "fit_power", "summarize"]
