"""Serving shapes of `tune encoder`: single-request latency streams, the latency objective, old results."""

from __future__ import annotations

import json

import numpy as np
import pytest

from test_runtimes_encoder import SENTENCES, make_tiny_encoder


class _Clock:
    """A fake perf_counter: requests advance it, so the test measures the stream's logic, not this busy box."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class _Fake:
    """An encoder whose request takes `ms` times the machine's current slowness (shared by every encoder)."""

    def __init__(self, clock: _Clock, ms: float, load):
        self.clock, self.ms, self.load, self.served = clock, ms, load, []

    def encode(self, sentences):
        self.clock.now += self.ms / 1e3 * self.load(len(self.served))
        self.served.append(sentences[0])
        return np.zeros((len(sentences), 4), dtype=np.float32)


def test_stream_is_interleaved_and_the_speedup_ci_brackets_the_truth(monkeypatch):
    from perfscale.tune import infer_serving
    from perfscale.tune.infer_serving import latency_summary, p50_speedup, stream_latencies

    clock = _Clock()
    monkeypatch.setattr(infer_serving.time, "perf_counter", clock)
    rng = np.random.default_rng(0)
    drift = np.exp(np.cumsum(rng.normal(0, 0.3, 200)))  # the box's load: a random walk, 1x to many x, shared by both
    load = lambda i: drift[i] * rng.uniform(0.95, 1.05)  # noqa: E731 - plus 5% jitter per request
    slow, fast = _Fake(clock, 3.0, load), _Fake(clock, 1.0, load)
    requests = [f"sentence {i}" for i in range(40)]
    times = stream_latencies({"slow": slow, "fast": fast}, requests, warmup=2)
    assert len(times["slow"]) == len(times["fast"]) == 40
    assert slow.served == fast.served == requests[:2] + requests  # the same stream, in the same order, each request
    sp = p50_speedup(times["slow"], times["fast"])
    assert sp["ci_low"] <= sp["ratio"] <= sp["ci_high"] and sp["pairs"] == 40
    assert sp["significant"] and sp["ci_low"] < 3.0 < sp["ci_high"], sp  # the truth is 3x, however the load moved
    s = latency_summary(times["fast"])
    assert s["n"] == 40 and 0 < s["p50_ms"] <= s["p90_ms"] <= s["p99_ms"] and s["requests_per_s"] == pytest.approx(1e3 / s["mean_ms"])
    same = p50_speedup(times["fast"], times["fast"])
    assert same["ratio"] == 1.0 and not same["significant"]  # a variant is never significantly faster than itself
    assert p50_speedup([0.1], [0.1]) is None and latency_summary([])["p50_ms"] is None
    # A time limit stops the stream after the minimum number of requests; every encoder served the same ones.
    capped = stream_latencies({"slow": _Fake(clock, 3.0, lambda i: 1.0), "fast": _Fake(clock, 1.0, lambda i: 1.0)}, requests,
                              warmup=0, max_time_s=0.0, min_requests=5)
    assert len(capped["slow"]) == len(capped["fast"]) == 5


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_encoder(tmp_path_factory.mktemp("tiny-encoder-serving"))


def test_latency_objective_picks_by_single_requests_and_old_results_still_load(tiny, tmp_path, monkeypatch):
    import perfscale.apply
    from perfscale.runtimes import encoder
    from perfscale.tune.infer import EncoderTuneResult, load_result, tune_encoder

    # Every backend searched (none named), onnxruntime and openvino "absent": skipped with their install lines, no error.
    lines = {"onnxruntime": "pip install onnxruntime onnx onnxscript", "openvino": "pip install openvino nncf"}
    monkeypatch.setattr(encoder, "backend_missing", lambda b: lines.get(b))
    result = tune_encoder(str(tiny), quick=True, sentences=SENTENCES, objective="latency", cache_dir=tmp_path, budget_seconds=600)
    doc = json.loads(json.dumps(result.to_dict()))
    assert doc["objective"] == "latency"
    for backend, line in lines.items():
        assert f"backend {backend} skipped: not installed ({line})" in doc["notes"]
        skipped = [v for v in doc["variants"] if v["settings"]["backend"] == backend]
        assert skipped and all(v["status"] == "skipped" and line in v["reason"] for v in skipped)
    serving = doc["serving"]
    assert serving["requests"] == len(SENTENCES) and "each request sent to every encoder in turn" in serving["method"]
    assert "sentence-transformers" in serving["latency"]
    screened = [v for v in doc["variants"] if v["stage"] == "runtime" and v["status"] != "skipped"]
    assert screened and all(v["latency"]["n"] == len(SENTENCES) and v["latency"]["p50_ms"] > 0 for v in screened)
    assert not [v for v in doc["variants"] if v["stage"] in ("batch_size", "padding", "bucketing")]  # nothing for a batch of one
    if doc["winner"] != "sentence-transformers":
        sp = serving["p50_speedup"][doc["winner"]]
        assert doc["speedup"] == sp and sp["ci_low"] > 1 and "single request" in doc["verdict"]
        assert serving["latency"][doc["winner"]]["p50_ms"] < serving["latency"]["sentence-transformers"]["p50_ms"]
    else:
        assert doc["speedup"] is None and "batch 1" in doc["verdict"]
    # A result saved before serving shapes existed (no objective, serving or per-variant latency) loads and applies.
    old = {k: v for k, v in doc.items() if k not in ("objective", "serving")}
    old["variants"] = [{k: v for k, v in variant.items() if k != "latency"} for variant in doc["variants"]]
    loaded = load_result(old)
    assert isinstance(loaded, EncoderTuneResult) and loaded.objective == "throughput" and loaded.serving is None
    # the old name of autocast, on perfscale's own engine without int8 (the measured winner may be the sentence-transformers
    # baseline, fp32 only, or an int8 variant: which one wins at batch 1 is the timing's, not the test's)
    old["winner_settings"] = {k: v for k, v in old["winner_settings"].items()} | {"precision": "bf16", "engine": "perfscale", "quantization": "none"}
    assert perfscale.apply.encoder(old, cache_dir=tmp_path).settings.precision == "bf16-mixed"
