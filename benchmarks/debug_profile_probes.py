"""`perfscale debug profile` verdicts of the three steps made to be bound by one thing each (a DataLoader that
sleeps, tiny operators in a Python loop, a large matmul), and of the default training scenario.

    python benchmarks/debug_profile_probes.py [--out benchmarks/results/debug_profile_probes.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from perfscale.debug.profile import debug_profile, profile_step  # noqa: E402
from perfscale.debug.profile_probes import PROBES  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/debug_profile_probes.json")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    import torch

    from perfscale.measure.bench_config import BenchConfig

    rows = []
    for expected, make in PROBES.items():
        r = profile_step(make(), what=f"probe:{expected}", steps=args.steps)
        rows.append({"probe": expected, "bound": r.bound, "correct": r.bound == expected, "fractions": r.fractions,
                     "step_time_s": r.step_time_s, "verdict": r.verdict})
        print(f"{expected:8s} -> {r.bound:8s} {r.verdict}")
    r = debug_profile(BenchConfig(scenario="train"), steps=args.steps)
    rows.append({"probe": "bench train (defaults)", "bound": r.bound, "fractions": r.fractions, "step_time_s": r.step_time_s,
                 "verdict": r.verdict, "top_ops": r.top_ops[:5]})
    print(f"train    -> {r.bound:8s} {r.verdict}")
    doc = {"torch": torch.__version__, "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "steps": args.steps, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
