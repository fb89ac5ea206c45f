"""debug xla on torch.compile (the path without an XLA device): compilations per shape, graph breaks, host syncs,
bucketing bounds the compilations, and bad input. The XLA path itself: tests/test_debug_xla_device.py (`-m xla`)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from perfscale.errors import InvalidConfigError, PerfscaleError

TINY = str(Path(__file__).parent / "data" / "debug_xla_tiny")  # a 1-layer llama config: dynamo traces it in seconds


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # these tests count graphs; 2 OpenMP threads on a shared 2-core box only add waiting
    yield
    torch.set_num_threads(threads)


def toy_lm():
    """An embedding and a linear layer with a causal-LM-like interface: dynamo captures it in well under a second."""
    import torch
    from transformers.modeling_outputs import CausalLMOutput

    class ToyLM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = SimpleNamespace(vocab_size=64, pad_token_id=0)
            self.emb = torch.nn.Embedding(64, 16)
            self.out = torch.nn.Linear(16, 64)

        def forward(self, input_ids, attention_mask=None, labels=None):
            logits = self.out(self.emb(input_ids) * attention_mask.unsqueeze(-1))
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
            return CausalLMOutput(loss=loss, logits=logits)

    torch.manual_seed(0)
    return ToyLM()


LENGTHS = [3, 5, 9, 12, 3, 5, 9, 13]  # 5 distinct lengths as written; over buckets 8,16: two shapes
BUCKETS = [8, 16]


@pytest.fixture(scope="module")
def train_result():
    from perfscale.debug.xla import debug_xla

    return debug_xla(toy_lm(), mode="train", lengths=LENGTHS, batches=len(LENGTHS), batch=1, buckets=BUCKETS, device="cpu", log_every=4)


def test_as_written_compiles_one_graph_per_new_shape(train_result):
    b = train_result.before
    assert b.padding == "longest in batch" and b.item_in_step is True
    assert b.distinct_shapes == len(set(LENGTHS)) == 5
    seen, expected = set(), []
    for n in LENGTHS:  # a shape seen before compiles nothing, a new one exactly one graph (dynamic=False)
        expected.append(0 if n in seen else 1)
        seen.add(n)
    assert b.step_compilations == expected
    assert b.compilations == 5 and {tuple(s["shape"]): s["compilations"] for s in b.per_shape} == {(1, n): 1 for n in set(LENGTHS)}
    # dynamo's own reasons: the sequence dimension changed
    assert len(b.recompile_reasons) >= 4 and any("size mismatch at index 1" in r for r in b.recompile_reasons)


def test_item_in_the_step_is_found_and_breaks_the_graph(train_result):
    b, a = train_result.before, train_result.after
    # one break per compiled frame (each new shape): dynamo counts where it broke, not how often it ran
    assert sum(g["count"] for g in b.graph_breaks if "item" in g["reason"].lower()) == b.compilations == 5
    item = [s for s in b.syncs if s["kind"] == ".item()"]
    assert item and item[0]["in"] == "your code" and "xla.py" in item[0]["where"] and item[0]["per_step"] == 1
    assert a.graph_breaks == [] and not [s for s in a.syncs if s["kind"] == ".item()"]
    assert any("move .item() out of the step" in f for f in train_result.fixes)


def test_buckets_bound_the_compilations(train_result):
    a = train_result.after
    assert a.padding == "buckets 8,16" and a.distinct_shapes == 2
    assert {tuple(s["shape"]) for s in a.per_shape} == {(1, 8), (1, 16)}
    assert a.compilations == 2 <= train_result.bound == len(BUCKETS) + 1 and train_result.within_bound
    assert a.padded_tokens == sum(8 if n <= 8 else 16 for n in LENGTHS) and a.tokens == sum(LENGTHS)
    assert any(f.startswith("pad to buckets") and "pad_to_multiple_of=8" in f for f in train_result.fixes)
    doc = json.loads(json.dumps(train_result.to_dict(), allow_nan=False))
    assert doc["kind"] == "debug-xla" and doc["engine"] == "torch.compile" and doc["within_bound"] is True


@pytest.mark.slow  # ~20 s on a loaded 2-core box: two passes of compiled generate()
def test_generate_static_cache_and_buckets_bound_the_graphs():
    """A real transformers model's generate(): dynamic cache as written, static cache of one length over buckets fixed."""
    from perfscale.debug.xla import debug_xla
    from perfscale.runtimes.decoder import graph_bound

    r = debug_xla(TINY, mode="generate", lengths=[3, 6], batches=2, buckets=[16], new_tokens=2, device="cpu", probe=False)
    assert r.before.cache == "dynamic" and r.after.cache == "static" and r.bound == graph_bound((16,)) == 3
    assert r.before.distinct_shapes == 2 and r.after.distinct_shapes == 1
    # as written, the second length compiles its own prefill (and its cache length its own decode step)
    assert r.before.step_compilations[1] >= 1 and r.after.compilations <= r.bound
    assert r.after.step_compilations[1] == 0  # one bucket, one cache length: the second prompt compiles nothing
    assert r.within_bound
    assert any("cache_implementation='static'" in f for f in r.fixes)


def test_no_torch_xla_names_the_install_line():
    try:
        import torch_xla  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("torch_xla is installed here")
    from perfscale.debug.xla import INSTALL_LINE, debug_xla

    with pytest.raises(InvalidConfigError) as info:
        debug_xla(mode="train", device="xla", lengths=[4], batches=1)
    assert INSTALL_LINE in str(info.value) and "PJRT_DEVICE=CPU" in str(info.value)


@pytest.mark.parametrize("kwargs, words", [
    ({"mode": "serve"}, "--mode 'serve'"), ({"device": "tpu"}, "--device 'tpu'"), ({"backend": "cudagraphs"}, "--backend"),
    ({"batches": 0}, "--batches 0"), ({"lengths": [4, 200], "buckets": [16, 64]}, "beyond the largest bucket"),
    ({"lengths": [0]}, "1..4096"), ({"mode": "generate", "backend": "aot_eager"}, "aot_eager is for training"),
])
def test_bad_input_names_the_value(kwargs, words):
    from perfscale.debug.xla import debug_xla

    with pytest.raises(PerfscaleError) as info:
        debug_xla(TINY, **{"lengths": [4], "batches": 1, **kwargs})
    assert words in str(info.value)


def test_lengths_from_a_file_and_the_corpus(tmp_path):
    from perfscale.debug.xla import corpus_lengths, data_lengths, draw, parse_int_list

    (tmp_path / "ids.json").write_text(json.dumps([[1, 2, 3], [4] * 7]))
    assert data_lengths(str(tmp_path / "ids.json"))[0] == [3, 7]
    (tmp_path / "text.txt").write_text("one two three.\n\nfour\n")
    assert data_lengths(str(tmp_path / "text.txt"))[0] == [4, 1]
    population = corpus_lengths()
    assert len(population) > 1000 and len(set(population)) > 20  # a realistic spread of sentence lengths
    drawn = draw(population, 50, seed=0, max_len=64)
    assert drawn == draw(population, 50, seed=0, max_len=64) and max(drawn) <= 64 and min(drawn) >= 2
    assert parse_int_list("16, 32", "--buckets") == [16, 32] and parse_int_list("", "--buckets") is None
    for bad in ("16,x", "0", "-4"):
        with pytest.raises(InvalidConfigError):
            parse_int_list(bad, "--buckets")
    with pytest.raises(InvalidConfigError):
        data_lengths(str(tmp_path / "missing.json"))
