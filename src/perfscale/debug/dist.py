"""`debug dist`: launch the distributed sanity check under torchrun and turn what every rank did into a verdict.

The transformers debugging guide's recipe is a script run under `torch.distributed.run` with
NCCL_DEBUG=INFO whose output a person reads. Here each rank (debug/dist_worker.py) checks rendezvous,
ranks and world size, its device, and all_reduce / all_gather / reduce_scatter / broadcast / send-recv
over several sizes (values checked, bus bandwidth timed), writing each step as it begins and ends.
This side starts torchrun (one agent per simulated node, c10d rendezvous on 127.0.0.1), waits at most
`timeout` seconds, kills every process group it started whatever happens, and reads the ranks' logs:
a rank that began a step and went silent while the others failed in it hung there; one whose process
ended with an exit code of its own exited there; ranks that report wrong values name the collective.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import perfscale
from perfscale.debug.dist_worker import COLLECTIVES, relevant_env
from perfscale.errors import InvalidConfigError, PerfscaleError, TopologyError

DEFAULT_SIZES = (4096, 262144, 4194304)  # 4 KiB (latency), 256 KiB, 4 MiB (bandwidth)
MAX_SIZE = 1 << 30
MAX_NNODES = 8  # simulated nodes on this machine


@dataclass
class DistResult:
    ok: bool
    verdict: str
    backend: str
    nnodes: int
    nproc_per_node: int
    world_size: int
    timeout_s: float
    wall_s: float
    ranks: list[dict[str, Any]]  # per rank: state (ok | failed | hung | exited | missing), last step, error, device
    collectives: list[dict[str, Any]]  # per collective and size: ok on every rank, slowest rank's time, busbw
    failures: list[dict[str, Any]]
    catalogue_bandwidth: dict[str, Any]
    env: dict[str, str]
    interfaces: dict[str, list[str]]
    command: list[str]
    notes: list[str] = field(default_factory=list)
    rank: int | None = None  # inside an existing job: the rank this process is (None: this process launched the job)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "debug-dist", **{k: getattr(self, k) for k in self.__dataclass_fields__}}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _check_step_timeout(step_timeout: float | None, timeout: float) -> None:
    if step_timeout is not None and not (isinstance(step_timeout, (int, float)) and 0.1 <= step_timeout <= timeout):
        raise InvalidConfigError(f"--step-timeout {step_timeout!r} must be between 0.1 s and --timeout ({timeout:g} s): it is how long "
                                 "a rank waits in one collective for the others.")


def _check(backend: str, nproc: int, nnodes: int, timeout: float, sizes, iters: int, collectives) -> None:
    import torch
    import torch.distributed as dist

    problems = []
    if backend not in ("gloo", "nccl"):
        problems.append(f"--backend {backend!r} is not one of: gloo, nccl")
    elif backend == "nccl" and not (torch.cuda.is_available() and dist.is_nccl_available()):
        problems.append("--backend nccl needs CUDA and a torch built with NCCL; this torch "
                        f"({torch.__version__}) has cuda={torch.cuda.is_available()}, nccl={dist.is_nccl_available()}: use --backend gloo")
    elif backend == "gloo" and not dist.is_gloo_available():
        problems.append("--backend gloo is not built into this torch: use --backend nccl on a CUDA machine")
    cores = os.cpu_count() or 1
    devices = torch.cuda.device_count() if backend == "nccl" else cores
    if not isinstance(nproc, int) or not 1 <= nproc:
        problems.append(f"--nproc {nproc!r} must be at least 1")
    if not isinstance(nnodes, int) or not 1 <= nnodes <= MAX_NNODES:
        problems.append(f"--nnodes {nnodes!r} must be in 1..{MAX_NNODES} (simulated nodes on this machine)")
    if isinstance(nproc, int) and isinstance(nnodes, int) and nproc >= 1 and 1 <= nnodes and nproc * nnodes > devices:
        what = f"{devices} CUDA devices" if backend == "nccl" else f"{cores} CPU cores"
        problems.append(f"--nproc {nproc} x --nnodes {nnodes} = {nproc * nnodes} ranks is more than the {what} here: "
                        f"use at most {devices} ranks in all")
    if not (isinstance(timeout, (int, float)) and 1 <= timeout <= 3600):
        problems.append(f"--timeout {timeout!r} must be in 1..3600 seconds")
    if not sizes or any(not isinstance(s, int) or not 4 <= s <= MAX_SIZE for s in sizes):
        problems.append(f"--sizes {list(sizes) if sizes else sizes!r}: each must be in 4..{MAX_SIZE} bytes")
    if not isinstance(iters, int) or not 1 <= iters <= 1000:
        problems.append(f"--iters {iters!r} must be in 1..1000")
    unknown = [c for c in collectives if c not in COLLECTIVES]
    if unknown or not collectives:
        problems.append(f"collectives {unknown or list(collectives)!r}: choose from {', '.join(COLLECTIVES)}")
    if problems:
        raise InvalidConfigError("; ".join(problems) + ".")


def parse_sizes(text: str) -> tuple[int, ...]:
    """'4K,256K,4M' -> (4096, 262144, 4194304) (K/M/G are powers of 1024)."""
    out = []
    for word in str(text).split(","):
        m = re.fullmatch(r"\s*(\d{1,12})\s*([KkMmGg]?)[iI]?[bB]?\s*", word)
        if not m:
            raise InvalidConfigError(f"--sizes {text!r}: {word!r} is not a size (e.g. 4K,256K,4M).")
        out.append(int(m.group(1)) * 1024 ** " KMG".index(m.group(2).upper() or " "))
    return tuple(out)


def _catalogue_bandwidth(topology: str | None, nnodes: int) -> dict[str, Any]:
    from perfscale.specs import parse_topology
    from perfscale.specs.detect import detect_local

    try:
        topo = detect_local().topology if topology in (None, "local") else parse_topology(topology)
    except PerfscaleError as exc:
        raise TopologyError(f"--topology {topology!r}: {exc}") from exc
    link = topo.hardware.inter_node if nnodes > 1 else topo.hardware.intra_node
    return {"topology": topo.label if hasattr(topo, "label") else str(topology), "link": link.name,
            "bytes_per_s": link.bandwidth.value, "source": link.bandwidth.source}


def _kill_tree(proc: subprocess.Popen) -> None:
    """Kill a torchrun agent and every process below it. torchrun starts each rank in a session of its
    own, so killing the agent's process group alone leaves the ranks running: kill them first."""
    import psutil

    try:
        below = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        below = []
    for p in below:
        _kill_pid_group(p.pid)
    _kill_pid_group(proc.pid)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def _kill_pid_group(pid: int) -> None:
    for kill in (lambda: os.killpg(os.getpgid(pid), signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            kill()
        except (ProcessLookupError, PermissionError, OSError):
            pass


def _kill_orphans(folder: Path, world: int, job_path: Path) -> None:
    """Ranks whose agent died before them are no longer below it: find them by the pid each rank logged,
    and kill only a process that is still running this job."""
    import psutil

    for r in range(world):
        for entry in _read_log(folder / f"rank{r}.jsonl")[:1]:
            pid = entry.get("pid")
            try:
                if pid and str(job_path) in " ".join(psutil.Process(pid).cmdline()):
                    _kill_pid_group(pid)
            except psutil.Error:
                pass


def _read_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


_EXIT = re.compile(r"rank\s*:\s*(\d+)\s*\(local_rank:\s*\d+\)\s*\n\s*exitcode\s*:\s*(-?\d+)")


def _exit_codes(stderr: str) -> dict[int, int]:
    """Per global rank, the exit code torchrun's failure summary reports (ChildFailedError)."""
    return {int(r): int(c) for r, c in _EXIT.findall(stderr)}


def inside_torchrun(environ=os.environ) -> bool:
    """Whether this process is a rank of a job torchrun (or another launcher) started: the env:// protocol."""
    return all(k in environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def debug_dist(
    *, nproc: int = 2, nnodes: int = 1, backend: str = "gloo", timeout: float = 60.0, step_timeout: float | None = None,
    sizes=DEFAULT_SIZES, iters: int = 5, collectives=COLLECTIVES, topology: str | None = "local",
    fault: str | None = None,
) -> DistResult:
    """Run the distributed checks on `nnodes` x `nproc` ranks on this machine and return the verdict.

    Ends within `timeout` seconds whatever the ranks do (every process started is killed at the end).
    `step_timeout`: the process group's timeout, how long a rank waits in one collective for the others
    (default: a third of `timeout`). `fault` injects a failure to test the tool: 'hang:RANK:STEP',
    'exit:RANK:STEP' or 'corrupt:RANK:STEP' (STEP: rendezvous, ranks, or a collective name).
    """
    sizes = tuple(sizes)
    collectives = tuple(collectives)
    if inside_torchrun():  # a rank of an existing job: check it from here, the job decides the layout
        _check(backend, 1, 1, timeout, sizes, iters, collectives)
        _check_step_timeout(step_timeout, timeout)
        return _run_in_job(backend, timeout, step_timeout, sizes, iters, collectives, topology, fault)
    _check(backend, nproc, nnodes, timeout, sizes, iters, collectives)
    _check_step_timeout(step_timeout, timeout)
    if fault is not None and not re.fullmatch(r"(hang|exit|corrupt):\d+:(rendezvous|ranks|" + "|".join(COLLECTIVES) + ")", fault):
        raise InvalidConfigError(f"fault {fault!r}: use hang:RANK:STEP, exit:RANK:STEP or corrupt:RANK:STEP with STEP one of "
                                 "rendezvous, ranks, " + ", ".join(COLLECTIVES))
    step_timeout = float(step_timeout) if step_timeout else max(1.0, timeout / 3)
    bandwidth = _catalogue_bandwidth(topology, nnodes)
    world = nproc * nnodes
    from perfscale.measure.runner import temp_workdir

    with temp_workdir("dist") as folder:
        job = {"folder": str(folder), "backend": backend, "sizes": list(sizes), "iters": iters,
               "collectives": list(collectives), "step_timeout": step_timeout, "timeout": timeout, "fault": fault}
        job_path = folder / "job.json"
        job_path.write_text(json.dumps(job))
        port = _free_port()
        env = dict(os.environ)
        src = str(Path(perfscale.__file__).resolve().parents[1])
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.setdefault("OMP_NUM_THREADS", "1")
        run_id = uuid.uuid4().hex[:12]
        command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nnodes), "--nproc-per-node", str(nproc),
                   "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", run_id,
                   "--rdzv-conf", f"join_timeout={max(1, int(timeout))}", "--max-restarts", "0",
                   "--monitor-interval", "0.2", "-m", "perfscale.debug.dist_worker", str(job_path)]
        procs, errs = [], []
        started = time.monotonic()
        deadline = started + timeout
        killed_at_deadline = False
        try:
            for node in range(nnodes):
                err = open(folder / f"agent{node}.stderr", "wb")  # noqa: SIM115 - closed below
                errs.append(err)
                procs.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL,
                                              env=env, start_new_session=True, cwd=folder))
            while any(p.poll() is None for p in procs):
                now = time.monotonic()
                if now >= deadline:
                    killed_at_deadline = True
                    break
                if any(p.poll() not in (None, 0) for p in procs):
                    # one agent failed: the others' ranks get step_timeout to notice (or are hung) before they go
                    deadline = min(deadline, now + step_timeout + 2.0)
                time.sleep(0.1)
        finally:
            for p in procs:
                _kill_tree(p)
            _kill_orphans(folder, world, job_path)
            for e in errs:
                e.close()
        wall = time.monotonic() - started
        stderr = "\n".join((folder / f"agent{n}.stderr").read_text(errors="replace") for n in range(nnodes))
        logs = {r: _read_log(folder / f"rank{r}.jsonl") for r in range(world)}
        results = {}
        for r in range(world):
            path = folder / f"rank{r}.json"
            if path.exists():
                try:
                    results[r] = json.loads(path.read_text())
                except ValueError:
                    pass
        codes = _exit_codes(stderr)
    return _verdict(backend, nnodes, nproc, world, timeout, step_timeout, wall, logs, results, codes, stderr,
                    killed_at_deadline, bandwidth, command)


