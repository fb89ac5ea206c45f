"""Steps made to be bound by one thing each, to check `debug profile`'s classification (tests and
benchmarks/debug_profile_probes.py): a DataLoader that sleeps, tiny operators in a Python loop, a large matmul."""

from __future__ import annotations

import time
from collections.abc import Callable


class _SleepyDataset:
    """Each item costs `seconds` of sleep: a slow tokenizer or disk, as the main process sees it."""

    def __init__(self, n: int, seconds: float):
        self.n, self.seconds = n, seconds

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        import torch

        time.sleep(self.seconds)
        return torch.full((16,), float(i))


def input_bound(sleep_s: float = 0.01, batch: int = 4) -> Callable[[], None]:
    """A step that waits on a DataLoader (no workers) whose items sleep, then does a little work."""
    import torch

    loader = torch.utils.data.DataLoader(_SleepyDataset(10_000, sleep_s), batch_size=batch)
    it = iter(loader)
    w = torch.randn(16, 16)

    def step() -> None:
        x = next(it)
        _ = x @ w

    return step


def launch_bound(ops: int = 400) -> Callable[[], None]:
    """Tiny operators in a Python loop: each call's fixed cost is all the time."""
    import torch

    def step() -> None:
        x = torch.zeros(8)
        for _ in range(ops):
            x = x + 1.0

    return step


def compute_bound(n: int = 768) -> Callable[[], None]:
    """One large matmul (2 n^3 FLOPs)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)

    def step() -> None:
        _ = a @ b

    return step


PROBES = {"input": input_bound, "host": launch_bound, "compute": compute_bound}

__all__ = ["PROBES", "compute_bound", "input_bound", "launch_bound"]
