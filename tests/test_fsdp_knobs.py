"""FSDP2's knobs are RunConfig's (issue 13): a "-mixed" precision is MixedPrecisionPolicy(param_dtype=16-bit,
reduce_dtype=fp32) plus autocast, offload optimizer+params is CPUOffloadPolicy, fsdp_reshard is
reshard_after_forward. The bench scenario's fully_shard calls are checked without torchrun (fully_shard
replaced by a recorder); old documents with BenchConfig's former top-level keys still load.
"""

from __future__ import annotations

import json

import pytest
import torch

from perfscale.cli.inline_config import parse_inline
from perfscale.config import RunConfig
from perfscale.errors import InvalidConfigError
from perfscale.measure.bench_config import BenchConfig, load_config_file
from perfscale.measure.scenarios import train
from perfscale.specs import TrainWorkload, parse_topology

WL = TrainWorkload(2, 16, 1)


def _fsdp2(**knobs) -> BenchConfig:
    return BenchConfig(nproc=2, strategy="fsdp2", run=RunConfig(WL, **knobs))


# ----- old documents -----
def test_old_documents_top_level_fsdp_keys_load_into_run_config(tmp_path):
    old = _fsdp2().to_dict() | {"fsdp_reshard": False, "fsdp_mp": "bf16", "fsdp_offload": True}
    config = BenchConfig.from_dict(old)
    assert (config.run.fsdp_reshard, config.run.precision, config.run.offload) == (False, "bf16-mixed", "optimizer+params")
    assert config == _fsdp2(fsdp_reshard=False, precision="bf16-mixed", offload="optimizer+params")
    # the defaults as old documents wrote them change nothing; a bench result file loads the same way
    assert BenchConfig.from_dict(_fsdp2().to_dict() | {"fsdp_reshard": True, "fsdp_mp": "none", "fsdp_offload": False}) == _fsdp2()
    path = tmp_path / "result.json"
    path.write_text(json.dumps({"config": _fsdp2().to_dict() | {"fsdp_mp": "fp16"}}))
    assert load_config_file(path).run.precision == "fp16-mixed"
    # new documents keep the knobs in `run`, nowhere else
    assert not {"fsdp_reshard", "fsdp_mp", "fsdp_offload"} & set(config.to_dict())
    assert config.to_dict()["run"]["fsdp_reshard"] is False


@pytest.mark.parametrize(("extra", "fragment"), [
    ({"fsdp_mp": "bf16", "run": {"precision": "fp16-mixed"}}, "fsdp_mp 'bf16' with precision 'fp16-mixed' cannot be mapped"),
    ({"fsdp_mp": "bf16", "run": {"precision": "bf16"}}, "write precision bf16-mixed and drop fsdp_mp"),
    ({"fsdp_mp": "fp8"}, "fsdp_mp 'fp8' is not one of: none, bf16, fp16"),
    ({"fsdp_offload": "yes"}, "fsdp_offload must be true or false"),
    ({"fsdp_reshard": "no"}, "fsdp_reshard must be true or false"),
])
def test_old_fsdp_keys_that_cannot_be_mapped_are_refused(extra, fragment):
    data = _fsdp2().to_dict()
    if "run" in extra:
        extra = extra | {"run": data["run"] | extra["run"]}
    with pytest.raises(InvalidConfigError, match=fragment):
        BenchConfig.from_dict(data | extra)


def test_compare_refuses_the_removed_inline_keys_naming_their_replacement():
    with pytest.raises(InvalidConfigError, match="fsdp_mp=fp16 was removed: use precision=fp16-mixed"):
        parse_inline("strategy=fsdp2,fsdp_mp=fp16", BenchConfig())
    with pytest.raises(InvalidConfigError, match=r"use offload=optimizer\+params"):
        parse_inline("strategy=fsdp2,fsdp_offload=true", BenchConfig())
    assert parse_inline("strategy=fsdp2,fsdp_reshard=false", BenchConfig()).run.fsdp_reshard is False


