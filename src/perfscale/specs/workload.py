"""What is being run: a training step or an inference (generation) run, and its sizes."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from perfscale.errors import InvalidConfigError


def _positive(name: str, value: int, problems: list[str]) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        problems.append(f"{name} must be a positive integer, got {value!r}")


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
        if not isinstance(self.new_tokens, int) or self.new_tokens < 0:
            problems.append(f"new_tokens must be an integer >= 0, got {self.new_tokens!r}")
        if problems:
            raise InvalidConfigError("Bad inference workload: " + "; ".join(problems) + ".")

    @property
    def total_tokens(self) -> int:
        return self.prompt + self.new_tokens

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, **asdict(self)}


Workload = TrainWorkload | InferWorkload
