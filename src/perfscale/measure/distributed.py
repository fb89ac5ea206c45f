"""Inside one rank of a torchrun-measured job: the process group, the shared stop rule, what a rank reports.

The runner starts `nnodes` torchrun agents (measure/launcher.py); each agent starts `nproc` ranks, and
each rank runs the ordinary worker (measure/worker.py) with a `RankGroup`:

- the backend that fits the device: gloo on CPU (oneCCL's `ccl` where its torch bindings are
  installed), NCCL on CUDA;
- every timed iteration's step time is the slowest rank's (all_reduce MAX after the step, outside the
  timed region), so the stop rule sees the job's step time; rank 0 decides when to stop and
  broadcasts it, so every rank runs the same number of iterations (a collective would hang otherwise);
- each rank writes its own result file (its own samples, memory, communication time), its pid (the
  runner kills what is left) and, on SIGUSR1, its Python stack (the runner asks for it before it kills
  a job that ran past its time limit, to say which rank hung where).
"""

from __future__ import annotations

import faulthandler
import os
import signal
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

STOP_CODES = (None, "converged", "time_cap", "iteration_cap")


def backend_for(device: str) -> str:
    """NCCL on CUDA; on CPU Intel's oneCCL (`ccl`) where its torch bindings are installed, else gloo
    (torch.distributed's recommendation for each; the bindings register `ccl` when imported)."""
    if device == "cuda":
        return "nccl"
    import importlib.util

    return "ccl" if importlib.util.find_spec("oneccl_bindings_for_pytorch") is not None else "gloo"


def rank_file(template: str, rank: int, kind: str) -> Path:
    """The per-rank file of `kind` (result, pid, stack) next to the job's result file."""
    return Path(f"{template}.rank{rank}.{kind}")


@dataclass
class RankGroup:
    rank: int
    local_rank: int
    node: int
    world_size: int
    backend: str
    template: str  # the job's result path: rank files are derived from it

    @classmethod
    def start(cls, job: dict[str, Any], device: str, timeout_s: float) -> RankGroup:
        import torch
        import torch.distributed as dist

        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        node = int(os.environ.get("GROUP_RANK", job.get("node", 0)))
        template = job["result_path"]
        rank_file(template, rank, "pid").write_text(str(os.getpid()))
        stack = open(rank_file(template, rank, "stack"), "w")  # noqa: SIM115 - open for the process's life
        faulthandler.register(signal.SIGUSR1, file=stack, all_threads=True)
        if device == "cuda":
            torch.cuda.set_device(local_rank)
        backend = backend_for(device)
        if backend == "ccl":
            import oneccl_bindings_for_pytorch  # noqa: F401 - registers the ccl backend
        dist.init_process_group(backend, timeout=timedelta(seconds=max(60.0, timeout_s)))
        return cls(rank, local_rank, node, world, backend, template)

    @property
    def result_path(self) -> str:
        return str(rank_file(self.template, self.rank, "json"))

    def slowest(self, seconds: float) -> float:
        """The slowest rank's time for this iteration (every rank gets the same number)."""
        import torch
        import torch.distributed as dist

        t = torch.tensor([seconds], dtype=torch.float64, device=self._device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t.item())

    def agree(self, reason: str | None) -> str | None:
        """Rank 0's stop decision, on every rank."""
        import torch
        import torch.distributed as dist

        code = torch.tensor([STOP_CODES.index(reason) if self.rank == 0 else 0], dtype=torch.int64, device=self._device())
        dist.broadcast(code, src=0)
        return STOP_CODES[int(code.item())]

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()

    def close(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()

    def _device(self) -> str:
        return "cuda" if self.backend == "nccl" else "cpu"

    def info(self) -> dict[str, Any]:
        return {"rank": self.rank, "local_rank": self.local_rank, "node": self.node, "world_size": self.world_size,
                "backend": self.backend, "pid": os.getpid(), "threads": _threads()}


def _threads() -> int:
    import torch

    return torch.get_num_threads()


# Communication ops in a profiled iteration: the backends' own work items (gloo runs them on its own
# threads, so they overlap DDP's backward), not the c10d dispatcher's enqueue calls.
COMM_PREFIXES = ("gloo:", "nccl:", "ccl:")


def comm_time(events) -> dict[str, Any]:
    """Seconds and counts per collective of one iteration, from torch.profiler kineto events."""
    per_op: dict[str, list[float]] = {}
    for e in events:
        name = e.name()
        if name.startswith(COMM_PREFIXES):
            per_op.setdefault(name, []).append(e.duration_ns() / 1e9)
    return {"seconds": sum(sum(v) for v in per_op.values()),
            "ops": {k: {"count": len(v), "seconds": sum(v)} for k, v in sorted(per_op.items())}}


__all__ = ["COMM_PREFIXES", "RankGroup", "backend_for", "comm_time", "rank_file"]
