"""Make a fake-CPU trace mean the CUDA program's allocated bytes.

On a CPU-only torch build fake CUDA tensors cannot run a model (autograd on them aborts the
process), so we trace on fake CPU and correct every place where the CPU program allocates
differently from the CUDA one (docs/trace.md lists each difference and its size):

1. Caching-allocator rounding: every CUDA block is a multiple of 512 B
   (c10/cuda/CUDACachingAllocator.cpp kMinBlockSize); `torch.cuda.memory_allocated` counts the
   rounded size. MemTracker rounds only for `device.type == "cuda"`: `cuda_rounding()` rounds all.
2. Autocast op lists differ (https://pytorch.org/docs/stable/amp.html, "CUDA Ops that can
   autocast to float16" / "... to float32" vs the CPU lists): on CUDA softmax, log_softmax,
   layer_norm, pow, exp, sum, ... run in fp32 and einsum/mv/addmv/addr in 16 bit; on CPU they
   stay in the input dtype. GPT-2's gelu_new (`torch.pow(x, 3.0)`) therefore keeps fp32
   activations on CUDA only. `CudaAutocast` applies the CUDA policy at the torch-function level,
   above autograd, as autocast itself does.
3. SDPA kernels: CUDA runs FlashAttention-2 (16-bit, no mask, head_dim <= 256, multiple of 8) or
   the memory-efficient kernel (fp32 or with a mask) and each keeps a logsumexp for backward and
   allocates fp32 work buffers in backward; the CPU picks its own kernels. `CudaAutocast` replaces
   the call by a function that allocates what the CUDA kernel allocates (sizes below, from
   aten/src/ATen/native/transformers/cuda/flash_attn/flash_api.cpp mha_fwd/mha_bwd and
   mem_eff_attention/kernel_forward.h / kernel_backward.h).
4. Dropout: on CUDA `F.dropout` runs the fused `native_dropout`, which keeps a 1-byte bool mask
   for backward; on CPU it multiplies by a noise tensor of the input's dtype (4 bytes per element
   in fp32), which autograd keeps instead (aten/src/ATen/native/Dropout.cpp,
   is_fused_kernel_acceptable). `CudaAutocast` routes `F.dropout` to `native_dropout`.
5. Device overheads outside any tensor: CUDA context, cuBLAS/cuBLASLt workspaces; reported
   separately (`device_overheads`), never in the peak.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

MIN_BLOCK = 512  # bytes, CUDACachingAllocator kMinBlockSize

# CUDA autocast policies (torch docs "Autocast Op Reference", CUDA section), torch-function names.
_FP32_SET_DTYPE = ("softmax", "log_softmax", "cumsum", "cumprod", "prod", "sum")  # run with dtype=float32
_FP32_CAST = ("layer_norm", "group_norm", "exp", "expm1", "log", "log10", "log2", "log1p", "reciprocal",
              "rsqrt", "pow", "acos", "asin", "cosh", "sinh", "tan", "erfinv", "softplus", "logsumexp",
              "cosine_similarity", "dist", "cdist", "renorm")
_LOWER_CUDA_ONLY = ("einsum", "mv", "addmv", "addr", "chain_matmul")  # 16-bit on CUDA, not on CPU


def round_block(nbytes: int) -> int:
    return math.ceil(nbytes / MIN_BLOCK) * MIN_BLOCK


@contextlib.contextmanager
def cuda_rounding(enabled: bool):
    """Round every tracked storage to 512 B as the CUDA caching allocator does (scoped patch)."""
    from torch.distributed._tools import mem_tracker

    if not enabled:
        yield
        return
    original = mem_tracker._WeakRefInfo._calculate_mem_consumed

    def rounded(self) -> int:
        return round_block(self.size * self.element_size)

    mem_tracker._WeakRefInfo._calculate_mem_consumed = rounded
    try:
        yield
    finally:
        mem_tracker._WeakRefInfo._calculate_mem_consumed = original


def _policy_table() -> dict[Any, str]:
    import torch
    import torch.nn.functional as F

    table: dict[Any, str] = {}
    for name in _FP32_SET_DTYPE:
        for owner in (torch, torch.Tensor, F):
            if hasattr(owner, name):
                table[getattr(owner, name)] = "fp32_dtype"
    for name in _FP32_CAST:
        for owner in (torch, torch.Tensor, F):
            if hasattr(owner, name):
                table[getattr(owner, name)] = "fp32"
    table[torch.Tensor.__pow__] = "fp32"
    for name in _LOWER_CUDA_ONLY:
        for owner in (torch, torch.Tensor):
            if hasattr(owner, name):
                table[getattr(owner, name)] = "lower"
    table[F.scaled_dot_product_attention] = "sdpa"
    table[F.dropout] = "dropout"
    return table


def _is_low(t: Any) -> bool:
    import torch

    return isinstance(t, torch.Tensor) and t.dtype in (torch.float16, torch.bfloat16)


def _cast(args, kwargs, dtype, only):
    import torch
    from torch.utils._pytree import tree_map

    def f(t):
        if isinstance(t, torch.Tensor) and t.is_floating_point() and only(t) and t.dtype != dtype:
            return t.to(dtype)
        return t

    return tree_map(f, args), tree_map(f, kwargs)


class CudaAutocast:
    """TorchFunctionMode applying CUDA's autocast lists and SDPA kernels to a fake-CPU trace."""

    def __new__(cls, sdpa: bool = True):
        from torch.overrides import TorchFunctionMode

        table = _policy_table()

        class _Mode(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                import torch

                kwargs = kwargs or {}
                if func is torch.Tensor.backward:
                    return _backward_keeping(self, *args, **kwargs)
                policy = table.get(func)
                if policy == "sdpa" and sdpa:
                    return cuda_sdpa(*args, **kwargs)
                if policy == "dropout":
                    return cuda_dropout(*args, **kwargs)
                if policy is None or not torch.is_autocast_enabled("cpu"):
                    return func(*args, **kwargs)
                if policy == "fp32_dtype":
                    tensors = [a for a in args if isinstance(a, torch.Tensor)]
                    if tensors and _is_low(tensors[0]) and kwargs.get("dtype") is None:
                        kwargs = {**kwargs, "dtype": torch.float32}
                    return func(*args, **kwargs)
                if policy == "fp32":
                    args, kwargs = _cast(args, kwargs, torch.float32, _is_low)
                    return func(*args, **kwargs)
                if policy == "lower":
                    low = torch.get_autocast_dtype("cpu")
                    args, kwargs = _cast(args, kwargs, low, lambda t: t.dtype == torch.float32)
                    return func(*args, **kwargs)
                return func(*args, **kwargs)

        return _Mode()


def cuda_dropout(input, p=0.5, training=True, inplace=False):
    """F.dropout as CUDA runs it: the fused kernel with a bool mask (at::dropout's CUDA branch)."""
    import torch
    import torch.nn.functional as F

    if training and 0 < p < 1 and input.numel() > 0:
        out = torch.native_dropout(input, p, True)[0]
        return input.copy_(out) if inplace else out
    return F.dropout(input, p, training, inplace)


def _backward_keeping(mode, tensor, gradient=None, retain_graph=None, create_graph=False, inputs=None):
    """Tensor.backward with this mode still active, so that activation-checkpointing recomputation
    (which runs inside backward) sees the CUDA policy. A torch-function handler runs with its mode
    disabled, so we re-enter it and call the autograd engine directly (what torch.autograd.backward does)."""
    import torch
    from torch.autograd.graph import _engine_run_backward

    if gradient is None:
        gradient = torch.ones_like(tensor, memory_format=torch.preserve_format)
    with mode:
        _engine_run_backward((tensor,), (gradient,), bool(retain_graph) or create_graph, create_graph,
                             tuple(inputs) if inputs is not None else (), allow_unreachable=True, accumulate_grad=True)


def sdpa_kernel(q, k, v, attn_mask, dropout_p: float) -> str:
    """Which CUDA SDPA kernel runs (aten/src/ATen/native/transformers/cuda/sdp_utils.cpp, sm80+)."""
    import torch

    d = q.shape[-1]
    if attn_mask is None and q.dtype in (torch.float16, torch.bfloat16) and d <= 256 and d % 8 == 0:
        return "flash"
    if q.dtype in (torch.float16, torch.bfloat16, torch.float32) and d % (4 if q.dtype == torch.float32 else 8) == 0:
        return "efficient"
    return "math"


def cuda_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """F.scaled_dot_product_attention with the CUDA kernel's allocations."""
    import torch
    import torch.nn.functional as F

    if torch.is_autocast_enabled("cpu"):  # sdpa is on CUDA autocast's 16-bit list
        low = torch.get_autocast_dtype("cpu")
        query, key, value = (t.to(low) if t.dtype == torch.float32 else t for t in (query, key, value))
        if attn_mask is not None and attn_mask.is_floating_point() and attn_mask.dtype != low:
            attn_mask = attn_mask.to(low)
    kernel = sdpa_kernel(query, key, value, attn_mask, dropout_p)
    if kernel == "math":
        return F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p,
                                              is_causal=is_causal, scale=scale, enable_gqa=enable_gqa)
    with torch.autocast("cpu", enabled=False):
        return _sdpa_function().apply(query, key, value, attn_mask, kernel)


