"""Decoder runtime: buckets bound recompilations, greedy-token gate, the decoder tuner and apply.decoder."""

from __future__ import annotations

import json

import pytest

from perfscale.errors import InvalidConfigError, UnsupportedModelError
from perfscale.runtimes.decoder import (
    DecoderRunner, DecoderSettings, bucket_length, greedy_agreement, load_decoder, make_prompts, reset_compiler,
)

LENGTHS = [3, 6, 9, 12]


@pytest.fixture(scope="module")
def lm():
    return load_decoder("perfscale-tiny-llama", seed=0)


def test_bucket_length_and_settings():
    assert [bucket_length(n, (16, 32)) for n in (1, 16, 17, 32, 33, 70)] == [16, 16, 32, 32, 64, 96]
    assert bucket_length(7, None) == 7
    with pytest.raises(InvalidConfigError, match="increasing"):
        DecoderSettings(buckets=(32, 16))
    with pytest.raises(InvalidConfigError, match="static"):
        DecoderSettings(cache="paged")
    s = DecoderSettings(cache="static", compile=True, batch=4, buckets=(16, 32))
    assert DecoderSettings.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    assert s.generate_kwargs() == {"do_sample": False, "cache_implementation": "static"}


def test_seeded_random_weights_are_reproducible(lm):
    again = load_decoder("perfscale-tiny-llama", seed=0)
    assert all((a == b).all() for a, b in zip(lm.parameters(), again.parameters()))
    with pytest.raises(UnsupportedModelError, match="random weights"):
        load_decoder("llama-3.1-8b")


def test_buckets_bound_recompiles_and_keep_greedy_tokens(lm):
    prompts = make_prompts(LENGTHS, lm.config.vocab_size, seed=1)
    reference = DecoderRunner(lm, DecoderSettings()).run(prompts, 2)
    assert all(len(t) == 2 for t in reference.tokens)
    graphs = {}
    for name, buckets in (("unbucketed", None), ("bucketed", (16,))):
        reset_compiler()
        runner = DecoderRunner(lm, DecoderSettings(cache="static", compile=True, compile_backend="eager", buckets=buckets))
        try:
            run = runner.run(prompts, 2)
        finally:
            runner.close()
        graphs[name] = run.graphs
        gate = greedy_agreement(reference.tokens, run.tokens)
        assert gate["passed"], (name, gate)
        assert run.ttft_s and all(t > 0 for t in run.ttft_s) and run.tokens_per_s > 0
    reset_compiler()
    # One prefill graph per distinct length without buckets; one bucket -> a bounded, fixed count.
    assert graphs["unbucketed"] >= len(LENGTHS)
    assert graphs["bucketed"] <= 3 < graphs["unbucketed"]


def test_gate_reports_mismatches():
    gate = greedy_agreement([[1, 2, 3], [4, 5, 6]], [[1, 2, 3], [4, 9, 6]])
    assert not gate["passed"] and gate["identical_prompts"] == 1 and gate["first_mismatch_position"] == [None, 1]


@pytest.mark.slow
def test_tune_decoder_quick_and_apply(tmp_path):
    import perfscale.apply
    from perfscale.tune.infer_decoder import tune_decoder

    result = tune_decoder(prompt_lengths=[3, 12], new_tokens=3, batch=2, quick=True, passes=2)
    doc = result.to_dict()
    json.dumps(doc)
    assert doc["variants"][0]["label"].endswith("(reference)")
    assert all(v["gate"]["passed"] for v in doc["variants"] if v["status"] != "failed")
    for v in doc["variants"][1:]:
        assert v["speedup"]["ci_low"] <= v["speedup"]["ratio"] <= v["speedup"]["ci_high"]
        assert v["ttft_s"]["median"] > 0 and v["tpot_s"]["median"] > 0
    assert doc["recompiles"]["bucketed"] < doc["recompiles"]["unbucketed"]
    kw = perfscale.apply.decoder(result.save(tmp_path / "dec.json"))
    assert kw == perfscale.apply.decoder(doc)
    assert kw["settings"] == doc["winner_settings"] and kw["generate"]["do_sample"] is False
