"""`perfscale bench`: measure one configuration in a fresh process (thin wrapper over measure.runner.measure)."""

from __future__ import annotations

import json
import uuid
from contextlib import contextmanager
from pathlib import Path

import typer

from perfscale.cli import knobs
from perfscale.cli import report as R
from perfscale.cli.measure_flags import MeasureFlags, with_measure_flags

LABEL = typer.Option(None, "--label", help="A name for this configuration in tables and the store.")
REPEATS = typer.Option(1, "--repeats", help="Fresh processes to run (interleaving nothing else). With 2 or more, the CI is a two-level bootstrap over processes and iterations, so it also covers process-to-process drift.")
SAVE_CONFIG = typer.Option(None, "--save-config", help="Write the configuration as JSON (for `perfscale compare FILE ...` or `bench --config`).")
CONFIG = typer.Option(None, "--config", help="Measure the configuration in this JSON file (from --save-config, tune, or a bench --json output) instead of the knob flags.")
# The flags that define what is measured; with --config the file does, so these are refused alongside it.
CONFIG_FLAGS = (
    "scenario", "model", "batch", "seq", "grad_accum", "prompt", "new_tokens", *knobs.knob_names("measure"),
    "backend", "encoder_quant", "device", "sentences", "nproc", "nnodes", "strategy",
)


def config_from_file(ctx, path: Path, label: str | None):
    """The BenchConfig of a --config file; knob flags given with it are refused (the file decides)."""
    from dataclasses import replace

    from perfscale.errors import InvalidConfigError
    from perfscale.measure.bench_config import load_config_file

    given = [name for name in CONFIG_FLAGS if getattr(ctx.get_parameter_source(name), "name", "") in ("COMMANDLINE", "ENVIRONMENT")]
    if given:
        flags = ", ".join(knobs.KNOB_FLAGS.get(name, "--" + name.replace("_", "-")) for name in given)
        raise InvalidConfigError(
            f"--config {path} holds the whole configuration: drop {flags}, or change the value in the file. "
            "Measurement flags (--min-iters, --max-time, --store, --label, ...) go with --config."
        )
    config = load_config_file(Path(path))
    return replace(config, label=label) if label else config


def report_unsaved(db) -> list[dict]:
    """Say on stderr where each result that the store refused went; the entries for the JSON document."""
    entries = []
    for result, path, why in db.unsaved:
        typer.echo(f"error: {why} The result of {result.config.display} ({result.status}) is saved in {path} instead: "
                   f"nothing measured is lost; add it later with `perfscale results --store STORE --restore {path}`.", err=True)
        entries.append({"run_id": result.run_id, "file": str(path), "error": why})
    return entries


def interrupted_exit(how: str) -> typer.Exit:
    """One line on stderr for Ctrl-C / SIGTERM, and the exit (130 for Ctrl-C, 143 = 128 + SIGTERM)."""
    typer.echo(f"Interrupted by {how}: finished runs are stored, the running one as `interrupted`; its worker was "
               "stopped and the temp folder removed.", err=True)
    return typer.Exit(143 if how == "SIGTERM" else 130)


@contextmanager
def progress(description: str, total: int | None, quiet: bool):
    """A Rich progress bar on stderr when it is a terminal and not --json; yields an `advance(text)` callable."""
    import sys

    if quiet or not sys.stderr.isatty():
        yield lambda text=None: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)

        def advance(text: str | None = None) -> None:
            bar.update(task, advance=1, description=text or description)

        yield advance


def ranks_table(doc: dict):
    """The per-rank rows of a torchrun-measured result (measure/multiprocess.py), or None for one process."""
    from rich.table import Table

    from perfscale.units import gib, seconds

    ranks = doc.get("ranks") or []
    if not ranks:
        return None
    layout = doc.get("distributed") or {}
    title = (f"per rank: {layout.get('strategy', '?')} x {layout.get('world_size', len(ranks))} on {layout.get('backend', '?')}, "
             f"{layout.get('threads_per_rank', '?')} thread(s) per rank")
    table = Table(title=title)
    for name in ("rank", "node", "step time (median)", "tokens/s", "peak live tensors", "peak RSS", "comm (profiled iter)"):
        table.add_column(name, justify="right")
    for r in ranks:
        tps = r.get("tokens_per_s")
        table.add_row(str(r.get("rank")), str(r.get("node")), seconds(r.get("step_time_median")),
                      "n/a" if tps is None else f"{tps:,.1f}", gib(r.get("peak_live_tensor_bytes")), gib(r.get("cpu_peak_rss")),
                      seconds(r.get("comm_s")))
    return table


def render_bench(doc: dict):
    """bench's view: the result table, then the per-rank table when there are ranks."""
    from perfscale.report.bench_tables import bench_table

    def render(console) -> None:
        console.print(bench_table(doc))
        table = ranks_table(doc)
        if table is not None:
            console.print(table)

    return render


