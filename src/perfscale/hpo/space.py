"""The search space of `perfscale hpo`: one typed object, read from a YAML/JSON file or from flags,
sampled by an Optuna trial (`suggest`) and exported as the `hp_space` that
`Trainer.hyperparameter_search(backend="optuna", hp_space=...)` takes (`hp_space`).

A parameter is a training hyperparameter (a TrainingArguments field) or a perfscale knob (a RunConfig
field the trial honours). Each is a float range (`low`, `high`, optionally `log`), an int range, a list
of `choices`, or a fixed value. LoRA rank and alpha are sampled only in trials where LoRA is on.

File format (YAML or JSON, a mapping of parameter name to its definition):

    learning_rate: {low: 1.0e-5, high: 1.0e-2, log: true}
    lr_scheduler_type: {choices: [linear, cosine]}
    per_device_train_batch_size: {choices: [4, 8, 16]}
    precision: fp32            # fixed
    lora: {choices: [false, true]}
    lora_r: {choices: [4, 8, 16]}
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perfscale.config.precision import PRECISIONS
from perfscale.config.run_config import CHOICES, MAX_LORA_RANK
from perfscale.errors import ConfigFileError, InvalidConfigError

# Trainer's schedulers (transformers SchedulerType) that need no extra arguments.
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
              "inverse_sqrt")
MAX_BATCH = 4096

# Every parameter the space may name: kind, valid bounds or choices, and what it means. The order is
# the order a trial samples them in (and the table shows them in).
PARAMS: dict[str, dict[str, Any]] = {
    "learning_rate": {"short": "lr", "kind": "float", "bounds": (1e-8, 1.0), "doc": "peak learning rate of AdamW"},
    "warmup_ratio": {"short": "warmup", "kind": "float", "bounds": (0.0, 0.5), "doc": "fraction of the steps with a linear warm-up"},
    "weight_decay": {"short": "wd", "kind": "float", "bounds": (0.0, 1.0), "doc": "decoupled weight decay"},
    "lr_scheduler_type": {"short": "sched", "kind": "categorical", "choices": SCHEDULERS, "doc": "learning-rate schedule after warm-up"},
    "max_grad_norm": {"short": "clip", "kind": "float", "bounds": (0.0, 100.0), "doc": "gradient clipping norm (0: off)"},
    "per_device_train_batch_size": {"short": "batch", "kind": "int", "bounds": (1, MAX_BATCH), "doc": "micro-batch (sequences per forward)"},
    "gradient_accumulation_steps": {"short": "accum", "kind": "int", "bounds": (1, MAX_BATCH), "doc": "micro-batches per optimizer step"},
    "precision": {"short": "precision", "kind": "categorical", "choices": tuple(p for p in CHOICES["precision"] if PRECISIONS[p].weight_dtype == "fp32"),
                  "doc": "perfscale precision knob (fp32 or mixed precision: fp32 master weights + autocast)"},
    "checkpointing": {"short": "ckpt", "kind": "categorical", "choices": (False, True), "doc": "perfscale knob: activation checkpointing"},
    "optimizer": {"short": "optim", "kind": "categorical", "choices": CHOICES["optimizer"], "doc": "perfscale knob: TrainingArguments `optim`"},
    "attn": {"short": "attn", "kind": "categorical", "choices": CHOICES["attn"], "doc": "perfscale knob: attention implementation"},
    "lora": {"short": "lora", "kind": "categorical", "choices": (False, True), "doc": "train a LoRA adapter instead of the whole model"},
    "lora_r": {"short": "lora r", "kind": "int", "bounds": (1, MAX_LORA_RANK), "doc": "LoRA rank (only where lora is on)"},
    "lora_alpha": {"short": "lora alpha", "kind": "int", "bounds": (1, 16 * MAX_LORA_RANK), "doc": "LoRA alpha (only where lora is on; default 2 x rank)"},
}
LORA_ONLY = ("lora_r", "lora_alpha")
# The Trainer's defaults (transformers 5 TrainingArguments) and perfscale's: the untuned baseline.
DEFAULTS: dict[str, Any] = {
    "learning_rate": 5e-5, "warmup_ratio": 0.0, "weight_decay": 0.0, "lr_scheduler_type": "linear", "max_grad_norm": 1.0,
    "per_device_train_batch_size": 8, "gradient_accumulation_steps": 1, "precision": "fp32", "checkpointing": False,
    "optimizer": "adamw_torch_fused", "attn": "sdpa", "lora": False, "lora_r": 8, "lora_alpha": 16,
}
# The default space: the issue's hyperparameters on the built-in tiny model, sized so the default study
# finishes in minutes on 2 CPU cores.
DEFAULT_SPACE: dict[str, Any] = {
    "learning_rate": {"low": 1e-5, "high": 1e-2, "log": True},
    "warmup_ratio": {"low": 0.0, "high": 0.2},
    "weight_decay": {"low": 0.0, "high": 0.1},
    "lr_scheduler_type": {"choices": ["linear", "cosine", "constant_with_warmup"]},
    "per_device_train_batch_size": {"choices": [4, 8, 16]},
    "gradient_accumulation_steps": {"choices": [1, 2]},
}


@dataclass(frozen=True)
class Param:
    """One searched (or fixed) parameter."""

    name: str
    kind: str  # float | int | categorical | fixed
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()
    value: Any = None  # kind == fixed

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "fixed":
            return {"value": self.value}
        if self.kind == "categorical":
            return {"choices": list(self.choices)}
        out: dict[str, Any] = {"low": self.low, "high": self.high, "type": self.kind}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        return out

    def suggest(self, trial) -> Any:
        if self.kind == "fixed":
            return self.value
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), step=self.step, log=self.log)

    def contains(self, value: Any) -> bool:
        if self.kind == "fixed":
            return value == self.value
        if self.kind == "categorical":
            return value in self.choices
        return isinstance(value, (int, float)) and self.low <= value <= self.high


def _bad(name: str, problem: str, source: str) -> str:
    return f"{name}: {problem} (in {source})"


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _parse_param(name: str, spec: Any, source: str, problems: list[str]) -> Param | None:
    if name not in PARAMS:
        from perfscale.errors import closest

        near = closest(name, PARAMS)
        problems.append(_bad(name, "not a parameter the search knows" + (f" (did you mean {', '.join(near)}?)" if near else "")
                             + f"; choose from: {', '.join(PARAMS)}", source))
        return None
    info = PARAMS[name]
    if not isinstance(spec, dict):
        spec = {"value": spec}
    unknown = set(spec) - {"low", "high", "log", "step", "choices", "value", "type"}
    if unknown:
        problems.append(_bad(name, f"unknown key(s) {', '.join(sorted(map(str, unknown)))}; use low/high(/log/step), choices, or value", source))
        return None

    def check_value(v: Any) -> str | None:
        if info["kind"] == "categorical":
            if v not in info["choices"] or isinstance(v, bool) != isinstance(info["choices"][0], bool):
                return f"{v!r} is not one of: {', '.join(map(str, info['choices']))}"
            return None
        lo, hi = info["bounds"]
        if not _number(v) or (info["kind"] == "int" and float(v) != int(v)):
            return f"{v!r} is not {'an integer' if info['kind'] == 'int' else 'a number'}"
        if not lo <= v <= hi:
            return f"{v!r} is outside {lo:g}..{hi:g}"
        return None

    if "value" in spec:
        if len(spec) > 1:
            problems.append(_bad(name, "a fixed `value` takes no other keys", source))
            return None
        why = check_value(spec["value"])
        if why:
            problems.append(_bad(name, why, source))
            return None
        v = spec["value"]
        return Param(name, "fixed", value=int(v) if info["kind"] == "int" else v)
    if "choices" in spec:
        choices = spec["choices"]
        if set(spec) - {"choices"}:
            problems.append(_bad(name, "`choices` takes no low/high/log/step", source))
            return None
        if not isinstance(choices, list) or not choices:
            problems.append(_bad(name, f"choices must be a non-empty list, got {choices!r}", source))
            return None
        whys = [w for w in (check_value(c) for c in choices) if w]
        if whys:
            problems.append(_bad(name, "; ".join(whys), source))
            return None
        if len(set(map(repr, choices))) != len(choices):
            problems.append(_bad(name, f"choices repeat a value: {choices!r}", source))
            return None
        if info["kind"] == "int":
            choices = [int(c) for c in choices]
        return Param(name, "categorical", choices=tuple(choices))
    if info["kind"] == "categorical":
        problems.append(_bad(name, f"takes `choices` (a list from: {', '.join(map(str, info['choices']))}) or a fixed value, not a range", source))
        return None
    if "low" not in spec or "high" not in spec:
        problems.append(_bad(name, "a range needs both low and high", source))
        return None
    low, high = spec["low"], spec["high"]
    whys = [w for w in (check_value(low), check_value(high)) if w]
    if whys:
        problems.append(_bad(name, "; ".join(whys), source))
        return None
    if low > high:
        problems.append(_bad(name, f"low {low!r} > high {high!r}: swap them", source))
        return None
    log = spec.get("log", False)
    if not isinstance(log, bool):
        problems.append(_bad(name, f"log must be true or false, got {log!r}", source))
        return None
    if log and low <= 0:
        problems.append(_bad(name, f"a log range needs low > 0, got {low!r}", source))
        return None
    step = spec.get("step")
    if step is not None and (not _number(step) or step <= 0 or (log and step is not None)):
        problems.append(_bad(name, f"step must be a number > 0 and not combined with log, got {step!r}", source))
        return None
    kind = spec.get("type", info["kind"])
    if kind != info["kind"]:
        problems.append(_bad(name, f"type {kind!r}: this parameter is {info['kind']}", source))
        return None
    if kind == "int":
        return Param(name, "int", low=int(low), high=int(high), log=log, step=int(step) if step else None)
    return Param(name, "float", low=float(low), high=float(high), log=log, step=float(step) if step else None)


@dataclass(frozen=True)
class SearchSpace:
    """The parameters of a study, validated; `fingerprint()` names the space in the study's storage."""

    params: tuple[Param, ...]

    @classmethod
    def from_dict(cls, data: Any, source: str = "the space") -> SearchSpace:
        if not isinstance(data, dict):
            raise InvalidConfigError(
                f"The search space in {source} must be a mapping of parameter name to its range, got {type(data).__name__}. "
                f"Example: {{\"learning_rate\": {{\"low\": 1e-5, \"high\": 1e-2, \"log\": true}}}}; parameters: {', '.join(PARAMS)}."
            )
        if not data:
            raise InvalidConfigError(f"The search space in {source} is empty: name at least one parameter ({', '.join(PARAMS)}).")
        problems: list[str] = []
        params = [p for p in (_parse_param(str(k), v, source, problems) for k, v in data.items()) if p]
        if problems:
            raise InvalidConfigError("Bad search space: " + "; ".join(problems) + ".")
        order = list(PARAMS)
        params.sort(key=lambda p: order.index(p.name))
        space = cls(tuple(params))
        space._check_lora(source)
        if not space.searched():
            raise InvalidConfigError(f"The search space in {source} fixes every parameter: give at least one a range or choices.")
        return space

    @classmethod
    def default(cls) -> SearchSpace:
        return cls.from_dict(DEFAULT_SPACE, "the default space")

    def _check_lora(self, source: str) -> None:
        names = {p.name for p in self.params}
        lora = self.get("lora")
        lora_possible = lora is not None and (lora.kind == "categorical" or lora.value is True)
        if names & set(LORA_ONLY) and not lora_possible:
            raise InvalidConfigError(
                f"{', '.join(sorted(names & set(LORA_ONLY)))} in {source} apply only with LoRA on: add `lora: true` "
                "(always) or `lora: {choices: [false, true]}` (searched), or drop them."
            )

    def get(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    def searched(self) -> list[Param]:
        return [p for p in self.params if p.kind != "fixed"]

    def to_dict(self) -> dict[str, Any]:
        return {p.name: p.to_dict() for p in self.params}

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:12]

    def with_params(self, params: list[Param]) -> SearchSpace:
        """This space with `params` replacing (or adding) the parameters of the same names."""
        by_name = {p.name: p for p in self.params} | {p.name: p for p in params}
        return SearchSpace.from_dict({n: p.to_dict() for n, p in by_name.items()}, "the space with the flags")

    def suggest(self, trial) -> dict[str, Any]:
        """Sample every parameter (define-by-run: LoRA rank/alpha only where LoRA is on); returns the full
        set of values (defaults for what the space does not name)."""
        values = dict(DEFAULTS)
        for p in self.params:
            if p.name in LORA_ONLY and not values["lora"]:
                continue
            values[p.name] = p.suggest(trial)
        if values["lora"] and self.get("lora_alpha") is None:
            values["lora_alpha"] = 2 * values["lora_r"]  # the convention of peft's examples (alpha = 2r)
        if not values["lora"]:
            values["lora_r"] = values["lora_alpha"] = None
        return values

    def suggest_fixed(self, params: dict[str, Any]) -> dict[str, Any]:
        """The full values of a finished trial from its sampled `params` (what `suggest` returned then)."""
        import optuna

        return self.suggest(optuna.trial.FixedTrial(params))

    def defaults_in_space(self) -> dict[str, Any] | None:
        """The Trainer defaults as fixed values for an enqueued baseline trial, or None when the space
        excludes one of them (then no baseline trial is run)."""
        out = {}
        for p in self.params:
            if p.name in LORA_ONLY:
                continue
            if not p.contains(DEFAULTS[p.name]):
                return None
            if p.kind != "fixed":
                out[p.name] = DEFAULTS[p.name]
        return out


