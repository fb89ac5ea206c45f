"""`perfscale hpo`: hyperparameter search with Optuna over the Trainer (perfscale.hpo.run_hpo).

The verb builds HpoOptions from the flags (a space file and/or per-parameter range flags), runs the
study with a spinner on stderr, writes the best trial as TrainingArguments (and any --emit format), the
study's plots, and prints the result: a Rich table, or one JSON document with --json. Ctrl-C / SIGTERM:
the running trials are failed and re-enqueued, the study as it stands is printed, exit 130 / 143.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from perfscale.cli import knobs
from perfscale.report.emit import emit

# flag -> search-space parameter (perfscale.hpo.space.PARAMS)
RANGE_FLAGS = {
    "lr": "learning_rate", "warmup": "warmup_ratio", "weight_decay": "weight_decay", "scheduler": "lr_scheduler_type",
    "max_grad_norm": "max_grad_norm", "batch": "per_device_train_batch_size", "grad_accum": "gradient_accumulation_steps",
    "precision": "precision", "checkpointing": "checkpointing", "optimizer": "optimizer", "attn": "attn", "lora": "lora",
    "lora_r": "lora_r", "lora_alpha": "lora_alpha",
}
RANGE_HELP = "LOW:HIGH, LOW:HIGH:log, a,b,c (choices) or one value (fixed); replaces that parameter of the space."


def _range(flag: str, what: str):
    return typer.Option(None, f"--{flag.replace('_', '-')}", help=f"{what}: {RANGE_HELP}")


def hpo(
    model: str = typer.Option(None, "--model", "-m", help="The model to fine-tune: perfscale-tiny-llama (default), a catalogue "
                              "name or a local folder (with its tokenizer)."),
    data: str = typer.Option(None, "--data", help="A local .txt (one document per line) or .jsonl file. Default: the sentence corpus perfscale ships."),
    text_field: str = typer.Option("text", "--text-field", help="The text field of each .jsonl line."),
    space: str = typer.Option(None, "--space", help="A YAML or JSON search-space file (docs/hpo.md). Default: learning rate, warm-up, "
                              "weight decay, scheduler, batch x accumulation."),
    lr: str = _range("lr", "learning rate"),
    warmup: str = _range("warmup", "warm-up fraction of the steps"),
    weight_decay: str = _range("weight_decay", "weight decay"),
    scheduler: str = _range("scheduler", "learning-rate scheduler (linear, cosine, constant_with_warmup, ...)"),
    max_grad_norm: str = _range("max_grad_norm", "gradient clipping norm"),
    batch: str = _range("batch", "micro-batch (per_device_train_batch_size)"),
    grad_accum: str = _range("grad_accum", "gradient accumulation steps"),
    precision: str = _range("precision", "perfscale precision knob (fp32, bf16-mixed, fp16-mixed)"),
    checkpointing: str = _range("checkpointing", "activation checkpointing (false,true)"),
    optimizer: str = _range("optimizer", "optimizer (TrainingArguments optim)"),
    attn: str = _range("attn", "attention implementation"),
    lora: str = _range("lora", "train a LoRA adapter (false,true)"),
    lora_r: str = _range("lora_r", "LoRA rank (with --lora)"),
    lora_alpha: str = _range("lora_alpha", "LoRA alpha (with --lora)"),
    trials: int = typer.Option(None, "--trials", help="The study's total of finished trials (complete + pruned), counting those of earlier runs. Default 12."),
    steps: int = typer.Option(None, "--steps", help="Optimizer steps of each trial (its budget). Default 30."),
    eval_steps: int = typer.Option(None, "--eval-steps", help="Evaluate on the held-out split (and report to the pruner) every this many steps. Default 10."),
    seq: int = typer.Option(None, "--seq", help="Tokens per training block. Default 64."),
    eval_fraction: float = typer.Option(None, "--eval-fraction", help="Fraction of the blocks held out for evaluation (at most --max-eval-blocks). Default 0.1."),
    max_eval_blocks: int = typer.Option(None, "--max-eval-blocks", help="Held-out blocks evaluated each time, at most. Default 32."),
    objective: str = typer.Option(None, "--objective", help="loss (default: held-out eval loss) | loss+speed (multi-objective: eval loss and training tokens/s)."),
    sampler: str = typer.Option(None, "--sampler", help="tpe (default) | random | nsga2."),
    pruner: str = typer.Option(None, "--pruner", help="median (default) | hyperband | none: prunes on the intermediate eval losses."),
    storage: str = typer.Option(None, "--storage", help="A SQLite file, any SQLAlchemy URL (postgresql://...), or journal:FILE. "
                                "Default: the user cache's hpo.db. Workers on many machines share one URL."),
    study_name: str = typer.Option(None, "--study-name", help="The study's name in the storage. Default: derived from the model, data, space and budget."),
    resume: bool = typer.Option(False, "--resume", help="Continue (or join) the study to --trials in total; killed trials are failed and retried."),
    workers: int = typer.Option(None, "--workers", help="Trial processes at once on this machine (default: one per physical core, 1 thread each, on CPU; 1 on a GPU)."),
    device_memory_gib: float = typer.Option(None, "--device-memory-gib", help="The memory a trial may use, in GiB (default: this device's)."),
    hardware: str = typer.Option(None, "--hardware", help="The device the trials run on, for the feasibility check (e.g. A100-40GB). Default: this machine."),
    trial_timeout: float = typer.Option(None, "--trial-timeout", help="Seconds before a trial counts as hung and is killed (default 900; 4x the slowest finished trial once one finished)."),
    seed: int = typer.Option(None, "--seed", help="Seed of the sampler, the data split and the model init (default 0)."),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline", help="Run the Trainer defaults as the first trial of a new study (the reference)."),
    threads: int = typer.Option(None, "--threads", help="torch threads per trial (default: the physical cores / --workers)."),
    out: str = typer.Option(None, "--out", help="Folder for the best trial's TrainingArguments, the --emit files and the plots (default ./perfscale-hpo)."),
    emit_: str = typer.Option(None, "--emit", help="Also write the best trial as trainer | accelerate | deepspeed | fsdp | torchrun | all."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write the study's plots (history, importances, parallel coordinates) to study.html in --out."),
    as_json: bool = knobs.JSON,
) -> None:
    """Search hyperparameters with Optuna: each trial fine-tunes with the Trainer in a fresh process; none that cannot fit is run."""
    from perfscale.hpo.space import SearchSpace, load_space, parse_range_flag
    from perfscale.hpo.study import HpoInterrupted, HpoOptions, run_hpo

    given = {"lr": lr, "warmup": warmup, "weight_decay": weight_decay, "scheduler": scheduler, "max_grad_norm": max_grad_norm,
             "batch": batch, "grad_accum": grad_accum, "precision": precision, "checkpointing": checkpointing, "optimizer": optimizer,
             "attn": attn, "lora": lora, "lora_r": lora_r, "lora_alpha": lora_alpha}
    base = load_space(space) if space else SearchSpace.default()
    flags = [parse_range_flag(RANGE_FLAGS[k], v, f"--{k.replace('_', '-')}") for k, v in given.items() if v is not None]
    the_space = base.with_params(flags) if flags else base
    formats: tuple[str, ...] = ()
    if emit_:
        from perfscale.export.emit import parse_formats

        formats = parse_formats(emit_)
    out_dir = Path(out or "perfscale-hpo")
    if out_dir.exists() and not out_dir.is_dir():
        from perfscale.errors import InvalidConfigError

        raise InvalidConfigError(f"--out {out!r} is a file, not a folder: give a folder for the best trial's files and the plots.")
    values = {"model": model, "data": data, "text_field": text_field, "trials": trials, "steps": steps, "eval_steps": eval_steps,
              "seq": seq, "eval_fraction": eval_fraction, "max_eval_blocks": max_eval_blocks, "objective": objective,
              "sampler": sampler, "pruner": pruner, "storage": storage, "study_name": study_name, "workers": workers,
              "device_memory_gib": device_memory_gib, "hardware": hardware, "trial_timeout": trial_timeout, "seed": seed,
              "threads": threads}
    options = HpoOptions(space=the_space, resume=resume, baseline=baseline, plots=str(out_dir / "study.html") if plots else None,
                         **{k: v for k, v in values.items() if v is not None})
    from perfscale.cli.tune_train import progress_spinner
    from perfscale.measure.runner import sigterm_as_interrupt

    status, progress = progress_spinner(as_json)
    code = 0
    if status is not None:
        status.update("hpo: preparing the data and the study")
        status.start()
    try:
        with sigterm_as_interrupt():
            result = run_hpo(options, progress=(lambda m: progress(m.replace("tune:", "hpo:"))) if status else progress)
    except HpoInterrupted as exc:
        result = exc.result
        code = 143 if exc.how == "SIGTERM" else 130
    finally:
        if status is not None:
            status.stop()
    if result.best:
        result.emitted = _write_best(result, options, out_dir, formats)
    document = result.to_dict()
    emit(document, as_json, lambda console: render(console, document))
    if code:
        typer.echo(f"error: interrupted by {result.interrupted}: the running trials were failed and will be retried; "
                   "`perfscale hpo --resume` (same flags) continues the study.", err=True)
        raise typer.Exit(code)


def _write_best(result, options, out_dir: Path, formats: tuple[str, ...]) -> list[str]:
    """best_training_arguments.json (the Trainer's kwargs: perfscale's knobs + the tuned hyperparameters),
    best_trial.py (a snippet) and the --emit files. A failure here keeps the result (noted)."""
    from perfscale.config.run_config import RunConfig
    from perfscale.errors import PerfscaleError
    from perfscale.export.emit import emit_files
    from perfscale.export.trainer import trainer_kwargs, trainer_snippet
    from perfscale.hpo.feasibility import resolve_capacity
    from perfscale.specs import load_model_spec

    best = result.best
    try:
        config = RunConfig.from_dict(best["run_config"])
        _, topology = resolve_capacity(options.device_memory_gib, options.hardware)
        kwargs = trainer_kwargs(config, topology)
        # the tuned hyperparameters that are not perfscale knobs (those come from the RunConfig above)
        hyper = {k: v for k, v in best["training_arguments"].items() if k not in kwargs} | {"max_steps": options.steps}
        kwargs.update(hyper)
        out_dir.mkdir(parents=True, exist_ok=True)
        args_path = out_dir / "best_training_arguments.json"
        args_path.write_text(json.dumps(kwargs, indent=2) + "\n")
        spec = load_model_spec(options.model)
        model_id = spec.hub_id or options.model
        snippet = trainer_snippet(config, topology, model_id)
        lines = "".join(f"    {k}={v!r},\n" for k, v in hyper.items())
        snippet = snippet.replace("args = TrainingArguments(\n", "args = TrainingArguments(\n" + lines, 1)
        snippet_path = out_dir / "best_trial.py"
        snippet_path.write_text(snippet)
        written = [str(args_path), str(snippet_path)]
        if formats:
            written += [f.path for f in emit_files(config, topology, out_dir, formats, model_id)]
        best["trainer_kwargs"] = kwargs
        return written
    except (OSError, ValueError, PerfscaleError) as exc:  # the study is done and stored: keep the result, say why
        result.notes.append(f"the best trial's files were not written to {out_dir}: {exc} (the study is in {result.storage})")
        return []


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def render(console, doc: dict[str, Any]) -> None:
    from rich.table import Table

    counts = doc["counts"]
    console.print(f"[bold]Study {doc['study_name']}[/bold] in {doc['storage']}: {doc['finished']} of {doc['requested_trials']} trials finished "
                  f"({counts.get('new_this_run', 0)} started by this run)")
    parts = [f"{counts[k]} {k}" for k in ("complete", "pruned", "infeasible", "oom", "timeout", "killed", "failed", "dead-worker",
                                           "interrupted", "retried") if counts.get(k)]
    console.print("  " + ", ".join(parts))
    space = doc["space"]
    table = Table(title="trials (held-out eval loss" + (", tokens/s" if len(doc["directions"]) > 1 else "") + ")")
    from perfscale.hpo.space import PARAMS

    for col in ("#", "status", "eval loss", *(PARAMS[k]["short"] for k in space), "GiB", "s"):
        table.add_column(col, overflow="fold")
    reasons = []
    best_n = doc["best"]["number"] if doc["best"] else None
    for t in doc["trials"]:
        loss = _fmt(t["values"][0]) if t["values"] else ""
        name = f"{t['number']}" + ("*" if t["number"] == best_n else "") + (" (base)" if t["baseline"] else "") + (
            f" (retry of {t['retry_of']})" if t["retry_of"] is not None else "")
        gib = f"{t['needed_bytes'] / 2**30:.2f}" if t["needed_bytes"] else ""
        table.add_row(name, t["status"], loss, *[_fmt(t["params"].get(k, "")) for k in space], gib,
                      f"{t['wall_s']:.0f}" if t["wall_s"] else "")
        if t["reason"]:
            reasons.append(f"  trial {t['number']} ({t['status']}): {t['reason'][:300]}")
    console.print(table)
    for line in reasons:
        console.print(line, markup=False, highlight=False)
    if doc["best"]:
        b = doc["best"]
        console.print(f"[bold]best[/bold]: trial {b['number']}, eval loss {b['values'][0]:.4f}"
                      + (f", {b['values'][1]:.0f} tokens/s" if len(b["values"]) > 1 else ""))
        console.print("  TrainingArguments: " + ", ".join(f"{k}={_fmt(v)}" for k, v in b["training_arguments"].items()))
    if doc["baseline"] and doc["baseline"].get("eval_loss") is not None and doc["improvement"] is not None:
        console.print(f"  vs the Trainer defaults (trial {doc['baseline']['number']}): eval loss {doc['baseline']['eval_loss']:.4f}, "
                      f"{doc['improvement']:.0%} lower")
    if len(doc["directions"]) > 1 and doc["pareto"]:
        console.print(f"  Pareto front: trials {', '.join(str(p['number']) for p in doc['pareto'])}")
    for path in doc["emitted"]:
        console.print(f"  wrote {path}")
    if doc["plots"]:
        console.print(f"  plots: {doc['plots']}")
    for note in doc["notes"]:
        console.print(f"  note: {note}")
