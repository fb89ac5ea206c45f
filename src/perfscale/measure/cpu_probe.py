"""Time single operations on this CPU, to calibrate the planner (estimate/calibration.py).

Each signature of estimate/cpu_step.py names an operation and its shape; the size is the dimension
its time scales with (tokens for linears and the loss, batch for attention, parameters for the
optimizer). A probe builds random tensors of that shape, runs the operation twice to warm up, then
times single calls until `min_time` has passed (at least 5 calls) and keeps the median call.
Probes run in this process at the thread count of the calibration's fingerprint.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable, Iterable

from perfscale.errors import InvalidConfigError, UnsupportedModelError
from perfscale.estimate.calibration import Calibration, load_calibration

_BANDWIDTH_ELEMENTS = 8 * 1024 * 1024  # 32 MiB per fp32 operand: past the caches of a server CPU
# The parameter count is split over this many matrices of _OPTIMIZER_COLUMNS columns (a small model's
# count; matrices, so that Adafactor factors its second moment as it does for weights).
_OPTIMIZER_TENSORS = 32
_OPTIMIZER_COLUMNS = 256


def _optimizer_rows(params: int) -> int:
    return max(1, params // (_OPTIMIZER_TENSORS * _OPTIMIZER_COLUMNS))


def fingerprint(threads: int | None = None) -> dict:
    """What makes operation times comparable: the CPU, the thread count and the torch build."""
    import torch

    from perfscale.specs.detect import detect_cpu

    cpu = detect_cpu()
    return {"cpu": cpu.model or platform.processor(), "logical_cores": cpu.logical_cores,
            "threads": threads or torch.get_num_threads(), "torch": torch.__version__}


def _dtype(name: str):
    from perfscale.config.precision import torch_dtype

    return torch_dtype(name)


def _linear(kind: str, shape: str, tokens: int) -> Callable[[], object]:
    import torch

    dims, dtype = shape.split(":")
    fan_in, fan_out = (int(v) for v in dims.split(","))
    dt = _dtype(dtype)
    weight = torch.randn(fan_out, fan_in, dtype=dt)
    x = torch.randn(tokens, fan_in, dtype=dt)
    grad = torch.randn(tokens, fan_out, dtype=dt)
    if kind == "linear_fwd":
        return lambda: torch.mm(x, weight.t())
    if kind == "linear_dgrad":
        return lambda: torch.mm(grad, weight)
    return lambda: torch.mm(grad.t(), x)


def _forward_or_both(kind: str, forward: Callable[[], object], leaves: list, grad) -> Callable[[], object]:
    """"..._fwd": `forward` alone (no graph); "..._fwdbwd": forward and backward into `leaves`."""
    import torch

    if kind.endswith("_fwd"):
        def run_forward():
            with torch.no_grad():
                return forward()
        return run_forward

    def forward_backward():
        for leaf in leaves:
            leaf.grad = None
        forward().backward(grad)

    return forward_backward


def _attention(kind: str, shape: str, batch: int) -> Callable[[], object]:
    import torch
    import torch.nn.functional as F

    dims, dtype = shape.split(":")
    heads, _kv_heads, seq, head_dim, *dropout = dims.split(",")
    heads, seq, head_dim = int(heads), int(seq), int(head_dim)
    p = float(dropout[0]) if dropout else 0.0  # attention dropout: CPU SDPA then runs its math kernel
    dt = _dtype(dtype)
    q = torch.randn(batch, heads, seq, head_dim, dtype=dt, requires_grad=True)
    # transformers repeats k/v to all heads (repeat_kv) before the kernel
    k = torch.randn(batch, heads, seq, head_dim, dtype=dt, requires_grad=True)
    v = torch.randn(batch, heads, seq, head_dim, dtype=dt, requires_grad=True)
    grad = torch.randn(batch, heads, seq, head_dim, dtype=dt)
    mask = torch.full((seq, seq), float("-inf")).triu(1)
    scale = head_dim ** -0.5

    def forward():
        if kind.startswith("sdpa"):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p)
        scores = torch.matmul(q, k.transpose(2, 3)) * scale + mask
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(dt)
        return torch.matmul(F.dropout(probs, p, training=True), v)

    return _forward_or_both(kind, forward, [q, k, v], grad)


def _dropout(kind: str, dtype: str, elements: int) -> Callable[[], object]:
    """F.dropout in training over `elements` values: the random mask and the scaling multiply, and
    with "_fwdbwd" the backward multiply too (the time does not depend on the probability)."""
    import torch
    import torch.nn.functional as F

    x = torch.randn(elements, dtype=_dtype(dtype), requires_grad=True)
    return _forward_or_both(kind, lambda: F.dropout(x, 0.1, training=True), [x], torch.randn_like(x))


def _cross_entropy(shape: str, tokens: int) -> Callable[[], object]:
    import torch
    import torch.nn.functional as F

    vocab = int(shape.split(":")[0])
    logits = torch.randn(tokens, vocab, requires_grad=True)
    labels = torch.randint(0, vocab, (tokens,))

    def run():
        logits.grad = None
        F.cross_entropy(logits, labels).backward()

    return run


def _optimizer(shape: str, params: int) -> Callable[[], object]:
    import torch

    from perfscale.measure.scenarios.train import build_optimizer

    name, dtype = shape.split(":")
    dt = _dtype(dtype)
    rows = _optimizer_rows(params)
    tensors = [torch.nn.Parameter(torch.randn(rows, _OPTIMIZER_COLUMNS, dtype=dt)) for _ in range(_OPTIMIZER_TENSORS)]
    for t in tensors:
        t.grad = torch.randn_like(t)
    opt = build_optimizer(name, tensors, "cpu")
    return opt.step


def _count_calls(call: Callable[[], object]) -> int:
    """Aten operations `call` dispatches (TorchDispatchMode sees each one once, below autograd)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Counter(TorchDispatchMode):
        calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.calls += 1
            return func(*args, **(kwargs or {}))

    counter = Counter()
    with counter:
        call()
    return counter.calls


