"""One torchrun agent of a multi-process measurement: `python -m perfscale.measure.launcher JOB.json NODE`.

The runner (measure/multiprocess.py) starts one of these per node, each in its own session. It
watches the perfscale process like a worker does (measure/worker.watch_parent: a pipe only the
parent writes to, and PR_SET_PDEATHSIG), then runs torchrun's own agent in this process
(`torch.distributed.run`): `--nproc-per-node` ranks of `python -m perfscale.measure.worker`, no
restarts, a c10d rendezvous on 127.0.0.1 (`--standalone` with one node, which picks a free port
itself; with several nodes the runner picks a free port). torchrun starts each rank in a session of
its own; the ranks watch this agent the same way and end themselves when it dies.

What torchrun knows about a failed rank (its rank, exit code or signal) is written to
`JOB.node<N>.json`, so that the result names the rank even when the rank could write nothing.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any


def torchrun_args(job: dict[str, Any], rank_job: Path, node: int) -> list[str]:
    """torchrun's command line for this agent (the same flags `perfscale tune --emit torchrun` writes)."""
    spec = job["distributed"]
    args = [f"--nnodes={spec['nnodes']}", f"--nproc-per-node={spec['nproc']}", "--max-restarts=0", "--monitor-interval=0.1"]
    if spec["nnodes"] == 1:
        args.append("--standalone")
    else:
        args += ["--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{spec['port']}", f"--rdzv-id={spec['run_id']}",
                 "--local-addr=127.0.0.1"]
    return [*args, "-m", "perfscale.measure.worker", str(rank_job)]


def _failures(exc: BaseException) -> list[dict[str, Any]]:
    out = []
    for rank, failure in sorted(getattr(exc, "failures", {}).items()):
        entry = {"rank": rank, "local_rank": failure.local_rank, "exitcode": failure.exitcode, "pid": failure.pid}
        if failure.exitcode is not None and failure.exitcode < 0:
            entry["signal"] = failure.signal_name()
        out.append(entry)
    return out


def main(argv: list[str]) -> int:
    from perfscale.measure.worker import watch_parent

    job_path, node = Path(argv[0]), int(argv[1])
    job = json.loads(job_path.read_text())
    watch_parent(job.get("parent"))
    spec = job["distributed"]
    # The ranks watch this agent (not perfscale), and leave the temp folder alone: the runner reads it.
    rank_job = {**job, "parent": {"pid": os.getpid()}, "node": node}
    rank_job_path = Path(f"{job_path}.node{node}.rank-job.json")
    rank_job_path.write_text(json.dumps(rank_job))
    # Threads per rank: what was asked, else this node's cores shared among its ranks (torchrun alone sets 1).
    os.environ["OMP_NUM_THREADS"] = str(spec["threads_per_rank"])
    summary: dict[str, Any] = {"node": node, "agent_pid": os.getpid(), "args": torchrun_args(job, rank_job_path, node)}
    rc = 0
    try:
        from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
        from torch.distributed.run import get_args_parser, run

        try:
            run(get_args_parser().parse_args(summary["args"]))
        except ChildFailedError as exc:
            summary["failures"] = _failures(exc)
            rc = 1
    except Exception as exc:  # noqa: BLE001 - a rendezvous that fails, a port taken: a result, not a traceback
        summary["error"] = f"{type(exc).__name__}: {exc}"[:2000]
        rc = 1
    tmp = Path(f"{job_path}.node{node}.json.tmp")
    tmp.write_text(json.dumps(summary, default=str))
    os.replace(tmp, f"{job_path}.node{node}.json")
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
