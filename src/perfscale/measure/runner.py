"""Run one configuration in a fresh subprocess and turn whatever happens into a BenchResult.

Isolation: every configuration (and every repeat in a compare) gets its own Python process, so no
compiled graph, allocator cache, thread pool or import state carries over. The process runs in its
own session: Ctrl-C reaches only perfscale, which kills the worker and keeps what finished.
Outcomes: the worker's result file (ok / oom / failed), or, without one, the runner's reading of the
exit: killed at the time limit -> timeout; SIGKILL from elsewhere -> oom (the kernel's OOM killer);
anything else -> failed with the tail of stderr.

Faults of perfscale itself: Ctrl-C, or SIGTERM under `sigterm_as_interrupt()`, kills the running
worker, stores an `interrupted` row for it and removes the temp folder (RunInterrupted, a
KeyboardInterrupt, carries that row). If perfscale is killed outright (SIGKILL), the worker notices
(a parent-death pipe, and PR_SET_PDEATHSIG on Linux), removes the temp folder and kills its own
process group; a temp folder left with no worker running is swept by the next measurement.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import perfscale
from perfscale.measure.bench_config import BenchConfig, MeasureOptions
from perfscale.measure.gate import compare_outputs, is_reference, load_outputs, reference_config
from perfscale.measure.result import BenchResult
from perfscale.measure.worker import parse_oom

STDERR_TAIL = 3000
Callback = Callable[[BenchResult], None]


def _tail(path: Path, n: int = STDERR_TAIL) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-n:].decode("utf-8", errors="replace")


# ----- interruptions -----
class Terminated(KeyboardInterrupt):
    """SIGTERM, raised by `sigterm_as_interrupt()` so that it takes Ctrl-C's path."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM while a configuration was measured: its worker was killed; `result` is the
    `interrupted` row for it (already stored by `measure`/`compare`)."""

    def __init__(self, result: BenchResult, how: str):
        super().__init__(result.reason)
        self.result = result
        self.how = how


def how_interrupted(exc: BaseException) -> str:
    """'SIGTERM' or 'Ctrl-C' for an interruption."""
    if isinstance(exc, RunInterrupted):
        return exc.how
    return "SIGTERM" if isinstance(exc, Terminated) else "Ctrl-C"


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While active, SIGTERM raises Terminated (a KeyboardInterrupt): measurements then end as on
    Ctrl-C (worker killed, `interrupted` row stored, temp folder removed). Repeated SIGTERMs during
    that cleanup are ignored. For command-line front ends; a no-op outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = []

    def handler(signum, frame):
        if not fired:
            fired.append(signum)
            raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interrupted_result(config: BenchConfig, how: str, *, started: float, group: str | None = None, repeat: int = 0,
                       during: str = "") -> BenchResult:
    wall = time.time() - started
    return BenchResult(
        config=config, status="interrupted", group=group, repeat=repeat, started_at=started, wall_s=wall,
        reason=f"interrupted by {how} after {wall:.1f} s{during}: the worker was killed, nothing of this run was kept",
    )


# ----- temp folders -----
OWNER_FILE = ".perfscale-owner"  # in each temp folder: the pid and start time of the perfscale that made it


def _start_time(pid: int) -> float | None:
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:  # noqa: BLE001 - gone, or no psutil
        return None


def _owner_alive(folder: Path) -> bool:
    try:
        owner = json.loads((folder / OWNER_FILE).read_text())
        pid, started = int(owner["pid"]), owner.get("started")
    except (OSError, ValueError, KeyError, TypeError):
        return True  # not readable: not ours to judge
    now = _start_time(pid)
    if now is None:  # no psutil answer: alive when a process has that pid (kept, to be safe)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except OSError:
            return True
        return True
    return started is None or abs(now - float(started)) < 1.0  # the same process, not a reused pid


def sweep_stale_workdirs(base: str | os.PathLike | None = None) -> list[Path]:
    """Remove perfscale temp folders whose perfscale process is gone (killed while no worker ran)."""
    base = Path(base) if base else Path(tempfile.gettempdir())
    removed = []
    try:
        candidates = [d for d in base.glob("perfscale-*") if d.is_dir() and (d / OWNER_FILE).is_file()]
    except OSError:
        return removed
    for folder in candidates:
        try:
            if folder.stat().st_uid != os.getuid() or _owner_alive(folder):
                continue
        except OSError:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


@contextmanager
def temp_workdir(kind: str, dir: str | os.PathLike | None = None) -> Iterator[Path]:
    """A temp folder for one measurement (removed at the end), marked with its owner so that a
    worker whose perfscale died, or the next measurement, can remove it."""
    sweep_stale_workdirs(dir)
    with tempfile.TemporaryDirectory(prefix=f"perfscale-{kind}-", dir=dir, ignore_cleanup_errors=True) as tmp:
        path = Path(tmp)
        (path / OWNER_FILE).write_text(json.dumps({"pid": os.getpid(), "started": _start_time(os.getpid())}))
        yield path


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the worker's whole group (DataLoader workers, compile pools)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def run_in_subprocess(
    config: BenchConfig, options: MeasureOptions, *, workdir: Path, mode: str = "measure", outputs_path: Path | None = None,
    group: str | None = None, repeat: int = 0,
) -> BenchResult:
    """One worker process for one configuration. On Ctrl-C (KeyboardInterrupt) the worker is killed
    and RunInterrupted propagates, carrying the `interrupted` result (not stored here)."""
    workdir = Path(workdir)
    tag = f"{config.fingerprint()}-{repeat}-{mode}-{time.monotonic_ns()}"
    job_path, result_path, err_path = (workdir / f"{tag}.{ext}" for ext in ("job.json", "result.json", "stderr.txt"))
    # Parent death: the worker holds the read end of a pipe whose write end only this process has;
    # if this process dies the worker reads EOF and cleans up (see worker.watch_parent).
    death_r, death_w = os.pipe()
    owned = (workdir / OWNER_FILE).is_file()  # a temp folder of ours: the worker may remove all of it
    job = {"config": config.to_dict(), "options": options.to_dict(), "mode": mode, "result_path": str(result_path),
           "outputs_path": str(outputs_path) if outputs_path else None,
           "parent": {"pid": os.getpid(), "pipe_fd": death_r, "workdir": str(workdir) if owned else None,
                      "files": [str(p) for p in (job_path, result_path, err_path, outputs_path) if p]}}
    job_path.write_text(json.dumps(job))
    env = dict(os.environ)
    src = str(Path(perfscale.__file__).resolve().parents[1])  # works without an install (device machines)
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    limit = options.effective_time_limit
    started = time.time()
    t0 = time.perf_counter()
    if config.distributed:  # torchrun agents and their ranks (measure/multiprocess.py)
        from perfscale.measure.multiprocess import distributed_job, run_torchrun

        job["distributed"] = distributed_job(config)
        job_path.write_text(json.dumps(job))
        base = {"config": config, "group": group, "repeat": repeat, "started_at": started}
        try:
            return run_torchrun(config, job, job_path, err_path, env=env, death_r=death_r, limit=limit, base=base)
        except KeyboardInterrupt as exc:  # everything was killed on the way out
            how = how_interrupted(exc)
            raise RunInterrupted(interrupted_result(config, how, started=started, group=group, repeat=repeat), how) from None
        finally:
            for fd in (death_r, death_w):
                os.close(fd)
    try:
        with open(err_path, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "perfscale.measure.worker", str(job_path)],
                stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
                pass_fds=(death_r,),
            )
            os.close(death_r)
            death_r = -1
            try:
                proc.wait(timeout=limit)
                timed_out = False
            except subprocess.TimeoutExpired:
                _kill(proc)
                timed_out = True
            except KeyboardInterrupt as exc:  # Ctrl-C / SIGTERM: never leave the worker running
                _kill(proc)
                how = how_interrupted(exc)
                raise RunInterrupted(interrupted_result(config, how, started=started, group=group, repeat=repeat), how) from None
            except BaseException:
                _kill(proc)
                raise
    finally:
        for fd in (death_r, death_w):
            if fd >= 0:
                os.close(fd)
    wall = time.perf_counter() - t0
    base = {"config": config, "group": group, "repeat": repeat, "started_at": started, "wall_s": wall}
    if timed_out:
        return BenchResult(status="timeout", reason=f"exceeded the time limit of {limit:.0f} s and was killed", stderr_tail=_tail(err_path), **base)
    if result_path.exists():
        payload = json.loads(result_path.read_text())
        result = BenchResult.from_dict({"config": config.to_dict(), **payload} | {k: v for k, v in base.items() if k != "config"})
        if result.status != "ok" and not result.stderr_tail:
            result.stderr_tail = _tail(err_path) or None
        return result
    stderr = _tail(err_path)
    rc = proc.returncode
    is_oom, size = parse_oom(stderr)
    if is_oom:
        return BenchResult(status="oom", reason="out of memory (from stderr)", oom_bytes=size, stderr_tail=stderr, **base)
    if rc == -signal.SIGKILL:
        return BenchResult(status="oom", reason="killed by SIGKILL, not by perfscale: most likely the kernel's OOM killer", stderr_tail=stderr, **base)
    how = f"killed by signal {-rc}" if rc < 0 else f"exit code {rc}"
    return BenchResult(status="failed", reason=f"the worker process died ({how}) without a result", stderr_tail=stderr, **base)


class ReferenceOutputs:
    """fp32 eager reference outputs, computed once per reference configuration (in its own process)."""

    def __init__(self, workdir: Path, options: MeasureOptions):
        self.workdir = workdir
        self.options = options
        self._paths: dict[str, Path | BenchResult] = {}

    def offer(self, config: BenchConfig, outputs_path: Path) -> None:
        """A run that *is* the reference hands its outputs over (saves a process)."""
        if is_reference(config) and outputs_path.exists():
            self._paths.setdefault(config.fingerprint(), outputs_path)

    def get(self, config: BenchConfig) -> Path | BenchResult:
        """The reference outputs file, or the failed reference run."""
        ref = reference_config(config)
        key = ref.fingerprint()
        if key not in self._paths:
            path = self.workdir / f"reference-{key}.npz"
            res = run_in_subprocess(ref, self.options, workdir=self.workdir, mode="outputs", outputs_path=path)
            self._paths[key] = path if res.ok and path.exists() else res
        return self._paths[key]


def apply_gate(result: BenchResult, outputs_path: Path, refs: ReferenceOutputs, options: MeasureOptions) -> None:
    """Fill result.accuracy and mark it inaccurate when it misses a threshold."""
    if not (options.gate and result.config.is_inference and result.ok):
        return
    if is_reference(result.config):
        result.accuracy = {"reference": True, "passed": True}
        return
    ref = refs.get(result.config)
    if isinstance(ref, BenchResult):
        result.accuracy = {"passed": None, "error": f"reference run {ref.status}: {ref.reason}"}
        result.notes.append("accuracy not checked: the fp32 eager reference run did not finish")
        return
    if not outputs_path.exists():
        result.accuracy = {"passed": None, "error": "the variant wrote no outputs"}
        return
    acc = compare_outputs(load_outputs(ref), load_outputs(outputs_path), options.thresholds)
    result.accuracy = acc
    if not acc["passed"]:
        result.status = "inaccurate"
        result.reason = "accuracy gate vs fp32 eager: " + "; ".join(acc["failures"])


def measure(
    config: BenchConfig, options: MeasureOptions | None = None, *, store=None, group: str | None = None,
    workdir: str | os.PathLike | None = None,
) -> BenchResult:
    """Measure one configuration in a fresh process, apply the accuracy gate, store the result at once.

    Before any process starts: the configuration is checked against its model (preflight) and the
    store must be writable (StoreError otherwise). Returns a BenchResult whose status says what
    happened. On Ctrl-C (or SIGTERM under `sigterm_as_interrupt`) the worker is killed, an
    `interrupted` row is stored and RunInterrupted (a KeyboardInterrupt) propagates with it. A store
    that fails at the end does not lose the result: see `Store.keep` and `store.unsaved`.
    """
    from perfscale.measure.preflight import preflight

    options = options or MeasureOptions()
    notes = preflight(config)[config.fingerprint()]
    if store is not None:
        store.check_writable()
    started = time.time()
    try:
        with temp_workdir("bench", workdir) as wd:
            refs = ReferenceOutputs(wd, options)
            outputs = wd / "variant.npz"
            wants_outputs = options.gate and config.is_inference
            result = run_in_subprocess(config, options, workdir=wd, outputs_path=outputs if wants_outputs else None, group=group)
            apply_gate(result, outputs, refs, options)
            result.notes.extend(notes)
    except KeyboardInterrupt as exc:
        how = how_interrupted(exc)
        mine = isinstance(exc, RunInterrupted) and exc.result.config is config
        result = exc.result if mine else interrupted_result(config, how, started=started, group=group,
                                                              during=" (during the fp32 reference run)" if isinstance(exc, RunInterrupted) else "")
        if store is not None:
            store.keep(result)
        raise RunInterrupted(result, how) from None
    if store is not None:
        store.keep(result)
    return result


__all__ = [
    "ReferenceOutputs", "RunInterrupted", "Terminated", "apply_gate", "how_interrupted", "interrupted_result", "measure",
    "run_in_subprocess", "sigterm_as_interrupt", "sweep_stale_workdirs", "temp_workdir",
]
