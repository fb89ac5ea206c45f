"""RunConfig: every knob of a training step or inference run, validated once, where it is built.

The same object is the Python API, the JSON format and the CLI flags of trace, plan, bench and
compare: each field's docstring (the string under it) is its `--help`, its choices are CHOICES,
and cli/knobs.py generates the options from the fields. estimate/knobs.Knobs (the hot path's
unvalidated copy), tune/plan.KNOB_NAMES, compare's inline keys, plan's open knobs and pinned defaults
(tune/space.TRAIN_OPEN, tune/plan.SECONDARY_DEFAULTS), the ranking's tie-break (tune/rank.complexity)
and the plan table's columns derive from the same fields and their _knob metadata, so a new knob is
one field here plus the engine code that reads it (tests/test_one_config.py).
All problems are reported at once, each with the valid choices.
"""

from __future__ import annotations

import ast
import functools
import inspect
import textwrap
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from perfscale.config.optimizer import (
    ADAMW,
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
# The training loop's program: the Trainer (compute_loss returns the loss alone, so the model outputs
# are freed before backward) or a hand-written loop that keeps `outputs` (HF course / accelerate examples:
# `outputs = model(**batch); loss = outputs.loss; loss.backward(); optimizer.step()`).
LOOPS = ("trainer", "custom")

# The choices of every closed knob, defined once: validation, --help and compare's keys read them.
CHOICES: dict[str, tuple] = {
    "precision": TRAIN_PRECISIONS, "optimizer": OPTIMIZERS, "attn": ATTENTION, "zero": ZERO_STAGES,
    "offload": OFFLOAD, "quantization": QUANTIZATION, "cache": CACHE_IMPLEMENTATIONS, "kv_cache_dtype": KV_CACHE_DTYPES,
    "loop": LOOPS,
}

# Ranks beyond the widest hidden size in use (~2^14) make an adapter larger than the layer it adapts.
MAX_LORA_RANK = 2**16
# Integer knobs' ranges. Parallel degrees: 2^20 devices is beyond any cluster built (the largest
# runs use ~10^5 GPUs); threads and workers: beyond any machine's cores (a typo, not a plan).
INT_RANGES: dict[str, tuple[int, int]] = {
    "tp": (1, 2**20), "pp": (1, 2**20), "cp": (1, 2**20), "fsdp": (1, 2**20), "pp_virtual": (1, 2**20), "lora_r": (1, MAX_LORA_RANK),
    "torch_num_threads": (1, 4096), "dataloader_num_workers": (0, 4096),
}


def cp_problems(cp: int, seq: int, attn: str) -> list[str]:
    """Why context parallelism of degree `cp` cannot split this sequence (empty when it can).

    Load-balanced ring attention (Megatron-Core context parallelism) cuts each sequence into 2 cp
    chunks and gives rank r chunks r and 2 cp - 1 - r, so that causal masking costs every rank the
    same: seq must be a multiple of 2 cp. Ring attention runs blockwise flash-style kernels
    (TransformerEngine; torch's context_parallel supports SDPA only): eager attention's s x s
    scores do not split."""
    problems = []
    if seq % (2 * cp):
        low, high = (seq // (2 * cp)) * 2 * cp, (seq // (2 * cp) + 1) * 2 * cp
        problems.append(f"cp {cp} splits each sequence into 2 x cp = {2 * cp} chunks (load-balanced ring attention): "
                        f"seq {seq} is not a multiple of {2 * cp}; use seq {high}" + (f" or {low}" if low else "")
                        + ", or another cp")
    if attn != "sdpa":
        problems.append(f"cp {cp} needs attn sdpa (ring attention runs blockwise flash-style kernels), got attn {attn!r}")
    return problems


def _check_choice(name: str, value: Any, choices: tuple, problems: list[str]) -> None:
    if value not in choices:
        problems.append(f"{name} {value!r} is not one of: {', '.join(map(str, choices))}")


# The engines a knob can be honoured by; a verb offers a knob only where its engine honours it
# (cli/knobs.VERB_ENGINE), so that no flag is accepted and then ignored.
ENGINES = ("estimate", "trace", "measure")


MODES = ("train", "infer")


def _knob(default: Any, *engines: str, mode: str | None = None, flag: str | None = None,
          search: str | tuple[str, ...] = (), core: bool = False, weight: int | None = None,
          plain: tuple | None = None) -> Any:
    """A knob's field: its default, the engines that honour it, its mode when it has one (train | infer:
    ignored in the other; Knobs.as_dict leaves it out there), and its CLI flag when not --field-name.

    The decide layer reads the rest (tests/test_one_config.py keeps them consistent):
    search: the modes whose plan search opens the knob (tune/space.TRAIN_OPEN / INFER_OPEN; the values
    tried are tune/space.py's); core: it defines a configuration in those modes (all core knobs given:
    plan evaluates that one configuration, the other searched knobs at their defaults, tune/plan.CORE_KNOBS);
    weight: what a value other than `plain` (default: the field default) adds to tune/rank.complexity, the
    tie-break towards the plain configuration, counted in the knob's mode only; a searched knob declares
    one, 0 when no value is simpler than another."""
    metadata: dict[str, Any] = {"engines": engines}
    if mode:
        metadata["mode"] = mode
    if flag:
        metadata["flag"] = flag
    if search:
        metadata["search"] = (search,) if isinstance(search, str) else tuple(search)
    if core:
        metadata["core"] = True
    if weight is not None:
        metadata["weight"] = weight
        metadata["plain"] = (default,) if plain is None else tuple(plain)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True, slots=True)
class RunConfig:
    """A workload plus every knob that changes its memory or speed.

    Knobs that do not apply to the workload's mode (e.g. `optimizer` for inference) are ignored.
    """

    workload: TrainWorkload | InferWorkload
    """The work: TrainWorkload (batch, seq, grad_accum) or InferWorkload (batch, prompt, new_tokens)."""
    precision: str = _knob("fp32", "estimate", "trace", "measure", search=MODES, core=True, weight=0)
    """Weights and compute dtype (mixed: fp32 master weights + autocast in the 16-bit dtype)."""
    optimizer: str = _knob(DEFAULT_OPTIMIZER, "estimate", "trace", "measure", mode="train", search="train", core=True,
                           weight=1, plain=ADAMW)  # another algorithm changes what is trained
    """Trainer `optim` name, built as the Trainer builds it on the device (earlier names are aliases)."""
    checkpointing: bool = _knob(False, "estimate", "trace", "measure", mode="train", search="train", core=True, weight=1)
    """Gradient (activation) checkpointing: keep layer inputs, recompute the forward in backward."""
    attn: str = _knob("sdpa", "estimate", "trace", "measure", search=MODES, core=True, weight=0)
    """Attention implementation."""
    lora_r: int | None = _knob(None, "estimate", "trace", "measure")
    """LoRA rank (freezes the base model); none = full fine-tuning."""
    lora_targets: tuple[str, ...] = _knob((), "estimate", "trace", "measure")
    """Comma-separated module names for LoRA, e.g. q_proj,v_proj (default: every linear layer)."""
    zero: int = _knob(0, "estimate", "measure", mode="train", search="train", weight=1)
    """DeepSpeed ZeRO stage (1 optimizer state, 2 + gradients, 3 + parameters sharded); bench measures it with --strategy deepspeed."""
    fsdp: int | None = _knob(None, "estimate", "trace", mode="train", search="train", weight=1)
    """FSDP full-shard degree (ranks the model is sharded over); none = no FSDP."""
    tp: int = _knob(1, "estimate", search=MODES, core=True, weight=1)
    """Tensor-parallel degree."""
    pp: int = _knob(1, "estimate", search="train", core=True, weight=1)
    """Pipeline-parallel degree."""
    offload: str = _knob("none", "estimate", "measure", mode="train", search="train", weight=2)
    """CPU offload of the optimizer state (and parameters) with ZeRO/FSDP; bench measures optimizer+params with --strategy fsdp2 (FSDP2's CPUOffloadPolicy)."""
    compile: bool = _knob(False, "estimate", "measure")
    """torch.compile the model."""
    quantization: str = _knob("none", "estimate", "trace", "measure", search="infer", weight=1)
    """Weight quantization (inference, or the frozen QLoRA base when training with LoRA)."""
    cache: str = _knob("dynamic", "estimate", "trace", "measure", mode="infer", search="infer", weight=0)
    """KV cache implementation for generation."""
    kv_cache_dtype: str = _knob("auto", "estimate", mode="infer", search="infer", weight=0)
    """KV cache dtype for generation (fp8 halves it against 16-bit)."""
    # Interleaved 1F1B (Narayanan et al. 2021, section 2.2.2): bubble (p-1)/(V m + p-1) instead of
    # (p-1)/(m+p-1), at V x the point-to-point traffic.
    pp_virtual: int = _knob(1, "estimate", mode="train", search="train", weight=1)
    """Interleaved 1F1B: model chunks per pipeline device (1 = plain 1F1B; V cuts the bubble to (p-1)/(V m + p-1) at V x the pipeline traffic). Needs pp >= 2."""
    # Context parallelism (Megatron-Core's context_parallel docs; Liu et al. 2023 "Ring Attention";
    # Llama 3, Dubey et al. 2024 section 3.3.2: 405B trained with CP 16 at 131,072 tokens): every
    # activation is split along the sequence over the CP group; attention passes K/V blocks around
    # the ring. world = dp x tp x pp x cp; load balancing cuts each sequence into 2 cp chunks.
    cp: int = _knob(1, "estimate", mode="train", search="train", weight=1)
    """Context-parallel degree: each sequence split over cp ranks (ring attention passes K/V around them; activations / cp). Needs seq divisible by 2 x cp and attn sdpa."""
    # Korthikanti et al. 2022 (section 4.2.2): LayerNorm/dropout activations split over the TP group.
    sequence_parallel: bool = _knob(False, "estimate", search="train", weight=1)
    """Sequence parallelism with tensor parallelism (Megatron-LM): norm and dropout activations split over the tensor-parallel group."""
    # Korthikanti et al. 2022 (section 5): recompute attention's softmax/dropout only (no cost in
    # memory of the s^2 terms, ~2-4% more FLOPs); full recomputation is `checkpointing`.
    selective_recompute: bool = _knob(False, "estimate", mode="train", search="train", weight=1)
    """Selective activation recomputation (attention's softmax and dropout recomputed in backward; full recomputation is --checkpointing)."""
    fused_kernels: bool = _knob(False, "estimate", search="train", weight=1)
    """Fused RMSNorm + SwiGLU kernels (Liger-Kernel; Megatron-LM with TransformerEngine): fewer saved activations."""
    # Megatron-LM --account-for-embedding/loss-in-pipeline-split; Llama 3 section 3.3.2.
    # Searched with pp > 1 (tune/space.parallel_layouts); counts as no complexity (a split, not a method).
    pp_embedding_as_layer: bool = _knob(False, "estimate", mode="train", search="train", weight=0)
    """Pipeline split counts the embedding and the head/loss as one layer slot each (Megatron-LM, Llama 3)."""
    torch_num_threads: int | None = _knob(None, "measure", flag="--threads")
    """Intra-op threads (torch.set_num_threads; ONNX Runtime's intra_op_num_threads when encoding); none = the library's default."""
    dataloader_num_workers: int = _knob(0, "measure", mode="train", flag="--workers")
    """DataLoader worker processes (Trainer dataloader_num_workers); 0 = load in the main process."""
    dataloader_pin_memory: bool = _knob(False, "measure", mode="train", flag="--pin-memory")
    """DataLoader pin_memory (Trainer dataloader_pin_memory; has an effect on CUDA only)."""
    # TrainingArguments(tf32=True) sets torch.backends.cuda.matmul.allow_tf32 (torch's default: off since 1.12):
    # fp32 matmuls on the TF32 tensor cores of Ampere and later GPUs (8x fp32's peak on an A100).
    tf32: bool = _knob(False, "estimate", "measure")
    """TF32 tensor cores for fp32 matmuls (TrainingArguments tf32; torch.backends.cuda.matmul.allow_tf32); no effect on 16-bit matmuls or where the hardware has no TF32."""
    loop: str = _knob("trainer", "estimate", "trace", mode="train")
    """Training loop: trainer (outputs freed before backward) or custom (a loop that keeps `outputs` holds the logits through backward and the optimizer step)."""
    # FSDP2 fully_shard(reshard_after_forward=...): True frees each unit's all-gathered parameters after its
    # forward and gathers them again in backward; False keeps them from forward to backward (one all-gather
    # fewer per unit, at the unsharded parameters of every unit held at once). The estimate does not model it.
    fsdp_reshard: bool = _knob(True, "trace", "measure", mode="train")
    """FSDP2 reshard_after_forward (trace --fsdp N, bench --strategy fsdp2): free gathered parameters after forward; off keeps them until backward."""

    def __post_init__(self) -> None:
        if isinstance(self.precision, Precision):
            object.__setattr__(self, "precision", self.precision.name)
        if isinstance(self.optimizer, str) and self.optimizer in OPTIMIZER_ALIASES:
            object.__setattr__(self, "optimizer", canonical_optimizer(self.optimizer))
        if isinstance(self.lora_targets, list):
            object.__setattr__(self, "lora_targets", tuple(self.lora_targets))
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
        for name, choices in CHOICES.items():
            if name not in ("precision", "optimizer"):
                _check_choice(name, getattr(self, name), choices, problems)
        for name in BOOL_KNOBS:
            if not isinstance(getattr(self, name), bool):
                problems.append(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name, (low, high) in INT_RANGES.items():
            value = getattr(self, name)
            if value is None and KNOB_DEFAULTS[name] is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                what = {"lora_r": " (the adapter rank)", "fsdp": " (the shard degree)",
                        "pp_virtual": " (model chunks per pipeline device; 1 = plain 1F1B)",
                        "cp": " (ranks each sequence is split over; 1 = no context parallelism)"}.get(name, "")
                problems.append(f"{name} must be an integer >= {low}{what}, at most {high:,}, got {value!r}")
        if not isinstance(self.lora_targets, tuple) or not all(isinstance(t, str) and t for t in self.lora_targets):
            problems.append(f"lora_targets must be module names (e.g. q_proj,v_proj), got {self.lora_targets!r}")
        if isinstance(self.pp_virtual, int) and self.pp_virtual > 1 and isinstance(self.pp, int) and self.pp < 2:
            problems.append(f"pp_virtual {self.pp_virtual} interleaves pipeline stages and needs pp >= 2 (got pp {self.pp}): "
                            "use pp_virtual 1, or add pipeline parallelism")
        if isinstance(self.cp, int) and self.cp > 1 and self.is_train:
            problems.extend(cp_problems(self.cp, self.workload.seq, self.attn))
        if self.fsdp is not None and self.zero:
            problems.append("fsdp and zero are alternatives: give one (FSDP full shard = ZeRO-3)")
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
        data: dict[str, Any] = {}
        for name in KNOB_FIELDS:
            value = getattr(self, name)
            if name in OMIT_AT_DEFAULT and value == KNOB_DEFAULTS[name]:
                # Omitted at its default so documents (and the bench fingerprints hashed from them)
                # written before the field existed stay identical; from_dict restores the default.
                continue
            data[name] = list(value) if name == "lora_targets" else value
        return {"workload": self.workload.to_dict(), **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Inverse of to_dict (JSON files written by bench/tune); documents from before issue 13 may hold
        knobs in `extra` (e.g. {"sequence_parallel": true, "recompute": "selective"}): they load into the fields."""
        data = dict(data)
        workload = dict(data.pop("workload"))
        mode = workload.pop("mode", "train")
        wl = TrainWorkload(**workload) if mode == "train" else InferWorkload(**workload)
        data.update(_legacy_extra(data.pop("extra", None)))
        unknown = sorted(set(data) - set(KNOB_FIELDS))
        if unknown:
            raise InvalidConfigError(
                f"Unknown configuration keys: {', '.join(unknown)}. Valid keys: {', '.join(sorted(KNOB_FIELDS))}."
            )
        if isinstance(data.get("lora_targets"), list):
            data["lora_targets"] = tuple(data["lora_targets"])
        return cls(workload=wl, **data)


# Every field but the workload: the knobs, in declaration order.
KNOB_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(RunConfig) if f.name != "workload")
KNOB_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(RunConfig) if f.default is not MISSING}
BOOL_KNOBS: tuple[str, ...] = tuple(name for name in KNOB_FIELDS if isinstance(KNOB_DEFAULTS[name], bool))
# train | infer for a knob of one mode only; absent = both.
KNOB_MODE: dict[str, str] = {f.name: f.metadata["mode"] for f in fields(RunConfig) if "mode" in f.metadata}
# The engines that honour each knob, and its CLI flag.
KNOB_ENGINES: dict[str, tuple[str, ...]] = {f.name: f.metadata.get("engines", ()) for f in fields(RunConfig) if f.name != "workload"}
KNOB_FLAGS: dict[str, str] = {f.name: f.metadata.get("flag", "--" + f.name.replace("_", "-"))
                              for f in fields(RunConfig) if f.name != "workload"}
# The decide layer's view of the knobs (_knob's search, core, weight): the modes plan's search opens each
# searched knob in, the knobs that define a configuration, and each ranked knob's (weight, plain values).
KNOB_SEARCH: dict[str, tuple[str, ...]] = {f.name: f.metadata["search"] for f in fields(RunConfig) if "search" in f.metadata}
KNOB_CORE: frozenset[str] = frozenset(f.name for f in fields(RunConfig) if f.metadata.get("core"))
KNOB_WEIGHT: dict[str, tuple[int, tuple]] = {f.name: (f.metadata["weight"], f.metadata["plain"])
                                             for f in fields(RunConfig) if "weight" in f.metadata}
# The fields stored documents had before pp_virtual (issue 13 moved the rest out of `extra`): always
# written, so that old fingerprints stay; every later field is written only when not at its default.
ALWAYS_WRITTEN = ("precision", "optimizer", "checkpointing", "attn", "lora_r", "lora_targets", "zero", "fsdp", "tp",
                  "pp", "offload", "compile", "quantization", "cache", "kv_cache_dtype")
OMIT_AT_DEFAULT = frozenset(KNOB_FIELDS) - frozenset(ALWAYS_WRITTEN)
# What `extra` carried before these knobs were fields: key -> field (`recompute` is decoded below).
_LEGACY_EXTRA = {
    "sequence_parallel": "sequence_parallel", "fused_kernels": "fused_kernels",
    "pp_embedding_as_layer": "pp_embedding_as_layer", "torch_num_threads": "torch_num_threads",
    "dataloader_num_workers": "dataloader_num_workers", "dataloader_pin_memory": "dataloader_pin_memory",
}


def _legacy_extra(extra: Any) -> dict[str, Any]:
    """The fields an old document's `extra` dict stands for; unknown keys are refused (a typo was silently ignored)."""
    if not extra:
        return {}
    if not isinstance(extra, dict):
        raise InvalidConfigError(f"extra must be a JSON object of knobs, got {extra!r:.200}: write the knobs as fields.")
    out: dict[str, Any] = {}
    unknown = []
    for key, value in extra.items():
        if key in _LEGACY_EXTRA:
            out[_LEGACY_EXTRA[key]] = value
        elif key == "recompute" and value in ("selective", "full"):
            out["selective_recompute" if value == "selective" else "checkpointing"] = True
        else:
            unknown.append(key)
    if unknown:
        raise InvalidConfigError(
            f"Unknown extra settings {', '.join(map(repr, sorted(unknown)))}: the knobs are fields now "
            f"({', '.join(KNOB_FIELDS)}); `extra` may hold {', '.join(sorted(_LEGACY_EXTRA))}, recompute (selective | full)."
        )
    return out


@functools.cache
def field_help() -> dict[str, str]:
    """Each field's docstring (the string literal under it), whitespace collapsed: its --help text."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(RunConfig)))
    except (OSError, TypeError):  # no source shipped (a zipped install): help without the docstrings
        return {}
    body = tree.body[0].body
    docs: dict[str, str] = {}
    for node, after in zip(body, body[1:], strict=False):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def choices_text(name: str) -> str | None:
    """'a | b | c' for a knob with closed choices, else None."""
    if name == "optimizer":
        return optimizer_choices_text()
    if name in CHOICES:
        return " | ".join(map(str, CHOICES[name]))
    return None


def parse_targets(text: str | None) -> tuple[str, ...]:
    """'q_proj,v_proj' -> ('q_proj', 'v_proj')."""
    if not text:
        return ()
    return tuple(t.strip() for t in text.split(",") if t.strip())


__all__ = [
    "CHOICES", "ENGINES", "INFER_PRECISIONS", "KNOB_CORE", "KNOB_DEFAULTS", "KNOB_ENGINES", "KNOB_FIELDS", "KNOB_FLAGS", "KNOB_MODE",
    "KNOB_SEARCH", "KNOB_WEIGHT", "MODES", "OPTIMIZERS", "TRAIN_PRECISIONS",
    "RunConfig", "choices_text", "field_help", "parse_targets",
]
