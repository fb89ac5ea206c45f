"""accelerate config YAML, FSDP settings and the torchrun command line for a RunConfig.

The accelerate document carries the whole layout or refuses: FSDP (ZeRO-3's equivalent) with its shard
degree, offload and checkpointing; tensor parallel and FSDP's hybrid (replicate x shard) through
accelerate's `parallelism_config` (FSDP2 only: accelerate builds a device mesh dp_replicate x dp_shard x
tp, and transformers applies the model's `tp_plan`); ZeRO through the DeepSpeed file. Pipeline
parallel has no runtime under accelerate or the Trainer: refused, naming runtimes that run it.
`layout_of_accelerate` reads a written document back, so tests compare it with the RunConfig.
"""

from __future__ import annotations

import shlex
from typing import Any

from perfscale.config import RunConfig
from perfscale.errors import InvalidConfigError
from perfscale.specs.hardware import Topology


def fsdp_settings(config: RunConfig) -> dict[str, Any]:
    """accelerate's fsdp_config block (FSDP2, full shard, transformer-layer auto wrap)."""
    return {
        "fsdp_version": 2,
        "fsdp_reshard_after_forward": config.fsdp_reshard,
        "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "fsdp_cpu_ram_efficient_loading": True,
        "fsdp_offload_params": config.offload != "none",
        "fsdp_state_dict_type": "SHARDED_STATE_DICT",
        "fsdp_activation_checkpointing": config.checkpointing,
    }


def _distributed_type(config: RunConfig, topology: Topology) -> str:
    if config.zero:
        return "DEEPSPEED"
    if config.fsdp or config.tp > 1:  # tensor parallel goes through FSDP2's parallelism_config
        return "FSDP"
    if topology.world_size == 1:
        return "NO"
    return "MULTI_CPU" if topology.hardware.kind == "cpu" else "MULTI_GPU"


def _check_runnable(config: RunConfig, topology: Topology) -> None:
    """Refuse a layout accelerate cannot express, rather than write a file that silently runs another."""
    if config.pp > 1:
        raise InvalidConfigError(
            f"pipeline parallel (pp {config.pp}) has no runtime under accelerate or the Trainer, so an accelerate config "
            "cannot carry it. Run it with Megatron-LM, torchtitan or DeepSpeed's pipeline engine, or choose a layout "
            "with pp 1 (`perfscale plan ... --top 10` lists them)."
        )
    if config.zero and config.tp > 1:
        raise InvalidConfigError(
            f"ZeRO stage {config.zero} with tensor parallel {config.tp}: accelerate's DeepSpeed integration does not "
            "combine them; use FSDP (fsdp) with tp through parallelism_config instead, or tp 1."
        )
    if config.cp > 1 and (config.zero or not config.fsdp or config.fsdp % config.cp
                          or (config.fsdp == config.cp and topology.world_size > config.tp * config.fsdp)):
        raise InvalidConfigError(
            f"context parallel (cp {config.cp}) runs under accelerate only on FSDP2, which shards over the data-parallel "
            "x cp ranks (parallelism_config cp_size; pure replication beside cp is refused by accelerate): give fsdp a "
            f"multiple of cp ({config.cp}) above it when replicas remain, run it with Megatron-LM or torchtitan, or use cp 1."
        )
    world = topology.world_size
    shard = config.fsdp or 1
    if world % (config.tp * shard):
        raise InvalidConfigError(
            f"tp {config.tp} x fsdp {shard} does not divide the {world} processes of {topology.label}: "
            "choose degrees whose product divides the world size."
        )


def parallelism_config(config: RunConfig, topology: Topology) -> dict[str, int] | None:
    """accelerate's parallelism_config block when the layout is more than plain FSDP over every rank."""
    world = topology.world_size
    shard = config.fsdp or 1
    replicate = world // (config.tp * shard)
    if config.tp == 1 and config.cp == 1 and (not config.fsdp or replicate == 1):
        return None
    # accelerate's FSDP shards over dp_shard x cp: the RunConfig's fsdp degree counts both
    return {"parallelism_config_dp_replicate_size": replicate, "parallelism_config_dp_shard_size": shard // config.cp,
            "parallelism_config_tp_size": config.tp, "parallelism_config_cp_size": config.cp}


def accelerate_config(config: RunConfig, topology: Topology, deepspeed_path: str = "ds_config.json") -> dict[str, Any]:
    """The document `accelerate config` writes (default_config.yaml)."""
    _check_runnable(config, topology)
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
    if document["distributed_type"] == "FSDP":
        document["fsdp_config"] = fsdp_settings(config)
    parallel = parallelism_config(config, topology)
    if parallel:
        document["parallelism_config"] = parallel
    return document


def layout_of_accelerate(loaded) -> dict[str, Any]:
    """The layout an accelerate config (as accelerate's load_config_from_file reads it) will run:
    processes, machines, tp, the FSDP shard degree, ZeRO's file, offload, checkpointing, reshard_after_forward."""
    dtype = str(getattr(loaded.distributed_type, "value", loaded.distributed_type))
    fsdp = loaded.fsdp_config or {}
    parallel = getattr(loaded, "parallelism_config", None) or {}
    tp, cp = int(parallel.get("parallelism_config_tp_size", 1)), int(parallel.get("parallelism_config_cp_size", 1))
    shard = int(parallel.get("parallelism_config_dp_shard_size", loaded.num_processes if dtype == "FSDP" else 1)) * cp
    if dtype == "FSDP" and not parallel:
        shard = loaded.num_processes
    return {"num_processes": loaded.num_processes, "num_machines": loaded.num_machines, "tp": tp, "cp": cp,
            "fsdp": shard if dtype == "FSDP" and shard > 1 else None,
            "deepspeed": (loaded.deepspeed_config or {}).get("deepspeed_config_file") if dtype == "DEEPSPEED" else None,
            "offload_params": bool(fsdp.get("fsdp_offload_params")) if fsdp else None,
            "checkpointing": bool(fsdp.get("fsdp_activation_checkpointing")) if fsdp else None,
            "reshard_after_forward": bool(fsdp.get("fsdp_reshard_after_forward", True)) if fsdp else None,
            "mixed_precision": str(loaded.mixed_precision)}


def torchrun_command(config: RunConfig, topology: Topology, script: str = "train.py", threads_per_rank: int | None = None) -> str:
    """torchrun line: one process per device; multi-node uses a c10d rendezvous at $MASTER_ADDR:$MASTER_PORT
    (port 29500 unless MASTER_PORT is set: pick a free one where 29500 is taken), the same on every node.

    On CPU every rank's OpenMP threads are set: `threads_per_rank` when it was measured (bench/tune; by default
    the config's torch_num_threads, which tune sets to what its winner ran with), else $THREADS_PER_RANK, else 1
    (torchrun's own default, FIELD-NOTES)."""
    threads_per_rank = threads_per_rank or config.torch_num_threads
    parts = ["torchrun", f"--nnodes={topology.nodes}", f"--nproc_per_node={topology.devices_per_node}"]
    if topology.nodes > 1:
        parts += ["--rdzv_backend=c10d", "--rdzv_endpoint=$MASTER_ADDR:${MASTER_PORT:-29500}", "--rdzv_id=perfscale"]
    parts.append(script)
    line = " ".join(shlex.quote(p) if not p.startswith("--rdzv_endpoint") else p for p in parts)
    if topology.hardware.kind == "cpu":
        threads = str(threads_per_rank) if threads_per_rank else "${THREADS_PER_RANK:-1}"
        line = f"OMP_NUM_THREADS={threads} " + line
    return line + "\n"
