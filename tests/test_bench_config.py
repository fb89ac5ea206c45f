"""BenchConfig: validation before anything runs, the inline syntax of compare, JSON files."""

from __future__ import annotations

import json

import pytest

from perfscale.errors import InvalidConfigError, UnsupportedModelError
from perfscale.cli.inline_config import parse_inline, resolve_configuration
from perfscale.measure.bench_config import BenchConfig, MeasureOptions, load_config_file
from perfscale.measure.scenarios import SCENARIO_MODULES
from perfscale.measure.bench_config import SCENARIOS, TEST_SCENARIOS
from perfscale.config.run_config import RunConfig
from perfscale.specs.workload import InferWorkload, TrainWorkload


def test_scenario_map_is_in_sync():
    assert set(SCENARIO_MODULES) == set(SCENARIOS) | set(TEST_SCENARIOS)


def test_defaults_per_scenario():
    train = BenchConfig(scenario="train")
    assert train.model == "perfscale-tiny-llama" and train.run.is_train
    enc = BenchConfig(scenario="encode")
    assert enc.model == "minilm" and enc.run.workload.new_tokens == 0
    gen = BenchConfig(scenario="generate")
    assert gen.run.workload.new_tokens >= 1


@pytest.mark.parametrize("kwargs, fragments", [
    ({"scenario": "infer"}, ["scenario 'infer'", "train, encode, generate"]),
    ({"scenario": "train", "backend": "tensorrt"}, ["backend 'tensorrt'", "eager, compile, onnxruntime"]),
    ({"scenario": "generate", "backend": "onnxruntime"}, ["onnxruntime is for the encode scenario"]),
    ({"scenario": "train", "encoder_quantization": "int8-dynamic"}, ["encode scenario only"]),
    ({"scenario": "encode", "encoder_quantization": "int3"}, ["int3", "int8-per-channel"]),
    ({"scenario": "train", "run": RunConfig(workload=InferWorkload(1, 8, 4))}, ["training workload"]),
    ({"scenario": "encode", "backend": "eager", "encoder_quantization": "int8-per-channel"}, ["needs backend 'onnxruntime'"]),
])
def test_bad_values_are_reported_with_choices(kwargs, fragments):
    with pytest.raises(InvalidConfigError) as err:
        BenchConfig(**kwargs)
    for fragment in fragments:
        assert fragment in str(err.value)


def test_threads_are_a_run_knob_kept_at_the_top_of_documents():
    """threads/dataloader_workers/pin_memory are RunConfig knobs; bench documents keep them at the top level."""
    with pytest.raises(InvalidConfigError, match="threads"):
        BenchConfig.from_dict({"scenario": "train", "threads": 0})
    config = BenchConfig.from_dict({"scenario": "train", "threads": 2, "dataloader_workers": 1})
    assert (config.threads, config.run.torch_num_threads, config.dataloader_workers) == (2, 2, 1)
    assert config.to_dict()["threads"] == 2 and "torch_num_threads" not in config.to_dict()["run"]
    assert BenchConfig.from_dict(config.to_dict()) == config


def test_multi_device_knobs_are_refused_clearly():
    with pytest.raises(UnsupportedModelError, match=r"--nproc N --strategy ddp\|fsdp2\|deepspeed"):
        BenchConfig(scenario="train", run=RunConfig(workload=TrainWorkload(1, 8), tp=2))
    with pytest.raises(InvalidConfigError, match="add --strategy deepspeed"):  # a ZeRO stage is DeepSpeed's
        BenchConfig(scenario="train", run=RunConfig(workload=TrainWorkload(1, 8), zero=2))


def test_inline_overrides_apply_on_top_of_base():
    base = BenchConfig(scenario="encode")
    c = parse_inline("backend=onnxruntime,quant=int8-per-channel,batch=16,label=ort-int8", base)
    assert (c.backend, c.encoder_quantization, c.run.workload.batch, c.display) == ("onnxruntime", "int8-per-channel", 16, "ort-int8")
    assert c.run.workload.prompt == base.run.workload.prompt
    t = parse_inline("precision=bf16-mixed,checkpointing=true,lora_r=8,lora_targets=q_proj+v_proj,compile=true", BenchConfig())
    assert t.run.precision == "bf16-mixed" and t.run.checkpointing and t.run.lora_targets == ("q_proj", "v_proj")
    assert t.backend == "compile" and t.run.compile
    g = parse_inline("scenario=generate,new_tokens=8", BenchConfig())
    assert g.scenario == "generate" and g.run.workload.new_tokens == 8 and not g.run.is_train


@pytest.mark.parametrize("text, fragment", [
    ("backend", "not key=value"), ("bakend=eager", "did you mean"), ("batch=two", "expected an integer"),
    ("checkpointing=maybe", "true or false"), ("precision=fp8", "precision 'fp8'"),
])
def test_inline_errors(text, fragment):
    with pytest.raises(InvalidConfigError, match=fragment):
        parse_inline(text, BenchConfig())


def test_json_round_trip_and_files(tmp_path):
    c = parse_inline("precision=bf16-mixed,batch=2,seq=32,label=x", BenchConfig())
    assert BenchConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    path = tmp_path / "c.json"
    path.write_text(json.dumps(c.to_dict()))
    assert resolve_configuration(str(path), BenchConfig()) == c
    # a bench --json document and a RunConfig (from plan/tune) load too
    (tmp_path / "doc.json").write_text(json.dumps({"configurations": [{"config": c.to_dict()}]}))
    assert load_config_file(tmp_path / "doc.json") == c
    (tmp_path / "rc.json").write_text(json.dumps(c.run.to_dict()))
    assert load_config_file(tmp_path / "rc.json").run == c.run
    with pytest.raises(InvalidConfigError, match="Cannot read"):
        load_config_file(tmp_path / "missing.json")
    assert c.fingerprint() == parse_inline("label=other", c).fingerprint()  # the label is not identity


def test_measure_options_validate():
    with pytest.raises(InvalidConfigError, match="warmup"):
        MeasureOptions(warmup=0)
    o = MeasureOptions()
    assert MeasureOptions.from_dict(json.loads(json.dumps(o.to_dict()))) == o
