"""RunConfig and the shared CLI knobs: validation with valid choices, all problems at once."""

from __future__ import annotations

import pytest

from perfscale.cli.knobs import build_run_config, workload_from_options
from perfscale.config import RunConfig
from perfscale.errors import InvalidConfigError
from perfscale.specs import InferWorkload, TrainWorkload


def test_defaults_are_valid():
    config = RunConfig(TrainWorkload(batch=2, seq=128))
    # the optimizer default is TrainingArguments().optim of transformers 5.x (config/optimizer.py)
    assert config.is_train and config.precision == "fp32" and config.optimizer == "adamw_torch_fused"


def test_every_problem_reported_at_once_with_choices():
    with pytest.raises(InvalidConfigError) as info:
        RunConfig(TrainWorkload(1, 8), precision="fp8", optimizer="lion", attn="flash", tp=0)
    message = str(info.value)
    assert "precision 'fp8' is not one of: fp32, bf16, fp16, bf16-mixed, fp16-mixed" in message
    assert "optimizer 'lion' is not one of" in message and "adamw-8bit" in message
    assert "attn 'flash'" in message and "tp must be an integer >= 1" in message


def test_infer_precisions_exclude_mixed():
    with pytest.raises(InvalidConfigError, match="precision 'bf16-mixed'"):
        RunConfig(InferWorkload(1, 16, 4), precision="bf16-mixed")


def test_impossible_combinations():
    with pytest.raises(InvalidConfigError, match="fp16-mixed"):
        RunConfig(TrainWorkload(1, 8), precision="fp16", optimizer="adamw")
    with pytest.raises(InvalidConfigError, match="needs LoRA"):
        RunConfig(TrainWorkload(1, 8), quantization="nf4")
    with pytest.raises(InvalidConfigError, match="lora_targets given without lora_r"):
        RunConfig(TrainWorkload(1, 8), lora_targets=("q_proj",))
    with pytest.raises(InvalidConfigError, match="alternatives"):
        RunConfig(TrainWorkload(1, 8), fsdp=8, zero=3)
    RunConfig(TrainWorkload(1, 8), precision="bf16", quantization="nf4", lora_r=8)  # QLoRA is fine


def test_bad_workloads():
    with pytest.raises(InvalidConfigError, match="batch must be an integer from 1 to 16,777,216, got 0"):
        TrainWorkload(batch=0, seq=8)
    with pytest.raises(InvalidConfigError, match="new_tokens"):
        InferWorkload(batch=1, prompt=8, new_tokens=-1)
    with pytest.raises(InvalidConfigError, match="seq must be an integer from 1 to 16,777,216, got 16777217"):
        TrainWorkload(batch=1, seq=2**24 + 1)  # bounded, so that no search loop runs away
    InferWorkload(batch=1, prompt=8, new_tokens=0)  # prefill only is a workload


def test_dict_round_trip():
    config = RunConfig(TrainWorkload(4, 256, 2), precision="bf16-mixed", lora_r=8, lora_targets=("q_proj", "v_proj"))
    assert RunConfig.from_dict(config.to_dict()) == config
    with pytest.raises(InvalidConfigError, match="Unknown configuration keys: colour"):
        RunConfig.from_dict(config.to_dict() | {"colour": "red"})


def test_cli_knobs_build_configs():
    workload = workload_from_options(train=False, infer=True, batch=8, seq=None, grad_accum=None, prompt=64, new_tokens=16)
    assert workload == InferWorkload(8, 64, 16)
    config = build_run_config(workload, precision="bf16", cache="static", optimizer=None)
    assert config.cache == "static" and config.optimizer == "adamw_torch_fused"
    with pytest.raises(InvalidConfigError, match="--prompt and --new-tokens are inference flags"):
        workload_from_options(train=True, infer=False, batch=1, seq=8, grad_accum=None, prompt=4, new_tokens=None)
    with pytest.raises(InvalidConfigError, match="not both"):
        workload_from_options(train=True, infer=True, batch=1, seq=8, grad_accum=None, prompt=None, new_tokens=None)
    train = workload_from_options(train=False, infer=False, batch=None, seq=None, grad_accum=None, prompt=None, new_tokens=None)
    assert isinstance(train, TrainWorkload)
    assert build_run_config(train, lora_r=4, lora_targets="q_proj, v_proj").lora_targets == ("q_proj", "v_proj")
