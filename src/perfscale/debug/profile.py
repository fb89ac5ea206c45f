"""`debug profile`: a few steps under torch.profiler, and where the step's time goes, in words.

Every event the profiler records inside a step is put in one class, top-down (the first rule that
matches an event claims it with everything below it):

  input pipeline   DataLoader waits: `enumerate(DataLoader)#...__next__`, which torch records itself
  optimizer        `Optimizer.step#...` / `Optimizer.zero_grad#...` (torch records these too)
  communication    c10d / gloo / nccl collectives and `record_param_comms`, and the time the step's thread
                   waits while a collective runs on another thread (gloo's and nccl's own threads)
  synchronisation  `.item()` / `.cpu()` / `.tolist()` reads (aten::item, aten::_local_scalar_dense) and
                   CUDA synchronisations (cudaDeviceSynchronize, cudaStreamSynchronize)
  compute (GEMM)   matmuls, convolutions and attention kernels (aten::mm, addmm, bmm, linear, sdpa...)
  memory-bound     every other aten operator (elementwise, reductions, norms, copies, indexing)
  host / launch    an operator on tiny tensors (at most 4096 elements in all: its fixed per-call cost of
                   dispatch, and on CUDA the kernel launch, is the time), autograd and Python scopes' own
                   time, and the time between operators that no event covers (the Python in the loop)

On CUDA the compute / memory-bound split is read from the GPU kernels instead (GEMM kernels vs the
others) and the time the GPU sits idle in the step is host/launch overhead. The verdict names the
largest class, the fraction of step time each takes, the top operators and modules (module time is
recorded with global forward hooks, one `record_function` per module call, forward only) and the
perfscale knob that addresses the largest class.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perfscale.errors import InvalidConfigError, PerfscaleError, UnsupportedModelError

CLASSES = ("input", "host", "compute", "memory", "optimizer", "communication", "sync")
LABELS = {"input": "input pipeline (DataLoader waits)", "host": "host / launch overhead", "compute": "compute-bound GEMMs",
          "memory": "memory-bound elementwise work", "optimizer": "optimizer step", "communication": "communication",
          "sync": "synchronisation (.item(), .cpu())"}
# What addresses each class, as perfscale knobs (RunConfig flags) where one exists.
KNOBS = {
    "input": "more DataLoader workers (--workers N; --pin-memory on CUDA), or pre-tokenized data",
    "host": "torch.compile (--compile) to fuse small operators (CUDA graphs with mode='reduce-overhead'), "
            "or a larger micro-batch (--batch) so the per-call cost is spread over more work",
    "compute": "the matmuls are the work itself: a faster dtype (--precision bf16-mixed where the hardware has bf16 "
               "units), less recompute (--no-checkpointing), or fewer FLOPs (--lora-r)",
    "memory": "torch.compile (--compile) or fused kernels (--fused-kernels) to fuse elementwise chains, "
              "and --attn sdpa for attention",
    "optimizer": "a fused optimizer (--optimizer adamw_torch_fused), or fewer optimizer steps (--grad-accum)",
    "communication": "communicate less often (--grad-accum), overlap it (DDP/FSDP bucketing), or fewer ranks per link",
    "sync": "remove .item()/.cpu() from the step (log every N steps, keep metrics on the device)",
}
GEMM_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::linear", "aten::addbmm",
            "aten::_scaled_mm", "aten::convolution", "aten::conv1d", "aten::conv2d", "aten::_convolution",
            "aten::scaled_dot_product_attention", "aten::_scaled_dot_product_flash_attention",
            "aten::_scaled_dot_product_efficient_attention", "aten::_scaled_dot_product_flash_attention_for_cpu",
            "aten::_scaled_dot_product_cudnn_attention", "aten::einsum", "aten::_flash_attention_forward")
SYNC_OPS = ("aten::item", "aten::_local_scalar_dense", "aten::tolist", "cudaDeviceSynchronize", "cudaStreamSynchronize",
            "cudaEventSynchronize")
TINY_ELEMENTS = 4096
STEP_NAME = "perfscale.step"
MAX_STEPS = 100


@dataclass
class ProfileResult:
    what: str
    device: str
    steps: int
    step_time_s: float  # median wall time of a profiled step
    fractions: dict[str, float]  # class -> fraction of step time (sums to 1)
    seconds: dict[str, float]  # class -> seconds per step
    bound: str  # the largest class
    verdict: str
    advice: list[str]
    top_ops: list[dict[str, Any]]
    top_modules: list[dict[str, Any]]
    files: dict[str, str]
    memory: dict[str, Any] = field(default_factory=dict)  # CPU: peak bytes above the start of profiling; CUDA: the snapshot
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "debug-profile", **{k: getattr(self, k) for k in self.__dataclass_fields__}}


# What torch's C++ side prints on file descriptor 2 while profiling, expected and not the user's business:
# kineto's start/stop lines, and the CPU allocator's note about blocks allocated before profiling began.
_PROFILER_NOISE = ("profiler_start", "profiler_stop", "allocated before the profiling started")


@contextlib.contextmanager
def _captured_stderr_fd(kept: list[str]):
    """Route file descriptor 2 (C++ warnings: kineto, the allocator) to a file while profiling; afterwards the
    lines that are not known profiler noise are appended to `kept` (they end up in the result's notes)."""
    import tempfile

    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    with tempfile.TemporaryFile() as sink:
        try:
            os.dup2(sink.fileno(), 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", errors="replace")
            kept += [line.strip() for line in text.splitlines() if line.strip() and not any(n in line for n in _PROFILER_NOISE)]


def _memory_timeline(prof, step_events) -> dict[str, Any] | None:
    """CPU memory over the profiled steps from the profiler's allocation events (kineto '[memory]' entries: a
    signed byte count per allocation and free): bytes allocated since profiling began, its peak, and where."""
    try:
        events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]" and str(e.device_type()).endswith("CPU")]
    except Exception:  # noqa: BLE001 - a torch without these events: no timeline
        return None
    if not events:
        return None
    events.sort(key=lambda e: e.start_ns())
    t0 = events[0].start_ns()
    live, peak, peak_t, points = 0, 0, 0, []
    for e in events:
        live += e.nbytes()
        if live > peak:
            peak, peak_t = live, e.start_ns()
        points.append(((e.start_ns() - t0) * 1e-9, live))
    stride = max(1, len(points) // 2000)  # at most ~2000 points in the file
    return {"device": "cpu", "source": "torch.profiler profile_memory=True ([memory] events)",
            "peak_bytes_above_start": peak, "peak_at_s": (peak_t - t0) * 1e-9, "allocations": sum(e.nbytes() > 0 for e in events),
            "timeline": points[::stride]}


@contextlib.contextmanager
def _module_scopes():
    """One record_function per module call (forward), named by the module's class, via global hooks."""
    import torch
    from torch.nn.modules import module as nn_module

    stack: list[Any] = []

    def pre(mod, args):
        rf = torch.profiler.record_function(f"module::{type(mod).__name__}")
        rf.__enter__()
        stack.append(rf)

    def post(mod, args, out):
        if stack:
            stack.pop().__exit__(None, None, None)

    handles = [nn_module.register_module_forward_pre_hook(pre), nn_module.register_module_forward_hook(post)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        while stack:
            stack.pop().__exit__(None, None, None)


def _numel(shapes) -> int | None:
    total, known = 0, False
    for s in shapes or ():
        if isinstance(s, (list, tuple)) and s and all(isinstance(d, int) for d in s):
            n = 1
            for d in s:
                n *= d
            total += n
            known = True
    return total if known else None


def _rule(name: str, shapes) -> str | None:
    """The class an event claims (with its subtree), or None to look inside it."""
    if name.startswith("enumerate(DataLoader)"):
        return "input"
    if name.startswith(("Optimizer.step", "Optimizer.zero_grad")):
        return "optimizer"
    low = name.lower()
    if low.startswith(("c10d::", "gloo:", "nccl:", "record_param_comms")) or "allreduce" in low or "all_gather" in low:
        return "communication"
    if name in SYNC_OPS:
        return "sync"
    if name.startswith("aten::"):
        if "adam" in low or "sgd" in low or low.startswith("aten::_foreach_"):
            return "optimizer"  # an optimizer kernel called outside Optimizer.step's scope
        n = _numel(shapes)
        if n is not None and n <= TINY_ELEMENTS:
            return "host"
        return "compute" if name.replace("_backward", "") in GEMM_OPS else "memory"
    return None


def _classify_step(step_event) -> dict[str, float]:
    """Seconds per class inside one step event (CPU view)."""
    out = dict.fromkeys(CLASSES, 0.0)
    covered = 0.0

    def walk(ev) -> None:
        nonlocal covered
        cls = _rule(ev.name, ev.input_shapes)
        dur = ev.time_range.elapsed_us() * 1e-6
        if cls is not None:
            out[cls] += dur
            covered += dur
            return
        children = list(ev.cpu_children)
        child_time = sum(c.time_range.elapsed_us() for c in children) * 1e-6
        # a scope's own time (autograd engine, module scopes, Python-side record_functions): host
        own = max(0.0, dur - child_time)
        out["host"] += own
        covered += own
        for c in children:
            walk(c)

    total = step_event.time_range.elapsed_us() * 1e-6
    for child in step_event.cpu_children:
        walk(child)
    out["host"] += max(0.0, total - covered)  # between events: Python in the loop
    return out


def _intervals_overlap(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
    """Total length (us) where two sets of intervals overlap (b merged first)."""
    merged: list[list[float]] = []
    for start, end in sorted(b):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    total = 0.0
    for s0, e0 in a:
        for s1, e1 in merged:
            total += max(0.0, min(e0, e1) - max(s0, s1))
    return total


def _gaps(step_event) -> list[tuple[float, float]]:
    """The parts of a step that no event of its own thread covers (us): where Python ran or the thread waited."""
    out, cursor = [], step_event.time_range.start
    for c in sorted(step_event.cpu_children, key=lambda c: c.time_range.start):
        if c.time_range.start > cursor:
            out.append((cursor, c.time_range.start))
        cursor = max(cursor, c.time_range.end)
    if step_event.time_range.end > cursor:
        out.append((cursor, step_event.time_range.end))
    return out


def _waits_on_communication(step_event, comm_events) -> float:
    """Seconds of the step's uncovered time during which a collective ran on another thread: the step was
    waiting for it (c10d returns at once and the wait is not an operator; gloo works on its own threads)."""
    inside = [(e.time_range.start, e.time_range.end) for e in comm_events
              if e.thread != step_event.thread and e.time_range.end > step_event.time_range.start
              and e.time_range.start < step_event.time_range.end]
    return _intervals_overlap(_gaps(step_event), inside) * 1e-6 if inside else 0.0


def _classify_cuda(step_event, kernels) -> dict[str, float] | None:
    """Seconds per class from the GPU kernels that ran inside the step's window (CUDA view), or None."""
    start, end = step_event.time_range.start, step_event.time_range.end
    inside = [k for k in kernels if start <= k.time_range.start < end]
    if not inside:
        return None
    cpu = _classify_step(step_event)
    out = dict.fromkeys(CLASSES, 0.0)
    total = (end - start) * 1e-6
    busy = 0.0
    for k in inside:
        dur = k.time_range.elapsed_us() * 1e-6
        low = k.name.lower()
        if "nccl" in low:
            out["communication"] += dur
        elif any(s in low for s in ("gemm", "cutlass", "xmma", "sgemm", "hgemm", "matmul", "flash", "fmha", "conv")):
            out["compute"] += dur
        else:
            out["memory"] += dur
        busy += dur
    # the GPU idle time in the step: what the host was doing instead (its CPU classes, scaled to the idle time)
    idle = max(0.0, total - busy)
    host_side = {c: cpu[c] for c in ("input", "optimizer", "sync", "host")}
    norm = sum(host_side.values()) or 1.0
    for c, v in host_side.items():
        out[c] += idle * v / norm
    return out


def _top_ops(prof, n: int = 10) -> list[dict[str, Any]]:
    rows = []
    for avg in prof.key_averages():
        if avg.key == STEP_NAME or avg.key.startswith(("ProfilerStep", "module::")):
            continue
        rows.append({"name": avg.key, "calls": avg.count, "self_s": avg.self_cpu_time_total * 1e-6,
                     "total_s": avg.cpu_time_total * 1e-6, "class": _rule(avg.key, None) or "host",
                     "self_cpu_memory_bytes": getattr(avg, "self_cpu_memory_usage", 0)})
    rows.sort(key=lambda r: -r["self_s"])
    return rows[:n]


def _top_modules(events, steps: int, n: int = 8) -> list[dict[str, Any]]:
    per: dict[str, list[float]] = {}
    for ev in events:
        if ev.name.startswith("module::"):
            # a module's time without the time of modules inside it (its children's module scopes)
            inner = sum(c.time_range.elapsed_us() for c in _module_descendants(ev))
            acc = per.setdefault(ev.name[len("module::"):], [0.0, 0.0, 0])
            acc[0] += (ev.time_range.elapsed_us() - inner) * 1e-6
            acc[1] += ev.time_range.elapsed_us() * 1e-6
            acc[2] += 1
    rows = [{"module": k, "self_s_per_step": v[0] / steps, "total_s_per_step": v[1] / steps, "calls_per_step": v[2] / steps}
            for k, v in per.items()]
    rows.sort(key=lambda r: -r["self_s_per_step"])
    return rows[:n]


def _module_descendants(ev):
    """The nearest module scopes below `ev` (not nested deeper than the first one on each path)."""
    out = []
    stack = list(ev.cpu_children)
    while stack:
        c = stack.pop()
        if c.name.startswith("module::"):
            out.append(c)
        else:
            stack.extend(c.cpu_children)
    return out


def profile_step(step: Callable[[], Any], *, what: str = "step", steps: int = 3, warmup: int = 1, device: str = "cpu",
                 out_dir: str | os.PathLike | None = None, modules: bool = True, notes: list[str] | None = None) -> ProfileResult:
    """Profile `steps` calls of `step` (after `warmup` untimed ones) and classify where the time goes.

    `out_dir`: where the Chrome/Perfetto trace (trace.json) and the memory record are written: on CUDA the
    allocator snapshot (memory_snapshot.pickle, for https://pytorch.org/memory_viz), on CPU the timeline of
    allocated bytes from the profiler's allocation events (memory_timeline.json); nothing is written without it.
    """
    import statistics

    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    if not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
        raise InvalidConfigError(f"--steps {steps!r} must be an integer in 1..{MAX_STEPS}.")
    if not isinstance(warmup, int) or not 0 <= warmup <= MAX_STEPS:
        raise InvalidConfigError(f"--warmup {warmup!r} must be an integer in 0..{MAX_STEPS}.")
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        try:
            out.mkdir(parents=True, exist_ok=True)
            probe = out / ".perfscale-write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise InvalidConfigError(f"--out {str(out)!r} is not a writable folder ({exc.strerror or exc}). Give a folder you can write.") from exc
    cuda = device.startswith("cuda")

    def run_step():
        try:
            step()
        except PerfscaleError:
            raise
        except Exception as exc:  # a scenario that fails is the user's configuration: say so
            raise UnsupportedModelError(f"the profiled {what} failed: {type(exc).__name__}: {str(exc)[:500]}") from exc
        if cuda:
            torch.cuda.synchronize()

    for _ in range(warmup):
        run_step()
    if cuda and out is not None:
        torch.cuda.memory._record_memory_history(max_entries=100_000)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    walls = []
    scopes = _module_scopes() if modules else contextlib.nullcontext()
    prof = profile(activities=activities, record_shapes=True, profile_memory=True)
    stderr_lines: list[str] = []
    with _captured_stderr_fd(stderr_lines):
        prof.__enter__()
        try:
            with scopes:
                for _ in range(steps):
                    t0 = time.perf_counter()
                    with record_function(STEP_NAME):
                        run_step()
                    walls.append(time.perf_counter() - t0)
        finally:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                prof.__exit__(None, None, None)
    events = prof.events()
    step_events = [e for e in events if e.name == STEP_NAME]
    memory = None if cuda else _memory_timeline(prof, step_events)
    files: dict[str, str] = {}
    if out is not None:
        prof.export_chrome_trace(str(out / "trace.json"))
        files["trace"] = str(out / "trace.json")
        if cuda:
            torch.cuda.memory._dump_snapshot(str(out / "memory_snapshot.pickle"))
            torch.cuda.memory._record_memory_history(enabled=None)
            files["memory_snapshot"] = str(out / "memory_snapshot.pickle")
        elif memory is not None:
            import json

            (out / "memory_timeline.json").write_text(json.dumps(memory))
            files["memory_timeline"] = str(out / "memory_timeline.json")
    kernels = [e for e in events if cuda and str(e.device_type).endswith("CUDA")]
    comm_events = [e for e in events if _rule(e.name, None) == "communication"]
    per_step = []
    for ev in step_events:
        classes = (_classify_cuda(ev, kernels) if cuda else None) or _classify_step(ev)
        waited = min(classes["host"], _waits_on_communication(ev, comm_events)) if comm_events else 0.0
        classes["host"] -= waited
        classes["communication"] += waited
        per_step.append(classes)
    seconds = {c: sum(s[c] for s in per_step) / max(1, len(per_step)) for c in CLASSES}
    total = sum(seconds.values()) or 1.0
    fractions = {c: seconds[c] / total for c in CLASSES}
    bound = max(CLASSES, key=lambda c: fractions[c])
    top_ops = _top_ops(prof)
    top_modules = _top_modules(events, len(step_events) or 1) if modules else []
    ranked = sorted(CLASSES, key=lambda c: -fractions[c])
    parts = ", ".join(f"{LABELS[c]} {fractions[c]:.0%}" for c in ranked if fractions[c] >= 0.05)
    op = next((o for o in top_ops if o["class"] == bound), top_ops[0] if top_ops else None)
    verdict = f"{what}: bound by {LABELS[bound]}: {fractions[bound]:.0%} of a {statistics.median(walls) * 1e3:.1f} ms step ({parts})."
    if op:
        verdict += f" Top operator: {op['name']} ({op['self_s'] / max(1, len(step_events)) * 1e3:.2f} ms per step, {op['calls'] // max(1, len(step_events))} calls)."
    if top_modules:
        verdict += f" Top module: {top_modules[0]['module']} ({top_modules[0]['self_s_per_step'] * 1e3:.2f} ms per step, own time)."
    advice = [f"{LABELS[c]} ({fractions[c]:.0%}): {KNOBS[c]}" for c in ranked if fractions[c] >= 0.15] or [f"{LABELS[bound]}: {KNOBS[bound]}"]
    notes = list(notes or []) + [f"stderr while profiling: {line}" for line in stderr_lines[:20]]
    if memory is not None:
        memory_summary = {k: v for k, v in memory.items() if k != "timeline"}
    else:
        memory_summary = {"device": device, "source": "CUDA memory snapshot (see files)" if cuda and out else "not recorded"}
    return ProfileResult(what=what, device=device, steps=steps, step_time_s=statistics.median(walls), fractions=fractions,
                         seconds=seconds, bound=bound, verdict=verdict, advice=advice, top_ops=top_ops,
                         top_modules=top_modules, files=files, memory=memory_summary, notes=notes)


def debug_profile(config, *, steps: int = 3, warmup: int = 1, out_dir: str | os.PathLike | None = None) -> ProfileResult:
    """Profile the bench scenario `config` (a measure BenchConfig: train, encode or generate with its knobs),
    built in this process as the bench worker builds it, for `steps` steps after `warmup`."""
    import torch

    from perfscale.debug.quiet import quiet_transformers
    from perfscale.measure.preflight import preflight
    from perfscale.measure.scenarios import SCENARIO_MODULES
    from perfscale.measure.scenarios.common import resolve_device, set_tf32

    preflight(config)
    if config.threads:
        torch.set_num_threads(config.threads)
    set_tf32(config.run.tf32)
    device = resolve_device(config.device)
    try:
        with quiet_transformers():
            scenario = importlib.import_module(SCENARIO_MODULES[config.scenario]).setup(config, device)
    except PerfscaleError:
        raise
    except Exception as exc:  # noqa: BLE001 - the scenario could not be built from this configuration
        raise UnsupportedModelError(f"the {config.scenario} scenario of {config.display} could not be built: "
                                    f"{type(exc).__name__}: {str(exc)[:500]}") from exc
    notes = list(scenario.notes)
    if config.backend == "onnxruntime":
        notes.append("ONNX Runtime's kernels are invisible to torch.profiler: its time reads as host/launch overhead "
                     "(the gaps between torch events); profile ORT itself with SessionOptions.enable_profiling")
    with quiet_transformers():
        return profile_step(scenario.step, what=config.display, steps=steps, warmup=warmup, device=device, out_dir=out_dir,
                            notes=notes)


__all__ = ["CLASSES", "KNOBS", "LABELS", "ProfileResult", "debug_profile", "profile_step"]
