"""The CPU emulation of the CUDA program, checked against the documented CUDA behaviour."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from perfscale.config import RunConfig
from perfscale.specs import TrainWorkload, spec_from_config
from perfscale.trace import trace
from perfscale.trace.api import fake_cuda_works, resolve_device
from perfscale.trace.cuda_emulation import CudaAutocast, cuda_sdpa, round_block, sdpa_kernel
from tiny_configs import tiny_config


def _under_cuda_autocast(fn):
    with torch.autocast("cpu", dtype=torch.bfloat16), CudaAutocast(sdpa=False):
        return fn()


def test_cuda_autocast_lists():
    x = torch.randn(4, 8, dtype=torch.bfloat16)
    w = torch.randn(8, 8)
    # CUDA autocast "to float32" ops (torch amp docs): outputs fp32 from 16-bit inputs.
    assert _under_cuda_autocast(lambda: F.softmax(x, -1)).dtype == torch.float32
    assert _under_cuda_autocast(lambda: F.layer_norm(x, (8,))).dtype == torch.float32
    assert _under_cuda_autocast(lambda: torch.pow(x, 3.0)).dtype == torch.float32
    assert _under_cuda_autocast(lambda: x.sum()).dtype == torch.float32
    # "to float16/bfloat16" ops: matmuls, also einsum (not on the CPU list).
    assert _under_cuda_autocast(lambda: F.linear(w, w)).dtype == torch.bfloat16
    assert _under_cuda_autocast(lambda: torch.einsum("ij,jk->ik", w, w)).dtype == torch.bfloat16
    # Without the emulation CPU autocast keeps these in the input dtype: the difference is real.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert F.softmax(x, -1).dtype == torch.bfloat16
        assert torch.pow(x, 3.0).dtype == torch.bfloat16


def test_sdpa_kernel_choice_follows_cuda_rules():
    q16 = torch.empty(1, 2, 8, 64, dtype=torch.bfloat16)
    q32 = torch.empty(1, 2, 8, 64)
    mask = torch.ones(8, 8, dtype=torch.bool)
    assert sdpa_kernel(q16, q16, q16, None, 0.0) == "flash"
    assert sdpa_kernel(q16, q16, q16, mask, 0.0) == "efficient"
    assert sdpa_kernel(q32, q32, q32, None, 0.0) == "efficient"
    assert sdpa_kernel(torch.empty(1, 2, 8, 300, dtype=torch.bfloat16), *[None] * 2, None, 0.0) == "math"


def test_cuda_sdpa_allocates_like_the_kernel():
    q = torch.randn(2, 4, 40, 16, dtype=torch.bfloat16, requires_grad=True)
    out = cuda_sdpa(q, q, q, is_causal=True)
    assert out.shape == q.shape and out.dtype == q.dtype
    lse = [t for t in out.grad_fn.saved_tensors if t.dtype == torch.float32]
    assert lse and lse[0].shape == (2, 4, 40)  # flash: softmax_lse (B, H, S) fp32
    out.sum().backward()
    assert q.grad.shape == q.shape
    q32 = torch.randn(2, 4, 40, 16, requires_grad=True)
    lse32 = [t for t in cuda_sdpa(q32, q32, q32).grad_fn.saved_tensors if t.shape[-1] != 16]
    assert lse32[0].shape == (2, 4, 64)  # efficient: logsumexp padded to 32


def test_emulated_trace_is_512_byte_rounded_and_overheads_are_separate():
    spec = spec_from_config(tiny_config("llama"), "tiny-llama")
    config = RunConfig(TrainWorkload(2, 32, 1), precision="bf16-mixed")
    cuda = trace(spec, config, device="cuda", emulate_cuda=True)
    cpu = trace(spec, config, device="cpu")
    assert cuda.traced_on == "fake-cpu emulating cuda" and cuda.device == "cuda"
    assert cuda.peak_bytes % 512 == 0 and all(v % 512 == 0 for v in cuda.breakdown.values())
    assert cpu.peak_bytes % 512 != 0  # the CPU program has no block rounding
    assert sum(cuda.breakdown.values()) == cuda.peak_bytes
    assert set(cuda.device_overheads) >= {"cuda_context", "cublas_workspace"}
    assert all(v["source"] for v in cuda.device_overheads.values())
    assert cpu.device_overheads == {}
    assert round_block(1) == 512 and round_block(513) == 1024


def test_gpt2_gelu_pow_keeps_fp32_activations_on_cuda_only():
    # gelu_new computes torch.pow(x, 3.0): fp32 under CUDA autocast, 16-bit under CPU autocast.
    spec = spec_from_config(tiny_config("gpt2"), "tiny-gpt2")
    config = RunConfig(TrainWorkload(2, 64, 1), precision="bf16-mixed", attn="eager", optimizer="sgd")
    cuda = trace(spec, config, device="cuda", emulate_cuda=True)
    cpu = trace(spec, config, device="cpu")
    assert cuda.phase_peaks["forward"] > cpu.phase_peaks["forward"] * 1.05


def test_device_resolution_on_this_torch():
    if torch.cuda.is_available():
        pytest.skip("CUDA torch: fake CUDA is probed in a subprocess there")
    assert fake_cuda_works() is False
    assert resolve_device(None, None) == ("cuda", "cpu", True)
    assert resolve_device("cpu", None) == ("cpu", "cpu", False)
