#!/bin/bash
# The quiet-window A/B: every variant in turn, R rounds, whole bf16 d12 steps (min per process,
# min over rounds), then fp32 for main and the final variant.
cd "$(dirname "$0")"
R=${R:-4}
echo "== bf16 d12 B4 T64 $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
./ab_steps.sh $R main lay pf wid nt st act dl att x xns fin $EXTRA
echo "== bf16 d12 B1 T1024 $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
B=1 T=1024 ./ab_steps.sh 2 main dl att x xns fin $EXTRA
echo "== fp32 d12 B4 T64 $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
PREC=fp32 ./ab_steps.sh 3 main fin $EXTRA
echo "== done $(date -u +%H:%M:%S)"
