"""One rank of `debug dist`, started by torchrun: `python -m perfscale.debug.dist_worker JOB.json`.

The rank writes what it does as it does it to `rank<R>.jsonl` in the job's folder (one line when a step
begins, one when it ends or fails), so that the launcher can say which rank stopped where even when
the process hangs or dies; at the end it writes `rank<R>.json` with its results. Steps: rendezvous
(init_process_group), ranks and world size (an all_gather of each rank's identity), the device, then
each collective at each size: the result checked element by element against the value it must have,
then timed (nccl-tests' method: a warm-up, then the median of a few timed iterations).

Collectives and their bus bandwidth (nccl-tests, doc/PERFORMANCE.md: busbw = algbw x factor, algbw =
S / t, with n ranks): all_reduce 2(n-1)/n (S = the buffer), all_gather and reduce_scatter (n-1)/n
(S = the full gathered / scattered buffer), broadcast 1, send/recv 1 (S = what each rank sends). torch 2.13 names the tensor forms all_gather_single and reduce_scatter_single.

`fault` (for testing the tool): `hang:RANK:STEP` makes RANK sleep when it begins STEP (a collective
name like all_reduce, or rendezvous); `exit:RANK:STEP` makes it exit with code 3 there; `corrupt:RANK:STEP`
makes RANK contribute a wrong value (+1) to that collective, so that the others receive wrong results.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import sys
import time
from pathlib import Path

ENV_PREFIXES = ("NCCL_", "GLOO_", "TORCH_NCCL_", "TORCH_DISTRIBUTED", "TORCHELASTIC_")
ENV_NAMES = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK",
             "ROLE_RANK", "OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "TORCH_CPP_LOG_LEVEL")
COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter", "broadcast", "send_recv")
BUS_FACTOR = {"all_reduce": lambda n: 2 * (n - 1) / n, "all_gather": lambda n: (n - 1) / n,
              "reduce_scatter": lambda n: (n - 1) / n, "broadcast": lambda n: 1.0, "send_recv": lambda n: 1.0}
EXIT_CODE_INJECTED = 3


def relevant_env(environ=os.environ) -> dict[str, str]:
    """The environment that decides how a distributed job connects (NCCL_*, GLOO_*, MASTER_*, ...)."""
    return {k: v for k, v in sorted(environ.items()) if k in ENV_NAMES or k.startswith(ENV_PREFIXES)}


def interfaces() -> dict[str, list[str]]:
    """Network interfaces and their IPv4/IPv6 addresses (what GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME pick from)."""
    try:
        import psutil

        return {name: [a.address for a in addrs if a.family in (socket.AF_INET, socket.AF_INET6)]
                for name, addrs in sorted(psutil.net_if_addrs().items())}
    except Exception:  # noqa: BLE001 - psutil missing or no permission: not a failure of the cluster
        return {}


class Log:
    def __init__(self, path: Path):
        self.f = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - line-buffered for the whole run

    def __call__(self, event: str, step: str, **extra) -> None:
        self.f.write(json.dumps({"t": time.time(), "event": event, "step": step, **extra}) + "\n")
        self.f.flush()
        os.fsync(self.f.fileno())


def _maybe_fault(fault: str | None, rank: int, step: str) -> None:
    if not fault:
        return
    kind, who, where = fault.split(":", 2)
    if kind == "corrupt" or int(who) != rank or where != step.split(":")[0]:
        return
    if kind == "hang":
        while True:
            time.sleep(3600)
    if kind == "exit":
        os._exit(EXIT_CODE_INJECTED)


def _corrupts(fault: str | None, rank: int, step: str) -> float:
    """The error this rank adds to what it contributes to `step` (0 unless fault is corrupt:RANK:STEP)."""
    if not fault or not fault.startswith("corrupt:"):
        return 0.0
    _, who, where = fault.split(":", 2)
    return 1.0 if int(who) == rank and where == step.split(":")[0] else 0.0


def _expected_and_run(name: str, n_elems: int, rank: int, world: int, device, group, bias: float = 0.0):
    """(run: () -> output tensor, expected output tensor, bytes S for algbw) of one collective. `bias` is
    added to what this rank contributes (an injected fault); the expected values are the honest ones."""
    import torch
    import torch.distributed as dist

    full = lambda v, n=n_elems: torch.full((n,), float(v), device=device)  # noqa: E731
    # torch 2.13 renamed all_gather_into_tensor / reduce_scatter_tensor (the old names warn): the new ones where they exist
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
    if name == "all_reduce":
        buf = full(rank + 1)

        def run():
            buf.fill_(rank + 1 + bias)
            dist.all_reduce(buf, group=group)
            return buf
        return run, full(world * (world + 1) / 2), n_elems * 4
    if name == "all_gather":
        src, out = full(rank + 1 + bias), torch.empty(world * n_elems, device=device)

        def run():
            gather(out, src, group=group)
            return out
        expected = torch.arange(1, world + 1, dtype=torch.float32, device=device).repeat_interleave(n_elems)
        return run, expected, world * n_elems * 4
    if name == "reduce_scatter":
        # chunk j of rank i holds i + 1 + j; rank r receives sum_i (i + 1 + r) = n(n+1)/2 + n r
        src = (torch.arange(world, dtype=torch.float32, device=device) + rank + 1 + bias).repeat_interleave(n_elems)
        out = torch.empty(n_elems, device=device)

        def run():
            scatter(out, src, group=group)
            return out
        return run, full(world * (world + 1) / 2 + world * rank), world * n_elems * 4
    if name == "broadcast":
        buf = full(0)

        def run():
            buf.fill_(42.0 + bias if rank == 0 else 0.0)
            dist.broadcast(buf, src=0, group=group)
            return buf
        return run, full(42), n_elems * 4
    if name == "send_recv":  # a ring: each rank sends to the next and receives from the previous
        src, out = full(rank + 1 + bias), torch.empty(n_elems, device=device)

        def run():
            ops = [dist.P2POp(dist.isend, src, (rank + 1) % world, group),
                   dist.P2POp(dist.irecv, out, (rank - 1) % world, group)]
            for req in dist.batch_isend_irecv(ops):
                req.wait()
            return out
        return run, full((rank - 1) % world + 1), n_elems * 4
    raise ValueError(name)


def main(job_path: str) -> int:
    return run_rank(json.loads(Path(job_path).read_text()))


def run_rank(job: dict, *, keep_group: bool = False) -> int:
    """This process's checks as one rank of the job (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT from
    torchrun); writes rank<R>.jsonl and rank<R>.json in job['folder']; 0 when every step ran. With
    `keep_group` the default process group stays up (to gather the ranks' results afterwards)."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    folder = Path(job["folder"])
    log = Log(folder / f"rank{rank}.jsonl")
    fault = job.get("fault")
    from datetime import timedelta

    log("begin", "rendezvous", pid=os.getpid(), host=socket.gethostname(), local_rank=local_rank)
    _maybe_fault(fault, rank, "rendezvous")
    import torch
    import torch.distributed as dist

    backend = job["backend"]
    device = torch.device(f"cuda:{local_rank}") if backend == "nccl" else torch.device("cpu")
    if backend == "nccl":
        torch.cuda.set_device(device)
    # rendezvous waits as long as the whole run may (a rank still importing torch on a busy machine is
    # late, not hung); the checks run on a group whose timeout is the per-collective one
    dist.init_process_group(backend, timeout=timedelta(seconds=float(job["timeout"])),
                            **({"device_id": device} if backend == "nccl" else {}))
    group = dist.new_group(backend=backend, timeout=timedelta(seconds=float(job["step_timeout"])))
    log("end", "rendezvous")
    results: dict = {"rank": rank, "world_size": world, "local_rank": local_rank, "host": socket.gethostname(),
                     "pid": os.getpid(), "device": str(device), "backend": backend, "env": relevant_env(),
                     "interfaces": interfaces(), "checks": [], "torch": torch.__version__}
    try:
        log("begin", "ranks")
        _maybe_fault(fault, rank, "ranks")
        ident = [None] * world
        dist.all_gather_object(ident, group=group, obj={"rank": rank, "local_rank": local_rank, "host": socket.gethostname(),
                                       "pid": os.getpid(), "device": str(device)})
        results["peers"] = ident
        ranks_ok = sorted(i["rank"] for i in ident) == list(range(world)) and dist.get_world_size(group) == world
        results["checks"].append({"step": "ranks", "ok": ranks_ok})
        log("end", "ranks", ok=ranks_ok)
        for name in job["collectives"]:
            if name == "send_recv" and world < 2:
                continue
            for size in job["sizes"]:
                step = f"{name}:{size}"
                log("begin", step)
                _maybe_fault(fault, rank, step)
                n_elems = max(1, size // 4)
                run, expected, nbytes = _expected_and_run(name, n_elems, rank, world, device, group,
                                                          _corrupts(fault, rank, step))
                out = run()
                wrong = out != expected
                mismatches = int(wrong.sum())
                # all_gather keeps every rank's contribution apart: the chunks that are wrong name the ranks that sent them
                suspects = ([int(i) for i in wrong.view(world, n_elems).any(dim=1).nonzero().flatten()]
                            if name == "all_gather" and mismatches else [])
                times = []
                for i in range(1 + job["iters"]):
                    dist.barrier(group=group)
                    t0 = time.perf_counter()
                    run()
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    if i:  # the first is the warm-up
                        times.append(time.perf_counter() - t0)
                t = statistics.median(times)
                algbw = nbytes / t
                check = {"step": step, "collective": name, "bytes": size, "ok": mismatches == 0, "mismatches": mismatches,
                         "wrong_senders": suspects,
                         "first_value": float(out.flatten()[0]), "expected_value": float(expected.flatten()[0]),
                         "time_s": t, "algbw": algbw, "busbw": algbw * BUS_FACTOR[name](world)}
                results["checks"].append(check)
                log("end", step, ok=check["ok"])
        log("begin", "shutdown")
        dist.barrier(group=group)
        log("end", "shutdown")
    except Exception as exc:  # noqa: BLE001 - recorded for the launcher's verdict, then the rank fails
        log("error", _last_step(folder / f"rank{rank}.jsonl"), error=f"{type(exc).__name__}: {str(exc)[:800]}")
        (folder / f"rank{rank}.json").write_text(json.dumps(results))
        return 1
    (folder / f"rank{rank}.json").write_text(json.dumps(results))
    if not keep_group:
        dist.destroy_process_group()
    return 0


def _last_step(path: Path) -> str:
    last = "?"
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == "begin":
            last = entry["step"]
    return last


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
