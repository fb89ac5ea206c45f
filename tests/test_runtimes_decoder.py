"""Decoder runtime: buckets bound recompilations, greedy-token gate, the decoder tuner and apply.decoder."""

from __future__ import annotations

import json

import pytest

from perfscale.errors import InvalidConfigError, UnsupportedModelError
from perfscale.runtimes.decoder import (
    DecoderRunner, DecoderSettings, bucket_length, graph_bound, greedy_agreement, load_decoder, make_prompts, reset_compiler,
)

# Unbucketed: a few distinct lengths, in increasing order (each compiles a prefill graph, and the growing
# static cache a decode graph). Bucketed: more lengths, mixed order, over two buckets; 8 and 16 fill a bucket
# exactly (no padding: generate drops the mask, the one extra prefill variant a bucket can have).
UNBUCKETED_LENGTHS = [3, 6, 9]
BUCKETED_LENGTHS = [3, 6, 9, 12, 4, 15, 7, 13, 8, 16, 5]
BUCKETS = (8, 16)
NEW_TOKENS = 4


@pytest.fixture(scope="module")
def lm():
    # One intra-op thread: on a shared 2-core box, 2 OpenMP threads made each forward ~60x slower whenever
    # another job held a core (benchmarks/LOG.md); these tests count graphs, they do not time.
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_decoder("perfscale-tiny-llama", seed=0)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def prompts_and_reference(lm):
    """Unpadded, uncompiled, dynamic-cache, batch-1 greedy tokens: the gate's reference."""
    prompts = make_prompts(BUCKETED_LENGTHS, lm.config.vocab_size, seed=1)
    reference = DecoderRunner(lm, DecoderSettings()).run(prompts, NEW_TOKENS)
    assert all(len(t) == NEW_TOKENS for t in reference.tokens)
    return prompts, reference.tokens


def _compiled_run(lm, prompts, settings, passes=1):
    """Runs through DecoderRunner (the product's path) on a fresh compiler; also counts dynamo's compile starts
    with its own callback, an independent count of the frames it compiled."""
    import torch._dynamo

    reset_compiler()  # also clears dynamo's callbacks: register after it
    starts = []
    torch._dynamo.callback_handler.register_start_callback(lambda args: starts.append(args.compile_id))
    runner = DecoderRunner(lm, settings)
    try:
        runs = [runner.run(prompts, NEW_TOKENS) for _ in range(passes)]
    finally:
        runner.close()
        reset_compiler()
    return runs, len(starts)


def test_bucket_length_and_settings():
    assert [bucket_length(n, (16, 32)) for n in (1, 16, 17, 32, 33, 70)] == [16, 16, 32, 32, 64, 96]
    assert bucket_length(7, None) == 7
    with pytest.raises(InvalidConfigError, match="increasing"):
        DecoderSettings(buckets=(32, 16))
    with pytest.raises(InvalidConfigError, match="static"):
        DecoderSettings(cache="paged")
    with pytest.raises(InvalidConfigError, match="cache='static'"):
        DecoderSettings(max_cache_len=64)
    with pytest.raises(InvalidConfigError, match="positive"):
        DecoderSettings(cache="static", max_cache_len=0)
    s = DecoderSettings(cache="static", compile=True, batch=4, buckets=(16, 32))
    assert DecoderSettings.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    assert s.generate_kwargs() == {"do_sample": False, "cache_implementation": "static"}
    # One cache length for the whole bucket set: largest bucket + new tokens, or the explicit max_cache_len.
    assert s.generate_kwargs(new_tokens=8) == {"do_sample": False, "cache_implementation": "static", "max_cache_len": 40}
    fixed = DecoderSettings(cache="static", buckets=(16, 32), max_cache_len=48)
    assert fixed.generate_kwargs() == fixed.generate_kwargs(new_tokens=8) == {
        "do_sample": False, "cache_implementation": "static", "max_cache_len": 48}
    assert DecoderSettings(cache="static").generate_kwargs(new_tokens=8) == {"do_sample": False, "cache_implementation": "static"}
    assert DecoderSettings(buckets=(16,)).generate_kwargs(new_tokens=8) == {"do_sample": False}


def test_seeded_random_weights_are_reproducible(lm):
    again = load_decoder("perfscale-tiny-llama", seed=0)
    assert all((a == b).all() for a, b in zip(lm.parameters(), again.parameters(), strict=True))
    with pytest.raises(UnsupportedModelError, match="random weights"):
        load_decoder("llama-3.1-8b")


