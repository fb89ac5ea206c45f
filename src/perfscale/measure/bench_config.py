"""BenchConfig: one configuration to measure (scenario + model + RunConfig + bench-only knobs).

What RunConfig holds (torch.compile among it) is not repeated here: `runtime` says which library runs the
model, and the `backend` that documents and results keep is derived from the two (split_backend reads it).

The same object is the Python API of `measure`/`compare` and the JSON file format that bench writes and
compare reads (compare's inline `key=value` syntax is CLI code: cli/inline_config.py). MeasureOptions says
how to measure it. All problems are checked here, before any process starts.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from perfscale.config.precision import PRECISIONS
from perfscale.config.run_config import KNOB_DEFAULTS, RunConfig
from perfscale.errors import InvalidConfigError, UnsupportedModelError
from perfscale.measure.stats import StopRule
from perfscale.runtimes.encoder import BACKENDS as _ENCODER_BACKENDS
from perfscale.runtimes.encoder import QUANTIZATIONS as ENCODER_QUANTIZATION
from perfscale.specs.workload import DEFAULT_INFER, DEFAULT_TRAIN, InferWorkload

SCENARIOS = ("train", "encode", "generate", "load")
TEST_SCENARIOS = ("selftest",)  # a tiny matmul with fault injection, to test the harness itself
# The libraries that run a model: torch runs every scenario, eager or torch.compile'd (RunConfig.compile);
# the encoder runtimes' others (onnxruntime, openvino: runtimes/encoder.py owns the list) run encode only.
TORCH = "torch"
RUNTIMES = (TORCH, *(b for b in _ENCODER_BACKENDS if b not in ("eager", "compile")))
# The one-string name that documents and results keep under "backend" (and --backend, compare's backend=):
# a runtime, with torch's two ways named eager and compile.
BACKENDS = tuple(dict.fromkeys(("eager", "compile", *_ENCODER_BACKENDS)))
DEVICES = ("auto", "cpu", "cuda")
DEFAULT_MODELS = {"train": "perfscale-tiny-llama", "generate": "perfscale-tiny-llama", "encode": "minilm", "load": "perfscale-tiny-llama",
                  "selftest": "none"}
# Encoder quantization schemes: perfscale.runtimes.encoder owns the list (ENCODER_QUANTIZATION).
# Workload defaults per scenario when the user gives none: train and generate use every command's
# defaults (specs/workload.py); encode and the harness's selftest have their own kind of workload.
DEFAULT_WORKLOADS = {
    "train": DEFAULT_TRAIN,
    "generate": DEFAULT_INFER,
    # encode: `batch` sentences per forward, `prompt` = truncation length in tokens (MiniLM: 256).
    "encode": InferWorkload(batch=32, prompt=256, new_tokens=0),
    "selftest": InferWorkload(batch=1, prompt=64, new_tokens=0),
    "load": InferWorkload(batch=1, prompt=1, new_tokens=0),  # load: nothing runs through the model (scenarios/load.py)
}


# What `extra` may hold, and who reads it: a typo in a config file is refused, not ignored.
EXTRA_KEYS = {
    "fault": "selftest: a fault to inject (none, oom, hang, crash, error)",
    "size": "selftest: matrix side", "sleep": "selftest: seconds of sleep per step",
    "tune_fault": "tune's trial worker: a fault to inject",
    "encoder": "encode: further EncoderSettings fields", "onnx_cache_dir": "encode: where exported ONNX files go",
    "fault_rank": "multi-process: the only rank that injects `fault` (default: every rank)",
    "load": "load: the from_pretrained path (defaults, dtype, offload: scenarios/load.py)",
}
# Multi-process layouts measured under torchrun (measure/launcher.py): DDP, FSDP2 (`fully_shard` per
# decoder layer and the root), or DeepSpeed ZeRO stage `zero` through accelerate (optional extra). `none` is
# one plain process; more than one rank without a strategy is DDP.
# FSDP2's knobs are RunConfig's: a "-mixed" precision is MixedPrecisionPolicy(param_dtype=16-bit,
# reduce_dtype=fp32) plus autocast (accelerate's FSDP2 setup, as the trace and the estimate mean it),
# offload optimizer+params is CPUOffloadPolicy, fsdp_reshard is reshard_after_forward.
STRATEGIES = ("none", "ddp", "fsdp2", "deepspeed")
MAX_NPROC = 256  # ranks per node: beyond any machine's cores (a typo, not a plan)
MAX_NNODES = 16  # torchrun agents on this one machine (a localhost rendezvous), not a cluster
# Multi-process fields and their defaults: documents leave them out at the default, so that the
# fingerprints of one-process configurations stay what they were before these fields existed.
DIST_DEFAULTS = {"nproc": 1, "nnodes": 1, "strategy": "none"}
# The FSDP2 knobs bench documents kept at their top level before they were RunConfig's (issue 13): from_dict
# maps them (_legacy_fsdp). fsdp_mp was MixedPrecisionPolicy(param_dtype=fsdp_mp, reduce_dtype=fp32).
LEGACY_FSDP_KEYS = ("fsdp_reshard", "fsdp_mp", "fsdp_offload")
_LEGACY_FSDP_MP = ("none", "bf16", "fp16")
# RunConfig knobs that bench documents keep at their top level (under these names) since before they were knobs.
_RUN_KNOBS_AT_TOP = {"threads": "torch_num_threads", "dataloader_workers": "dataloader_num_workers",
                     "pin_memory": "dataloader_pin_memory"}


def split_backend(backend: str, run_compile: bool | None = None) -> tuple[str, bool]:
    """A `backend` name (BACKENDS: eager | compile | onnxruntime | openvino) -> (runtime, RunConfig.compile).

    run_compile: the run's own compile knob where one was given: compile=true with backend eager is torch.compile
    (as --compile always was); backend compile with compile=false is a contradiction."""
    if backend not in BACKENDS:
        raise InvalidConfigError(f"backend {backend!r} is not one of: {', '.join(BACKENDS)} "
                                 "(compile = torch.compile; onnxruntime and openvino run the encode scenario).")
    compiled = backend == "compile"
    if compiled and run_compile is False:
        raise InvalidConfigError("backend 'compile' contradicts compile=false: give one of them.")
    return (TORCH if backend in ("eager", "compile") else backend), compiled or run_compile is True


@dataclass(frozen=True)
class BenchConfig:
    """What to measure. Knobs not in RunConfig live here (nothing RunConfig holds: torch.compile is run.compile,
    and `backend` is derived from it and `runtime`); RunConfig's multi-device knobs are refused.

    Threads, DataLoader workers and pin_memory are RunConfig knobs (run.torch_num_threads, ...): `threads`,
    `dataloader_workers` and `pin_memory` read them, and the JSON keeps them at the top level as before."""

    scenario: str = "train"
    model: str | None = None  # catalogue name, local folder, or hub id; None = the scenario's default
    run: RunConfig | None = None  # None = the scenario's default workload with default knobs
    runtime: str = TORCH  # torch (eager, or torch.compile with run.compile) | onnxruntime | openvino (encode only)
    device: str = "auto"  # auto = cuda when available, else cpu
    encoder_quantization: str = "none"  # encode: none | int8-dynamic | int8-per-channel | ... (runtimes.encoder)
    sentences: int | None = None  # encode: sentences per iteration; None = 4 batches
    seed: int = 0
    label: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # harness and runtime settings: EXTRA_KEYS
    nproc: int = 1  # processes per node (torchrun --nproc-per-node); the workload is per rank
    nnodes: int = 1  # torchrun agents on this machine, joined by a c10d rendezvous on 127.0.0.1
    strategy: str = "none"  # none | ddp | fsdp2 (STRATEGIES); several ranks without one: ddp

    def __post_init__(self) -> None:
        if self.strategy == "none" and isinstance(self.nproc, int) and isinstance(self.nnodes, int) and self.nproc * self.nnodes > 1:
            object.__setattr__(self, "strategy", "ddp")
        if self.run is None:
            workload = DEFAULT_WORKLOADS.get(self.scenario, DEFAULT_WORKLOADS["train"])
            object.__setattr__(self, "run", RunConfig(workload=workload))
        if self.model is None:
            object.__setattr__(self, "model", DEFAULT_MODELS.get(self.scenario, DEFAULT_MODELS["train"]))
        if self.scenario == "load" and self.device == "auto":  # load measures host memory (scenarios/load.py)
            object.__setattr__(self, "device", "cpu")
        problems = self.problems()
        if problems:
            raise InvalidConfigError(
                "Invalid bench configuration:\n  - " + "\n  - ".join(problems) + "\nFix these values and run again."
            )
        unsupported = self.unsupported()
        if unsupported:
            raise UnsupportedModelError(unsupported)

    def problems(self) -> list[str]:
        p: list[str] = []
        if self.scenario not in SCENARIOS + TEST_SCENARIOS:
            p.append(f"scenario {self.scenario!r} is not one of: {', '.join(SCENARIOS)}")
            return p
        if not isinstance(self.model, str) or not self.model.strip():
            p.append(f"model must be a catalogue name, a local folder or a hub id, got {self.model!r} (see `perfscale models`)")
        if not isinstance(self.extra, dict):
            p.append(f"extra must be a JSON object, got {self.extra!r}")
        else:
            unknown = sorted(set(self.extra) - set(EXTRA_KEYS))
            if unknown:
                p.append(f"unknown extra settings {', '.join(map(repr, unknown))}: valid ones are {', '.join(EXTRA_KEYS)}")
            fault = self.extra.get("fault", "none")
            if self.scenario == "selftest" and fault not in ("none", "oom", "hang", "crash", "error"):
                p.append(f"selftest fault {fault!r} is not one of: none, oom, hang, crash, error")
        if self.runtime not in RUNTIMES:
            p.append(f"runtime {self.runtime!r} is not one of: {', '.join(RUNTIMES)} (torch.compile is run.compile, "
                     "--compile or backend=compile)")
        if self.device not in DEVICES:
            p.append(f"device {self.device!r} is not one of: {', '.join(DEVICES)}")
        elif self.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                p.append("device cuda: torch sees no CUDA device here (CPU-only build or no GPU): use device cpu or auto")
        if self.encoder_quantization not in ENCODER_QUANTIZATION:
            p.append(f"encoder quantization {self.encoder_quantization!r} is not one of: {', '.join(ENCODER_QUANTIZATION)}")
        if self.sentences is not None and (not isinstance(self.sentences, int) or self.sentences < 1):
            p.append(f"sentences must be a positive integer, got {self.sentences!r}")
        wants_train = self.scenario == "train"
        if wants_train != self.run.is_train and self.scenario != "selftest":
            p.append(
                f"scenario {self.scenario} needs {'a training' if wants_train else 'an inference'} workload, "
                f"got {self.run.workload.mode}: {'use --batch/--seq' if wants_train else 'add --infer or use --prompt/--new-tokens'}"
            )
        if self.runtime in RUNTIMES and self.runtime != TORCH and self.scenario != "encode":
            p.append(f"runtime {self.runtime} is for the encode scenario only, not {self.scenario}: use runtime {TORCH} "
                     "(backend eager or compile)")
        elif self.runtime in RUNTIMES and self.runtime != TORCH and self.run.compile:
            p.append(f"compile=True is torch.compile, which runtime {self.runtime} does not run: drop compile, "
                     f"or use runtime {TORCH} (backend compile)")
        if self.encoder_quantization != "none" and self.scenario != "encode":
            p.append("encoder quantization applies to the encode scenario only")
        if self.scenario == "generate" and self.run.workload.new_tokens < 1:
            p.append("generate needs new_tokens >= 1")
        p += self._distributed_problems()
        if self.scenario == "load":
            from perfscale.measure.scenarios.load import load_problems

            p += load_problems(self)
        if self.scenario == "encode" and not p:
            from perfscale.errors import PerfscaleError
            from perfscale.measure.scenarios.encode import encoder_settings

            try:  # the runtime's own validation, before any process starts
                encoder_settings(self)
            except PerfscaleError as exc:
                p.append(str(exc))
            except TypeError as exc:
                p.append(f"extra['encoder'] holds an unknown encoder setting: {exc}")
        return p

    def _distributed_problems(self) -> list[str]:
        p: list[str] = []
        for name, top in (("nproc", MAX_NPROC), ("nnodes", MAX_NNODES)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= top:
                p.append(f"{name} must be an integer from 1 to {top}, got {value!r}")
        if self.strategy == "fsdp":  # FSDP1, FullyShardedDataParallel: named, so refused with the reason
            p.append("strategy fsdp (FSDP1, FullyShardedDataParallel) is not measured: torch 2.13 refuses it without an "
                     "accelerator ('FSDP needs a non-CPU accelerator device') and deprecates it for fully_shard; "
                     "use --strategy fsdp2, the same full shard")
        elif self.strategy not in STRATEGIES:
            p.append(f"strategy {self.strategy!r} is not one of: {', '.join(STRATEGIES)}")
        if p:
            return p
        fsdp_knobs = self._fsdp_knobs()
        if fsdp_knobs and self.strategy != "fsdp2":
            p.append(f"{', '.join(fsdp_knobs)} apply to strategy fsdp2 only, not {self.strategy}: add --strategy fsdp2 or drop them")
        elif self.run.offload == "optimizer":
            p.append("offload optimizer (the optimizer state alone) has no FSDP2 policy: CPUOffloadPolicy moves parameters, "
                     "gradients and the optimizer step to the CPU: use offload optimizer+params, or `perfscale plan` for it")
        if self.strategy in ("fsdp2", "deepspeed") and self.scenario == "selftest":
            p.append("the selftest scenario has no model to shard: use strategy ddp")
        if self.strategy == "deepspeed":
            import importlib.util

            if importlib.util.find_spec("deepspeed") is None:
                p.append("strategy deepspeed needs DeepSpeed, which is not installed: pip install 'perfscale[deepspeed]' "
                         "(deepspeed, accelerate), or use --strategy fsdp2 (the same full shard as ZeRO-3)")
        elif self.run.zero:
            p.append(f"zero {self.run.zero} is measured by DeepSpeed: add --strategy deepspeed (with --nproc N), or drop --zero")
        if self.distributed and self.scenario not in ("train", "selftest"):
            p.append(f"--nproc/--nnodes/--strategy measure training (DDP, FSDP2) under torchrun; {self.scenario} runs in one process: "
                     "drop them, or use --scenario train")
        if self.distributed and self.device == "cuda":
            import torch

            have = torch.cuda.device_count()
            if self.nproc > have:
                p.append(f"nproc {self.nproc} on cuda needs one GPU per rank (NCCL); this machine has {have}: use --nproc {max(have, 1)} or --device cpu")
        return p

    def _fsdp_knobs(self) -> list[str]:
        """The RunConfig knobs off their default that only the fsdp2 strategy measures (reshard_after_forward,
        CPU offload), as key=value: the layout's part of `display`."""
        r = self.run
        return [f"{k}={getattr(r, k)}" for k in ("fsdp_reshard", "offload") if getattr(r, k) != KNOB_DEFAULTS[k]]

    @property
    def world_size(self) -> int:
        """Ranks of the job: processes per node x nodes."""
        return self.nproc * self.nnodes

    @property
    def distributed(self) -> bool:
        """Measured under torchrun (a strategy, even with one rank) rather than as one plain process."""
        return self.strategy != "none"

    def unsupported(self) -> str | None:
        """Knobs a single-process benchmark cannot run; None when all is runnable."""
        r = self.run
        multi = [f"{k}={getattr(r, k)}" for k, default in (("zero", 0), ("fsdp", None), ("tp", 1), ("pp", 1))
                 if getattr(r, k) != default and not (k == "zero" and self.strategy == "deepspeed")]
        if multi:
            return (
                f"perfscale bench measures data parallel layouts with --nproc N --strategy ddp|fsdp2|deepspeed (under torchrun); "
                f"{', '.join(multi)} is not measurable here. Drop these knobs and use --strategy fsdp2 for a full shard, "
                "or `perfscale trace`/`plan` for tensor/pipeline parallel and ZeRO layouts."
            )
        if r.kv_cache_dtype != "auto":
            return f"kv_cache_dtype {r.kv_cache_dtype!r} is not measurable with transformers' generate here: use auto"
        return None

    # ----- identity and serialisation -----
    @property
    def backend(self) -> str:
        """The one-string name results and documents keep ("backend"): the runtime; torch's is eager or compile (run.compile)."""
        if self.runtime == TORCH:
            return "compile" if self.run.compile else "eager"
        return self.runtime

    @property
    def threads(self) -> int | None:
        """torch/ORT intra-op threads (RunConfig.torch_num_threads); None = library default."""
        return self.run.torch_num_threads

    @property
    def dataloader_workers(self) -> int:
        """train: DataLoader num_workers (RunConfig.dataloader_num_workers)."""
        return self.run.dataloader_num_workers

    @property
    def pin_memory(self) -> bool:
        """train: DataLoader pin_memory (RunConfig.dataloader_pin_memory; CUDA only has an effect)."""
        return self.run.dataloader_pin_memory

    @property
    def is_inference(self) -> bool:
        return self.scenario in ("encode", "generate")

    @property
    def display(self) -> str:
        """Short human label: the user's label or the knobs that differ from defaults."""
        if self.label:
            return self.label
        parts = [self.scenario, self.extra.get("load", "defaults") if self.scenario == "load" else self.backend]
        if not self.run.prec.is_fp32:
            parts.append(self.run.precision)
        if self.encoder_quantization != "none":
            parts.append(self.encoder_quantization)
        if self.run.checkpointing:
            parts.append("ckpt")
        if self.run.lora:
            parts.append(f"lora{self.run.lora_r}")
        if self.scenario == "generate" and self.run.cache != "dynamic":
            parts.append(f"{self.run.cache}-cache")
        if self.distributed:
            strategy = f"zero{self.run.zero}" if self.strategy == "deepspeed" else self.strategy  # DeepSpeed: its stage
            parts.append(f"{strategy}x{self.world_size}" + (f" ({self.nnodes} nodes)" if self.nnodes > 1 else ""))
            parts += self._fsdp_knobs()
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "run" or (f.name in DIST_DEFAULTS and getattr(self, f.name) == DIST_DEFAULTS[f.name]):
                continue
            if f.name == "runtime":  # in its place, the "backend" documents have always had (derived with run.compile)
                data["backend"] = self.backend
            else:
                data[f.name] = getattr(self, f.name)
        run = self.run.to_dict()
        for top, knob in _RUN_KNOBS_AT_TOP.items():  # where documents (and fingerprints) have always had them
            run.pop(knob, None)
            data[top] = getattr(self.run, knob)
        return {**data, "run": run}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchConfig:
        if not isinstance(data, dict):
            raise InvalidConfigError(f"A bench configuration is a JSON object, got {type(data).__name__}: {data!r:.200}.")
        data = dict(data)
        known = ({f.name for f in fields(cls)} - {"runtime"}) | {"backend"} | set(_RUN_KNOBS_AT_TOP) | set(LEGACY_FSDP_KEYS)
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidConfigError(f"Unknown bench configuration keys: {', '.join(unknown)}. Valid keys: {', '.join(sorted(known))}.")
        if data.get("run") is not None and not isinstance(data["run"], dict):
            raise InvalidConfigError(f"The bench configuration's 'run' must be a JSON object (a RunConfig), got {data['run']!r:.200}.")
        at_top = {knob: data.pop(top) for top, knob in _RUN_KNOBS_AT_TOP.items() if top in data}
        at_top = {knob: value for knob, value in at_top.items() if value != KNOB_DEFAULTS[knob]}
        run = data.get("run")
        at_top |= _legacy_fsdp({key: data.pop(key) for key in LEGACY_FSDP_KEYS if key in data}, (run or {}).get("precision", "fp32"))
        data["runtime"], compiled = split_backend(data.pop("backend", "eager"), run.get("compile") if run else None)
        if run is not None or at_top or compiled:
            run = run or {"workload": DEFAULT_WORKLOADS.get(data.get("scenario", "train"), DEFAULT_WORKLOADS["train"]).to_dict()}
            data["run"] = RunConfig.from_dict({**run, **at_top, **({"compile": True} if compiled else {})})
        return cls(**data)

    def fingerprint(self) -> str:
        """Stable hash of what is measured (label excluded): tune finds earlier runs by it."""
        data = self.to_dict()
        data.pop("label", None)
        # RunConfig documents carried an `extra` dict (always {} here) until its knobs became fields:
        # hashed as before, so that stored runs are still found.
        data["run"].setdefault("extra", {})
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _legacy_fsdp(old: dict[str, Any], precision: Any) -> dict[str, Any]:
    """The RunConfig values an old document's top-level FSDP2 keys stand for: fsdp_reshard -> fsdp_reshard,
    fsdp_offload true -> offload optimizer+params (CPUOffloadPolicy), fsdp_mp bf16|fp16 (MixedPrecisionPolicy over
    fp32 weights, which was refused with any other precision) -> precision bf16-mixed|fp16-mixed."""
    out: dict[str, Any] = {}
    if "fsdp_reshard" in old and old["fsdp_reshard"] is not True:
        out["fsdp_reshard"] = old["fsdp_reshard"]  # RunConfig refuses a value that is not a bool
    offload = old.get("fsdp_offload", False)
    if not isinstance(offload, bool):
        raise InvalidConfigError(f"fsdp_offload must be true or false, got {offload!r:.100} (it is offload optimizer+params now).")
    if offload:
        out["offload"] = "optimizer+params"
    mp = old.get("fsdp_mp", "none")
    if mp not in _LEGACY_FSDP_MP:
        raise InvalidConfigError(f"fsdp_mp {mp!r:.100} is not one of: {', '.join(_LEGACY_FSDP_MP)}; FSDP2's mixed precision is "
                                 "precision bf16-mixed or fp16-mixed now: write that under run.precision and drop fsdp_mp.")
    if mp != "none":
        mixed = f"{mp}-mixed"
        if not (precision == mixed or (precision in PRECISIONS and PRECISIONS[precision].is_fp32)):
            raise InvalidConfigError(
                f"fsdp_mp {mp!r} with precision {precision!r} cannot be mapped: fsdp_mp (FSDP2's MixedPrecisionPolicy("
                f"param_dtype={mp}, reduce_dtype=fp32) over fp32 weights) is precision {mixed} now (with autocast, as "
                f"accelerate sets FSDP2 up): write precision {mixed} and drop fsdp_mp.")
        out["precision"] = mixed
    return out