def count_dispatches(spec, run_config, num_layers: int) -> int:
    """Aten calls in one optimizer step of `spec` cut to `num_layers` layers, under the run's
    precision, attention, checkpointing, LoRA and optimizer (the second step: the first creates
    optimizer state). Real tensors, uninitialised weights, one sequence of at most 16 tokens:
    the count does not depend on the sizes, only on the program."""
    from perfscale.measure.scenarios.train import build_optimizer
    from perfscale.trace.build import build_meta
    from perfscale.trace.train_step import autocast_context, loss_of, make_inputs

    model = build_meta(spec, run_config, num_layers).to_empty(device="cpu")
    optimizer = build_optimizer(run_config.optimizer, [p for p in model.parameters() if p.requires_grad], "cpu")
    inputs = make_inputs(model, spec, 1, min(run_config.workload.seq, 16), "cpu")

    def step() -> None:
        with autocast_context(run_config, "cpu"):
            loss = loss_of(model, inputs)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    return _count_calls(step)


def measure_dispatch_seconds(min_time: float) -> float:
    """Framework time per dispatched aten call: a chain of tiny autograd operations, forward and
    backward, whose kernels do next to nothing."""
    import torch

    x = torch.randn(64, requires_grad=True)

    def chain() -> None:
        y = x
        for _ in range(100):
            y = y * 1.0001 + 0.5
        x.grad = None
        y.sum().backward()

    return time_call(chain, min_time) / _count_calls(chain)


def dispatch_time(signature: str, layers: int, spec, calibration: Calibration, min_time: float) -> float:
    """Framework seconds of one step of `spec` at `layers` layers: aten calls (counted at 1 and 2
    layers, extrapolated in layers) x the per-call time (probed once per calibration)."""
    from perfscale.config.run_config import RunConfig
    from perfscale.specs.workload import TrainWorkload

    _, program, knobs, seq = signature.split(":")
    if spec is None or program.split(",")[0] != spec.model_type:
        raise InvalidConfigError(f"operation {signature!r} counts a model's own program: pass the model spec to probe() "
                                 f"(got {getattr(spec, 'name', None)!r})")
    precision, attn, ckpt, optimizer, lora_r, targets = knobs.split(",")
    run = RunConfig(TrainWorkload(batch=1, seq=int(seq)), precision=precision, attn=attn, checkpointing=ckpt == "1",
                    optimizer=optimizer, lora_r=int(lora_r) or None,
                    lora_targets=tuple(t for t in targets.split("+") if t) if int(lora_r) else ())
    one, two = (count_dispatches(spec, run, n) for n in (1, 2))
    if not calibration.has("dispatch_unit", 1):
        calibration.add("dispatch_unit", 1, measure_dispatch_seconds(min_time))
    return (one + (layers - 1) * (two - one)) * calibration.seconds("dispatch_unit", 1)


