#!/bin/bash
# quiet-machine measurements after the merge, in one hold of the heavy lock
cd /work/wt/integ
export PATH=/work/wt/integ/.venv/bin:$PATH
R=benchmarks/results
log() { echo "== $1 $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"; }
log "wasm host (sched on)"
python benchmarks/wasm_bench.py --model d6 --batch 4 --seq 64 --threads 2 --steps 10 --repeats 6 --out $R/wasm_s2
log "wasm host polling (sched off)"
python /tmp/poll/bench_nosched.py --only polling --model d6 --batch 4 --seq 64 --threads 2 --steps 10 --repeats 6 --out /tmp/quiet/wasm_s2_nosched
log "wasm core"
python benchmarks/wasm_core_bench.py --profile --out $R/wasm_core_quiet 2>&1 || python benchmarks/wasm_core_bench.py --out $R/wasm_core_quiet
log "dist"
python -m pyllmc.bench.dist --out $R/bench_dist_s2_quiet --repeats 2 --steps 6 --steps-accum 4
log "bf16"
OUT=$R/bench_bf16_s2_quiet
python -m pyllmc bench --model d12 --batch 4 --seq 64 --threads 2 \
  --impls c-core,c-core-bf16,torch-compact-fused,torch-hf-eager-fused-bf16,torch-compact-fused-bf16 \
  --repeats 5 --out $OUT/d12_b4_t64
log "bf16 t1024"
python -m pyllmc bench --model d12 --batch 1 --seq 1024 --threads 2 \
  --impls c-core-bf16,torch-hf-eager-fused-bf16,torch-compact-fused-bf16 \
  --repeats 3 --warmup 1 --no-kernels --out $OUT/d12_b1_t1024
log "bf16 compile"
python -m pyllmc bench --model d12 --batch 4 --seq 64 --threads 2 \
  --impls c-core-bf16,torch-compact-fused-compile-bf16 --repeats 5 --no-kernels --compile-timeout 600 \
  --out $OUT/d12_b4_t64_compile
log "done"
