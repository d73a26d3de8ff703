#!/bin/bash
# ab_steps.sh ROUNDS VARIANT...: whole d12 training steps (ab_step.py) of each variant's
# library in turn, ROUNDS times; prints, per variant, the line of its fastest process (each
# process: 2 warm-up steps, then the fastest of 5). PREC (bf16), B (4), T (64) choose the run;
# LIBS is the folder of the builds (build_variant.sh), PY the Python with pyllmc installed.
R=$1; shift
for r in $(seq $R); do for v in "$@"; do echo -n "$v "; PYLLMC_LIBRARY=${LIBS:-/tmp/prof}/b_$v/libllmc.so ${PY:-python} $(dirname "$0")/ab_step.py ${PREC:-bf16} ${B:-4} ${T:-64} 5 | sort -t' ' -k10 -n | head -1; done; done | sort | awk '{k=$1; t=$11; if(!(k in best) || t<best[k]) {best[k]=t; line[k]=$0}} END{for(k in line) print line[k]}'
