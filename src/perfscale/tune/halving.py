"""Successive halving over a designed pool (Jamieson & Talwalkar 2016; Li et al. 2018, Hyperband).

Rung 0 gives many candidates a short trial, rung 1 gives the best 1/eta a longer one; the final
comparison against the baseline is tune's (train.py). The estimate cannot tell apart knobs such as
the optimizer kernel, attention kernel, micro-batch on a CPU, threads or DataLoader workers, so the
pool is not simply the estimate's top-k: it is the estimate's best point (the *centre*) and its
one-knob-at-a-time neighbours, plus the baseline. After rung 0 the knob values that beat the centre
are combined into one more candidate, so effects that add up are found without measuring every
combination (a main-effects screen, Box, Hunter & Hunter 2005 ch. 5).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from perfscale.tune.train_space import Candidate

ETA = 3  # keep the best 1/eta of a rung (Hyperband's default)


@dataclass
class Outcome:
    """What one trial of one candidate in one rung gave."""

    candidate: Candidate
    rung: int
    rate: float | None  # tokens/s (median); None when the trial did not finish
    status: str  # ok | oom | timeout | failed | skipped
    reason: str | None = None
    result: Any = None  # the BenchResult
    reused: bool = False  # found finished in the store (a resumed tune)


def vary(center: Candidate, knob: str, value: Any) -> Candidate:
    """The centre with one knob changed; micro-batch keeps the global batch through accumulation."""
    if knob == "micro_batch":
        tokens = center.micro_batch * center.grad_accum
        if tokens % value:
            raise ValueError(f"micro-batch {value} does not divide {tokens}")
        return replace(center, micro_batch=value, grad_accum=tokens // value)
    if knob == "processes":  # the global batch stays (each rank takes its share, at the nearest micro-batch); ranks share the cores
        rows = center.micro_batch * center.grad_accum * center.processes
        if rows % value:
            raise ValueError(f"{value} processes do not divide the {rows} sequences of a step")
        micro = math.gcd(center.micro_batch, rows // value)
        return replace(center, processes=value, micro_batch=micro, grad_accum=rows // value // micro, threads=None)
    if knob == "threads" and center.processes > 1:
        raise ValueError("threads per rank follow the process count (cores / processes)")
    return replace(center, **{knob: value})


def design_pool(
    ranked: Sequence[Candidate], baseline: Candidate, knob_values: dict[str, tuple], max_pool: int,
) -> tuple[Candidate, list[Candidate], dict[Candidate, tuple[str, Any] | None]]:
    """(centre, pool, role) — role[c] = (knob, value) for a one-knob neighbour, None for centre/baseline.

    `ranked`: the feasible candidates, best estimate first. The pool holds the baseline, the centre,
    then the neighbours round-robin over the knobs (knob_values' order: biggest expected effects
    first; nearest micro-batches first), cut at max_pool.
    """
    if not ranked:
        return baseline, [], {}
    allowed = set(ranked)
    center = ranked[0]
    pool: list[Candidate] = []
    role: dict[Candidate, tuple[str, Any] | None] = {}
    for c in (baseline, center):
        if c not in role and (c in allowed or c == baseline):
            pool.append(c)
            role[c] = None
    current = center.knobs()
    per_knob: list[list[tuple[str, Any]]] = []
    for knob, values in knob_values.items():
        alts = [v for v in values if v != current.get(knob)]
        if knob == "micro_batch":  # nearest micro-batches first: the extremes rarely win and cost the most
            alts.sort(key=lambda v: abs(math.log2(v) - math.log2(center.micro_batch)))
        per_knob.append([(knob, v) for v in alts])
    # Round-robin over knobs, so that a budget that ends rung 0 early has still tried every knob once.
    order = [kv for depth in range(max((len(a) for a in per_knob), default=0)) for a in per_knob if depth < len(a) for kv in [a[depth]]]
    for knob, value in order:
        try:
            neighbour = vary(center, knob, value)
        except ValueError:
            continue
        if neighbour in allowed and neighbour not in role:
            pool.append(neighbour)
            role[neighbour] = (knob, value)
    return center, pool[:max(2, max_pool)], {c: role[c] for c in pool[:max(2, max_pool)]}


def combine(center: Candidate, outcomes: dict[Candidate, Outcome], role: dict[Candidate, tuple[str, Any] | None],
            threshold: float) -> tuple[Candidate | None, dict[str, tuple[Any, float]]]:
    """The centre with, for each knob, its best neighbour value if that beat the centre by > threshold.

    Returns (combined candidate or None when nothing beat the centre, {knob: (value, gain)}).
    """
    base = outcomes.get(center)
    if base is None or not base.rate:
        return None, {}
    best: dict[str, tuple[Any, float]] = {}
    for cand, r in role.items():
        if r is None:
            continue
        out = outcomes.get(cand)
        if out is None or not out.rate:
            continue
        knob, value = r
        gain = out.rate / base.rate - 1
        if gain > threshold and gain > best.get(knob, (None, -math.inf))[1]:
            best[knob] = (value, gain)
    if len(best) < 2:  # one winning knob is already a measured neighbour
        return None, best
    combined = center
    for knob, (value, _) in best.items():
        try:
            combined = vary(combined, knob, value)
        except ValueError:
            continue
    return combined, best


def survivors(outcomes: Sequence[Outcome], eta: int = ETA, minimum: int = 2) -> list[Candidate]:
    """The best ceil(n/eta) finished candidates of a rung (at least `minimum`), fastest first."""
    done = sorted((o for o in outcomes if o.rate), key=lambda o: o.rate, reverse=True)
    keep = max(minimum, math.ceil(len(done) / eta))
    return [o.candidate for o in done[:keep]]


@dataclass
class HalvingRun:
    """The record of a successive-halving search: every rung's outcomes and the final ranking."""

    center: Candidate | None
    pool: list[Candidate]
    role: dict[Candidate, tuple[str, Any] | None]
    rungs: list[list[Outcome]] = field(default_factory=list)
    combined: Candidate | None = None
    knob_gains: dict[str, tuple[Any, float]] = field(default_factory=dict)
    skipped: list[Candidate] = field(default_factory=list)  # in the pool, not measured (budget)

    def ranking(self) -> list[Outcome]:
        """Finished candidates of the last rung that measured them, fastest first."""
        last: dict[Candidate, Outcome] = {}
        for rung in self.rungs:
            for o in rung:
                if o.rate or o.candidate not in last:
                    last[o.candidate] = o
        best_rung = {c: o for c, o in last.items() if o.rate}
        top = max((o.rung for o in best_rung.values()), default=0)
        finals = [o for o in best_rung.values() if o.rung == top]
        return sorted(finals, key=lambda o: o.rate, reverse=True)


