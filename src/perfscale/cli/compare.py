"""`perfscale compare A B [C ...]`: interleaved runs, ratios to the first with 95% CIs, verdicts."""

from __future__ import annotations

from pathlib import Path

import typer

from perfscale.cli import bench as b
from perfscale.cli import knobs
from perfscale.measure.bench_config import INLINE_HELP

CONFIGS = typer.Argument(..., help="Two or more configurations. " + INLINE_HELP)
REPEATS = typer.Option(3, "--repeats", "-r", help="Independent processes per configuration (interleaved A B A B ...).")


@knobs.with_knobs(knobs.VERB_ENGINE["compare"])
def compare(
    configs: list[str] = CONFIGS,
    scenario: str = b.SCENARIO,
    model: str = knobs.MODEL,
    batch: int = knobs.BATCH,
    seq: int = knobs.SEQ,
    grad_accum: int = knobs.GRAD_ACCUM,
    prompt: int = knobs.PROMPT,
    new_tokens: int = knobs.NEW_TOKENS,
    backend: str = b.BACKEND,
    encoder_quant: str = b.ENCODER_QUANT,
    device: str = b.DEVICE,
    sentences: int = b.SENTENCES,
    repeats: int = REPEATS,
    min_iters: int = b.MIN_ITERS,
    min_time: float = b.MIN_TIME,
    max_time: float = b.MAX_TIME,
    target_ci: float = b.TARGET_CI,
    warmup: int = b.WARMUP,
    time_limit: float = b.TIME_LIMIT,
    gate: bool = b.GATE,
    store: Path = b.STORE,
    as_json: bool = b.JSON,
    **run_knobs,
) -> None:
    """Compare configurations on this machine: each runs in `--repeats` fresh processes, interleaved;
    each is reported as a ratio to the FIRST with a 95% CI and a verdict ("B is 1.31x faster than A
    [1.27, 1.35]" or "no significant difference at 95%"), the same for peak memory. Inference variants
    are gated against the fp32 eager reference: below threshold they are `inaccurate`, not fast.

    The shared flags (--scenario, --model, knobs) are the base of every configuration; each
    CONFIG overrides them. Example: perfscale compare --scenario encode backend=eager backend=onnxruntime
    backend=onnxruntime,quant=int8-per-channel
    """
    from perfscale.measure.bench_config import resolve_configuration
    from perfscale.measure.compare import compare as run_compare
    from perfscale.measure.preflight import preflight
    from perfscale.measure.runner import sigterm_as_interrupt
    from perfscale.measure.store import Store
    from perfscale.report.bench_tables import compare_table, compare_verdicts
    from perfscale.report.emit import emit

    with sigterm_as_interrupt():
        base = b.base_config(
            scenario=scenario, model=model, batch=batch, seq=seq, grad_accum=grad_accum, prompt=prompt, new_tokens=new_tokens,
            backend=backend, encoder_quant=encoder_quant, device=device, sentences=sentences, label=None,
            run_knobs=run_knobs,
        )
        parsed = [resolve_configuration(text, base) for text in configs]  # all validated before anything runs
        options = b.measure_options(min_iters, min_time, max_time, target_ci, warmup, time_limit, gate)
        if len(parsed) >= 2:
            preflight(parsed)  # the models, LoRA targets and sizes, before the store is opened
        with Store(store) as db:
            with b.progress("compare", len(parsed) * repeats, as_json) as advance:
                result = run_compare(parsed, options, repeats=repeats, store=db, on_result=lambda r: advance(f"{r.config.display}: {r.status}"))
            doc = result.to_dict() | {"store": str(db.path)}
            unsaved = b.report_unsaved(db)
            if unsaved:
                doc["unsaved"] = unsaved

        def render(console) -> None:
            console.print(compare_table(doc))
            for line in compare_verdicts(doc):
                console.print(line)

        emit(doc, as_json, render)
        if result.interrupted:  # after printing what finished
            raise b.interrupted_exit(result.interrupted_by or "Ctrl-C")
        if unsaved:
            raise typer.Exit(2)
