"""Statistics of timing samples: robust summaries, bootstrap confidence intervals, the stop rule.

Why the median: per-iteration times are right-skewed (interrupts, GC, allocator growth), so the
median is a more stable centre than the mean and its bootstrap CI is honest about that skew.
Bootstrap: Efron & Tibshirani, "An Introduction to the Bootstrap" (1993), percentile method.
Ratios between configurations: a two-level (hierarchical) bootstrap that resamples processes, then
iterations within each process, so process-to-process variation (the thing a single-process
benchmark hides) widens the interval (Davison & Hinkley 1997, sec. 3.8 "multi-stage sampling").
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from perfscale.errors import InvalidConfigError

CONFIDENCE = 0.95
RESAMPLES = 2000


@dataclass(frozen=True)
class Summary:
    """Distribution of one quantity over iterations (seconds, or a rate)."""

    n: int
    median: float
    mean: float
    stdev: float
    min: float
    max: float
    p10: float
    p90: float
    p99: float
    q1: float
    q3: float
    iqr: float
    ci_low: float  # bootstrap 95% CI of the median
    ci_high: float

    @property
    def rel_ci_half_width(self) -> float:
        return (self.ci_high - self.ci_low) / 2 / self.median if self.median else math.inf

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"rel_ci_half_width": self.rel_ci_half_width}


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def bootstrap_medians(samples, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """Medians of `resamples` resamples (with replacement) of `samples`."""
    x = np.asarray(samples, dtype=float)
    if x.size == 0:
        raise ValueError("no samples")
    if x.size == 1:
        return np.full(resamples, x[0])
    # Chunked so that 10^4 samples x 2000 resamples never builds a 160 MB index matrix.
    out = np.empty(resamples)
    rng = _rng(seed)
    chunk = max(1, 2_000_000 // x.size)
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        idx = rng.integers(0, x.size, size=(stop - start, x.size))
        out[start:stop] = np.median(x[idx], axis=1)
    return out


def median_ci(samples, confidence: float = CONFIDENCE, resamples: int = RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the median."""
    boots = bootstrap_medians(samples, resamples, seed)
    alpha = (1 - confidence) / 2
    return float(np.quantile(boots, alpha)), float(np.quantile(boots, 1 - alpha))


def summarize(samples, confidence: float = CONFIDENCE, resamples: int = RESAMPLES, seed: int = 0) -> Summary:
    x = np.asarray(samples, dtype=float)
    if x.size == 0:
        raise ValueError("summarize() needs at least one sample")
    q = np.quantile(x, [0.10, 0.25, 0.50, 0.75, 0.90, 0.99])
    lo, hi = median_ci(x, confidence, resamples, seed)
    return Summary(
        n=int(x.size), median=float(q[2]), mean=float(x.mean()), stdev=float(x.std(ddof=1)) if x.size > 1 else 0.0,
        min=float(x.min()), max=float(x.max()), p10=float(q[0]), p90=float(q[4]), p99=float(q[5]),
        q1=float(q[1]), q3=float(q[3]), iqr=float(q[3] - q[1]), ci_low=lo, ci_high=hi,
    )


def hierarchical_bootstrap_medians(groups, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """Bootstrap medians of pooled samples: resample groups (processes), then samples within each."""
    groups = [np.asarray(g, dtype=float) for g in groups if len(g)]
    if not groups:
        raise ValueError("no samples")
    rng = _rng(seed)
    k = len(groups)
    picks = rng.integers(0, k, size=(resamples, k))
    out = np.empty(resamples)
    for r in range(resamples):
        pooled = [groups[g][rng.integers(0, groups[g].size, size=groups[g].size)] for g in picks[r]]
        out[r] = np.median(np.concatenate(pooled))
    return out


@dataclass(frozen=True)
class Ratio:
    """value(B) / value(A) with a bootstrap CI; `significant` when the CI excludes 1."""

    ratio: float
    ci_low: float
    ci_high: float

    @property
    def significant(self) -> bool:
        return self.ci_low > 1 or self.ci_high < 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"significant": self.significant}


def ratio_of_medians(groups_a, groups_b, confidence: float = CONFIDENCE, resamples: int = RESAMPLES, seed: int = 0) -> Ratio:
    """median(B)/median(A) over pooled samples, CI from independent hierarchical bootstraps."""
    a = np.median(np.concatenate([np.asarray(g, dtype=float) for g in groups_a]))
    b = np.median(np.concatenate([np.asarray(g, dtype=float) for g in groups_b]))
    boot_a = hierarchical_bootstrap_medians(groups_a, resamples, seed)
    boot_b = hierarchical_bootstrap_medians(groups_b, resamples, seed + 1)
    ratios = boot_b / boot_a
    alpha = (1 - confidence) / 2
    return Ratio(float(b / a), float(np.quantile(ratios, alpha)), float(np.quantile(ratios, 1 - alpha)))


@dataclass(frozen=True)
class StopRule:
    """When to stop timing: at least `min_iters` iterations AND `min_time` seconds, then continue until
    the 95% CI half-width of the median is <= `target_rel_ci` of the median, or a cap is hit.

    Costs: each check bootstraps the samples (a few ms); checks are spaced geometrically so that the
    harness overhead stays far below the 2% it is asked to resolve.
    """

    min_iters: int = 10
    min_time: float = 3.0
    target_rel_ci: float = 0.02
    max_time: float = 60.0
    max_iters: int = 100_000

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.min_iters, int) or self.min_iters < 2:
            problems.append(f"min_iters must be an integer >= 2 (a CI needs samples), got {self.min_iters!r}")
        if self.min_time < 0:
            problems.append(f"min_time must be >= 0 seconds, got {self.min_time!r}")
        if not 0 < self.target_rel_ci < 1:
            problems.append(f"target_rel_ci must be in (0, 1), e.g. 0.02 for 2%, got {self.target_rel_ci!r}")
        if self.max_time < self.min_time:
            problems.append(f"max_time ({self.max_time}) must be >= min_time ({self.min_time})")
        if not isinstance(self.max_iters, int) or self.max_iters < self.min_iters:
            problems.append(f"max_iters ({self.max_iters!r}) must be an integer >= min_iters ({self.min_iters})")
        if problems:
            raise InvalidConfigError("Bad stop rule: " + "; ".join(problems) + ".")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StopRule:
        return cls(**data)


class StopChecker:
    """Stateful application of a StopRule to a growing list of samples."""

    def __init__(self, rule: StopRule, seed: int = 0):
        self.rule = rule
        self.seed = seed
        self._next_check = rule.min_iters
        self.last_rel_ci: float | None = None

    def check(self, samples: list[float], elapsed: float) -> str | None:
        """None to continue, else the reason to stop: converged | time_cap | iteration_cap."""
        n = len(samples)
        if n >= self.rule.max_iters:
            return "iteration_cap"
        if n < self.rule.min_iters:  # the minimum is never cut short (the process time limit bounds it)
            return None
        if elapsed >= self.rule.max_time:
            return "time_cap"
        if elapsed < self.rule.min_time or n < self._next_check:
            return None
        self._next_check = n + max(1, n // 10)  # geometric spacing of the (bootstrap) checks
        med = float(np.median(samples))
        lo, hi = median_ci(samples, resamples=400, seed=self.seed)
        self.last_rel_ci = (hi - lo) / 2 / med if med > 0 else math.inf
        return "converged" if self.last_rel_ci <= self.rule.target_rel_ci else None


__all__ = [
    "Ratio", "StopChecker", "StopRule", "Summary", "bootstrap_medians", "hierarchical_bootstrap_medians",
    "median_ci", "ratio_of_medians", "summarize",
]
