"""`perfscale plan`: closed-form memory and time, and a ranked search over the open knobs."""

from __future__ import annotations

import typer

from perfscale.cli import knobs as K
from perfscale.cli import report as R
from perfscale.cli.task_options import NUM_LABELS, TASK, model_or_spec

HARDWARE = typer.Option(
    None, "--hardware", "--topology",
    help="DEVICE, NxDEVICE or NODESxNxDEVICE, e.g. H100-80GB, 8xH100-80GB, 2x8xH100-80GB. "
    "Omitted: this machine's detected device (said in the output).",
)
TOP = typer.Option(5, "--top", help="How many ranked configurations to show.")
OBJECTIVE = typer.Option("throughput", "--objective", help="throughput | memory | cost.")
EFFICIENCY = typer.Option(None, "--efficiency", help="Fraction of peak FLOP/s reached, replacing the default model (GPU training: its parts, estimate/gpu_step.py; GPU inference 0.45; CPU 0.28).")
TOKENS = typer.Option(None, "--token-budget", help="Tokens to train on: report time (and cost) to train.")
PRICE = typer.Option(None, "--price", help="Price per device-hour, for the cost of the token budget.")
JSON = typer.Option(False, "--json", help="Print one JSON document (list `configs`).")
CALIBRATE = typer.Option(
    False, "--calibrate",
    help="On this machine's CPU: time each operation of the step at its shape (seconds, once; stored under "
    "~/.cache/perfscale/calibration/) and estimate time from those instead of peak x efficiency. Later plans on "
    "this machine reuse stored timings without the flag.",
)
GLOBAL_BATCH = typer.Option(
    None, "--global-batch", help="Training: sequences per optimizer step over all data-parallel replicas, held fixed "
    "while the search picks the layout, micro-batch and accumulation (instead of --batch).")
ALLOW_LORA = typer.Option(False, "--allow-lora", help="When full fine-tuning fits nowhere, search LoRA (r=16 on "
                          "every linear layer): it trains an adapter, not the whole model.")
HOST_MEMORY = typer.Option(None, "--host-memory-gib", help="Host (CPU) RAM per node in GiB, for CPU offload "
                           "(default 2048 GiB per GPU node: DGX H100's 2 TB).")


@K.with_knobs(K.VERB_ENGINE["plan"])
def plan(
    model: str = K.MODEL, hardware: str = HARDWARE, train: bool = K.TRAIN, infer: bool = K.INFER,
    batch: int = K.BATCH, seq: int = K.SEQ, grad_accum: int = K.GRAD_ACCUM, prompt: int = K.PROMPT,
    new_tokens: int = K.NEW_TOKENS, top: int = TOP,
    objective: str = OBJECTIVE, efficiency: float = EFFICIENCY, token_budget: float = TOKENS, price: float = PRICE,
    as_json: bool = JSON, host_memory_gib: float = HOST_MEMORY, calibrate: bool = CALIBRATE,
    task: str = TASK, num_labels: int = NUM_LABELS, report: str = R.REPORT,
    allow_optimizer_change: bool = K.ALLOW_OPTIMIZER_CHANGE, global_batch: int = GLOBAL_BATCH,
    allow_lora: bool = ALLOW_LORA, **knobs,
) -> None:
    """Will it fit and how fast: estimate memory and time, searching the knobs you leave open.

    Give every knob to evaluate one configuration. Without --hardware, plans for this machine.
    """
    from perfscale.tune.plan import plan as run_plan
    from perfscale.report.plan_tables import render_plan

    if global_batch is not None and batch is not None:
        from perfscale.errors import InvalidConfigError

        raise InvalidConfigError(f"Give --global-batch ({global_batch}) or --batch ({batch}), not both: with "
                                 "--global-batch the search picks the micro-batch.")
    workload = K.workload_from_options(train=train, infer=infer, batch=batch, seq=seq, grad_accum=grad_accum,
                                       prompt=prompt, new_tokens=new_tokens)
    R.check_report(report)
    fixed = K.given_knobs(knobs) | ({"grad_accum": grad_accum} if grad_accum is not None else {})
    calibration, prepare = _calibration(hardware, calibrate, as_json)
    target = model_or_spec(model or K.DEFAULT_MODEL, task, num_labels)
    result = run_plan(target, hardware, workload, objective=objective, top=top, efficiency=efficiency,
                      token_budget=token_budget, price_per_device_hour=price,
                      host_memory=None if host_memory_gib is None else host_memory_gib * 2**30,
                      calibration=calibration, prepare_calibration=prepare,
                      allow_optimizer_change=allow_optimizer_change, global_batch=global_batch,
                      allow_lora=allow_lora, **fixed)
    R.emit_with_report(result.to_dict(), as_json, lambda console: render_plan(result, console), report)


def _calibration(hardware: str | None, calibrate: bool, quiet: bool):
    """(stored calibration of this CPU, probe callback) when planning for this machine, else (None, None)."""
    from perfscale.errors import InvalidConfigError

    local = hardware is None or hardware.lower() in ("local", "local-cpu")
    if not local:
        if calibrate:
            raise InvalidConfigError(f"--calibrate times operations on this machine, but --hardware is {hardware!r}: "
                                     "drop --hardware (or use --hardware local) to plan for this machine.")
        return None, None
    from perfscale.specs import get_hardware

    if get_hardware("local").kind != "cpu":
        if calibrate:
            raise InvalidConfigError("--calibrate probes CPU operations; this machine plans for its GPU. "
                                     "Use perfscale bench to measure GPU steps.")
        return None, None
    from perfscale.measure.cpu_probe import local_calibration, probe

    calibration = local_calibration()
    if not calibrate:
        return (calibration if calibration.times else None), None

    def prepare(spec, needed: list[tuple[str, int]]) -> None:
        import sys

        if not quiet:
            print(f"calibrating: timing {len(needed)} operations on this CPU (stored for later plans)", file=sys.stderr)
        try:
            probe(needed, calibration, spec=spec)
        finally:
            calibration.save()  # keep what was timed even when interrupted

    return calibration, prepare
