"""One process per build of core_c: `python -m pyllmc.mutation.worker --configs a,b --out F`
runs the harness (harness.py) against the libllmc named by PYLLMC_LIBRARY and writes the
results as JSON to F. A separate process, because a library is loaded once per process and
a mutant may crash it."""
from __future__ import annotations

import argparse
import json


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m pyllmc.mutation.worker")
    p.add_argument("--configs", required=True, help="comma-separated harness config names")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (each config runs once per seed)")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    from .harness import run_configs

    results = []
    for seed in [int(s) for s in a.seeds.split(",")]:
        for r in run_configs(a.configs.split(","), seed=seed):
            r["seed"] = seed
            results.append(r)
    from .. import _ffi

    out = {"library": str(_ffi.LIBRARY_PATH), "results": results}
    from ..atomic import atomic_write

    with atomic_write(a.out, "w") as f:
        json.dump(out, f, default=float)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
