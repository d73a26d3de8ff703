#!/bin/bash
# the bf16 benchmark runs of the second session (kept bf16 weight copy, 1024-deep AMX panels),
# in one hold of the heavy lock; run from anywhere, writes next to this file
cd "$(dirname "$0")/../../.."
OUT=benchmarks/results/bench_bf16_s2
echo "lock acquired $(date -u +%H:%M:%S)"
python -m pyllmc bench --model d12 --batch 4 --seq 64 --threads 2 \
  --impls c-core,c-core-bf16,torch-compact-fused,torch-hf-eager-fused-bf16,torch-compact-fused-bf16 \
  --repeats 5 --out $OUT/d12_b4_t64
echo "d12 B4 T64 done $(date -u +%H:%M:%S)"
python -m pyllmc bench --model d12 --batch 1 --seq 1024 --threads 2 \
  --impls c-core-bf16,torch-hf-eager-fused-bf16,torch-compact-fused-bf16 \
  --repeats 3 --warmup 1 --no-kernels --out $OUT/d12_b1_t1024
echo "d12 B1 T1024 done $(date -u +%H:%M:%S)"
python -m pyllmc bench --model d12 --batch 4 --seq 64 --threads 2 \
  --impls c-core-bf16,torch-compact-fused-compile-bf16 --repeats 5 --no-kernels --compile-timeout 600 \
  --out $OUT/d12_b4_t64_compile
echo "compile done $(date -u +%H:%M:%S)"
