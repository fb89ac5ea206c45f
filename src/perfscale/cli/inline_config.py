"""The compact command-line syntax of `perfscale compare`: `key=value` pairs joined by commas, applied
on top of the shared flags' BenchConfig (or a JSON file named instead). CLI code: the library's
configuration is measure.bench_config.BenchConfig; this only reads what a person types.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from perfscale.config.run_config import INT_RANGES, KNOB_DEFAULTS, KNOB_FIELDS, RunConfig, parse_targets
from perfscale.cli.measure_flags import mixed_for
from perfscale.errors import InvalidConfigError, closest
from perfscale.measure.bench_config import DEFAULT_MODELS, DEFAULT_WORKLOADS, BenchConfig, load_config_file, split_backend
from perfscale.specs.workload import InferWorkload, TrainWorkload


# ----- the inline syntax of `perfscale compare` -----
def _run_key_type(name: str) -> type:
    default = KNOB_DEFAULTS[name]
    return bool if isinstance(default, bool) else int if name in INT_RANGES or isinstance(default, int) else str


INLINE_KEYS = {
    # key: (field path, type); every RunConfig knob under its own name (lora_targets joins modules with '+')
    "scenario": ("scenario", str), "model": ("model", str), "backend": ("backend", str), "device": ("device", str),
    "threads": ("run.torch_num_threads", int), "workers": ("run.dataloader_num_workers", int),
    "pin_memory": ("run.dataloader_pin_memory", bool),
    "quant": ("encoder_quantization", str), "sentences": ("sentences", int), "seed": ("seed", int), "label": ("label", str),
    "batch": ("workload.batch", int), "seq": ("workload.seq", int), "grad_accum": ("workload.grad_accum", int),
    "prompt": ("workload.prompt", int), "new_tokens": ("workload.new_tokens", int),
    "nproc": ("nproc", int), "nnodes": ("nnodes", int), "strategy": ("strategy", str),
    "load": ("extra.load", str),
    **{name: (f"run.{name}", _run_key_type(name)) for name in KNOB_FIELDS},
}
# Keys that were BenchConfig's FSDP2 knobs until they became RunConfig's (issue 13; fsdp_reshard= is the
# knob's own key now): refused with the key that replaces them.
REMOVED_KEYS = {
    "fsdp_mp": "fsdp_mp={value} was removed: use precision={mixed} (FSDP2's MixedPrecisionPolicy(param_dtype=16-bit, "
               "reduce_dtype=fp32) plus autocast, as accelerate sets FSDP2 up).",
    "fsdp_offload": "fsdp_offload={value} was removed: use offload=optimizer+params (FSDP2's CPUOffloadPolicy).",
}
INLINE_HELP = (
    "A configuration is a JSON file (written by `perfscale bench --save-config` or `tune`, or a bench --json "
    "output), or inline `key=value` pairs joined by commas, applied on top of the shared flags, e.g. "
    "`backend=onnxruntime,quant=int8-per-channel` or `precision=bf16-mixed,checkpointing=true`. "
    "Keys: " + ", ".join(INLINE_KEYS) + ". lora_targets joins modules with '+': lora_targets=q_proj+v_proj."
)


def _convert(key: str, text: str, kind: type) -> Any:
    if kind is bool:
        lowered = text.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise InvalidConfigError(f"{key}={text!r}: expected true or false.")
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise InvalidConfigError(f"{key}={text!r}: expected an integer.") from None
    return text


def apply_overrides(base: BenchConfig, overrides: dict[str, Any]) -> BenchConfig:
    """A new BenchConfig with `key: value` overrides (INLINE_KEYS names) applied and re-validated."""
    top: dict[str, Any] = {}
    run: dict[str, Any] = {}
    workload = base.run.workload.to_dict()
    for key, value in overrides.items():
        path = INLINE_KEYS[key][0]
        if path.startswith("workload."):
            workload[path.split(".", 1)[1]] = value
        elif path.startswith("run."):
            run[path.split(".", 1)[1]] = value
        elif path.startswith("extra."):
            top["extra"] = {**base.extra, **top.get("extra", {}), path.split(".", 1)[1]: value}
        else:
            top[path] = value
    scenario = top.get("scenario", base.scenario)
    if scenario != base.scenario and not any(k.startswith(("batch", "seq", "prompt", "new_tokens", "grad")) for k in overrides):
        workload = DEFAULT_WORKLOADS.get(scenario, base.run.workload).to_dict()
    mode = "train" if scenario == "train" else "infer"
    if workload.get("mode") != mode:  # switching train <-> infer: start from that scenario's default sizes
        default = DEFAULT_WORKLOADS.get(scenario, DEFAULT_WORKLOADS["train"]).to_dict()
        workload = default | {k: v for k, v in workload.items() if k in default and k != "mode"}
    wl_fields = {k: v for k, v in workload.items() if k != "mode"}
    wl = TrainWorkload(**wl_fields) if mode == "train" else InferWorkload(**wl_fields)
    run_data = base.run.to_dict() | run
    if "lora_targets" in run and isinstance(run["lora_targets"], str):
        run_data["lora_targets"] = list(parse_targets(run["lora_targets"].replace("+", ",")))
    if "backend" in top:  # a runtime, or compile: torch.compile is the run's knob (backend=eager drops it)
        top["runtime"], run_data["compile"] = split_backend(top.pop("backend"), run.get("compile"))
    run_data.pop("workload")
    rc = RunConfig.from_dict({"workload": wl.to_dict(), **run_data})
    if "model" not in top and scenario != base.scenario and base.model == DEFAULT_MODELS.get(base.scenario):
        top["model"] = None
    return replace(base, run=rc, **top)


def parse_inline(text: str, base: BenchConfig) -> BenchConfig:
    """'backend=onnxruntime,quant=int8-per-channel' -> BenchConfig (base + these values)."""
    overrides: dict[str, Any] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise InvalidConfigError(f"Configuration item {item!r} is not key=value. {INLINE_HELP}")
        if key in REMOVED_KEYS:
            raise InvalidConfigError(REMOVED_KEYS[key].format(value=value.strip(), mixed=mixed_for(value.strip())))
        if key not in INLINE_KEYS:
            hint = closest(key, INLINE_KEYS)
            raise InvalidConfigError(
                f"Unknown configuration key {key!r}{' (did you mean ' + ', '.join(hint) + '?)' if hint else ''}. "
                f"Valid keys: {', '.join(INLINE_KEYS)}."
            )
        overrides[key] = _convert(key, value.strip(), INLINE_KEYS[key][1])
    return apply_overrides(base, overrides)


def resolve_configuration(text: str, base: BenchConfig) -> BenchConfig:
    """One command-line configuration: an existing .json file, else the inline syntax."""
    if text.endswith(".json") or _is_file(text):
        return load_config_file(Path(text))
    return parse_inline(text, base)


def _is_file(text: str) -> bool:
    try:
        return Path(text).is_file()
    except OSError:  # a name too long for the file system is not a file: read it as inline pairs
        return False


__all__ = ["INLINE_HELP", "INLINE_KEYS", "apply_overrides", "parse_inline", "resolve_configuration"]
