"""`perfscale tune` (training, the default mode): the CLI side of perfscale.tune.train.tune_training.

cli/tune.py owns the verb and its flags; this module turns the training flags into a tune, prints
the result (Rich or one JSON document) and writes the emitted files.
"""

from __future__ import annotations

from pathlib import Path

import typer

from perfscale.errors import InvalidConfigError

def tune_training_cli(*, model, quick, budget_seconds, repeats, compile_, save, as_json, seq, global_batch, hardware, allow_lora,
                      allow_optimizer_change, store, resume, emit, out, trace_top, verbose=False, report=None, processes=None,
                      task=None, num_labels=None) -> None:
    from perfscale.report.emit import emit as print_result
    from perfscale.tune.train import TrainTuneOptions, tune_training
    from perfscale.user_files import check_writable

    formats = None
    if emit:
        from perfscale.export.emit import parse_formats

        formats = parse_formats(emit)  # a bad format fails now, before minutes of measuring
    elif out:
        raise InvalidConfigError("--out says where --emit writes: add --emit trainer (or accelerate, deepspeed, fsdp, torchrun, all).")
    check_budget(budget_seconds)
    options = TrainTuneOptions.from_user(  # validates every value (0, NaN and negatives included), all problems at once
        quick=quick, model=model, seq=seq, global_batch=global_batch, hardware=hardware, allow_lora=allow_lora,
        allow_optimizer_change=allow_optimizer_change, include_compile=compile_, budget_seconds=budget_seconds, store=store,
        resume=resume, trace_top=trace_top, repeats=repeats, include_processes=processes, task=task, num_labels=num_labels,
    )
    if task is not None or num_labels is not None:  # a head the family lacks, num_labels on an LM: exit 2 now, not after minutes
        from perfscale.specs import load_model_spec

        load_model_spec(options.model, task=task, num_labels=num_labels)
    if options.store is not None:
        check_writable(options.store, "--store")
    if save:
        check_writable(save, "--save")  # before minutes of measuring, not after
    if report:
        check_writable(report, "--report")
    from perfscale.report.quiet import captured_stderr

    with captured_stderr(verbose) as capture:
        status, progress = progress_spinner(as_json, capture.terminal)
        if status is not None:
            status.start()
        try:
            result = tune_training(options, progress=progress)
        finally:
            if status is not None:
                status.stop()
    if capture.summary():
        result.notes.append(capture.summary())
    from perfscale.export.tune_winner import add_trainer_snippet, emit_winner

    add_trainer_snippet(result, options)
    if formats:
        result.emitted = emit_winner(result, formats, Path(out or "perfscale-tuned"), options)
    from perfscale.report import tune_tables

    document = result.to_dict()
    saved = save_or_say(result, save, document)
    reported = report_or_say(document, report)
    print_result(document, as_json, lambda console: tune_tables.render(console, document))
    if (save and not saved) or (report and not reported):
        raise typer.Exit(2)  # the result is printed above; only a file is missing


def check_budget(budget_seconds: float | None) -> None:
    """--budget-seconds, shared by the three tune verbs: None (not given) or finite and > 0 (NaN fails too)."""
    if budget_seconds is not None and not 0 < budget_seconds < float("inf"):
        raise InvalidConfigError(f"--budget-seconds must be a finite number of seconds > 0, got {budget_seconds}.")


def save_or_say(result, save: str | None, document: dict) -> str | None:
    """Write --save; if that fails after the search, keep the result: the reason goes into the document
    (`save_error`) and on stderr, so the printed result is still the one document on stdout."""
    from perfscale.errors import PerfscaleError

    if not save:
        return None
    try:
        result.save(save)
    except PerfscaleError as exc:
        document["save_error"] = str(exc)
        typer.echo(f"error: {exc} The result is printed instead.", err=True)
        return None
    return save


def report_or_say(document: dict, report: str | None) -> str | None:
    """Write --report (the HTML report of this result); a failure after the search keeps the result, like --save."""
    from perfscale.errors import PerfscaleError

    if not report:
        return None
    from perfscale.report.html import detect_kind, write_report

    try:
        written = write_report([("this run", detect_kind(document), document)], report)
    except PerfscaleError as exc:
        document["report_error"] = str(exc)
        typer.echo(f"error: {exc} The result is printed instead.", err=True)
        return None
    document["report"] = written.path
    return written.path


def progress_spinner(as_json: bool, terminal=None):
    """A spinner on stderr (or `terminal`, the real stderr while third-party output is captured) for people;
    nothing in --json mode."""
    if as_json:
        return None, (lambda _m: None)
    from rich.console import Console

    status = (Console(file=terminal) if terminal is not None else Console(stderr=True)).status("tune: starting")
    return status, (lambda message: status.update(f"tune: {message}"))


__all__ = ["check_budget", "progress_spinner", "report_or_say", "save_or_say", "tune_training_cli"]
