"""Tabulate the bf16 parity runs of run_parity.sh: for lockstep/NAME/parity_detail.json (deleted
afterwards unless --keep: megabytes per run) write lockstep/NAME/summary.json and print one line per
run: rows, failures, the worst share of a limit (tol_ratio), the largest bare ratio of the C
core's error against fp64 over autocast's (c/64 ÷ 32/64, the column of the report) among
activations+gradients, and the loss rows' share of their limits (and, in brackets, under the
old baseline: autocast's single draw, re-judged from the same row)."""
import glob
import json
import os
import sys

from pyllmc.reference.tolerance import judge

here = os.path.dirname(os.path.abspath(__file__))
keep = "--keep" in sys.argv
for d in sorted(glob.glob(os.path.join(here, "lockstep", "*"))):
    det = os.path.join(d, "parity_detail.json")
    if os.path.exists(det):
        r = json.load(open(det))
        rows = [t for t in r["tensors"] if t["step"] >= 1]
        judged = [t for t in rows if "tol_ratio" in t]
        worst = sorted(judged, key=lambda t: -t["tol_ratio"])[:10]
        fb = [t for t in judged if t.get("phase") in ("forward", "backward") and t["name"] not in ("loss", "grad_norm")]
        s = dict(passed=r["passed"], rows=len(r["tensors"]), failed=sum(not t["passed"] for t in r["tensors"]),
                 config=r["config"], seconds=r["seconds"],
                 worst=[dict(name=t["name"], step=t["step"], tol_ratio=t["tol_ratio"],
                             attributed_ratio=t.get("attributed_ratio")) for t in worst],
                 max_bare_ratio_fwd_bwd=max((t.get("attributed_ratio") or 0) for t in fb) if fb else None,
                 loss=[dict(step=t["step"], tol_ratio=t["tol_ratio"], c_err=t["max_abs_vs_64"],
                            draw=t["runs_max_vs_64"][0], se=t.get("mean_se_32_vs_64"),
                            old_tol_ratio=judge({k: v for k, v in t.items()
                                                 if k not in ("mean_se_32_vs_64", "mean_of_n")})["tol_ratio"])
                       for t in rows if t["name"] == "loss"],
                 first_divergence=r["first_divergence"]["name"] if r["first_divergence"] else None)
        json.dump(s, open(os.path.join(d, "summary.json"), "w"), indent=1)
        if not keep:
            os.remove(det)
    p = os.path.join(d, "summary.json")
    if not os.path.exists(p):
        print(f"{os.path.basename(d):<16} no result")
        continue
    s = json.load(open(p))
    w = s["worst"][0]
    loss = ", ".join(f"{x['tol_ratio']:.2f} [{x['old_tol_ratio']:.2f}]" for x in s["loss"])
    print(f"{os.path.basename(d):<16} {'PASS' if s['passed'] else 'FAIL'} {s['rows'] - s['failed']}/{s['rows']} "
          f"worst {w['tol_ratio']:.3f} ({w['name']}@{w['step']})  bare c/64÷32/64 max {s['max_bare_ratio_fwd_bwd']:.2f}  "
          f"loss {loss}  {s['seconds']:.0f} s")
