"""Harness overhead: does `measure()` report the same step time as a bare timing loop?

    python benchmarks/bench_harness_overhead.py --out benchmarks/results/harness_overhead.json

Two views, same configuration (default: the `train` scenario on perfscale-tiny-llama):
1. across processes: `measure()` (fresh worker, stop rule, stats) vs a bare child process that builds
   the same scenario and times N iterations with perf_counter and nothing else; interleaved
   (H B H B ...), ratio of medians with a two-level bootstrap 95% CI. Target: |ratio - 1| < 2%.
2. in process: wall time of a block of iterations driven by the harness loop (timing wrapper, stop
   checks with bootstraps) vs the same number of bare iterations: the bookkeeping's share of wall time,
   and its cost per iteration in microseconds (an upper bound for any step).
3. `--torchrun` (issue 18): the torchrun path (`--nproc 1 --strategy ddp`: agent, one rank, gloo, DDP's
   reducer, the per-iteration slowest-rank all-reduce and stop broadcast) vs one plain process on the same
   work (same model, batch, seq and threads), each `measure()` in its own launch, interleaved
   (P T, T P, ...); the ratio of median step times with a two-level bootstrap 95% CI. Target: < 3%.

    python benchmarks/bench_harness_overhead.py --torchrun --repeats 4 --out benchmarks/results/harness_overhead_torchrun.json
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


def torchrun_view(args) -> int:
    import os
    from dataclasses import replace

    from perfscale.measure.bench_config import BenchConfig, MeasureOptions
    from perfscale.measure.runner import measure
    from perfscale.measure.stats import StopRule, ratio_of_medians

    plain = BenchConfig(scenario="train")
    plain = replace(plain, run=replace(plain.run, torch_num_threads=args.threads))
    ranked = replace(plain, nproc=1, strategy="ddp")
    options = MeasureOptions(stop=StopRule(min_iters=args.iters, min_time=3.0, max_time=30.0), warmup=2, gate=False)
    runs: dict[str, list] = {"plain": [], "torchrun": []}
    loads = []
    for rep in range(args.repeats):
        order = ("plain", "torchrun") if rep % 2 == 0 else ("torchrun", "plain")
        for name in order:
            r = measure(plain if name == "plain" else ranked, options)
            assert r.ok, (name, r.reason)
            runs[name].append(r)
            loads.append(os.getloadavg()[0])
            print(name, f"median {sorted(r.samples)[len(r.samples) // 2] * 1e3:.1f} ms", len(r.samples), "steps", file=sys.stderr)
    ratio = ratio_of_medians([r.samples for r in runs["plain"]], [r.samples for r in runs["torchrun"]])  # torchrun / plain
    comm = [row.get("comm_s") for r in runs["torchrun"] for row in r.ranks]
    doc = {
        "config": {"plain": plain.to_dict(), "torchrun": ranked.to_dict()}, "repeats": args.repeats, "iters": args.iters,
        "step_time_ratio_torchrun_over_plain": ratio.to_dict(), "overhead": ratio.ratio - 1,
        "within_3pct": ratio.ci_high < 1.03 and ratio.ci_low > 0.97,
        "below_3pct": ratio.ci_high < 1.03,
        "medians_ms": {k: [sorted(r.samples)[len(r.samples) // 2] * 1e3 for r in v] for k, v in runs.items()},
        "rank_comm_s": comm, "load_average_1min": loads, "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps({k: v for k, v in doc.items() if k != "config"}, indent=2))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/harness_overhead.json"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iters", type=int, default=40)
    parser.add_argument("--bare-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--torchrun", action="store_true", help="view 3: the torchrun path vs one plain process")
    parser.add_argument("--threads", type=int, default=1, help="--torchrun: threads of the process and of the rank")
    args = parser.parse_args()
    if args.bare_child:
        bare_child(args.bare_child, args.iters, warmup=2)
        return 0
    if args.torchrun:
        return torchrun_view(args)

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
