"""Repeatability: two independent `perfscale bench` invocations of one configuration agree within their CIs.

    python benchmarks/bench_repeatability.py --out benchmarks/results/repeatability.json [-- extra bench flags]
    python benchmarks/bench_repeatability.py -- --scenario train --repeats 3   # CI over 3 processes per invocation

Runs the CLI twice (separate processes, separate workers), as a user would, with --json, and reports
both medians with their 95% CIs, whether the CIs overlap and whether each median lies in the other's CI.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/repeatability.json"))
    parser.add_argument("bench_args", nargs="*", default=["--scenario", "train"], help="flags for perfscale bench")
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(2):
            cmd = [sys.executable, "-c", "from perfscale.cli.app import run; run()", "bench", *args.bench_args,
                   "--store", f"{tmp}/r.sqlite", "--json"]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                print(out.stderr, file=sys.stderr)
                return 1
            runs.append(json.loads(out.stdout)["configurations"][0])
    a, b = runs
    overlap = a["ci_low"] <= b["ci_high"] and b["ci_low"] <= a["ci_high"]
    doc = {
        "command": "perfscale bench " + " ".join(args.bench_args), "date": time.strftime("%Y-%m-%d %H:%M"),
        # One process per invocation: its iterations; with --repeats N: N processes pooled (two-level CI).
        "runs": [{k: r.get(k) for k in ("unit", "median", "ci_low", "ci_high", "stop_reason", "peak_memory_bytes", "runs")}
                 | {"n": (r.get("time_per_iter") or {}).get("n")} for r in runs],
        "ratio_b_over_a": b["median"] / a["median"],
        "cis_overlap": overlap,
        "a_median_in_b_ci": b["ci_low"] <= a["median"] <= b["ci_high"],
        "b_median_in_a_ci": a["ci_low"] <= b["median"] <= a["ci_high"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))
    return 0 if overlap else 1


if __name__ == "__main__":
    sys.exit(main())
