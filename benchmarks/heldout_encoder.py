"""Issue 21's held-out number: a tuned encoder vs sentence-transformers' default `encode`, one interleaved compare.

    python benchmarks/heldout_encoder.py [--tuned tuned.json] [--repeats 3] [--out benchmarks/results/heldout_encoder.json]

- Tuned settings: `--tuned` (a result saved by `perfscale tune encoder --save`), else the winner the full
  search found on this machine (benchmarks/LOG.md, issue 7): onnxruntime+fusions int8-per-channel b32 t1,
  which now runs the fused graph of runtimes/ort_fusion.py.
- Accuracy on sentences the tuner never gated on: the shipped corpus minus the first GATE_SENTENCES
  (tune/infer.py gates on those), mean / min cosine of the tuned embeddings vs
  `SentenceTransformer(folder).encode(sentences)` with its defaults, and vs perfscale's fp32 eager.
- Speed: perfscale.measure.compare of baseline and tuned (`--repeats` fresh processes each, interleaved),
  the encode scenario's 128 sentences an iteration, ratio with its 95% CI.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ISSUE7_WINNER = {"backend": "onnxruntime", "fusions": True, "quantization": "int8-per-channel", "batch_size": 32, "threads": 1}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tuned", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sentences", type=int, default=128, help="sentences per timed iteration")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--out", default="benchmarks/results/heldout_encoder.json")
    args = parser.parse_args(argv)

    from perfscale.measure.bench_config import MeasureOptions
    from perfscale.measure.compare import compare
    from perfscale.measure.corpus import load_sentences
    from perfscale.measure.stats import StopRule
    from perfscale.runtimes.encoder import EncoderSettings, load_encoder
    from perfscale.runtimes.ort_fusion import fused_op_counts
    from perfscale.runtimes.source import resolve_encoder
    from perfscale.tune.infer import GATE_SENTENCES
    from perfscale.tune.infer_measure import _bench_config

    t0 = time.time()
    settings = EncoderSettings.from_dict(json.loads(args.tuned.read_text())["winner_settings"]) if args.tuned \
        else EncoderSettings(**ISSUE7_WINNER)
    source = resolve_encoder("minilm")
    heldout = load_sentences()[GATE_SENTENCES:]
    tuned = load_encoder(source, settings, cache_dir=args.cache_dir)
    emb = tuned.encode(heldout)
    baseline = load_encoder(source, EncoderSettings(engine="sentence-transformers")).encode(heldout)
    eager = load_encoder(source, EncoderSettings()).encode(heldout)

    def cos(a, b):
        c = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        return {"mean": float(c.mean()), "min": float(c.min()), "n": int(c.size)}

    accuracy = {"vs_sentence_transformers": cos(emb, baseline), "vs_fp32_eager": cos(emb, eager)}
    print(f"held-out accuracy ({len(heldout)} sentences): {accuracy}", file=sys.stderr)

    base_settings = EncoderSettings(engine="sentence-transformers").to_dict()
    configs = [_bench_config("minilm", source, base_settings, "sentence-transformers", args.sentences, args.cache_dir),
               _bench_config("minilm", source, settings.to_dict(), settings.label(), args.sentences, args.cache_dir)]
    options = MeasureOptions(stop=StopRule(min_iters=8, min_time=4.0, target_rel_ci=0.03, max_time=40.0), warmup=2,
                             gate=True, profile_memory=False)
    final = compare(configs, options, repeats=args.repeats, on_result=lambda r: print(f"  {r.config.display}: {r.status}", file=sys.stderr))
    row = final.rows[1]
    doc = {"tuned": settings.to_dict(), "tuned_label": settings.label(), "fused_ops": fused_op_counts(tuned.onnx_path) if tuned.onnx_path else None,
           "heldout_accuracy": accuracy, "compare": final.to_dict(), "loadavg_end": os.getloadavg(), "elapsed_s": time.time() - t0}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    print(json.dumps({"tuned": settings.label(), "speedup": row.speedup.to_dict() if row.speedup else None,
                      "verdict": row.speed_verdict, "baseline_sentences_per_s": final.rows[0].throughput,
                      "tuned_sentences_per_s": row.throughput, "heldout_accuracy": accuracy, "compare_gate": row.accuracy,
                      "loadavg_end": doc["loadavg_end"], "out": str(out)}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
