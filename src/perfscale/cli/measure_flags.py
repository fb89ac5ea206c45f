"""The flags `bench` and `compare` share, declared once: what to measure (scenario, model, sizes,
runtime, device) and how (stop rule, warm-up, limits, gate, store, --json).

A command declares one parameter `flags: MeasureFlags`; `with_measure_flags` puts these options in
its place (Typer reads them from `__signature__`) and calls the command with one MeasureFlags object.
"""

from __future__ import annotations

import functools
import inspect
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable

import typer

from perfscale.cli import knobs
from perfscale.cli.task_options import NUM_LABELS, TASK

OPTIONS: dict[str, Any] = {
    "scenario": typer.Option("train", "--scenario", "-s", help="train | encode | generate | load (from_pretrained in a fresh process: time, peak RSS vs the checkpoint's bytes)."),
    "model": knobs.MODEL,
    "task": TASK,
    "num_labels": NUM_LABELS,
    "batch": knobs.BATCH,
    "seq": knobs.SEQ,
    "grad_accum": knobs.GRAD_ACCUM,
    "prompt": knobs.PROMPT,
    "new_tokens": knobs.NEW_TOKENS,
    "backend": typer.Option(None, "--backend", help="eager | compile (torch.compile, the same as --compile) | onnxruntime | openvino (encode only). Default eager."),
    "encoder_quant": typer.Option("none", "--encoder-quant", help="encode: none | int8-dynamic | int8-per-channel | int8-reduce-range | int8-per-channel-reduce-range."),
    "device": typer.Option("auto", "--device", help="Where to run: auto (CUDA when present) | cpu | cuda."),
    "sentences": typer.Option(None, "--sentences", help="encode: corpus sentences per iteration (default 4 batches)."),
    "nproc": typer.Option(None, "--nproc", help="Processes per node (torchrun --nproc-per-node): measure training in that many ranks; --batch is per rank. Default 1 (one plain process)."),
    "nnodes": typer.Option(None, "--nnodes", help="torchrun agents on this machine joined by a c10d rendezvous on 127.0.0.1 (a real multi-node run without a cluster). Default 1."),
    "strategy": typer.Option(None, "--strategy", help="ddp | fsdp2 (fully_shard per transformer block) | deepspeed (ZeRO stage --zero through accelerate; perfscale[deepspeed]) | none. Default ddp with --nproc/--nnodes above 1, else none."),
    "min_iters": typer.Option(10, "--min-iters", help="Stop rule: at least this many timed iterations."),
    "min_time": typer.Option(3.0, "--min-time", help="Stop rule: and at least this many seconds."),
    "max_time": typer.Option(60.0, "--max-time", help="Stop rule: time cap (seconds) even if the CI target is not met (then said so)."),
    "target_ci": typer.Option(0.02, "--target-ci", help="Stop rule: stop when the 95% CI half-width of the median <= this fraction."),
    "warmup": typer.Option(2, "--warmup", help="Untimed warm-up iterations (the first carries compile)."),
    "time_limit": typer.Option(None, "--time-limit", help="Kill a run after this many seconds (load included): status timeout. Default max-time + 600."),
    "gate": typer.Option(True, "--gate/--no-gate", help="Inference: check outputs against the fp32 eager reference (extra process)."),
    "store": typer.Option(None, "--store", help="SQLite results file. Default $XDG_CACHE_HOME/perfscale/results.sqlite (~/.cache/...)."),
    "as_json": typer.Option(False, "--json", help="Print one JSON document on stdout (no progress bar)."),
}


# Flags that were BenchConfig's FSDP2 knobs until they became RunConfig's (issue 13): hidden, and refused
# with the flag that replaces them (exit 2). --fsdp-reshard/--no-fsdp-reshard is RunConfig.fsdp_reshard's own flag.
REMOVED: dict[str, tuple[Any, str]] = {
    "fsdp_mp": (typer.Option(None, "--fsdp-mp", hidden=True),
                "--fsdp-mp {value} was removed: use --precision {mixed} (FSDP2's MixedPrecisionPolicy(param_dtype=16-bit, "
                "reduce_dtype=fp32) over fp32 weights, plus autocast, as accelerate sets FSDP2 up)."),
    "fsdp_offload": (typer.Option(False, "--fsdp-offload", hidden=True),
                     "--fsdp-offload was removed: use --offload optimizer+params (FSDP2's CPUOffloadPolicy: parameters, "
                     "gradients and the optimizer step on the CPU)."),
}


def refuse_removed(given: dict[str, Any]) -> None:
    """Raise for a removed flag that was given (its value is not the hidden option's default), naming its replacement."""
    from perfscale.errors import InvalidConfigError

    for name, (option, message) in REMOVED.items():
        value = given.get(name)
        if value is not None and value != option.default:
            raise InvalidConfigError(message.format(value=value, mixed=mixed_for(value)))


def mixed_for(fsdp_mp: Any) -> str:
    """The precision that replaces a removed fsdp_mp value: bf16 -> bf16-mixed."""
    return f"{fsdp_mp}-mixed" if fsdp_mp in ("bf16", "fp16") else "bf16-mixed or fp16-mixed"


