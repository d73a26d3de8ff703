"""`python -m pyllmc.mutation` (nox -s mutation): the mutation campaign over core_c.

    python -m pyllmc.mutation --src REPO --out DIR [--work DIR] [--only ID,...] [--subset ci]
        [--clean-seeds 0,1,2] [--check]

--check only verifies the catalogue against the sources (every snippet exactly once).
Exit 0 when the targets are met (every bug caught, >= 95% localised, no false alarm on an
equivalent mutant or a clean run), 1 when not, 2 when the campaign cannot run.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m pyllmc.mutation", description=__doc__.split("\n\n")[0])
    p.add_argument("--src", required=True, help="the repository root (core_c/ inside)")
    p.add_argument("--out", default="out/mutation", help="where results.json and report.md go")
    p.add_argument("--work", default=None, help="build directory for the mutants (default OUT/work)")
    p.add_argument("--only", default=None, help="comma-separated mutant ids")
    p.add_argument("--subset", choices=["ci"], default=None, help="the small fixed subset CI runs")
    p.add_argument("--clean-seeds", default="0,1,2", help="seeds of the clean runs")
    p.add_argument("--check", action="store_true", help="only check the catalogue against the sources")
    a = p.parse_args(argv)
    from .catalogue import CI_SUBSET, MUTANTS, check_snippets
    from .runner import CampaignError, run_campaign
    from .report import write

    src = Path(a.src).resolve()
    if not (src / "core_c" / "src").is_dir():
        print(f"--src {a.src}: no core_c/src there", file=sys.stderr)
        return 2
    if a.check:
        problems = check_snippets(src / "core_c" / "src")
        for pr in problems:
            print(pr, file=sys.stderr)
        print(f"{len(MUTANTS)} mutants, {len(problems)} problems")
        return 1 if problems else 0
    ids = a.only.split(",") if a.only else (CI_SUBSET if a.subset == "ci" else None)
    try:
        seeds = [int(s) for s in a.clean_seeds.split(",") if s.strip()]
    except ValueError:
        print(f"--clean-seeds {a.clean_seeds!r}: expected integers", file=sys.stderr)
        return 2
    out = Path(a.out)
    work = Path(a.work) if a.work else out / "work"
    try:
        data = run_campaign(src, work, ids=ids, clean_seeds=seeds or [0], say=lambda s: print(s, flush=True))
    except CampaignError as e:
        print(f"mutation: {e}", file=sys.stderr)
        return 2
    paths = write(data, str(out))
    from .report import summary

    s = summary(data)
    print(f"bugs {s['bugs']}: caught {s['caught']} ({s['caught_pct']}%), localised {s['localised']} "
          f"({s['localised_pct']}%); equivalent {s['equivalent']}: false alarms {s['false_alarms']}; "
          f"clean runs {s['clean_runs']}: {s['clean_failed']} failed")
    print("wrote " + ", ".join(paths.values()))
    ok = (s["caught"] == s["bugs"] and (s["localised_pct"] or 0) >= 95.0 and s["false_alarms"] == 0
          and s["clean_failed"] == 0)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
