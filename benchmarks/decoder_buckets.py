"""Prompt-length buckets vs recompilation with torch.compile (inductor) on perfscale-tiny-llama.

    python benchmarks/decoder_buckets.py [--lengths 12,20,33,47,64,90] [--new-tokens 8] [--passes 3] [--threads 1] [--out ...]

Variants, each on a fresh compiler (torch._dynamo.reset), all through perfscale.runtimes.decoder.DecoderRunner:
  1. eager, dynamic cache, no padding, batch 1: the reference (its greedy tokens are the gate);
  2. compile (static cache, dynamic=False), no buckets: one prefill graph per distinct length, and the cache
     grows with the prompt, so a decode graph per length too, until dynamo's recompile limit (then eager);
  3. compile with buckets (DEFAULT_BUCKETS up to the longest prompt), static cache of one length for the bucket
     set (largest bucket + new tokens): at most 2 prefill graphs per bucket (padded / exactly full) + 1 decode
     graph (runtimes.decoder.graph_bound), however many distinct lengths;
  4. the same bucketed static-cache shapes without compile (what padding and the larger cache cost by themselves).
Prompts run in increasing length order (the worst case for a growing cache). Per variant: graphs compiled
(torch._dynamo counters unique_graphs, cross-checked by a dynamo compile-start callback), cumulative graphs after
each generate call, whether the recompile limit was hit, the first pass's wall time (the compiles), then
`--passes` timed passes: tokens/s, TTFT and time per output token (median and bootstrap CI,
perfscale.measure.stats), and whether greedy tokens equal the reference's on every pass.
Threads default to 1: on a 2-core box shared with other jobs, 2 OpenMP threads made every eager forward of this
tiny model ~60x slower (500 ms vs 8 ms) whenever another process held a core (threads spin at barriers).
`--backend eager` swaps inductor for dynamo's capture-only backend (same graph counts, no codegen; a smoke run).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="perfscale-tiny-llama")
    parser.add_argument("--lengths", default="12,20,33,47,64,90", help="prompt lengths, run in increasing order")
    parser.add_argument("--buckets", default=None, help="e.g. 16,32,64,128 (default: DEFAULT_BUCKETS up to the longest prompt)")
    parser.add_argument("--new-tokens", type=int, default=8)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--backend", default="inductor", choices=("inductor", "eager"))
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: see the docstring)")
    parser.add_argument("--out", default="benchmarks/results/decoder_buckets.json")
    args = parser.parse_args(argv)

    import torch
    import torch._dynamo

    from perfscale.measure.environment import collect_environment
    from perfscale.measure.stats import summarize
    from perfscale.runtimes.decoder import (
        DecoderRunner, DecoderSettings, graph_bound, greedy_agreement, load_decoder, make_prompts, reset_compiler,
    )
    from perfscale.tune.infer_decoder import _default_buckets

    torch.set_num_threads(args.threads)
    lengths = sorted(int(x) for x in args.lengths.split(","))
    buckets = tuple(int(x) for x in args.buckets.split(",")) if args.buckets else _default_buckets(max(lengths))
    lm = load_decoder(args.model, seed=0)
    prompts = make_prompts(lengths, lm.config.vocab_size, seed=0)
    compiled = {"cache": "static", "compile": True, "compile_backend": args.backend}
    variants = (DecoderSettings(), DecoderSettings(**compiled), DecoderSettings(**compiled, buckets=buckets),
                DecoderSettings(cache="static", buckets=buckets))  # the last: bucketed shapes without compile
    rows, ref_tokens = [], None
    started = time.perf_counter()
    for settings in variants:
        reset_compiler()  # clears dynamo's callbacks too: register after it
        starts: list[str] = []
        torch._dynamo.callback_handler.register_start_callback(lambda a, starts=starts: starts.append(str(a.compile_id)))
        runner = DecoderRunner(lm, settings)
        try:
            t0 = time.perf_counter()
            first = runner.run(prompts, args.new_tokens)
            first_s = time.perf_counter() - t0
            runs = [runner.run(prompts, args.new_tokens) for _ in range(args.passes)]
        finally:
            runner.close()
        ref_tokens = ref_tokens or first.tokens
        gates = [greedy_agreement(ref_tokens, r.tokens) for r in (first, *runs)]
        row = {
            "variant": settings.label(), "settings": settings.to_dict(), "cache_len": first.cache_len,
            "graphs_first_pass": first.graphs, "graphs_later_passes": sum(r.graphs for r in runs),
            "graphs_after_call": first.graphs_after_call, "dynamo_compile_starts": len(starts),
            "recompile_limit_hit": any(r.recompile_limit_hit for r in (first, *runs)), "first_pass_s": first_s,
            "tokens_per_s": summarize([r.tokens_per_s for r in runs]).to_dict(),
            "ttft_s": summarize([x for r in runs for x in r.ttft_s]).to_dict(),
            "tpot_s": summarize([x for r in runs for x in r.tpot_s]).to_dict(),
            "ttft_s_per_call": [r.ttft_s for r in runs], "tpot_s_per_call": [r.tpot_s for r in runs],
            "gate_passed_all_passes": all(g["passed"] for g in gates), "gate": gates[0],
            "padded_lengths": first.padded_lengths, "notes": first.notes,
        }
        rows.append(row)
        print(f"{row['variant']}: graphs {row['graphs_first_pass']}+{row['graphs_later_passes']} "
              f"(compile starts {len(starts)}, after each call {row['graphs_after_call']}, limit hit {row['recompile_limit_hit']}), "
              f"first pass {first_s:.1f} s, {row['tokens_per_s']['median']:.1f} tok/s, TTFT {row['ttft_s']['median'] * 1e3:.1f} ms, "
              f"TPOT {row['tpot_s']['median'] * 1e3:.2f} ms, gate {row['gate_passed_all_passes']}", file=sys.stderr)
    reset_compiler()
    doc = {"model": args.model, "lengths": lengths, "buckets": list(buckets), "bucketed_bound": graph_bound(buckets),
           "new_tokens": args.new_tokens, "passes": args.passes, "backend": args.backend, "torch_threads": torch.get_num_threads(),
           "rows": rows, "elapsed_s": time.perf_counter() - started, "environment": collect_environment("cpu")}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2, default=str))
    keys = ("graphs_first_pass", "graphs_later_passes", "dynamo_compile_starts", "recompile_limit_hit", "first_pass_s", "gate_passed_all_passes")
    print(json.dumps({r["variant"]: {k: r[k] for k in keys} | {"tok_s": r["tokens_per_s"]["median"],
                      "ttft_ms": r["ttft_s"]["median"] * 1e3, "tpot_ms": r["tpot_s"]["median"] * 1e3} for r in rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
