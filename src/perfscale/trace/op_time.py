"""Step time on a GPU from the operations: every aten op of the real model code, timed by a roofline.

The model runs on fake tensors (no GPU, any size) under a dispatch mode that records each aten op with
its shapes and dtypes. Each op gets a time on the named device:

  GEMM (mm, addmm, bmm, baddbmm)  max(2MNK / (peak[dtype] x eff(gpu, dtype, MNK) x wave(M, N)), bytes / BW)
      eff: the cited table of specs/gemm_efficiency.py (published maximum-achievable-matmul plateaus per
      generation and dtype, times K / (K + half_k): each output tile's prologue/epilogue over its K loop);
      peak[dtype]: the device's dense peak for the inputs' dtype (fp32 matmuls run in fp32: PyTorch's
      default allow_tf32=False for matmul); wave(M, N): wave quantization, tiles of 128 x 128 over the
      device's SMs, tiles / (ceil(tiles / SMs) x SMs) (NVIDIA, "Matrix Multiplication Background User's
      Guide", DU-09799-001, sections 2.3 and 3.2: small or odd-shaped GEMMs leave SMs idle); bytes / BW:
      a skinny GEMM is bound by reading its operands (same guide, section 2, arithmetic intensity).
  attention (SDPA kernels)        4 b h s_q s_k d FLOPs forward, 2.5x that backward (FlashAttention-2:
      the backward runs 5 of the forward's 2 matmul-equivalents; Dao 2023, section 3), at
      ATTENTION_EFFICIENCY of peak (FlashAttention-2 reaches 50-73% of A100 peak, ibid. abstract).
  everything else                 bytes read + written / (BW x BANDWIDTH_EFFICIENCY): norms, softmax,
      GELU, dropout, casts, the loss, the optimizer's fused or foreach kernels.
  every kernel                    + LAUNCH_SECONDS (views and other metadata ops launch nothing).

The step is max(sum of the GPU times, ops x DISPATCH_SECONDS): eager PyTorch queues kernels from Python
asynchronously, so a small step is bound by the host's per-op dispatch, a large one by the GPU.
Communication and the pipeline bubble are not in here (estimate/time.py adds them for a layout).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from perfscale.config.run_config import RunConfig
from perfscale.errors import InvalidConfigError
from perfscale.specs.gemm_efficiency import gemm_efficiency
from perfscale.specs.model import ModelSpec

# GEMM efficiency: specs/gemm_efficiency.py (a cited table by generation, dtype and size; was one 0.8).
ATTENTION_EFFICIENCY = 0.6  # FlashAttention-2 forward/backward, the middle of its 50-73% of peak
BANDWIDTH_EFFICIENCY = 0.8  # elementwise kernels: achieved / peak HBM bandwidth
# Per-kernel GPU launch gap (back-to-back kernel issue on the device, a few microseconds).
LAUNCH_SECONDS = 3e-6
# Host-side cost of one eager aten op (Python module code, dispatcher, kernel launch): fitted on one
# published point, AITemplate's PyTorch 1.12 eager BERT-base baseline on A100-40GB at batch 1 x 64 tokens
# (7.96 ms for the 165 ops recorded here; benchmarks/op_time_vs_published.py, LOG 2026-12-02).
DISPATCH_SECONDS = 48e-6
# Streaming multiprocessors per device family (NVIDIA datasheets: A100 108, H100/H200 SXM 132, V100 80,
# A10 72, L4 58, T4 40), matched on the hardware name; unknown devices get no wave quantization.
SMS = {"A100": 108, "H100": 132, "H200": 132, "V100": 80, "A10": 72, "L4": 58, "T4": 40}
TILE = 128
# Tensors per launch of a multi-tensor (foreach / fused optimizer) kernel: torch's multi_tensor_apply
# chunks its tensor lists (aten/src/ATen/native/cuda/MultiTensorApply.cuh depth-dependent limits, ~24-110).
TENSORS_PER_LAUNCH = 48

_GEMMS = ("aten.mm", "aten.addmm", "aten.bmm", "aten.baddbmm")
_FREE = ("aten.empty", "aten.empty_like", "aten.empty_strided", "aten.new_empty", "aten.new_empty_strided",
         "aten.lift_fresh", "aten._local_scalar_dense", "aten.sym_size", "aten.sym_stride", "aten.sym_numel",
         "aten.is_same_size", "aten.set_", "aten.resize_")


@dataclass
class OpRecord:
    """One aten op as the GPU would run it: its kind, FLOPs, bytes moved and kernel launches."""

    name: str
    kind: str  # gemm | attention | memory
    phase: str  # forward | backward | optimizer
    flops: float
    bytes: float
    launches: int
    mnk: tuple[int, int, int] | None = None
    dtype: str = "fp32"


@dataclass
class OpTimeResult:
    """Per-step time of the traced program on one device, by phase and by kind of op."""

    model: str
    hardware: str
    config: dict[str, Any]
    step_seconds: float
    gpu_seconds: float
    dispatch_seconds: float
    bound: str  # gpu | dispatch
    phase_seconds: dict[str, float]
    kind_seconds: dict[str, float]
    ops: int
    launches: int
    flops: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "hardware": self.hardware, "config": self.config, "step_seconds": self.step_seconds,
            "gpu_seconds": self.gpu_seconds, "dispatch_seconds": self.dispatch_seconds, "bound": self.bound,
            "phase_seconds": dict(self.phase_seconds), "kind_seconds": dict(self.kind_seconds), "ops": self.ops,
            "launches": self.launches, "flops": self.flops, "notes": list(self.notes),
        }


def _dtype_key(dtype: Any) -> str:
    import torch

    return {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, "fp32")


def _tensors(tree: Any) -> list:
    import torch
    from torch.utils._pytree import tree_leaves

    return [t for t in tree_leaves(tree) if isinstance(t, torch.Tensor)]


def _nbytes(tensors: list) -> int:
    seen, total = set(), 0
    for t in tensors:
        key = (id(t),)
        if key in seen:
            continue
        seen.add(key)
        total += t.numel() * t.element_size()
    return total


class _Recorder:
    """TorchDispatchMode that appends an OpRecord per aten op (below autograd: forward and backward ops)."""

    def __new__(cls, records: list, phase: list):
        from torch.utils._python_dispatch import TorchDispatchMode

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                out = func(*args, **kwargs)
                packet = str(func.overloadpacket)
                if not packet.startswith("aten.") or func.is_view or packet in _FREE or packet.startswith("aten.sym_"):
                    return out
                ins, outs = _tensors((args, kwargs)), _tensors(out)
                name = packet
                if packet in _GEMMS:
                    a = args[1] if packet in ("aten.addmm", "aten.baddbmm") else args[0]
                    b = args[2] if packet in ("aten.addmm", "aten.baddbmm") else args[1]
                    batch = a.shape[0] if a.dim() == 3 else 1
                    m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
                    flops = 2.0 * batch * m * n * k
                    records.append(OpRecord(name, "gemm", phase[0], flops, _nbytes(ins + outs), 1, (m * batch, n, k),
                                            _dtype_key(a.dtype)))
                elif "scaled_dot_product" in packet or "flash_attention" in packet or "efficient_attention" in packet:
                    q, k_ = ins[0], ins[1]
                    if "backward" in packet:
                        q, k_ = ins[1], ins[2]  # grad_out first
                    b, h, sq, d = q.shape
                    sk = k_.shape[-2]
                    fwd = 4.0 * b * h * sq * sk * d
                    flops = 2.5 * fwd if "backward" in packet else fwd
                    records.append(OpRecord(name, "attention", phase[0], flops, _nbytes(ins + outs), 1, None, _dtype_key(q.dtype)))
                else:
                    launches = 1
                    if packet.startswith(("aten._foreach", "aten._fused")):
                        lists = [a for a in args if isinstance(a, (list, tuple)) and a]
                        launches = max(1, math.ceil(max((len(x) for x in lists), default=1) / TENSORS_PER_LAUNCH))
                    records.append(OpRecord(name, "memory", phase[0], 0.0, _nbytes(ins + outs), launches))
                return out

        return _Mode()


class _SdpaObserver:
    """TorchFunctionMode that records each F.scaled_dot_product_attention as the CUDA kernel it runs
    (forward, and its backward when autograd will run one): the CUDA emulation stands in for the kernel
    with allocations only, so no aten op shows its FLOPs. The math fallback runs real ops: not recorded here."""

    def __new__(cls, records: list, phase: list):
        import torch
        import torch.nn.functional as F
        from torch.overrides import TorchFunctionMode

        from perfscale.trace.cuda_emulation import sdpa_kernel

        class _Mode(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                if func is F.scaled_dot_product_attention and phase[0] is not None:
                    q, k, v = args[:3]
                    mask = kwargs.get("attn_mask", args[3] if len(args) > 3 else None)
                    dropout = kwargs.get("dropout_p", args[4] if len(args) > 4 else 0.0)
                    if sdpa_kernel(q, k, v, mask, dropout) != "math":
                        b, h, sq, d = q.shape
                        fwd = 4.0 * b * h * sq * k.shape[-2] * d
                        low = torch.is_autocast_enabled("cpu") and q.dtype == torch.float32
                        dtype = _dtype_key(torch.get_autocast_dtype("cpu") if low else q.dtype)
                        width = 2 if dtype != "fp32" else 4
                        nbytes = (2 * q.numel() + k.numel() + v.numel()) * width
                        records.append(OpRecord("sdpa (CUDA kernel)", "attention", phase[0], fwd, nbytes, 1, None, dtype))
                        if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
                            records.append(OpRecord("sdpa backward (CUDA kernel)", "attention", "backward", 2.5 * fwd,
                                                    2 * nbytes, 1, None, dtype))
                return func(*args, **kwargs)

        return _Mode()


def record_ops(spec: ModelSpec, config: RunConfig) -> list[OpRecord]:
    """The aten ops of one training step (forward, backward, optimizer step with its state) or one
    forward (inference: the prompt, no cache) of the CUDA program: fake CPU tensors under the CUDA
    emulation (autocast op lists, fused dropout, SDPA kernels; trace/cuda_emulation.py), the CUDA optimizer."""
    import torch

    from perfscale.config.optimizer import build_optimizer
    from perfscale.trace.build import build_fake, fake_mode_for, new_fake_mode, real_data_branches
    from perfscale.trace.cuda_emulation import CudaAutocast
    from perfscale.trace.train_step import autocast_context, check_train_config, loss_of, make_inputs

    records: list[OpRecord] = []
    phase: list = ["forward" if not config.is_train else None]  # None: not recording (the first step)
    fake_mode = new_fake_mode()
    train = config.is_train
    if train:
        check_train_config(config)
    model = build_fake(spec, config, fake_mode, "cpu")
    wl = config.workload
    seq = wl.seq if train else wl.prompt
    with fake_mode_for(fake_mode, "cpu"), real_data_branches(), CudaAutocast(), _SdpaObserver(records, phase):
        inputs = make_inputs(model, spec, wl.batch, seq, "cpu")
        if not train:
            with torch.no_grad(), autocast_context(config, "cpu"), _Recorder(records, phase):
                model(input_ids=inputs["input_ids"])
            return records
        opt = build_optimizer(config.optimizer, [p for p in model.parameters() if p.requires_grad], "cuda")
        for step in range(2):  # the first creates the optimizer state; record the second
            if step:
                phase[0] = "forward"
                mode = _Recorder(records, phase)
                mode.__enter__()
            try:
                with autocast_context(config, "cpu"):
                    loss = loss_of(model, inputs)
                phase[0] = "backward" if step else None
                loss.backward()
                phase[0] = "optimizer" if step else None
                opt.step()
                opt.zero_grad(set_to_none=True)
            finally:
                if step:
                    mode.__exit__(None, None, None)
    return records


def _sms(hardware) -> int | None:
    name = hardware.name.upper()
    for prefix, count in SMS.items():
        if name.startswith(prefix):
            return count
    return None


def op_seconds(op: OpRecord, hardware) -> float:
    """GPU time of one op on `hardware` (roofline + launch gap)."""
    bw = (hardware.memory_bandwidth.value or 1e12) * BANDWIDTH_EFFICIENCY
    memory_time = op.bytes / bw
    if op.kind == "memory":
        return memory_time + op.launches * LAUNCH_SECONDS
    peak = hardware.peak(op.dtype) or hardware.peak("fp32") or 1e12
    if op.kind == "attention":
        return max(op.flops / (peak * ATTENTION_EFFICIENCY), memory_time) + LAUNCH_SECONDS
    m, n, k = op.mnk
    eff = gemm_efficiency(hardware.name, op.dtype, m, n, k)
    wave = 1.0
    sms = _sms(hardware)
    if sms:
        tiles = math.ceil(m / TILE) * math.ceil(n / TILE)
        wave = tiles / (math.ceil(tiles / sms) * sms)
    return max(op.flops / (peak * eff * wave), memory_time) + LAUNCH_SECONDS


def op_time(model: str | ModelSpec, config: RunConfig, hardware) -> OpTimeResult:
    """Step time of `config` on one `hardware` device (a Hardware or a catalogue name) from its ops."""
    from perfscale.specs import get_hardware, load_model_spec

    spec = model if isinstance(model, ModelSpec) else load_model_spec(model)
    hw = get_hardware(hardware) if isinstance(hardware, str) else hardware
    if hw.kind != "gpu":
        raise InvalidConfigError(f"op-level time models GPUs; {hw.name} is a {hw.kind}: use `perfscale plan` "
                                 "(with --calibrate on this CPU).")
    for name, value in (("tp", config.tp), ("pp", config.pp)):
        if value != 1:
            raise InvalidConfigError(f"{name}={value}: the op-level time covers one device; use `perfscale plan` for layouts.")
    records = record_ops(spec, config)
    phases: dict[str, float] = {}
    kinds: dict[str, float] = {}
    gpu = 0.0
    for op in records:
        t = op_seconds(op, hw)
        gpu += t
        phases[op.phase] = phases.get(op.phase, 0.0) + t
        kinds[op.kind] = kinds.get(op.kind, 0.0) + t
    dispatch = len(records) * DISPATCH_SECONDS
    notes = [] if config.is_train else ["inference: one forward over the prompt (no cache, no decode)"]
    return OpTimeResult(
        model=spec.name, hardware=hw.name, config=config.to_dict(), step_seconds=max(gpu, dispatch), gpu_seconds=gpu,
        dispatch_seconds=dispatch, bound="gpu" if gpu >= dispatch else "dispatch", phase_seconds=phases,
        kind_seconds=kinds, ops=len(records), launches=sum(op.launches for op in records),
        flops=sum(op.flops for op in records), notes=notes,
    )


__all__ = ["OpRecord", "OpTimeResult", "op_seconds", "op_time", "record_ops"]