def warn_notes(config, notes: list[str], quiet: bool) -> None:
    """Say on stderr what preflight noted about a multi-process layout (ranks sharing cores) before it runs."""
    if quiet or not config.distributed:
        return
    for note in notes:
        typer.echo(f"warning: {note}", err=True)


def _rerun_interval(doc: dict, db, runs: list, group: str) -> dict:
    """ci_low/ci_high widened by this machine's drift between invocations (measure/drift.py),
    learnt from the store's earlier invocations, this one left out."""
    from perfscale.measure.drift import machine_drift, with_drift

    timed = [r for r in runs if r.ok]
    if not timed:
        return doc
    return with_drift(doc, machine_drift(db, timed[0], exclude_group=group))


@knobs.with_knobs(knobs.VERB_ENGINE["bench"])
@with_measure_flags
def bench(
    ctx: typer.Context,
    flags: MeasureFlags,
    label: str = LABEL,
    repeats: int = REPEATS,
    save_config: Path = SAVE_CONFIG,
    config_file: Path = CONFIG,
    report: str = R.REPORT,
    **run_knobs,
) -> None:
    """Measure one configuration on this machine: fresh process, warm-up, stop rule, median with 95% CI,
    throughput, latency, peak memory, MFU, accuracy gate (inference), full environment; stored at once.

    The reported interval (ci_low/ci_high) is the within-run CI widened by this machine's drift between
    invocations, learnt from earlier invocations in the store (within_run_ci_* keeps the plain CI).

    Everything is checked before a process starts (the model, LoRA targets, sizes, a writable store).
    Ctrl-C or SIGTERM stores the running configuration as `interrupted` (exit 130 / 143); a store that
    fails at the end gets the result written to a JSON file next to it instead (said on stderr, exit 2)."""
    from perfscale.measure.compare import MAX_REPEATS
    from perfscale.measure.runner import RunInterrupted, measure, sigterm_as_interrupt
    from perfscale.measure.store import Store
    from perfscale.report.emit import emit

    with sigterm_as_interrupt():
        if config_file is not None:
            config = config_from_file(ctx, config_file, label)
        else:
            config = flags.base_config(run_knobs, label)
        options = flags.measure_options()
        as_json, store = flags.as_json, flags.store
        from perfscale.errors import InvalidConfigError

        if not isinstance(repeats, int) or not 1 <= repeats <= MAX_REPEATS:
            raise InvalidConfigError(f"--repeats must be an integer from 1 to {MAX_REPEATS}, got {repeats!r}.")
        from perfscale.measure.preflight import preflight

        R.check_report(report)
        warn_notes(config, preflight(config)[config.fingerprint()], as_json)  # before the config file is written and the store opened
        if save_config:
            try:
                Path(save_config).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
            except OSError as exc:
                raise InvalidConfigError(f"Cannot write --save-config {save_config}: {exc.strerror or exc}. Give a writable file path.") from exc
        with Store(store) as db:
            if repeats > 1:
                from perfscale.measure.compare import measure_repeated
                from perfscale.report.bench_tables import compare_table

                with progress(f"measuring {config.display} in {repeats} processes", None, as_json):
                    row = measure_repeated(config, options, repeats=repeats, store=db)
                doc = {"store": str(db.path), "repeats": repeats, "reference": row.label, "interrupted": row.interrupted,
                       "configurations": [_rerun_interval(row.to_dict(), db, row.runs, row.runs[0].group if row.runs else "")]}
                unsaved = report_unsaved(db)
                if unsaved:
                    doc["unsaved"] = unsaved
                reported = R.write_or_say(doc, report, as_json)
                emit(doc, as_json, lambda console: console.print(compare_table(doc)))
                if row.interrupted:
                    raise interrupted_exit(row.interrupted_by or "Ctrl-C")
                if unsaved or not reported:
                    raise typer.Exit(2)
                return
            group = uuid.uuid4().hex[:12]  # this invocation, left out of the drift it is judged by
            interrupted = None
            try:
                with progress(f"measuring {config.display}", None, as_json):
                    result = measure(config, options, store=db, group=group)
            except RunInterrupted as exc:
                result, interrupted = exc.result, exc
            doc = {"store": str(db.path), "configurations": [_rerun_interval(result.to_dict(samples=False), db, [result], group)]}
            if interrupted is not None:
                doc["interrupted"] = True
            unsaved = report_unsaved(db)
            if unsaved:
                doc["unsaved"] = unsaved
        reported = R.write_or_say(doc, report, as_json)
        emit(doc, as_json, render_bench(doc["configurations"][0]))
        if interrupted is not None:
            raise interrupted_exit(interrupted.how)
        if unsaved or not reported:
            raise typer.Exit(2)
