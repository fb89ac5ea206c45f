"""Benchmark `perfscale trace` on big models: wall time and peak RSS, layer repetition vs full trace.

Each case runs in its own process (peak RSS = ru_maxrss of that process). Writes JSON to --out.

    python benchmarks/bench_trace.py --out bench_trace.json            # repeat only (~15 s)
    python benchmarks/bench_trace.py --out bench_trace.json --full     # also full traces (~3 min here)
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys

CASES = {
    "llama-3.1-70b train b1 s4096 bf16-mixed adamw ckpt": (
        "llama-3.1-70b", "RunConfig(TrainWorkload(1, 4096, 1), precision='bf16-mixed', optimizer='adamw', checkpointing=True)"),
    "llama-3.1-405b prefill b1 p8192 bf16": (
        "llama-3.1-405b", "RunConfig(InferWorkload(1, 8192, 1), precision='bf16')"),
}

_CHILD = """
import json, resource, sys
from perfscale.config import RunConfig
from perfscale.specs import InferWorkload, TrainWorkload
from perfscale.trace import trace
r = trace({model!r}, {config}, repeat_layers={repeat})
print(json.dumps({{"peak_bytes": r.peak_bytes, "phase": r.phase, "breakdown": r.breakdown, "phase_peaks": r.phase_peaks,
    "method": r.method, "trace_seconds": r.trace_seconds, "traced_on": r.traced_on,
    "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}}))
"""


def run_case(model: str, config: str, repeat: bool | None) -> dict:
    done = subprocess.run([sys.executable, "-c", _CHILD.format(model=model, config=config, repeat=repeat)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--full", action="store_true", help="also trace every layer, to show repetition is exact")
    args = parser.parse_args(argv)
    import torch
    import transformers

    rows = []
    for name, (model, config) in CASES.items():
        for repeat in ((None, False) if args.full else (None,)):
            row = {"case": name, "repeat_layers": repeat, **run_case(model, config, repeat)}
            rows.append(row)
            if "error" in row:
                print(f"{name} repeat={repeat}: ERROR {row['error']}", flush=True)
                continue
            print(f"{name} [{row['method']}]: {row['trace_seconds']:.1f} s, peak RSS {row['max_rss_bytes'] / 2**30:.2f} GiB, "
                  f"traced peak {row['peak_bytes']:,} B ({row['peak_bytes'] / 2**30:.2f} GiB) in {row['phase']}", flush=True)
    document = {"benchmark": "trace speed", "torch": torch.__version__, "transformers": transformers.__version__,
                "python": platform.python_version(), "machine": platform.processor() or platform.machine(), "rows": rows}
    with open(args.out, "w") as fh:
        json.dump(document, fh, indent=2)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
