"""The knob flags shared by trace, plan and bench, and their translation into a RunConfig.

Options default to None ("not given") so a verb can tell an open knob (plan searches it) from
one the user fixed; `build_run_config` fills the library defaults for what was not given.
"""

from __future__ import annotations

from typing import Any

import typer

from perfscale.config.optimizer import DEFAULT_OPTIMIZER, optimizer_choices_text
from perfscale.config.precision import TRAIN_PRECISIONS
from perfscale.config.run_config import RunConfig, parse_targets
from perfscale.errors import InvalidConfigError
from perfscale.specs.workload import InferWorkload, TrainWorkload

JSON = typer.Option(False, "--json", help="Print exactly one JSON document on stdout.")
MODEL = typer.Option(None, "--model", "-m", help="Catalogue name, local folder or config.json, or hub id. Default: perfscale-tiny-llama.")
TRAIN = typer.Option(False, "--train", help="A training step (the default mode).")
INFER = typer.Option(False, "--infer", help="An inference run: prefill then decode.")
BATCH = typer.Option(None, "--batch", help="Micro-batch size (sequences per device per step) or prompts per run.")
SEQ = typer.Option(None, "--seq", help="Training sequence length in tokens.")
GRAD_ACCUM = typer.Option(None, "--grad-accum", help="Gradient accumulation micro-steps per optimizer step.")
PROMPT = typer.Option(None, "--prompt", help="Inference prompt length in tokens.")
NEW_TOKENS = typer.Option(None, "--new-tokens", help="Tokens to generate after the prompt.")
PRECISION = typer.Option(None, "--precision", help=f"{' | '.join(TRAIN_PRECISIONS)} (mixed: fp32 master weights + autocast).")
OPTIMIZER = typer.Option(None, "--optimizer", help=f"Trainer optim name, built as the Trainer builds it on the device: "
                         f"{optimizer_choices_text()}. Default {DEFAULT_OPTIMIZER}.")
CHECKPOINTING = typer.Option(None, "--checkpointing/--no-checkpointing", help="Gradient (activation) checkpointing.")
ATTN = typer.Option(None, "--attn", help="Attention implementation: sdpa | eager.")
LORA_R = typer.Option(None, "--lora-r", help="LoRA rank (freezes the base model).")
LORA_TARGETS = typer.Option(None, "--lora-targets", help="Comma-separated module names for LoRA, e.g. q_proj,v_proj.")
ZERO = typer.Option(None, "--zero", help="DeepSpeed ZeRO stage 0-3.")
FSDP = typer.Option(None, "--fsdp", help="FSDP full-shard degree (ranks the model is sharded over).")
TP = typer.Option(None, "--tp", help="Tensor-parallel degree.")
PP = typer.Option(None, "--pp", help="Pipeline-parallel degree.")
PP_VIRTUAL = typer.Option(None, "--pp-virtual", help="Interleaved 1F1B: model chunks per pipeline device (1 = plain 1F1B; "
                          "V cuts the bubble to (p-1)/(V m + p-1) at V x the pipeline traffic).")
OFFLOAD = typer.Option(None, "--offload", help="none | optimizer | optimizer+params (CPU offload).")
COMPILE = typer.Option(None, "--compile/--no-compile", help="torch.compile the model.")
QUANTIZATION = typer.Option(None, "--quantization", help="Weight quantization: none | int8 | int4 | nf4.")
CACHE = typer.Option(None, "--cache", help="KV cache implementation for generation: dynamic | static.")

DEFAULT_MODEL = "perfscale-tiny-llama"
# Library defaults used for knobs the user did not give (RunConfig's own defaults).
DEFAULT_TRAIN = {"batch": 1, "seq": 512, "grad_accum": 1}
DEFAULT_INFER = {"batch": 1, "prompt": 512, "new_tokens": 128}


def workload_from_options(
    *, train: bool, infer: bool, batch: int | None, seq: int | None, grad_accum: int | None,
    prompt: int | None, new_tokens: int | None,
) -> TrainWorkload | InferWorkload:
    if train and infer:
        raise InvalidConfigError("Give --train or --infer, not both.")
    if infer:
        if seq is not None or grad_accum is not None:
            raise InvalidConfigError("--seq and --grad-accum are training flags; for --infer use --prompt and --new-tokens.")
        return InferWorkload(
            batch=given(batch, DEFAULT_INFER["batch"]),
            prompt=given(prompt, DEFAULT_INFER["prompt"]),
            new_tokens=given(new_tokens, DEFAULT_INFER["new_tokens"]),
        )
    if prompt is not None or new_tokens is not None:
        raise InvalidConfigError("--prompt and --new-tokens are inference flags: add --infer, or use --seq for training.")
    return TrainWorkload(
        batch=given(batch, DEFAULT_TRAIN["batch"]), seq=given(seq, DEFAULT_TRAIN["seq"]),
        grad_accum=given(grad_accum, DEFAULT_TRAIN["grad_accum"]),
    )


def given(value: int | None, default: int) -> int:
    """The typed value, or the default when the flag was not given (0 is a value, and is refused)."""
    return default if value is None else value


def build_run_config(workload: TrainWorkload | InferWorkload, **knobs: Any) -> RunConfig:
    """RunConfig from knob flags; None means 'not given' and takes RunConfig's default."""
    given = {k: v for k, v in knobs.items() if v is not None}
    if "lora_targets" in given:
        given["lora_targets"] = parse_targets(given["lora_targets"])
    return RunConfig(workload=workload, **given)
