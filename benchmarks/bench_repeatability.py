"""Repeatability: independent `perfscale bench` invocations of one configuration agree within their intervals.

    python benchmarks/bench_repeatability.py --out benchmarks/results/repeatability.json [--pairs 3] [-- extra bench flags]
    python benchmarks/bench_repeatability.py -- --scenario train --repeats 3   # 3 processes per invocation
    python benchmarks/bench_repeatability.py --seed 3 --pairs 3 -- --scenario train --max-time 15

--seed N first runs N invocations of another configuration (--seed-args), so that the store holds
this machine's history as a user's store does, and the drift behind every interval of the pairs is
learnt from other invocations (bench leaves the current one out).

Runs the CLI 2 x --pairs times in a row (separate processes, separate workers), as a user would, with
--json and one results store shared by all invocations (as a user's default store is), and reports
for each consecutive pair: both medians with their re-run intervals (`ci_low`/`ci_high`: the
within-run CI widened by the machine's drift, measure/drift.py) and their within-run CIs, whether
the intervals overlap and whether each median lies in the other's interval.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _agree(a: dict, b: dict, low: str, high: str) -> dict:
    return {"overlap": a[low] <= b[high] and b[low] <= a[high],
            "a_median_in_b": b[low] <= a["median"] <= b[high], "b_median_in_a": a[low] <= b["median"] <= a[high]}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/repeatability.json"))
    parser.add_argument("--pairs", type=int, default=1, help="pairs of invocations, run one after another")
    parser.add_argument("--seed", type=int, default=0, help="invocations of --seed-args run first (machine history)")
    parser.add_argument("--seed-args", default="--scenario train --batch 2 --seq 64 --max-time 10",
                        help="the seed configuration's bench flags")
    parser.add_argument("bench_args", nargs="*", default=["--scenario", "train"], help="flags for perfscale bench")
    args = parser.parse_args()
    runs, seeds = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(args.seed + 2 * args.pairs):
            seeding = index < args.seed
            flags = args.seed_args.split() if seeding else args.bench_args
            cmd = [sys.executable, "-c", "from perfscale.cli.app import run; run()", "bench", *flags,
                   "--store", f"{tmp}/r.sqlite", "--json"]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                print(out.stderr, file=sys.stderr)
                return 1
            run = json.loads(out.stdout)["configurations"][0]
            row = ({k: run.get(k) for k in ("unit", "median", "ci_low", "ci_high", "within_run_ci_low",
                                            "within_run_ci_high", "machine_drift", "stop_reason", "runs")}
                   | {"finished_at": time.strftime("%H:%M:%S"), "seed": seeding})
            (seeds if seeding else runs).append(row)
            print(json.dumps(row), flush=True)
    pairs = []
    for a, b in zip(runs[0::2], runs[1::2], strict=False):  # an odd last run has no partner
        pairs.append({"ratio_b_over_a": b["median"] / a["median"],
                      "rerun_interval": _agree(a, b, "ci_low", "ci_high"),
                      "within_run_ci": _agree(a, b, "within_run_ci_low", "within_run_ci_high")})
    doc = {"command": "perfscale bench " + " ".join(args.bench_args), "date": time.strftime("%Y-%m-%d %H:%M"),
           "seed_command": ("perfscale bench " + args.seed_args) if args.seed else None, "seed_runs": seeds,
           "runs": runs, "pairs": pairs,
           "pairs_agreeing": f"{sum(p['rerun_interval']['overlap'] for p in pairs)}/{len(pairs)} (re-run intervals overlap); "
                             f"{sum(p['within_run_ci']['overlap'] for p in pairs)}/{len(pairs)} (within-run CIs overlap)"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps({"pairs": pairs, "pairs_agreeing": doc["pairs_agreeing"]}, indent=2))
    return 0 if all(p["rerun_interval"]["overlap"] for p in pairs) else 1


if __name__ == "__main__":
    sys.exit(main())
