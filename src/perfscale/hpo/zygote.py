"""A fork server for trials: one process imports torch, transformers' Trainer, peft, Optuna and the
model's class once (8-14 s on 2 loaded cores, FIELD-NOTES), then forks a fresh child per trial.

Each trial is still its own process that exits when the trial ends, so nothing a trial allocates
(tensors, the allocator's cache, optimizer state) can reach the next one; what the children share
copy-on-write is the launcher's imported code and nothing else. The launcher runs no torch operation
(no OpenMP pool exists to be inherited across fork) and is used on CPU only: CUDA cannot be initialised
in a forked child of a process that touched it, so on a GPU machine every trial is spawned afresh.

Protocol (lines on the launcher's stdin/stdout): parent "RUN <tag> <job.json> <stderr file>" ->
launcher "PID <tag> <pid>" when forked, "EXIT <pid> <exit code>" when reaped (negative: the signal).
The launcher dies with its parent (end of stdin, getppid); each child dies with the launcher (perfscale.measure.worker.watch_parent) and runs in its own session, so the parent can
kill a hung trial's whole process group by its pid.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import perfscale

READY_TIMEOUT_S = 300.0  # the launcher's imports on a loaded 2-core machine


def _preload(model: str) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    import numpy  # noqa: F401
    import optuna  # noqa: F401
    import peft  # noqa: F401
    import torch  # noqa: F401
    import transformers
    from transformers import Trainer, TrainerCallback, TrainingArguments  # noqa: F401

    import perfscale.hpo.storage  # noqa: F401
    import perfscale.hpo.trial  # noqa: F401
    import perfscale.measure.scenarios.common  # noqa: F401

    try:  # the model's modeling module (the costly import); an unknown model fails in the trial instead
        from perfscale.specs import load_model_spec

        cfg = load_model_spec(model).config_object()
        transformers.AutoModelForCausalLM._model_mapping[type(cfg)]
    except Exception:  # noqa: BLE001
        pass


def _child(tag: str, job_path: str, err_path: str, launcher: int) -> None:
    """In the forked child: own session, stderr to the trial's file, then the trial itself."""
    os.setsid()
    fd = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 2)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    from perfscale.hpo.trial import main

    code = 1
    try:
        code = main([job_path], parent_pid=launcher)
    except BaseException:  # noqa: BLE001 - the parent classifies a missing result file
        import traceback

        traceback.print_exc()
    finally:
        sys.stderr.flush()
        os._exit(code)


def serve(model: str) -> int:
    # Dies with perfscale by the end of its stdin (the pipe's write end is perfscale's alone) and by
    # watching getppid(); not by PR_SET_PDEATHSIG, which fires when the perfscale *thread* that
    # started the launcher ends (it is started from a short-lived thread).
    parent = os.getppid()
    _preload(model)
    out = sys.stdout
    out.write("READY\n")
    out.flush()
    children: set[int] = set()
    buf = b""
    stdin = sys.stdin.fileno()
    while True:
        ready, _, _ = select.select([stdin], [], [], 0.2)
        if ready:
            chunk = os.read(stdin, 65536)
            if not chunk:  # the parent closed our stdin or died: take the trials with us
                for pid in children:
                    try:
                        os.killpg(pid, signal.SIGKILL)
                    except OSError:
                        pass
                return 0
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                parts = line.decode().split(" ")
                if parts[0] == "RUN" and len(parts) == 4:
                    pid = os.fork()
                    if pid == 0:
                        _child(parts[1], parts[2], parts[3], os.getppid())
                    children.add(pid)
                    out.write(f"PID {parts[1]} {pid}\n")
                    out.flush()
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            children.discard(pid)
            out.write(f"EXIT {pid} {os.waitstatus_to_exitcode(status)}\n")
            out.flush()
        if os.getppid() != parent:
            return 0


class Launcher:
    """The parent's handle on the fork server: start(tag, job, stderr) -> pid; wait(pid, timeout) -> exit code."""

    def __init__(self, model: str, workdir: Path):
        self.model = model
        self.workdir = Path(workdir)
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._cond = threading.Condition()
        self._pids: dict[str, int] = {}
        self._exits: dict[int, int] = {}
        self._dead = False
        self.starts = 0

    def _spawn(self, stop: threading.Event | None = None) -> None:
        env = dict(os.environ)
        src = str(Path(perfscale.__file__).resolve().parents[1])
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        err = open(self.workdir / f"launcher-{self.starts}.stderr.txt", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "perfscale.hpo.zygote", self.model], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=err, env=env, start_new_session=True, bufsize=0)
        err.close()
        self._proc = proc
        self.starts += 1
        self._dead = False
        deadline = time.monotonic() + READY_TIMEOUT_S
        line = b""
        fd = proc.stdout.fileno()
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            r, _, _ = select.select([fd], [], [], max(0.0, min(0.5, left)))
            if not r:
                if left <= 0 or proc.poll() is not None or (stop is not None and stop.is_set()) or self._proc is not proc:
                    self._kill(proc)
                    raise RuntimeError("the trial launcher did not start" + (" (stopped)" if stop is not None and stop.is_set() else ""))
                continue
            ch = os.read(fd, 1)
            if not ch:
                self._kill(proc)
                raise RuntimeError("the trial launcher exited while starting")
            line += ch
        threading.Thread(target=self._read, args=(proc,), daemon=True, name="perfscale-hpo-launcher").start()

    def _read(self, proc: subprocess.Popen) -> None:
        for raw in proc.stdout:
            parts = raw.decode().split()
            with self._cond:
                if parts[:1] == ["PID"] and len(parts) == 3:
                    self._pids[parts[1]] = int(parts[2])
                elif parts[:1] == ["EXIT"] and len(parts) == 3:
                    self._exits[int(parts[1])] = int(parts[2])
                self._cond.notify_all()
        with self._cond:
            if self._proc is proc:
                self._dead = True
            self._cond.notify_all()

    def _ensure(self, stop: threading.Event | None = None) -> None:
        while not self._lock.acquire(timeout=0.5):  # another thread is starting it
            if stop is not None and stop.is_set():
                raise RuntimeError("stopped while the trial launcher was starting")
        try:
            if self._proc is None or self._proc.poll() is not None or self._dead:
                self._spawn(stop)
        finally:
            self._lock.release()

    def prewarm(self) -> None:
        """Start the launcher now, in the background (its imports overlap the parent's own work)."""
        def run() -> None:
            try:
                self._ensure()
            except RuntimeError:
                pass  # start() tries again and reports it

        threading.Thread(target=run, daemon=True, name="perfscale-hpo-launcher-start").start()

    def start(self, tag: str, job_path: Path, err_path: Path, stop: threading.Event | None = None) -> int:
        self._ensure(stop)
        with self._lock:
            self._proc.stdin.write(f"RUN {tag} {job_path} {err_path}\n".encode())
        with self._cond:
            self._cond.wait_for(lambda: tag in self._pids or self._dead, timeout=60)
            if tag not in self._pids:
                raise RuntimeError("the trial launcher did not fork the trial")
            return self._pids.pop(tag)

    def wait(self, pid: int, timeout: float) -> int | None:
        """The trial's exit code (negative: killed by that signal); None at the timeout. When the launcher
        itself died, its children died with it: reported as SIGKILL."""
        with self._cond:
            self._cond.wait_for(lambda: pid in self._exits or self._dead, timeout=timeout)
            if pid in self._exits:
                return self._exits.pop(pid)
            if self._dead:
                return -signal.SIGKILL
            return None

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            proc.stdin.close()  # the launcher kills its children and exits
            proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self._kill(proc)


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1]))
