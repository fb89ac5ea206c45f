"""Estimated decoder training speed (and peak memory) on one GPU / one node vs published runs (target: within 15%).

Each row: a published decoder fine-tuning or training run, rebuilt as a spec + RunConfig + topology, estimated with
the default efficiency (closed form, estimate()), and compared in the source's own unit: tokens/s (per GPU for the
8-GPU node) and, where the source gives it, peak memory. The op-level model (trace/op_time.py) is given alongside
where it runs (one device; for the 8-GPU rows it times one GPU's micro-batches, with the optimizer step over 1/8
of the parameters, and no communication).
Writes benchmarks/results/plan_vs_published_single_gpu.json. Run: python benchmarks/plan_vs_published_single_gpu.py
(add --no-op-time to skip the op-level model; the closed form alone takes a few seconds).

Sources
- [TT] pytorch/torchtune README.md, "Optimization flags" table (added in commit
  1814feb17a9038e1a8053ce93111bd26774a8db6, 2024-11-18; read at bd2a0fc7c31430972728494fa01aaeeb0ebf1ba1):
  recipe full_finetune_single_device, Llama 3.2 3B, batch size 2, max sequence length 4096, precision bf16,
  hardware A100; each technique added on top of the previous one. Rows used: "+ Packed Dataset" (7075 tokens/s,
  60.0 GiB peak memory active), "+ Compile" (8998, 51.0 GiB) and "+ Activation Checkpointing" (7210, 24.9 GiB;
  this row also has "+ Chunked Cross Entropy", which perfscale does not model). The unpacked "Baseline" row is left
  out (its padding is not stated). torchtune's bf16 is pure bf16 (weights, gradients and AdamW states in bf16):
  precision "bf16". Assumed, not stated: A100-80GB SXM (the 60 GiB row does not fit a 40 GB card) and torch's
  AdamW (the later "+ 8-bit AdamW" row implies the earlier ones are not 8-bit), no accumulation (the table's
  note above it: "batch size 2 (without gradient accumulation)").
- [TT-8B] the same README, "Memory and training speed" table (row added in commit
  30b8519e86d2094879576e16ab1f8d21a6f6f9f7, 2024-09-24): Llama 3.1 8B, full finetune, 1x 4090, 18.9 GiB peak,
  1650 tokens/s; "batch size 2 (without gradient accumulation), a dataset packed to sequence length 2048, and torch
  compile enabled", measured over one full epoch. The recipe's config (recipes/configs/llama3_1/
  8B_full_single_device.yaml) uses bitsandbytes PagedAdamW8bit, optimizer_in_bwd, activation checkpointing, bf16.
  perfscale does not model optimizer_in_bwd (gradients freed as each one is applied), so its peak is not compared.
- [LF] mosaicml/llm-foundry scripts/train/benchmarking/README.md (read at
  8c8dd48f72168c5d51e2f7b151595892a8fba43d; file last changed in 495218376830947dce625efabc4d86be7c47cc45),
  tables "A100 80GB with 1600 Gbps node-node interconnect (RoCE)" and "H100 80GB BF16", the rows with 8 GPUs (one
  node) and sequence length 2048: MPT models of scripts/train/yamls/pretrain/mpt-<size>.yaml (d_model, n_heads,
  n_layers; expansion ratio 4, vocab 50368, no biases, ALiBi, flash attention), amp_bf16, FSDP FULL_SHARD (mixed
  precision DEFAULT: fp32 master weights), no activation checkpointing, MicroBatchSize and GradAccum as listed,
  measured throughput in tokens/s/GPU. submit_benchmarks.py sets norm_type low_precision_layernorm. Modelled as a
  GPT-2-shaped config (same widths, depths and heads; tied embeddings; dropout 0) with bf16-mixed, fsdp=8 and
  fused_kernels (flash attention, low-precision LayerNorm: a tuned stack, not HF's eager modules); the
  optimizer is decoupled AdamW (composer), modelled as adamw_torch. The estimate's memory is reported but not
  compared (the source gives none); it models HF eager modules, which keep more activations than MPT's fused
  flash/low-precision-LayerNorm code, so several rows do not "fit" in the estimate although they ran.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

from perfscale.config import RunConfig
from perfscale.estimate import estimate
from perfscale.specs import TrainWorkload, load_model_spec, parse_topology, spec_from_config

GIB = 2**30


def mpt(d_model: int, n_layers: int, n_heads: int, name: str):
    """[LF] an MPT yaml's shape as a GPT-2 config (no dropout, as the MPT pretrain yamls)."""
    return spec_from_config({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_embd": d_model,
                             "n_layer": n_layers, "n_head": n_heads, "n_positions": 2048, "vocab_size": 50368,
                             "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}, name)


def torchtune_3b(compile_: bool, checkpointing: bool) -> RunConfig:
    """[TT] full_finetune_single_device, batch 2 x 4096 packed, pure bf16, torch AdamW."""
    return RunConfig(TrainWorkload(2, 4096, 1), precision="bf16", optimizer="adamw_torch", compile=compile_,
                     checkpointing=checkpointing)


def mpt_fsdp(micro: int, accum: int) -> RunConfig:
    """[LF] amp_bf16, FSDP FULL_SHARD over the node's 8 GPUs, no activation checkpointing, seq 2048."""
    return RunConfig(TrainWorkload(micro, 2048, accum), precision="bf16-mixed", optimizer="adamw_torch", fsdp=8, fused_kernels=True)


MPT_SHAPES = {"125m": (768, 12, 12), "350m": (1024, 24, 16), "760m": (1536, 24, 12), "1b": (2048, 24, 16),
              "3b": (2560, 32, 20), "7b": (4096, 32, 32)}


def _mpt_row(size: str, gpu: str, micro: int, accum: int, tokens_per_gpu: float) -> tuple:
    table = "A100 80GB" if gpu.startswith("A100") else "H100 80GB BF16"
    return (f"MPT-{size}, 8x{gpu}, mb{micro} x{accum}", lambda: mpt(*MPT_SHAPES[size], f"mpt-{size}"),
            f"8x{gpu}", mpt_fsdp(micro, accum), tokens_per_gpu, "tokens/s/GPU", None,
            f"[LF] {table} table, {size} 2048 8 GPUs")


ROWS = [
    # (label, spec builder, topology, RunConfig, published speed, unit, published peak GiB or None, source)
    ("Llama-3.2-3B, 1xA100, bf16, packed", lambda: load_model_spec("llama-3.2-3b"), "A100-80GB",
     torchtune_3b(False, False), 7075, "tokens/s", 60.0, "[TT] Optimization flags, + Packed Dataset"),
    ("Llama-3.2-3B, 1xA100, bf16, + compile", lambda: load_model_spec("llama-3.2-3b"), "A100-80GB",
     torchtune_3b(True, False), 8998, "tokens/s", 51.0, "[TT] Optimization flags, + Compile"),
    ("Llama-3.2-3B, 1xA100, bf16, + compile + AC", lambda: load_model_spec("llama-3.2-3b"), "A100-80GB",
     torchtune_3b(True, True), 7210, "tokens/s", 24.9, "[TT] Optimization flags, + Activation Checkpointing"),
    ("Llama-3.1-8B, 1xRTX-4090, bf16, AC, 8-bit", lambda: load_model_spec("llama-3.1-8b"), "RTX-4090",
     RunConfig(TrainWorkload(2, 2048, 1), precision="bf16", optimizer="adamw_bnb_8bit", compile=True,
               checkpointing=True), 1650, "tokens/s", None, "[TT-8B] Memory and training speed, 8B full 1x 4090"),
    _mpt_row("125m", "A100-80GB", 40, 2, 142830),
    _mpt_row("350m", "A100-80GB", 32, 2, 58782),
    _mpt_row("760m", "A100-80GB", 24, 2, 32434),
    _mpt_row("1b", "A100-80GB", 14, 4, 20513),
    _mpt_row("3b", "A100-80GB", 10, 2, 10811),
    _mpt_row("7b", "A100-80GB", 6, 2, 4641),
    _mpt_row("760m", "H100-80GB", 24, 2, 63147),
    _mpt_row("1b", "H100-80GB", 14, 1, 45455),
    _mpt_row("7b", "H100-80GB", 6, 1, 10643),
]


def run_row(row) -> dict:
    """The closed-form estimate of one row against its published speed (and peak, where given)."""
    label, build, topo_text, config, published, unit, published_gib, source = row
    spec = build()
    topo = parse_topology(topo_text)
    est = estimate(spec, config, topo)
    value = est.time.tokens_per_second / topo.world_size
    err = (value - published) / published
    out = {"run": label, "source": source, "hardware": topo_text, "unit": unit, "published": published,
           "estimated": value, "error": err, "within_15pct": abs(err) <= 0.15, "mfu": est.time.mfu,
           "step_seconds": est.time.step_seconds,
           "fits": est.fits, "binding": est.binding, "peak_gib": est.memory.peak_bytes / GIB,
           "peak_total_gib": est.memory.total_bytes / GIB, "published_peak_gib": published_gib,
           "split": est.time.split, "efficiency": est.time.efficiency, "run_config": config.to_dict()}
    if published_gib is not None:
        out["peak_error"] = est.memory.peak_bytes / GIB / published_gib - 1
    return out


def op_time_row(row) -> dict:
    """The op-level model's tokens/s (per GPU) for one row: accumulation x (forward + backward) + the optimizer step
    (over 1/world of the parameters under FSDP); no communication."""
    from dataclasses import replace

    from perfscale.specs import get_hardware
    from perfscale.trace.op_time import op_time

    label, build, topo_text, config, published, *_ = row
    topo = parse_topology(topo_text)
    w = config.workload
    one = replace(config, fsdp=None, workload=replace(w, grad_accum=1))  # one micro-batch on one device
    r = op_time(build(), one, get_hardware(topo_text.split("x")[-1]))
    step = w.grad_accum * (r.phase_seconds["forward"] + r.phase_seconds["backward"]) \
        + r.phase_seconds["optimizer"] / topo.world_size
    value = w.batch * w.seq * w.grad_accum / step
    return {"op_time_estimated": value, "op_time_error": value / published - 1, "op_time_bound": r.bound,
            "op_time_phase_seconds": r.phase_seconds}


def run(with_op_time: bool = True) -> dict:
    rows = []
    for row in ROWS:
        result = run_row(row)
        if with_op_time:
            try:
                result.update(op_time_row(row))
            except Exception as exc:  # a row the op-level model cannot trace is a result, not a crash
                result["op_time_error"] = None
                result["op_time_note"] = f"{type(exc).__name__}: {exc}"
        rows.append(result)
    return {"benchmark": "plan_vs_published_single_gpu", "rows": rows}


if __name__ == "__main__":
    warnings.filterwarnings("ignore")
    doc = run(with_op_time="--no-op-time" not in sys.argv)
    path = Path(__file__).parent / "results"
    path.mkdir(exist_ok=True)
    (path / "plan_vs_published_single_gpu.json").write_text(json.dumps(doc, indent=2))
    print(f"{'run':<44} {'unit':<13} {'published':>9} {'closed':>9} {'error':>7} {'op model':>9} {'error':>7} "
          f"{'MFU':>5} {'peak GiB pub/est':>17} fits")
    for r in doc["rows"]:
        op = r.get("op_time_estimated")
        op_text = f"{op:9.0f} {r['op_time_error']:+7.1%}" if op is not None else f"{'n/a':>9} {'':>7}"
        peak = f"{r['published_peak_gib']:.1f}/{r['peak_gib']:.1f}" if r["published_peak_gib"] else f"-/{r['peak_gib']:.1f}"
        print(f"{r['run']:<44} {r['unit']:<13} {r['published']:9.0f} {r['estimated']:9.0f} {r['error']:+7.1%} "
              f"{op_text} {r['mfu']:5.1%} {peak:>17} {r['fits']}")
