"""The time budget of a training tune: what trials cost here, learned as they finish, and how the
final comparison fits in what is left. The default run must end well inside 3 minutes on 2 busy cores.
"""

from __future__ import annotations

import time
from typing import Any

from perfscale.measure.stats import StopRule


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

    def final(self, repeats: int, isolation: str, stop: StopRule | None = None) -> float:
        """2 configurations x repeats runs; +1 step each for the profiled memory iteration; +20% for a busy machine."""
        process = isolation == "process"
        per_run = self.trial(stop or self.options.final_stop, extra_steps=1, cold=process)
        # A fresh process also imports the model classes, which the worker did before its first trial.
        startup = 1.5 * (self.server.startup_s or 12.0)
        return 1.2 * 2 * repeats * (per_run + (startup if process else 0.0))


def final_plan(costs: Costs, options, clock: Clock) -> dict[str, Any]:
    """How the final comparison runs within the time left: one fresh process per run when that fits,
    else every run as a trial of the worker (fresh model each); repeats and time cap shrink to fit."""
    left = clock.left()
    stop = options.final_stop
    for repeats in range(options.repeats, 0, -1):
        if costs.final(repeats, "process") <= left:
            return {"isolation": "process", "repeats": repeats, "stop": stop, "cost": costs.final(repeats, "process"),
                    "note": f"final comparison: {repeats} fresh process(es) per configuration, interleaved"}
    repeats = options.repeats
    while repeats > 1 and costs.final(repeats, "trial") > left:
        repeats -= 1
    if costs.final(repeats, "trial") > left:  # shorten the timed part to what is left, keeping >= 3 iterations
        quick = StopRule(min_iters=3, min_time=0.0, target_rel_ci=stop.target_rel_ci, max_time=1.0)
        stop = quick
    return {"isolation": "trial", "repeats": repeats, "stop": stop, "cost": costs.final(repeats, "trial", stop),
            "note": f"final comparison: {repeats} run(s) per configuration, interleaved, as trials of the tune worker "
                    "process (fresh model each): the budget had no room for a fresh process per run"}


__all__ = ["Clock", "Costs", "final_plan"]
