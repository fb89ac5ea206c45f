"""Processes x threads on this CPU, and the cost of the torchrun path (issue 18).

    python benchmarks/dist_cpu_layouts.py --out benchmarks/results/dist_cpu_layouts.json

One `compare` (interleaved, fresh processes, two-level bootstrap CIs) of the tiny llama's train step
(per rank: batch 2 x seq 64, fp32):
  A  one process, --threads 1                            (1 x 1)
  B  one rank under torchrun, DDP, --threads 1            (the torchrun path on the same work as A)
  C  one process, --threads <cores>                       (1 x cores)
  D  <cores> ranks, DDP, --threads 1                      (cores x 1; global batch x cores)
B vs A is the harness overhead of the torchrun path (target < 3% of step time; it includes DDP's
reducer, which at world size 1 has nothing to send). C and D vs A say what wins on this machine, per
token, and A separates the cost of OpenMP threads on a busy machine from what more processes buy.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/dist_cpu_layouts.json"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from perfscale.cli.inline_config import parse_inline
    from perfscale.measure.bench_config import BenchConfig, MeasureOptions
    from perfscale.measure.compare import compare
    from perfscale.measure.stats import StopRule

    cores = len(os.sched_getaffinity(0))
    base = parse_inline("batch=2,seq=64", BenchConfig())
    configs = [parse_inline("threads=1,label=1x1 one process", base),
               parse_inline("threads=1,nproc=1,strategy=ddp,label=1x1 torchrun ddp", base),
               parse_inline(f"threads={cores},label=1x{cores} one process", base),
               parse_inline(f"threads=1,nproc={cores},strategy=ddp,label={cores}x1 torchrun ddp", base)]
    opts = MeasureOptions(stop=StopRule(min_iters=10, min_time=3.0, max_time=15.0), warmup=2, gate=False)
    result = compare(configs, opts, repeats=args.repeats)
    doc = result.to_dict()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1, default=str))
    print("| layout | tokens/s [95% CI] | vs first | verdict |")
    print("|---|---|---|---|")
    for row in doc["configurations"]:
        sp = row.get("speedup_vs_first") or {}
        print(f"| {row['label']} | {row['median']:,.0f} [{row['ci_low']:,.0f}, {row['ci_high']:,.0f}] | "
              f"{sp.get('ratio', 1.0):.3f} | {row.get('speed_verdict') or 'reference'} |")


if __name__ == "__main__":
    main()
