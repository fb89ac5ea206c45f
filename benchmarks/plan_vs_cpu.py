"""The plan's time model against training steps measured on this CPU (issue 4: within 15%).

The CPU efficiency (fraction of the detected fp32 peak that a training step reaches) is the one free
parameter of the time model. It is fitted on ONE configuration (the first) and then checked on the
others, which are held out: a different batch, sequence length, model size, and checkpointing.

    python benchmarks/plan_vs_cpu.py --out benchmarks/results/plan_vs_cpu.json

Each configuration is measured by `perfscale.measure` (fresh process, warm-up, stop rule, median
with 95% CI), fp32, eager, threads = all cores. Run it on a quiet machine (check `uptime`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

# A larger sibling of perfscale-tiny-llama, so that model size varies too (~29M parameters).
SMALL_LLAMA = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 512, "intermediate_size": 1376,
    "num_hidden_layers": 6, "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 64, "vocab_size": 8192,
    "max_position_embeddings": 2048, "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
}
# (label, model, batch, seq, checkpointing); the first one calibrates.
CASES = [
    ("tiny b8 s256", "perfscale-tiny-llama", 8, 256, False),
    ("tiny b4 s128", "perfscale-tiny-llama", 4, 128, False),
    ("tiny b16 s256", "perfscale-tiny-llama", 16, 256, False),
    ("tiny b4 s512", "perfscale-tiny-llama", 4, 512, False),
    ("tiny b8 s256 ckpt", "perfscale-tiny-llama", 8, 256, True),
    ("small b8 s256", "small-llama", 8, 256, False),
    ("small b4 s512", "small-llama", 4, 512, False),
]
TOLERANCE = 0.15


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/plan_vs_cpu.json"))
    parser.add_argument("--max-time", type=float, default=20.0, help="stop-rule time cap per configuration (s)")
    args = parser.parse_args()

    import tempfile

    from perfscale.config import RunConfig
    from perfscale.estimate import estimate
    from perfscale.measure.bench_config import BenchConfig, MeasureOptions
    from perfscale.measure.runner import measure
    from perfscale.measure.stats import StopRule
    from perfscale.specs import TrainWorkload, Topology, get_hardware, load_model_spec, spec_from_config

    hardware = get_hardware("local")
    topology = Topology(hardware=hardware)
    options = MeasureOptions(stop=StopRule(min_iters=5, min_time=3.0, max_time=args.max_time), profile_memory=False)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "small-llama"
        model_dir.mkdir()
        (model_dir / "config.json").write_text(json.dumps(SMALL_LLAMA))
        rows = []
        for label, model, batch, seq, ckpt in CASES:
            model_arg = str(model_dir) if model == "small-llama" else model
            spec = spec_from_config(SMALL_LLAMA, "small-llama") if model == "small-llama" else load_model_spec(model)
            run = RunConfig(TrainWorkload(batch=batch, seq=seq), checkpointing=ckpt)
            result = measure(BenchConfig(scenario="train", model=model_arg, run=run), options)
            if not result.ok:
                print(f"{label}: {result.status} {result.reason}")
                return 1
            measured = result.throughput()["tokens_per_s"]
            at_unit = estimate(spec, run, topology, efficiency=1.0).time.tokens_per_second
            rows.append({"label": label, "params": spec.params.total, "batch": batch, "seq": seq, "checkpointing": ckpt,
                         "measured_tokens_per_s": measured, "estimated_at_efficiency_1": at_unit,
                         "stop_reason": result.stop_reason})
            print(f"{label:20s} measured {measured['median']:9.0f} tok/s [{measured['ci_low']:.0f}, {measured['ci_high']:.0f}]", flush=True)
    efficiency = rows[0]["measured_tokens_per_s"]["median"] / rows[0]["estimated_at_efficiency_1"]
    errors = []
    for row in rows:
        predicted = row["estimated_at_efficiency_1"] * efficiency
        row["predicted_tokens_per_s"] = predicted
        row["error"] = predicted / row["measured_tokens_per_s"]["median"] - 1
        if row is not rows[0]:
            errors.append(abs(row["error"]))
        print(f"{row['label']:20s} predicted {predicted:9.0f} tok/s  error {row['error']:+.1%}")
    held_out_within = sum(e <= TOLERANCE for e in errors)
    document = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "load_average": os.getloadavg(), "hardware": hardware.description,
        "fp32_peak": hardware.peak("fp32"), "fitted_efficiency": efficiency, "tolerance": TOLERANCE,
        "held_out_median_abs_error": statistics.median(errors), "held_out_max_abs_error": max(errors),
        "held_out_within_tolerance": f"{held_out_within}/{len(errors)}", "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"fitted CPU efficiency {efficiency:.3f} of the fp32 peak; held-out |error| median "
          f"{document['held_out_median_abs_error']:.1%}, max {document['held_out_max_abs_error']:.1%}; "
          f"{held_out_within}/{len(errors)} within {TOLERANCE:.0%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
