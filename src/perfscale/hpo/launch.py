"""Run one trial in a fresh process and turn whatever happens into an outcome.

The same isolation as `perfscale bench` (perfscale.measure.runner): a new Python process per trial, in
its own session, watching its parent through a pipe (and PR_SET_PDEATHSIG), so no memory, allocator
cache or thread pool carries over from one trial to the next, and nothing outlives perfscale.
Outcomes: the trial's result file (complete / pruned / oom / failed), or, without one, the exit:
killed at the time limit -> timeout (hung); SIGKILL from elsewhere -> killed (the kernel's OOM killer
or kill -9: retried once, see study.py); anything else -> failed with the tail of stderr.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import perfscale
from perfscale.measure.worker import parse_oom

STDERR_TAIL = 2000


@dataclass
class Outcome:
    status: str  # complete | pruned | oom | failed | timeout | killed | interrupted
    reason: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0
    stderr_tail: str | None = None


class Processes:
    """The trial processes running now (all workers of this invocation): killed together on Ctrl-C."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen] = set()
        self.stopping = threading.Event()

    def add(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._procs.add(proc)

    def discard(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._procs.discard(proc)

    def kill_all(self) -> None:
        self.stopping.set()
        with self._lock:
            procs = list(self._procs)
        for proc in procs:
            _kill(proc)


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the trial's whole group (DataLoader workers)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(path: Path) -> str:
    try:
        return path.read_bytes()[-STDERR_TAIL:].decode("utf-8", errors="replace")
    except OSError:
        return ""


def run_trial_process(job: dict[str, Any], workdir: Path, time_limit: float, processes: Processes, tag: str,
                      launcher=None) -> Outcome:
    """Run `job` in a fresh process (forked by `launcher`, zygote.py, or spawned as
    `python -m perfscale.hpo.trial`), wait at most `time_limit` seconds, classify what happened."""
    workdir = Path(workdir)
    job_path, result_path, err_path = (workdir / f"{tag}.{ext}" for ext in ("job.json", "result.json", "stderr.txt"))
    if processes.stopping.is_set():
        return Outcome("interrupted", "interrupted (Ctrl-C or SIGTERM) before the trial process started")
    if launcher is not None:
        job_path.write_text(json.dumps(dict(job, result_path=str(result_path), parent={"files": [str(job_path), str(result_path)]})))
        rc, killed_by_us, wall = _run_forked(launcher, tag, job_path, err_path, time_limit, processes)
    else:
        rc, killed_by_us, wall = _run_spawned(job, job_path, result_path, err_path, time_limit, processes)
    tail = _tail(err_path)
    if processes.stopping.is_set() and not result_path.exists():
        return Outcome("interrupted", "interrupted (Ctrl-C or SIGTERM): the trial process was killed", wall_s=wall)
    if killed_by_us:
        return Outcome("timeout", f"hung or too slow: exceeded the trial time limit of {time_limit:.0f} s and was killed",
                       wall_s=wall, stderr_tail=tail)
    if result_path.exists():
        payload = json.loads(result_path.read_text())
        status = payload.get("status", "failed")
        return Outcome(status, payload.get("reason"), payload, wall, tail if status not in ("complete", "pruned") else None)
    is_oom, size = parse_oom(tail)
    if is_oom:
        return Outcome("oom", "out of memory (from the trial's stderr)" + (f": tried to allocate {size / 2**30:.2f} GiB" if size else ""),
                       wall_s=wall, stderr_tail=tail)
    if rc == -signal.SIGKILL:
        return Outcome("killed", "the trial process was killed by SIGKILL, not by perfscale (the kernel's OOM killer, or kill -9)",
                       wall_s=wall, stderr_tail=tail)
    how = f"killed by signal {-rc}" if rc < 0 else f"exit code {rc}"
    return Outcome("failed", f"the trial process died ({how}) without a result", wall_s=wall, stderr_tail=tail)


class _Pid:
    """A forked trial as Processes tracks it (kill_all kills its process group)."""

    def __init__(self, pid: int):
        self.pid = pid


def _run_forked(launcher, tag: str, job_path: Path, err_path: Path, time_limit: float, processes: Processes) -> tuple[int, bool, float]:
    pid = launcher.start(tag, job_path, err_path, processes.stopping)  # waits for the launcher's imports the first time
    t0 = time.perf_counter()
    handle = _Pid(pid)
    processes.add(handle)
    killed_by_us = False
    try:
        deadline = time.monotonic() + time_limit
        while True:
            rc = launcher.wait(pid, timeout=0.5)
            if rc is not None:
                break
            if time.monotonic() > deadline:
                killed_by_us = True
                _kill(handle)
                rc = launcher.wait(pid, timeout=30)
                rc = -signal.SIGKILL if rc is None else rc
                break
    except BaseException:  # Ctrl-C in this thread: never leave the trial running
        _kill(handle)
        raise
    finally:
        processes.discard(handle)
    return rc, killed_by_us, time.perf_counter() - t0


def _run_spawned(job, job_path: Path, result_path: Path, err_path: Path, time_limit: float, processes: Processes) -> tuple[int, bool, float]:
    t0 = time.perf_counter()
    death_r, death_w = os.pipe()
    job = dict(job, result_path=str(result_path),
               parent={"pid": os.getpid(), "pipe_fd": death_r, "workdir": None, "files": [str(job_path), str(result_path)]})
    job_path.write_text(json.dumps(job))
    env = dict(os.environ)
    src = str(Path(perfscale.__file__).resolve().parents[1])
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    killed_by_us = False
    try:
        with open(err_path, "wb") as err:
            proc = subprocess.Popen([sys.executable, "-m", "perfscale.hpo.trial", str(job_path)], stdout=subprocess.DEVNULL,
                                    stderr=err, stdin=subprocess.DEVNULL, env=env, start_new_session=True, pass_fds=(death_r,))
            os.close(death_r)
            death_r = -1
            processes.add(proc)
            try:
                deadline = time.monotonic() + time_limit
                while True:
                    try:
                        proc.wait(timeout=0.5)
                        break
                    except subprocess.TimeoutExpired:
                        if time.monotonic() > deadline:
                            killed_by_us = True
                            _kill(proc)
                            proc.wait()
                            break
            except BaseException:  # Ctrl-C in this thread: never leave the trial running
                _kill(proc)
                proc.wait()
                raise
            finally:
                processes.discard(proc)
    finally:
        for fd in (death_r, death_w):
            if fd >= 0:
                os.close(fd)
    return proc.returncode, killed_by_us, time.perf_counter() - t0


__all__ = ["Outcome", "Processes", "run_trial_process"]