def load_space(path: str | Path) -> SearchSpace:
    """A space from a YAML or JSON file (safe loaders only: nothing in the file is executed)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigFileError(f"Cannot read the space file {str(path)!r}: {exc}. Give a YAML or JSON file (see docs/hpo.md).") from exc
    if not text.strip():
        raise InvalidConfigError(f"The space file {str(path)!r} is empty: name at least one parameter ({', '.join(PARAMS)}).")
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # noqa: BLE001 - json/yaml parse errors of many classes
        raise ConfigFileError(f"The space file {str(path)!r} is not valid {'JSON' if p.suffix.lower() == '.json' else 'YAML'}: "
                              f"{str(exc).splitlines()[0][:300]}. Fix it (see docs/hpo.md for the format).") from exc
    return SearchSpace.from_dict(data, f"{path}")


def parse_range_flag(name: str, text: str, flag: str | None = None) -> Param:
    """A flag's range: "LOW:HIGH" (float/int), "LOW:HIGH:log", "a,b,c" (choices) or one value (fixed)."""
    info = PARAMS[name]
    flag = flag or f"--{name.replace('_', '-')}"

    def value(s: str) -> Any:
        s = s.strip()
        if info["kind"] == "categorical" and isinstance(info["choices"][0], bool):
            low = s.lower()
            if low in ("true", "yes", "on", "1"):
                return True
            if low in ("false", "no", "off", "0"):
                return False
            return s
        if info["kind"] == "categorical":
            return s
        try:
            return int(s) if info["kind"] == "int" else float(s)
        except ValueError:
            return s

    if ":" in text and info["kind"] != "categorical":
        parts = text.split(":")
        spec: dict[str, Any] = {"low": value(parts[0]), "high": value(parts[1])}
        if len(parts) == 3 and parts[2].strip().lower() == "log":
            spec["log"] = True
        elif len(parts) != 2:
            raise InvalidConfigError(f"{flag} {text!r}: use LOW:HIGH, LOW:HIGH:log, a,b,c or one value.")
    elif "," in text:
        spec = {"choices": [value(s) for s in text.split(",")]}
    else:
        spec = {"value": value(text)}
    problems: list[str] = []
    p = _parse_param(name, spec, flag, problems)
    if p is None:
        raise InvalidConfigError("Bad search space: " + "; ".join(problems) + ".")
    return p