@dataclass(frozen=True)
class MeasureFlags:
    """The shared flags as typed (None where not given)."""

    scenario: str
    model: str | None
    task: str | None
    num_labels: int | None
    batch: int | None
    seq: int | None
    grad_accum: int | None
    prompt: int | None
    new_tokens: int | None
    backend: str | None
    encoder_quant: str
    device: str
    sentences: int | None
    nproc: int | None
    nnodes: int | None
    strategy: str | None
    min_iters: int
    min_time: float
    max_time: float
    target_ci: float
    warmup: int
    time_limit: float | None
    gate: bool
    store: Path | None
    as_json: bool

    def base_config(self, run_knobs: dict, label: str | None = None):
        """The BenchConfig these flags and the RunConfig knob options describe (validated: raises
        before anything runs); run_knobs: the knob options (knobs.with_knobs), None where not given."""
        from perfscale.errors import InvalidConfigError, choice_error
        from perfscale.measure.bench_config import DEFAULT_MODELS, DEFAULT_WORKLOADS, SCENARIOS, BenchConfig, split_backend
        from perfscale.specs.workload import InferWorkload, TrainWorkload

        scenario = self.scenario
        if scenario not in SCENARIOS:
            raise choice_error("scenario", scenario, SCENARIOS, "See `perfscale bench --help`.")
        default = DEFAULT_WORKLOADS[scenario]
        if scenario == "train":
            if self.prompt is not None or self.new_tokens is not None:
                raise InvalidConfigError("--prompt and --new-tokens are for --scenario generate/encode; training uses --batch and --seq.")
            workload = TrainWorkload(batch=knobs.given(self.batch, default.batch), seq=knobs.given(self.seq, default.seq),
                                     grad_accum=knobs.given(self.grad_accum, default.grad_accum))
        else:
            if self.seq is not None or self.grad_accum is not None:
                raise InvalidConfigError(f"--seq and --grad-accum are training flags; {scenario} uses --batch and --prompt"
                                         + (" and --new-tokens." if scenario == "generate" else " (truncation length)."))
            if scenario == "encode" and self.new_tokens is not None:
                raise InvalidConfigError("--new-tokens does not apply to encode (no generation): drop it.")
            workload = InferWorkload(batch=knobs.given(self.batch, default.batch), prompt=knobs.given(self.prompt, default.prompt),
                                     new_tokens=default.new_tokens if self.new_tokens is None else self.new_tokens)
        model = self.model
        if self.task is not None or self.num_labels is not None:
            if scenario != "train":
                raise InvalidConfigError(f"--task/--num-labels choose the head a model trains with; {scenario} runs the "
                                         "model as it is: use --scenario train, or drop them.")
            from perfscale.specs import load_model_spec
            from perfscale.specs.head_folder import head_folder

            model = head_folder(load_model_spec(model or DEFAULT_MODELS[scenario], task=self.task, num_labels=self.num_labels))
        # --backend compile is --compile: the runtime is BenchConfig's, torch.compile the run's
        runtime, compiled = split_backend(self.backend or "eager", run_knobs.get("compile"))
        run = knobs.build_run_config(workload, **(run_knobs | {"compile": compiled}))
        return BenchConfig(scenario=scenario, model=model, run=run, runtime=runtime, device=self.device,
                           encoder_quantization=self.encoder_quant, sentences=self.sentences, label=label,
                           **self.layout())

    def layout(self) -> dict:
        """The multi-process fields of BenchConfig these flags give (defaults where not given)."""
        from perfscale.measure.bench_config import DIST_DEFAULTS

        given = {"nproc": self.nproc, "nnodes": self.nnodes, "strategy": self.strategy}
        return {k: DIST_DEFAULTS[k] if v is None else v for k, v in given.items()}

    def measure_options(self):
        from perfscale.measure.bench_config import MeasureOptions
        from perfscale.measure.stats import StopRule

        stop = StopRule(min_iters=self.min_iters, min_time=self.min_time, target_rel_ci=self.target_ci, max_time=self.max_time)
        return MeasureOptions(stop=stop, warmup=self.warmup, time_limit=self.time_limit, gate=self.gate)


_HINTS = typing.get_type_hints(MeasureFlags)
_OPTION_TYPES = {f.name: knobs.option_type(_HINTS[f.name]) for f in fields(MeasureFlags)}
_REMOVED_TYPES = {"fsdp_mp": str, "fsdp_offload": bool}


def with_measure_flags(command: Callable) -> Callable:
    """Replace `command`'s parameter `flags` by one option per MeasureFlags field (OPTIONS has one per
    field; tests/test_measure_flags.py checks it); the command is called with flags=MeasureFlags(...)
    and its other arguments as Typer parsed them."""
    hints = typing.get_type_hints(command)
    params: list[inspect.Parameter] = []
    for p in inspect.signature(command).parameters.values():
        if p.name == "flags":
            params += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=_OPTION_TYPES[name])
                       for name, option in OPTIONS.items()]
            params += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=_REMOVED_TYPES[name])
                       for name, (option, _) in REMOVED.items()]
        elif p.kind is inspect.Parameter.VAR_KEYWORD:
            params.append(p)
        else:  # keyword-only, as Typer calls it, so that the order of defaults does not matter
            params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hints.get(p.name, p.annotation)))

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        refuse_removed({name: kwargs.pop(name) for name in REMOVED})
        flags = MeasureFlags(**{name: kwargs.pop(name) for name in OPTIONS})
        return command(*args, flags=flags, **kwargs)

    wrapper.__signature__ = inspect.Signature(params)
    wrapper.__annotations__ = {p.name: p.annotation for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD}
    return wrapper
