"""Int8 weight-only decoders (runtimes/decoder_quant.py) and the interleaved decoder tuner (tune/infer_decoder.py)."""

from __future__ import annotations

import importlib.util
import json

import pytest

from perfscale.errors import InvalidConfigError
from perfscale.runtimes import decoder_quant
from perfscale.runtimes.decoder import DecoderRunner, DecoderSettings, greedy_agreement, load_decoder, make_prompts
from perfscale.runtimes.decoder_quant import parse_backends, quantize_decoder, resolve_backends

INT8 = "int8-weight-only"


@pytest.fixture(scope="module")
def lm():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see tests/test_runtimes_decoder.py: a shared 2-core box
    yield load_decoder("perfscale-tiny-llama", seed=0)
    torch.set_num_threads(threads)


@pytest.fixture
def no_torchao(monkeypatch):
    """torchao absent, whether or not this machine has it."""
    real = importlib.util.find_spec
    monkeypatch.setattr(decoder_quant.importlib.util, "find_spec", lambda name, *a: None if name == "torchao" else real(name, *a))


def test_torch_backend_is_int8_weights_times_per_row_scales():
    import torch
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 48), Conv1D(32, 48))  # Conv1D(nf=out, nx=in): GPT-2's layers
    before = [p.clone() for p in model.parameters()]
    q, info = quantize_decoder(model, INT8, "torch")
    assert info.layers == 2 and info.params_quantized == 64 * 48 + 48 * 32 and info.skipped_layers == []
    assert info.weight_bytes_int8 == info.params_quantized + 4 * (48 + 32)  # int8 weights + one fp32 scale per row
    assert all((a == b).all() for a, b in zip(before, model.parameters(), strict=True))  # the original is untouched
    x = torch.randn(3, 5, 64)
    with torch.no_grad():
        # Independent reference: round each row to 127 steps of its own absmax, then an fp32 matmul.
        w1, w2 = model[0].weight, model[1].weight.t()
        deq = [torch.round(w / (w.abs().amax(1, keepdim=True) / 127)) * (w.abs().amax(1, keepdim=True) / 127) for w in (w1, w2)]
        h = x @ deq[0].t() + model[0].bias
        expected = h @ deq[1].t() + model[1].bias
        got, exact = q(x), model(x)
    assert q[0].weight_int8.dtype == torch.int8 and q[0].weight_int8.abs().max() == 127
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4)
    assert 0 < (got - exact).abs().max() < 0.05  # quantized (not a copy), and close to fp32


def test_int8_runner_quantizes_a_copy_and_is_gated(lm):
    import torch

    prompts = make_prompts([5, 9], lm.config.vocab_size, seed=3)
    reference = DecoderRunner(lm, DecoderSettings()).run(prompts, 4)
    runner = DecoderRunner(lm, DecoderSettings(quant=INT8, quant_backend="torch"))
    linears = sum(isinstance(m, torch.nn.Linear) for m in lm.modules())
    assert runner.quant_info.layers == linears == 4 * 7 + 1  # q, k, v, o, gate, up, down per layer + lm_head
    assert runner.quant_info.weight_bytes_int8 < 0.26 * runner.quant_info.weight_bytes_fp32
    assert not any(isinstance(m, torch.nn.Linear) for m in runner.model.modules())
    run = runner.run(prompts, 4)
    gate = greedy_agreement(reference.tokens, run.tokens)
    assert [len(t) for t in run.tokens] == [4, 4] and 0.0 <= gate["prefix_agreement"] <= 1.0
    assert gate["passed"] == (run.tokens == reference.tokens)
    ids = torch.tensor([prompts[0]])
    with torch.inference_mode():
        diff = (runner.model(ids).logits - lm(ids).logits).abs().max().item()
    assert 0 < diff < 0.05  # int8 moved the logits a little
    assert DecoderRunner(lm, DecoderSettings()).run(prompts, 4).tokens == reference.tokens  # lm itself unchanged
    assert DecoderSettings(quant=INT8, quant_backend="torch").label().endswith("int8-weight-only[torch]")
    with pytest.raises(InvalidConfigError, match="torchao, torch"):
        DecoderSettings(quant=INT8)
    with pytest.raises(InvalidConfigError, match="without quant"):
        DecoderSettings(quant_backend="torch")


