"""Goal check for issue 7: the tuned encoder vs the sentence-transformers baseline, one interleaved compare.

    python benchmarks/tune_infer_encoder.py [--model minilm] [--repeats 3] [--out benchmarks/results/tune_infer_encoder.json]

1. Runs the full `tune encoder` search (gate: mean cosine >= 0.99, min >= 0.97 vs fp32 eager over
   the whole shipped corpus) and keeps its result (it ends with an interleaved compare of the baseline
   and the finalists in fresh processes).
2. Runs one more `perfscale.measure.compare` of baseline vs winner only (ABAB..., `--repeats`
   processes each): the ratio recorded in benchmarks/LOG.md comes from this run.
Writes one JSON file with both, plus the environment. Timings are only as quiet as the machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sentences", type=int, default=256, help="sentences per timed iteration in the final compare")
    parser.add_argument("--out", default="benchmarks/results/tune_infer_encoder.json")
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args(argv)

    from perfscale.measure.bench_config import MeasureOptions
    from perfscale.measure.compare import compare
    from perfscale.measure.stats import StopRule
    from perfscale.runtimes.source import resolve_encoder
    from perfscale.tune.infer import tune_encoder
    from perfscale.tune.infer_measure import _bench_config

    t0 = time.time()
    result = tune_encoder(args.model, cache_dir=args.cache_dir, progress=lambda m: print(f"[{time.time() - t0:6.0f}s] {m}", file=sys.stderr))
    print(f"tune: winner {result.winner}: {result.verdict} ({result.elapsed_s:.0f} s)", file=sys.stderr)
    source = resolve_encoder(args.model)
    model = "minilm" if source.name == "minilm" else source.path
    baseline = next(v for v in result.variants if v.stage == "baseline")
    winner = result.winner_variant
    configs = [_bench_config(model, source, baseline.settings, "sentence-transformers", args.sentences, args.cache_dir),
               _bench_config(model, source, winner.settings, winner.label, args.sentences, args.cache_dir)]
    options = MeasureOptions(stop=StopRule(min_iters=8, min_time=4.0, target_rel_ci=0.03, max_time=40.0), warmup=2,
                             gate=True, profile_memory=False)
    final = compare(configs, options, repeats=args.repeats,
                    on_result=lambda r: print(f"  {r.config.display}: {r.status}", file=sys.stderr))
    doc = {"tune": result.to_dict(), "compare": final.to_dict(), "elapsed_s": time.time() - t0}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2, default=str))
    row = final.rows[1]
    acc = winner.accuracy or {}
    print(json.dumps({
        "winner": winner.label, "speedup": row.speedup.to_dict() if row.speedup else None, "verdict": row.speed_verdict,
        "baseline_sentences_per_s": final.rows[0].throughput, "winner_sentences_per_s": row.throughput,
        "winner_gate": {k: acc.get(k) for k in ("mean_cosine", "min_cosine", "n", "passed")}, "compare_gate": row.accuracy,
        "out": str(out),
    }, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
