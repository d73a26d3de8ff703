#!/bin/bash
# build_variant NAME COMMIT [REPO]: core_c of COMMIT into $LIBS/b_NAME (Release, bench drivers)
LIBS=${LIBS:-/tmp/prof}
set -e
N=$1; C=$2; R=${3:-.}
rm -rf $LIBS/src_$N $LIBS/b_$N; mkdir -p $LIBS/src_$N
git -C $R archive $C core_c | tar -x -C $LIBS/src_$N
cmake -S $LIBS/src_$N/core_c -B $LIBS/b_$N -G Ninja -DCMAKE_BUILD_TYPE=Release -DLLMC_WASM=OFF -DLLMC_CUDA=OFF -DLLMC_BUILD_BENCH=ON >/dev/null
cmake --build $LIBS/b_$N >/dev/null
echo "built $N at $C"
