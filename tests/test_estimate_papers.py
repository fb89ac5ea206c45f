"""The estimate engine reproduces published formulas exactly.

- Rajbhandari et al. 2020, "ZeRO: Memory Optimizations Toward Training Trillion Parameter Models",
  section 3.1 and Figure 1: mixed-precision Adam keeps 2 + 2 + K bytes per parameter with K = 12
  (fp32 master weights, momentum, variance); per device: stage 0 (2+2+K)Ψ, stage 1 (P_os)
  4Ψ + KΨ/Nd, stage 2 (P_os+g) 2Ψ + (2+K)Ψ/Nd, stage 3 (P_os+g+p) (2+2+K)Ψ/Nd. Their example:
  Ψ = 7.5B, Nd = 64: 120 GB, 31.4 GB, 16.6 GB, 1.9 GB.
- Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models",
  section 4 / Table 2, activation bytes per layer with 16-bit activations:
  no parallelism sbh(34 + 5as/h); tensor parallel t: sbh(10 + 24/t + 5as/(ht)); tensor + sequence
  parallel: sbh/t (34 + 5as/h); tensor + sequence parallel + selective recomputation: sbh (34/t).
"""

from __future__ import annotations

import dataclasses

import pytest

from perfscale.estimate import families
from perfscale.estimate.constants import model_constants, recipe_bytes, unit_sizes
from perfscale.estimate.knobs import Knobs
from perfscale.estimate.memory import layer_act_bytes, model_states, optimizer_bytes, regime
from perfscale.specs import spec_from_config
from tiny_configs import tiny_config

PSI, ND = 7.5e9, 64


def _zero_bytes(stage: int) -> float:
    k = Knobs(precision="bf16-mixed", optimizer="adamw", zero=max(stage, 1))
    pb, gb, stb, master, _key, label = regime(k)
    assert label == "deepspeed-mixed"
    mc = model_constants(spec_from_config(tiny_config("llama"), "tiny"))
    opt = optimizer_bytes(mc, "adamw", stb, PSI, lora=False) + master
    return sum(model_states(PSI, pb, gb, opt, stage, ND))


def test_zero_paper_bytes_per_parameter():
    k = Knobs(precision="bf16-mixed", optimizer="adamw", zero=1)
    pb, gb, stb, master, _key, _label = regime(k)
    mc = model_constants(spec_from_config(tiny_config("llama"), "tiny"))
    assert (pb, gb) == (2, 2)
    assert optimizer_bytes(mc, "adamw", stb, PSI, lora=False) + master == 12  # K = 12


@pytest.mark.parametrize("stage, formula, paper_gb", [
    (0, (2 + 2 + 12) * PSI, 120.0),
    (1, 4 * PSI + 12 * PSI / ND, 31.4),
    (2, 2 * PSI + 14 * PSI / ND, 16.6),
    (3, 16 * PSI / ND, 1.9),
])
def test_zero_paper_model_states(stage, formula, paper_gb):
    got = _zero_bytes(stage)
    assert got == pytest.approx(formula, rel=1e-12)
    assert round(got / 1e9, 1) == pytest.approx(paper_gb, abs=0.051)  # the paper's rounded GB


def _megatron_constants(h: int, a: int):
    mc = model_constants(spec_from_config(tiny_config("llama"), "tiny"))
    sizes = unit_sizes(h=h, q=h, kv=h, i=4 * h, heads=a)
    act = {("bf16", "sdpa"): recipe_bytes(families.MEGATRON_GPT, sizes, 2, 2)}
    return dataclasses.replace(mc, h=h, q=h, kv=h, i=4 * h, heads=a, act=act)


@pytest.mark.parametrize("s, b, h, a", [(2048, 1, 12288, 96), (2048, 4, 4096, 32), (4096, 2, 8192, 64)])
@pytest.mark.parametrize("t", [1, 2, 8])
def test_korthikanti_activation_formulas(s, b, h, a, t):
    mc = _megatron_constants(h, a)

    def per_layer(**kw):
        return layer_act_bytes(mc, Knobs(precision="bf16", seq=s, tp=t, **kw)) * s * b

    assert per_layer() == pytest.approx(s * b * h * (10 + 24 / t + 5 * a * s / (h * t)), rel=1e-12)
    if t == 1:
        assert per_layer() == pytest.approx(s * b * h * (34 + 5 * a * s / h), rel=1e-12)
    assert per_layer(sequence_parallel=True) == pytest.approx(s * b * h / t * (34 + 5 * a * s / h), rel=1e-12)
    assert per_layer(sequence_parallel=True, selective_recompute=True) == pytest.approx(s * b * h * 34 / t, rel=1e-12)
    # tensor parallel with selective recomputation but no sequence parallelism: sbh(10 + 24/t)
    assert per_layer(selective_recompute=True) == pytest.approx(s * b * h * (10 + 24 / t), rel=1e-12)


