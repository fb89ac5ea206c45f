"""Per-rank peak memory, measured under torchrun (gloo, CPU) vs the trace of the same configuration.

    python benchmarks/dist_memory.py --out benchmarks/results/dist_memory.json

The tiny llama (batch 2 x seq 32 per rank, fp32, adamw_torch_fused). DDP at N ranks holds what one
process holds (trace without --fsdp); FSDP2 (`fully_shard` per decoder layer + root) is traced with
--fsdp N on a fake process group. Measured: each rank's peak live CPU tensor bytes (live storages +
the profiler's allocation events over one iteration, the same meaning as trace's CPU program); the
table shows the largest rank. gloo has no native reduce-scatter / all-gather-into-tensor: c10d runs
them through a full-size temporary (measured: 16 MiB for a 16 MiB input, both ops), which the fake
process group does not allocate; the column "trace + gloo temporary" adds the largest FSDP unit's
unsharded bytes (the root: embeddings, head and final norm).

    python benchmarks/dist_memory.py --deepspeed --out benchmarks/results/dist_memory_deepspeed.json

`--deepspeed`: DeepSpeed ZeRO-2 and ZeRO-3 through accelerate (bench --strategy deepspeed), against the plan
(`estimate` of the same RunConfig with zero=S on N local ranks, CPU program): the trace does not run DeepSpeed.
The plan counts DeepSpeed's reduction buckets as the bench configures them (config/deepspeed.py: `auto`, h^2).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def largest_unit_bytes(model_name: str) -> int:
    """Unsharded bytes of the largest FSDP unit: a decoder layer, or the root's own parameters."""
    import torch
    import transformers

    from perfscale.specs import load_model_spec

    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(load_model_spec(model_name).config_object())
    layers = list(model.model.layers)
    in_layers = {id(p) for layer in layers for p in layer.parameters()}
    root = sum(p.numel() * p.element_size() for p in model.parameters() if id(p) not in in_layers)
    layer = max(sum(p.numel() * p.element_size() for p in lay.parameters()) for lay in layers)
    return max(root, layer)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/dist_memory.json"))
    parser.add_argument("--worlds", default="2,4")
    parser.add_argument("--deepspeed", action="store_true", help="ZeRO-2/3 through DeepSpeed vs the plan, instead")
    args = parser.parse_args()
    if args.deepspeed:
        deepspeed_rows(args)
        return
    from perfscale.config import RunConfig
    from perfscale.measure.bench_config import BenchConfig, MeasureOptions
    from perfscale.measure.runner import measure
    from perfscale.measure.stats import StopRule
    from perfscale.specs import load_model_spec
    from perfscale.specs.workload import TrainWorkload
    from perfscale.trace import trace

    model = "perfscale-tiny-llama"
    spec = load_model_spec(model)
    run = RunConfig(TrainWorkload(batch=2, seq=32))
    opts = MeasureOptions(stop=StopRule(min_iters=3, min_time=0.1, max_time=2.0), warmup=1, gate=False, time_limit=900)
    unit = largest_unit_bytes(model)
    rows = []
    for world in [int(w) for w in args.worlds.split(",")]:
        for strategy in ("ddp", "fsdp2"):
            t0 = time.time()
            result = measure(BenchConfig(model=model, run=run, nproc=world, strategy=strategy), opts)
            traced = trace(spec, RunConfig(TrainWorkload(batch=2, seq=32), fsdp=world if strategy == "fsdp2" else None)).peak_bytes
            measured = [r["peak_live_tensor_bytes"] for r in result.ranks]
            corrected = traced + (unit if strategy == "fsdp2" and world > 1 else 0)
            row = {"world": world, "strategy": strategy, "status": result.status, "reason": result.reason,
                   "measured_per_rank": measured, "trace": traced, "trace_plus_gloo_temporary": corrected,
                   "gap_vs_trace": max(measured) / traced - 1 if measured else None,
                   "gap_vs_trace_plus_gloo": max(measured) / corrected - 1 if measured else None,
                   "tokens_per_s": result.headline()["median"], "wall_s": time.time() - t0}
            rows.append(row)
            print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"model": model, "batch": 2, "seq": 32, "largest_unit_bytes": unit, "rows": rows}, indent=1))
    print("| ranks | strategy | measured per rank (max) | trace | gap | trace + gloo temporary | gap |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if r["measured_per_rank"]:
            print(f"| {r['world']} | {r['strategy']} | {max(r['measured_per_rank']):,} | {r['trace']:,} | {r['gap_vs_trace']:+.1%} | "
                  f"{r['trace_plus_gloo_temporary']:,} | {r['gap_vs_trace_plus_gloo']:+.1%} |")
        else:
            print(f"| {r['world']} | {r['strategy']} | {r['status']}: {r['reason']} |")


def deepspeed_rows(args) -> None:
    from perfscale.config import RunConfig
    from perfscale.estimate import estimate
    from perfscale.measure.bench_config import BenchConfig, MeasureOptions
    from perfscale.measure.runner import measure
    from perfscale.measure.stats import StopRule
    from perfscale.specs import load_model_spec, parse_topology
    from perfscale.specs.workload import TrainWorkload

    model = "perfscale-tiny-llama"
    spec = load_model_spec(model)
    opts = MeasureOptions(stop=StopRule(min_iters=3, min_time=0.1, max_time=2.0), warmup=1, gate=False, time_limit=900)
    rows = []
    for world in [int(w) for w in args.worlds.split(",")]:
        for zero in (2, 3):
            run = RunConfig(TrainWorkload(batch=2, seq=32), zero=zero)
            t0 = time.time()
            result = measure(BenchConfig(model=model, run=run, nproc=world, strategy="deepspeed"), opts)
            planned = estimate(spec, run, parse_topology(f"{world}xlocal"))
            measured = [r["peak_live_tensor_bytes"] for r in result.ranks]
            row = {"world": world, "zero": zero, "status": result.status, "reason": result.reason,
                   "measured_per_rank": measured, "plan": planned.memory.peak_bytes, "plan_total_with_overheads": planned.memory.total_bytes,
                   "plan_breakdown": planned.memory.breakdown,
                   "gap_vs_plan": max(measured) / planned.memory.peak_bytes - 1 if measured else None,
                   "wall_s": time.time() - t0}
            rows.append(row)
            print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"model": model, "batch": 2, "seq": 32, "rows": rows}, indent=1))
    print("| ranks | ZeRO | measured per rank | plan | gap (largest rank) |")
    print("|---|---|---|---|---|")
    for r in rows:
        if r["measured_per_rank"]:
            print(f"| {r['world']} | {r['zero']} | {' / '.join(f'{m:,}' for m in r['measured_per_rank'])} | {r['plan']:,} | "
                  f"{r['gap_vs_plan']:+.1%} |")
        else:
            print(f"| {r['world']} | {r['zero']} | {r['status']}: {r['reason']} |")


if __name__ == "__main__":
    main()
