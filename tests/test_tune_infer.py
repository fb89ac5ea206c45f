"""`perfscale tune --infer`: the encoder search end to end (CLI, JSON, save, apply) and its failure paths."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from perfscale.errors import InvalidConfigError

from test_runtimes_encoder import SENTENCES, make_tiny_encoder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_encoder(tmp_path_factory.mktemp("tiny-encoder-tune"))


def _cli(*args, env_cache):
    import os

    env = dict(os.environ, XDG_CACHE_HOME=str(env_cache))
    return subprocess.run([sys.executable, "-c", "from perfscale.cli.app import run; run()", *args],
                          capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
def test_cli_tune_infer_quick_json_save_and_apply(tiny, tmp_path):
    import perfscale.apply
    from perfscale.runtimes.encoder import EncoderSettings, load_encoder
    from perfscale.tune.infer import load_result

    saved = tmp_path / "tuned.json"
    proc = _cli("tune", "encoder", "--model", str(tiny), "--quick", "--backends", "eager,onnxruntime", "--budget-seconds", "600",  # every variant, however busy the box
                "--json", "--save", str(saved),
                env_cache=tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)  # exactly one JSON document on stdout
    labels = [v["label"] for v in doc["variants"]]
    assert labels[:2] == ["sentence-transformers", "fp32 eager (reference)"]
    assert "onnxruntime+fusions int8-dynamic b32" in labels and "onnxruntime+fusions int8-per-channel b32" in labels
    by = {v["label"]: v for v in doc["variants"]}
    # A quiet terminal: in --json mode stderr is empty; what the libraries printed is one note.
    assert proc.stderr.strip() == "", proc.stderr[-2000:]
    assert any(n.startswith("third-party output captured and not shown") for n in doc["notes"]), doc["notes"]
    # Every non-skipped variant was gated against fp32 eager on the screening slice; the finalists on the whole gate corpus.
    from perfscale.tune.infer import QUICK_SCREEN_SENTENCES

    assert doc["corpus_sentences"] > QUICK_SCREEN_SENTENCES
    for v in doc["variants"][2:]:
        if v["status"] != "skipped":
            assert v["accuracy"]["n"] in (QUICK_SCREEN_SENTENCES, doc["corpus_sentences"]), v
            assert (v["status"] == "inaccurate") == (not v["accuracy"]["passed"])
            if v["measured"]:
                assert v["accuracy"]["n"] == doc["corpus_sentences"]
    assert by["onnxruntime b32"]["accuracy"]["min_cosine"] > 0.9999
    assert by["sentence-transformers"]["accuracy"]["mean_cosine"] > 0.99999
    # The baseline and the finalists were measured in fresh processes with a speed-up CI vs the baseline.
    measured = [v for v in doc["variants"] if v["measured"]]
    assert measured[0]["label"] == "sentence-transformers" and len(measured) >= 2
    for v in measured[1:]:
        sp = v["measured"]["speedup"]
        if sp:
            assert sp["ci_low"] <= sp["ratio"] <= sp["ci_high"]
    winner = by[doc["winner"]]
    assert winner["status"] == "ok" and winner["accuracy"]["passed"]
    if doc["speedup"]:
        assert doc["speedup"]["ci_low"] > 1
    assert "perfscale.apply.encoder" in doc["apply_snippet"]
    # Serving shapes (issue 21): the baseline's and the winner's batch-1 latency under one interleaved stream.
    assert doc["objective"] == "throughput"
    lat = doc["serving"]["latency"]
    assert set(lat) == {"sentence-transformers", doc["winner"]} and doc["serving"]["requests"] >= 16
    assert all(v["n"] == doc["serving"]["requests"] and v["p50_ms"] <= v["p99_ms"] for v in lat.values())
    # Apply: from the saved path, the parsed dict and the result object give the same encoder.
    assert json.loads(saved.read_text())["winner"] == doc["winner"]
    cache = tmp_path / "cache" / "perfscale"
    expected = load_encoder(str(tiny), EncoderSettings.from_dict(doc["winner_settings"]), cache_dir=cache).encode(SENTENCES)
    for source in (saved, str(saved), doc, load_result(doc)):
        out = perfscale.apply.encoder(source, cache_dir=cache).encode(SENTENCES)
        np.testing.assert_allclose(out, expected, atol=1e-6)


def test_gate_nobody_passes_keeps_baseline_and_says_why(tiny, tmp_path):
    from perfscale.tune.infer import tune_encoder

    result = tune_encoder(str(tiny), quick=True, backends=("onnxruntime",), sentences=SENTENCES, min_mean_cosine=1.0,
                          min_min_cosine=1.0, cache_dir=tmp_path, budget_seconds=600)
    assert result.winner == "sentence-transformers" and result.speedup is None
    tried = [v for v in result.variants if v.stage == "runtime"]
    assert tried and all(v.status == "inaccurate" and "cosine" in v.reason for v in tried)
    assert "keep the baseline" in result.verdict
    for v in tried:
        assert v.label in result.verdict
    # The gate nothing passes says which variant came closest, by its worse margin, and what would accept it.
    closest = max(tried, key=lambda v: min(v.accuracy["mean_cosine"] - 1.0, v.accuracy["min_cosine"] - 1.0))
    assert f"closest: {closest.label} (mean cosine {closest.accuracy['mean_cosine']:.4f}" in result.verdict
    assert "--min-min-cosine" in result.verdict
    json.dumps(result.to_dict())  # serialisable


def test_budget_skips_variants_and_bad_values(tiny, tmp_path, monkeypatch):
    from perfscale.tune import infer
    from perfscale.tune.infer import tune_encoder

    with pytest.raises(InvalidConfigError, match="tensorrt"):
        tune_encoder(str(tiny), backends=("eager", "tensorrt"))
    with pytest.raises(InvalidConfigError, match="budget"):
        tune_encoder(str(tiny), budget_seconds=0)
    with pytest.raises(InvalidConfigError, match="cosine"):
        tune_encoder(str(tiny), min_mean_cosine=1.5)
    monkeypatch.setattr(infer, "MIN_SCREENED", 0)  # (the first two of the prior order are screened whatever the budget)
    result = tune_encoder(str(tiny), quick=True, backends=("eager",), sentences=SENTENCES[:3], budget_seconds=1e-6,
                          min_mean_cosine=1.0, min_min_cosine=1.0, cache_dir=tmp_path)
    runtime = [v for v in result.variants if v.stage == "runtime"]
    assert runtime and all(v.status == "skipped" and "budget" in v.reason for v in runtime)
    assert result.winner == "sentence-transformers" and "--budget-seconds" in result.verdict and "not tried" in result.verdict


def test_cli_bad_input_exit_codes(tiny, tmp_path):
    import shutil

    broken = tmp_path / "no-tokenizer"
    broken.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny / name, broken / name)
    proc = _cli("tune", "encoder", "--model", str(broken), "--quick", "--json", env_cache=tmp_path)
    assert proc.returncode == 2 and "no tokenizer" in proc.stderr
    assert json.loads(proc.stdout)["error"]["type"] == "UnsupportedModelError"  # --json: one error document
    proc = _cli("tune", "encoder", "--model", str(tiny), "--backends", "eager,tensorrt", env_cache=tmp_path)
    assert proc.returncode == 2 and "tensorrt" in proc.stderr and "onnxruntime" in proc.stderr


def test_apply_rejects_what_is_not_a_result(tmp_path):
    import perfscale.apply

    with pytest.raises(InvalidConfigError, match="winner_settings"):
        perfscale.apply.encoder({"winner": "x"})
    with pytest.raises(InvalidConfigError, match="Cannot read"):
        perfscale.apply.encoder(tmp_path / "missing.json")
    with pytest.raises(InvalidConfigError, match="decoder"):
        perfscale.apply.decoder({"kind": "encoder", "winner_settings": {}})
