"""Emitted files are loaded by the real libraries: TrainingArguments, accelerate, DeepSpeed schema, torchrun."""

from __future__ import annotations

import json
import shlex

import pytest

from perfscale.config import RunConfig
from perfscale.errors import InvalidConfigError
from perfscale.export import FORMATS, emit_files
from perfscale.export.emit import parse_formats
from perfscale.specs import InferWorkload, TrainWorkload, parse_topology

# DeepSpeed's documented top-level and zero_optimization keys (deepspeed.ai/docs/config-json).
DS_TOP_KEYS = {"train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping", "bf16", "fp16", "zero_optimization"}
DS_ZERO_KEYS = {
    "stage", "overlap_comm", "contiguous_gradients", "reduce_bucket_size", "allgather_bucket_size", "offload_optimizer",
    "offload_param", "stage3_prefetch_bucket_size", "stage3_gather_16bit_weights_on_model_save", "reduce_scatter",
    "allgather_partitions", "round_robin_gradients", "sub_group_size", "stage3_max_live_parameters",
    "stage3_max_reuse_distance", "stage3_param_persistence_threshold",
}


def _emit(tmp_path, topology="H100-80GB", **knobs):
    config = RunConfig(TrainWorkload(batch=4, seq=1024, grad_accum=8), **knobs)
    topo = parse_topology(topology)
    files = emit_files(config, topo, tmp_path, FORMATS, "meta-llama/Llama-3.1-8B")
    return config, topo, {f.path.rsplit("/", 1)[-1]: f for f in files}


def test_trainer_arguments_load(tmp_path, monkeypatch):
    import transformers.training_args as training_args
    from transformers import TrainingArguments

    # The kwargs target an H100; TrainingArguments checks bf16 against *this* machine's GPU.
    monkeypatch.setattr(training_args, "is_torch_bf16_gpu_available", lambda: True)

    _, _, files = _emit(tmp_path, precision="bf16-mixed", optimizer="adamw-fused", checkpointing=True)
    kwargs = json.loads((tmp_path / "trainer_args.json").read_text())
    args = TrainingArguments(**kwargs)
    assert args.per_device_train_batch_size == 4 and args.gradient_accumulation_steps == 8
    assert args.bf16 and args.activation_checkpointing and args.optim.value == "adamw_torch_fused"
    snippet = (tmp_path / "train_snippet.py").read_text()
    compile(snippet, "train_snippet.py", "exec")  # valid Python
    assert "activation_checkpointing=True" in snippet


def test_lora_snippet_and_cpu_flag(tmp_path):
    from transformers import TrainingArguments

    _emit(tmp_path, topology="local", lora_r=16, lora_targets=("q_proj", "v_proj"))
    kwargs = json.loads((tmp_path / "trainer_args.json").read_text())
    assert kwargs["use_cpu"] is True
    TrainingArguments(**kwargs)
    snippet = (tmp_path / "train_snippet.py").read_text()
    assert "LoraConfig(r=16, target_modules=['q_proj', 'v_proj']" in snippet
    compile(snippet, "train_snippet.py", "exec")


def test_accelerate_config_loads(tmp_path):
    from accelerate.commands.config.config_args import load_config_from_file

    _emit(tmp_path, topology="2x8xH100-80GB", precision="bf16-mixed", zero=3, offload="optimizer")
    loaded = load_config_from_file(str(tmp_path / "accelerate_config.yaml"))
    assert str(loaded.distributed_type.value) == "DEEPSPEED"
    assert loaded.num_processes == 16 and loaded.num_machines == 2 and str(loaded.mixed_precision) == "bf16"
    assert loaded.deepspeed_config["deepspeed_config_file"] == "ds_config.json"


def test_accelerate_fsdp_config_loads(tmp_path):
    from accelerate.commands.config.config_args import load_config_from_file

    _emit(tmp_path, topology="8xH100-80GB", precision="bf16-mixed", fsdp=8, checkpointing=True)
    loaded = load_config_from_file(str(tmp_path / "accelerate_config.yaml"))
    assert loaded.distributed_type.value == "FSDP"
    assert loaded.fsdp_config["fsdp_version"] == 2 and loaded.fsdp_config["fsdp_activation_checkpointing"] is True
    assert json.loads((tmp_path / "fsdp_config.json").read_text()) == loaded.fsdp_config


def test_deepspeed_config_is_valid(tmp_path):
    _emit(tmp_path, topology="2x8xH100-80GB", precision="bf16-mixed", zero=3, offload="optimizer+params")
    document = json.loads((tmp_path / "ds_config.json").read_text())
    try:
        from deepspeed.runtime.config import DeepSpeedConfig  # validates when DeepSpeed is installed
    except ImportError:
        assert set(document) <= DS_TOP_KEYS and set(document["zero_optimization"]) <= DS_ZERO_KEYS
    else:
        # Outside a process group DeepSpeed sees one rank: validate every key with one rank's share of the batch
        # (DeepSpeedConfig lost its world_size argument; the identity at 16 ranks is asserted below).
        # `auto` is what the Trainer and accelerate fill from the model's hidden size (llama-3.1-8b: 4096) before
        # DeepSpeed reads the file; DeepSpeed itself takes numbers.
        h = 4096
        filled = {"reduce_bucket_size": h * h, "stage3_prefetch_bucket_size": int(0.9 * h * h),
                  "stage3_param_persistence_threshold": 10 * h}
        zero = {key: filled.get(key, value) if value == "auto" else value for key, value in document["zero_optimization"].items()}
        DeepSpeedConfig(document | {"train_batch_size": document["train_batch_size"] // 16, "zero_optimization": zero})
    # DeepSpeed requires train_batch_size == micro x accumulation x data-parallel world size.
    assert document["train_batch_size"] == 4 * 8 * 16
    assert document["zero_optimization"]["stage"] == 3
    assert document["zero_optimization"]["offload_param"]["device"] == "cpu"
    # the buckets the plan counts (config/deepspeed.py): sized by the model, not DeepSpeed's 5e8 default
    assert document["zero_optimization"]["reduce_bucket_size"] == "auto" and document["zero_optimization"]["overlap_comm"]
    assert document["bf16"]["enabled"] and not document["fp16"]["enabled"]
    trainer = json.loads((tmp_path / "trainer_args.json").read_text())
    assert trainer["deepspeed"] == "ds_config.json"


def test_torchrun_command_parses(tmp_path):
    from torch.distributed.run import get_args_parser

    _emit(tmp_path, topology="2x8xH100-80GB")
    line = (tmp_path / "torchrun.sh").read_text().strip()
    args = get_args_parser().parse_args(shlex.split(line)[1:])
    assert (args.nnodes, args.nproc_per_node, args.training_script) == ("2", "8", "train.py")
    assert args.rdzv_backend == "c10d"


def test_format_choices_and_infer_rejected(tmp_path):
    assert parse_formats("all") == FORMATS
    assert parse_formats("trainer, deepspeed") == ("trainer", "deepspeed")
    with pytest.raises(InvalidConfigError, match="Unknown emit format: 'yaml'. Choose from: trainer, accelerate"):
        parse_formats("yaml")
    with pytest.raises(InvalidConfigError, match="needs a training configuration"):
        emit_files(RunConfig(InferWorkload(1, 8, 1)), parse_topology("H100-80GB"), tmp_path, FORMATS, "m")