def _run_in_job(backend, timeout, step_timeout, sizes, iters, collectives, topology, fault) -> DistResult:
    """The checks as this rank of an existing torchrun job; every rank gathers all ranks' logs and results and
    returns the job's verdict (when a rank fails, the group may be gone: each rank then reports its own view)."""
    import torch.distributed as dist

    from perfscale.debug.dist_worker import run_rank
    from perfscale.measure.runner import temp_workdir

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    nproc = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    step_timeout = float(step_timeout) if step_timeout else max(1.0, timeout / 3)
    bandwidth = _catalogue_bandwidth(topology, max(1, world // max(1, nproc)))
    started = time.monotonic()
    with temp_workdir("dist") as folder:
        job = {"folder": str(folder), "backend": backend, "sizes": list(sizes), "iters": iters, "collectives": list(collectives),
               "step_timeout": step_timeout, "timeout": timeout, "fault": fault}
        try:
            rc = run_rank(job, keep_group=True)
        except Exception as exc:  # noqa: BLE001 - the rendezvous itself failed: this rank's verdict
            rc = 1
            with open(folder / f"rank{rank}.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps({"t": time.time(), "event": "error", "step": "rendezvous",
                                    "error": f"{type(exc).__name__}: {exc}"}) + "\n")
        own = {"log": _read_log(folder / f"rank{rank}.jsonl"),
               "result": json.loads((folder / f"rank{rank}.json").read_text()) if (folder / f"rank{rank}.json").exists() else None}
        gathered = None
        if rc == 0:
            try:
                gathered = [None] * world
                dist.all_gather_object(gathered, own)
            except Exception:  # noqa: BLE001 - the group broke after this rank's checks: its own view
                gathered = None
        if dist.is_initialized():
            dist.destroy_process_group()
    wall = time.monotonic() - started
    nnodes = max(1, world // max(1, nproc))
    command = ["(inside an existing job)", f"RANK={rank}", f"WORLD_SIZE={world}"]
    if gathered is not None:
        logs = {r: g["log"] for r, g in enumerate(gathered)}
        results = {r: g["result"] for r, g in enumerate(gathered) if g["result"] is not None}
        out = _verdict(backend, nnodes, nproc, world, timeout, step_timeout, wall, logs, results, {}, "", False, bandwidth, command)
    else:
        state = _rank_state(rank, own["log"], own["result"], None, False)
        failure = {"rank": rank, "state": state["state"], "step": state["last_step"],
                   "what": f"rank {rank} failed in {_step(state['last_step'])}: {state.get('error')}"}
        out = DistResult(ok=False, verdict=f"FAILED (this rank's view; the others report their own): {failure['what']}",
                         backend=backend, nnodes=nnodes, nproc_per_node=nproc, world_size=world, timeout_s=timeout, wall_s=wall,
                         ranks=[state], collectives=[], failures=[failure], catalogue_bandwidth=bandwidth, env=relevant_env(),
                         interfaces=(own["result"] or {}).get("interfaces", {}), command=command)
    out.notes.append(f"run inside an existing torchrun job as rank {rank} of {world}")
    out.rank = rank
    return out


def _rank_state(r: int, log: list[dict], result: dict | None, code: int | None, killed: bool) -> dict[str, Any]:
    begun = [e for e in log if e["event"] == "begin"]
    ended = {e["step"] for e in log if e["event"] == "end"}
    errors = [e for e in log if e["event"] == "error"]
    last = begun[-1]["step"] if begun else None
    state = {"rank": r, "pid": log[0].get("pid") if log else None, "last_step": last, "steps_done": len(ended), "exit_code": code,
             "device": (result or {}).get("device"), "host": (result or {}).get("host"),
             "last_seen": log[-1]["t"] if log else None}
    if result is not None and not errors and last == "shutdown" and "shutdown" in ended:
        bad = [c for c in result.get("checks", []) if not c["ok"]]
        state.update(state="mismatch" if bad else "ok", mismatched=[c["step"] for c in bad])
    elif errors:
        state.update(state="failed", error=errors[-1].get("error"))
    elif not log:
        state.update(state="missing")  # never started (the rendezvous of its node never ran)
    elif code is not None and code > 0:
        state.update(state="exited")
    else:
        # alive in a step when the others gave up (killed by torchrun's teardown or at the deadline)
        state.update(state="hung")
    return state


def _verdict(backend, nnodes, nproc, world, timeout, step_timeout, wall, logs, results, codes, stderr, killed,
             bandwidth, command) -> DistResult:
    ranks = [_rank_state(r, logs[r], results.get(r), codes.get(r), killed) for r in range(world)]
    # collectives: every rank's check of each step; the slowest rank's time bounds the collective
    table: dict[str, dict[str, Any]] = {}
    for r, res in sorted(results.items()):
        for c in res.get("checks", []):
            if "collective" not in c:
                continue
            row = table.setdefault(c["step"], {"collective": c["collective"], "bytes": c["bytes"], "ok": True, "ranks": 0,
                                               "time_s": 0.0, "bad_ranks": []})
            row["ranks"] += 1
            row["ok"] = row["ok"] and c["ok"]
            if not c["ok"]:
                row["bad_ranks"].append({"rank": r, "mismatches": c["mismatches"], "got": c["first_value"],
                                         "expected": c["expected_value"]})
                row["wrong_senders"] = sorted(set(row.get("wrong_senders", [])) | set(c.get("wrong_senders", [])))
            if c["time_s"] > row["time_s"]:
                row["time_s"], row["algbw"], row["busbw"] = c["time_s"], c["algbw"], c["busbw"]
    link = bandwidth.get("bytes_per_s")
    collectives = []
    for row in table.values():
        row["complete"] = row["ranks"] == world
        row["fraction_of_catalogue"] = row["busbw"] / link if link and row.get("busbw") else None
        collectives.append(row)
    failures = []
    culprits = [s for s in ranks if s["state"] in ("hung", "exited", "missing")]
    victims = [s for s in ranks if s["state"] == "failed"]
    mismatched = [row for row in collectives if not row["ok"]]
    for s in culprits:
        if s["state"] == "hung":
            what = f"rank {s['rank']} hung in {_step(s['last_step'])}: it began the step and never finished it"
        elif s["state"] == "exited":
            what = f"rank {s['rank']} exited with code {s['exit_code']} during {_step(s['last_step'])}"
        else:
            what = f"rank {s['rank']} never started (its node did not join the rendezvous)"
        failures.append({"rank": s["rank"], "state": s["state"], "step": s["last_step"], "what": what})
    for s in victims:
        failures.append({"rank": s["rank"], "state": "failed", "step": s["last_step"],
                         "what": f"rank {s['rank']} failed in {_step(s['last_step'])}: {s.get('error')}"})
    ok = all(s["state"] == "ok" for s in ranks) and not mismatched and len(results) == world
    env = next((res["env"] for res in results.values()), None) or relevant_env()
    ifaces = next((res["interfaces"] for res in results.values()), {})
    if ok:
        best = max((row for row in collectives if row["collective"] == "all_reduce"), key=lambda row: row["bytes"], default=None)
        verdict = (f"OK: {world} ranks ({nnodes} node{'s' if nnodes > 1 else ''} x {nproc}) on {backend} met, know their ranks, "
                   f"and {len(collectives)} collective checks returned the right values in {wall:.1f} s.")
        if best:
            verdict += f" all_reduce of {_size(best['bytes'])}: bus bandwidth {best['busbw'] / 1e9:.2f} GB/s"
            verdict += (f" ({best['fraction_of_catalogue']:.0%} of the catalogue's {bandwidth['link']})." if best["fraction_of_catalogue"]
                        else " (no catalogue bandwidth for this link).")
    elif culprits:
        first = culprits[0]
        waited = ", ".join(str(s["rank"]) for s in victims)
        verdict = f"FAILED: {failures[0]['what']}"
        if waited:
            verdict += f"; rank{'s' if len(victims) > 1 else ''} {waited} failed waiting for it ({_short(victims[0].get('error'))})"
        verdict += f". Found in {wall:.1f} s (timeout {timeout:g} s, per-collective {step_timeout:g} s)."
        if first["state"] == "missing":
            verdict += " Check that every node can reach the rendezvous endpoint (MASTER_ADDR/--rdzv-endpoint, firewall, interface)."
    elif mismatched:
        row = mismatched[0]
        verdict = (f"FAILED: {row['collective']} of {_size(row['bytes'])} returned wrong values on ranks "
                   f"{', '.join(str(b['rank']) for b in row['bad_ranks'])} (rank {row['bad_ranks'][0]['rank']} got "
                   f"{row['bad_ranks'][0]['got']:g}, expected {row['bad_ranks'][0]['expected']:g}).")
        senders = sorted({s for row in mismatched for s in row.get("wrong_senders", [])})
        if senders:
            verdict += f" all_gather shows whose data is wrong: rank {', '.join(map(str, senders))}."
        verdict += " Every rank ran every step: a data or hardware fault, not a connection one."
    elif victims:
        verdict = f"FAILED: {failures[0]['what']}."
    else:
        verdict = f"FAILED: {world - len(results)} of {world} ranks wrote no result in {wall:.1f} s; torchrun said: {_short(stderr[-600:])}"
    notes = []
    if killed:
        notes.append(f"the run reached the {timeout:g} s timeout: every process was killed")
    return DistResult(ok=ok, verdict=verdict, backend=backend, nnodes=nnodes, nproc_per_node=nproc, world_size=world,
                      timeout_s=timeout, wall_s=wall, ranks=ranks, collectives=collectives, failures=failures,
                      catalogue_bandwidth=bandwidth, env=env, interfaces=ifaces, command=command, notes=notes)


def _step(step: str | None) -> str:
    if not step:
        return "start-up"
    if ":" in step:
        name, size = step.split(":", 1)
        return f"{name} ({_size(int(size))})"
    return step


def _size(n: int) -> str:
    for unit, k in (("MiB", 2**20), ("KiB", 2**10)):
        if n >= k and n % k == 0:
            return f"{n // k} {unit}"
    return f"{n} B"


def _short(text: str | None, n: int = 160) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[: n - 3] + "..."


__all__ = ["DEFAULT_SIZES", "DistResult", "debug_dist", "parse_sizes"]
