"""TrainTuneResult: what `perfscale tune` (training) found, with every trial and why it ended where it did.

Trial statuses: measured (a rung finished it) | failed | oom | timeout (measured and it broke) |
not-measured (in the pool, the budget ran out) | estimated (ranked by the estimate only: hardware
you do not have, or not chosen for the pool) | pruned (does not fit, by estimate or trace, or the
estimate puts it far behind the best).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TRIAL_STATUSES = ("measured", "failed", "oom", "timeout", "not-measured", "estimated", "pruned")


@dataclass
class TrialRecord:
    name: str
    knobs: dict[str, Any]
    status: str
    reason: str | None = None
    baseline: bool = False
    role: str | None = None  # centre | baseline | "<knob>=<value>" (one-knob neighbour) | combined
    estimate: dict[str, Any] | None = None  # tokens_per_s, peak_bytes, total_bytes, fits
    trace: dict[str, Any] | None = None  # peak_bytes, fits, seconds
    rungs: list[dict[str, Any]] = field(default_factory=list)  # one per measured rung trial
    final: dict[str, Any] | None = None  # the interleaved final comparison (winner, baseline)

    @property
    def best_rate(self) -> float | None:
        rates = [r["tokens_per_s"] for r in self.rungs if r.get("tokens_per_s")]
        return rates[-1] if rates else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "status": self.status, "reason": self.reason, "baseline": self.baseline, "role": self.role,
            "knobs": self.knobs, "estimate": self.estimate, "trace": self.trace, "rungs": self.rungs, "final": self.final,
        }


@dataclass
class TrainTuneResult:
    model: str
    hardware: str
    measured_here: bool  # False: --hardware you do not have, the ranking is estimated
    ranking: str  # "measured" | "estimated"
    workload: dict[str, Any]  # seq, global_batch
    space: dict[str, Any]
    winner: dict[str, Any] | None  # name, knobs, run_config, throughput, peak_memory_bytes, compile_s
    baseline: dict[str, Any]
    speedup: dict[str, Any]  # ratio, ci_low, ci_high, significant, verdict (None values: estimated / baseline failed)
    why: list[str]
    runners_up: list[dict[str, Any]]
    trials: list[TrialRecord]
    notes: list[str]
    session: dict[str, Any]  # id, store, resumed, reused_trials, measured_trials
    timing: dict[str, Any]  # wall_s, budget_s, per stage
    snippet: str | None = None  # the winner as a Trainer snippet: set by export.tune_winner.add_trainer_snippet
    emitted: list[dict[str, str]] = field(default_factory=list)
    what_would_fit: list[dict[str, Any]] = field(default_factory=list)  # when nothing fits
    environment: dict[str, Any] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in TRIAL_STATUSES}
        for t in self.trials:
            out[t.status] = out.get(t.status, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "tune-train", "model": self.model, "hardware": self.hardware, "measured_here": self.measured_here,
            "ranking": self.ranking, "workload": self.workload, "winner": self.winner, "baseline": self.baseline,
            "speedup": self.speedup, "why": self.why, "runners_up": self.runners_up, "what_would_fit": self.what_would_fit,
            "snippet": self.snippet, "emitted": self.emitted, "notes": self.notes, "session": self.session, "timing": self.timing,
            "space": self.space, "trial_counts": self.counts(), "trials": [t.to_dict() for t in self.trials],
            "environment": self.environment,
        }

    def save(self, path: str | os.PathLike) -> Path:
        from perfscale.user_files import write_text

        return write_text(path, json.dumps(self.to_dict(), indent=2, default=str) + "\n", "--save")


__all__ = ["TRIAL_STATUSES", "TrainTuneResult", "TrialRecord"]