def _lse_len(kernel: str, s: int) -> int:
    # flash: softmax_lse (B, H, S_q); efficient: logsumexp padded to kAlignLSE = 32.
    return s if kernel == "flash" else math.ceil(s / 32) * 32


_SDPA_FN: list = []


def _sdpa_function():
    """The autograd.Function standing in for the CUDA kernel (built on first use: torch stays lazy)."""
    if _SDPA_FN:
        return _SDPA_FN[0]
    import torch as _torch

    class _CudaSDPA(_torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, k, v, mask, kernel):
            b, h, s, _ = q.shape
            out = _torch.empty(q.shape[:-1] + (v.shape[-1],), dtype=q.dtype, device=q.device)
            lse = _torch.empty((b, h, _lse_len(kernel, s)), dtype=_torch.float32, device=q.device)
            ctx.kernel = kernel
            ctx.has_mask = mask is not None
            ctx.save_for_backward(q, k, v, out, lse, *( [mask] if mask is not None else []))
            return out

        @staticmethod
        def backward(ctx, grad_out):
            q, k, v, out, lse = ctx.saved_tensors[:5]
            b, h, s, d = q.shape
            dev = q.device
            grad_out = grad_out.contiguous()
            if ctx.kernel == "flash":
                # mha_bwd: softmax_d (B, H, round128(S_q)) fp32 and dq_accum
                # (B, round128(S_q), H, round32(D) or 256) fp32; GQA: dk/dv expanded to H heads.
                s_r = math.ceil(s / 128) * 128
                d_r = math.ceil(d / 32) * 32 if d <= 192 else 256
                softmax_d = _torch.empty((b, h, s_r), dtype=_torch.float32, device=dev)
                dq_accum = _torch.empty((b, s_r, h, d_r), dtype=_torch.float32, device=dev)
                dq = _torch.empty_like(q)
                if k.shape[1] != h:
                    dk_exp = _torch.empty((b, h) + k.shape[2:], dtype=k.dtype, device=dev)
                    dv_exp = _torch.empty((b, h) + v.shape[2:], dtype=v.dtype, device=dev)
                    dk = _torch.empty_like(k)
                    dv = _torch.empty_like(v)
                    del dk_exp, dv_exp
                else:
                    dk, dv = _torch.empty_like(k), _torch.empty_like(v)
                del softmax_d, dq_accum
            else:
                # efficient backward: delta (B, H, S padded to 32) fp32, then dq, dk, dv.
                delta = _torch.empty((b, h, _lse_len("efficient", s)), dtype=_torch.float32, device=dev)
                dq, dk, dv = _torch.empty_like(q), _torch.empty_like(k), _torch.empty_like(v)
                del delta
            return dq, dk, dv, None, None

    _SDPA_FN.append(_CudaSDPA)
    return _CudaSDPA


