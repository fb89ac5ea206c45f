"""Prompt-length buckets vs recompilation with torch.compile (inductor) on perfscale-tiny-llama.

    python benchmarks/decoder_buckets.py [--lengths 12,20,33,47,64,90] [--new-tokens 16] [--out ...]

For each of: eager (reference), compile without buckets, compile with buckets (all static cache,
batch 1, dynamic=False): graphs compiled (torch._dynamo counters), the first pass's wall time (the
compiles), then `--passes` timed passes: tokens/s, TTFT and time per output token (median and
bootstrap CI, perfscale.measure.stats), and whether greedy tokens equal the eager reference's.
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
    parser.add_argument("--lengths", default="12,20,33,47,64,90")
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/decoder_buckets.json")
    args = parser.parse_args(argv)

    from perfscale.measure.environment import collect_environment
    from perfscale.measure.stats import summarize
    from perfscale.runtimes.decoder import DecoderRunner, DecoderSettings, greedy_agreement, load_decoder, make_prompts, reset_compiler
    from perfscale.tune.infer_decoder import _default_buckets

    lengths = [int(x) for x in args.lengths.split(",")]
    lm = load_decoder(args.model, seed=0)
    prompts = make_prompts(lengths, lm.config.vocab_size, seed=0)
    buckets = _default_buckets(max(lengths))
    rows, ref_tokens = [], None
    for settings in (DecoderSettings(cache="static"), DecoderSettings(cache="static", compile=True),
                     DecoderSettings(cache="static", compile=True, buckets=buckets)):
        reset_compiler()
        runner = DecoderRunner(lm, settings)
        t0 = time.perf_counter()
        first = runner.run(prompts, args.new_tokens)
        first_s = time.perf_counter() - t0
        runs = [runner.run(prompts, args.new_tokens) for _ in range(args.passes)]
        runner.close()
        ref_tokens = ref_tokens or first.tokens
        row = {
            "variant": settings.label(), "graphs_first_pass": first.graphs, "graphs_later_passes": sum(r.graphs for r in runs),
            "recompile_limit_hit": first.recompile_limit_hit, "first_pass_s": first_s,
            "tokens_per_s": summarize([r.tokens_per_s for r in runs]).to_dict(),
            "ttft_s": summarize([x for r in runs for x in r.ttft_s]).to_dict(),
            "tpot_s": summarize([x for r in runs for x in r.tpot_s]).to_dict(),
            "gate": greedy_agreement(ref_tokens, first.tokens), "padded_lengths": first.padded_lengths,
        }
        rows.append(row)
        print(f"{row['variant']}: graphs {row['graphs_first_pass']}+{row['graphs_later_passes']}, first pass {first_s:.1f} s, "
              f"{row['tokens_per_s']['median']:.1f} tok/s, TTFT {row['ttft_s']['median'] * 1e3:.1f} ms, "
              f"TPOT {row['tpot_s']['median'] * 1e3:.2f} ms, gate {row['gate']['passed']}", file=sys.stderr)
    reset_compiler()
    doc = {"model": args.model, "lengths": lengths, "buckets": list(buckets), "new_tokens": args.new_tokens, "passes": args.passes,
           "rows": rows, "environment": collect_environment("cpu")}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2, default=str))
    print(json.dumps({r["variant"]: {k: r[k] for k in ("graphs_first_pass", "first_pass_s", "recompile_limit_hit")} | {"tok_s": r["tokens_per_s"]["median"]} for r in rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