def build(signature: str, size: int) -> tuple[Callable[[], object], float]:
    """(the operation as a zero-argument call, the size it actually runs at)."""
    kind, _, shape = signature.partition(":")
    if kind in ("linear_fwd", "linear_dgrad", "linear_wgrad"):
        return _linear(kind, shape, size), size
    if kind in ("sdpa_fwd", "sdpa_fwdbwd", "eager_attn_fwd", "eager_attn_fwdbwd"):
        return _attention(kind, shape, size), size
    if kind in ("dropout_fwd", "dropout_fwdbwd"):
        return _dropout(kind, shape, size), size
    if kind == "cross_entropy":
        return _cross_entropy(shape, size), size
    if kind == "optimizer":
        return _optimizer(shape, size), _optimizer_rows(size) * _OPTIMIZER_COLUMNS * _OPTIMIZER_TENSORS
    raise InvalidConfigError(f"unknown operation signature {signature!r}: expected one of linear_fwd, linear_dgrad, "
                             "linear_wgrad, sdpa_fwd, sdpa_fwdbwd, eager_attn_fwd, eager_attn_fwdbwd, dropout_fwd, dropout_fwdbwd, "
                             "cross_entropy, optimizer")


def time_call(call: Callable[[], object], min_time: float, min_calls: int = 5) -> float:
    """Median seconds of one call, after two warm-up calls."""
    for _ in range(2):
        call()
    samples: list[float] = []
    started = time.perf_counter()
    while len(samples) < min_calls or time.perf_counter() - started < min_time:
        t0 = time.perf_counter()
        call()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def measure_bandwidth(min_time: float) -> float:
    """Elementwise memory traffic in bytes/s: c = a + b over 32 MiB fp32 operands (2 reads, 1 write)."""
    import torch

    a, b, c = (torch.rand(_BANDWIDTH_ELEMENTS) for _ in range(3))
    seconds = time_call(lambda: torch.add(a, b, out=c), min_time)
    return 3 * 4 * _BANDWIDTH_ELEMENTS / seconds


def probe(needed: Iterable[tuple[str, int]], calibration: Calibration | None = None, min_time: float = 0.2,
          progress: Callable[[str], None] | None = None, spec=None) -> Calibration:
    """Measure every (signature, size) the calibration lacks (and the bandwidth once); returns it.

    `spec`: the model whose program `dispatch:` operations count. The caller saves the result
    (Calibration.save) so a later plan on this machine reuses the probes."""
    import torch

    needed = list(needed)
    if spec is None and any(sig.startswith("dispatch:") for sig, _ in needed):
        raise InvalidConfigError("dispatch: operations count a model's own program: pass the model spec to probe(spec=...)")
    calibration = calibration or Calibration(fingerprint=fingerprint())
    threads = calibration.fingerprint.get("threads")
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        with torch.inference_mode(False):
            if calibration.bandwidth is None:
                calibration.bandwidth = measure_bandwidth(min_time)
            for signature, size in needed:
                if calibration.has(signature, size):
                    continue
                if progress:
                    progress(f"{signature} @ {size}")
                try:
                    if signature.startswith("dispatch:"):
                        calibration.add(signature, size, dispatch_time(signature, size, spec, calibration, min_time))
                        continue
                    call, actual = build(signature, size)
                    seconds = time_call(call, min_time)
                except (UnsupportedModelError, InvalidConfigError, RuntimeError) as exc:
                    # e.g. a family without SDPA: configurations needing it keep the efficiency model
                    if progress:
                        progress(f"not timed: {signature} ({str(exc).splitlines()[0][:160]})")
                    continue
                calibration.add(signature, size, seconds * size / actual)
    finally:
        torch.set_num_threads(previous)
    return calibration


def local_calibration(threads: int | None = None) -> Calibration:
    """This machine's stored calibration at `threads` (default: torch's), or an empty one."""
    return load_calibration(fingerprint(threads))
