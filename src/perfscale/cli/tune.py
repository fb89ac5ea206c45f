"""`perfscale tune` (training, the README's main job), `perfscale tune encoder` and `perfscale tune decoder`.

One verb per mode, each with only its own flags: training flags on `tune` itself (cli/tune_train.py
turns them into a tune), the accuracy-gated inference searches as subcommands.
"""

from __future__ import annotations

import typer

from perfscale.cli import knobs, task_options
from perfscale.errors import InvalidConfigError
from perfscale.report.emit import emit
from perfscale.specs.workload import DEFAULT_SEQ, MAX_SIZE

app = typer.Typer(
    help="Find the fastest configuration and prove it against the defaults: training by default; "
    "`tune encoder` / `tune decoder` for inference on this CPU (outputs gated).",
    invoke_without_command=True,
)

QUICK = typer.Option(False, "--quick", help="A small search, one measurement process per finalist (seconds to a minute).")
BUDGET = typer.Option(None, "--budget-seconds", help="Stop trying new variants after this many seconds (the final measurement still runs).")
COMPILE = typer.Option(None, "--compile/--no-compile", help="Include torch.compile variants (tune: when the budget allows; "
                       "tune encoder/decoder: only when asked for, its first compile takes ~30+ s here).")
SAVE = typer.Option(None, "--save", help="Write the result to this JSON file (for perfscale.apply and `tune --resume`).")
REPORT = typer.Option(None, "--report", help="Also write the result as a self-contained HTML report with plots (opens offline).")
VERBOSE = typer.Option(False, "--verbose", help="Show third-party warnings and progress bars as they come (by default "
                       "they are captured and summarised in one note).")
INFER_MOVED = typer.Option(False, "--infer", hidden=True, help="Moved: use `perfscale tune encoder` or `perfscale tune decoder`.")


@app.callback()
def tune(
    ctx: typer.Context,
    model: str = typer.Option(None, "--model", "-m", help="The model to train: perfscale-tiny-llama (default) or any LM "
                              "(catalogue name, local folder, hub id)."),
    quick: bool = QUICK,
    budget_seconds: float = BUDGET,
    repeats: int = typer.Option(None, "--repeats", help="Fresh processes (each a paired run: both configurations, alternating steps) in the final comparison (default 3; 1 with --quick)."),
    compile_: bool = COMPILE,
    processes: bool = typer.Option(None, "--processes/--no-processes", help="On this CPU, also measure processes x threads "
                                   "(DDP ranks under torchrun, e.g. 2x1 vs 1x2); default: only with --budget-seconds 300 or more."),
    task: str = task_options.TASK,
    num_labels: int = task_options.NUM_LABELS,
    save: str = SAVE,
    as_json: bool = knobs.JSON,
    seq: int = typer.Option(None, "--seq", help=f"Sequence length in tokens. Default: {DEFAULT_SEQ}."),
    global_batch: int = typer.Option(None, "--global-batch", help="Sequences per optimizer step, kept fixed while micro-batch x accumulation varies (default 8)."),
    hardware: str = typer.Option(None, "--hardware", help="Plan for a topology you do not have, e.g. 8xH100-80GB (estimated ranking, not measured). Default: this machine, measured."),
    allow_lora: bool = typer.Option(False, "--allow-lora", help="LoRA may be chosen (it trains an adapter, not the whole model)."),
    allow_optimizer_change: bool = knobs.ALLOW_OPTIMIZER_CHANGE,
    store: str = typer.Option(None, "--store", help="SQLite journal of the trials (default: the bench store)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the last interrupted tune of this exact setup; finished trials are not re-measured."),
    emit_: str = typer.Option(None, "--emit", help="Write the winner as trainer | accelerate | deepspeed | fsdp | torchrun | all (comma list)."),
    out: str = typer.Option(None, "--out", help="Folder for --emit (default ./perfscale-tuned)."),
    trace_top: int = typer.Option(None, "--trace-top", help="Candidates whose fit trace confirms (default 1, plus the baseline and the winner)."),
    infer: bool = INFER_MOVED,
    verbose: bool = VERBOSE,
    report: str = REPORT,
) -> None:
    """Tune training of a model against Trainer defaults (measured here, or estimated with --hardware)."""
    if ctx.invoked_subcommand is not None:
        return
    if infer:
        raise InvalidConfigError("`perfscale tune --infer` is now two verbs: `perfscale tune encoder` (sentence encoders, "
                                 "e.g. --model minilm) and `perfscale tune decoder` (generation with a causal LM).")
    from perfscale.cli.tune_train import tune_training_cli

    tune_training_cli(
        model=model, quick=quick, budget_seconds=budget_seconds, repeats=repeats, compile_=compile_, save=save, as_json=as_json,
        seq=seq, global_batch=global_batch, hardware=hardware, allow_lora=allow_lora, allow_optimizer_change=allow_optimizer_change,
        store=store, resume=resume, emit=emit_, out=out, trace_top=trace_top, verbose=verbose, report=report,
        processes=processes, task=task, num_labels=num_labels,
    )


