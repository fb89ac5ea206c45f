"""HpoOptions: everything that shapes a study (hpo/study.py runs it), validated where it is built."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from perfscale.errors import InvalidConfigError
from perfscale.hpo.samplers import PRUNERS, SAMPLERS
from perfscale.hpo.space import SearchSpace

OBJECTIVES = ("loss", "loss+speed")
DEFAULT_MODEL = "perfscale-tiny-llama"
DEFAULT_TRIALS = 12
DEFAULT_STEPS = 30
DEFAULT_EVAL_STEPS = 10
DEFAULT_SEQ = 64
DEFAULT_TRIAL_TIMEOUT_S = 900.0
MAX_INT = 1_000_000


@dataclass
class HpoOptions:
    """Everything that shapes a study. The identity of a study (what --resume and other workers must
    agree on): model, data, seq, steps, eval_steps, objective and space; the rest may differ per worker."""

    model: str = DEFAULT_MODEL
    data: str | None = None  # a .txt / .jsonl file; None: the shipped corpus
    text_field: str = "text"
    eval_fraction: float = 0.1
    max_eval_blocks: int = 32  # held-out blocks evaluated at each evaluation (at most)
    space: SearchSpace | None = None  # None: SearchSpace.default()
    trials: int = DEFAULT_TRIALS  # the study's total (complete + pruned), not the new ones
    steps: int = DEFAULT_STEPS
    eval_steps: int = DEFAULT_EVAL_STEPS
    seq: int = DEFAULT_SEQ
    objective: str = "loss"  # loss | loss+speed (multi-objective: eval loss down, tokens/s up)
    sampler: str = "tpe"
    pruner: str = "median"
    storage: str | None = None
    study_name: str | None = None
    resume: bool = False
    workers: int | None = None  # None: one single-threaded trial per physical core on CPU, 1 on a GPU
    device_memory_gib: float | None = None
    hardware: str | None = None
    trial_timeout: float = DEFAULT_TRIAL_TIMEOUT_S
    seed: int | None = 0
    baseline: bool = True  # enqueue the Trainer defaults as the first trial of a new study
    use_trace: bool = True
    threads: int | None = None  # torch threads per trial; None: the cores / workers
    device: str = "auto"
    max_failures: int | None = None  # stop this invocation after this many failed trials (None: --trials)
    plots: str | None = None  # write the study's plots to this HTML file
    fork: bool = True  # on CPU, fork trials from a launcher that has the imports done (zygote.py)
    faults: dict[int, tuple[str, int]] = field(default_factory=dict)  # tests: trial number -> (fault, at step)

    def __post_init__(self) -> None:
        problems = []
        for name, lo in (("trials", 1), ("steps", 1), ("eval_steps", 1), ("seq", 1), ("workers", 1), ("max_eval_blocks", 4)):
            v = getattr(self, name)
            if v is None and name == "workers":
                continue
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= MAX_INT:
                problems.append(f"--{name.replace('_', '-')} must be an integer from {lo} to {MAX_INT:,}, got {v!r}")
        if isinstance(self.steps, int) and isinstance(self.eval_steps, int) and self.eval_steps > self.steps:
            problems.append(f"--eval-steps {self.eval_steps} > --steps {self.steps}: evaluate at least once before the end")
        if self.workers and isinstance(self.workers, int) and self.workers > 64:
            problems.append(f"--workers {self.workers}: at most 64 trial processes at once on one machine")
        for name, choices in (("objective", OBJECTIVES), ("sampler", SAMPLERS), ("pruner", PRUNERS)):
            if getattr(self, name) not in choices:
                problems.append(f"--{name} {getattr(self, name)!r} is not one of: {', '.join(choices)}")
        for name in ("trial_timeout", "device_memory_gib"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v <= 0 or v > 1e9):
                problems.append(f"--{name.replace('_', '-')} must be a number > 0, got {v!r}")
        if not isinstance(self.eval_fraction, (int, float)) or not 0 < self.eval_fraction < 1:
            problems.append(f"--eval-fraction must be between 0 and 1, got {self.eval_fraction!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or not 1 <= self.threads <= 4096):
            problems.append(f"--threads must be an integer from 1 to 4096, got {self.threads!r}")
        if self.study_name is not None and (not self.study_name.strip() or len(self.study_name) > 200):
            problems.append(f"--study-name must be 1 to 200 characters, got {self.study_name!r}")
        if self.seed is not None and (not isinstance(self.seed, int) or not 0 <= self.seed < 2**31):
            problems.append(f"--seed must be an integer from 0 to 2^31-1, got {self.seed!r}")
        if problems:
            raise InvalidConfigError("Bad hpo options: " + "; ".join(problems) + ".")

    @property
    def multi_objective(self) -> bool:
        return self.objective == "loss+speed"

    @property
    def directions(self) -> list[str]:
        return ["minimize", "maximize"] if self.multi_objective else ["minimize"]


__all__ = ["DEFAULT_MODEL", "HpoOptions", "OBJECTIVES"]