def test_prefix_agreement_says_how_close():
    gate = greedy_agreement([[1, 2, 3, 4], [5, 6, 7, 8]], [[1, 2, 9, 4], [5, 6, 7, 8]])
    assert not gate["passed"] and gate["first_mismatch_position"] == [2, None] and gate["prefix_agreement"] == 6 / 8


def test_backend_named_but_absent_is_an_error_unnamed_is_a_note(no_torchao):
    usable, notes = resolve_backends(None)
    assert usable == ["torch"] and len(notes) == 1 and "torchao" in notes[0] and "pip install 'torchao>=0.18'" in notes[0]
    with pytest.raises(InvalidConfigError, match=r"'torchao' cannot run here.*pip install 'torchao>=0.18'.*here: torch"):
        resolve_backends(("torchao",))
    with pytest.raises(InvalidConfigError, match="Choose from: torchao, torch"):
        resolve_backends(("onnx",))
    assert parse_backends(None) is None and parse_backends("none") == () and parse_backends("torch, TORCH") == ("torch",)
    for bad in ("", "none,torch", "int4"):
        with pytest.raises(InvalidConfigError, match="torchao, torch"):
            parse_backends(bad, "--quant-backends")


def test_cli_named_backend_not_installed_exits_2_with_the_install_line(no_torchao, capsys):
    from perfscale.cli.app import main

    assert main(["tune", "decoder", "--quant-backends", "torchao", "--json"]) == 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["error"]["type"] == "InvalidConfigError" and "pip install 'torchao>=0.18'" in doc["error"]["message"]


def test_torchao_backend(lm):
    pytest.importorskip("torchao", reason="torchao not installed (optional: pip install 'torchao>=0.18')")
    prompts = make_prompts([5, 9], lm.config.vocab_size, seed=3)
    runner = DecoderRunner(lm, DecoderSettings(quant=INT8, quant_backend="torchao"))
    assert runner.quant_info.layers == 4 * 7 + 1 and runner.quant_info.backend == "torchao"
    assert "Int8" in type(runner.model.lm_head.weight).__name__  # torchao's int8 tensor subclass
    run = runner.run(prompts, 3)
    assert [len(t) for t in run.tokens] == [3, 3]