def run_config(values: dict[str, Any], seq: int):
    """The perfscale RunConfig of one trial (what the estimate and the trace check, what the trial builds)."""
    from perfscale.config.run_config import RunConfig
    from perfscale.specs.workload import TrainWorkload

    return RunConfig(
        TrainWorkload(batch=int(values["per_device_train_batch_size"]), seq=seq, grad_accum=int(values["gradient_accumulation_steps"])),
        precision=values["precision"], optimizer=values["optimizer"], checkpointing=bool(values["checkpointing"]),
        attn=values["attn"], lora_r=int(values["lora_r"]) if values.get("lora") else None,
    )


def hp_space(space: SearchSpace | None = None):
    """The space as an `hp_space` function for `Trainer.hyperparameter_search(backend="optuna", hp_space=...)`.

    It returns TrainingArguments names (warm-up as `warmup_steps`, a fraction < 1 in transformers 5;
    precision as `bf16`/`fp16`; checkpointing as `activation_checkpointing`; optimizer as `optim`). LoRA
    and the attention kernel are properties of the model, not of TrainingArguments: build them in your
    `model_init(trial)` from `trial.params`.

    Trainer casts each value to the type of the field's current value: create the TrainingArguments with
    `warmup_steps=0.0` (a float), or a sampled warm-up fraction is truncated to 0 by `int(...)`.
    """
    space = space or SearchSpace.default()

    def _hp_space(trial) -> dict[str, Any]:
        return training_arguments(space.suggest(trial), only=space)

    return _hp_space


