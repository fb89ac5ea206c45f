"""The training knob space of `perfscale tune`: candidates, the Trainer-defaults baseline, and which
knobs apply to the workload and the hardware (each left-out value says why).

The values of every knob the estimate can rank (precision, optimizer, attention, the parallel
layouts) come from tune/space.py, the space `plan` searches; this module adds what only a
measurement on this machine decides (eager attention, torch.compile, threads, DataLoader workers)
and the measurement's own economy (micro-batches in powers of two).
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from typing import Any

from perfscale.config.optimizer import DEFAULT_OPTIMIZER
from perfscale.config.run_config import RunConfig
from perfscale.errors import InvalidConfigError
from perfscale.specs.workload import TrainWorkload
from perfscale.tune import space

# transformers 5 TrainingArguments defaults a user gets without tuning (training_args.py):
# per_device_train_batch_size=8, optim="adamw_torch_fused", fp32, no checkpointing, sdpa, no
# torch.compile, dataloader_num_workers=0, torch's default threads.
TRAINER_DEFAULT_MICRO_BATCH = 8
TRAINER_DEFAULT_OPTIMIZER = DEFAULT_OPTIMIZER
LORA_RANK = 16
MAX_MICRO_BATCH = 64


@dataclass(frozen=True)
class Candidate:
    """One point of the space: every knob of a training step at a fixed global batch and sequence.

    Why a class of its own and not a RunConfig (issue 13): a Candidate is a hashable search point that
    halving varies one knob at a time (`dataclasses.replace`), and it holds what no RunConfig knob says:
    `processes` (the torchrun ranks of a measured DDP candidate on this machine, a BenchConfig matter)
    and the micro-batch/accumulation split at a fixed global batch. Its RunConfig knobs are not copied
    by hand: `run_config()` builds the one configuration from them, and tests/test_tune_processes.py
    fails when a Candidate knob does not reach RunConfig or BenchConfig.
    """

    micro_batch: int
    grad_accum: int
    precision: str = "fp32"
    optimizer: str = TRAINER_DEFAULT_OPTIMIZER
    checkpointing: bool = False
    attn: str = "sdpa"
    compile: bool = False
    threads: int | None = None  # None: torch's default (physical cores)
    workers: int = 0  # DataLoader num_workers
    lora_r: int | None = None
    zero: int = 0
    fsdp: int | None = None
    tp: int = 1
    pp: int = 1
    offload: str = "none"
    processes: int = 1  # DDP ranks on this machine (torchrun --nproc_per_node), each with `threads` (None: cores / processes)

    @property
    def multi_device(self) -> bool:
        return bool(self.zero or self.fsdp or self.tp > 1 or self.pp > 1 or self.offload != "none")

    @property
    def name(self) -> str:
        parts = [f"mb{self.micro_batch}x{self.grad_accum}", self.precision, self.optimizer, self.attn]
        if self.checkpointing:
            parts.append("ckpt")
        if self.compile:
            parts.append("compile")
        if self.lora_r:
            parts.append(f"lora{self.lora_r}")
        if self.threads:
            parts.append(f"threads{self.threads}")
        if self.workers:
            parts.append(f"workers{self.workers}")
        for knob, default in (("zero", 0), ("fsdp", None), ("tp", 1), ("pp", 1)):
            if getattr(self, knob) != default:
                parts.append(f"{knob}{getattr(self, knob)}")
        if self.offload != "none":
            parts.append(f"offload-{self.offload}")
        if self.processes > 1:
            parts.append(f"ddp{self.processes}")
        return " ".join(parts)

    def knobs(self) -> dict[str, Any]:
        return asdict(self)

    def run_config(self, seq: int) -> RunConfig:
        return RunConfig(
            workload=TrainWorkload(batch=self.micro_batch, seq=seq, grad_accum=self.grad_accum),
            precision=self.precision, optimizer=self.optimizer, checkpointing=self.checkpointing, attn=self.attn,
            lora_r=self.lora_r, zero=self.zero, fsdp=self.fsdp, tp=self.tp, pp=self.pp, offload=self.offload,
            compile=self.compile, torch_num_threads=self.threads or None, dataloader_num_workers=self.workers,
        )

    def bench_config(self, model: str, seq: int, label: str | None = None, extra: dict[str, Any] | None = None):
        """The measurable BenchConfig: one process, or `processes` DDP ranks under torchrun (gloo on CPU)."""
        from perfscale.measure.bench_config import BenchConfig

        return BenchConfig(
            scenario="train", model=model, run=self.run_config(seq), label=label or self.name, extra=dict(extra or {}),
            nproc=self.processes, strategy="ddp" if self.processes > 1 else "none",  # the workload is per rank
        )

    def differences(self, other: Candidate) -> dict[str, tuple[Any, Any]]:
        """knob -> (other's value, this value) where they differ; micro_batch and grad_accum count as one knob."""
        mine, theirs = self.knobs(), other.knobs()
        out = {k: (theirs[k], mine[k]) for k in mine if mine[k] != theirs[k] and k != "grad_accum"}
        return out


@dataclass(frozen=True)
class TrainSpace:
    """The values searched for each knob, and why other values are left out."""

    global_batch: int
    seq: int
    data_parallel: int
    micro_batches: tuple[int, ...]
    precisions: tuple[str, ...]
    optimizers: tuple[str, ...]
    checkpointing: tuple[bool, ...] = (False, True)
    attns: tuple[str, ...] = ("sdpa", "eager")
    compile: tuple[bool, ...] = (False,)
    threads: tuple[int | None, ...] = (None,)
    workers: tuple[int, ...] = (0,)
    lora_ranks: tuple[int | None, ...] = (None,)
    layouts: tuple[dict[str, Any], ...] = ({},)  # multi-device: zero/fsdp/tp/pp/offload combinations
    processes: tuple[int, ...] = (1,)  # DDP ranks on this CPU machine (each with cores / processes threads)
    notes: tuple[str, ...] = field(default_factory=tuple)

    def knob_values(self) -> dict[str, tuple]:
        """The searched values per knob (the order halving varies them in: biggest effects first)."""
        # processes right after the micro-batch: 2 one-thread ranks vs 1 two-thread process moved tokens/s by 1.48x
        # on this loaded 2-core box (benchmarks/LOG.md, issue 18), and a budget that ends rung 0 early must have tried it.
        return {"micro_batch": self.micro_batches, "processes": self.processes, "precision": self.precisions,
                "checkpointing": self.checkpointing, "lora_r": self.lora_ranks, "compile": self.compile, "attn": self.attns,
                "optimizer": self.optimizers, "threads": self.threads, "workers": self.workers}

    def size(self) -> int:
        n = len(self.layouts)
        for values in self.knob_values().values():
            n *= len(values)
        return n

    def candidates(self) -> list[Candidate]:
        out = []
        for layout in self.layouts:
            dp = self.data_parallel_of(layout)
            for mb, procs, prec, ckpt, lora, comp, attn, opt, thr, wk in itertools.product(*self.knob_values().values()):
                ranks = dp * procs
                accum = self.global_batch // (mb * ranks)
                if self.global_batch % (mb * ranks) or not space.pipeline_schedulable(layout.get("pp", 1), 1, accum):
                    continue
                if procs > 1 and (thr is not None or comp or layout):
                    continue  # ranks share the cores (threads None = cores / processes); compile and layouts: one process
                out.append(Candidate(micro_batch=mb, grad_accum=accum, precision=prec, optimizer=opt, checkpointing=ckpt,
                                     attn=attn, compile=comp, threads=thr, workers=wk, lora_r=lora, processes=procs, **layout))
        return out

    def data_parallel_of(self, layout: dict[str, Any]) -> int:
        return max(1, self.data_parallel // (layout.get("tp", 1) * layout.get("pp", 1)))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["size"] = self.size()
        return data


def baseline_candidate(global_batch: int, data_parallel: int = 1) -> Candidate:
    """What Trainer's defaults give at the same global batch: micro-batch 8 (or less when the global
    batch is smaller), accumulation to reach the global batch."""
    mb = TRAINER_DEFAULT_MICRO_BATCH
    while mb > 1 and global_batch % (mb * data_parallel):
        mb //= 2
    return Candidate(micro_batch=mb, grad_accum=max(1, global_batch // (mb * data_parallel)))


def _powers_of_two_dividing(n: int, cap: int) -> tuple[int, ...]:
    out, b = [], 1
    while b <= min(n, cap):
        if n % b == 0:
            out.append(b)
        b *= 2
    return tuple(out)


def build_space(
    hardware, world_size: int, *, global_batch: int, seq: int, local: bool, allow_lora: bool = False,
    allow_optimizer_change: bool = False, include_compile: bool = False, cpu_cores: int | None = None,
    heads: int | None = None, layers: int | None = None, per_node: int = 1, include_processes: bool = False,
) -> TrainSpace:
    """The knobs that apply to this workload on this hardware."""
    if global_batch < 1 or seq < 1:
        raise InvalidConfigError(f"--global-batch and --seq must be >= 1, got {global_batch} and {seq}.")
    if global_batch % world_size:
        raise InvalidConfigError(
            f"global batch {global_batch} is not divisible by the {world_size} devices: use a multiple of {world_size}, e.g. --global-batch {world_size * max(1, global_batch // world_size)}."
        )
    cpu = hardware.kind == "cpu"
    micro = _powers_of_two_dividing(global_batch // world_size, MAX_MICRO_BATCH)
    precisions, notes = space.train_precisions(hardware)
    optimizers, optimizer_notes = space.train_optimizers(hardware, allow_optimizer_change)
    notes += optimizer_notes
    # eager attention only where this machine measures it; on hardware you do not have, the estimate
    # ranks and it never prefers eager.
    attns = space.attention_choices(measured=local)
    lora = (None, LORA_RANK) if allow_lora else (None,)
    if not allow_lora:
        notes.append("LoRA left out (it trains an adapter, not the model): allow it with --allow-lora")
    compile_values = (False, True) if include_compile else (False,)
    if not include_compile:
        notes.append("torch.compile left out: its first compile takes ~30 s here, more than this budget's share; add --compile (and time) to try it")
    threads: tuple[int | None, ...] = (None,)
    workers: tuple[int, ...] = (0,)
    processes: tuple[int, ...] = (1,)
    if local and cpu:
        cores = cpu_cores or 1
        threads = (None, 1) if cores > 1 else (None,)
        workers = (0, 1)
        if include_processes:
            processes = process_counts(cores, global_batch)
            if len(processes) == 1:
                notes.append(f"processes x threads: one process only ({cores} core(s), global batch {global_batch})")
        elif cores > 1:
            notes.append("processes x threads (DDP ranks under torchrun) left out: each costs a torchrun launch; "
                         "add --processes (or give --budget-seconds 300 or more) to measure them")
    elif not local:
        notes.append("threads and DataLoader workers are not searched on hardware you do not have (not estimable)")
    layouts: list[dict[str, Any]] = [{}]
    if world_size > 1 or not (cpu or local):
        # One GPU you do not have too: ZeRO-3 with CPU offload (ZeRO-Infinity) fits models the GPU alone
        # cannot hold. On this machine's one device the layouts are not measured (one process), so left out.
        layouts = _layouts(world_size, per_node, heads or 1, layers or 1, tpu=hardware.kind == "tpu")
        notes.append(f"{len(layouts)} parallel layouts (ZeRO, FSDP, TP, PP, offload) for {world_size} device(s): estimated, not measured")
    return TrainSpace(
        global_batch=global_batch, seq=seq, data_parallel=world_size, micro_batches=micro, precisions=tuple(precisions),
        optimizers=tuple(optimizers), attns=attns, compile=compile_values, threads=threads, workers=workers, lora_ranks=lora,
        layouts=tuple(layouts), processes=processes, notes=tuple(notes),
    )


MAX_PROCESSES = 4  # DDP ranks searched on one CPU machine: each rank more is a torchrun launch more (chosen)


def process_counts(cores: int, global_batch: int) -> tuple[int, ...]:
    """The process counts of the processes x threads search: the divisors of the usable cores (so that every
    rank gets the same whole number of threads) that also divide the global batch, up to MAX_PROCESSES."""
    return tuple(p for p in range(1, min(cores, MAX_PROCESSES) + 1) if cores % p == 0 and global_batch % p == 0)


def _layouts(world: int, per_node: int, heads: int, layers: int, tpu: bool = False) -> list[dict[str, Any]]:
    """The planner's parallel layouts (tune/space.parallel_layouts) as Candidate fields: pipeline
    interleaving is the planner's alone (one chunk per stage here); ZeRO 0 and no FSDP are left out.
    On a TPU slice, the planner's TPU branch (space.tpu_layouts: XLA SPMD's data parallel, FSDP, tensor)."""
    out = []
    fixed = {"pp_virtual": 1, "pp_embedding_as_layer": False}
    layouts = space.parallel_layouts(world, per_node, heads, layers, fixed)
    if tpu:
        layouts = space.tpu_layouts(layouts, fixed, world, per_node)
    for layout in layouts:
        shard = {"zero": layout["zero"]} if layout["zero"] else {"fsdp": layout["fsdp"]} if layout["fsdp"] else {}
        out.append({**shard, "tp": layout["tp"], "pp": layout["pp"], "offload": layout["offload"]})
    return out


__all__ = ["MAX_PROCESSES", "Candidate", "TrainSpace", "baseline_candidate", "build_space", "process_counts"]