# Device-side memory that no tensor holds (not in peak_bytes; reported beside it).
DEVICE_OVERHEADS = {
    "cuda_context": {
        "bytes": 500 * 2**20,
        "source": "typical CUDA 12 context with lazy module loading on A100/H100 (nvidia-smi minus torch.cuda.memory_reserved); "
                  "varies 300-700 MiB with driver, CUDA version and loaded kernels; not counted by torch.cuda.memory_allocated",
    },
    "cublas_workspace": {
        "bytes": 32 * 2**20,
        "source": "PyTorch CublasHandlePool.cpp default workspace on sm90 (CUBLAS_WORKSPACE_CONFIG :4096:8 = 32 MiB; "
                  "8 MiB + 128 KiB before Hopper); allocated through the caching allocator on the first matmul of a stream, "
                  "so torch.cuda.memory_allocated includes it once",
    },
    "cublaslt_workspace": {
        "bytes": 0,
        "source": "recent PyTorch shares the cuBLAS workspace with cuBLASLt (CUBLASLT_WORKSPACE_SIZE otherwise, default 1 MiB)",
    },
}


def device_overheads(device_kind: str) -> dict[str, Any]:
    if device_kind != "cuda":
        return {}
    return {k: dict(v) for k, v in DEVICE_OVERHEADS.items()}


__all__ = ["CudaAutocast", "cuda_dropout", "DEVICE_OVERHEADS", "MIN_BLOCK", "cuda_rounding", "cuda_sdpa", "device_overheads", "round_block", "sdpa_kernel"]
