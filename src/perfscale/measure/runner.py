"""Run one configuration in a fresh subprocess and turn whatever happens into a BenchResult.

Isolation: every configuration (and every repeat in a compare) gets its own Python process, so no
compiled graph, allocator cache, thread pool or import state carries over. The process runs in its
own session: Ctrl-C reaches only perfscale, which kills the worker and keeps what finished.
Outcomes: the worker's result file (ok / oom / failed), or, without one, the runner's reading of the
exit: killed at the time limit -> timeout; SIGKILL from elsewhere -> oom (the kernel's OOM killer);
anything else -> failed with the tail of stderr.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
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
    """One worker process for one configuration. KeyboardInterrupt propagates after the worker is killed."""
    tag = f"{config.fingerprint()}-{repeat}-{mode}-{time.monotonic_ns()}"
    job_path, result_path, err_path = (workdir / f"{tag}.{ext}" for ext in ("job.json", "result.json", "stderr.txt"))
    job = {"config": config.to_dict(), "options": options.to_dict(), "mode": mode, "result_path": str(result_path),
           "outputs_path": str(outputs_path) if outputs_path else None}
    job_path.write_text(json.dumps(job))
    env = dict(os.environ)
    src = str(Path(perfscale.__file__).resolve().parents[1])  # works without an install (device machines)
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    limit = options.effective_time_limit
    started = time.time()
    t0 = time.perf_counter()
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "perfscale.measure.worker", str(job_path)],
            stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
        )
        try:
            proc.wait(timeout=limit)
            timed_out = False
        except subprocess.TimeoutExpired:
            _kill(proc)
            timed_out = True
        except BaseException:  # Ctrl-C (or anything else): never leave the worker running
            _kill(proc)
            raise
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

    Returns a BenchResult whose status says what happened; KeyboardInterrupt propagates (after the
    worker is killed) so callers decide what an interruption means.
    """
    options = options or MeasureOptions()
    with tempfile.TemporaryDirectory(prefix="perfscale-bench-", dir=workdir) as tmp:
        wd = Path(tmp)
        refs = ReferenceOutputs(wd, options)
        outputs = wd / "variant.npz"
        wants_outputs = options.gate and config.is_inference
        result = run_in_subprocess(config, options, workdir=wd, outputs_path=outputs if wants_outputs else None, group=group)
        apply_gate(result, outputs, refs, options)
    if store is not None:
        store.add(result)
    return result


__all__ = ["ReferenceOutputs", "apply_gate", "measure", "run_in_subprocess"]
