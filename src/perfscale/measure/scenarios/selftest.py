"""`selftest`: a small matmul step for testing the harness itself (not a CLI scenario).

`extra['fault']` injects each failure the runner must turn into a result:
- `oom`: ask the CPU allocator for an impossible tensor (DefaultCPUAllocator: can't allocate memory)
- `hang`: sleep forever in the step (the runner's time limit must kill it)
- `crash`: the process dies hard (os._exit) after printing to stderr
- `error`: a Python exception in the step
`extra['size']` sets the matrix side (default 64); `extra['sleep']` adds a fixed sleep per step.
"""

from __future__ import annotations

import time

from perfscale.measure.faults import FAULTS as INJECTABLE, inject_fault
from perfscale.measure.scenarios.common import Scenario

FAULTS = ("none", *INJECTABLE)


def setup(config, device: str) -> Scenario:
    import torch

    if not config.threads:  # one thread: an OpenMP barrier on a busy machine costs more than the matmul
        torch.set_num_threads(1)
    fault = config.extra.get("fault", "none")
    if fault not in FAULTS:
        raise ValueError(f"selftest fault {fault!r} is not one of {FAULTS}")
    n = int(config.extra.get("size", 64))
    pause = float(config.extra.get("sleep", 0.0))
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)

    def step() -> None:
        inject_fault(fault, "selftest")
        if pause:
            time.sleep(pause)
        (a @ b).sum().item()

    def outputs():
        return {"logits": (a @ b).cpu().numpy()[None]}

    return Scenario(step=step, samples_per_iter=1, tokens_per_iter=n, flops_per_iter=2.0 * n**3, peak_dtype="fp32", outputs=outputs)
