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
    ({"scenario": "train", "runtime": "tensorrt"}, ["runtime 'tensorrt'", "torch, onnxruntime, openvino"]),
    ({"scenario": "train", "runtime": "compile"}, ["runtime 'compile'", "torch.compile is run.compile"]),
    ({"scenario": "generate", "runtime": "onnxruntime"}, ["onnxruntime is for the encode scenario"]),
    ({"scenario": "encode", "runtime": "onnxruntime", "run": RunConfig(workload=InferWorkload(8, 64, 0), compile=True)},
     ["compile=True is torch.compile, which runtime onnxruntime does not run"]),
    ({"scenario": "train", "encoder_quantization": "int8-dynamic"}, ["encode scenario only"]),
    ({"scenario": "encode", "encoder_quantization": "int3"}, ["int3", "int8-per-channel"]),
    ({"scenario": "train", "run": RunConfig(workload=InferWorkload(1, 8, 4))}, ["training workload"]),
    ({"scenario": "encode", "encoder_quantization": "int8-per-channel"}, ["needs backend 'onnxruntime'"]),
])
def test_bad_values_are_reported_with_choices(kwargs, fragments):
    with pytest.raises(InvalidConfigError) as err:
        BenchConfig(**kwargs)
    for fragment in fragments:
        assert fragment in str(err.value)


def test_backend_is_derived_from_runtime_and_compile():
    """BenchConfig stores the runtime; torch.compile is RunConfig's; `backend` (the documents' key) is derived."""
    wl = InferWorkload(8, 64, 0)
    cases = {"eager": BenchConfig(scenario="encode"), "compile": BenchConfig(scenario="encode", run=RunConfig(wl, compile=True)),
             "onnxruntime": BenchConfig(scenario="encode", runtime="onnxruntime"),
             "openvino": BenchConfig(scenario="encode", runtime="openvino")}
    for backend, config in cases.items():
        doc = config.to_dict()
        assert config.backend == doc["backend"] == backend and "runtime" not in doc
        assert config.run.compile == (backend == "compile") and config.runtime == ("torch" if backend in ("eager", "compile") else backend)
        assert BenchConfig.from_dict(json.loads(json.dumps(doc))) == config
        assert list(doc)[:3] == ["scenario", "model", "backend"]  # where documents have always had it
    with pytest.raises(TypeError):
        BenchConfig(backend="compile")  # not a field: run.compile is
    assert BenchConfig(run=RunConfig(TrainWorkload(1, 8), compile=True)).backend == "compile"


@pytest.mark.parametrize("doc, runtime, compiled", [
    ({"scenario": "train", "backend": "compile"}, "torch", True),  # old documents without a run
    ({"scenario": "train", "backend": "compile", "run": {"workload": {"mode": "train", "batch": 1, "seq": 8}, "compile": True}}, "torch", True),
    ({"scenario": "train", "backend": "eager", "run": {"workload": {"mode": "train", "batch": 1, "seq": 8}, "compile": True}}, "torch", True),
    ({"scenario": "encode", "backend": "onnxruntime"}, "onnxruntime", False),
    ({"scenario": "train"}, "torch", False),
])
def test_old_documents_load(doc, runtime, compiled):
    config = BenchConfig.from_dict(doc)
    assert (config.runtime, config.run.compile, config.to_dict()["backend"]) == (runtime, compiled, config.backend)


@pytest.mark.parametrize("doc, fragments", [
    ({"scenario": "train", "backend": "tensorrt"}, ["backend 'tensorrt'", "eager, compile, onnxruntime, openvino"]),
    ({"scenario": "train", "backend": "compile", "run": {"workload": {"mode": "train", "batch": 1, "seq": 8}, "compile": False}},
     ["backend 'compile' contradicts compile=false"]),
    ({"scenario": "train", "runtime": "torch"}, ["Unknown bench configuration keys: runtime", "backend"]),
])
def test_bad_documents_name_the_value_and_the_choices(doc, fragments):
    with pytest.raises(InvalidConfigError) as err:
        BenchConfig.from_dict(doc)
    for fragment in fragments:
        assert fragment in str(err.value)


def test_inline_backend_sets_runtime_and_compile():
    base = BenchConfig(scenario="encode")
    compiled = parse_inline("backend=compile", base)
    assert (compiled.runtime, compiled.run.compile) == ("torch", True)
    assert (parse_inline("backend=eager", compiled).backend, parse_inline("compile=false", compiled).backend) == ("eager", "eager")
    assert parse_inline("backend=onnxruntime", compiled).run.compile is False
    with pytest.raises(InvalidConfigError, match="contradicts"):
        parse_inline("backend=compile,compile=false", base)
    with pytest.raises(InvalidConfigError, match="backend 'tvm' is not one of: eager, compile"):
        parse_inline("backend=tvm", base)


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
