"""The time budget of a training tune: what trials cost here, learned as they finish, and how the
final comparison fits in what is left. The default run must end well inside 3 minutes on 2 busy cores.
"""

from __future__ import annotations

import time
from typing import Any

from perfscale.measure.stats import StopRule

# The final comparison times at least this many A/B step pairs per process: fewer give a median of
# pair ratios that one interrupted step can move (chosen: 6 pairs = 12 steps, ~2-5 s for the tiny
# model on an idle 2-core box).
MIN_PAIRS = 6
# and at most this long per process: past it the CI shrinks as 1/sqrt(time) while more processes
# also sample process-to-process variation (chosen, not measured).
MAX_PAIR_SECONDS = 60.0


class Clock:
    """Wall time since the tune started, against its budget."""

    def __init__(self, budget: float):
        self.start = time.perf_counter()
        self.budget = budget

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.budget - self.elapsed()


class Costs:
    """Seconds things take here, learned from the trials so far (the budget's arithmetic)."""

    def __init__(self, server, options):
        self.server = server
        self.options = options
        self.fixed: list[float] = []  # model build + warm-up of a trial
        self.steps: list[float] = []  # one timed optimizer step
        self.walls: list[float] = []
        self.cold: float | None = None  # build + warm-up of the worker's first trial: what a fresh process pays

    def add(self, result) -> None:
        if result.ok and result.samples:
            self.fixed.append((result.load_s or 0.0) + sum(result.warmup_s))
            if self.cold is None:
                self.cold = self.fixed[-1]
            self.steps.append(sorted(result.samples)[len(result.samples) // 2])
        if result.wall_s:
            self.walls.append(result.wall_s)

    @staticmethod
    def _mid(values: list[float], default: float) -> float:
        return sorted(values)[len(values) // 2] if values else default

    def typical_wall(self) -> float | None:
        return self._mid(self.walls, 0.0) or None

    def trial(self, stop: StopRule, extra_steps: int = 0, cold: bool = False) -> float:
        """A trial under `stop`: build + warm-up, then at least min_iters steps and min_time, capped by max_time.
        cold: in a fresh process (model classes imported, kernels created anew)."""
        step = self._mid(self.steps, 2.0)
        timed = max(stop.min_iters * step, min(stop.min_time, stop.max_time))
        timed = max(timed, min(stop.max_time, stop.min_iters * step))
        fixed = max(self.cold or 0.0, self._mid(self.fixed, 8.0)) if cold else self._mid(self.fixed, 8.0)
        return fixed + timed + extra_steps * step + 0.3

    def trial_limit(self) -> float:
        """Kill a trial that runs 3x longer than the typical one (at least 20 s): it is far slower, or hung."""
        typical = self.typical_wall()
        return self.options.trial_time_limit if typical is None else min(self.options.trial_time_limit, max(20.0, 3 * typical))

    def pair_fixed(self, process: bool) -> float:
        """What one paired run pays before its first timed pair: both models built and warmed up, and in a
        fresh process also the start-up (imports), which the shared worker paid once."""
        fixed = max(self.cold or 0.0, self._mid(self.fixed, 8.0)) if process else self._mid(self.fixed, 8.0)
        startup = (self.server.startup_s or 12.0) if process else 0.0
        return startup + 2 * fixed + 0.5

    def pair_seconds(self, pairs: int) -> float:
        """Timed part of `pairs` step pairs (two steps each)."""
        return 2 * pairs * self._mid(self.steps, 2.0)

    def final(self, processes: int, isolation: str, pairs: int = MIN_PAIRS) -> float:
        """The final comparison: `processes` paired runs of at least `pairs` step pairs each; +20% for a busy machine."""
        return 1.2 * processes * (self.pair_fixed(isolation == "process") + self.pair_seconds(pairs))


def final_plan(costs: Costs, options, clock: Clock) -> dict[str, Any]:
    """How the final comparison spends what is left of the budget: as many fresh processes as fit (up to
    options.repeats, at least MIN_PAIRS step pairs each), each timing pairs until its 95% CI is within
    the target or its share of the time is spent; when even one fresh process does not fit, the pairs run
    in the tune worker (its model classes already imported)."""
    left = clock.left()
    target = options.final_stop
    pairs = target.min_iters  # default MIN_PAIRS (train_options.FINAL_STOP)
    choices = [(k, "process") for k in range(options.repeats, 1, -1)] + [(k, "trial") for k in range(options.repeats, 0, -1)]
    for processes, isolation in choices:  # fresh processes sample process-to-process variation: preferred
        if costs.final(processes, isolation, pairs) <= left:
            timed = max(costs.pair_seconds(pairs), left / 1.2 / processes - costs.pair_fixed(isolation == "process"))
            stop = StopRule(min_iters=pairs, min_time=min(target.min_time, timed), target_rel_ci=target.target_rel_ci,
                            max_time=max(min(timed, MAX_PAIR_SECONDS), target.min_time))
            where = "a fresh process" if isolation == "process" else "the tune worker (a fresh model each)"
            return {"isolation": isolation, "repeats": processes, "stop": stop, "cost": costs.final(processes, isolation, pairs),
                    "note": f"final comparison: {processes} paired run(s), each in {where}: the two configurations built "
                            f"side by side and timed in alternating steps (A B, B A, ...) for up to {stop.max_time:.0f} s"}
    # Not even the minimum fits: as many pairs as the time left allows (at least 2, which no verdict can rest
    # on: the verdict then says the run could not resolve anything, and what budget would).
    fit = int(max(0.0, left / 1.2 - costs.pair_fixed(False)) // max(costs.pair_seconds(1), 1e-9))
    pairs = max(2, min(pairs, fit))
    stop = StopRule(min_iters=pairs, min_time=0.0, target_rel_ci=target.target_rel_ci, max_time=costs.pair_seconds(pairs))
    return {"isolation": "trial", "repeats": 1, "stop": stop, "cost": costs.final(1, "trial", pairs),
            "note": f"final comparison: 1 paired run of at least {pairs} step pairs in the tune worker: the halving used up "
                    f"the budget (a trial's step took {costs.pair_seconds(1) / 2:.1f} s on this machine now)"}


__all__ = ["MAX_PAIR_SECONDS", "MIN_PAIRS", "Clock", "Costs", "final_plan"]
