#!/bin/sh
# Taken on a quiet machine (nothing else running), from the repository root, in this order:
#   windows_before_release/  python benchmarks/wasm_bench.py --only polling_windows --repeats 6 --windows 10
#                            (host without llmc_release_threads; arms guest, native, python)
#   windows_all/             the same command with the release in the host
# then the commands below. The guest_wait arm in windows_guest/ (the guest pacing its polls
# with job_wait(job, 1)) was measured, then removed from the host and from the benchmark.
set -e
python benchmarks/wasm_bench.py --only polling_windows --arms guest,guest_wait --repeats 8 --windows 10 \
    --out benchmarks/results/wasm_s4/windows_guest
python benchmarks/wasm_bench.py --only job --repeats 6 --steps 20 --out benchmarks/results/wasm_s4/job
python benchmarks/results/wasm_s4/job_without_release.py --only job --repeats 6 --steps 20 \
    --out benchmarks/results/wasm_s4/job_without_release
# last, on the final code:
python benchmarks/wasm_bench.py --only polling_windows --arms guest --repeats 8 --windows 10 \
    --out benchmarks/results/wasm_s4/windows_final
