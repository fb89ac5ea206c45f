"""The knob flags of trace, plan, bench and compare, generated from RunConfig's fields.

`with_knobs` gives a command one `--name` option per RunConfig field: its help is the field's
docstring plus its choices (config/run_config.py), a bool field is a `--name/--no-name` flag.
Options default to None ("not given") so a verb can tell an open knob (plan searches it) from
one the user fixed; `build_run_config` fills the library defaults for what was not given.
A verb offers the knobs its engine honours (each field names its engines), none that it would ignore.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable, Mapping
from typing import Any

import typer

from perfscale.config.run_config import (
    KNOB_ENGINES,
    KNOB_FIELDS,
    KNOB_FLAGS,
    RunConfig,
    choices_text,
    field_help,
    parse_targets,
)
from perfscale.errors import InvalidConfigError
from perfscale.specs.workload import DEFAULT_INFER, DEFAULT_SEQ, DEFAULT_TRAIN, InferWorkload, TrainWorkload

JSON = typer.Option(False, "--json", help="Print exactly one JSON document on stdout.")
MODEL = typer.Option(None, "--model", "-m", help="Catalogue name, local folder or config.json, or hub id. Default: perfscale-tiny-llama.")
TRAIN = typer.Option(False, "--train", help="A training step (the default mode).")
INFER = typer.Option(False, "--infer", help="An inference run: prefill then decode.")
BATCH = typer.Option(None, "--batch", help=f"Micro-batch size (sequences per device per step) or prompts per run. Default: {DEFAULT_TRAIN.batch} (training), {DEFAULT_INFER.batch} (inference).")
SEQ = typer.Option(None, "--seq", help=f"Training sequence length in tokens. Default: {DEFAULT_SEQ}.")
GRAD_ACCUM = typer.Option(None, "--grad-accum", help="Gradient accumulation micro-steps per optimizer step. Default: 1.")
PROMPT = typer.Option(None, "--prompt", help=f"Inference prompt length in tokens. Default: {DEFAULT_INFER.prompt}.")
ALLOW_OPTIMIZER_CHANGE = typer.Option(
    False, "--allow-optimizer-change",
    help="Also search other optimizer algorithms (Adafactor, SGD, 8-bit AdamW on CUDA): they change what is trained. "
         "Without it only AdamW's implementations are searched.")
NEW_TOKENS = typer.Option(None, "--new-tokens", help=f"Tokens to generate after the prompt. Default: {DEFAULT_INFER.new_tokens}.")

# The engine behind each verb: a verb offers the RunConfig knobs that engine honours (the field's
# `engines`, config/run_config.py), so that no flag is accepted and then ignored.
VERB_ENGINE = {"plan": "estimate", "trace": "trace", "bench": "measure", "compare": "measure"}

DEFAULT_MODEL = "perfscale-tiny-llama"


def flag(name: str) -> str:
    """The option of a knob: lora_targets -> --lora-targets (or the field's own flag, e.g. --threads)."""
    return KNOB_FLAGS[name]


@functools.cache
def _hints() -> dict[str, Any]:
    return typing.get_type_hints(RunConfig)


def option_type(hint: Any) -> Any:
    """The type Typer parses for a field's annotation: `int | None` -> int (None is the option's default,
    not a type to parse); any other annotation as it is."""
    kinds = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    return kinds[0] if len(kinds) == 1 and type(None) in typing.get_args(hint) else hint


def _cli_type(name: str) -> type:
    """A knob option's type: bool, int (also `int | None`), else text (str knobs, and lora_targets, comma-separated)."""
    kind = option_type(_hints()[name])
    return kind if kind in (bool, int) else str


def knob_help(name: str) -> str:
    """The field's docstring, then its choices."""
    text = field_help().get(name, "")
    choices = choices_text(name)
    return f"{text} One of: {choices}." if choices else text


def knob_option(name: str) -> Any:
    kind = _cli_type(name)
    decls = f"{flag(name)}/--no-{flag(name)[2:]}" if kind is bool else flag(name)
    return typer.Option(None, decls, help=knob_help(name))


def knob_names(engine: str) -> tuple[str, ...]:
    """The knobs `engine` honours, in RunConfig's order."""
    return tuple(name for name in KNOB_FIELDS if engine in KNOB_ENGINES[name])


def with_knobs(engine: str, after: str = "new_tokens") -> Callable:
    """Give `command` (which takes **knobs) one option per RunConfig knob that `engine` honours, placed
    after its parameter `after` (the end when it has none). Typer reads the options from `__signature__`
    and calls the command with keyword arguments, so the knobs arrive in **knobs."""

    def decorate(command: Callable) -> Callable:
        hints = typing.get_type_hints(command)
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hints.get(p.name, p.annotation))
               for p in inspect.signature(command).parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        names = knob_names(engine)
        generated = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=knob_option(name),
                                       annotation=_cli_type(name)) for name in names]
        at = next((i + 1 for i, p in enumerate(own) if p.name == after), len(own))
        command.__signature__ = inspect.Signature(own[:at] + generated + own[at:])
        command.__annotations__ = {**command.__annotations__, **{p.name: p.annotation for p in generated}}
        command.knob_names = names
        return command

    return decorate


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
            batch=given(batch, DEFAULT_INFER.batch),
            prompt=given(prompt, DEFAULT_INFER.prompt),
            new_tokens=given(new_tokens, DEFAULT_INFER.new_tokens),
        )
    if prompt is not None or new_tokens is not None:
        raise InvalidConfigError("--prompt and --new-tokens are inference flags: add --infer, or use --seq for training.")
    return TrainWorkload(
        batch=given(batch, DEFAULT_TRAIN.batch), seq=given(seq, DEFAULT_TRAIN.seq),
        grad_accum=given(grad_accum, DEFAULT_TRAIN.grad_accum),
    )


def given(value: int | None, default: int) -> int:
    """The typed value, or the default when the flag was not given (0 is a value, and is refused)."""
    return default if value is None else value


def given_knobs(knobs: Mapping[str, Any]) -> dict[str, Any]:
    """The knobs the user gave (None = not given), lora_targets split into names."""
    out = {k: v for k, v in knobs.items() if v is not None}
    if isinstance(out.get("lora_targets"), str):
        out["lora_targets"] = parse_targets(out["lora_targets"])
    return out


def build_run_config(workload: TrainWorkload | InferWorkload, **knobs: Any) -> RunConfig:
    """RunConfig from knob flags; None means 'not given' and takes RunConfig's default."""
    return RunConfig(workload=workload, **given_knobs(knobs))