@app.command("encoder")
def encoder(
    model: str = typer.Option("minilm", "--model", "-m", help="'minilm' (shipped offline) or a local sentence-encoder folder."),
    quick: bool = QUICK,
    budget_seconds: float = BUDGET,
    min_mean_cosine: float = typer.Option(0.99, "--min-mean-cosine", help="Gate: mean cosine vs fp32 eager over the corpus."),
    min_min_cosine: float = typer.Option(0.97, "--min-min-cosine", help="Gate: lowest cosine of any sentence vs fp32 eager."),
    backends: str = typer.Option(None, "--backends", help="Runtimes to search, comma-separated: eager, compile, onnxruntime, "
                                 "openvino. Default: every one installed (absent ones are skipped with a note)."),
    objective: str = typer.Option("throughput", "--objective", help="What to pick the winner for: throughput (sentences/s "
                                  "in batches) or latency (p50 of single requests, what an online service sees)."),
    repeats: int = typer.Option(None, "--repeats", help="Fresh processes per finalist in the final interleaved measurement (default 2; 1 with --quick)."),
    compile_: bool = COMPILE,
    cache_dir: str = typer.Option(None, "--cache-dir", help="Where exported ONNX files go (default $XDG_CACHE_HOME/perfscale)."),
    save: str = SAVE,
    as_json: bool = knobs.JSON,
    verbose: bool = VERBOSE,
    report: str = REPORT,
) -> None:
    """The fastest sentence encoder on this CPU whose embeddings pass the accuracy gate."""
    from perfscale.report import infer_tables
    from perfscale.tune.infer import tune_encoder

    _check_common(budget_seconds, repeats, save, report)
    for flag, value in (("--min-mean-cosine", min_mean_cosine), ("--min-min-cosine", min_min_cosine)):
        if not -1.0 <= value <= 1.0:  # NaN fails too
            raise InvalidConfigError(f"{flag} is a cosine similarity: give a number in [-1, 1], got {value}.")
    from perfscale.errors import choice_error
    from perfscale.runtimes.encoder import BACKENDS, require_backend
    from perfscale.tune.infer import OBJECTIVES

    if objective not in OBJECTIVES:
        raise choice_error("--objective", objective, OBJECTIVES, "throughput: sentences/s in batches; latency: one request at a time.")
    chosen = None if backends is None else tuple(b.strip() for b in backends.split(",") if b.strip())
    if chosen is not None:  # before minutes of searching: an unknown or absent backend is the user's to fix
        bad = [b for b in chosen if b not in BACKENDS]
        if bad or not chosen:
            raise InvalidConfigError(f"--backends: unknown backend(s) {', '.join(map(repr, bad)) or '(none given)'}; "
                                     f"choose from {', '.join(BACKENDS)} (comma-separated).")
        for b in chosen:
            require_backend(b)
    _run(lambda progress: tune_encoder(model, quick=quick, budget_seconds=budget_seconds, min_mean_cosine=min_mean_cosine,
                                       min_min_cosine=min_min_cosine, backends=chosen, include_compile=compile_,
                                       repeats=repeats, cache_dir=cache_dir, objective=objective, progress=progress),
         infer_tables.render_encoder, save, as_json, verbose, report)


