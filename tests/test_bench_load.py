"""`perfscale bench --scenario load` (issue 15): from_pretrained in a fresh (forked, primed) process, timed,
with the RSS it takes against the checkpoint's bytes; its configuration rules; the forked child's failures."""

from __future__ import annotations


import pytest

from perfscale.errors import PerfscaleError
from perfscale.cli.inline_config import parse_inline
from perfscale.measure.bench_config import BenchConfig, MeasureOptions
from perfscale.measure.stats import StopRule

from tiny_configs import tiny_config


def _random_checkpoint(folder, hidden=512, vocab=16000, layers=4):
    """A random fp32 Llama of ~115 MB (the issue's 100-300 MB model) as save_pretrained lays it out: config.json and
    model.safetensors, written from the meta model's shapes (no weight init: seconds instead of tens)."""
    import torch
    import transformers
    from safetensors.torch import save_file

    cfg = tiny_config("llama") | {"hidden_size": hidden, "intermediate_size": 1376, "num_hidden_layers": layers, "vocab_size": vocab,
                                  "num_attention_heads": 8, "num_key_value_heads": 4}
    config = transformers.LlamaConfig(**{k: v for k, v in cfg.items() if k not in ("model_type", "architectures")})
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in transformers.LlamaForCausalLM(config).state_dict().items()}
    folder.mkdir()
    config.save_pretrained(folder)
    generator = torch.Generator().manual_seed(0)
    save_file({k: torch.randn(shape, generator=generator) for k, shape in shapes.items()}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    return sum(shape.numel() for shape in shapes.values()) * 4


def test_configuration_rules():
    base = BenchConfig(scenario="load")
    assert (base.model, base.device, base.display) == ("perfscale-tiny-llama", "cpu", "load defaults")  # host memory: cpu
    offload = parse_inline("load=offload", base)
    assert offload.extra == {"load": "offload"} and offload.display == "load offload" and offload.fingerprint() != base.fingerprint()
    assert parse_inline("precision=bf16", base).display == "load defaults bf16"
    for text, fragment in (("load=fast", "load path 'fast' is not one of: defaults, dtype, offload"),
                           ("lora_r=8", "lora_r does not apply"), ("batch=4", "--batch, --prompt and --new-tokens do not apply"),
                           ("backend=compile", "compile does not apply")):
        with pytest.raises(PerfscaleError, match=fragment):
            parse_inline(text, base)


def test_cli_refuses_what_it_cannot_load(tmp_path, capsys):
    from perfscale.cli.app import main

    for argv, fragments in ((["--model", "llama-3.1-8b"], ("llama-3.1-8b has no checkpoint here", "--model DIR")),
                            (["--prompt", "8"], ("do not apply to --scenario load",))):
        assert main(["bench", "--scenario", "load", *argv, "--store", str(tmp_path / "s.sqlite")]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and all(f in err for f in fragments), err


def test_forked_child_failures_are_reported():
    from perfscale.measure.scenarios.load import _Child

    def boom():
        raise OSError("disk on fire")

    with pytest.raises(RuntimeError, match="OSError: disk on fire"):
        _Child(None, boom).load()
    with pytest.raises(RuntimeError, match="ValueError: no primer"):
        _Child(lambda: (_ for _ in ()).throw(ValueError("no primer")), dict).load()
    child = _Child(None, lambda: {"x": 1.0})
    child.load()
    assert child.figures() == {"x": 1.0}


@pytest.mark.slow  # a worker process and a 115 MB checkpoint: ~25-35 s on the shared box
def test_load_a_local_checkpoint_in_fresh_processes(tmp_path):
    """A ~115 MB safetensors checkpoint, measured by the bench harness: every timed load in its own primed
    child; safetensors on CPU at the checkpoint's dtype holds about its bytes (issue 15: <= 1.3x)."""
    from perfscale.measure.runner import measure
    from perfscale.measure.store import Store

    folder = tmp_path / "random-llama"
    weights = _random_checkpoint(folder)
    config = BenchConfig(scenario="load", model=str(folder))
    options = MeasureOptions(stop=StopRule(min_iters=3, min_time=0.0, max_time=1.5), warmup=1)
    with Store(tmp_path / "s.sqlite") as store:
        r = measure(config, options, store=store)
        stored = store.runs()
    assert r.status == "ok", (r.reason, r.stderr_tail)
    doc = r.to_dict()
    assert doc["unit"] == "loads/s" and doc["median"] > 0 and len(r.samples) >= 3 and [s.id for s in stored] == [r.store_id]
    assert doc["setup"]["checkpoint_bytes"] == (folder / "model.safetensors").stat().st_size >= weights
    m = r.iteration_metrics
    assert len(m["load_s"]) == len(r.samples) and all(0 < a <= b for a, b in zip(m["load_s"], m["ready_s"], strict=True))
    assert all(0.9 <= x <= 1.3 for x in m["rss_ratio"]), m["rss_ratio"]  # measured here: 1.00-1.01
    assert r.peak_memory_bytes == max(m["rss_peak_bytes"]) > weights  # the child's peak: interpreter + model
