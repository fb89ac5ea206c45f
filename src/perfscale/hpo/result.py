"""The result of `perfscale hpo`: the study as it stands in its storage, summarised."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# What a trial's outcome is called in the table (Optuna's state + perfscale's status user attribute).
STATUSES = ("complete", "pruned", "infeasible", "oom", "timeout", "killed", "interrupted", "failed", "dead-worker", "running",
            "waiting")


@dataclass
class TrialRow:
    number: int
    state: str  # Optuna's: COMPLETE | PRUNED | FAIL | RUNNING | WAITING
    status: str  # one of STATUSES
    values: list[float] | None
    params: dict[str, Any]
    reason: str | None = None
    wall_s: float | None = None
    steps: int | None = None
    tokens_per_s: float | None = None
    needed_bytes: int | None = None
    feasibility: str | None = None  # estimate | trace
    retry_of: int | None = None
    baseline: bool = False
    this_run: bool = False  # started by this invocation


@dataclass
class HpoResult:
    study_name: str
    storage: str
    model: str
    directions: list[str]
    objective: dict[str, Any]  # steps, eval_steps, seq, data, what the values are
    space: dict[str, Any]
    requested_trials: int
    counts: dict[str, int]
    best: dict[str, Any] | None
    pareto: list[dict[str, Any]]
    baseline: dict[str, Any] | None
    improvement: float | None  # (baseline - best) / baseline eval loss
    capacity: dict[str, Any]
    trials: list[TrialRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=dict)
    plots: str | None = None
    emitted: list[str] = field(default_factory=list)
    interrupted: str | None = None

    @property
    def finished(self) -> int:
        return self.counts.get("complete", 0) + self.counts.get("pruned", 0) + self.counts.get("infeasible", 0)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["finished"] = self.finished
        return data


__all__ = ["STATUSES", "HpoResult", "TrialRow"]
