"""`perfscale results`: list, filter and export the stored runs (table, JSON, CSV, Markdown)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from perfscale.cli.measure_flags import OPTIONS as MEASURE_OPTIONS

FORMATS = ("table", "json", "csv", "markdown")
MAX_LIMIT = 2**62  # SQLite integers are 64-bit signed


def results(
    store: Path = MEASURE_OPTIONS["store"],
    scenario: str = typer.Option(None, "--scenario", help="Only this scenario (train | encode | generate)."),
    model: str = typer.Option(None, "--model", help="Only this model name."),
    status: str = typer.Option(None, "--status", help="Only this status: ok | inaccurate | oom | timeout | failed | interrupted."),
    label: str = typer.Option(None, "--label", help="Only labels containing this text."),
    group: str = typer.Option(None, "--group", help="Only the runs of one bench/compare invocation (its group id)."),
    run_id: int = typer.Option(None, "--id", help="Only the run with this store id (JSON shows everything about it)."),
    limit: int = typer.Option(50, "--limit", help="At most this many runs, newest first (0: all)."),
    fmt: str = typer.Option("table", "--format", "-f", help="table | json | csv | markdown."),
    output: Path = typer.Option(None, "--output", "-o", help="Write the export to this file instead of stdout."),
    restore: list[Path] = typer.Option(None, "--restore", help="Add results that bench/compare/tune saved to a "
                                       "perfscale-unsaved-*.json file when the store could not be written (repeatable)."),
    as_json: bool = MEASURE_OPTIONS["as_json"],
) -> None:
    """List stored measurements, newest first; filter them; export JSON (full records), CSV or Markdown."""
    from perfscale.errors import choice_error
    from perfscale.measure.store import Store, store_summary_rows
    from perfscale.report.bench_tables import results_csv, results_markdown, results_table
    from perfscale.report.emit import console, print_json

    from perfscale.errors import InvalidConfigError
    from perfscale.user_files import check_writable, write_text

    if fmt not in FORMATS:
        raise choice_error("format", fmt, FORMATS, "See `perfscale results --help`.")
    if as_json and fmt not in ("table", "json"):
        raise InvalidConfigError(f"--json prints the runs as JSON, but --format is {fmt!r}: give one of the two "
                                 f"(--format {fmt} alone, or --json).")
    if as_json:
        fmt = "json"
    if limit < 0 or limit > MAX_LIMIT:
        raise InvalidConfigError(f"--limit must be between 0 (all runs) and {MAX_LIMIT}, got {limit}.")
    if run_id is not None and not 1 <= run_id <= MAX_LIMIT:
        raise InvalidConfigError(f"--id must be a store id >= 1 (the `id` column of `perfscale results`), got {run_id}.")
    if output is not None:
        check_writable(output, "--output")
    if store is not None and not _exists(store) and not restore:
        raise InvalidConfigError(f"--store {str(store)[:120]!r} does not exist: give the SQLite file that `perfscale bench "
                                 "--store` wrote, or omit --store for the default store.")
    with Store(store) as db:
        for saved in restore or []:
            db.restore(saved)
            if not as_json:
                typer.echo(f"restored {saved} into {db.path}", err=True)
        runs = db.runs(scenario=scenario, model=model, status=status, label=label, group=group, limit=None if run_id else (limit or None))
        if run_id is not None:
            runs = [r for r in runs if r.id == run_id]
        path = str(db.path)
    rows = store_summary_rows(runs)
    if fmt == "table":
        console().print(results_table(rows, path))
        return
    if fmt == "json":
        doc = {"store": path, "runs": [r.result.to_dict() for r in runs]}
        text = json.dumps(doc, indent=2, default=str) + "\n"
    elif fmt == "csv":
        text = results_csv(rows)
    else:
        text = results_markdown(rows)
    if output:
        write_text(output, text, "--output")
        if fmt != "json":
            typer.echo(f"wrote {len(rows)} runs to {output}", err=True)
        else:
            print_json({"store": path, "written": str(output), "runs": len(rows)})
    else:
        sys.stdout.write(text)


def _exists(path: Path) -> bool:
    try:
        return Path(path).expanduser().exists()
    except OSError:  # a name too long for the file system cannot be a store
        return False
