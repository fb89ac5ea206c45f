"""Harness overhead: does `measure()` report the same step time as a bare timing loop?

    python benchmarks/bench_harness_overhead.py --out benchmarks/results/harness_overhead.json

Two views, same configuration (default: the `train` scenario on perfscale-tiny-llama):
1. across processes: `measure()` (fresh worker, stop rule, stats) vs a bare child process that builds
   the same scenario and times N iterations with perf_counter and nothing else; interleaved
   (H B H B ...), ratio of medians with a two-level bootstrap 95% CI. Target: |ratio - 1| < 2%.
2. in process: wall time of a block of iterations driven by the harness loop (timing wrapper, stop
   checks with bootstraps) vs the same number of bare iterations: the bookkeeping's share of wall time,
   and its cost per iteration in microseconds (an upper bound for any step).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def bare_child(config_json: str, iters: int, warmup: int) -> None:
    """Child mode: build the scenario, warm up, time `iters` bare iterations, print the samples."""
    import importlib

    from perfscale.measure.bench_config import BenchConfig
    from perfscale.measure.scenarios import SCENARIO_MODULES

    config = BenchConfig.from_dict(json.loads(config_json))
    scenario = importlib.import_module(SCENARIO_MODULES[config.scenario]).setup(config, "cpu")
    for _ in range(warmup):
        scenario.step()
    samples = []
    for _ in range(iters):
        t0 = time.perf_counter()
        scenario.step()
        samples.append(time.perf_counter() - t0)
    print(json.dumps(samples))


def in_process(config, iters: int) -> dict:
    import importlib

    from perfscale.measure.scenarios import SCENARIO_MODULES
    from perfscale.measure.scenarios.common import sync
    from perfscale.measure.stats import StopChecker, StopRule

    scenario = importlib.import_module(SCENARIO_MODULES[config.scenario]).setup(config, "cpu")
    for _ in range(2):
        scenario.step()
    walls = {"bare": [], "harness": []}
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(iters):
            scenario.step()
        walls["bare"].append(time.perf_counter() - t0)
        checker = StopChecker(StopRule(min_iters=2, min_time=0, max_time=1e9, target_rel_ci=1e-9))
        samples: list[float] = []
        t0 = time.perf_counter()
        for _ in range(iters):
            sync("cpu")
            s = time.perf_counter()
            scenario.step()
            sync("cpu")
            samples.append(time.perf_counter() - s)
            checker.check(samples, time.perf_counter() - t0)
        walls["harness"].append(time.perf_counter() - t0)
    bare, harness = min(walls["bare"]), min(walls["harness"])
    # Bookkeeping alone: the same loop with a no-op step.
    checker = StopChecker(StopRule(min_iters=2, min_time=0, max_time=1e9, target_rel_ci=1e-9))
    samples = []
    t0 = time.perf_counter()
    for _ in range(iters):
        s = time.perf_counter()
        samples.append(time.perf_counter() - s)
        checker.check(samples, time.perf_counter() - t0)
    per_iter_us = (time.perf_counter() - t0) / iters * 1e6
    return {"iters": iters, "bare_wall_s": walls["bare"], "harness_wall_s": walls["harness"],
            "wall_overhead": harness / bare - 1, "bookkeeping_us_per_iter": per_iter_us}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/harness_overhead.json"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iters", type=int, default=40)
    parser.add_argument("--bare-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_child:
        bare_child(args.bare_child, args.iters, warmup=2)
        return 0

    from perfscale.measure.bench_config import BenchConfig, MeasureOptions
    from perfscale.measure.runner import measure
    from perfscale.measure.stats import StopRule, ratio_of_medians

    config = BenchConfig(scenario="train")
    options = MeasureOptions(stop=StopRule(min_iters=args.iters, min_time=3.0, max_time=60.0), warmup=2, gate=False)
    harness, bare = [], []
    for _ in range(args.repeats):
        r = measure(config, options)
        assert r.ok, r.reason
        harness.append(r.samples)
        out = subprocess.run([sys.executable, __file__, "--bare-child", json.dumps(config.to_dict()), "--iters", str(args.iters)],
                             capture_output=True, text=True, check=True)
        bare.append(json.loads(out.stdout.strip().splitlines()[-1]))
    ratio = ratio_of_medians(bare, harness)  # harness median / bare median
    doc = {
        "config": config.to_dict(), "repeats": args.repeats,
        "across_processes": {"ratio_harness_over_bare": ratio.to_dict(), "within_2pct": abs(ratio.ratio - 1) < 0.02,
                             "harness_medians": [sorted(s)[len(s) // 2] for s in harness], "bare_medians": [sorted(s)[len(s) // 2] for s in bare]},
        "in_process": in_process(config, args.iters),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps({k: v for k, v in doc.items() if k != "config"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
