"""`perfscale report`: results (plan, trace, bench, compare, tune, tune encoder/decoder, hpo) as one
self-contained HTML file with interactive plots that opens offline (perfscale.report.html)."""

from __future__ import annotations

from typing import Any

import typer

from perfscale.cli import knobs
from perfscale.errors import InvalidConfigError

DEFAULT_OUT = "perfscale-report.html"
# --report on plan, trace, bench and compare (tune declares its own): the same report, written at once.
REPORT = typer.Option(None, "--report", help="Also write the result as a self-contained HTML report with plots "
                      "(plotly embedded: opens offline), as `perfscale report` makes it from the --json output.")


def report(
    files: list[str] = typer.Argument(None, help="--json files written by perfscale verbs (plan, trace, bench, compare, tune, "
                                      "tune encoder, tune decoder, hpo), any number, in the report's order."),
    out: str = typer.Option(DEFAULT_OUT, "--out", "-o", help="The HTML file to write (plotly.js embedded: opens offline)."),
    results: bool = typer.Option(False, "--results", help="Also report the newest measurements in the results store "
                                 "(its newest group, or --group): per-iteration distributions and CIs."),
    store: str = typer.Option(None, "--store", help="The results store for --results and for the samples of bench/compare "
                              "files (default: the store those files name, else the bench store)."),
    group: str = typer.Option(None, "--group", help="With --results: this group of runs (a bench or compare invocation, a tune session)."),
    as_json: bool = knobs.JSON,
) -> None:
    """Write one self-contained HTML report of perfscale results, with plots."""
    from perfscale.report.emit import emit
    from perfscale.report.html import load_document, write_report
    from perfscale.user_files import check_writable

    if group is not None and not results:
        raise InvalidConfigError("--group chooses which stored runs --results reports: add --results.")
    if not files and not results:
        raise InvalidConfigError("Nothing to report: give --json files of perfscale verbs (e.g. `perfscale plan ... --json > "
                                 "plan.json; perfscale report plan.json`), or --results for the results store.")
    check_writable(out, "--out")  # before reading anything
    items = [(str(f), *load_document(f)) for f in files or []]
    if results:
        items.append(store_document(store, group))
    result = write_report(items, out, runs=stored_runs(store))
    document = result.to_dict()
    emit(document, as_json, lambda console: _render(console, document))


def check_report(path: str | None) -> None:
    """--report must be writable before the work starts (InvalidConfigError naming it otherwise)."""
    if path is not None:
        from perfscale.user_files import check_writable

        check_writable(path, "--report")


def write_or_say(document: dict[str, Any], path: str | None, as_json: bool = False) -> bool:
    """Write --report of a finished result (`document`, the verb's --json document), said on stderr for
    people (`report` in the document). A failure keeps the result: its reason goes into the document
    (`report_error`) and on stderr; False then, True otherwise."""
    from perfscale.errors import PerfscaleError
    from perfscale.report.html import detect_kind, write_report

    if path is None:
        return True
    try:
        written = write_report([("this run", detect_kind(document), document)], path, runs=stored_runs(None))
    except PerfscaleError as exc:
        document["report_error"] = str(exc)
        typer.echo(f"error: {exc} The result is printed instead.", err=True)
        return False
    document["report"] = written.path
    if not as_json:
        typer.echo(f"wrote {written.path} ({written.bytes / 2**20:.1f} MiB, {len(written.plots)} plots; opens offline)", err=True)
    return True


def emit_with_report(document: dict[str, Any], as_json: bool, render, path: str | None) -> None:
    """write_or_say, then print the result; exit 2 after printing when the report could not be written."""
    from perfscale.report.emit import emit

    written = write_or_say(document, path, as_json)
    emit(document, as_json, render)
    if not written:
        raise typer.Exit(2)


def _render(console, doc: dict[str, Any]) -> None:
    kinds = ", ".join(i["kind"] for i in doc["inputs"])
    console.print(f"wrote {doc['path']} ({doc['bytes'] / 2**20:.1f} MiB, {len(doc['plots'])} plots from {len(doc['inputs'])} "
                  f"result(s): {kinds}); it opens offline in any browser", markup=False, highlight=False)
    for p in doc["plots"]:
        console.print(f"  - {p['kind']}: {p['title']}", markup=False, highlight=False)


def stored_runs(store_path: str | None):
    """`runs(store_ids, config, store)`: the stored BenchResults (with samples) of a bench/compare row."""
    cache: dict[str, Any] = {}

    def runs(ids: list[int], config: dict[str, Any] | None = None, named: str | None = None) -> list[dict[str, Any]]:
        from perfscale.errors import PerfscaleError
        from perfscale.measure.bench_config import BenchConfig
        from perfscale.measure.store import Store

        path = store_path or named
        wanted = {i for i in ids if i is not None}
        if not wanted or config is None:
            return []
        try:
            if path not in cache:
                cache[path] = Store(path, create=False)
            fingerprint = BenchConfig.from_dict(config).fingerprint()
            found = [r for r in cache[path].runs(fingerprint=fingerprint) if r.id in wanted]
        except (PerfscaleError, OSError, KeyError, TypeError, ValueError):
            return []  # the file's summaries are still shown; the report says the samples were not found
        return [r.result.to_dict() | {"store_id": r.id} for r in sorted(found, key=lambda r: r.id)]

    return runs


def store_document(store_path: str | None, group: str | None) -> tuple[str, str, dict[str, Any]]:
    """The newest group of the results store (or `group`) as a compare-shaped document."""
    from perfscale.measure.store import Store
    from perfscale.report.store_summary import summarize_group

    with Store(store_path, create=False) as store:
        if group is None:
            newest = store.runs(limit=1)
            if not newest:
                raise InvalidConfigError(f"The results store {store.path} is empty: measure something first "
                                         "(`perfscale bench --scenario train`), or give --store PATH of another store.")
            group = newest[0].result.group
        stored = store.runs(group=group)
        if not stored:
            raise InvalidConfigError(f"No runs of group {group!r} in {store.path}: `perfscale results` lists what is stored.")
        return f"{store.path} group {group}", "compare", summarize_group(stored, group, str(store.path))


__all__ = ["REPORT", "check_report", "emit_with_report", "report", "store_document", "stored_runs", "write_or_say"]