# Narayanan et al. 2021 ("Efficient Large-Scale Language Model Training on GPU Clusters Using
# Megatron-LM"), section 2.2: under 1F1B the first stage keeps p micro-batches of its L/p layers
# (L layers of one micro-batch); Korthikanti et al. 2022 section 4.2.3: the interleaved schedule
# with v chunks multiplies that by 1 + (p - 1)/(p v).
@pytest.mark.parametrize("p, v, layers", [(4, 1, 32), (4, 2, 32), (8, 4, 64), (16, 2, 96)])
def test_pipeline_in_flight_activations(p, v, layers):
    from perfscale.estimate.memory import live_layer_batches, stage_layers

    mc = dataclasses.replace(model_constants(spec_from_config(tiny_config("llama"), "tiny")), layers=layers)
    k = Knobs(pp=p, pp_virtual=v, accum=4 * p)
    on_stage, chunks = stage_layers(mc, k, 0)
    assert on_stage == pytest.approx(layers / p) and len(chunks) == v
    expected = layers * (1 + (p - 1) / (p * v)) if v > 1 else layers
    assert live_layer_batches(k, 0, chunks) == pytest.approx(expected)
    # the last rank runs no warm-up under 1F1B: one micro-batch of its layers
    if v == 1:
        assert live_layer_batches(k, p - 1, stage_layers(mc, k, p - 1)[1]) == pytest.approx(layers / p)


def test_llama3_stage_balancing():
    """Dubey et al. 2024 section 3.3.2: with PP 16 the embedding and the head each take one layer
    slot of 126 + 2 = 128, one slot per chunk (V 8); the first chunk of the first stage holds only
    the embedding. Rank 0 at its first backward: 2(p-1) + (v-1)p + 1 = 143 chunk forwards, i.e.
    all 8 chunks x 16 micro-batches + 15 more of chunk 0: 7 layer chunks x 16 = 112 layer sets."""
    from perfscale.estimate.memory import live_layer_batches, stage_layers

    mc = dataclasses.replace(model_constants(spec_from_config(tiny_config("llama"), "tiny")), layers=126)
    k = Knobs(pp=16, pp_virtual=8, accum=32, pp_embedding_as_layer=True)
    first, chunks = stage_layers(mc, k, 0)
    assert first == 7 and chunks == [0, 1, 1, 1, 1, 1, 1, 1]
    assert live_layer_batches(k, 0, chunks) == 112
    last, last_chunks = stage_layers(mc, k, 15)
    assert last == 7 and last_chunks[-1] == 0
    assert stage_layers(mc, k, 5)[0] == 8


def test_fused_kernel_recipe_counts_liger_saved_tensors():
    """Fused RMSNorm saves its input + fp32 rstd (Liger LigerRMSNormFunction: X, W, RSTD), the next
    linear its output; fused SwiGLU saves gate and up (LigerSiLUMulFunction: a, b), down_proj the
    product; flash/SDPA q, k, v, out + fp32 logsumexp, and o_proj its contiguous copy of out. bf16,
    per token per layer."""
    spec = spec_from_config(tiny_config("llama"), "tiny")
    mc = model_constants(spec)
    h, q, kv, i, heads = mc.h, mc.q, mc.kv, mc.i, mc.heads
    rep, split, per_s = mc.act_fused[("bf16", "sdpa")]
    assert rep == 2 * (2 * h + 4 + 2 * h)
    assert split == 2 * (3 * q) + 2 * (2 * kv) + 4 * heads + 3 * 2 * i
    assert per_s == 0
    assert sum(mc.act_fused[("bf16", "sdpa")]) < sum(mc.act[("bf16", "sdpa")])
    k = Knobs(precision="bf16", fused_kernels=True, seq=16)
    assert layer_act_bytes(mc, k) == rep + split
