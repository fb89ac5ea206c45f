"""Typed results of the estimate engine: one configuration's memory and time (Estimate), and the plain
numbers of the search's hot path (Evaluation), from which an Estimate is built."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

BREAKDOWN_KEYS = ("parameters", "gradients", "optimizer_state", "activations", "temporaries", "kv_cache", "other")


@dataclass(frozen=True)
class Overhead:
    label: str
    bytes: int
    source: str


@dataclass(frozen=True)
class MemoryEstimate:
    """Per device. `peak_bytes` = allocated tensor bytes (trace's meaning), overheads NOT included."""

    peak_bytes: int
    breakdown: dict[str, int]
    phase: str
    overheads: tuple[Overhead, ...]
    capacity_bytes: int
    # Host RAM per node that CPU offload needs (offloaded states x devices per node), and the
    # node's host memory (None: unknown, not checked). See estimate/host.py.
    host_bytes_per_node: int = 0
    host_capacity_bytes: int | None = None
    # Training: the peak of the optimizer step itself (parameters + gradients + state + the optimizer's
    # temporaries, config/optimizer.py), also when another phase holds the overall peak; trace's
    # phase_peaks["optimizer"]. None for inference.
    optimizer_peak_bytes: int | None = None

    @property
    def overhead_bytes(self) -> int:
        return sum(o.bytes for o in self.overheads)

    @property
    def total_bytes(self) -> int:
        """Peak plus the overhead lines: what must fit in the device."""
        return self.peak_bytes + self.overhead_bytes

    @property
    def headroom_bytes(self) -> int:
        return self.capacity_bytes - self.total_bytes

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["overheads"] = [asdict(o) for o in self.overheads]
        data["total_bytes"] = self.total_bytes
        data["headroom_bytes"] = self.headroom_bytes
        return data


@dataclass(frozen=True)
class TimeEstimate:
    """Training: one optimizer step. Inference: one generate() call (prefill + new tokens)."""

    step_seconds: float
    tokens_per_second: float
    split: dict[str, float]  # compute, exposed_comm, bubble, recompute (training)
    mfu: float | None
    efficiency: float
    native_dtype: bool
    ttft_seconds: float | None = None
    per_token_seconds: float | None = None
    train_seconds: float | None = None  # time to train on the token budget, when given
    cost: float | None = None  # device-hours x price, when given

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Estimate:
    """Memory and time of one configuration on one topology."""

    model: str
    topology: str
    world_size: int
    knobs: dict[str, Any]
    memory: MemoryEstimate
    time: TimeEstimate
    fits: bool
    binding: str  # memory | host-memory | compute | communication | bubble | bandwidth
    data_parallel: int
    notes: tuple[str, ...] = ()
    run_config: dict[str, Any] | None = None  # RunConfig.to_dict() of this configuration (rebuild with from_dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "topology": self.topology,
            "world_size": self.world_size,
            "data_parallel": self.data_parallel,
            "knobs": self.knobs,
            "run_config": self.run_config,
            "memory": self.memory.to_dict(),
            "time": self.time.to_dict(),
            "fits": self.fits,
            "binding": self.binding,
            "notes": list(self.notes),
        }


@dataclass(frozen=True, slots=True)
class Evaluation:
    """All numbers of one configuration as estimate/core.evaluate computes them (bytes, seconds; no rounding).

    The search ranks thousands of these; to_estimate turns the few it keeps into an Estimate."""

    mem: dict[str, Any]  # estimate/memory.train_memory or estimate/inference.infer_memory: peak, phase, breakdown...
    over: tuple[tuple[str, float, str], ...]  # device overheads (label, bytes, source): estimate/overheads.py
    total: float  # peak + overheads: what must fit in the device
    capacity: float  # device memory
    fits: bool
    short: float  # bytes missing on the device plus on the host (0 when it fits)
    device_short: float
    host_short: float
    host: float  # host RAM per node that CPU offload needs
    host_capacity: float | None  # host RAM per node (None: unknown, not checked)
    world: int
    step: float  # seconds of one optimizer step (training) or one generate() call (inference)
    tps: float  # tokens per second over all devices
    split: dict[str, float]  # compute, exposed_comm, bubble, recompute (+ decode for inference)
    binding: str  # memory | host-memory | compute | communication | bubble | bandwidth
    mfu: float | None
    efficiency: float
    native: bool  # the precision's matmuls run natively (not emulated)
    calibrated: bool = False  # compute time from operations measured on this CPU
    uncalibrated: str | None = None  # why this CPU's calibration did not apply, when it was given
    ttft: float | None = None  # inference: prefill seconds
    per_token: float | None = None  # inference: seconds per new token
    bound: str | None = None  # inference decode: bandwidth | compute

    @property
    def peak(self) -> float:
        """Allocated tensor bytes at the peak (overheads not included)."""
        return self.mem["peak"]
