"""RunConfig.tf32 (TrainingArguments tf32): fp32 matmuls on TF32 tensor cores where the hardware has them."""

from __future__ import annotations

import pytest

from perfscale.config import RunConfig
from perfscale.errors import InvalidConfigError
from perfscale.estimate import estimate
from perfscale.export.trainer import trainer_kwargs
from perfscale.specs import TrainWorkload, get_hardware, load_model_spec, parse_topology


@pytest.fixture(scope="module")
def bert():
    return load_model_spec("bert-large-uncased", task="sequence-classification", num_labels=2)


def _run(model, hardware: str, **knobs):
    return estimate(model, RunConfig(TrainWorkload(8, 512), attn="eager", **knobs), parse_topology(hardware))


def test_tf32_runs_fp32_matmuls_at_the_tf32_peak_on_an_a100(bert):
    hw = get_hardware("A100-80GB")
    assert hw.peak("tf32") > 4 * hw.peak("fp32")
    fp32, tf32 = _run(bert, "A100-80GB", precision="fp32"), _run(bert, "A100-80GB", precision="fp32", tf32=True)
    # faster, but by less than the peaks' ratio (8x): the memory-bound work and the optimizer step do not speed up
    assert fp32.time.step_seconds > tf32.time.step_seconds > fp32.time.step_seconds / 8
    # MFU divides by the peak the matmuls ran at
    flops_fp32 = fp32.time.mfu * hw.peak("fp32") / fp32.time.tokens_per_second
    flops_tf32 = tf32.time.mfu * hw.peak("tf32") / tf32.time.tokens_per_second
    assert flops_tf32 == pytest.approx(flops_fp32, rel=1e-9)
    assert tf32.memory.peak_bytes == fp32.memory.peak_bytes  # a matmul mode, not a storage dtype


def test_tf32_changes_nothing_for_16_bit_matmuls_or_without_tf32_hardware(bert):
    a = _run(bert, "A100-80GB", precision="bf16-mixed")
    b = _run(bert, "A100-80GB", precision="bf16-mixed", tf32=True)
    assert b.time.step_seconds == a.time.step_seconds
    assert get_hardware("V100-16GB").peak("tf32") is None
    v, vt = _run(bert, "V100-16GB", precision="fp32"), _run(bert, "V100-16GB", precision="fp32", tf32=True)
    assert vt.time.step_seconds == v.time.step_seconds


def test_tf32_is_emitted_as_the_trainer_names_it_and_round_trips():
    config = RunConfig(TrainWorkload(4, 128), tf32=True)
    assert trainer_kwargs(config, parse_topology("A100-80GB"))["tf32"] is True
    assert "tf32" not in trainer_kwargs(RunConfig(TrainWorkload(4, 128)), parse_topology("A100-80GB"))
    assert RunConfig.from_dict(config.to_dict()) == config


def test_tf32_must_be_a_bool():
    with pytest.raises(InvalidConfigError, match="tf32 must be true or false"):
        RunConfig(TrainWorkload(4, 128), tf32="yes")
