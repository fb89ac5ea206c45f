"""TraceResult: what one trace found, per device, in bytes and seconds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from perfscale.trace.tracker import BREAKDOWN_KEYS

TRAIN_PHASES = ("forward", "backward", "optimizer")
INFER_PHASES = ("prefill", "decode")


@dataclass
class RawTrace:
    """One traced run (possibly of a cut model): region peaks and module peaks, in bytes."""

    regions: dict[tuple, tuple[int, dict[str, int]]]  # (step, phase, anchor) -> (total, breakdown)
    module_peaks: dict[str, int]
    num_layers: int | None
    kv_cache_bytes: int | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class TraceResult:
    """Peak allocated bytes per device of a traced training step or inference run.

    `peak_bytes` is the program's allocated bytes (the CUDA program's, 512-B rounded, when the
    trace emulates CUDA); `device_overheads` (CUDA context, cuBLAS workspace) are not in it.
    """

    model: str
    config: dict[str, Any]
    device: str  # the device whose program the numbers describe: "cuda" or "cpu"
    traced_on: str  # "fake-cuda" | "fake-cpu" | "fake-cpu emulating cuda"
    peak_bytes: int
    breakdown: dict[str, int]
    phase: str
    phase_peaks: dict[str, int]
    top_modules: list[dict[str, Any]]
    device_overheads: dict[str, Any]
    trace_seconds: float
    method: str  # "full" | "repeat k,k+1 -> L" (layer-repetition extrapolation)
    world_size: int = 1
    kv_cache_bytes: int | None = None
    prefill_peak_bytes: int | None = None
    decode_peak_bytes: int | None = None
    notes: list[str] = field(default_factory=list)
    architecture: str = ""  # the traced class, e.g. BertForSequenceClassification
    task: str = ""  # its head (specs/heads.py TASKS, or "base")

    def __post_init__(self) -> None:
        if sum(self.breakdown.values()) != self.peak_bytes:
            raise ValueError("internal: breakdown does not sum to peak_bytes")

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "config": self.config,
            "device": self.device,
            "traced_on": self.traced_on,
            "peak_bytes": self.peak_bytes,
            "breakdown": dict(self.breakdown),
            "phase": self.phase,
            "phase_peaks": dict(self.phase_peaks),
            "top_modules": list(self.top_modules),
            "device_overheads": self.device_overheads,
            "trace_seconds": self.trace_seconds,
            "method": self.method,
            "world_size": self.world_size,
            "kv_cache_bytes": self.kv_cache_bytes,
            "prefill_peak_bytes": self.prefill_peak_bytes,
            "decode_peak_bytes": self.decode_peak_bytes,
            "notes": list(self.notes),
            "architecture": self.architecture,
            "task": self.task,
        }


def summarize(raw: RawTrace, phases: tuple[str, ...]) -> dict[str, Any]:
    """Global peak, its phase and breakdown, per-phase peaks, from a (possibly extrapolated) trace."""
    best_key, best = None, (-1, {})
    phase_peaks = dict.fromkeys(phases, 0)
    for key, (total, snap) in raw.regions.items():
        phase = key[1]
        phase_peaks[phase] = max(phase_peaks.get(phase, 0), total)
        if total > best[0]:
            best_key, best = key, (total, snap)
    if best_key is None:
        return {"peak_bytes": 0, "breakdown": dict.fromkeys(BREAKDOWN_KEYS, 0), "phase": phases[0], "phase_peaks": phase_peaks}
    return {"peak_bytes": best[0], "breakdown": dict(best[1]), "phase": best_key[1], "phase_peaks": phase_peaks}


def top_modules(module_peaks: dict[str, int], n: int = 10) -> list[dict[str, Any]]:
    """Modules by the largest increase of allocated bytes while they ran (forward or backward)."""
    rows = [(name, b) for name, b in module_peaks.items() if "." in name and b > 0]
    rows.sort(key=lambda r: -r[1])
    return [{"module": name.split(".", 1)[1], "bytes": int(b)} for name, b in rows[:n]]


__all__ = ["INFER_PHASES", "RawTrace", "TRAIN_PHASES", "TraceResult", "summarize", "top_modules"]
