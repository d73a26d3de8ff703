#!/usr/bin/env bash
# The bf16 parity runs of benchmarks/results/parity_bf16_s3/README.md, from the repository root:
#   bash benchmarks/results/parity_bf16_s3/run_parity.sh [NAME...]   (default: all but d12)
# Each run writes lockstep/NAME/{parity.json,report.txt,terminal.txt,time.txt}; summarize.py tabulates them. The lock
# keeps heavy jobs of a shared machine from overlapping.
set -u
R=benchmarks/results/parity_bf16_s3
PY=${PY:-.venv/bin/python}
declare -A RUNS=(
  [d2_B4T64_s0]="--model d2 --steps 3 --batch 4 --seq 64 --seed 0"
  [d2_B4T64_s1]="--model d2 --steps 3 --batch 4 --seq 64 --seed 1"
  [d2_B4T64_s2]="--model d2 --steps 3 --batch 4 --seq 64 --seed 2"
  [d2_B1T128_s0]="--model d2 --steps 3 --batch 1 --seq 128 --seed 0"
  [d2_B8T32_s1]="--model d2 --steps 3 --batch 8 --seq 32 --seed 1"
  [d2r_B2T130_s0]="--model d2 --steps 3 --batch 2 --seq 130 --seed 0 --randomize"
  [d6_B2T64_s0]="--model d6 --steps 2 --batch 2 --seq 64 --seed 0"
  [d6_B2T64_s1]="--model d6 --steps 2 --batch 2 --seq 64 --seed 1"
  [d6_B2T64_s2]="--model d6 --steps 2 --batch 2 --seq 64 --seed 2"
  [d6_B4T64_s3]="--model d6 --steps 3 --batch 4 --seq 64 --seed 3"
  [d6_B1T256_s4]="--model d6 --steps 2 --batch 1 --seq 256 --seed 4"
  [d12_B4T64_s0]="--model d12 --steps 2 --batch 4 --seq 64 --seed 0"
)
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  names=(d2_B4T64_s0 d2_B4T64_s1 d2_B4T64_s2 d2_B1T128_s0 d2_B8T32_s1 d2r_B2T130_s0
         d6_B2T64_s0 d6_B2T64_s1 d6_B2T64_s2 d6_B4T64_s3 d6_B1T256_s4)
fi
for n in "${names[@]}"; do
  out=$R/lockstep/$n
  mkdir -p "$out"
  echo "$ python -m pyllmc parity ${RUNS[$n]} --precision bf16 --quiet --no-heatmap --out $out" > "$out/terminal.txt"
  /usr/bin/time -v flock /tmp/pyllmc-heavy.lock $PY -m pyllmc parity ${RUNS[$n]} --precision bf16 --quiet --no-heatmap \
    --out "$out" >> "$out/terminal.txt" 2> "$out/time.txt"
  echo "exit $?" >> "$out/terminal.txt"
  rm -f "$out/heatmap.html"
  tail -2 "$out/terminal.txt"
done
