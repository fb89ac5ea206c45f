"""`trace()`: pick the device program, the driver (train, FSDP, inference), full or repeated layers."""

from __future__ import annotations

import contextlib
import functools
import subprocess
import sys
import time

from perfscale.config.run_config import RunConfig
from perfscale.errors import InvalidConfigError
from perfscale.specs.model import ModelSpec, load_model_spec
from perfscale.specs.positions import check_workload_length
from perfscale.trace import repeat
from perfscale.trace.result import INFER_PHASES, TRAIN_PHASES, RawTrace, TraceResult, summarize, top_modules

DEVICES = ("cuda", "cpu")

_PROBE = """
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
with FakeTensorMode():
    x = torch.empty(4, 4, device="cuda", requires_grad=True)
    (x @ x).sum().backward()
"""


@functools.lru_cache(maxsize=1)
def fake_cuda_works() -> bool:
    """Whether this torch can run autograd on fake CUDA tensors. In a subprocess: on CPU-only
    builds it aborts the process (FIELD-NOTES), which no try/except can catch."""
    import torch

    if not torch.cuda.is_available():
        return False
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def resolve_device(device: str | None, emulate_cuda: bool | None) -> tuple[str, str, bool]:
    """(program device, fake tensor device, emulate CUDA on CPU)."""
    if device is not None and device not in DEVICES:
        raise InvalidConfigError(f"Unknown trace device: {device!r}. Choose from: {', '.join(DEVICES)} (or leave it out for CUDA).")
    if device == "cpu":
        if emulate_cuda:
            raise InvalidConfigError("emulate_cuda applies to device 'cuda', not 'cpu'.")
        return "cpu", "cpu", False
    if emulate_cuda is None:
        emulate_cuda = not fake_cuda_works()
    return "cuda", ("cpu" if emulate_cuda else "cuda"), emulate_cuda


def _emulation(emulate: bool):
    from perfscale.trace.build import real_data_branches
    from perfscale.trace.cuda_emulation import CudaAutocast, cuda_rounding

    @contextlib.contextmanager
    def ctx():
        with real_data_branches():
            if not emulate:
                yield
                return
            with cuda_rounding(True), CudaAutocast():
                yield

    return ctx


def _driver(config: RunConfig, program: str):
    """The tracing function; training ones build the optimizer as it runs on `program`."""
    if not config.is_train:
        from perfscale.trace.infer import trace_infer

        return trace_infer
    if config.fsdp:
        from perfscale.trace.fsdp import trace_fsdp

        return functools.partial(trace_fsdp, program=program)
    from perfscale.trace.train_step import trace_train

    return functools.partial(trace_train, program=program)


def _can_repeat(spec: ModelSpec) -> bool:
    from perfscale.trace.build import layer_count_key, layers_identical

    cfg = spec.config_object()
    return layer_count_key(cfg) is not None and layers_identical(cfg) and spec.num_layers >= repeat.MIN_LAYERS


def run_raw(spec: ModelSpec, config: RunConfig, fake_device: str, emulate: bool, use_repeat: bool | None) -> tuple[RawTrace, str]:
    program = "cuda" if emulate or fake_device == "cuda" else "cpu"
    driver = _driver(config, program)
    emulation = _emulation(emulate)
    if use_repeat is None:
        use_repeat = _can_repeat(spec)
    if use_repeat:
        if not _can_repeat(spec):
            raise InvalidConfigError(f"{spec.name}: its layers are not identical repeats (or fewer than {repeat.MIN_LAYERS}); trace it in full.")
        k = repeat.K
        raw_k = driver(spec, config, fake_device, emulation, num_layers=k)
        raw_k1 = driver(spec, config, fake_device, emulation, num_layers=k + 1)
        try:
            raw = repeat.extrapolate(raw_k, raw_k1, k, spec.num_layers)
            return raw, f"repeat {k},{k + 1} -> {spec.num_layers} layers"
        except repeat.NotRepeatable as exc:
            raw = driver(spec, config, fake_device, emulation)
            raw.notes.append(f"layer repetition not exact here ({exc}); traced all layers")
            return raw, "full"
    return driver(spec, config, fake_device, emulation), "full"


def head_note(spec: ModelSpec) -> str:
    """Which head was traced, and the labels its loss read (trace/train_step.make_inputs)."""
    from perfscale.specs import heads

    labels = {"causal-lm": "token labels (b, s)", "masked-lm": "token labels (b, s)", "seq2seq-lm": "token labels (b, s)",
              "sequence-classification": f"{heads.problem_type(spec.config)} labels per sequence, {spec.num_labels} outputs",
              "token-classification": f"a class per token, {spec.num_labels} outputs",
              "question-answering": "start and end positions per sequence",
              "multiple-choice": f"{heads.MULTIPLE_CHOICES} choices per example (b x {heads.MULTIPLE_CHOICES} sequences)",
              }.get(spec.task, "no head: the loss is the mean of the model's output")
    return f"head: {spec.architecture} ({spec.task}; {labels})"


def trace(
    model: str | ModelSpec, config: RunConfig, device: str | None = None, *,
    emulate_cuda: bool | None = None, repeat_layers: bool | None = None,
) -> TraceResult:
    """Trace one training step (2 iterations) or one inference run of `model` under `config`.

    device: "cuda" or None -> the CUDA program's bytes (fake CUDA where torch can, else fake CPU
    emulating CUDA); "cpu" -> the CPU program's bytes. emulate_cuda forces (True) or forbids
    (False) the emulation. repeat_layers: None = use layer repetition when exact and worth it.
    """
    from perfscale.trace.cuda_emulation import device_overheads

    start = time.perf_counter()
    spec = model if isinstance(model, ModelSpec) else load_model_spec(model)
    length_note = check_workload_length(spec, config.workload)  # refuses positions past a learned table
    program, fake_device, emulate = resolve_device(device, emulate_cuda)
    raw, method = run_raw(spec, config, fake_device, emulate, repeat_layers)
    phases = TRAIN_PHASES if config.is_train else INFER_PHASES
    summary = summarize(raw, phases)
    traced_on = "fake-cpu emulating cuda" if emulate else f"fake-{fake_device}"
    result = TraceResult(
        model=spec.name,
        config=config.to_dict(),
        device=program,
        traced_on=traced_on,
        peak_bytes=summary["peak_bytes"],
        breakdown=summary["breakdown"],
        phase=summary["phase"],
        phase_peaks=summary["phase_peaks"],
        top_modules=top_modules(raw.module_peaks),
        device_overheads=device_overheads(program),
        trace_seconds=0.0,
        method=method,
        world_size=config.fsdp or 1,
        kv_cache_bytes=raw.kv_cache_bytes,
        prefill_peak_bytes=None if config.is_train else summary["phase_peaks"].get("prefill", 0),
        decode_peak_bytes=None if config.is_train else summary["phase_peaks"].get("decode", 0),
        notes=([length_note] if length_note else []) + ([head_note(spec)] if config.is_train else []) + list(raw.notes),
        architecture=spec.architecture,
        task=spec.task,
    )
    result.trace_seconds = time.perf_counter() - start
    return result


__all__ = ["fake_cuda_works", "resolve_device", "run_raw", "trace"]
