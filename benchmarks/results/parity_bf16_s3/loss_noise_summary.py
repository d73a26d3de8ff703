"""Summarise loss_noise_*.jsonl (loss_noise.py's output): per file, in units of the reference's
(autocast's) standard error of the mean, SE = rms(e_t(losses)) / sqrt(B*T), the C core's and
autocast's loss errors against fp64; the ratio |e_c| / |e_t| (what the old baseline judged);
the old verdict's failures (|e_c| > 4 |e_t| + 2 ulp, tolerance.py's RMS factor and floor) and
the new ratio |e_c| / (4 SE + 2 ulp); the C core's kernel checks (max over runs)."""
import glob
import json
import math
import os
import sys

import numpy as np

EPS32 = 2.0 ** -23
here = os.path.dirname(os.path.abspath(__file__))
print(f"{'file':<28} {'runs':>4} {'|e_c|/SE max':>12} {'rms':>5} {'|e_t|/SE max':>12} {'rms':>5} "
      f"{'|e_c|/|e_t| med':>15} {'max':>7} {'old fails':>9} {'new max':>7} {'logit/sum|t|':>12} {'ce err':>8} {'mean err':>8}")
for f in sorted(glob.glob(os.path.join(sys.argv[1] if len(sys.argv) > 1 else here, "loss_noise_*.jsonl"))):
    rs = [json.loads(line) for line in open(f)]
    se = np.array([r["rms_tok_err_t"] / math.sqrt(r["B"] * r["T"]) for r in rs])
    ec, et = np.abs([r["e_c"] for r in rs]), np.abs([r["e_t"] for r in rs])
    floor = np.array([2 * EPS32 * abs(r["loss64"]) for r in rs])
    old_fail = int(np.sum(ec > 4 * et + floor))
    new = ec / (4 * se + floor)
    print(f"{os.path.basename(f):<28} {len(rs):>4} {np.max(ec / se):>12.2f} {np.sqrt(np.mean((ec / se) ** 2)):>5.2f} "
          f"{np.max(et / se):>12.2f} {np.sqrt(np.mean((et / se) ** 2)):>5.2f} {np.median(ec / et):>15.2f} "
          f"{np.max(ec / et):>7.1f} {old_fail:>9} {np.max(new):>7.2f} "
          f"{max(r['logit_err_over_sum_terms'] for r in rs):>12.1e} {max(r['loss_kernel_max_err'] for r in rs):>8.1e} "
          f"{max(r['loss_vs_mean_of_losses'] for r in rs):>8.1e}")
