"""BenchResult: one measured configuration, with its samples, statistics, memory, MFU and context.

Statuses: ok | inaccurate (fast maybe, but failed the accuracy gate) | oom (with the size asked) |
timeout (killed at the time limit) | failed (with the tail of stderr) | interrupted (Ctrl-C).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field, fields
from typing import Any

from perfscale.measure.bench_config import BenchConfig
from perfscale.measure.stats import Summary, summarize

STATUSES = ("ok", "inaccurate", "oom", "timeout", "failed", "interrupted")


def _rate(per_iter: float, t: Summary) -> dict[str, float]:
    """A rate (per_iter / seconds) from the time summary: the median maps to the median, CI bounds swap."""
    return {"median": per_iter / t.median, "ci_low": per_iter / t.ci_high, "ci_high": per_iter / t.ci_low}


@dataclass
class BenchResult:
    config: BenchConfig
    status: str
    reason: str | None = None
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    group: str | None = None  # the invocation (bench or compare) this run belongs to
    repeat: int = 0  # index of this process among a configuration's repeats in a compare
    started_at: float = field(default_factory=time.time)
    wall_s: float | None = None  # whole process, load included
    device: str | None = None
    samples: list[float] = field(default_factory=list)  # seconds per timed iteration
    stop_reason: str | None = None  # converged | time_cap | iteration_cap
    load_s: float | None = None
    warmup_s: list[float] = field(default_factory=list)
    compile_s: float | None = None  # first warm-up iteration minus the median (compile / session warm-up)
    samples_per_iter: int | None = None
    tokens_per_iter: int | None = None
    iteration_metrics: dict[str, list[float]] = field(default_factory=dict)  # generate: ttft, tpot per iteration
    memory: dict[str, Any] = field(default_factory=dict)
    mfu: dict[str, Any] = field(default_factory=dict)
    accuracy: dict[str, Any] | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    setup: dict[str, Any] = field(default_factory=dict)
    oom_bytes: int | None = None
    stderr_tail: str | None = None
    notes: list[str] = field(default_factory=list)
    store_id: int | None = None
    # Under torchrun (measure/multiprocess.py): one row per rank (step time, tokens/s, memory,
    # communication time) and the job's layout; empty for one process.
    ranks: list[dict[str, Any]] = field(default_factory=list)
    distributed: dict[str, Any] = field(default_factory=dict)

    # ----- derived -----
    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def has_timing(self) -> bool:
        return len(self.samples) >= 2

    def time_summary(self) -> Summary | None:
        return summarize(self.samples, seed=0) if self.has_timing else None

    def throughput(self) -> dict[str, Any]:
        t = self.time_summary()
        if t is None:
            return {}
        out = {"samples_per_s": _rate(self.samples_per_iter or 1, t)}
        if self.tokens_per_iter:
            out["tokens_per_s"] = _rate(self.tokens_per_iter, t)
        return out

    def latency(self) -> dict[str, Any]:
        out = {}
        for name, values in self.iteration_metrics.items():
            if len(values) >= 2 and name != "loss":
                out[name] = summarize(values).to_dict()
        return out

    def headline(self) -> dict[str, Any]:
        """{unit, median, ci_low, ci_high} of the main rate; Nones when nothing was timed."""
        tp = self.throughput()
        key = "tokens_per_s" if self.config.scenario in ("train", "generate") and "tokens_per_s" in tp else "samples_per_s"
        unit = {"tokens_per_s": "tokens/s"}.get(key, {"encode": "sentences/s", "load": "loads/s"}.get(self.config.scenario, "samples/s"))
        rate = tp.get(key, {})
        return {"unit": unit, "median": rate.get("median"), "ci_low": rate.get("ci_low"), "ci_high": rate.get("ci_high")}

    def loss(self) -> dict[str, Any] | None:
        """train: the training loss of the first and last timed steps (rank 0's under torchrun), None otherwise."""
        values = self.iteration_metrics.get("loss") or []
        if not values:
            return None
        return {"first": values[0], "last": values[-1], "min": min(values), "steps": len(values)}

    @property
    def converged(self) -> bool:
        return self.stop_reason == "converged"

    @property
    def peak_memory_bytes(self) -> int | None:
        """The peak memory figure compared across configurations: CUDA max allocated on GPU, peak RSS on CPU."""
        if self.device == "cuda":
            return self.memory.get("cuda_max_allocated")
        if self.config.scenario == "load":  # each load runs in a forked child: its peak, not the worker's (scenarios/load.py)
            return max(self.iteration_metrics.get("rss_peak_bytes") or [0]) or None
        return self.memory.get("cpu_peak_rss")

    # ----- serialisation -----
    def to_dict(self, samples: bool = True) -> dict[str, Any]:
        t = self.time_summary()
        doc: dict[str, Any] = {
            "label": self.config.display,
            "run_id": self.run_id, "store_id": self.store_id, "group": self.group, "repeat": self.repeat,
            "status": self.status, "reason": self.reason,
            "config": self.config.to_dict(), "fingerprint": self.config.fingerprint(),
            "device": self.device, "started_at": self.started_at, "wall_s": self.wall_s,
            # The headline numbers: the main rate (tokens/s for train/generate, sentences/s for encode)
            # with its 95% CI, and the peak memory.
            **self.headline(),
            "peak_memory_bytes": self.peak_memory_bytes,
            "throughput": self.throughput(),
            "time_per_iter": t.to_dict() if t else None,
            "stop_reason": self.stop_reason, "converged": self.converged,
            "load_s": self.load_s, "warmup_s": self.warmup_s, "compile_s": self.compile_s,
            "samples_per_iter": self.samples_per_iter, "tokens_per_iter": self.tokens_per_iter,
            "latency": self.latency(), "loss": self.loss(),
            "memory": self.memory, "mfu": self.mfu,
            "accuracy": self.accuracy, "oom_bytes": self.oom_bytes, "stderr_tail": self.stderr_tail,
            "notes": self.notes, "setup": self.setup, "environment": self.environment,
        }
        if self.ranks or self.distributed:
            doc["ranks"] = self.ranks
            doc["distributed"] = self.distributed
        if samples:
            doc["samples"] = self.samples
            doc["iteration_metrics"] = self.iteration_metrics
        return doc

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchResult:
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known and k != "config"}
        return cls(config=BenchConfig.from_dict(data["config"]), **kwargs)


__all__ = ["STATUSES", "BenchResult"]
