"""The feasibility filter: before a trial starts, will its configuration fit the device it runs on?

The estimate (closed form, < 1 ms) decides when it is clearly inside or outside the limit; within its
error band of the limit the trace (the real model code on fake tensors: exact allocated bytes,
seconds) decides. Needed bytes = the step's peak allocated bytes (estimate or trace) + the estimate's
fixed overheads (CUDA context, allocator, framework), the figure `perfscale tune` checks too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from perfscale.errors import PerfscaleError

# The estimate's error against the trace: max |error| <= 5% over the accuracy matrix
# (tests/test_estimate_accuracy.py, issue 4). Inside this band of the limit the estimate cannot decide.
ESTIMATE_ERROR_BAND = 0.05
GiB = 2**30


@dataclass(frozen=True)
class Capacity:
    bytes: int
    source: str
    device: str  # the trace's program device: cuda | cpu


@dataclass(frozen=True)
class Feasibility:
    fits: bool
    needed_bytes: int | None
    available_bytes: int
    method: str  # estimate | trace | error
    estimate_bytes: int | None = None
    trace_bytes: int | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_capacity(device_memory_gib: float | None, hardware: str | None) -> tuple[Capacity, Any]:
    """(the memory a trial may use, the topology its estimate uses). --device-memory-gib wins; then
    --hardware's device; else this machine (a GPU's memory, or the RAM available now)."""
    from perfscale.specs import parse_topology
    from perfscale.specs.detect import detect_local

    if hardware is not None and hardware.lower() != "local":
        topology = parse_topology(hardware)
        if topology.world_size != 1:
            from perfscale.errors import TopologyError

            raise TopologyError(f"--hardware {hardware!r} has {topology.world_size} devices: a trial runs on one device. "
                                f"Give one device, e.g. {topology.hardware.name}.")
    else:
        topology = detect_local().topology
    hw = topology.hardware
    device = "cpu" if hw.kind == "cpu" else "cuda"
    if device_memory_gib is not None:
        return Capacity(int(device_memory_gib * GiB), f"--device-memory-gib {device_memory_gib:g}", device), topology
    cap = int(hw.memory_bytes.value or 0)
    source = f"{hw.name} memory"
    if (hardware is None or hardware.lower() == "local") and hw.kind == "cpu":
        import psutil

        avail = psutil.virtual_memory().available
        if avail < cap or not cap:
            cap, source = int(avail), "RAM available now (psutil)"
    return Capacity(cap, source, device), topology


class FeasibilityFilter:
    """Checks sampled configurations; traces are cached per RunConfig (lr and the like do not change memory)."""

    def __init__(self, spec, topology, capacity: Capacity, *, use_trace: bool = True):
        self.spec = spec
        self.topology = topology
        self.capacity = capacity
        self.use_trace = use_trace
        self._cache: dict[str, Feasibility] = {}
        self.traces = 0

    def check(self, run) -> Feasibility:
        import json

        key = json.dumps(run.to_dict(), sort_keys=True, default=str)
        if key not in self._cache:
            self._cache[key] = self._check(run)
        return self._cache[key]

    def _check(self, run) -> Feasibility:
        from perfscale.estimate import estimate

        cap = self.capacity.bytes
        try:
            mem = estimate(self.spec, run, self.topology).memory
        except PerfscaleError as exc:
            return Feasibility(False, None, cap, "error", reason=f"cannot be estimated: {exc}")
        est_total, overhead = mem.total_bytes, mem.overhead_bytes
        needed, method, traced = est_total, "estimate", None
        near = abs(est_total - cap) <= ESTIMATE_ERROR_BAND * cap
        if near and self.use_trace:
            from perfscale.trace import trace

            try:
                traced = trace(self.spec, run, device=self.capacity.device).peak_bytes
                self.traces += 1
                needed, method = traced + overhead, "trace"
            except PerfscaleError as exc:  # the estimate decides (noted)
                method = f"estimate (trace failed: {str(exc)[:120]})"
        fits = needed <= cap
        reason = None if fits else (f"would not fit: {needed / GiB:.2f} GiB needed, {cap / GiB:.2f} available "
                                    f"({self.capacity.source}; by {method.split(' ')[0]})")
        return Feasibility(fits, int(needed), cap, method, int(est_total), int(traced + overhead) if traced is not None else None, reason)


__all__ = ["ESTIMATE_ERROR_BAND", "Capacity", "Feasibility", "FeasibilityFilter", "resolve_capacity"]
