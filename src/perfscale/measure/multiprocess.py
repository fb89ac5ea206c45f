"""The runner's side of a multi-process measurement: start the torchrun agents, wait, clean up, merge.

`run_in_subprocess` (measure/runner.py) hands a configuration with a strategy (ddp, fsdp2) here. One
agent per node (`python -m perfscale.measure.launcher JOB NODE`, measure/launcher.py) is started in a
session of its own with the same parent-death pipe a worker gets; the job as a whole has the time
limit of one configuration. Outcomes, named by rank:

- every rank wrote an `ok` result: one BenchResult whose samples are the slowest rank's step time per
  iteration, whose rates count every rank's tokens, with `ranks` (per-rank step time, tokens/s,
  memory, communication time) and `distributed` (backend, world size, threads per rank);
- a rank wrote a failure (oom, an exception): that status, "rank R: ..." as the reason;
- a rank died without a result: torchrun's record of it (exit code or signal; SIGKILL reads as the
  kernel's OOM killer, as for one process);
- the time limit passed: every rank is asked for its Python stack (SIGUSR1, faulthandler) and then
  killed with its agent; the reason says where each rank was, naming the ranks outside torch (the
  ones that hung; the others wait for them in a collective).

Nothing outlives this: the agents' process groups and each rank's (torchrun gives every rank a
session of its own) are killed at the end, found by the pid files the ranks write.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from perfscale.measure.bench_config import BenchConfig
from perfscale.measure.distributed import rank_file
from perfscale.measure.result import BenchResult

GRACE_S = 10.0  # how long the other agents get after one agent failed (their ranks are being stopped)
STACK_WAIT_S = 1.5  # for the ranks to write their stacks on SIGUSR1


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the OS picks it), for the c10d rendezvous of several agents."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cores() -> int:
    """CPUs this process may run on (its affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def threads_per_rank(config: BenchConfig) -> int:
    """--threads when given, else this machine's cores shared among one node's ranks (at least 1)."""
    return config.threads or max(1, cores() // config.nproc)


def distributed_job(config: BenchConfig) -> dict[str, Any]:
    return {"nproc": config.nproc, "nnodes": config.nnodes, "port": free_port() if config.nnodes > 1 else None,
            "run_id": uuid.uuid4().hex[:12], "threads_per_rank": threads_per_rank(config)}


# ----- processes -----
def _ours(pid: int, marker: str) -> bool:
    """The process `pid` is a rank of this job (its command line names the job's rank file), not a reused pid."""
    try:
        return marker in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def _rank_pids(template: str, world: int) -> dict[int, int]:
    pids = {}
    for rank in range(world):
        try:
            pids[rank] = int(rank_file(template, rank, "pid").read_text())
        except (OSError, ValueError):
            continue
    return pids


def _signal_ranks(template: str, world: int, marker: str, signum: int) -> None:
    for pid in _rank_pids(template, world).values():
        if _ours(pid, marker):
            try:
                os.killpg(pid, signum) if signum == signal.SIGKILL else os.kill(pid, signum)
            except (ProcessLookupError, PermissionError):
                pass


def _kill_agents(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    for proc in procs:
        proc.wait()


def run_torchrun(config: BenchConfig, job: dict[str, Any], job_path: Path, err_base: Path, *, env: dict, death_r: int,
                 limit: float, base: dict[str, Any]) -> BenchResult:
    """Run the job's agents to the end (or the time limit) and merge what the ranks wrote. A
    KeyboardInterrupt (Ctrl-C, SIGTERM) kills everything first and propagates (the runner stores it)."""
    template = job["result_path"]
    marker = f"{job_path}.node"  # every rank's command line names its node's rank job, JOB.node<N>.rank-job.json
    world = config.world_size
    procs: list[subprocess.Popen] = []
    errs = []
    t0 = time.perf_counter()
    timed_out = False
    try:
        for node in range(config.nnodes):
            err = open(f"{err_base}.node{node}", "wb")  # noqa: SIM115 - closed below
            errs.append(err)
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "perfscale.measure.launcher", str(job_path), str(node)],
                stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
                pass_fds=(death_r,),
            ))
        first_failure: float | None = None
        while True:
            codes = [p.poll() for p in procs]
            if all(c is not None for c in codes):
                break
            now = time.perf_counter()
            if any(c not in (None, 0) for c in codes):
                first_failure = first_failure if first_failure is not None else now
                if now - first_failure > GRACE_S:
                    break
            if now - t0 > limit:
                timed_out = True
                _signal_ranks(template, world, marker, signal.SIGUSR1)  # each rank writes its stack
                time.sleep(STACK_WAIT_S)
                break
            time.sleep(0.05)
    finally:  # normal end, time limit, Ctrl-C: nothing stays behind
        _kill_agents(procs)
        _signal_ranks(template, world, marker, signal.SIGKILL)
        for err in errs:
            err.close()
    base = base | {"wall_s": time.perf_counter() - t0}
    stderr = "".join(_tail(Path(f"{err_base}.node{n}"), 3000 // config.nnodes) for n in range(config.nnodes))
    nodes = [_read_json(Path(f"{job_path}.node{n}.json")) for n in range(config.nnodes)]
    payloads = {r: p for r in range(world) if (p := _read_json(rank_file(template, r, "json"))) is not None}
    if timed_out:
        return BenchResult(status="timeout", reason=f"exceeded the time limit of {limit:.0f} s and was killed; "
                           + hang_report(template, world, payloads), stderr_tail=stderr, **base)
    return merge(config, payloads, nodes, stderr, base)


def _tail(path: Path, n: int) -> str:
    try:
        return path.read_bytes()[-n:].decode("utf-8", errors="replace")
    except OSError:
        return ""


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# ----- what the ranks say -----
def _innermost_frame(stack_text: str) -> str | None:
    """The innermost frame of the main thread in a faulthandler dump ('File "x.py", line 3 in f')."""
    block = stack_text.split("\n\n")[0] if stack_text else ""
    for part in stack_text.split("\n\n"):
        if "Current thread" in part or "most recent call first" in part:
            block = part
            if "Current thread" in part:
                break
    frames = [line.strip() for line in block.splitlines() if line.strip().startswith("File ")]
    return frames[0] if frames else None


def hang_report(template: str, world: int, payloads: dict[int, dict]) -> str:
    """Where each rank was when the job was killed; ranks outside torch's code are the ones that hung."""
    where: dict[int, str | None] = {}
    for rank in range(world):
        if rank in payloads:
            where[rank] = "finished"
            continue
        try:
            where[rank] = _innermost_frame(rank_file(template, rank, "stack").read_text())
        except OSError:
            where[rank] = None
    stuck = [r for r, w in where.items() if w not in (None, "finished") and "/torch/" not in w]
    parts = [f"rank {r}: {w or 'no stack (not started, or not answering)'}" for r, w in where.items()]
    head = (f"rank{'s' if len(stuck) > 1 else ''} {', '.join(map(str, stuck))} hung outside torch (the others wait in a collective)"
            if stuck else "no rank was outside torch's code")
    return head + "; " + "; ".join(parts)


def _failure_text(failure: dict) -> str:
    if failure.get("signal"):
        return f"killed by {failure['signal']}"
    return f"exit code {failure.get('exitcode')}"


def merge(config: BenchConfig, payloads: dict[int, dict], nodes: list[dict | None], stderr: str, base: dict) -> BenchResult:
    """One BenchResult from every rank's result (see the module docstring)."""
    world = config.world_size
    config_doc = config.to_dict()
    failure = _failure(payloads, nodes, world)
    if failure is not None:
        status, reason, payload = failure
        if payload is not None:
            doc = {"config": config_doc, **payload, "reason": reason, "ranks": _rank_rows(payloads, config)}
            return _from(doc, base)
        return BenchResult(status=status, reason=reason, stderr_tail=stderr, ranks=_rank_rows(payloads, config), **base)
    first = payloads[0]
    doc = {"config": config_doc, **first}
    doc["tokens_per_iter"] = sum(p.get("tokens_per_iter") or 0 for p in payloads.values()) or None
    doc["samples_per_iter"] = sum(p.get("samples_per_iter") or 0 for p in payloads.values()) or None
    rows = _rank_rows(payloads, config)
    doc["ranks"] = rows
    mem = dict(first.get("memory") or {})
    for key in ("cpu_peak_rss", "peak_live_tensor_bytes", "cuda_max_allocated", "cuda_max_reserved"):
        values = [(p.get("memory") or {}).get(key) for p in payloads.values()]
        values = [v for v in values if v is not None]
        mem[key] = max(values) if values else None
    rss = [r["cpu_peak_rss"] for r in rows if r.get("cpu_peak_rss")]
    mem["cpu_peak_rss_all_ranks"] = sum(rss) if rss else None  # ranks on one machine share its memory
    mem["per_rank"] = "max over ranks (see ranks)"
    doc["memory"] = mem
    doc["mfu"] = _merged_mfu(first.get("mfu") or {}, world, first.get("device"), first.get("samples") or [])
    comm = [r["comm_s"] for r in rows if r.get("comm_s") is not None]
    step = [r["step_time_median"] for r in rows if r.get("step_time_median")]
    doc["distributed"] = {
        "strategy": config.strategy, "world_size": world, "nproc_per_node": config.nproc, "nnodes": config.nnodes,
        "backend": (first.get("rank") or {}).get("backend"), "threads_per_rank": (first.get("rank") or {}).get("threads"),
        "comm_s_max": max(comm) if comm else None,
        "comm_fraction": max(c / s for c, s in zip(comm, step, strict=False)) if comm and step else None,
        "step_time": "the slowest rank's per iteration", "tokens": "all ranks' (global batch)",
        "torchrun": launch_line(nodes, (first.get("rank") or {}).get("threads")),
    }
    notes = list(doc.get("notes") or [])
    if world > cores() and (first.get("device") or "cpu") == "cpu":
        notes.append(f"{world} ranks on {cores()} cores: ranks share cores, so the step time includes waiting for a core")
    notes.append(f"{config.strategy} over {world} rank{'s' if world > 1 else ''} ({config.nproc} per node x {config.nnodes} node"
                 f"{'s' if config.nnodes > 1 else ''}): tokens/s counts every rank's batch over the slowest rank's step time")
    doc["notes"] = notes
    return _from(doc, base)


# A rank's error that says a peer went away: a consequence of another rank's failure, not a cause.
PEER_ERRORS = ("remote worker", "closed by peer", "Connection reset", "Read error", "Socket Timeout", "NCCL communicator",
               "Broken pipe", "Connection refused")


def _failure(payloads: dict[int, dict], nodes: list[dict | None], world: int) -> tuple[str, str, dict | None] | None:
    """(status, reason naming the rank, that rank's payload or None) of a failed job; None when every rank is ok.

    The cause, in this order: a rank that failed on its own (earliest first), a rank that died without
    a result on its own (torchrun's record: an exit code, or a signal other than the agent's SIGTERM),
    a rank that lost a peer; the agent stopping the others with SIGTERM comes last."""
    wrote = sorted(((p.get("failed_at") or float("inf"), r, p) for r, p in payloads.items() if p.get("status") != "ok"),
                   key=lambda t: t[:2])
    own = [(r, p) for _, r, p in wrote if not any(e in str(p.get("reason")) for e in PEER_ERRORS)]
    peer = [(r, p) for _, r, p in wrote if (r, p) not in own]
    records = [f for n in nodes if n for f in n.get("failures", ()) if f["rank"] not in payloads]
    died = sorted((f for f in records if f.get("signal") != "SIGTERM"), key=lambda f: f["rank"])
    stopped = sorted((f for f in records if f.get("signal") == "SIGTERM"), key=lambda f: f["rank"])
    missing = [r for r in range(world) if r not in payloads]
    if not wrote and not missing:
        return None
    after = [f"rank {r} {p.get('status')}" for r, p in own[1:] + peer] + [f"rank {f['rank']} {_failure_text(f)}" for f in died + stopped]
    if own:
        rank, p = own[0]
        rest = [a for a in after if not a.startswith(f"rank {rank} ")]
        return p.get("status", "failed"), f"rank {rank}: {p.get('reason')}" + (f" (then {', '.join(rest)})" if rest else ""), p
    if died or stopped:
        root = (died or stopped)[0]
        rest = [a for a in after if not a.startswith(f"rank {root['rank']} ")]
        status = "oom" if root.get("signal") == "SIGKILL" else "failed"
        reason = f"rank {root['rank']} died without a result ({_failure_text(root)}" + (f"; then {', '.join(rest)}" if rest else "") + ")"
        if status == "oom":
            reason += ": killed by SIGKILL, not by perfscale: most likely the kernel's OOM killer"
        return status, reason, None
    if peer:
        rank, p = peer[0]
        return p.get("status", "failed"), f"rank {rank}: {p.get('reason')}", p
    errors = [n["error"] for n in nodes if n and n.get("error")]
    if errors:
        return "failed", f"torchrun could not run the job: {errors[0]}", None
    absent = [n for n, doc in enumerate(nodes) if doc is None]
    return "failed", f"ranks {', '.join(map(str, missing))} wrote no result" + (
        f" (the agents of nodes {', '.join(map(str, absent))} died without a word)" if absent else ""), None


def launch_line(nodes: list[dict | None], threads: int | None) -> str | None:
    """The torchrun line each agent ran, for a user's train.py: what was measured, to run again."""
    args = next((n["args"] for n in nodes if n and n.get("args")), None)
    if not args:
        return None
    flags = [a for a in args[: args.index("-m")] if not a.startswith(("--max-restarts", "--monitor-interval"))]
    env = f"OMP_NUM_THREADS={threads} " if threads else ""
    return env + " ".join(["torchrun", *flags, "train.py"])


def _from(doc: dict, base: dict) -> BenchResult:
    return BenchResult.from_dict(doc | {k: v for k, v in base.items() if k != "config"})


def _merged_mfu(mfu: dict, world: int, device: str | None, samples: list[float]) -> dict:
    """Every rank's FLOPs over the job's step time, against the devices they ran on: world x a GPU's
    peak on CUDA; on CPU the ranks share one machine, whose peak is counted once."""
    import numpy as np

    if not mfu.get("flops_per_iter") or not samples:
        return mfu
    flops = mfu["flops_per_iter"] * world
    median = float(np.median(samples))
    devices = world if device == "cuda" else 1
    peak = mfu.get("peak_flops")
    return mfu | {"flops_per_iter": flops, "achieved_flops": flops / median,
                  "value": flops / median / (peak * devices) if peak else None,
                  "devices": devices}


def _rank_rows(payloads: dict[int, dict], config: BenchConfig) -> list[dict]:
    import numpy as np

    rows = []
    for rank, p in sorted(payloads.items()):
        info = p.get("rank") or {}
        own = info.get("samples") or []
        median = float(np.median(own)) if own else None
        mem = p.get("memory") or {}
        comm = info.get("comm") or {}
        rows.append({
            "rank": rank, "node": info.get("node"), "local_rank": info.get("local_rank"), "pid": info.get("pid"),
            "status": p.get("status"), "threads": info.get("threads"), "iterations": len(own),
            "step_time_median": median,
            "tokens_per_s": (p.get("tokens_per_iter") or 0) / median if median else None,
            "peak_live_tensor_bytes": mem.get("peak_live_tensor_bytes"), "cpu_peak_rss": mem.get("cpu_peak_rss"),
            "cuda_max_allocated": mem.get("cuda_max_allocated"),
            "comm_s": comm.get("seconds"), "comm_ops": comm.get("ops"),
        })
    return rows


__all__ = ["cores", "distributed_job", "free_port", "hang_report", "merge", "run_torchrun", "threads_per_rank"]