def test_unbucketed_graphs_grow_with_each_new_prompt_length(lm, prompts_and_reference):
    prompts, reference = prompts_and_reference
    n = len(UNBUCKETED_LENGTHS)
    assert [len(p) for p in prompts[:n]] == UNBUCKETED_LENGTHS
    (run,), starts = _compiled_run(lm, prompts[:n], DecoderSettings(cache="static", compile=True, compile_backend="eager"))
    assert run.padded_lengths == UNBUCKETED_LENGTHS and run.cache_len is None
    # Every new length compiles at least one new graph: the count grows with the number of distinct lengths.
    after = run.graphs_after_call
    assert after[0] >= 1 and all(b > a for a, b in zip(after, after[1:], strict=False)), after
    assert run.graphs >= n and not run.recompile_limit_hit
    assert starts == run.graphs  # dynamo's compile-start callbacks agree with its unique_graphs counter
    gate = greedy_agreement(reference[:n], run.tokens)
    assert gate["passed"], gate


def test_buckets_bound_graphs_and_keep_greedy_tokens(lm, prompts_and_reference):
    prompts, reference = prompts_and_reference
    settings = DecoderSettings(cache="static", compile=True, compile_backend="eager", buckets=BUCKETS)
    (first, second), starts = _compiled_run(lm, prompts, settings, passes=2)
    assert set(first.padded_lengths) == set(BUCKETS)
    # One prefill graph per (bucket, padded or exactly full) + one decode graph shared by all buckets (the cache
    # length is fixed), however many distinct prompt lengths there are: <= graph_bound = 2 x #buckets + 1.
    # New graphs only on the first call of such a variant; none on a second pass.
    assert len(set(BUCKETED_LENGTHS)) > graph_bound(BUCKETS)
    variants = [(bucket_length(n, BUCKETS), n == bucket_length(n, BUCKETS)) for n in BUCKETED_LENGTHS]
    assert first.graphs == len(set(variants)) + 1 <= graph_bound(BUCKETS), (first.graphs, first.graphs_after_call)
    seen, grew = set(), []
    for k, (variant, g) in enumerate(zip(variants, first.graphs_after_call, strict=False)):
        if g > (first.graphs_after_call[k - 1] if k else 0):
            grew.append(variant not in seen)
        seen.add(variant)
    assert all(grew), (variants, first.graphs_after_call)
    assert second.graphs == 0 and not first.recompile_limit_hit
    assert first.cache_len == second.cache_len == BUCKETS[-1] + NEW_TOKENS
    assert starts == first.graphs
    for run in (first, second):  # left padding + attention mask: the same greedy tokens as the unpadded eager run
        gate = greedy_agreement(reference, run.tokens)
        assert gate["passed"], gate
        assert run.ttft_s and all(t > 0 for t in run.ttft_s) and run.tokens_per_s > 0


def test_bucketed_batches_keep_one_batch_shape(lm, prompts_and_reference):
    prompts, reference = prompts_and_reference
    sel = [0, 1, 3, 4, 6]  # lengths 3, 6, 12, 4, 7: batches of 3 and 2 -> the 2 is filled up to 3 rows
    settings = DecoderSettings(cache="static", compile=True, compile_backend="eager", batch=3, buckets=(16,))
    (run,), _ = _compiled_run(lm, [prompts[i] for i in sel], settings)
    assert run.padded_lengths == [16, 16] and run.graphs == 2, (run.graphs, run.graphs_after_call)
    gate = greedy_agreement([reference[i] for i in sel], run.tokens)
    assert gate["passed"], gate


def test_prompt_beyond_the_largest_bucket_is_reported(lm, prompts_and_reference):
    prompts, reference = prompts_and_reference
    run = DecoderRunner(lm, DecoderSettings(cache="static", buckets=(4,))).run(prompts[1:2], NEW_TOKENS)  # 6 tokens
    assert run.padded_lengths == [8] and run.cache_len == 4 + NEW_TOKENS
    assert "cache grew" in run.notes[0] and run.tokens == reference[1:2]


def test_recompile_limit_is_reported(lm, prompts_and_reference):
    import torch._dynamo

    prompts, _ = prompts_and_reference
    with torch._dynamo.config.patch(recompile_limit=2):
        (run,), _ = _compiled_run(lm, prompts[:3], DecoderSettings(cache="static", compile=True, compile_backend="eager"))
    assert run.recompile_limit_hit and "uncompiled" in run.notes[0]
    assert run.graphs <= 2 and len(run.tokens) == 3


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
    assert doc["recompiles"]["bucketed"] <= doc["recompiles"]["bucketed_bound"] < doc["recompiles"]["unbucketed"]
    kw = perfscale.apply.decoder(result.save(tmp_path / "dec.json"))
    assert kw == perfscale.apply.decoder(doc)
    assert kw["settings"] == doc["winner_settings"] and kw["generate"]["do_sample"] is False
    bucketed_static = [v for v in doc["variants"] if v["settings"]["buckets"] and v["settings"]["cache"] == "static"]
    assert bucketed_static and all(v["settings"]["max_cache_len"] == 16 + 3 for v in bucketed_static)  # bucket 16 holds 12
