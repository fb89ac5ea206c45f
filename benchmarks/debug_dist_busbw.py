"""gloo bus bandwidth on this machine with `perfscale debug dist`: 2 ranks on one node and 2 single-rank
"nodes" (two torchrun agents, c10d rendezvous on 127.0.0.1), every collective over a range of sizes.

    python benchmarks/debug_dist_busbw.py [--out benchmarks/results/debug_dist_busbw.json] [--iters 10]

busbw is nccl-tests' (doc/PERFORMANCE.md): algbw x 2(n-1)/n for all_reduce, x (n-1)/n for all_gather and
reduce_scatter, x 1 for broadcast and send/recv; the slowest rank's median time of `--iters` timed iterations.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from perfscale.debug.dist import debug_dist, parse_sizes  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/debug_dist_busbw.json")
    parser.add_argument("--sizes", default="4K,64K,1M,4M,16M")
    parser.add_argument("--iters", type=int, default=10)
    args = parser.parse_args()
    import torch

    runs = []
    for nnodes, nproc in ((1, 2), (2, 1)):
        t0 = time.time()
        r = debug_dist(nproc=nproc, nnodes=nnodes, sizes=parse_sizes(args.sizes), iters=args.iters, timeout=300)
        runs.append({"nnodes": nnodes, "nproc_per_node": nproc, "ok": r.ok, "verdict": r.verdict, "wall_s": time.time() - t0,
                     "collectives": r.collectives})
        print(f"{nnodes} node(s) x {nproc}: {r.verdict}")
        for c in r.collectives:
            print(f"  {c['collective']:15s} {c['bytes']:>10,d} B  {c['time_s'] * 1e3:9.3f} ms  busbw {c['busbw'] / 1e9:7.3f} GB/s")
    doc = {"machine": platform.processor() or platform.machine(), "python": platform.python_version(), "torch": torch.__version__,
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "sizes": args.sizes, "iters": args.iters, "runs": runs}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
