"""What shapes a training tune: TrainTuneOptions (validated once, where it is built), its defaults, and
the budgets at which the slower knobs (torch.compile, processes x threads) join the default space.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from perfscale.errors import InvalidConfigError
from perfscale.measure.stats import StopRule
from perfscale.specs.workload import DEFAULT_SEQ, MAX_SIZE
from perfscale.tune.train_budget import MIN_PAIRS
from perfscale.tune.train_space import TrainSpace

DEFAULT_GLOBAL_BATCH = 8  # Trainer's per_device_train_batch_size default: the baseline needs no accumulation
DEFAULT_BUDGET_S = 120.0  # the default run must end well inside 3 minutes on 2 loaded cores
# torch.compile joins the default space only with at least this budget. Chosen, not measured for
# training: a compiled trial's first compilation alone took 36 s for MiniLM here (FIELD-NOTES).
COMPILE_BUDGET_S = 300.0
# The processes x threads candidates (DDP ranks under torchrun) join the default space only with at least
# this budget: each trial is a torchrun launch whose ranks import torch and transformers anew (measured here,
# loaded box: 15-25 s per launch of 2 ranks on 2 cores, benchmarks/LOG.md issue 18 tune section).
PROCESSES_BUDGET_S = 300.0
# Stop rules per rung: rung 0 is a short screen, rung 1 longer; the final proof has its own.
RUNG_STOPS = (
    StopRule(min_iters=3, min_time=0.0, target_rel_ci=0.05, max_time=3.0),
    StopRule(min_iters=5, min_time=1.5, target_rel_ci=0.03, max_time=6.0),
)
# --quick: a 60 s search with one fresh process per finalist (seconds to a minute on this CPU).
QUICK_BUDGET_S = 60.0
QUICK_REPEATS = 1
# The final paired comparison: at least MIN_PAIRS step pairs and 2 s per process, then until the 95% CI of the
# speed ratio is within +-2% (max_time is set by final_plan from the budget left).
FINAL_STOP = StopRule(min_iters=MIN_PAIRS, min_time=2.0, target_rel_ci=0.02, max_time=6.0)
Progress = Callable[[str], None]


@dataclass
class TrainTuneOptions:
    """Everything that shapes a training tune (the session key of --resume is built from it)."""

    model: str = "perfscale-tiny-llama"
    seq: int = DEFAULT_SEQ
    global_batch: int = DEFAULT_GLOBAL_BATCH
    hardware: str | None = None  # None / "local": this machine, measured; else a topology, estimated
    allow_lora: bool = False
    allow_optimizer_change: bool = False
    include_compile: bool | None = None  # None: only when the budget allows
    include_processes: bool | None = None  # processes x threads on this CPU (DDP, torchrun); None: only when the budget allows
    task: str | None = None  # the head to train instead of the config's architectures[0] (specs/heads.py TASKS)
    num_labels: int | None = None  # outputs of a classification head
    budget_seconds: float = DEFAULT_BUDGET_S
    store: str | None = None
    resume: bool = False
    trace_top: int | None = None  # None: 2 here, 1 on --hardware
    repeats: int = 3  # fresh processes (each a paired run) in the final comparison
    max_pool: int = 10
    rung_stops: tuple[StopRule, ...] = RUNG_STOPS
    final_stop: StopRule = FINAL_STOP
    trial_time_limit: float = 120.0
    space: TrainSpace | None = None  # an explicit space (benchmarks, tests)

    def __post_init__(self) -> None:
        problems = []
        for name in ("seq", "global_batch", "repeats", "max_pool"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_SIZE:
                problems.append(f"{name} must be an integer from 1 to {MAX_SIZE:,}, got {value!r}")
        if self.trace_top is not None and (not isinstance(self.trace_top, int) or not 0 <= self.trace_top <= 1000):
            problems.append(f"trace_top must be an integer from 0 to 1000, got {self.trace_top!r}")
        for name in ("budget_seconds", "trial_time_limit"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                problems.append(f"{name} must be a finite number of seconds > 0, got {value!r}")
        if problems:
            raise InvalidConfigError("Bad tune options: " + "; ".join(problems) + ".")

    @classmethod
    def from_user(cls, quick: bool = False, **given: Any) -> TrainTuneOptions:
        """Options from what a user gave (None = not given): defaults fill the rest, `quick` a 60 s budget
        and one process per finalist (QUICK_BUDGET_S, QUICK_REPEATS); 0 is a value, and is refused."""
        defaults = {"budget_seconds": QUICK_BUDGET_S, "repeats": QUICK_REPEATS} if quick else {}
        values = {k: defaults.get(k) if v is None else v for k, v in given.items()}
        return cls(**{k: v for k, v in values.items() if v is not None})  # the rest: the field defaults

    @property
    def local(self) -> bool:
        return self.hardware is None or self.hardware.lower() == "local"


__all__ = ["COMPILE_BUDGET_S", "DEFAULT_BUDGET_S", "DEFAULT_GLOBAL_BATCH", "DEFAULT_SEQ", "FINAL_STOP", "PROCESSES_BUDGET_S",
           "QUICK_BUDGET_S", "QUICK_REPEATS", "RUNG_STOPS", "Progress", "TrainTuneOptions"]
