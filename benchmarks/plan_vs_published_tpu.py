"""Estimated TPU training throughput vs MaxText's published tables (target: within 15%, issue 20).

Each row: a run MaxText publishes, rebuilt as a spec + RunConfig + TPU slice, estimated with the default TPU
efficiency, and compared in MaxText's own unit (model TFLOP/s per chip, hence MFU = that / bf16 peak).
Writes benchmarks/results/plan_vs_published_tpu.json. Run: python benchmarks/plan_vs_published_tpu.py

Sources
- [MT-V5E] MaxText, MaxText/configs/v5e/README.md ("Expected performance results for 16B, 32B, 64B, and
  128B parameter models running on TPU v5e", https://github.com/AI-Hypercomputer/maxtext/blob/main/MaxText/configs/v5e/README.md):
  16B on 1x v5e-256: 120 TFLOP/s/chip, 61.10% MFU; 2x: 59.37%; 8x: 58.27%; 32x v5e-256: 54.65%;
  32B on 1x: 66.86%; 64B on 1x: 59.90%.
  Run scripts MaxText/configs/v5e/{16b,32b,64b}.sh: global_parameter_scale 16 / 32 / 64,
  per_device_batch_size 6 / 4 / 2, remat_policy=full, max_target_length 2048, FSDP over the slice
  (base.yml ici_fsdp_parallelism: -1), data parallel over slices (dcn_data_parallelism: -1).
- [MT-V4] MaxText, MaxText/configs/v4/README.md: 22B on 1x v4-128: 156 TFLOP/s/chip, 56.7% MFU; 2x v4-128:
  55.2%. Script MaxText/configs/v4/22b.sh: base_emb_dim 6144, 24 query and kv heads, base_mlp_dim 24576,
  48 layers, ici_fsdp_parallelism 64, per_device_batch_size 13, remat_policy=full.
- The model: MaxText's base.yml decoder ("llama2" block: RMSNorm, RoPE, SwiGLU, head_dim 128, vocab 32000,
  untied logits, fp32 weights with bf16 activations = bf16-mixed, AdamW); global_parameter_scale 2^n doubles
  heads+MLP, embedding and layers in turn (pyconfig.get_individual_scales).
- MaxText's TFLOP/s (train.py calculate_training_tflops, "https://arxiv.org/pdf/2204.02311.pdf Appendix B"):
  per sequence 6 x params x s + 12 x heads x layers x head_dim x s^2; recomputation not counted.
- The fitted row: the default TPU efficiency (estimate/time.py DEFAULT_EFFICIENCY["tpu"]) is fitted on
  [MT-V5E] 16B 1x v5e-256 alone (MaxText's full rematerialisation runs 4/3 of the model FLOPs, so 61.1% MFU is
  0.815 of peak executed); every other row is held out.
Known differences:
- The v4 "22B" built from today's 22b.sh and base.yml (head_dim 128, SwiGLU) counts 25.8B parameters; MaxText's
  name dates from an older base.yml (head_dim 256). The MFU row compares the FLOP rate of one model on both
  sides (MaxText's formula applied to the model built here), so the name does not enter the comparison.
- Memory is modelled for PyTorch autocast (fp32 residual stream, perfscale's bf16-mixed); MaxText keeps bf16
  activations, so the v4-128 22B run it ran is estimated at 33.4 of 32 GiB (fits=False) here.
- Time across slices: MaxText loses 3% (2 slices) to 11% (32 slices) of MFU; here the cross-slice gradient
  all-reduce (1/256 of the gradients per chip over DCN) hides under backward, so the estimate stays flat and
  the 32-slice row is the worst held-out one (+12%).
- MaxText's scripts changed over time (16b.sh has 13 stored versions); the per-device batches
above are those of the versions cited, not necessarily of the run behind each table row.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from perfscale.config import RunConfig
from perfscale.estimate import estimate
from perfscale.specs import TrainWorkload, parse_topology, spec_from_config

SEQ = 2048


def maxtext_model(scale: int = 1, name: str | None = None, **base):
    """MaxText's default decoder at global_parameter_scale `scale` (pyconfig.get_individual_scales), as an HF
    Llama config; `base` overrides base_emb_dim, base_num_query_heads, base_mlp_dim, base_num_decoder_layers."""
    log2 = int(math.log2(scale))
    cycles, rem = divmod(log2, 3)
    heads_s, emb_s, layer_s = cycles + int(rem > 0), cycles + int(rem > 1), cycles
    emb = base.get("emb", 2048) * 2**emb_s
    heads = base.get("heads", 16) * 2**heads_s
    cfg = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": emb,
           "num_attention_heads": heads, "num_key_value_heads": heads, "head_dim": 128,
           "intermediate_size": base.get("mlp", 7168) * 2**heads_s,
           "num_hidden_layers": base.get("layers", 16) * 2**layer_s, "vocab_size": 32000,
           "max_position_embeddings": SEQ, "tie_word_embeddings": False, "hidden_act": "silu", "rms_norm_eps": 1e-5}
    return spec_from_config(cfg, name or f"maxtext-scale{scale}")


def maxtext_tflops_per_chip(spec, tokens_per_s_per_chip: float) -> float:
    """MaxText's model TFLOP/s per chip (calculate_training_tflops): 6 N s + 12 H L d s^2 per sequence."""
    per_seq = 6 * spec.params.total * SEQ + 12 * spec.num_heads * spec.num_layers * 128 * SEQ**2
    return tokens_per_s_per_chip / SEQ * per_seq / 1e12


