"""`selftest`: a small matmul step for testing the harness itself (not a CLI scenario).

`extra['fault']` injects each failure the runner must turn into a result:
- `oom`: ask the CPU allocator for an impossible tensor (DefaultCPUAllocator: can't allocate memory)
- `hang`: sleep forever in the step (the runner's time limit must kill it)
- `crash`: the process dies hard (os._exit) after printing to stderr
- `error`: a Python exception in the step
`extra['size']` sets the matrix side (default 64); `extra['sleep']` adds a fixed sleep per step.
Under torchrun (strategy ddp) each step all-reduces its result, as DDP reduces gradients, so that a
rank that hangs or dies leaves the others waiting in a collective; `extra['fault_rank']` makes only
that rank misbehave.
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
    reduce = None
    who = "selftest"
    if config.distributed:
        import torch.distributed as dist

        rank = dist.get_rank()
        who = f"selftest rank {rank}"
        if config.extra.get("fault_rank") is not None and int(config.extra["fault_rank"]) != rank:
            fault = "none"
        reduce = dist.all_reduce

    def step() -> None:
        if fault != "none":
            inject_fault(fault, who)
        if pause:
            time.sleep(pause)
        c = a @ b
        if reduce is not None:
            reduce(c)
        c.sum().item()

    def outputs():
        return {"logits": (a @ b).cpu().numpy()[None]}

    return Scenario(step=step, samples_per_iter=1, tokens_per_iter=n, flops_per_iter=2.0 * n**3, peak_dtype="fp32", outputs=outputs)
