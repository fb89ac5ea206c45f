"""The code that runs inside each fresh measurement process: `python -m perfscale.measure.worker JOB.json`.

It builds the scenario, warms up (the first iteration carries torch.compile / ORT warm-up and is
reported separately), then times iterations with device synchronisation until the stop rule says
stop, then records memory, MFU inputs and (for the accuracy gate) the outputs. It always tries to
write a result file, also for an out-of-memory error or an exception; the runner handles the
cases where it cannot (killed, crashed).

It never outlives the perfscale process that started it: when that process dies (even by SIGKILL)
the worker removes the temp folder and kills its own process group (DataLoader workers, compile
pools), noticed two ways: EOF on a pipe only the parent writes to, and PR_SET_PDEATHSIG on Linux.
"""

from __future__ import annotations

import gc
import json
import os
import re
import shutil
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from perfscale.measure.proc_memory import reset_peak_rss, status_bytes

_OOM_PATTERNS = (
    # CPU: "DefaultCPUAllocator: can't allocate memory: you tried to allocate 1152921504606846976 bytes."
    (re.compile(r"can't allocate memory: you tried to allocate (\d+) bytes"), 1),
    # CUDA: "CUDA out of memory. Tried to allocate 20.00 GiB"
    (re.compile(r"Tried to allocate ([\d.]+) (B|KiB|MiB|GiB|TiB)"), None),
)
_UNITS = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}


def parse_oom(text: str) -> tuple[bool, int | None]:
    """(is an out-of-memory message, bytes asked or None)."""
    for pattern, _ in _OOM_PATTERNS:
        m = pattern.search(text)
        if m:
            if m.lastindex == 1:
                return True, int(m.group(1))
            return True, int(float(m.group(1)) * _UNITS[m.group(2)])
    lowered = text.lower()
    if "out of memory" in lowered or "can't allocate memory" in lowered or "cannot allocate memory" in lowered:
        return True, None
    return False, None


def live_tensor_bytes() -> int:
    """Bytes of the distinct CPU tensor storages reachable now (parameters, grads, optimizer state...)."""
    import torch

    import warnings

    seen: set[int] = set()
    total = 0
    with warnings.catch_warnings():  # isinstance() on deprecated module objects (torch.distributed.reduce_op) warns
        warnings.simplefilter("ignore")
        objects = [obj for obj in gc.get_objects() if isinstance(obj, torch.Tensor)]
    for obj in objects:
        try:
            if isinstance(obj, torch.Tensor) and obj.device.type == "cpu" and not obj.is_meta:
                storage = obj.untyped_storage()
                key = storage.data_ptr()
                if key and key not in seen:
                    seen.add(key)
                    total += storage.nbytes()
        except Exception:  # noqa: BLE001 - sparse/quantized/fake tensors have no plain storage
            continue
    return total


def profiled_peak_tensor_bytes(step) -> int:
    """Peak live CPU tensor bytes over one iteration: live bytes before + max of the running sum of
    the profiler's allocation events (torch.profiler profile_memory; FIELD-NOTES: agrees with
    MemTracker to the byte on this CPU)."""
    return profiled_iteration(step)[0]


def profiled_iteration(step) -> tuple[int, dict[str, Any]]:
    """(peak live CPU tensor bytes, communication time) of one profiled iteration; see
    profiled_peak_tensor_bytes and distributed.comm_time (empty without a process group)."""
    from torch.profiler import ProfilerActivity, profile

    from perfscale.measure.distributed import comm_time

    base = live_tensor_bytes()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    kineto = list(prof.profiler.kineto_results.events())
    events = sorted(
        (e.start_ns(), e.nbytes()) for e in kineto
        if e.name() == "[memory]" and e.device_type().name == "CPU"
    )
    running = peak = 0
    for _, nbytes in events:
        running += nbytes
        peak = max(peak, running)
    return base + peak, comm_time(kineto)


