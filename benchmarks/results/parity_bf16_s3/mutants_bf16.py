"""Real bf16 bugs against the bf16 checks (benchmarks/results/parity_bf16_s3/README.md): each
mutant is one edit of core_c/src, built out of tree by pyllmc.mutation's builder and loaded with
PYLLMC_LIBRARY, then run through `pyllmc parity --precision bf16` (d2, 2 steps, B2 T64, 1
thread: the new policy) and the model-level bf16 test files (all of them: no -x). Prints one JSON line per mutant.

Run from the repository root:  .venv/bin/python benchmarks/results/parity_bf16_s3/mutants_bf16.py WORKDIR [ID...]
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from pyllmc.mutation.runner import build, prepare_sources

MUTANTS = [
    dict(id="clean", file=None, what="no edit: the installed library"),
    dict(id="bf16_act_truncated", file="gemm_bf16.c",
         old="__m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7FFF), odd)), 16);",
         new="__m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_and_si512(odd, _mm512_setzero_si512())), 16);",
         what="the AVX-512 packs of fp32 operands (the activations, A of every GEMM and B of the weight "
              "gradients) truncate to bf16 instead of rounding to nearest even"),
    dict(id="bf16_all_truncated", file="bf16.h",
         old="uint32_t r = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;",
         new="uint32_t r = (u + 0u * ((u >> 16) & 1u)) >> 16;",
         what="the scalar rounding (the kept weight image, ragged pack edges) truncates"),
    dict(id="bf16_image_stale_after_adamw", file="model.c",
         old="adamw_update16(m->params + off, m->params16 ? m->params16 + off : NULL, m->grads + off,",
         new="adamw_update16(m->params + off, NULL, m->grads + off,",
         what="the AdamW step leaves the kept bf16 weight image stale (still marked current)"),
    dict(id="ce_loss_from_bf16_logit", file="crossentropy.c",
         old="const float loss = (float)(lse - x[targets[n]]);",
         new="const float loss = (float)(lse - llmc_bf16_to_float(llmc_bf16_bits(x[targets[n]])));",
         also=[("crossentropy.c", '#include "vecmath.h"', '#include "vecmath.h"\n#include "bf16.h"')],
         what="the per-position loss takes the target's logit rounded to bf16"),
    dict(id="bf16_range_image_stale", file="adamw.c",
         old="uint16_t *p16 = m->params16 && m->params16_valid ? m->params16 + a : NULL;",
         new="uint16_t *p16 = NULL;",
         what="the ZeRO-1 slice update (adamw_step_range) leaves the kept bf16 weight image stale"),
]
TESTS = ["parity_tests/test_bf16_operands.py", "parity_tests/test_bf16_weights.py", "parity_tests/test_bf16_parity.py",
         "parity_tests/test_bf16_training.py"]


def main() -> None:
    work = Path(sys.argv[1]).resolve()
    ids = sys.argv[2:]
    root = Path.cwd()
    for m in MUTANTS:
        if ids and m["id"] not in ids:
            continue
        d = work / m["id"]
        d.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        env = dict(os.environ)
        if m["file"] is not None:
            src = prepare_sources(root, d, m)
            for f, a, b in m.get("also", ()):  # further edits of a mutant that needs more than one
                t = (src / f).read_text()
                assert t.count(a) == 1, (m["id"], a)
                (src / f).write_text(t.replace(a, b))
            env["PYLLMC_LIBRARY"] = str(build(root, src, d / "build", d / "build.log"))
        out = {"id": m["id"], "what": m["what"], "build_s": round(time.time() - t0)}
        p = subprocess.run([sys.executable, "-m", "pyllmc", "parity", "--model", "d2", "--steps", "2", "--batch", "2",
                            "--seq", "64", "--threads", "1", "--precision", "bf16", "--quiet", "--no-heatmap",
                            "--out", str(d / "parity")], env=env, capture_output=True, text=True)
        lines = p.stdout.strip().splitlines()
        out["parity_exit"] = p.returncode
        out["parity_summary"] = lines[-1] if lines else p.stderr[-300:]
        out["parity_first_divergence"] = next((x for x in lines if x.startswith("first divergence")), None)
        p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS], env=env,
                           capture_output=True, text=True)
        tail = p.stdout.strip().splitlines()
        out["tests_exit"] = p.returncode
        out["tests_summary"] = tail[-1] if tail else p.stderr[-300:]
        out["tests_failed"] = [x for x in tail if x.startswith("FAILED")]
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