def test_tuner_times_variants_interleaved_with_int8(monkeypatch, no_torchao):
    import torch

    from perfscale.tune import infer_decoder
    from perfscale.tune.infer_decoder import tune_decoder

    # The capture-only recompile count costs ~15-40 s of dynamo tracing here; it has its own tests
    # (tests/test_runtimes_decoder.py). This test is about the timing: interleaving, pairing, the int8 variant.
    monkeypatch.setattr(infer_decoder, "count_recompiles", lambda lm, prompts, buckets: {
        "lengths": sorted({len(p) for p in prompts}), "buckets": list(buckets), "bucketed_bound": 0, "unbucketed": 0, "bucketed": 0})
    order: list[str] = []
    real_run = DecoderRunner.run

    def logged(self, prompts, new_tokens):
        order.append(self.settings.label())
        return real_run(self, prompts, new_tokens)

    monkeypatch.setattr(DecoderRunner, "run", logged)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = tune_decoder(prompt_lengths=[3, 6], new_tokens=2, batch=2, quick=True, passes=3)
    finally:
        torch.set_num_threads(threads)
    doc = json.loads(json.dumps(result.to_dict()))
    labels = [v["settings"] for v in doc["variants"]]
    names = [DecoderSettings.from_dict(s).label() for s in labels]
    k = len(names)
    assert names[-1].endswith("int8-weight-only[torch]") and doc["quant_backends"] == ["torch"]
    assert any("torchao skipped" in n and "pip install" in n for n in doc["notes"])
    # One warm-up each, in order, then 3 rounds of every variant once, each round's order rotated by one.
    assert order[:k] == names
    rounds = [order[k + r * k: k + (r + 1) * k] for r in range(3)]
    assert rounds == [names[r:] + names[:r] for r in range(3)] and len(order) == 4 * k
    for v in doc["variants"]:
        assert len(v["pass_times_s"]) == 3 and v["tokens_per_s"]["n"] == 3
    for v in doc["variants"][1:]:
        sp = v["speedup"]
        assert sp["rounds"] == 3 and sp["ci_low"] <= sp["ratio"] <= sp["ci_high"]
        ref_t, t = doc["variants"][0]["pass_times_s"], v["pass_times_s"]
        assert sp["per_round"] == pytest.approx([a / b for a, b in zip(ref_t, t, strict=True)])
        assert v["status"] in ("ok", "slower", "inaccurate") and "prefix_agreement" in v["gate"]
    int8 = doc["variants"][-1]
    assert int8["quant"]["layers"] == 29 and int8["gate"]["passed"] == (int8["status"] != "inaccurate")
    assert doc["measurement"]["rounds"] == 3 and "interleaved" in doc["measurement"]["method"]


def test_a_variant_that_crashes_is_a_result_and_no_reference_is_an_error(lm, monkeypatch):
    from perfscale.tune.infer_decoder import measure_interleaved

    prompts = make_prompts([3, 5], lm.config.vocab_size, seed=2)
    settings = [DecoderSettings(), DecoderSettings(cache="static"), DecoderSettings(batch=2)]
    real_run, calls = DecoderRunner.run, []

    def flaky(self, prompts, new_tokens):
        calls.append(self.settings.label())
        if self.settings.cache == "static" and calls.count(self.settings.label()) == 2:  # its first timed pass
            raise RuntimeError("boom")
        return real_run(self, prompts, new_tokens)

    monkeypatch.setattr(DecoderRunner, "run", flaky)
    ref, static, batched = measure_interleaved(lm, settings, prompts, 2, passes=2)
    assert static.status == "failed" and static.reason == "RuntimeError: boom" and static.speedup is None
    assert ref.status == batched.status == "ok" and len(batched.pass_times_s) == 2 and batched.speedup["rounds"] == 2
    assert calls.count(static.label) == 2  # not run again after it failed

    def broken(self, prompts, new_tokens):
        raise RuntimeError("no generate here")

    monkeypatch.setattr(DecoderRunner, "run", broken)
    variants = measure_interleaved(lm, settings, prompts, 2, passes=2)
    assert variants[0].status == "failed" and all(v.tokens_per_s is None for v in variants)


def test_a_quantized_winner_says_how_to_quantize():
    import perfscale.apply
    from perfscale.tune.infer_decoder import DecoderTuneResult

    settings = DecoderSettings(quant=INT8, quant_backend="torch")
    result = DecoderTuneResult(model="m", prompt_lengths=[3], new_tokens=2, variants=[], winner=settings.label(),
                               winner_settings=settings.to_dict(), verdict="", recompiles={}, passes=1)
    assert "quantize_decoder(model, 'int8-weight-only', 'torch')" in result.apply_snippet
    kw = perfscale.apply.decoder(result.to_dict())
    assert DecoderSettings.from_dict(kw["settings"]) == settings
    plain = DecoderTuneResult(model="m", prompt_lengths=[3], new_tokens=2, variants=[], winner="eager",
                              winner_settings=DecoderSettings().to_dict(), verdict="", recompiles={}, passes=1)
    assert "quantize_decoder" not in plain.apply_snippet
