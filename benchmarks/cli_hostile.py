"""Hostile-input sweep of the command line: every verb, every option, values a user might type by mistake.

Runs each invocation in this process (the verbs are thin wrappers; a fresh process per call would
spend ~5 s importing) with a wall-clock alarm, and tabulates the outcomes against the contract:
exit 0 or 2, no traceback, with --json exactly one JSON document on stdout.

    python benchmarks/cli_hostile.py [--out benchmarks/results/cli_hostile.json] [--verbs plan,trace]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from cli_contract import hostile_invocations, judge, run_in_process  # noqa: E402  (the property test's own)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/cli_hostile.json")
    parser.add_argument("--verbs", default=None, help="comma list (default: all)")
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()
    args.out = str(Path(args.out).resolve())
    os.environ["HF_HUB_OFFLINE"] = "1"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["XDG_CACHE_HOME"] = str(Path(tmp) / "cache")
        os.chdir(tmp)  # files a hostile --output names land here, not in the checkout
        for argv in hostile_invocations(Path(tmp), verbs=args.verbs.split(",") if args.verbs else None):
            code, out, err, seconds = run_in_process(argv, args.timeout)
            verdict = judge(argv, code, out, err)
            shown = [a if len(a) <= 80 else f"{a[:40]}...<{len(a)} chars>" for a in argv]  # keep the record small
            rows.append({"argv": shown, "exit": code, "verdict": verdict, "seconds": round(seconds, 2),
                         "stderr_tail": err.strip().splitlines()[-1][:300] if err.strip() else ""})
            flag = "ok " if verdict == "ok" else "BAD"
            print(f"{flag} {code!s:>4} {seconds:6.1f}s perfscale {' '.join(a[:60] for a in argv)}  :: {rows[-1]['stderr_tail'][:160]}",
                  file=sys.__stderr__, flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")
    bad = [r for r in rows if r["verdict"] != "ok"]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    print(f"{len(rows)} invocations: {counts}; {len(bad)} break the contract", file=sys.__stderr__)


if __name__ == "__main__":
    main()