def fsdp_config(per_device_batch: int, chips_per_slice: int) -> RunConfig:
    """FSDP over one slice (ici_fsdp), full rematerialisation, bf16 activations on fp32 weights, AdamW."""
    return RunConfig(TrainWorkload(per_device_batch, SEQ, 1), precision="bf16-mixed", optimizer="adamw",
                     checkpointing=True, tp=1, pp=1, fsdp=chips_per_slice)


# (label, spec builder, slice, per-device batch, published MFU, source, fitted?)
ROWS = [
    ("16B, 1x v5e-256", lambda: maxtext_model(16, "maxtext-16b"), "v5e-256", 6, 0.6110, "[MT-V5E] 16B 1x", True),
    ("32B, 1x v5e-256", lambda: maxtext_model(32, "maxtext-32b"), "v5e-256", 4, 0.6686, "[MT-V5E] 32B 1x", False),
    ("64B, 1x v5e-256", lambda: maxtext_model(64, "maxtext-64b"), "v5e-256", 2, 0.5990, "[MT-V5E] 64B 1x", False),
    ("16B, 2x v5e-256 (DCN)", lambda: maxtext_model(16, "maxtext-16b"), "2xv5e-256", 6, 0.5937, "[MT-V5E] 16B 2x", False),
    ("16B, 8x v5e-256 (DCN)", lambda: maxtext_model(16, "maxtext-16b"), "8xv5e-256", 6, 0.5827, "[MT-V5E] 16B 8x", False),
    ("16B, 32x v5e-256 (DCN)", lambda: maxtext_model(16, "maxtext-16b"), "32xv5e-256", 6, 0.5465, "[MT-V5E] 16B 32x", False),
    ("22B, 1x v4-128", lambda: maxtext_model(1, "maxtext-22b-v4", emb=6144, heads=24, mlp=24576, layers=48), "v4-128", 13,
     0.567, "[MT-V4] 22B 1x", False),
    ("22B, 2x v4-128 (DCN)", lambda: maxtext_model(1, "maxtext-22b-v4", emb=6144, heads=24, mlp=24576, layers=48), "2xv4-128", 13,
     0.552, "[MT-V4] 22B 2x", False),
]


# One collective on the torus, measured and published: [BOOK3] How to Scale Your Model, part 3 (sharding,
# https://jax-ml.github.io/scaling-book/sharding/), Pop Quiz 2: on a TPU v5e 2D mesh {'X': 8, 'Y': 4} (a 4x8 slice,
# no wraparound), AllGather_Y of bf16[2048, 8192] (34 MB): "an actual profile ... shows 680us" (the book's own
# estimate: 560 us at 4.5e10 B/s one way per link).
COLLECTIVES = [("all-gather of bf16[2048, 8192] over the 4-chip axis of a v5e 4x8", "v5e-32", 4, 1, 2048 * 8192 * 2,
                680e-6, "[BOOK3] Pop Quiz 2 (profile)")]


def run_collective(row) -> dict:
    from perfscale.estimate.time import LINK_EFFICIENCY
    from perfscale.estimate.tpu_time import all_gather_seconds

    label, slice_text, n, stride, nbytes, published, source = row
    tpu = parse_topology(slice_text).hardware.torus
    est = all_gather_seconds(tpu, n, stride, nbytes, LINK_EFFICIENCY)
    return {"run": label, "source": source, "slice": slice_text, "published_seconds": published, "estimated_seconds": est,
            "error": (est - published) / published}


def run_row(row, efficiency: float | None = None) -> dict:
    label, build, slice_text, batch, published, source, fitted = row
    spec = build()
    topo = parse_topology(slice_text)
    config = fsdp_config(batch, topo.devices_per_node)
    est = estimate(spec, config, topo, efficiency=efficiency)
    tflops = maxtext_tflops_per_chip(spec, est.time.tokens_per_second / topo.world_size)
    mfu = tflops * 1e12 / topo.hardware.peak("bf16")
    err = (mfu - published) / published
    return {"run": label, "source": source, "fitted": fitted, "slice": topo.label, "params": spec.params.total,
            "published_mfu": published, "estimated_mfu": mfu, "estimated_tflops_per_chip": tflops, "error": err,
            "within_15pct": abs(err) <= 0.15, "fits": est.fits, "peak_total_bytes": est.memory.total_bytes,
            "capacity_bytes": est.memory.capacity_bytes, "step_seconds": est.time.step_seconds,
            "split": est.time.split, "efficiency": est.time.efficiency, "binding": est.binding,
            "run_config": config.to_dict()}


def run() -> dict:
    return {"benchmark": "plan_vs_published_tpu", "rows": [run_row(r) for r in ROWS],
            "collectives": [run_collective(r) for r in COLLECTIVES]}


if __name__ == "__main__":
    doc = run()
    path = Path(__file__).parent / "results"
    path.mkdir(exist_ok=True)
    (path / "plan_vs_published_tpu.json").write_text(json.dumps(doc, indent=2))
    for r in doc["rows"]:
        print(f"{r['run']:<26} published MFU {r['published_mfu']:.2%} estimated {r['estimated_mfu']:.2%} "
              f"error {r['error']:+.1%} fits={r['fits']} ({r['peak_total_bytes'] / 2**30:.1f} of "
              f"{r['capacity_bytes'] / 2**30:.0f} GiB) step {r['step_seconds']:.2f} s{' (fitted)' if r['fitted'] else ''}")
    for r in doc["collectives"]:
        print(f"{r['run']}: published {r['published_seconds'] * 1e6:.0f} us estimated {r['estimated_seconds'] * 1e6:.0f} us "
              f"error {r['error']:+.1%}  {r['source']}")
