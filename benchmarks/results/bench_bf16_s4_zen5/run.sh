#!/bin/bash
# Issue 13's measurements on a Zen 5 EPYC (AVX512_BF16, no AMX), 2 cores, one after another:
# the planes A/B (whole d12 bf16 steps, planes against LLMC_BF16_MASTER=fp32, interleaved),
# the suite at d12 B4 T64 (with the kernel breakdown and torch.compile) and B1 T1024, and the
# bf16 parity run at d12.
cd "$(dirname "$0")/../../.."
OUT=benchmarks/results/bench_bf16_s4_zen5
log() { echo "== $1 $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"; }
log "planes A/B, d12 B4 T64 bf16, 4 rounds"
for r in 1 2 3 4; do
  for v in planes fp32; do
    echo -n "$v "; LLMC_BF16_MASTER=$v python benchmarks/results/bench_bf16_s3_quiet/ab_step.py bf16 4 64 5 | sort -t' ' -k10 -n | head -1
  done
  echo -n "fp32-precision "; python benchmarks/results/bench_bf16_s3_quiet/ab_step.py fp32 4 64 5 | sort -t' ' -k10 -n | head -1
done
log "suite d12 B4 T64"
python -m pyllmc bench --model d12 --batch 4 --seq 64 --threads 2 \
  --impls c-core,c-core-bf16,c-driver-bf16,torch-compact-fused,torch-hf-eager-fused-bf16,torch-compact-fused-bf16,torch-compact-fused-compile-bf16 \
  --repeats 7 --compile-timeout 600 --out $OUT/d12_b4_t64
log "suite d12 B1 T1024"
python -m pyllmc bench --model d12 --batch 1 --seq 1024 --threads 2 \
  --impls c-core,c-core-bf16,torch-compact-fused,torch-hf-eager-fused-bf16,torch-compact-fused-bf16 \
  --repeats 3 --warmup 1 --no-kernels --out $OUT/d12_b1_t1024
log "parity d12 bf16"
python -m pyllmc parity --model d12 --steps 3 --batch 4 --seq 64 --threads 2 --precision bf16 --out $OUT/parity_d12
log "done"