# ----- the job -----
def _hardware_peak(device: str, dtype: str) -> tuple[float | None, str]:
    from perfscale.specs.detect import cpu_hardware, detect_cpu

    if device == "cuda":
        from perfscale.specs import get_hardware

        hw = get_hardware("local")
    else:
        hw = cpu_hardware(detect_cpu())
    entry = hw.peak_flops.get(dtype)
    if entry is None:
        return None, f"n/a: {hw.name} has no {dtype} entry"
    return entry.value, f"{hw.name}: {entry.source}"


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    import importlib

    import numpy as np
    import torch

    from perfscale.measure.bench_config import BenchConfig, MeasureOptions
    from perfscale.measure.scenarios import SCENARIO_MODULES
    from perfscale.measure.scenarios.common import resolve_device, set_tf32, sync
    from perfscale.measure.stats import StopChecker

    config = BenchConfig.from_dict(job["config"])
    options = MeasureOptions.from_dict(job["options"])
    if config.threads:
        torch.set_num_threads(config.threads)
    set_tf32(config.run.tf32)
    device = resolve_device(config.device)
    out: dict[str, Any] = {"device": device, "notes": []}
    group = None
    if job.get("distributed"):  # one rank of a torchrun job (measure/distributed.py)
        from perfscale.measure.distributed import RankGroup

        group = RankGroup.start(job, device, options.effective_time_limit)
        job["result_path"] = group.result_path
        out["rank"] = group.info()

    t0 = time.perf_counter()
    scenario = importlib.import_module(SCENARIO_MODULES[config.scenario]).setup(config, device)
    out["load_s"] = time.perf_counter() - t0
    out["setup"] = scenario.setup_metrics
    out["notes"] += scenario.notes

    if job.get("mode") == "outputs":  # reference outputs only, no timing
        np.savez(job["outputs_path"], **scenario.outputs())
        out["status"] = "ok"
        return out

    def timed() -> float:
        sync(device)
        start = time.perf_counter()
        scenario.step()
        sync(device)
        return time.perf_counter() - start

    if group is not None:
        group.barrier()  # every rank built its model: the warm-up starts together
    out["warmup_s"] = [timed() for _ in range(options.warmup)]

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    gc.collect()
    hwm_reset = reset_peak_rss()
    rss_before = status_bytes("VmRSS")
    checker = StopChecker(options.stop, seed=config.seed)
    samples: list[float] = []
    own: list[float] = []  # this rank's own step times (samples: the slowest rank's, under torchrun)
    metrics: dict[str, list[float]] = {}
    begin = time.perf_counter()
    while True:
        own.append(timed())
        samples.append(group.slowest(own[-1]) if group is not None else own[-1])
        if scenario.iteration_metrics is not None:
            for k, v in scenario.iteration_metrics().items():
                metrics.setdefault(k, []).append(v)
        reason = checker.check(samples, time.perf_counter() - begin)
        if group is not None:
            reason = group.agree(reason)
        if reason:
            break
    out.update(samples=samples, iteration_metrics=metrics, stop_reason=reason)
    if group is not None:
        out["rank"]["samples"] = own
    if reason != "converged":
        rel = checker.last_rel_ci
        out["notes"].append(
            f"stopped by the {reason.replace('_', ' ')} before the 95% CI half-width of the median reached "
            f"{options.stop.target_rel_ci:.0%}" + (f" (it was {rel:.1%})" if rel is not None else "")
        )
    median = float(np.median(samples))
    out["compile_s"] = max(0.0, out["warmup_s"][0] - median)

    memory: dict[str, Any] = {"cpu_rss_before": rss_before}
    memory["cpu_peak_rss"] = status_bytes("VmHWM") if hwm_reset else None
    if not hwm_reset:  # lifetime peak (ru_maxrss, KiB on Linux) includes loading: say so
        import resource

        memory["cpu_peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        out["notes"].append("peak RSS is the process lifetime peak (could not reset VmHWM)")
    if device == "cuda":
        memory["cuda_max_allocated"] = torch.cuda.max_memory_allocated()
        memory["cuda_max_reserved"] = torch.cuda.max_memory_reserved()
        memory["peak_live_tensor_bytes"] = memory["cuda_max_allocated"]
    elif options.profile_memory and scenario.torch_memory:
        memory["peak_live_tensor_bytes"], comm = profiled_iteration(scenario.step)
        if group is not None:
            out["rank"]["comm"] = comm
    else:
        memory["peak_live_tensor_bytes"] = None
        if not scenario.torch_memory:
            out["notes"].append("tensors live outside this process's torch (ONNX Runtime's arena, or a forked load): peak RSS is the memory figure")
    out["memory"] = memory

    peak, source = _hardware_peak(device, scenario.peak_dtype)
    flops = scenario.flops_per_iter
    out["mfu"] = {
        "flops_per_iter": flops, "dtype": scenario.peak_dtype, "peak_flops": peak, "peak_source": source,
        "achieved_flops": flops / median if flops else None,
        "value": flops / median / peak if (flops and peak) else None,
    }
    out["samples_per_iter"] = scenario.samples_per_iter
    out["tokens_per_iter"] = scenario.tokens_per_iter
    if job.get("outputs_path") and scenario.outputs is not None:
        np.savez(job["outputs_path"], **scenario.outputs())
    if group is not None:
        group.barrier()
        group.close()
    out["status"] = "ok"
    return out


def _classify(exc: BaseException) -> dict[str, Any]:
    from perfscale.errors import PerfscaleError

    text = f"{type(exc).__name__}: {exc}"
    is_oom, size = parse_oom(str(exc))
    if is_oom:
        return {"status": "oom", "oom_bytes": size, "reason": text[:2000]}
    if isinstance(exc, PerfscaleError):
        return {"status": "failed", "reason": str(exc)}
    return {"status": "failed", "reason": text[:2000], "stderr_tail": traceback.format_exc()[-4000:]}


# ----- the parent's death -----
_abandoning = threading.Event()


def _parent_alive(parent: dict[str, Any]) -> bool:
    return os.getppid() == parent.get("pid")


def _abandon(parent: dict[str, Any]) -> None:
    """The parent is gone: nobody will read a result. Remove its temp folder (or, in a folder that is
    not perfscale's temp folder, this job's files), then kill this process group, this process included."""
    if _abandoning.is_set():
        return
    _abandoning.set()
    if parent.get("workdir"):
        shutil.rmtree(parent["workdir"], ignore_errors=True)
    for name in parent.get("files", ()):
        for path in (name, name + ".tmp"):
            try:
                os.unlink(path)
            except OSError:
                pass
    if os.getpgrp() == os.getpid():  # the runner starts each worker as the leader of its own session
        os.killpg(os.getpid(), signal.SIGKILL)
    os._exit(128 + signal.SIGKILL)


def _set_parent_death_signal(signum: int) -> None:
    """Linux: the kernel sends `signum` to this process when the parent thread that started it exits."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def watch_parent(parent: dict[str, Any] | None) -> None:
    """Abandon the job as soon as the parent dies (see the module docstring); None: not watched.

    The parent-death signal is a real-time signal of its own, not SIGTERM: the kernel sends it when the
    parent's *thread* exits, and while a multi-threaded parent dies this process is first handed to one of
    its other threads (getppid() unchanged, so nothing happens) and signalled again when the last one is
    gone. SIGTERM keeps its usual meaning (the runner then reports a worker killed by signal 15)."""
    if not parent:
        return
    me = os.getpid()

    def on_parent_death(signum, frame):
        if os.getpid() == me and not _parent_alive(parent):  # forked children inherit the handler, not the signal
            _abandon(parent)

    pdeath = getattr(signal, "SIGRTMIN", None)
    if pdeath is not None:
        pdeath += 3  # clear of the first few, which some runtimes use
        signal.signal(pdeath, on_parent_death)
        _set_parent_death_signal(pdeath)
    fd = parent.get("pipe_fd")
    if fd is not None:
        def wait_for_eof() -> None:
            try:
                while os.read(fd, 64):
                    pass
            except OSError:
                pass
            _abandon(parent)

        threading.Thread(target=wait_for_eof, name="perfscale-parent-watch", daemon=True).start()
    else:  # no pipe (a rank under a torchrun agent): poll, in case the death signal was missed
        def poll() -> None:
            while _parent_alive(parent):
                time.sleep(0.5)
            _abandon(parent)

        threading.Thread(target=poll, name="perfscale-parent-poll", daemon=True).start()
    if not _parent_alive(parent):  # it died before the watch was in place
        _abandon(parent)


def main(argv: list[str]) -> int:
    job = json.loads(Path(argv[0]).read_text())
    watch_parent(job.get("parent"))
    try:
        payload = run_job(job)
    except MemoryError as exc:
        payload = {"status": "oom", "oom_bytes": None, "reason": f"MemoryError: {exc}", "failed_at": time.time()}
    except Exception as exc:  # noqa: BLE001 - every failure becomes a result
        traceback.print_exc()
        payload = _classify(exc) | {"failed_at": time.time()}  # under torchrun: the first rank to fail is the cause
    try:
        from perfscale.measure.environment import collect_environment

        payload["environment"] = collect_environment(payload.get("device", "cpu"))
    except Exception as exc:  # noqa: BLE001
        payload["environment"] = {"error": f"{type(exc).__name__}: {exc}"}
    tmp = Path(job["result_path"] + ".tmp")
    tmp.write_text(json.dumps(payload, default=str))
    os.replace(tmp, job["result_path"])
    # A rank that failed exits non-zero, so that torchrun stops the others (stuck in a collective otherwise).
    return 1 if job.get("distributed") and payload.get("status") != "ok" else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
