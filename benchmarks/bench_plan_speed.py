"""How many configurations estimate's hot path evaluates per second (target >= 10,000 on 2 cores).

Times `perfscale.estimate.core.evaluate` over the knob space `plan` enumerates, excluding model
loading (done once). Writes benchmarks/results/plan_speed.json.
Run: python benchmarks/bench_plan_speed.py
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path

from perfscale.estimate.core import constants_for, evaluate
from perfscale.estimate.knobs import Knobs
from perfscale.specs import load_model_spec, parse_topology
from perfscale.tune import space

CASES = [("llama-3.1-8b", "8xH100-80GB"), ("llama-3.1-70b", "4x8xH100-80GB"), ("qwen2.5-7b", "2x8xA100-80GB")]


def run() -> dict:
    results = []
    for model, topo_text in CASES:
        mc = constants_for(load_model_spec(model))
        topo = parse_topology(topo_text)
        hw = topo.hardware
        base = Knobs(batch=8, seq=4096, accum=4)
        configs = list(space.train_space(base, {}, mc.heads, mc.layers, topo.world_size, topo.devices_per_node, hw))
        rates = []
        for _ in range(5):
            start = time.perf_counter()
            for k in configs:
                evaluate(mc, k, hw, topo.nodes, topo.devices_per_node)
            rates.append(len(configs) / (time.perf_counter() - start))
        results.append({"model": model, "topology": topo_text, "configs": len(configs),
                        "median_per_s": statistics.median(rates), "min_per_s": min(rates)})
    return {"benchmark": "plan_speed", "python": platform.python_version(), "machine": platform.processor() or platform.machine(),
            "results": results}


if __name__ == "__main__":
    doc = run()
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "plan_speed.json").write_text(json.dumps(doc, indent=2))
    for r in doc["results"]:
        print(f"{r['model']:>16} on {r['topology']:<16} {r['configs']:>6} configs  median {r['median_per_s']:,.0f}/s  min {r['min_per_s']:,.0f}/s")
