"""A trial server: one long-lived worker process that runs many short tune trials, one after another.

Why: a fresh measurement process pays ~5-10 s of imports and model-class loading on 2 CPU cores
(FIELD-NOTES), more than a short trial of a small model costs. Successive halving's early rungs
are many short trials, so they share one process; every trial still builds a fresh model,
optimizer and data loader, and is timed by bench's own loop (`perfscale.measure.worker.run_job`).
The final, reported comparison is a `pair` job in fresh workers: both configurations in one process,
timed in alternating steps (train_final.py).

Faults stay results: a trial that hangs is killed at its time limit (timeout), a worker that dies
takes only its current trial with it (oom when SIGKILLed, else failed); the next trial starts a new
worker. The worker dies with its parent (PR_SET_PDEATHSIG), so `kill -9` of tune leaves nothing
running that could write to the store behind a resumed tune.

Protocol: the parent writes one job-file path per line on the worker's stdin; the worker writes the
result next to it and answers one line, "done", on stdout. "ready" is its first line.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import perfscale
from perfscale.measure.bench_config import BenchConfig, MeasureOptions
from perfscale.measure.faults import inject_fault
from perfscale.measure.result import BenchResult
from perfscale.measure.stats import StopRule
from perfscale.measure.worker import parse_oom

# Tests only: candidate name -> a fault (measure/faults.py) that tune's trial worker injects into that candidate's
# trials. A private module attribute the tests set (monkeypatch.setitem), not a field of the public
# TrainTuneOptions (issue 13); empty in every real run.
_TEST_FAULTS: dict[str, str] = {}


def test_fault_extra(name: str) -> dict[str, str] | None:
    """The BenchConfig `extra` that injects the test fault set for candidate `name`, or None."""
    return {"tune_fault": _TEST_FAULTS[name]} if name in _TEST_FAULTS else None


test_fault_extra.__test__ = False  # not a pytest test (the name starts with test_)

READY_TIMEOUT = 180.0  # seconds for the worker's imports on a loaded 2-core machine
PAIRED_NOTE = "tune final: timed in alternating steps with its comparison partner in the same fresh process (A B, B A, ...)"


class TrialServer:
    """`measure(config, options)` and `trace(model, run_config)` in a reused worker process."""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._proc: subprocess.Popen | None = None
        self._err = None
        self._count = 0
        self.startup_s: float | None = None  # the last worker's start-up (imports) time
        self.starts = 0
        self._ready = False
        self._spawned_at = 0.0

    # ----- process management -----
    def spawn(self) -> None:
        """Start the worker now (its imports overlap the caller's own work); `_call` waits for it."""
        if self._proc is not None and self._proc.poll() is None:
            return
        if self._proc is not None:
            self._stop()
        env = dict(os.environ)
        src = str(Path(perfscale.__file__).resolve().parents[1])
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self._err_path = self.workdir / f"worker-{self.starts}.stderr.txt"
        self._err = open(self._err_path, "wb")
        self._spawned_at = time.perf_counter()
        self._ready = False
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "perfscale.tune.screen"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._err, env=env, start_new_session=True, bufsize=0,
        )
        self.starts += 1

    def _start(self) -> None:
        """Spawn if needed and wait for the worker's "ready"."""
        if self._proc is None or self._proc.poll() is not None:
            self.spawn()
        if self._ready:
            return
        line = self._read_line(READY_TIMEOUT)
        if line != "ready":
            tail = self._stop()
            raise RuntimeError(f"the tune trial worker did not start: {line or 'no answer'}; stderr: {tail[-1500:]}")
        self._ready = True
        self.startup_s = time.perf_counter() - self._spawned_at

    def _read_line(self, timeout: float) -> str | None:
        """One line from the worker; None on timeout; "" at end of file (the worker exited)."""
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        data = b""
        deadline = time.monotonic() + timeout
        while not data.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if not ready:
                continue
            chunk = os.read(fd, 1)
            if not chunk:
                return ""
            data += chunk
        return data.decode().strip()

    def _stop(self) -> str:
        """Kill the worker (its whole group) and return the tail of its stderr."""
        if self._proc is not None:
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self._proc.wait()
        if self._err is not None:
            self._err.close()
            self._err = None
        self._proc = None
        self._ready = False
        try:
            return self._err_path.read_bytes()[-3000:].decode("utf-8", errors="replace")
        except (OSError, AttributeError):
            return ""

    def close(self) -> None:
        if self._proc is not None:
            try:
                self._proc.stdin.close()  # the worker exits at end of input
                self._proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass
            self._stop()

    def __enter__(self) -> TrialServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, job: dict[str, Any], limit: float) -> tuple[str, dict[str, Any] | None, str]:
        """('done', payload, '') | ('timeout', None, stderr) | ('died', None, stderr)."""
        if self._proc is not None and self._proc.poll() is not None:
            self._stop()
        self._start()
        self._count += 1
        tag = f"trial-{self._count}-{time.monotonic_ns()}"
        job_path = self.workdir / f"{tag}.job.json"
        job["result_path"] = str(self.workdir / f"{tag}.result.json")
        job_path.write_text(json.dumps(job))
        try:
            self._proc.stdin.write(f"{job_path}\n".encode())
            line = self._read_line(limit)
        except BrokenPipeError:
            line = None
        except BaseException:  # Ctrl-C: never leave the worker running
            self._stop()
            raise
        if line == "done":
            return "done", json.loads(Path(job["result_path"]).read_text()), ""
        if line == "":  # end of file: the worker is exiting; collect its status
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        died = self._proc.poll() is not None
        rc = self._proc.returncode
        tail = self._stop()
        if died:
            return "died", {"returncode": rc}, tail
        return "timeout", None, tail

    # ----- the two kinds of trial -----
    def measure(self, config: BenchConfig, options: MeasureOptions, *, group: str | None = None, repeat: int = 0) -> BenchResult:
        """One bench measurement of `config` (fresh model in the shared worker); never raises for a fault."""
        limit = options.effective_time_limit
        started = time.time()
        t0 = time.perf_counter()
        how, payload, tail = self._call({"kind": "measure", "config": config.to_dict(), "options": options.to_dict(),
                                         "mode": "measure", "outputs_path": None}, limit)
        base = {"config": config, "group": group, "repeat": repeat, "started_at": started, "wall_s": time.perf_counter() - t0}
        if how == "done":
            return BenchResult.from_dict({"config": config.to_dict(), **payload} | {k: v for k, v in base.items() if k != "config"})
        if how == "timeout":
            return BenchResult(status="timeout", reason=f"exceeded the trial time limit of {limit:.0f} s and was killed", stderr_tail=tail, **base)
        is_oom, size = parse_oom(tail)
        rc = payload["returncode"] if payload else None
        if is_oom:
            return BenchResult(status="oom", reason="out of memory (from stderr)", oom_bytes=size, stderr_tail=tail, **base)
        if rc == -signal.SIGKILL:
            return BenchResult(status="oom", reason="killed by SIGKILL, not by perfscale: most likely the kernel's OOM killer", stderr_tail=tail, **base)
        how_died = f"killed by signal {-rc}" if rc is not None and rc < 0 else f"exit code {rc}"
        return BenchResult(status="failed", reason=f"the trial worker died ({how_died}) during this trial", stderr_tail=tail, **base)

    def measure_pair(self, config_a: BenchConfig, config_b: BenchConfig, stop: StopRule, limit: float, *, warmup: int = 1,
             group: str | None = None, repeat: int = 0) -> tuple[BenchResult, BenchResult]:
        """A and B built side by side in this worker and timed in alternating steps (A B, B A, A B, ...),
        so that the machine's drift hits both alike (the within-process half of the final comparison).
        Returns one BenchResult per configuration, their samples aligned pair by pair; never raises for a fault."""
        started = time.time()
        t0 = time.perf_counter()
        how, payload, tail = self._call({"kind": "pair", "configs": [config_a.to_dict(), config_b.to_dict()],
                                         "stop": stop.to_dict(), "warmup": warmup}, limit)
        wall = time.perf_counter() - t0
        base = {"group": group, "repeat": repeat, "started_at": started, "wall_s": wall}
        if how == "done" and payload.get("status") == "ok":
            out = []
            for i, config in enumerate((config_a, config_b)):
                doc = {"config": config.to_dict(), "status": "ok", "samples": payload["samples"][i], "load_s": payload["load_s"][i],
                       "warmup_s": payload["warmup_s"][i], "tokens_per_iter": payload["tokens_per_iter"][i],
                       "samples_per_iter": payload["samples_per_iter"][i], "stop_reason": payload["stop_reason"],
                       "device": payload.get("device"), "environment": payload.get("environment", {}),
                       "notes": [PAIRED_NOTE] + payload.get("notes", []), "setup": {"paired_with": (config_b, config_a)[i].display}}
                out.append(BenchResult.from_dict(doc | base))
            return out[0], out[1]
        if how == "done":  # the job ran and reported a fault (failed or oom while building or stepping)
            status, reason, tail = payload.get("status", "failed"), payload.get("reason"), payload.get("stderr_tail") or ""
        elif how == "timeout":
            status, reason = "timeout", f"the paired run exceeded its time limit of {limit:.0f} s and was killed"
        else:
            is_oom, _ = parse_oom(tail)
            rc = payload["returncode"] if payload else None
            status = "oom" if is_oom or rc == -signal.SIGKILL else "failed"
            reason = "out of memory while running the pair" if status == "oom" else f"the worker died during the paired run (exit {rc})"
        results = tuple(BenchResult(config=c, status=status, reason=reason, stderr_tail=tail, **base) for c in (config_a, config_b))
        return results[0], results[1]

    def trace(self, model: str, run: dict[str, Any], device: str, limit: float = 600.0) -> dict[str, Any]:
        """A trace of one configuration: {'status': 'ok', 'trace': TraceResult dict} or {'status': ..., 'reason': ...}."""
        how, payload, tail = self._call({"kind": "trace", "model": model, "run": run, "device": device}, limit)
        if how == "done":
            return payload
        if how == "timeout":
            return {"status": "timeout", "reason": f"trace exceeded {limit:.0f} s"}
        return {"status": "failed", "reason": f"the trace worker died: {tail[-500:]}"}