def successive_halving(
    center: Candidate, pool: list[Candidate], role: dict[Candidate, tuple[str, Any] | None],
    measure: Callable[[Candidate, int], Outcome], *, rungs: int = 2, eta: int = ETA, combine_threshold: float = 0.03,
    keep_going: Callable[[int], bool] = lambda rung: True, feasible: Callable[[Candidate], bool] = lambda c: True,
) -> HalvingRun:
    """Rung 0 measures the pool (while keep_going(0)); each later rung the survivors, longer.

    `measure(candidate, rung)` returns an Outcome and never raises for a fault of the trial.
    """
    run = HalvingRun(center=center, pool=list(pool), role=dict(role))
    current = list(pool)
    for rung in range(rungs):
        outcomes: list[Outcome] = []
        for i, cand in enumerate(current):
            # Rung 0 always finishes two trials (a baseline and a challenger); later rungs are optional.
            if not keep_going(rung) and (rung > 0 or len([o for o in outcomes if o.rate]) >= 2):
                if rung == 0:
                    run.skipped.extend(current[i:])
                break
            outcomes.append(measure(cand, rung))
        if outcomes:
            run.rungs.append(outcomes)
        if rung == rungs - 1 or not outcomes:
            break
        nxt = survivors(outcomes, eta)
        if rung == 0:
            run.combined, run.knob_gains = combine(center, {o.candidate: o for o in outcomes}, role, combine_threshold)
            if run.combined is not None and not feasible(run.combined):
                run.combined = None
            if run.combined is not None and run.combined not in nxt:
                nxt.insert(1, run.combined)  # right after the leader: the budget may end the rung early
        if len(nxt) < 2:
            break
        current = nxt
    return run


__all__ = ["ETA", "HalvingRun", "Outcome", "combine", "design_pool", "successive_halving", "survivors", "vary"]
