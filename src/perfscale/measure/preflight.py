"""Everything about a BenchConfig that needs the model, checked in the parent before any worker starts.

BenchConfig validates its own values when it is built (that runs in the worker too, so it stays
cheap); what needs the model's config, or the module names of the model the worker will build, is
checked here once per invocation: the model itself (the same errors as `perfscale plan`), the
scenario against the model's kind, LoRA targets against the model's modules, sequence lengths
against learned position tables (specs/positions.py, as plan), and input sizes against this
machine's memory. A user's mistake
is then a clean error before anything runs, not a stored "failed" row with a worker's traceback.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from typing import Any

from perfscale.errors import InvalidConfigError, UnsupportedModelError
from perfscale.measure.bench_config import BenchConfig

_TOKEN_ID_BYTES = 8  # the token ids the scenarios feed are int64


_PASSED: dict[str, list[str]] = {}  # fingerprint -> notes, for configurations checked in this process


def preflight(configs: BenchConfig | Iterable[BenchConfig]) -> dict[str, list[str]]:
    """Raise the first PerfscaleError any configuration would hit in its worker, before any runs.

    Returns notes per configuration fingerprint (e.g. a rotary model run past its trained length),
    for the results to carry."""
    configs = [configs] if isinstance(configs, BenchConfig) else list(configs)
    cache: dict[tuple[str, str, str], Any] = {}
    notes: dict[str, list[str]] = {}
    for config in configs:
        key = config.fingerprint()
        if key not in _PASSED:
            if config.scenario == "selftest":
                found: list[str] = []
            elif config.scenario == "encode":
                found = _check_encoder(config)
            elif config.scenario == "load":
                from perfscale.measure.scenarios.load import preflight_notes

                found = preflight_notes(config)
            else:
                found = _check_language_model(config, cache)
            if config.distributed:
                found += _check_distributed(config)
            _PASSED[key] = found
        notes[key] = list(_PASSED[key])
    return notes


# ----- train / generate -----
def _check_language_model(config: BenchConfig, cache: dict) -> list[str]:
    from perfscale.measure.scenarios.common import lm_auto_class
    from perfscale.specs import load_model_spec
    from perfscale.specs.positions import check_workload_length

    run = config.run
    spec = load_model_spec(config.model)  # unknown model, bad config.json: the same error as plan
    auto = lm_auto_class(spec, config.scenario)
    _check_head_exists(spec, auto, config.scenario)
    if run.quantization != "none":
        raise UnsupportedModelError(
            f"bench measures full-precision bases: quantization {run.quantization} (QLoRA) needs bitsandbytes on CUDA "
            "and is not measurable here; use quantization none, or `perfscale plan`/`trace` for its memory."
        )
    if "8bit" in str(run.optimizer) and importlib.util.find_spec("bitsandbytes") is None:
        raise UnsupportedModelError(
            f"optimizer {run.optimizer} needs bitsandbytes (pip install bitsandbytes; CUDA only): use adamw."
        )
    wl = run.workload
    if config.scenario == "train":
        tokens = max(4, wl.grad_accum) * wl.batch * wl.seq  # train.py draws max(4, grad_accum) batches up front
    else:
        tokens = wl.batch * (wl.prompt + wl.new_tokens)
    _check_memory(tokens, config)
    note = check_workload_length(spec, wl)  # refuses past a learned position table; a note past a rotary one
    if run.lora:
        _check_lora_targets(spec, run, _meta_model(spec, auto, cache))
    return [note] if note else []


def _check_head_exists(spec, auto: str, scenario: str) -> None:
    """transformers has a class of that kind for this model type (else the worker's from_config fails)."""
    from transformers.models.auto import modeling_auto

    from perfscale.specs.heads import TASK_MAPPINGS

    kinds = {"AutoModelForCausalLM": "causal-lm", "AutoModelForMaskedLM": "masked-lm",
             "AutoModelForSequenceClassification": "sequence-classification",
             "AutoModelForTokenClassification": "token-classification",
             "AutoModelForQuestionAnswering": "question-answering", "AutoModelForMultipleChoice": "multiple-choice"}
    mapping = getattr(modeling_auto, TASK_MAPPINGS[kinds[auto]])
    if spec.model_type not in mapping:
        kind = {"AutoModelForCausalLM": "causal language model", "AutoModelForMaskedLM": "masked language model"}.get(
            auto, f"{kinds[auto]} head")
        raise UnsupportedModelError(
            f"{spec.name} ({spec.model_type}) has no {kind} class in transformers, which the {scenario} scenario builds. "
            "Use a decoder model (e.g. perfscale-tiny-llama), or for train an encoder with a masked-LM head (e.g. bert-base)."
        )


def _meta_model(spec, auto: str, cache: dict):
    """The model the worker builds (same Auto class and config), on the meta device: no memory, ~1 s."""
    key = (spec.location, spec.name, auto)
    if key not in cache:
        import torch
        import transformers

        with torch.device("meta"):
            cache[key] = getattr(transformers, auto).from_config(spec.config_object())
    return cache[key]


def _linear_names(model) -> list[str]:
    """Leaf names of the layers peft's LoRA wraps (torch Linear and transformers' Conv1D, as in GPT-2)."""
    import torch

    try:
        from transformers.pytorch_utils import Conv1D
        kinds: tuple = (torch.nn.Linear, Conv1D)
    except ImportError:  # pragma: no cover
        kinds = (torch.nn.Linear,)
    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if name and isinstance(m, kinds)})