# ----------------------------------------------------------------- the worker process
def _die_with_parent() -> None:
    """Linux: SIGKILL this worker when the tune process dies (PR_SET_PDEATHSIG = 1)."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def _measure_job(job: dict[str, Any], default_threads: int, environment: dict[str, Any]) -> dict[str, Any]:
    import gc

    import torch

    from perfscale.errors import PerfscaleError
    from perfscale.measure.worker import run_job

    torch.set_num_threads(default_threads)  # a previous trial may have changed it
    config = BenchConfig.from_dict(job["config"])
    try:
        inject_fault(config.extra.get("tune_fault"), "tune trial")
        payload = run_job(job)
    except MemoryError as exc:
        payload = {"status": "oom", "oom_bytes": None, "reason": f"MemoryError: {exc}"}
    except Exception as exc:  # noqa: BLE001 - every failure becomes a result
        import traceback

        is_oom, size = parse_oom(str(exc))
        if is_oom:
            payload = {"status": "oom", "oom_bytes": size, "reason": f"{type(exc).__name__}: {exc}"[:2000]}
        elif isinstance(exc, PerfscaleError):
            payload = {"status": "failed", "reason": str(exc)}
        else:
            payload = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"[:2000], "stderr_tail": traceback.format_exc()[-4000:]}
    payload["environment"] = environment | {"threads": {"torch_intra_op": torch.get_num_threads(), "torch_inter_op": torch.get_num_interop_threads()}}
    payload.setdefault("notes", []).append("tune trial: one of several trials in a shared worker process (fresh model each)")
    gc.collect()
    return payload


def _pair_job(job: dict[str, Any], default_threads: int, environment: dict[str, Any]) -> dict[str, Any]:
    """Build A and B in this process, warm both, then time steps in the order A B, B A, A B, ... until the
    95% CI of the median per-token time ratio B/A is within the stop rule's target (or its time cap)."""
    import gc
    import math

    import numpy as np
    import torch

    from perfscale.errors import PerfscaleError
    from perfscale.measure.scenarios import train
    from perfscale.measure.scenarios.common import resolve_device, sync
    from perfscale.measure.stats import median_ci

    configs = [BenchConfig.from_dict(c) for c in job["configs"]]
    stop = StopRule.from_dict(job["stop"])
    device = resolve_device(configs[0].device)
    try:
        scenarios, load_s = [], []
        for config in configs:
            inject_fault(config.extra.get("tune_fault"), "tune trial")
            torch.set_num_threads(config.threads or default_threads)
            t0 = time.perf_counter()
            scenarios.append(train.setup(config, device))
            load_s.append(time.perf_counter() - t0)

        def timed(i: int) -> float:
            torch.set_num_threads(configs[i].threads or default_threads)
            sync(device)
            start = time.perf_counter()
            scenarios[i].step()
            sync(device)
            return time.perf_counter() - start

        warm = [[timed(i) for _ in range(max(0, int(job.get("warmup", 1))))] for i in (0, 1)]
        samples: list[list[float]] = [[], []]
        per_token = [1.0 / (s.tokens_per_iter or 1) for s in scenarios]
        begin, next_check, reason = time.perf_counter(), stop.min_iters, None
        while reason is None:
            for i in ((0, 1) if len(samples[0]) % 2 == 0 else (1, 0)):  # ABBA: neither is always first
                samples[i].append(timed(i))
            n, elapsed = len(samples[0]), time.perf_counter() - begin
            if n >= stop.max_iters:
                reason = "iteration_cap"
            elif n >= stop.min_iters and elapsed >= stop.max_time:
                reason = "time_cap"
            elif n >= next_check and elapsed >= stop.min_time:
                next_check = n + max(1, n // 10)
                logs = [math.log(b * per_token[1] / (a * per_token[0])) for a, b in zip(samples[0], samples[1], strict=True)]
                lo, hi = median_ci(logs, resamples=400)
                if (math.exp(hi) - math.exp(lo)) / 2 / math.exp(float(np.median(logs))) <= stop.target_rel_ci:
                    reason = "converged"
    except MemoryError as exc:
        return {"status": "oom", "reason": f"MemoryError: {exc}"}
    except Exception as exc:  # noqa: BLE001 - every failure becomes a result
        import traceback

        is_oom, _ = parse_oom(str(exc))
        status = "oom" if is_oom else "failed"
        text = str(exc) if isinstance(exc, PerfscaleError) else f"{type(exc).__name__}: {exc}"[:2000]
        return {"status": status, "reason": text, "stderr_tail": traceback.format_exc()[-4000:]}
    finally:
        torch.set_num_threads(default_threads)
    out = {"status": "ok", "samples": samples, "warmup_s": warm, "load_s": load_s, "stop_reason": reason, "device": device,
           "tokens_per_iter": [s.tokens_per_iter for s in scenarios], "samples_per_iter": [s.samples_per_iter for s in scenarios],
           "environment": environment | {"threads": {"torch_intra_op": torch.get_num_threads()}}, "notes": []}
    scenarios.clear()
    gc.collect()
    return out


def _trace_job(job: dict[str, Any]) -> dict[str, Any]:
    from perfscale.config.run_config import RunConfig
    from perfscale.errors import PerfscaleError
    from perfscale.trace import trace

    try:
        result = trace(job["model"], RunConfig.from_dict(job["run"]), device=job["device"])
    except PerfscaleError as exc:
        return {"status": "failed", "reason": str(exc)}
    except Exception as exc:  # noqa: BLE001
        return {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"[:2000]}
    return {"status": "ok", "trace": result.to_dict()}


def main() -> int:
    _die_with_parent()
    import torch

    from perfscale.measure.environment import collect_environment
    from perfscale.measure.scenarios import train  # noqa: F401 - import once, here, not per trial

    from perfscale.measure.scenarios.common import resolve_device

    default_threads = torch.get_num_threads()
    environment = collect_environment(resolve_device("auto"))
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        path = line.strip()
        if not path:
            continue
        job = json.loads(Path(path).read_text())
        if job["kind"] == "trace":
            payload = _trace_job(job)
        elif job["kind"] == "pair":
            payload = _pair_job(job, default_threads, environment)
        else:
            payload = _measure_job(job, default_threads, environment)
        tmp = Path(job["result_path"] + ".tmp")
        tmp.write_text(json.dumps(payload, default=str))
        os.replace(tmp, job["result_path"])
        out.write("done\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
