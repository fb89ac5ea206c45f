"""`perfscale plan` end to end, as a user runs it: a fresh process (start-up, model, search, table).

Issue 14 asks for < 1 s on one device and < 3 s for a 1,024-node search. The cases alternate in
each round (the box is shared: one absolute time means little), and each is timed as a
subprocess of the installed `perfscale` entry point. Prints one JSON document.

    python benchmarks/plan_end_to_end.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time

CASES = {
    "1 device, train": ["--model", "llama-3.1-8b", "--hardware", "H100-80GB", "--train"],
    "1 device, infer": ["--model", "llama-3.1-8b", "--hardware", "H100-80GB", "--infer", "--batch", "16",
                        "--prompt", "2048", "--new-tokens", "256"],
    "1,024 nodes x 8, train": ["--model", "llama-3.1-70b", "--hardware", "1024x8xH100-80GB", "--train", "--batch", "1",
                               "--seq", "4096"],
    # long context: context parallelism opens (cp 1-8 at 131,072 tokens; tune/space.cp_choices)
    "8 devices, train, 131k tokens": ["--model", "llama-3.1-8b", "--hardware", "8xH100-80GB", "--train", "--batch", "1",
                                      "--seq", "131072"],
    "1,024 nodes x 8, train, 131k tokens": ["--model", "llama-3.1-70b", "--hardware", "1024x8xH100-80GB", "--train",
                                            "--batch", "1", "--seq", "131072"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    exe = shutil.which("perfscale") or os.path.join(os.path.dirname(sys.executable), "perfscale")
    times: dict[str, list[float]] = {name: [] for name in CASES}
    cpu: dict[str, list[float]] = {name: [] for name in CASES}  # user + system CPU seconds: what an idle box waits
    for _ in range(args.rounds):
        for name, case in CASES.items():
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            subprocess.run([exe, "plan", *case], check=True, capture_output=True)
            times[name].append(time.perf_counter() - t0)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu[name].append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    print(json.dumps({
        "machine": platform.node(), "cpus": os.cpu_count(), "load_average": os.getloadavg(), "rounds": args.rounds,
        "seconds": {name: {"median": round(statistics.median(t), 3), "min": round(min(t), 3), "max": round(max(t), 3)}
                    for name, t in times.items()},
        "cpu_seconds_median": {name: round(statistics.median(t), 3) for name, t in cpu.items()},
    }, indent=1))


if __name__ == "__main__":
    main()
