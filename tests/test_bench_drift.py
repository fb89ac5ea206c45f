"""Machine drift: the between-invocation spread learnt from the store, and the re-run interval
`perfscale bench` reports with it (measure/drift.py).

Whether two invocations then agree is a benchmark on this machine (benchmarks/bench_repeatability.py,
benchmarks/LOG.md), not a timed test."""

from __future__ import annotations

import json
import math
import statistics
import time

import pytest

from perfscale.cli.app import main
from perfscale.measure import drift as D
from perfscale.measure.bench_config import BenchConfig
from perfscale.measure.result import BenchResult
from perfscale.measure.store import Store

ENV = {"hostname": "box", "cpu": {"model": "EPYC"}, "threads": {"torch_intra_op": 2}, "torch_build": {"version": "2.13.0"}}


def test_pooled_drift_is_the_within_configuration_spread_of_log_medians():
    assert D.pooled_drift({"a": [1.0], "b": [2.0]}).cv is None  # nothing measured twice: unknown
    assert D.pooled_drift({"a": [1.0, 1.5]}).cv is None  # one degree of freedom: too little to say
    drift = D.pooled_drift({"a": [1.0, 1.1], "b": [2.0, 2.2, 1.8], "c": [5.0]})
    a = [math.log(1.0), math.log(1.1)]
    b = [math.log(2.0), math.log(2.2), math.log(1.8)]
    squares = sum((v - statistics.fmean(a)) ** 2 for v in a) + sum((v - statistics.fmean(b)) ** 2 for v in b)
    assert drift.cv == pytest.approx(math.sqrt(squares / (5 - 2)))
    assert (drift.invocations, drift.configurations, drift.degrees_of_freedom) == (5, 2, 3)
    assert D.pooled_drift({"a": [3.0, 3.0, 3.0]}).cv == 0.0


def test_widen_adds_the_drift_in_quadrature_on_a_log_scale():
    assert D.widen(100.0, 98.0, 103.0, D.Drift(None, 0, 0)) == (98.0, 103.0)
    assert D.widen(100.0, 98.0, 103.0, D.Drift(0.0, 2, 1)) == pytest.approx((98.0, 103.0))
    low, high = D.widen(100.0, 98.0, 103.0, D.Drift(0.05, 4, 2))
    assert math.log(100 / low) == pytest.approx(math.sqrt(math.log(100 / 98) ** 2 + (D.Z95 * 0.05) ** 2))
    assert math.log(high / 100) == pytest.approx(math.sqrt(math.log(103 / 100) ** 2 + (D.Z95 * 0.05) ** 2))


def _stored(db: Store, samples: list[float], group: str, environment: dict = ENV, size: int = 32) -> BenchResult:
    result = BenchResult(config=BenchConfig(scenario="selftest", extra={"size": size}), status="ok", samples=samples,
                         group=group, environment=environment, device="cpu")
    db.add(result)
    return result


def test_machine_drift_reads_this_machines_earlier_invocations(tmp_path):
    with Store(tmp_path / "r.sqlite") as db:
        like = _stored(db, [0.010, 0.010, 0.011], "g1")
        _stored(db, [0.012, 0.012, 0.013], "g2")
        _stored(db, [0.020, 0.021], "g3", size=64)  # another configuration, measured once: no information
        _stored(db, [0.050, 0.050], "g4", ENV | {"hostname": "other"})  # another machine: not this one's drift
        _stored(db, [0.011, 0.011], "g5")
        drift = D.machine_drift(db, like)
        assert (drift.invocations, drift.configurations, drift.source) == (3, 1, "this configuration")
        assert drift.cv == pytest.approx(D.pooled_drift({"c": [0.010, 0.012, 0.011]}).cv)
        left_out = D.machine_drift(db, like, exclude_group="g5")  # two invocations left: unknown
        assert left_out.invocations == 2 and left_out.cv is None
        assert D.machine_drift(db, like, now=time.time() + 8 * 86400).cv is None  # older than the window


def test_bench_widens_its_interval_by_earlier_invocations_only(tmp_path, capsys):
    store = str(tmp_path / "r.sqlite")
    config = tmp_path / "selftest.json"  # the harness's own matmul scenario: no transformers import in the worker
    config.write_text(json.dumps(BenchConfig(scenario="selftest").to_dict()))
    args = ["bench", "--config", str(config), "--min-iters", "3", "--min-time", "0.1",
            "--max-time", "1", "--warmup", "1", "--store", store, "--json"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)["configurations"][0]
    assert first["machine_drift"]["cv"] is None  # a fresh store: drift unknown, interval = within-run CI
    assert (first["ci_low"], first["ci_high"]) == (first["within_run_ci_low"], first["within_run_ci_high"])
    with Store(store) as db:  # two more earlier invocations of it, 10% slower and faster
        stored = db.runs()[0].result
        for group, scale in (("earlier-a", 1.1), ("earlier-b", 0.9)):
            db.add(BenchResult.from_dict(stored.to_dict() | {"run_id": group, "group": group,
                                                             "samples": [t * scale for t in stored.samples]}))
        medians = [statistics.median(r.result.samples) for r in db.runs()]
    assert main(args) == 0
    second = json.loads(capsys.readouterr().out)["configurations"][0]
    drift = second["machine_drift"]
    assert (drift["invocations"], drift["source"]) == (3, "this configuration")  # the earlier three, not itself
    assert drift["cv"] == pytest.approx(D.pooled_drift({"c": medians}).cv)
    assert second["ci_low"] < second["within_run_ci_low"] <= second["median"] <= second["within_run_ci_high"] < second["ci_high"]
    expected = D.widen(second["median"], second["within_run_ci_low"], second["within_run_ci_high"],
                       D.Drift(drift["cv"], 3, 1))
    assert (second["ci_low"], second["ci_high"]) == pytest.approx(expected)


def test_a_configurations_own_history_wins_once_it_has_three_invocations(tmp_path):
    """Spread differs by configuration: a steady one is not judged by a jumpy neighbour's history."""
    with Store(tmp_path / "r.sqlite") as db:
        for group, seconds in (("n1", 0.05), ("n2", 0.08), ("n3", 0.05)):  # a jumpy configuration
            _stored(db, [seconds, seconds], group, size=64)
        steady = [_stored(db, [seconds, seconds], group) for group, seconds in (("s1", 0.0100), ("s2", 0.0101))]
        pooled = D.machine_drift(db, steady[0])  # two invocations of its own: the machine-wide pool
        assert (pooled.configurations, pooled.degrees_of_freedom) == (2, 3) and pooled.source.startswith("this machine")
        _stored(db, [0.0099, 0.0099], "s3")
        own = D.machine_drift(db, steady[0])
        assert own.source == "this configuration" and own.cv < pooled.cv / 5
        assert own.cv == pytest.approx(D.pooled_drift({"s": [0.0100, 0.0101, 0.0099]}).cv)
