"""RunConfig: every knob of a training step or inference run, validated once, where it is built.

The same object is the Python API, the JSON format and the CLI flags of trace, plan and bench.
All problems are reported at once, each with the valid choices.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from perfscale.config.optimizer import (
    ADAPTIVE,
    DEFAULT_OPTIMIZER,
    OPTIMIZER_ALIASES,
    OPTIMIZERS,
    canonical_optimizer,
    optimizer_choices_text,
)
from perfscale.config.precision import INFER_PRECISIONS, PRECISIONS, TRAIN_PRECISIONS, Precision
from perfscale.errors import InvalidConfigError
from perfscale.specs.workload import InferWorkload, TrainWorkload

# Precisions (config/precision.py): plain dtypes keep weights, grads and optimizer state in that
# dtype; "-mixed" keeps fp32 master weights and runs matmuls under autocast in the 16-bit dtype.
# Optimizers (config/optimizer.py): the Trainer's `optim` names; earlier names are aliases.
ATTENTION = ("sdpa", "eager")
ZERO_STAGES = (0, 1, 2, 3)
OFFLOAD = ("none", "optimizer", "optimizer+params")
QUANTIZATION = ("none", "int8", "int4", "nf4")
CACHE_IMPLEMENTATIONS = ("dynamic", "static")
KV_CACHE_DTYPES = ("auto", "fp8")


# Ranks beyond the widest hidden size in use (~2^14) make an adapter larger than the layer it adapts.
MAX_LORA_RANK = 2**16


def _check_choice(name: str, value: Any, choices: tuple, problems: list[str]) -> None:
    if value not in choices:
        problems.append(f"{name} {value!r} is not one of: {', '.join(map(str, choices))}")


@dataclass(frozen=True)
class RunConfig:
    """A workload plus every knob that changes its memory or speed.

    Knobs that do not apply to the workload's mode (e.g. `optimizer` for inference) are ignored.
    """

    workload: TrainWorkload | InferWorkload
    precision: str = "fp32"  # a Precision is accepted and stored as its name (see `prec`)
    optimizer: str = DEFAULT_OPTIMIZER  # an alias (e.g. "adamw") is stored as its Trainer name
    checkpointing: bool = False
    attn: str = "sdpa"
    lora_r: int | None = None
    lora_targets: tuple[str, ...] = ()
    zero: int = 0
    fsdp: int | None = None  # FSDP shard degree (world size of the shard group); None = no FSDP
    tp: int = 1
    pp: int = 1
    offload: str = "none"
    compile: bool = False
    quantization: str = "none"  # weights, inference (and QLoRA base when training with lora)
    cache: str = "dynamic"
    kv_cache_dtype: str = "auto"
    extra: dict[str, Any] = field(default_factory=dict)  # engine-specific settings, kept verbatim
    # Interleaved 1F1B (Narayanan et al. 2021, section 2.2.2): V model chunks per pipeline device;
    # bubble (p-1)/(V m + p-1) instead of (p-1)/(m+p-1), at V x the point-to-point traffic.
    # 1 = plain 1F1B. Needs pp > 1.
    pp_virtual: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.precision, Precision):
            object.__setattr__(self, "precision", self.precision.name)
        if isinstance(self.optimizer, str) and self.optimizer in OPTIMIZER_ALIASES:
            object.__setattr__(self, "optimizer", canonical_optimizer(self.optimizer))
        problems = self.problems()
        if problems:
            raise InvalidConfigError(
                "Invalid configuration:\n  - " + "\n  - ".join(problems) + "\nFix these values and run again."
            )

    @property
    def mode(self) -> str:
        return self.workload.mode

    @property
    def is_train(self) -> bool:
        return isinstance(self.workload, TrainWorkload)

    @property
    def lora(self) -> bool:
        return self.lora_r is not None

    @property
    def prec(self) -> Precision:
        """The precision decoded (weight/compute dtypes, autocast, bytes, peak key): what engines read."""
        return PRECISIONS[self.precision]

    def problems(self) -> list[str]:
        problems: list[str] = []
        if not isinstance(self.workload, (TrainWorkload, InferWorkload)):
            problems.append(f"workload must be a TrainWorkload or InferWorkload, got {type(self.workload).__name__}")
            return problems
        _check_choice("precision", self.precision, TRAIN_PRECISIONS if self.is_train else INFER_PRECISIONS, problems)
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer {self.optimizer!r} is not one of: {optimizer_choices_text()}")
        _check_choice("attn", self.attn, ATTENTION, problems)
        _check_choice("zero", self.zero, ZERO_STAGES, problems)
        _check_choice("offload", self.offload, OFFLOAD, problems)
        _check_choice("quantization", self.quantization, QUANTIZATION, problems)
        _check_choice("cache", self.cache, CACHE_IMPLEMENTATIONS, problems)
        _check_choice("kv_cache_dtype", self.kv_cache_dtype, KV_CACHE_DTYPES, problems)
        for name in ("tp", "pp"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                problems.append(f"{name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.pp_virtual, int) or isinstance(self.pp_virtual, bool) or self.pp_virtual < 1:
            problems.append(f"pp_virtual must be an integer >= 1 (model chunks per pipeline device; 1 = plain 1F1B), "
                            f"got {self.pp_virtual!r}")
        elif self.pp_virtual > 1 and isinstance(self.pp, int) and self.pp < 2:
            problems.append(f"pp_virtual {self.pp_virtual} interleaves pipeline stages and needs pp >= 2 (got pp {self.pp}): "
                            "use pp_virtual 1, or add pipeline parallelism")
        if self.fsdp is not None and (not isinstance(self.fsdp, int) or self.fsdp < 1):
            problems.append(f"fsdp must be an integer >= 1 (the shard degree), got {self.fsdp!r}")
        if self.fsdp is not None and self.zero:
            problems.append("fsdp and zero are alternatives: give one (FSDP full shard = ZeRO-3)")
        if self.lora_r is not None and (not isinstance(self.lora_r, int) or not 1 <= self.lora_r <= MAX_LORA_RANK):
            problems.append(f"lora_r must be an integer from 1 to {MAX_LORA_RANK} (the adapter rank), got {self.lora_r!r}")
        if self.lora_targets and self.lora_r is None:
            problems.append("lora_targets given without lora_r: add a rank (e.g. lora_r=16)")
        if self.is_train:
            prec = PRECISIONS.get(self.precision)
            if prec is not None and prec.weight_dtype == "fp16" and self.optimizer in ADAPTIVE and not self.lora:
                problems.append(
                    "pure fp16 weights with an adaptive optimizer lose updates below fp16 resolution and "
                    "overflow without loss scaling: use precision fp16-mixed (fp32 master weights) or bf16"
                )
            if self.quantization != "none" and not self.lora:
                problems.append(
                    f"quantization {self.quantization!r} in training needs LoRA (QLoRA: frozen quantized "
                    "base): add lora_r, or use quantization none"
                )
        return problems

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "workload"}
        data["lora_targets"] = list(self.lora_targets)
        if self.pp_virtual == 1:
            # Omitted at its default so documents (and the bench fingerprints hashed from them)
            # written before the field existed stay identical; from_dict restores the default.
            data.pop("pp_virtual")
        return {"workload": self.workload.to_dict(), **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Inverse of to_dict (JSON files written by bench/tune)."""
        data = dict(data)
        workload = dict(data.pop("workload"))
        mode = workload.pop("mode", "train")
        wl = TrainWorkload(**workload) if mode == "train" else InferWorkload(**workload)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidConfigError(
                f"Unknown configuration keys: {', '.join(unknown)}. Valid keys: {', '.join(sorted(known))}."
            )
        if "lora_targets" in data:
            data["lora_targets"] = tuple(data["lora_targets"])
        return cls(workload=wl, **data)


def parse_targets(text: str | None) -> tuple[str, ...]:
    """'q_proj,v_proj' -> ('q_proj', 'v_proj')."""
    if not text:
        return ()
    return tuple(t.strip() for t in text.split(",") if t.strip())


__all__ = ["INFER_PRECISIONS", "OPTIMIZERS", "TRAIN_PRECISIONS", "RunConfig", "parse_targets"]
