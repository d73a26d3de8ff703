#!/usr/bin/env bash
# benchmarks/gpu/fetch_wheels.sh - download, where pip can reach PyPI, the wheels the GPU
# machine lacks for pyllmc (its image has torch, numpy, pytest, hypothesis, scikit-build-core
# and CMake, but no cffi), for its Python 3.12 on x86-64, into .whl/ (git-ignored). Carry
# .whl to the GPU machine; run_all.sh installs them into its private site directory.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="${PY:-python3}"
"$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$ROOT/.whl" cffi==2.1.1 pycparser==3.12
ls -l "$ROOT/.whl"