def _check_lora_targets(spec, run, model) -> None:
    """peft matches a target name against the end of each module's dotted name; one that matches
    nothing makes get_peft_model fail in the worker. No targets: peft's defaults for the family."""
    targets = [t for t in run.lora_targets if t != "all-linear"]
    if not run.lora_targets:
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

        if spec.model_type not in DEFAULTS:
            raise InvalidConfigError(
                f"peft has no default LoRA targets for {spec.name} ({spec.model_type}): name them with --lora-targets, "
                f"from: all-linear, {', '.join(_linear_names(model))}."
            )
        return
    names = [n for n, _ in model.named_modules() if n]
    unknown = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if unknown:
        raise InvalidConfigError(
            f"LoRA targets {', '.join(unknown)} match no linear layer of {spec.name} ({spec.model_type}). "
            f"Choose from: all-linear, {', '.join(_linear_names(model))}."
        )


def _check_memory(tokens: int, config: BenchConfig) -> None:
    """Refuse sizes whose token ids alone exceed this machine's memory: those can only fail."""
    try:
        import psutil

        total = psutil.virtual_memory().total
    except Exception:  # noqa: BLE001 - without psutil the worker's OOM result has to do
        return
    need = tokens * _TOKEN_ID_BYTES
    if need > total:
        wl = config.run.workload
        sizes = ", ".join(f"{k} {v}" for k, v in wl.to_dict().items() if k != "mode")
        raise InvalidConfigError(
            f"{sizes}: the input token ids alone ({need / 2**30:,.1f} GiB) exceed this machine's memory "
            f"({total / 2**30:,.1f} GiB). Use a smaller --batch or sequence length."
        )


# ----- several processes -----
# What one rank costs before any model: an interpreter with torch and transformers imported, and the
# process group (measured here: 560-600 MB RSS per rank of the tiny llama; benchmarks/LOG.md).
RANK_BASE_BYTES = 400 * 2**20


def _check_distributed(config: BenchConfig) -> list[str]:
    """The backend exists, the ranks can start on this machine (memory), and a note when ranks share cores."""
    import torch.distributed as dist

    from perfscale.measure.distributed import backend_for
    from perfscale.measure.multiprocess import cores, threads_per_rank
    from perfscale.measure.scenarios.common import resolve_device

    device = resolve_device(config.device)
    backend = backend_for(device)
    available = dist.is_available() and {"gloo": dist.is_gloo_available, "nccl": dist.is_nccl_available,
                                         "ccl": lambda: True}[backend]()  # ccl: chosen only where its bindings exist
    if not available:
        raise UnsupportedModelError(
            f"--strategy {config.strategy} on {device} needs the {backend} backend of torch.distributed, which this torch build "
            f"lacks: install a torch build with {backend}, or use --device {'cpu' if device == 'cuda' else 'cuda'}."
        )
    world = config.world_size
    try:
        import psutil

        free = psutil.virtual_memory().available
    except Exception:  # noqa: BLE001 - without psutil a rank that cannot start is a failed result
        free = None
    if free is not None and world * RANK_BASE_BYTES > free:
        raise InvalidConfigError(
            f"nproc {config.nproc} x nnodes {config.nnodes} = {world} ranks need at least {world * RANK_BASE_BYTES / 2**30:.1f} GiB "
            f"(about {RANK_BASE_BYTES / 2**20:.0f} MiB each before the model) and {free / 2**30:.1f} GiB are free: "
            f"use at most --nproc {max(1, int(free // RANK_BASE_BYTES) // config.nnodes)}."
        )
    notes = []
    if device == "cpu" and world * threads_per_rank(config) > cores():
        notes.append(
            f"{world} ranks x {threads_per_rank(config)} thread(s) on {cores()} cores: the ranks take turns on the cores, so "
            "the step time includes waiting for one (fewer ranks or --threads 1 avoid that)"
        )
    return notes


# ----- encode -----
_DECODER_SUFFIXES = ("ForCausalLM", "LMHeadModel")


def _check_encoder(config: BenchConfig) -> list[str]:
    """The encoder folder must load (config, tokenizer, weights); a decoder-only model is refused by name."""
    import json
    from pathlib import Path

    from perfscale.errors import PerfscaleError
    from perfscale.runtimes.source import resolve_encoder

    _check_memory(config.run.workload.batch * config.run.workload.prompt, config)
    try:
        resolve_encoder(config.model)
    except PerfscaleError:
        spec = _catalogue_spec(config.model)
        if spec is not None and spec.architecture.endswith(_DECODER_SUFFIXES):
            raise _decoder_for_encode(config.model, spec.architecture) from None
        raise
    config_file = Path(config.model).expanduser() / "config.json"
    if config_file.is_file():
        archs = json.loads(config_file.read_text()).get("architectures") or [""]
        if str(archs[0]).endswith(_DECODER_SUFFIXES):
            raise _decoder_for_encode(config.model, archs[0])
    return []


def _catalogue_spec(model: str):
    """The catalogue's spec of a name (never the hub: this only improves an error message), or None."""
    from perfscale.errors import PerfscaleError
    from perfscale.specs import catalog, load_model_spec

    entry = catalog.find_model(model) if isinstance(model, str) else None
    if entry is None:
        return None
    try:
        return load_model_spec(entry["name"])
    except PerfscaleError:
        return None


def _decoder_for_encode(model: str, arch: str) -> UnsupportedModelError:
    return UnsupportedModelError(
        f"{model} ({arch}) is a decoder-only language model; the encode scenario measures sentence encoders "
        "(BERT, MiniLM, MPNet, ...): use --model minilm or a local encoder folder, or --scenario generate/train for this model."
    )


__all__ = ["preflight"]
