"""`bench --repeats N`: one configuration in N fresh processes, CI over processes and iterations."""

from __future__ import annotations

import json

from cli_helpers import assert_user_error, run_cli, run_json

from perfscale.measure.bench_config import BenchConfig, MeasureOptions
from perfscale.measure.compare import measure_repeated
from perfscale.measure.stats import StopRule
from perfscale.measure.store import Store

FAST = MeasureOptions(stop=StopRule(min_iters=3, min_time=0.1, max_time=1.0), warmup=1, gate=False, profile_memory=False)


def test_repeated_processes_pool_into_one_ci(tmp_path):
    with Store(tmp_path / "r.sqlite") as db:
        row = measure_repeated(BenchConfig(scenario="selftest"), FAST, repeats=3, store=db)
        stored = db.find(row.config.fingerprint())
    assert len(row.runs) == 3 and len({r.run_id for r in row.runs}) == 3  # three processes
    assert row.status == "ok" and row.throughput["processes"] == 3
    assert row.throughput["ci_low"] <= row.throughput["median"] <= row.throughput["ci_high"]
    assert len(stored) == 3  # every process stored as it finished


def test_cli_repeats_json(tmp_path):
    # The harness's own matmul scenario (no transformers import in the worker): the CLI path is the same.
    config = tmp_path / "selftest.json"
    config.write_text(json.dumps(BenchConfig(scenario="selftest").to_dict()))
    doc = run_json(
        "bench", "--config", str(config), "--repeats", "2", "--min-iters", "2",
        "--min-time", "0", "--max-time", "1", "--warmup", "1", "--store", str(tmp_path / "s.sqlite"),
    )
    (row,) = doc["configurations"]
    assert doc["repeats"] == 2 and row["runs"] == 2 and row["ok_runs"] == 2
    assert row["unit"] == "samples/s" and row["ci_low"] <= row["median"] <= row["ci_high"]
    assert row["peak_memory_bytes"] > 0


def test_cli_repeats_must_be_positive(tmp_path):
    assert_user_error(run_cli("bench", "--repeats", "0", "--store", str(tmp_path / "s.sqlite")), "--repeats must be an integer from 1 to 1000")
    assert_user_error(run_cli("bench", "--repeats", str(10**24), "--store", str(tmp_path / "s.sqlite")), "got 10000000")  # not 10^24 processes
