"""compare: interleaving, ratios with CIs, verdicts, memory, the gate's effect on a verdict."""

from __future__ import annotations

import numpy as np

from perfscale.measure.bench_config import BenchConfig, MeasureOptions
from perfscale.measure.compare import CompareRow, _ratios, _summarise_row, compare, memory_verdict, speed_verdict
from perfscale.measure.result import BenchResult
from perfscale.measure.stats import Ratio, StopRule
from perfscale.measure.store import Store


def test_verdict_texts():
    assert speed_verdict("A", "B", Ratio(1.31, 1.27, 1.35)) == "B is 1.31x faster than A [1.27, 1.35]"
    assert speed_verdict("A", "B", Ratio(0.5, 0.45, 0.55)).startswith("B is 2.00x slower than A [1.82, 2.22]")
    assert speed_verdict("A", "B", Ratio(1.01, 0.97, 1.05)).startswith("no significant difference at 95%")
    assert "uses 0.50x the peak memory of A (less)" in memory_verdict("A", "B", Ratio(0.5, 0.49, 0.51))
    assert memory_verdict("A", "B", Ratio(1.0, 1.0, 1.0)).startswith("no significant memory difference")


def _fake(config, mean, mem, status="ok", seed=0, n=40):
    rng = np.random.default_rng(seed)
    return BenchResult(config=config, status=status, samples=list(rng.normal(mean, mean * 0.01, n)), samples_per_iter=1,
                       device="cpu", memory={"cpu_peak_rss": mem})


def _rows(b_mean, b_mem, b_status="ok"):
    a_cfg, b_cfg = BenchConfig(scenario="selftest", label="A"), BenchConfig(scenario="selftest", label="B", seed=1)
    a = CompareRow("A", a_cfg, "ok", None, [_fake(a_cfg, 1.0, 1000, seed=i) for i in range(3)])
    b = CompareRow("B", b_cfg, "ok", None, [_fake(b_cfg, b_mean, b_mem, b_status, seed=10 + i) for i in range(3)])
    if b_status == "inaccurate":
        for r in b.runs:
            r.reason = "accuracy gate vs fp32 eager: mean cosine 0.9 < 0.99"
    for row in (a, b):
        _summarise_row(row)
    _ratios([a, b])
    return a, b


def test_ratio_to_first_from_samples():
    a, b = _rows(b_mean=1 / 1.3, b_mem=500)
    assert abs(b.speedup.ratio - 1.3) < 0.03 and b.speedup.ci_low > 1.2
    assert b.speed_verdict.startswith("B is 1.3") and "faster than A" in b.speed_verdict
    assert abs(b.memory_ratio.ratio - 0.5) < 1e-9 and "uses 0.50x" in b.memory_verdict
    assert a.throughput["median"] < b.throughput["median"]
    same = _rows(b_mean=1.0, b_mem=1000)[1]
    assert "no significant difference" in same.speed_verdict


def test_inaccurate_variant_is_not_called_faster():
    _, b = _rows(b_mean=0.5, b_mem=1000, b_status="inaccurate")
    assert b.status == "inaccurate"
    assert b.speed_verdict.startswith("inaccurate, not counted as faster")


def test_failed_variant_has_no_verdict():
    a_cfg, b_cfg = BenchConfig(scenario="selftest", label="A"), BenchConfig(scenario="selftest", label="B", seed=1)
    a = CompareRow("A", a_cfg, "ok", None, [_fake(a_cfg, 1.0, 1000)])
    b = CompareRow("B", b_cfg, "ok", None, [BenchResult(config=b_cfg, status="oom", reason="out of memory", oom_bytes=10)])
    for row in (a, b):
        _summarise_row(row)
    _ratios([a, b])
    assert b.status == "oom" and "no verdict" in b.speed_verdict


def test_compare_runs_interleaved_in_fresh_processes(tmp_path):
    opts = MeasureOptions(stop=StopRule(min_iters=3, min_time=0.1, max_time=1.0), warmup=1, profile_memory=False)
    slow = BenchConfig(scenario="selftest", label="slow", extra={"sleep": 0.02})
    fast = BenchConfig(scenario="selftest", label="fast", extra={"sleep": 0.002})
    with Store(tmp_path / "r.sqlite") as db:
        res = compare([slow, fast], opts, repeats=2, store=db)
        stored = db.runs(group=res.group)
    assert not res.interrupted and len(stored) == 4
    order = [(r.result.config.label, r.result.repeat) for r in reversed(stored)]
    assert order == [("slow", 0), ("fast", 0), ("slow", 1), ("fast", 1)]  # A B A B
    pids = {r.result.environment.get("hostname") for r in stored}
    assert len(pids) == 1
    doc = res.to_dict()
    row = doc["configurations"][1]
    assert row["speedup_vs_first"]["ratio"] > 2 and "fast is" in row["speed_verdict"] and "faster than slow" in row["speed_verdict"]
    assert row["ci_low"] <= row["median"] <= row["ci_high"] and row["runs"] == 2
    assert doc["configurations"][0]["speedup_vs_first"] is None and doc["reference"] == "slow"
