"""MiniLM `encode`: fp32 eager vs torch.compile vs ONNX Runtime vs ONNX Runtime int8, with the accuracy gate.

    python benchmarks/compare_encode_backends.py --out benchmarks/results/encode_backends.json [--repeats 2] [compare flags]

A thin driver over `perfscale compare` (the CLI, as a user would run it); the JSON it prints is saved.
Equivalent command:
    perfscale compare --scenario encode backend=eager backend=compile backend=onnxruntime \
        backend=onnxruntime,quant=int8-dynamic backend=onnxruntime,quant=int8-per-channel --repeats 2 --json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = ["backend=eager", "backend=compile", "backend=onnxruntime", "backend=onnxruntime,quant=int8-dynamic",
            "backend=onnxruntime,quant=int8-per-channel"]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/encode_backends.json"))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--store", default=None)
    args, extra = parser.parse_known_args()  # other flags go to perfscale compare, e.g. --threads 2 --max-time 15
    cmd = [sys.executable, "-c", "from perfscale.cli.app import run; run()", "compare", "--scenario", "encode", *VARIANTS,
           "--repeats", str(args.repeats), "--json", *extra] + (["--store", args.store] if args.store else [])
    t0 = time.time()
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        print(out.stderr, file=sys.stderr)
        return out.returncode
    doc = json.loads(out.stdout)
    doc["wall_s"] = time.time() - t0
    doc["command"] = "perfscale compare --scenario encode " + " ".join(VARIANTS) + f" --repeats {args.repeats} " + " ".join(extra)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    for row in doc["configurations"]:
        acc = row.get("accuracy") or {}
        cos = f"cos {acc['mean_cosine']:.4f}/{acc['min_cosine']:.4f}" if acc.get("kind") == "embeddings" else ("reference" if acc.get("reference") else "")
        tp = f"{row['median']:.1f} [{row['ci_low']:.1f}, {row['ci_high']:.1f}] {row['unit']}" if row.get("median") else "n/a"
        print(f"{row['label']:<40} {row['status']:<11} {tp:<34} {cos:<22} {row.get('speed_verdict') or ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
