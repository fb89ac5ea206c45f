"""`perfscale tune --infer`: the fastest accuracy-gated way to run a model on this CPU.

Plain `perfscale tune` (training) is issue 6: `_tune_training` is the place it plugs in.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from perfscale.cli import knobs
from perfscale.errors import InvalidConfigError
from perfscale.report.emit import emit

_DECODER_ARCH_SUFFIXES = ("ForCausalLM", "LMHeadModel")
ENCODER_GATE = {"min_mean_cosine": 0.99, "min_min_cosine": 0.97}
ENCODER_BACKENDS = "eager,compile,onnxruntime"


def model_kind(model: str) -> str:
    """encoder | decoder: local folders by their config's architectures, catalogue names are LMs except minilm."""
    from perfscale.runtimes.source import _MINILM_NAMES

    if model.lower() in _MINILM_NAMES:
        return "encoder"
    path = Path(model).expanduser()
    config = path / "config.json" if path.is_dir() else None
    if config is not None and config.is_file():
        try:
            arch = json.loads(config.read_text()).get("architectures") or []
        except (OSError, json.JSONDecodeError):
            arch = []
        return "decoder" if any(str(a).endswith(_DECODER_ARCH_SUFFIXES) for a in arch) else "encoder"
    return "decoder" if not path.exists() else "encoder"


def _split_ints(text: str | None, what: str) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError as exc:
        raise InvalidConfigError(f"{what} must be comma-separated integers, e.g. 12,40,90; got {text!r}.") from exc


def _progress(as_json: bool):
    """A spinner on stderr for people; nothing in --json mode."""
    if as_json:
        return None, (lambda _m: None)
    from rich.console import Console

    status = Console(stderr=True).status("tuning ...")
    return status, (lambda message: status.update(f"tune: {message}"))


def _tune_training(**flags) -> None:
    """Training (issue 6): perfscale.cli.tune_train."""
    from perfscale.cli.tune_train import tune_training_cli

    tune_training_cli(**flags)


