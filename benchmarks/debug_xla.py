"""Recompilation before and after bucketing, with perfscale.debug.xla.debug_xla (issue 20).

    python benchmarks/debug_xla.py [--mode train|generate|both] [--device auto|cpu|xla] [--backend eager|inductor]
                                   [--batches 20] [--prompts 10] [--threads 1] [--out benchmarks/results]

train: the built-in model's training step (forward, loss, backward, AdamW) over 20 batches of 2 sequences whose
lengths are drawn (seed 0) from the shipped corpus's sentences, as written (padded to the longest in the batch,
loss.item() read in the step) and fixed (padded to power-of-two buckets, .item() read every 10 steps outside).
generate: generate() over 10 prompt lengths drawn the same way, 8 new tokens, dynamic cache unpadded vs a static cache
of one length over the buckets. Engine: torch_xla when it imports (PJRT_DEVICE=CPU in its own environment,
docs/xla.md), else torch.compile(dynamic=False). Writes one JSON per mode (the whole result: per-step compilations and
seconds, reasons, syncs, versions) and prints a summary line per pass. Threads default to 1 (FIELD-NOTES: OpenMP
barriers on the shared 2-core box).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="perfscale-tiny-llama")
    parser.add_argument("--mode", default="both", choices=("train", "generate", "both"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--backend", default="eager", choices=("eager", "aot_eager", "inductor"))
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=10)
    parser.add_argument("--new-tokens", type=int, default=8)
    parser.add_argument("--max-len", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)

    import os

    import torch

    from perfscale.debug.xla import debug_xla

    torch.set_num_threads(args.threads)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    modes = ("train", "generate") if args.mode == "both" else (args.mode,)
    for mode in modes:
        started = time.perf_counter()
        result = debug_xla(args.model, mode=mode, batches=args.batches if mode == "train" else args.prompts, batch=args.batch,
                           device=args.device, backend=args.backend, new_tokens=args.new_tokens, max_len=args.max_len)
        doc = result.to_dict()
        doc["benchmark"] = {"argv": sys.argv[1:], "threads": args.threads, "wall_s": time.perf_counter() - started,
                            "machine": platform.node(), "cpu_count": os.cpu_count(), "load_avg": os.getloadavg()}
        engine = "xla" if result.engine == "torch_xla" else f"compile-{args.backend}"
        path = out_dir / f"debug_xla_{engine}_{mode}.json"
        path.write_text(json.dumps(doc, indent=1, default=str) + "\n")
        print(f"[{mode}, {result.engine} on {result.device}, load {os.getloadavg()[0]:.1f}] lengths {result.lengths}, buckets {result.buckets}")
        for p in (result.before, result.after):
            steady = "-" if p.steady_step_s is None else f"{p.steady_step_s * 1e3:.1f} ms"
            print(f"  {p.name:10s} {p.padding:34s} shapes {p.distinct_shapes:2d}  compilations {p.compilations:3d}  "
                  f"graph breaks {sum(g['count'] for g in p.graph_breaks):2d}  transfers {p.transfers_from_device}  "
                  f"fallbacks {sum(f['count'] for f in p.fallbacks)}  wall {p.wall_s:7.2f} s  steady step {steady}  "
                  f"limit hit {p.recompile_limit_hit}")
        print(f"  {result.verdict}\n  -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
