"""What is being run: a training step or an inference (generation) run, and its sizes."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from perfscale.errors import InvalidConfigError


# The largest batch, sequence, accumulation or token count accepted: 2^24 (16.8M) is beyond any real
# run (the longest published contexts are ~10M tokens) and keeps every search loop bounded.
MAX_SIZE = 2**24


def _positive(name: str, value: int, problems: list[str], minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= MAX_SIZE:
        problems.append(f"{name} must be an integer from {minimum} to {MAX_SIZE:,}, got {value!r}")


@dataclass(frozen=True)
class TrainWorkload:
    """One optimizer step: `grad_accum` micro-batches of `batch` sequences of `seq` tokens each.

    `batch` is the micro-batch per data-parallel replica; the global batch is
    batch x grad_accum x data-parallel degree.
    """

    batch: int
    seq: int
    grad_accum: int = 1

    mode = "train"

    def __post_init__(self) -> None:
        problems: list[str] = []
        for name in ("batch", "seq", "grad_accum"):
            _positive(name, getattr(self, name), problems)
        if problems:
            raise InvalidConfigError("Bad training workload: " + "; ".join(problems) + ".")

    @property
    def tokens_per_micro_batch(self) -> int:
        return self.batch * self.seq

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, **asdict(self)}


@dataclass(frozen=True)
class InferWorkload:
    """Generation: `batch` prompts of `prompt` tokens, then `new_tokens` decode steps."""

    batch: int
    prompt: int
    new_tokens: int = 0

    mode = "infer"

    def __post_init__(self) -> None:
        problems: list[str] = []
        for name in ("batch", "prompt"):
            _positive(name, getattr(self, name), problems)
        _positive("new_tokens", self.new_tokens, problems, minimum=0)
        if problems:
            raise InvalidConfigError("Bad inference workload: " + "; ".join(problems) + ".")

    @property
    def total_tokens(self) -> int:
        return self.prompt + self.new_tokens

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, **asdict(self)}


Workload = TrainWorkload | InferWorkload

# The one default workload of every command (plan, trace, bench, compare, tune, and their Python
# functions) when no size is given: the same step everywhere, so that an estimate, a trace and a
# measurement run without size flags describe the same thing; small enough that a measurement of the
# built-in model takes seconds on 2 CPU cores. Real runs give their own sizes.
DEFAULT_SEQ = 128
DEFAULT_TRAIN = TrainWorkload(batch=4, seq=DEFAULT_SEQ, grad_accum=1)
DEFAULT_INFER = InferWorkload(batch=1, prompt=DEFAULT_SEQ, new_tokens=32)
