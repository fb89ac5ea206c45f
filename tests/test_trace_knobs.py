"""Each knob the trace covers changes what it should, by the amount the physics says."""

from __future__ import annotations

import pytest

from perfscale.config import RunConfig
from perfscale.errors import InvalidConfigError, UnsupportedModelError
from perfscale.specs import InferWorkload, TrainWorkload, spec_from_config
from perfscale.trace import trace
from perfscale.trace.api import run_raw
from tiny_configs import tiny_config

SPEC = spec_from_config(tiny_config("llama"), "tiny-llama")
P = SPEC.params.total  # parameters (untied)


def t(**knobs):
    workload = knobs.pop("workload", TrainWorkload(2, 32, 1))
    return trace(SPEC, RunConfig(workload, **knobs), device="cpu")


def test_batch_and_seq_grow_activations():
    base = t()
    assert t(workload=TrainWorkload(4, 32, 1)).peak_bytes > base.peak_bytes
    assert t(workload=TrainWorkload(2, 64, 1)).peak_bytes > base.peak_bytes


def test_precision_sets_parameter_bytes():
    assert t(precision="fp32").breakdown["parameters"] == 4 * P
    bf16 = t(precision="bf16", optimizer="sgd")
    assert bf16.breakdown["parameters"] == 2 * P
    mixed = t(precision="bf16-mixed")
    assert mixed.breakdown["parameters"] == 4 * P  # fp32 master weights
    assert t(precision="fp16-mixed").peak_bytes == mixed.peak_bytes  # same sizes, other 16-bit dtype


def test_optimizer_state_sizes():
    # Forward of iteration 2 holds the state: AdamW 2 fp32 moments (+ step scalars); SGD as the
    # Trainer builds it (optim="sgd": no momentum) none. Was 4 * P when perfscale's SGD kept a momentum buffer.
    adamw = t(optimizer="adamw").phase_peaks["forward"]
    sgd = t(optimizer="sgd").phase_peaks["forward"]
    assert adamw - sgd == pytest.approx(8 * P, abs=4096)
    assert t(optimizer="adamw-fused").phase_peaks["forward"] == pytest.approx(adamw, abs=4096)
    assert t(optimizer="adafactor").phase_peaks["forward"] < adamw  # factored second moments


def test_adamw_8bit_without_bitsandbytes_is_a_clear_error():
    try:
        import bitsandbytes  # noqa: F401
        pytest.skip("bitsandbytes is installed here")
    except ImportError:
        pass
    with pytest.raises(InvalidConfigError, match="bitsandbytes"):
        t(optimizer="adamw-8bit")


def test_checkpointing_cuts_forward_activations():
    wl = TrainWorkload(2, 128, 1)
    assert t(workload=wl, checkpointing=True).phase_peaks["forward"] < t(workload=wl).phase_peaks["forward"]


def test_eager_attention_keeps_the_score_matrix():
    wl = TrainWorkload(2, 128, 1)
    assert t(workload=wl, attn="eager").peak_bytes > t(workload=wl, attn="sdpa").peak_bytes


def test_lora_freezes_the_base():
    config = RunConfig(TrainWorkload(2, 32, 1), lora_r=4, lora_targets=("q_proj", "v_proj"))
    raw, _ = run_raw(SPEC, config, "cpu", False, False)
    # Adapters r x (in + out) per target: q_proj 64->64, v_proj 64->32 (2 KV heads x 16), 2 layers, fp32.
    adapter_params = 2 * (4 * (64 + 64) + 4 * (64 + 32))
    assert max(b["gradients"] for _, b in raw.regions.values()) == 4 * adapter_params
    assert trace(SPEC, config, device="cpu").peak_bytes < t().peak_bytes


def test_lora_targets_matching_nothing():
    with pytest.raises(InvalidConfigError, match="nope_proj"):
        t(lora_r=4, lora_targets=("nope_proj",))


