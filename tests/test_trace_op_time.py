"""Op-level GPU step time (issue 14 item 5, first part): the recorded ops of a traced step and their roofline times."""

from __future__ import annotations

import pytest

from perfscale.config import RunConfig
from perfscale.errors import InvalidConfigError
from perfscale.specs import TrainWorkload, get_hardware, spec_from_config
from perfscale.specs.gemm_efficiency import gemm_efficiency
from perfscale.trace import op_time as ot
from tiny_configs import tiny_config

SPEC = spec_from_config(tiny_config("llama", hidden_size=256, intermediate_size=512, vocab_size=2048), "llama-ops")
H100 = get_hardware("H100-80GB")


def test_recorded_flops_are_the_step_and_phases_add_up():
    """GEMM FLOPs of a step = 6 x (matmul weights incl. the head) x tokens, attention 3.5 x 4 b h s^2 d per layer
    (forward + 2.5x backward); the phases and kinds sum to the GPU time; this tiny step is dispatch-bound."""
    b, s = 4, 128
    r = ot.op_time(SPEC, RunConfig(TrainWorkload(b, s), precision="bf16-mixed"), H100)
    p = SPEC.params
    matmul = p.attention + p.mlp + (p.lm_head or p.embeddings)
    attention = 2 * 3.5 * 4 * b * SPEC.num_heads * s * s * SPEC.head_dim
    assert abs(r.flops - (6 * matmul * b * s + attention)) <= 0.01 * r.flops
    assert abs(sum(r.phase_seconds.values()) - r.gpu_seconds) <= 1e-12 and abs(sum(r.kind_seconds.values()) - r.gpu_seconds) <= 1e-12
    assert set(r.phase_seconds) == {"forward", "backward", "optimizer"} and r.bound == "dispatch"
    assert r.step_seconds == r.ops * ot.DISPATCH_SECONDS


def test_roofline_terms():
    big = ot.OpRecord("aten.mm", "gemm", "forward", 2.0 * 8192**3, 3 * 8192**2 * 2, 1, (8192, 8192, 8192), "bf16")
    t = ot.op_seconds(big, H100)
    # 64 x 64 tiles on 132 SMs: 32 waves, the last 97% full
    wave = 4096 / (32 * 132)
    eff = gemm_efficiency(H100.name, "bf16", 8192, 8192, 8192)
    assert t == pytest.approx(big.flops / (H100.peak("bf16") * eff * wave) + ot.LAUNCH_SECONDS, rel=1e-9)
    # one 128 x 128 tile on 132 SMs: wave quantization leaves the device 1/132 busy, unless reading the operands binds
    tiny = ot.OpRecord("aten.mm", "gemm", "forward", 2.0 * 128 * 128 * 65536, 2 * (128 + 128) * 65536, 1, (128, 128, 65536), "bf16")
    assert ot.op_seconds(tiny, H100) > 100 * tiny.flops / (H100.peak("bf16") * eff)
    norm = ot.OpRecord("aten.native_layer_norm", "memory", "forward", 0.0, 1e9, 1)
    assert ot.op_seconds(norm, H100) == pytest.approx(1e9 / (H100.memory_bandwidth.value * ot.BANDWIDTH_EFFICIENCY) + ot.LAUNCH_SECONDS)


def test_only_one_gpu():
    with pytest.raises(InvalidConfigError, match="op-level time models GPUs"):
        ot.op_time(SPEC, RunConfig(TrainWorkload(1, 8)), get_hardware("cpu"))
    with pytest.raises(InvalidConfigError, match="tp=2"):
        ot.op_time(SPEC, RunConfig(TrainWorkload(1, 8), tp=2), H100)