def tune(
    infer: bool = knobs.INFER,
    model: str = typer.Option(None, "--model", "-m", help="Encoder: 'minilm' or a local encoder folder. Decoder: perfscale-tiny-llama, a small catalogue LM or a local causal-LM folder. Default: minilm (--infer); training: perfscale-tiny-llama or any LM."),
    quick: bool = typer.Option(False, "--quick", help="A small search, one measurement process per finalist (seconds to a minute)."),
    budget_seconds: float = typer.Option(None, "--budget-seconds", help="Stop trying new variants after this many seconds (the final measurement still runs)."),
    min_mean_cosine: float = typer.Option(None, "--min-mean-cosine", help=f"Encoder gate: mean cosine vs fp32 eager over the corpus (default {ENCODER_GATE['min_mean_cosine']})."),
    min_min_cosine: float = typer.Option(None, "--min-min-cosine", help=f"Encoder gate: lowest cosine of any sentence vs fp32 eager (default {ENCODER_GATE['min_min_cosine']})."),
    backends: str = typer.Option(None, "--backends", help=f"Encoder runtimes to search, comma-separated (default {ENCODER_BACKENDS})."),
    repeats: int = typer.Option(None, "--repeats", help="Fresh processes per finalist in the final interleaved measurement (default 3; 1 with --quick)."),
    prompt_lengths: str = typer.Option(None, "--prompt-lengths", help="Decoder: comma-separated prompt lengths in tokens (a server's spread)."),
    new_tokens: int = typer.Option(None, "--new-tokens", help="Decoder: tokens to generate per prompt (default 16)."),
    batch: int = typer.Option(None, "--batch", help="Decoder: batch size to try besides 1 (default 4)."),
    compile_: bool = typer.Option(None, "--compile/--no-compile", help="Include torch.compile variants (default: yes, no with --quick)."),
    cache_dir: str = typer.Option(None, "--cache-dir", help="Where exported ONNX files go (default $XDG_CACHE_HOME/perfscale)."),
    save: str = typer.Option(None, "--save", help="Write the result to this JSON file (for perfscale.apply)."),
    as_json: bool = knobs.JSON,
    seq: int = typer.Option(None, "--seq", help="Training: sequence length in tokens (default 64)."),
    global_batch: int = typer.Option(None, "--global-batch", help="Training: sequences per optimizer step, kept fixed while micro-batch x accumulation varies (default 8)."),
    hardware: str = typer.Option(None, "--hardware", help="Training: plan for a topology you do not have, e.g. 8xH100-80GB (estimated ranking, not measured). Default: this machine, measured."),
    allow_lora: bool = typer.Option(False, "--allow-lora", help="Training: LoRA may be chosen (it trains an adapter, not the whole model)."),
    allow_optimizer_change: bool = typer.Option(False, "--allow-optimizer-change", help="Training: other optimizer algorithms (SGD, Adafactor) besides AdamW's implementations."),
    store: str = typer.Option(None, "--store", help="Training: SQLite journal of the trials (default: the bench store)."),
    resume: bool = typer.Option(False, "--resume", help="Training: continue the last interrupted tune of this exact setup; finished trials are not re-measured."),
    emit_: str = typer.Option(None, "--emit", help="Training: write the winner as trainer | accelerate | deepspeed | fsdp | torchrun | all (comma list)."),
    out: str = typer.Option(None, "--out", help="Training: folder for --emit (default ./perfscale-tuned)."),
    trace_top: int = typer.Option(None, "--trace-top", help="Training: candidates whose fit trace confirms (default 1, plus the baseline and the winner)."),
) -> None:
    """Find the fastest configuration: training by default (vs Trainer defaults), `--infer` for inference (outputs gated)."""
    if not infer:
        _tune_training(
            model=model, quick=quick, budget_seconds=budget_seconds, repeats=repeats, compile_=compile_, save=save, as_json=as_json,
            seq=seq, global_batch=global_batch, hardware=hardware, allow_lora=allow_lora, allow_optimizer_change=allow_optimizer_change,
            store=store, resume=resume, emit=emit_, out=out, trace_top=trace_top, prompt_lengths=prompt_lengths, new_tokens=new_tokens,
            batch=batch, cache_dir=cache_dir, min_mean_cosine=min_mean_cosine, min_min_cosine=min_min_cosine, backends=backends,
        )
        return
    from perfscale.cli.tune_train import reject_training_flags

    reject_training_flags(seq=seq, global_batch=global_batch, hardware=hardware, allow_lora=allow_lora, allow_optimizer_change=allow_optimizer_change,
                          store=store, resume=resume, emit=emit_, out=out, trace_top=trace_top)
    from perfscale.report import infer_tables

    model = "minilm" if model is None else model
    gate = {"min_mean_cosine": ENCODER_GATE["min_mean_cosine"] if min_mean_cosine is None else min_mean_cosine,
            "min_min_cosine": ENCODER_GATE["min_min_cosine"] if min_min_cosine is None else min_min_cosine}
    for name, value in gate.items():
        if not -1.0 <= value <= 1.0:  # NaN fails too
            raise InvalidConfigError(f"--{name.replace('_', '-')} is a cosine similarity: give a number in [-1, 1], got {value}.")
    for name, value in (("--new-tokens", new_tokens), ("--batch", batch), ("--repeats", repeats)):
        if value is not None and not 1 <= value <= 2**24:
            raise InvalidConfigError(f"{name} must be an integer from 1 to {2**24:,}, got {value}.")
    if budget_seconds is not None and not 0 < budget_seconds < float("inf"):
        raise InvalidConfigError(f"--budget-seconds must be a finite number of seconds > 0, got {budget_seconds}.")
    if save:
        from perfscale.user_files import check_writable

        check_writable(save, "--save")
    kind = model_kind(model)
    status, progress = _progress(as_json)
    if status is not None:
        status.start()
    try:
        if kind == "encoder":
            from perfscale.tune.infer import tune_encoder

            result = tune_encoder(
                model, quick=quick, budget_seconds=budget_seconds, **gate,
                backends=tuple(b.strip() for b in (backends or ENCODER_BACKENDS).split(",") if b.strip()), include_compile=compile_, repeats=repeats,
                cache_dir=cache_dir, progress=progress,
            )
            render = infer_tables.render_encoder
        else:
            from perfscale.tune.infer_decoder import tune_decoder

            result = tune_decoder(
                model, prompt_lengths=_split_ints(prompt_lengths, "--prompt-lengths"), new_tokens=16 if new_tokens is None else new_tokens,
                batch=4 if batch is None else batch, quick=quick, include_compile=compile_, passes=repeats, progress=progress,
            )
            render = infer_tables.render_decoder
    finally:
        if status is not None:
            status.stop()
    if save:
        result.save(save)
    document = result.to_dict()
    emit(document, as_json, lambda console: render(console, document, save))