def test_adafactor_on_a_frozen_base():
    with pytest.raises(InvalidConfigError, match="adafactor"):
        t(lora_r=4, lora_targets=("q_proj",), optimizer="adafactor")


def test_gradient_accumulation_keeps_gradients_between_micro_steps():
    raw, _ = run_raw(SPEC, RunConfig(TrainWorkload(2, 32, 2)), "cpu", False, False)
    second = [v for (step, phase, _), v in raw.regions.items() if step == "iter1/micro1" and phase == "forward"]
    first = [v for (step, phase, _), v in raw.regions.items() if step == "iter1/micro0" and phase == "forward"]
    assert max(b["gradients"] for _, b in second) == 4 * P
    assert max(b["gradients"] for _, b in first) == 0


def test_fsdp_shards_parameters():
    full = t(precision="bf16-mixed")
    r2 = t(precision="bf16-mixed", fsdp=2)
    r8 = t(precision="bf16-mixed", fsdp=8)
    assert r8.phase_peaks["optimizer"] < r2.phase_peaks["optimizer"] < full.phase_peaks["optimizer"]
    assert r8.world_size == 8


def test_fsdp_reshard_after_forward_false_keeps_every_layer_gathered():
    """reshard_after_forward=False (RunConfig.fsdp_reshard) keeps each layer's all-gathered 16-bit parameters
    from its forward to its backward: at the peak the parameters hold the unsharded bf16 copy of every layer."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        layer_params = sum(p.numel() for p in AutoModelForCausalLM.from_config(SPEC.config_object()).model.layers.parameters())
    resharded = t(precision="bf16-mixed", fsdp=2)
    kept = t(precision="bf16-mixed", fsdp=2, fsdp_reshard=False)
    assert kept.breakdown["parameters"] - resharded.breakdown["parameters"] == 2 * layer_params
    assert kept.peak_bytes > resharded.peak_bytes
    assert any("reshard_after_forward=False" in note for note in kept.notes)
    with pytest.raises(InvalidConfigError, match="applies to FSDP: add --fsdp N"):
        t(fsdp_reshard=False)


def test_inference_kv_cache_bytes():
    b, p, n = 2, 32, 6
    kv_heads, head_dim, layers = 2, 16, 2
    dyn = t(workload=InferWorkload(b, p, n), precision="bf16")
    # K and V, per layer, B x kv_heads x tokens x head_dim, 2 bytes; the last token generated is never fed.
    assert dyn.kv_cache_bytes == 2 * layers * b * kv_heads * (p + n - 1) * head_dim * 2
    static = t(workload=InferWorkload(b, p, n), precision="bf16", cache="static")
    # Static: allocated for prompt + new tokens at once, plus one int64 position counter per layer.
    assert static.kv_cache_bytes == 2 * layers * b * kv_heads * (p + n) * head_dim * 2 + 8 * layers
    assert dyn.breakdown["parameters"] == 2 * P and dyn.phase in ("prefill", "decode")
    assert t(workload=InferWorkload(b, p, n), precision="fp32").breakdown["parameters"] == 4 * P
    assert t(workload=InferWorkload(b, 2 * p, n), precision="bf16").prefill_peak_bytes > dyn.prefill_peak_bytes
    assert t(workload=InferWorkload(b, p, 3 * n), precision="bf16").decode_peak_bytes > dyn.decode_peak_bytes


def test_model_that_cannot_run_on_fake_tensors_names_the_estimate_engine():
    spec = spec_from_config(tiny_config("mixtral"), "tiny-mixtral")
    with pytest.raises(UnsupportedModelError, match="perfscale plan"):
        trace(spec, RunConfig(TrainWorkload(2, 32, 1), precision="fp32"), device="cpu")


def test_unsupported_attention_implementation():
    spec = spec_from_config(tiny_config("gemma2"), "tiny-gemma2")
    with pytest.raises(InvalidConfigError, match="--attn eager"):
        trace(spec, RunConfig(TrainWorkload(2, 32, 1), attn="sdpa"), device="cpu")