@app.command("decoder")
def decoder(
    model: str = typer.Option("perfscale-tiny-llama", "--model", "-m", help="perfscale-tiny-llama, a small catalogue LM or a local causal-LM folder."),
    quick: bool = QUICK,
    prompt_lengths: str = typer.Option(None, "--prompt-lengths", help="Comma-separated prompt lengths in tokens (a server's spread)."),
    new_tokens: int = typer.Option(16, "--new-tokens", help="Tokens to generate per prompt."),
    batch: int = typer.Option(4, "--batch", help="Batch size to try besides 1."),
    repeats: int = typer.Option(None, "--repeats", help="Interleaved rounds (each runs every variant once) after one untimed pass each."),
    compile_: bool = COMPILE,
    quant_backends: str = typer.Option(None, "--quant-backends", help="int8 weight-only backends to try: torchao, torch "
                                       "(comma list) or 'none'. Default: every one installed (the others skipped with a note)."),
    save: str = SAVE,
    as_json: bool = knobs.JSON,
    verbose: bool = VERBOSE,
    report: str = REPORT,
) -> None:
    """The fastest generation settings (KV cache, compile, batch, prompt buckets, int8 weights) whose greedy tokens match eager."""
    from perfscale.report import infer_tables
    from perfscale.tune.infer_decoder import tune_decoder

    _check_common(None, repeats, save, report)
    for flag, value in (("--new-tokens", new_tokens), ("--batch", batch)):
        if not 1 <= value <= MAX_SIZE:
            raise InvalidConfigError(f"{flag} must be an integer from 1 to {MAX_SIZE:,}, got {value}.")
    lengths = _split_ints(prompt_lengths, "--prompt-lengths")
    from perfscale.runtimes.decoder_quant import parse_backends

    quant = parse_backends(quant_backends, "--quant-backends")
    _run(lambda progress: tune_decoder(model, prompt_lengths=lengths, new_tokens=new_tokens, batch=batch, quick=quick,
                                       include_compile=compile_, passes=repeats, quant_backends=quant, progress=progress),
         infer_tables.render_decoder, save, as_json, verbose, report)


def _check_common(budget_seconds: float | None, repeats: int | None, save: str | None, report: str | None = None) -> None:
    from perfscale.cli.tune_train import check_budget

    check_budget(budget_seconds)
    from perfscale.measure.compare import MAX_REPEATS

    if repeats is not None and not 1 <= repeats <= MAX_REPEATS:
        raise InvalidConfigError(f"--repeats must be an integer from 1 to {MAX_REPEATS}, got {repeats}.")
    if save:
        from perfscale.user_files import check_writable

        check_writable(save, "--save")  # before minutes of measuring, not after
    if report:
        from perfscale.user_files import check_writable

        check_writable(report, "--report")


def _split_ints(text: str | None, what: str) -> list[int] | None:
    if text is None:
        return None
    try:
        values = [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError as exc:
        raise InvalidConfigError(f"{what} must be comma-separated integers, e.g. 12,40,90; got {text!r}.") from exc
    if not values:
        raise InvalidConfigError(f"{what} is empty: give comma-separated prompt lengths, e.g. 12,40,90 (or omit it).")
    bad = [v for v in values if not 1 <= v <= MAX_SIZE]
    if bad:
        raise InvalidConfigError(f"{what}: every length must be from 1 to {MAX_SIZE:,} tokens, got {bad[0]}.")
    return values


def _run(search, render, save: str | None, as_json: bool, verbose: bool = False, report: str | None = None) -> None:
    """Run a search with a spinner on stderr (nothing in --json mode), third-party output captured into one
    note (report/quiet.py; --verbose shows it), save it, print it."""
    from perfscale.cli.tune_train import progress_spinner, report_or_say, save_or_say
    from perfscale.report.quiet import captured_stderr

    with captured_stderr(verbose) as capture:
        status, progress = progress_spinner(as_json, capture.terminal)
        if status is not None:
            status.start()
        try:
            result = search(progress)
        finally:
            if status is not None:
                status.stop()
    if capture.summary():
        result.notes.append(capture.summary())
    document = result.to_dict()
    saved = save_or_say(result, save, document)
    reported = report_or_say(document, report)
    emit(document, as_json, lambda console: render(console, document, saved))
    if (save and not saved) or (report and not reported):
        raise typer.Exit(2)  # the result is printed above; only a file is missing
