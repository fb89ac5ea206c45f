"""Machine drift: how far a configuration's measured speed moves between invocations on this machine.

A shared or virtual machine changes speed from one minute to the next (other tenants, clock
frequency, memory placement). benchmarks/LOG.md (2026-11-27) has the same training step measured
11-13% apart by two invocations a minute apart, each with a +-2-3% CI: a CI built from one
invocation's samples cannot see a drift slower than the invocation. What can is the store: it holds
earlier invocations of configurations on this machine. For every configuration measured in at least
two invocations (within HISTORY_DAYS), the log of each invocation's median time per iteration is
compared with that configuration's mean; pooled over configurations (one-way ANOVA's within-group
variance) this is the between-invocation spread `cv`. Once the configuration being measured has
OWN_INVOCATIONS earlier invocations, its own spread is used instead. `perfscale bench`
reports the within-run CI and, as its interval, that CI widened by it:
    half-width (log scale) = sqrt(h_run^2 + (z x cv)^2)
i.e. the range a re-run on this machine, at another moment, is expected to land in. The current
invocation is left out of the estimate, so the interval predicts rather than restates it.
(A short reference workload timed in every process was tried first and dropped: its own
second-to-second noise, 14-22% over 4-12 timings, was three times the 4.5% (log SD) that six
invocations' medians actually moved.)
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, replace
from typing import Any

Z95 = 1.959964
HISTORY_DAYS = 7.0  # older invocations describe another state of the machine
HISTORY_RUNS = 500
# The spread is not the same for every configuration (LOG 2026-11-27: 4.5% for one training step,
# over 20% for a 4x smaller one on the same machine): a configuration's own history, once it has
# this many earlier invocations, is used instead of the machine-wide pool.
OWN_INVOCATIONS = 3
# Two invocations (one degree of freedom) say little: in the LOG's run, their 0.6% spread preceded a
# 26% jump. Below this the drift is reported unknown and the interval stays the within-run CI.
MIN_DEGREES_OF_FREEDOM = 2


def machine_key(result) -> str:
    """Runs whose speeds are comparable: same host, CPU, device, threads and torch build."""
    env = result.environment or {}
    cpu = (env.get("cpu") or {}).get("model")
    threads = (env.get("threads") or {}).get("torch_intra_op")
    torch_version = (env.get("torch_build") or {}).get("version")
    return f"{env.get('hostname')}|{cpu}|{result.device}|{threads}|{torch_version}"


@dataclass(frozen=True)
class Drift:
    """Pooled between-invocation CV of median time per iteration (None: too little history)."""

    cv: float | None
    invocations: int  # invocations that entered the estimate
    configurations: int  # configurations with >= 2 invocations
    source: str = "this machine, all configurations measured twice or more"
    days: float = HISTORY_DAYS

    @property
    def degrees_of_freedom(self) -> int:
        return self.invocations - self.configurations

    def to_dict(self) -> dict[str, Any]:
        return {"cv": self.cv, "invocations": self.invocations, "configurations": self.configurations,
                "degrees_of_freedom": self.degrees_of_freedom, "source": self.source, "window_days": self.days}


def pooled_drift(medians_by_config: dict[str, list[float]]) -> Drift:
    """sqrt(sum of squared deviations of log medians from their configuration's mean / (n - k))."""
    squares, invocations, configurations = 0.0, 0, 0
    for medians in medians_by_config.values():
        logs = [math.log(m) for m in medians if m and m > 0]
        if len(logs) < 2:
            continue
        mean = statistics.fmean(logs)
        squares += sum((v - mean) ** 2 for v in logs)
        invocations += len(logs)
        configurations += 1
    if invocations - configurations < MIN_DEGREES_OF_FREEDOM:
        return Drift(None, invocations, configurations)
    return Drift(math.sqrt(squares / (invocations - configurations)), invocations, configurations)


def machine_drift(store, like, exclude_group: str | None = None, now: float | None = None) -> Drift:
    """The drift over this machine's stored invocations of the last HISTORY_DAYS (any configuration),
    `like`: a BenchResult of this machine; `exclude_group`: the current invocation, left out."""
    key = machine_key(like)
    since = (now or time.time()) - HISTORY_DAYS * 86400
    per_invocation: dict[tuple[str, str], list[float]] = {}
    for stored in store.runs(status="ok", since=since, limit=HISTORY_RUNS):
        result = stored.result
        if len(result.samples) < 2 or machine_key(result) != key:
            continue
        invocation = result.group or result.run_id
        if exclude_group is not None and invocation == exclude_group:
            continue
        per_invocation.setdefault((result.config.fingerprint(), invocation), []).extend(result.samples)
    by_config: dict[str, list[float]] = {}
    for (fingerprint, _), samples in per_invocation.items():
        by_config.setdefault(fingerprint, []).append(statistics.median(samples))
    own = like.config.fingerprint()
    if len(by_config.get(own, [])) >= OWN_INVOCATIONS:
        return replace(pooled_drift({own: by_config[own]}), source="this configuration")
    return pooled_drift(by_config)


def widen(median: float, ci_low: float, ci_high: float, drift: Drift) -> tuple[float, float]:
    """The within-run CI widened by the drift, on a log scale (a rate's CI is asymmetric)."""
    if drift.cv is None or not (median and ci_low and ci_high):
        return ci_low, ci_high
    down = math.log(median / ci_low)
    up = math.log(ci_high / median)
    extra = (Z95 * drift.cv) ** 2
    return median * math.exp(-math.sqrt(down ** 2 + extra)), median * math.exp(math.sqrt(up ** 2 + extra))


def with_drift(doc: dict[str, Any], drift: Drift) -> dict[str, Any]:
    """A bench configuration document whose `ci_low`/`ci_high` become the re-run interval (the
    within-run CI kept as `within_run_ci_low`/`within_run_ci_high`), with the drift it used."""
    median, low, high = doc.get("median"), doc.get("ci_low"), doc.get("ci_high")
    out = dict(doc, within_run_ci_low=low, within_run_ci_high=high, machine_drift=drift.to_dict())
    if median and low and high:
        out["ci_low"], out["ci_high"] = widen(median, low, high, drift)
    return out
