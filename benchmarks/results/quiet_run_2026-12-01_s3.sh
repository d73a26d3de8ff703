#!/bin/bash
# quiet-machine measurements of the third session, after the merge (the A/B variants were
# built first with bench_bf16_s3_quiet/build_variant.sh, one per commit of its README's table)
cd "$(dirname "$0")/../.."
R=benchmarks/results
log() { echo "== $1 $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"; }
log "A/B of the session's C changes (whole bf16 steps, interleaved)"
bash $R/bench_bf16_s3_quiet/ab_all.sh 2>&1 | tee $R/bench_bf16_s3_quiet/ab_steps.txt
OUT=$R/bench_bf16_s3_quiet
log "bf16 d12 B4 T64 suite"
python -m pyllmc bench --model d12 --batch 4 --seq 64 --threads 2 \
  --impls c-core,c-core-bf16,torch-compact-fused,torch-hf-eager-fused-bf16,torch-compact-fused-bf16 \
  --repeats 5 --out $OUT/d12_b4_t64
log "bf16 t1024"
python -m pyllmc bench --model d12 --batch 1 --seq 1024 --threads 2 \
  --impls c-core,c-core-bf16,torch-hf-eager-fused-bf16,torch-compact-fused-bf16 \
  --repeats 3 --warmup 1 --no-kernels --out $OUT/d12_b1_t1024
log "bf16 compile"
python -m pyllmc bench --model d12 --batch 4 --seq 64 --threads 2 \
  --impls c-core-bf16,torch-compact-fused-compile-bf16 --repeats 5 --no-kernels --compile-timeout 600 \
  --out $OUT/d12_b4_t64_compile
log "wasm train_step loop, longer"
python benchmarks/wasm_bench.py --only train_step --model d6 --batch 4 --seq 64 --threads 2 --steps 20 --repeats 8 --out $R/wasm_s3_train_step
log "done"
