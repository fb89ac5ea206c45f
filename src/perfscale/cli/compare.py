"""`perfscale compare A B [C ...]`: interleaved runs, ratios to the first with 95% CIs, verdicts."""

from __future__ import annotations


import typer

from perfscale.cli import bench as b
from perfscale.cli import knobs
from perfscale.cli import report as R
from perfscale.cli.measure_flags import MeasureFlags, with_measure_flags
from perfscale.cli.inline_config import INLINE_HELP

CONFIGS = typer.Argument(..., help="Two or more configurations. " + INLINE_HELP)
REPEATS = typer.Option(3, "--repeats", "-r", help="Independent processes per configuration (interleaved A B A B ...).")


@knobs.with_knobs(knobs.VERB_ENGINE["compare"])
@with_measure_flags
def compare(
    configs: list[str] = CONFIGS,
    *,
    flags: MeasureFlags,
    repeats: int = REPEATS,
    report: str = R.REPORT,
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
    from perfscale.cli.inline_config import resolve_configuration
    from perfscale.measure.compare import compare as run_compare
    from perfscale.measure.preflight import preflight
    from perfscale.measure.runner import sigterm_as_interrupt
    from perfscale.measure.store import Store
    from perfscale.report.bench_tables import compare_table, compare_verdicts
    from perfscale.report.emit import emit

    with sigterm_as_interrupt():
        base = flags.base_config(run_knobs)
        parsed = [resolve_configuration(text, base) for text in configs]  # all validated before anything runs
        options = flags.measure_options()
        as_json = flags.as_json
        R.check_report(report)
        if len(parsed) >= 2:
            preflight(parsed)  # the models, LoRA targets and sizes, before the store is opened
        with Store(flags.store) as db:
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

        reported = R.write_or_say(doc, report, as_json)
        emit(doc, as_json, render)
        if result.interrupted:  # after printing what finished
            raise b.interrupted_exit(result.interrupted_by or "Ctrl-C")
        if unsaved or not reported:
            raise typer.Exit(2)