# ----- what the fsdp2 scenario passes to fully_shard -----
def test_mixed_precision_is_accelerates_fsdp2_policy():
    kwargs, _ = train.fsdp_kwargs(RunConfig(WL, precision="bf16-mixed"), "cpu")
    policy = kwargs["mp_policy"]
    assert (policy.param_dtype, policy.reduce_dtype) == (torch.bfloat16, torch.float32)
    assert train.fsdp_kwargs(RunConfig(WL, precision="fp16-mixed"), "cpu")[0]["mp_policy"].param_dtype == torch.float16
    for plain in ("fp32", "bf16"):  # weights already in their dtype: FSDP2's default policy
        assert "mp_policy" not in train.fsdp_kwargs(RunConfig(WL, precision=plain, optimizer="sgd"), "cpu")[0]
    assert "offload_policy" not in kwargs and kwargs["reshard_after_forward"] is True


def test_offload_is_cpu_offload_policy():
    from torch.distributed.fsdp import CPUOffloadPolicy

    kwargs, notes = train.fsdp_kwargs(RunConfig(WL, offload="optimizer+params"), "cpu")
    assert isinstance(kwargs["offload_policy"], CPUOffloadPolicy) and not kwargs["offload_policy"].pin_memory
    assert "measures the policy's overhead only" in notes[0]


def test_every_fully_shard_call_gets_the_run_configs_knobs(monkeypatch):
    import torch.distributed.fsdp as fsdp
    from transformers import LlamaConfig, LlamaForCausalLM

    calls = []
    monkeypatch.setattr(fsdp, "fully_shard", lambda module, **kwargs: calls.append((type(module).__name__, kwargs)))
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=2))
    config = _fsdp2(fsdp_reshard=False, precision="bf16-mixed")
    train.wrap_for_strategy(model, config, "cpu")
    assert [name for name, _ in calls] == ["LlamaDecoderLayer", "LlamaDecoderLayer", "LlamaForCausalLM"]
    for name, kwargs in calls:
        # the root keeps fully_shard's default (not resharded after forward): an explicit True would reshard it
        assert kwargs.get("reshard_after_forward") is (None if name == "LlamaForCausalLM" else False)
        assert (kwargs["mp_policy"].param_dtype, kwargs["mp_policy"].reduce_dtype) == (torch.bfloat16, torch.float32)


def test_fsdp_knobs_need_the_fsdp2_strategy_and_a_policy_fsdp2_has():
    with pytest.raises(InvalidConfigError, match="fsdp_reshard=False apply to strategy fsdp2 only, not ddp"):
        BenchConfig(nproc=2, run=RunConfig(WL, fsdp_reshard=False))
    with pytest.raises(InvalidConfigError, match="offload optimizer .the optimizer state alone. has no FSDP2 policy"):
        _fsdp2(offload="optimizer")
    # the layouts stay apart in labels and fingerprints
    a, b = _fsdp2(), _fsdp2(fsdp_reshard=False)
    assert a.fingerprint() != b.fingerprint() and "fsdp_reshard=False" in b.display and "fsdp_reshard" not in a.display


# ----- the emitted accelerate config carries the knob -----
def test_accelerate_config_writes_the_configs_reshard_after_forward(tmp_path):
    from accelerate.commands.config.config_args import load_config_from_file

    from perfscale.export import emit_files
    from perfscale.export.launch import fsdp_settings, layout_of_accelerate

    assert fsdp_settings(RunConfig(WL, fsdp=8))["fsdp_reshard_after_forward"] is True
    config = RunConfig(WL, fsdp=8, fsdp_reshard=False)
    assert fsdp_settings(config)["fsdp_reshard_after_forward"] is False
    emit_files(config, parse_topology("8xH100-80GB"), tmp_path, ("accelerate",), "m")
    assert layout_of_accelerate(load_config_from_file(str(tmp_path / "accelerate_config.yaml")))["reshard_after_forward"] is False
