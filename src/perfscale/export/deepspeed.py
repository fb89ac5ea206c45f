"""DeepSpeed config JSON for a RunConfig's ZeRO settings.

Keys follow the DeepSpeed configuration reference (deepspeed.ai/docs/config-json). The communication buckets are
the ones the plan counts and the bench measures (config/deepspeed.py): `auto`, which the Trainer and accelerate fill
from the model's hidden size (h^2 elements), instead of DeepSpeed's own 5e8 (2 GB of fp32 buffers on any model).
"""

from __future__ import annotations

import json
from typing import Any

from perfscale.config import RunConfig
from perfscale.config.deepspeed import zero_communication
from perfscale.specs.hardware import Topology


def deepspeed_config(config: RunConfig, topology: Topology) -> dict[str, Any]:
    stage = config.zero
    zero: dict[str, Any] = {"stage": stage} | zero_communication(stage)
    if config.offload in ("optimizer", "optimizer+params") and stage >= 1:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if config.offload == "optimizer+params" and stage == 3:
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    if stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    micro = config.workload.batch
    accumulation = config.workload.grad_accum
    return {
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": accumulation,
        "train_batch_size": micro * accumulation * topology.world_size,
        "gradient_clipping": 1.0,
        "bf16": {"enabled": config.prec.compute_dtype == "bf16"},
        "fp16": {"enabled": config.prec.compute_dtype == "fp16", "loss_scale": 0, "initial_scale_power": 16},
        "zero_optimization": zero,
    }


def deepspeed_json(config: RunConfig, topology: Topology) -> str:
    return json.dumps(deepspeed_config(config, topology), indent=2) + "\n"
