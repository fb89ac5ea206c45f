"""DeepSpeed ZeRO's communication buffers and fp32 master partition: planned, measured and emitted alike (issue 18).

config/deepspeed.py is the one place: the plan counts the reduction buckets the bench's DeepSpeedPlugin and the
emitted ds_config.json configure (`auto` = h^2 elements, as the Trainer and accelerate fill it; DeepSpeed's own
5e8 default put 2.1 GB of buffers on a 7M-parameter model here, benchmarks/LOG.md)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from perfscale.config import RunConfig
from perfscale.config.deepspeed import bucket_bytes, zero_communication
from perfscale.estimate import estimate
from perfscale.export.deepspeed import deepspeed_config as emitted_config
from perfscale.measure.scenarios.train import deepspeed_config as bench_config
from perfscale.specs import TrainWorkload, load_model_spec, parse_topology

H = 4096  # llama-3.1-8b hidden size
TOPOLOGY = parse_topology("8xH100-80GB")


def _other(**knobs) -> int:
    run = RunConfig(TrainWorkload(1, 2048, 1), precision="bf16-mixed", **knobs)
    return estimate(load_model_spec("llama-3.1-8b"), run, TOPOLOGY).memory.breakdown["other"]


@pytest.mark.parametrize("knobs, expected", [
    ({"zero": 0}, 0),
    ({"zero": 1}, 2 * H * H * 2),  # overlap_comm: two bf16 buckets of h^2 elements
    ({"zero": 2}, 2 * H * H * 2),
    ({"zero": 3}, H * H * 2),  # stage 3: one flat buffer per dtype
    ({"fsdp": 8}, 0),  # FSDP is not DeepSpeed
])
def test_the_plan_counts_deepspeeds_reduction_buckets(knobs, expected):
    assert _other(**knobs) == expected == bucket_bytes(knobs.get("zero", 0) if "fsdp" not in knobs else 0, H, 2)


def test_bench_and_emitted_config_set_the_buckets_the_plan_counts():
    run = RunConfig(TrainWorkload(2, 32, 1), zero=2)
    # the bench's DeepSpeedPlugin config reads only the run (a BenchConfig with strategy deepspeed needs deepspeed installed)
    bench = bench_config(SimpleNamespace(run=run), 2)["zero_optimization"]
    emitted = emitted_config(run, parse_topology("2xlocal"))["zero_optimization"]
    for zero in (bench, emitted):
        assert {k: zero[k] for k in zero_communication(2)} == zero_communication(2)
        assert zero["reduce_bucket_size"] == "auto" and zero["overlap_comm"] is True
    stage3 = emitted_config(RunConfig(TrainWorkload(2, 32, 1), zero=3), parse_topology("2xlocal"))["zero_optimization"]
    assert stage3["stage3_prefetch_bucket_size"] == "auto" == stage3["stage3_param_persistence_threshold"]


def test_fp32_zero_keeps_a_master_partition():
    """DeepSpeed clones an fp32 master partition even when the model is fp32: 4 bytes a parameter over the shard."""
    spec = load_model_spec("llama-3.1-8b")
    plain = estimate(spec, RunConfig(TrainWorkload(1, 512, 1), zero=1), TOPOLOGY).memory.breakdown["optimizer_state"]
    params = spec.params.total  # every parameter trains (no LoRA)
    # adamw: exp_avg + exp_avg_sq (8 B) + the master copy (4 B), sharded over 8 ranks
    assert plain == pytest.approx(params * 12 / 8, rel=1e-3)
