"""Decoders on this CPU: `perfscale tune decoder` on the small catalogue decoders, interleaved, with int8 weights.

    python benchmarks/decoder_cpu.py [--models perfscale-tiny-llama,pythia-160m,gpt2] [--lengths 12,33,64]
        [--new-tokens 16] [--passes 5] [--threads 1] [--no-compile] [--quant-backends torchao,torch] [--out-dir ...]

For each model (built from its catalogue config with seeded random weights: no network, no checkpoint), one
`perfscale.tune.infer_decoder.tune_decoder` run: the eager reference (dynamic cache, batch 1, fp32), static cache,
batch, buckets, torch.compile (inductor, dynamic=False) with static cache + buckets, int8 weight-only per backend,
and compile + int8; every variant warmed once, then `--passes` interleaved rounds (order rotated each round); the
speed-up is the median over rounds of time(reference)/time(variant) in the same round, with a bootstrap 95% CI;
the gate is identical greedy tokens on every pass. Writes one JSON per model (the tune result, with environment)
and prints a table per model. Threads default to 1 (benchmarks/LOG.md: on this shared 2-core box 2 OpenMP threads
made forwards ~60x slower whenever another job held a core). torchao is optional: absent, its variants are skipped
with a note (put it on PYTHONPATH, e.g. `pip install --target DIR torchao`, to include it without changing a venv).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="perfscale-tiny-llama,pythia-160m,gpt2")
    parser.add_argument("--lengths", default="12,33,64", help="prompt lengths in tokens (a server's spread)")
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--passes", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--quant-backends", default=None, help="comma list, or 'none' (default: every one installed)")
    parser.add_argument("--out-dir", default="benchmarks/results")
    args = parser.parse_args(argv)

    import torch

    from perfscale.runtimes.decoder_quant import parse_backends
    from perfscale.tune.infer_decoder import tune_decoder

    torch.set_num_threads(args.threads)
    lengths = [int(x) for x in args.lengths.split(",")]
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for model in args.models.split(","):
        started = time.perf_counter()
        result = tune_decoder(model, prompt_lengths=lengths, new_tokens=args.new_tokens, batch=args.batch,
                              include_compile=not args.no_compile, passes=args.passes,
                              quant_backends=parse_backends(args.quant_backends),
                              progress=lambda m, model=model, started=started: print(f"[{model} {time.perf_counter() - started:.0f}s] {m}", file=sys.stderr))
        doc = result.to_dict()
        path = out_dir / f"decoder_cpu_{model}.json"
        path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
        print(f"\n## {model}: {doc['elapsed_s']:.0f} s, {args.passes} interleaved rounds, {torch.get_num_threads()} thread(s) -> {path}")
        print("| variant | status | tok/s median [CI] | speed-up vs eager [CI] | gate | warm-up s | graphs |")
        print("|---|---|---|---|---|---|---|")
        for v in doc["variants"]:
            tps, sp, gate = v.get("tokens_per_s") or {}, v.get("speedup"), v.get("gate") or {}
            gate_s = ("ref" if gate.get("reference") else "identical" if gate.get("passed")
                      else f"differs ({gate.get('prefix_agreement', 0):.0%} prefix)" if gate else "n/a")
            print(f"| {v['label']} | {v['status']} | " + (f"{tps['median']:.1f} [{tps['ci_low']:.1f}, {tps['ci_high']:.1f}]" if tps else "n/a")
                  + " | " + (f"{sp['ratio']:.2f} [{sp['ci_low']:.2f}, {sp['ci_high']:.2f}]" if sp else "–")
                  + f" | {gate_s} | {v.get('warmup_s') or 0:.1f} | {v.get('graphs', 0)} |" + (f" {v['reason']}" if v["status"] == "failed" else ""))
        print(f"winner: {doc['winner']} ({doc['verdict']})")
        for note in doc["notes"]:
            print(f"note: {note}")
        rc = doc["recompiles"]
        print(f"recompiles (capture-only): unbucketed {rc['unbucketed']}, bucketed {rc['bucketed']} (bound {rc['bucketed_bound']})")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
