"""Goal check for issue 21 (serving shapes): batch-1 p50 latency of the tuned encoder vs sentence-transformers at batch 1.

    python benchmarks/encoder_serving.py [--model minilm] [--quick] [--requests 300] [--max-seconds 240]
                                         [--out benchmarks/results/encoder_serving.json]

1. `tune_encoder(objective="latency")`: the search for the lowest single-request latency whose embeddings pass
   the gate (mean cosine >= 0.99, min >= 0.97 vs fp32 eager on the gate corpus, the shipped corpus' first 512).
2. One interleaved run on held-out requests: `SentenceTransformer(...).encode([s])` and the tuned winner loaded
   side by side in one process, each request sent to both in turn (order rotating), closed loop, over shipped
   sentences the search never saw (after the gate's 512, before the int8 calibration tail). p50 / p90 / p99 of
   each, the p50 ratio with a paired-bootstrap 95% CI, and the winner's cosine vs fp32 eager on those sentences.
Writes one JSON file (the tune result, the stream, the environment). Timings are only as quiet as the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--quick", action="store_true", help="the tuner's --quick search")
    parser.add_argument("--requests", type=int, default=300, help="held-out single requests in the final stream")
    parser.add_argument("--max-seconds", type=float, default=240.0, help="stop the stream after this long (at least 30 requests)")
    parser.add_argument("--out", default="benchmarks/results/encoder_serving.json")
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args(argv)

    import numpy as np

    from perfscale.measure.corpus import load_sentences
    from perfscale.measure.environment import collect_environment
    from perfscale.runtimes.encoder import EncoderSettings, load_encoder
    from perfscale.tune.infer import GATE_SENTENCES, tune_encoder
    from perfscale.tune.infer_screen import CALIBRATION_SENTENCES, calibration_sentences
    from perfscale.tune.infer_serving import latency_summary, p50_speedup, stream_latencies

    t0 = time.time()
    say = lambda m: print(f"[{time.time() - t0:6.0f}s] {m}", file=sys.stderr)  # noqa: E731
    result = tune_encoder(args.model, quick=args.quick, objective="latency", cache_dir=args.cache_dir, progress=say)
    say(f"tune: winner {result.winner}: {result.verdict} ({result.elapsed_s:.0f} s)")
    corpus = load_sentences()
    held_out = corpus[GATE_SENTENCES: len(corpus) - CALIBRATION_SENTENCES][: args.requests]
    baseline = load_encoder(args.model, EncoderSettings(engine="sentence-transformers"), cache_dir=args.cache_dir)
    winner = load_encoder(args.model, EncoderSettings.from_dict(result.winner_settings), cache_dir=args.cache_dir,
                          calibration=calibration_sentences())
    say(f"stream: up to {len(held_out)} held-out single requests, baseline and winner interleaved")
    times = stream_latencies({"sentence-transformers": baseline, result.winner: winner}, held_out,
                             max_time_s=args.max_seconds, min_requests=30)
    served = held_out[: len(times["sentence-transformers"])]
    # Check of the interleaving: the baseline alone on the same requests, right after (a runtime whose threads spin
    # after a request, as ONNX Runtime's do, could slow the request that follows it in the interleaved stream).
    say("check: the baseline alone on the first 40 of those requests")
    alone = stream_latencies({"sentence-transformers": baseline}, served[:40], warmup=0)["sentence-transformers"]
    reference = load_encoder(args.model, EncoderSettings(), cache_dir=args.cache_dir).encode(served)
    cos = (winner.encode(served) * reference).sum(axis=1)
    sp = p50_speedup(times["sentence-transformers"], times[result.winner]) if result.winner != "sentence-transformers" else None
    doc = {
        "tune": result.to_dict(),
        "stream": {"requests": len(served), "first_sentence_index": GATE_SENTENCES,
                   "latency": {k: latency_summary(v) for k, v in times.items()}, "p50_speedup": sp,
                   "baseline_alone_first_40": latency_summary(alone),
                   "baseline_interleaved_first_40": latency_summary(times["sentence-transformers"][:40]),
                   "winner_cosine_vs_fp32_eager": {"mean": float(np.mean(cos)), "min": float(np.min(cos))},
                   "load_average": os.getloadavg()},
        "environment": collect_environment("cpu"), "elapsed_s": time.time() - t0,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2, default=str))
    lat = doc["stream"]["latency"]
    print(json.dumps({"winner": result.winner, "p50_ms": {k: v["p50_ms"] for k, v in lat.items()},
                      "p99_ms": {k: v["p99_ms"] for k, v in lat.items()}, "p50_speedup": sp,
                      "goal_3x": None if sp is None else {"met": sp["ratio"] >= 3, "ci_low_at_least_3": sp["ci_low"] >= 3},
                      "cosine": doc["stream"]["winner_cosine_vs_fp32_eager"], "requests": len(served),
                      "baseline_p50_ms_alone_vs_interleaved_first_40": [doc["stream"]["baseline_alone_first_40"]["p50_ms"],
                                                                        doc["stream"]["baseline_interleaved_first_40"]["p50_ms"]],
                      "load_average": doc["stream"]["load_average"], "out": str(out)}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