@dataclass(frozen=True)
class GateThresholds:
    """Accuracy gate of an inference variant against the fp32 eager reference on the same inputs.

    Embeddings: cosine per sentence. 0.99 mean keeps retrieval rankings (FIELD-NOTES: ORT int8
    per-channel 0.990/0.978 passes; default dynamic int8 0.943/0.854 does not).
    LMs: teacher-forced logits on the benchmark's prompts; top-1 agreement and max |logit diff|.
    """

    min_mean_cosine: float = 0.99
    min_min_cosine: float = 0.95
    min_top1_agreement: float = 0.95
    max_abs_logit_diff: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Warm-up beyond this many iterations is a typo, not a plan: torch.compile and ORT warm up in 1-3.
MAX_WARMUP = 10_000


@dataclass(frozen=True)
class MeasureOptions:
    """How to measure (not what): warm-up, stop rule, limits and the accuracy gate."""

    stop: StopRule = field(default_factory=lambda: StopRule())
    warmup: int = 2  # untimed iterations; the first includes torch.compile / ORT session warm-up
    time_limit: float | None = None  # seconds for the whole process (load + warm-up + timing); None = stop.max_time + 600
    gate: bool = True  # inference: compare outputs with the fp32 eager reference
    thresholds: GateThresholds = field(default_factory=GateThresholds)
    profile_memory: bool = True  # CPU: one extra untimed, profiled iteration for the peak live tensor bytes

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.warmup, int) or not 1 <= self.warmup <= MAX_WARMUP:
            problems.append(f"warmup must be an integer from 1 to {MAX_WARMUP:,} (the first iteration is never timed), "
                            f"got {self.warmup!r}")
        if self.time_limit is not None and not 0 < self.time_limit < float("inf"):  # NaN fails too
            problems.append(f"time_limit must be a finite number of seconds > 0, got {self.time_limit!r}")
        if problems:
            raise InvalidConfigError("Bad measurement options: " + "; ".join(problems) + ".")

    @property
    def effective_time_limit(self) -> float:
        return self.time_limit if self.time_limit is not None else self.stop.max_time + 600.0

    def to_dict(self) -> dict[str, Any]:
        return {"stop": self.stop.to_dict(), "warmup": self.warmup, "time_limit": self.time_limit, "gate": self.gate,
                "thresholds": self.thresholds.to_dict(), "profile_memory": self.profile_memory}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MeasureOptions:
        data = dict(data)
        data["stop"] = StopRule.from_dict(data["stop"])
        data["thresholds"] = GateThresholds(**data["thresholds"])
        return cls(**data)