def training_arguments(values: dict[str, Any], only: SearchSpace | None = None) -> dict[str, Any]:
    """TrainingArguments keyword arguments for sampled `values` (every training hyperparameter, or
    only those the space `only` names)."""
    names = {p.name for p in only.params} if only is not None else set(PARAMS)
    out: dict[str, Any] = {}
    for name in ("learning_rate", "weight_decay", "lr_scheduler_type", "max_grad_norm", "per_device_train_batch_size",
                 "gradient_accumulation_steps"):
        if name in names:
            out[name] = values[name]
    if "warmup_ratio" in names:
        out["warmup_steps"] = float(values["warmup_ratio"])  # transformers 5: a float < 1 is a fraction of the steps
    if "precision" in names:
        autocast = PRECISIONS[values["precision"]].autocast_dtype
        out["bf16"], out["fp16"] = autocast == "bf16", autocast == "fp16"
    if "checkpointing" in names:
        out["activation_checkpointing"] = bool(values["checkpointing"])  # transformers 5 name
    if "optimizer" in names:
        out["optim"] = values["optimizer"]
    return out


__all__ = ["DEFAULTS", "DEFAULT_SPACE", "PARAMS", "Param", "SearchSpace", "hp_space", "load_space", "parse_range_flag",
           "run_config", "training_arguments"]
