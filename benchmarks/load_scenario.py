"""Issue 15 item 4 through the bench harness: `perfscale compare --scenario load`, each load in a fresh (forked,
primed) process, interleaved over `--repeats` worker processes, with CIs and the RSS ratio to the checkpoint's bytes.

1. formats: a random ~250 MB fp32 Llama-shaped model as pytorch_model.bin, as one safetensors file and as
   100 MB safetensors shards (`perfscale checkpoint convert`), each loaded with from_pretrained's defaults.
2. paths on the single safetensors file: defaults, dtype=bfloat16 (a cast), device_map="auto" with CPU + disk offload.
3. the same paths on the shipped all-MiniLM-L6-v2 (91 MB safetensors).
Target (issue 15): safetensors on CPU, peak RSS <= 1.3 x the checkpoint's bytes (state the ratio of each path).
Writes benchmarks/results/load_scenario.json. Run: python benchmarks/load_scenario.py [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from _checkpoints import perfscale_json, random_llama_bin

OUT = Path(__file__).parent / "results" / "load_scenario.json"
FAST = ["--min-iters", "5", "--min-time", "0", "--max-time", "8", "--warmup", "1"]



def random_model(folder: Path) -> None:
    """~250 MB of fp32 weights in a Llama shape (62.6M parameters), saved the old way (torch.save of the state dict)."""
    random_llama_bin(folder, hidden_size=768, intermediate_size=2048, num_attention_heads=12, vocab_size=16000)


def rows(doc: dict, store: str) -> list[dict]:
    """Each configuration's loads/s with CI, and the per-load figures of its runs (read back from the store)."""
    from perfscale.measure.store import Store

    out = []
    with Store(store, create=False) as db:
        by_id = {r.id: r.result for r in db.runs(group=doc["group"])}
    for row in doc["configurations"]:
        runs = [by_id[i] for i in row.get("store_ids") or [] if i in by_id]
        metric = {name: [v for r in runs for v in r.iteration_metrics.get(name, [])]
                  for name in ("load_s", "ready_s", "rss_peak_rise_bytes", "rss_resident_rise_bytes", "rss_ratio")}
        setup = runs[0].setup if runs else {}
        out.append({"label": row["label"], "status": row["status"], "reason": row.get("reason"), "loads_per_s": row.get("median"),
                    "ci": [row.get("ci_low"), row.get("ci_high")], "speedup_vs_first": row.get("speedup_vs_first"),
                    "checkpoint_bytes": setup.get("checkpoint_bytes"), "format": setup.get("format"), "shards": setup.get("shards"),
                    "kwargs": setup.get("kwargs"), "loads": len(metric["load_s"]),
                    **{f"median_{k}": statistics.median(v) if v else None for k, v in metric.items()},
                    "max_rss_ratio": max(metric["rss_ratio"]) if metric["rss_ratio"] else None})
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="perfscale-load-bench-") as tmp:
        tmp = Path(tmp)
        random_model(tmp / "bin")
        perfscale_json("checkpoint", "convert", str(tmp / "bin"), "--to", str(tmp / "single"), "--no-probe")
        perfscale_json("checkpoint", "convert", str(tmp / "bin"), "--to", str(tmp / "sharded"), "--max-shard-size", "100MB", "--no-probe")
        store = str(tmp / "results.sqlite")
        base = ["compare", "--scenario", "load", "--repeats", str(args.repeats), "--store", store, *FAST]
        paths = ["load=defaults", "load=dtype,precision=bf16", "load=offload"]
        results = {}
        for name, cmd in (("formats", [*base, *(f"model={tmp / n},label={n}" for n in ("bin", "single", "sharded"))]),
                          ("paths_random_safetensors", [*base, "--model", str(tmp / "single"), *paths]),
                          ("paths_minilm", [*base, "--model", "minilm", *paths])):
            t0 = time.perf_counter()
            doc = perfscale_json(*cmd)
            results[name] = {"seconds": time.perf_counter() - t0, "rows": rows(doc, store)}
            print(name, json.dumps(results[name], indent=1))
    OUT.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M", time.gmtime(started)), "machine": platform.node(),
                               "cpus": os.cpu_count(), "load_avg_start": os.getloadavg(), "repeats": args.repeats,
                               "results": results}, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
