"""`perfscale trace`: exact peak memory of a training step or inference run, on fake tensors."""

from __future__ import annotations

import typer

from perfscale.cli import knobs
from perfscale.cli import report as R
from perfscale.cli.task_options import NUM_LABELS, TASK, model_or_spec

DEVICE = typer.Option(None, "--device", help="Whose program to trace: cuda (default; emulated on CPU-only torch) | cpu.")
FULL = typer.Option(False, "--full-layers", help="Trace every layer instead of extrapolating exactly from 4 and 5 layers.")


@knobs.with_knobs(knobs.VERB_ENGINE["trace"])
def trace(
    model: str = knobs.MODEL,
    train: bool = knobs.TRAIN,
    infer: bool = knobs.INFER,
    batch: int = knobs.BATCH,
    seq: int = knobs.SEQ,
    grad_accum: int = knobs.GRAD_ACCUM,
    prompt: int = knobs.PROMPT,
    new_tokens: int = knobs.NEW_TOKENS,
    device: str = DEVICE,
    full_layers: bool = FULL,
    task: str = TASK,
    num_labels: int = NUM_LABELS,
    as_json: bool = knobs.JSON,
    report: str = R.REPORT,
    **run_knobs,
) -> None:
    """Run the real model code on fake tensors and report peak allocated memory per device, exactly."""
    from perfscale.trace import trace as run_trace

    workload = knobs.workload_from_options(
        train=train, infer=infer, batch=batch, seq=seq, grad_accum=grad_accum, prompt=prompt, new_tokens=new_tokens
    )
    config = knobs.build_run_config(workload, **run_knobs)
    R.check_report(report)
    target = model_or_spec(model or knobs.DEFAULT_MODEL, task, num_labels)
    result = run_trace(target, config, device=device, repeat_layers=False if full_layers else None)
    document = result.to_dict()

    def render(console) -> None:
        from perfscale.report.trace_tables import render_trace

        render_trace(console, document)

    R.emit_with_report(document, as_json, render, report)