def load_config_file(path: Path) -> BenchConfig:
    """A BenchConfig from JSON: a BenchConfig dict, a bench result (`config` key), or a RunConfig dict."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:  # missing, a directory, not UTF-8, not JSON
        raise InvalidConfigError(f"Cannot read configuration file {path}: {exc}. Write one with `perfscale bench --save-config PATH`.") from exc
    try:
        if isinstance(data, dict) and isinstance(data.get("configurations"), list) and data["configurations"]:
            data = data["configurations"][0]
        if isinstance(data, dict) and isinstance(data.get("config"), dict):
            data = data["config"]
        if isinstance(data, dict) and "scenario" in data:
            return BenchConfig.from_dict(data)
        if isinstance(data, dict) and "workload" in data:  # a RunConfig (plan/tune)
            rc = RunConfig.from_dict(data)
            return BenchConfig(scenario="train" if rc.is_train else "generate", run=rc)
    except InvalidConfigError as exc:
        raise InvalidConfigError(f"{path}: {exc}") from exc
    except (TypeError, ValueError, AttributeError, KeyError) as exc:  # a value of the wrong JSON type
        raise InvalidConfigError(f"{path} holds a malformed bench configuration ({type(exc).__name__}: {exc}). "
                                 "Write one with `perfscale bench --save-config PATH`.") from exc
    raise InvalidConfigError(f"{path} holds no bench configuration (no 'scenario' or 'workload' key). "
                             "Write one with `perfscale bench --save-config PATH`.")


__all__ = [
    "BACKENDS", "BenchConfig", "DEFAULT_MODELS", "DIST_DEFAULTS", "RUNTIMES", "STRATEGIES", "GateThresholds", "MeasureOptions",
    "SCENARIOS", "TORCH", "load_config_file", "split_backend",
]
