"""accelerate config YAML, FSDP settings and the torchrun command line for a RunConfig."""

from __future__ import annotations

import shlex
from typing import Any

from perfscale.config import RunConfig
from perfscale.specs.hardware import Topology



def fsdp_settings(config: RunConfig) -> dict[str, Any]:
    """accelerate's fsdp_config block (FSDP2, full shard, transformer-layer auto wrap)."""
    return {
        "fsdp_version": 2,
        "fsdp_reshard_after_forward": True,
        "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "fsdp_cpu_ram_efficient_loading": True,
        "fsdp_offload_params": config.offload != "none",
        "fsdp_state_dict_type": "SHARDED_STATE_DICT",
        "fsdp_activation_checkpointing": config.checkpointing,
    }


def _distributed_type(config: RunConfig, topology: Topology) -> str:
    if config.zero:
        return "DEEPSPEED"
    if config.fsdp:
        return "FSDP"
    if topology.world_size == 1:
        return "NO"
    return "MULTI_CPU" if topology.hardware.kind == "cpu" else "MULTI_GPU"


def accelerate_config(config: RunConfig, topology: Topology, deepspeed_path: str = "ds_config.json") -> dict[str, Any]:
    """The document `accelerate config` writes (default_config.yaml)."""
    document: dict[str, Any] = {
        "compute_environment": "LOCAL_MACHINE",
        "distributed_type": _distributed_type(config, topology),
        "mixed_precision": config.prec.autocast_dtype or "no",  # accelerate's names: bf16 | fp16 | no
        "num_machines": topology.nodes,
        "num_processes": topology.world_size,
        "machine_rank": 0,
        "main_training_function": "main",
        "use_cpu": topology.hardware.kind == "cpu",
        "rdzv_backend": "static",
        "same_network": True,
        "downcast_bf16": "no",
    }
    if config.zero:
        document["deepspeed_config"] = {"deepspeed_config_file": deepspeed_path, "zero3_init_flag": config.zero == 3}
    if config.fsdp:
        document["fsdp_config"] = fsdp_settings(config)
    return document


def torchrun_command(config: RunConfig, topology: Topology, script: str = "train.py", threads_per_rank: int | None = None) -> str:
    """torchrun line: one process per device; multi-node uses a c10d rendezvous at $MASTER_ADDR:$MASTER_PORT
    (port 29500 unless MASTER_PORT is set: pick a free one where 29500 is taken), the same on every node.

    On CPU every rank's OpenMP threads are set: `threads_per_rank` when it was measured (bench/tune),
    else $THREADS_PER_RANK, else 1 (torchrun's own default, FIELD-NOTES)."""
    parts = ["torchrun", f"--nnodes={topology.nodes}", f"--nproc_per_node={topology.devices_per_node}"]
    if topology.nodes > 1:
        parts += ["--rdzv_backend=c10d", "--rdzv_endpoint=$MASTER_ADDR:${MASTER_PORT:-29500}", "--rdzv_id=perfscale"]
    parts.append(script)
    line = " ".join(shlex.quote(p) if not p.startswith("--rdzv_endpoint") else p for p in parts)
    if topology.hardware.kind == "cpu":
        threads = str(threads_per_rank) if threads_per_rank else "${THREADS_PER_RANK:-1}"
        line = f"OMP_NUM_THREADS={threads} " + line
    return line + "\n"
