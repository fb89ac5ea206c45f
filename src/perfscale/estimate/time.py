"""Step time: FLOPs from the architecture, compute at peak x efficiency (GPU: gpu_step.py), communication, bubble.

FLOPs per token, forward: 2 x (matmul weights a token passes through, incl. the LM head) +
attention 2 x 2 x s x (heads x head_dim) per layer (QK^T and PV; no causal discount, the
convention of Narayanan et al. 2021 eq. 3 and PaLM's MFU, Chowdhery et al. 2022 appendix B).
Training = 3 x forward (backward = 2 x forward; Kaplan et al. 2020 "6N"); full recomputation adds
one forward (hardware FLOPs, not model FLOPs: MFU counts 3 x forward). A frozen (LoRA) base skips
its weight gradients: 2 x forward.

Communication (ring collectives, Thakur et al. 2005; bytes per device per direction):
  all-reduce 2(n-1)/n x bytes, all-gather and reduce-scatter (n-1)/n x bytes each.
  DDP / ZeRO-1: one gradient all-reduce per step (no_sync during accumulation);
  ZeRO-2: reduce-scatter per micro-step + parameter all-gather per step;
  ZeRO-3 / FSDP: all-gather (forward) + all-gather (backward) + reduce-scatter per micro-step
  (Rajbhandari et al. 2020 section 7: 1.5x DDP volume);
  TP: 2 all-reduces of b x s x h forward + 2 backward per layer (Shoeybi et al. 2019), +2 when the
  forward is recomputed; PP: one activation send + one gradient send per micro-batch per stage.
Overlap rules (stated, not measured): data-parallel gradient traffic overlaps the backward compute,
ZeRO-3/FSDP forward all-gathers overlap the forward compute (prefetch); TP traffic is on the
critical path; PP traffic is on it under plain 1F1B, and overlaps the other chunks' compute under
the interleaved schedule (Megatron-LM overlap_p2p_comm, on by default for interleaving; Llama 3,
Dubey et al. 2024 section 3.3.2: asynchronous point-to-point communication). Pipeline bubble: (p-1)/(m+p-1) of the step (GPipe / 1F1B, Narayanan et al. 2021
section 2.2.1); interleaved 1F1B with v chunks per device: (p-1)/(v m + p-1), at v x the
point-to-point traffic (same paper, section 2.2.2).
CP (context parallel, ring attention): K/V blocks passed around the cp ranks per layer, overlapped with
the attention compute (constants below); the compute, TP and PP traffic per device divide by cp, and the
gradient reduction spans DP x CP. On a GPU the compute is estimate/gpu_step.py's sum of parts.
Groups: TP innermost, then CP, then PP, then DP; a group uses NVLink-class bandwidth while it fits in a node,
else the inter-node bandwidth (per device).
"""

from __future__ import annotations

from perfscale.config.precision import Precision
from perfscale.estimate.constants import ModelConstants
from perfscale.estimate import tpu_time
from perfscale.estimate.gpu_step import gpu_compute, matmul_key
from perfscale.estimate.cpu_step import calibrated_compute, calibration_applies, unsupported
from perfscale.estimate.knobs import Knobs

# Fraction of the dense peak that end-to-end training reaches (MFU-like). Named, overridable
# (`efficiency=`). GPU 0.45: the middle of published large-model MFU, 38-43% Llama 3 405B on
# H100 (Dubey et al. 2024, Table 4), 46% Megatron-LM GPT-3 175B on A100 (Korthikanti et al. 2022
# Table 5 MFU), 52% Megatron 1T (Narayanan et al. 2021). CPU 0.28: fitted on an idle machine here,
# perfscale-tiny-llama fp32 training (b8, s256) at 0.284 of the detected AVX-512 fp32 peak
# (benchmarks/plan_vs_cpu.py, benchmarks/LOG.md 2026-11-27); held out, it predicts the same model
# within 16% but a 4x larger model 31% slow (bigger GEMMs run closer to peak): a planning value.
# Override with `efficiency=` / --efficiency; on this machine, `perfscale plan --calibrate` replaces it
# with the step's operations timed here (cpu_step.py; 7/7 configurations within 15%, LOG 2026-11-27).
# TPU 0.81: fitted on one published run, MaxText's 16B model on one v5e-256 slice (61.1% MFU with full
# rematerialisation, i.e. 0.81 of the bf16 peak executed; MaxText/configs/v5e/README.md); held out, the same
# table's 32B/64B rows, 2-32 slices over DCN and the v4-128 rows are within 15%
# (benchmarks/plan_vs_published_tpu.py, benchmarks/LOG.md 2026-12-02). A well-tuned JAX/XLA stack: PyTorch/XLA
# programs with host syncs or recompilations reach less (--efficiency).
DEFAULT_EFFICIENCY = {"gpu": 0.45, "tpu": 0.81, "cpu": 0.28}
# On a GPU, training's compute is not peak x 0.45 but the sum of its parts (estimate/gpu_step.py: GEMMs at the cited
# table, attention by kernel, memory-bound work at the bandwidth, the optimizer step, the host's dispatch floor); the
# 0.45 applies to inference's prefill and where a GPU has no native peak for the precision.
# Context parallelism (ring attention; Megatron-Core context_parallel docs, Liu et al. 2023 "Ring Attention";
# Llama 3, Dubey et al. 2024 section 3.3.2): each of the cp ranks holds seq / cp tokens of every sequence and
# passes its K and V blocks around the ring, cp - 1 steps per layer in the forward; the backward passes K/V
# again and their gradients back (2x). The transfers overlap the blockwise attention compute of the step
# before them; only what exceeds that compute is exposed.
CP_BACKWARD_FACTOR = 2.0


# Achieved fraction of peak memory bandwidth in decode (weights + KV streamed once per token).
BANDWIDTH_EFFICIENCY = 0.8
# Achieved fraction of link bandwidth for large collectives (NCCL bus bandwidth vs link peak).
LINK_EFFICIENCY = 0.8
# CPU offload (ZeRO-Offload, Ren et al. 2021): gradients down and 16-bit parameters up over PCIe
# each step, the optimizer step on the CPU (reads/writes 16 bytes per parameter at host memory
# bandwidth); parameter offload also streams the parameters up every micro-step. Not overlapped.
PCIE_BANDWIDTH = 25e9  # PCIe 4.0 x16 achieved, bytes/s per direction
HOST_BANDWIDTH = 100e9  # host DRAM, bytes/s
# Decode reads every weight once per token: where the catalogue or the detection has no memory
# bandwidth (this machine's CPU is "n/a: not measured") decode time assumes this, and the estimate
# says so in its notes (a dual-channel DDR5 desktop is ~80 GB/s, an 8-channel server ~300 GB/s).
ASSUMED_MEMORY_BANDWIDTH = 100e9
# Fixed cost of each tensor-parallel all-reduce in decode, on top of its bytes over the link: the
# order of NCCL's small-message all-reduce latency inside an NVLink node (nccl-tests). Assumed, not
# measured here (no multi-GPU machine).
TP_ALLREDUCE_LATENCY_S = 10e-6
# Without native support (no peak for the dtype): emulated; FIELD-NOTES measured bf16 autocast
# training ~20x slower than fp32 on an AVX2-only CPU.
EMULATION_PENALTY = 0.05


def flops_per_token(mc: ModelConstants, seq: float) -> float:
    """Forward FLOPs per token at context length `seq`."""
    matmul = mc.layers * mc.matmul_layer_active + mc.head_matmul
    return 2.0 * matmul + 4.0 * seq * mc.q * mc.layers


def effective_peak(hw, precision: Precision, efficiency: float | None, tf32: bool = False) -> tuple[float, float, bool]:
    """(peak FLOP/s for the precision's matmul dtype, efficiency, native?)."""
    peak = hw.peak(matmul_key(hw, precision, tf32))
    eff = efficiency if efficiency is not None else DEFAULT_EFFICIENCY.get(hw.kind, 0.45)
    if peak:
        return peak, eff, True
    if hw.kind == "tpu" and precision.peak_key == "fp32" and hw.peak("bf16"):
        return hw.peak("bf16") / tpu_time.FP32_PASSES, eff, False  # XLA HIGHEST: 6 bf16 passes (tpu_time.py)
    base = hw.peak("fp32") or hw.peak("bf16") or 1e12
    return base * EMULATION_PENALTY, eff, False


def _bw(hw, spans_nodes: bool) -> float:
    link = hw.inter_node if spans_nodes else hw.intra_node
    return (link.bandwidth.value or hw.memory_bandwidth.value or 1e9) * LINK_EFFICIENCY


def train_time(mc: ModelConstants, k: Knobs, hw, nodes: int, per_node: int, efficiency: float | None,
               trainable: float, calibration=None) -> dict:
    """`trainable`: trainable parameters of the whole model (gradients that data parallelism syncs).

    `calibration` (CPU only, estimate/calibration.py): operation times measured on this machine;
    when it covers the step (estimate/cpu_step.py) the compute time is their sum instead of
    peak x efficiency. An explicit `efficiency` always wins."""
    world = nodes * per_node
    tp, pp = k.tp, k.pp
    cp = max(1, getattr(k, "cp", 1))
    dp = max(1, world // (tp * pp * cp))
    peak, eff, native = effective_peak(hw, k.prec, efficiency, k.tf32)
    rate = peak * eff
    fwd = flops_per_token(mc, k.seq)
    tpu = getattr(hw, "torus", None)  # a TPU chip in a slice: padded matmuls, torus collectives (tpu_time.py)
    fwd_run = tpu_time.padded_flops_per_token(mc, k.seq, tpu.mxu_tile) if tpu is not None else fwd
    tokens_replica = k.batch * k.seq * k.accum * mc.sequences_per_example  # multiple choice: b x choices sequences
    backward_factor = 1.0 if k.lora_r is not None else 2.0
    shards = tp * pp * cp  # a replica's devices; each computes 1 / shards of its tokens' FLOPs
    compute = tokens_replica * fwd_run * (1 + backward_factor) / shards / rate
    recompute = tokens_replica * fwd_run / shards / rate if k.checkpointing else 0.0
    if k.selective_recompute and not k.checkpointing:
        recompute = tokens_replica * 4.0 * k.seq * mc.q * mc.layers / shards / rate
    gpu = None
    if efficiency is None and hw.kind == "gpu" and native:
        # by part (gpu_step.py): GEMMs at the cited table, attention by kernel, memory-bound work at the bandwidth
        on_device = trainable / (tp * pp) / (dp * cp if (k.zero or k.fsdp) else 1)
        gpu = gpu_compute(mc, k, hw, peak, tokens_replica, shards, backward_factor, on_device)
        compute, recompute = gpu.compute, gpu.recompute
        eff = tokens_replica * fwd * (1 + backward_factor) / shards / compute / peak if compute > 0 else eff
        rate = peak * eff
    measured = uncalibrated = None
    if calibration_applies(calibration, hw, world, efficiency):
        measured = calibrated_compute(mc, k, calibration)
        if measured is None:
            uncalibrated = unsupported(mc, k) or "some of its operations are not timed on this machine (perfscale plan --calibrate)"
    if measured is not None:
        compute, recompute = measured
        eff = tokens_replica * fwd * (1 + backward_factor) / compute / peak if compute > 0 and native else eff
    cb = k.prec.compute_bytes
    # Data-parallel traffic: gradients of the trainable parameters on this device (16-bit under
    # any 16-bit precision; LoRA's fp32 adapters in fp32).
    gbytes = trainable / (tp * pp) * (2 if cb < 4 and k.lora_r is None else 4)
    if tpu is not None:
        return _tpu_train_time(mc, k, hw, tpu, nodes, per_node, fwd, compute, recompute, gbytes, eff, native,
                               tokens_replica * dp)
    # gradients are reduced over every rank that holds the same weights: data parallel x context parallel
    dp_group = dp * cp
    dp_bw = _bw(hw, nodes > 1 and dp_group > 1)
    ring = (dp_group - 1) / dp_group if dp_group > 1 else 0.0
    shard_full = k.zero == 3 or bool(k.fsdp)
    if shard_full:
        dp_comm = 3 * ring * gbytes * k.accum / dp_bw
        overlappable = compute  # forward gathers overlap forward, the rest overlaps backward
    elif k.zero == 2:
        dp_comm = ring * gbytes * (k.accum + 1) / dp_bw
        overlappable = compute * 2 / 3
    else:
        dp_comm = 2 * ring * gbytes / dp_bw
        overlappable = compute * 2 / 3 / k.accum  # the last micro-step's backward
    exposed = max(0.0, dp_comm - overlappable)
    tp_comm = 0.0
    if tp > 1:
        tp_bw = _bw(hw, tp > per_node)
        n_ar = 4 + (2 if k.checkpointing else 0)
        tp_comm = n_ar * (mc.layers / pp) * 2 * (tp - 1) / tp * k.batch * k.seq / cp * mc.h * cb * k.accum / tp_bw
    cp_comm = cp_exposed = 0.0
    if cp > 1:
        # groups: TP innermost, then CP, then PP, then DP (Llama 3 section 3.3.2: [TP, CP, PP, DP])
        cp_bw = _bw(hw, tp * cp > per_node)
        kv_block = k.batch * k.seq / cp * 2 * mc.kv_heads * mc.head_dim / tp * cb  # this rank's K and V
        passes = 1 + CP_BACKWARD_FACTOR + (1 if k.checkpointing else 0)
        cp_comm = passes * (mc.layers / pp) * (cp - 1) * kv_block * k.accum * mc.sequences_per_example / cp_bw
        attention = tokens_replica * 4.0 * k.seq * mc.q * mc.layers * (1 + backward_factor) / shards / rate
        cp_exposed = max(0.0, cp_comm - attention)
    pp_comm = pp_exposed = bubble = 0.0
    if pp > 1:
        pp_bw = _bw(hw, tp * cp * pp > per_node)
        v = k.pp_virtual
        # one activation send + one gradient send per micro-batch per chunk boundary (v per device)
        pp_comm = 2 * v * k.accum * k.batch * k.seq / cp * mc.h * cb / tp / pp_bw
        # bubble time = (p-1)/(v m) x the ideal time, i.e. (p-1)/(v m + p-1) of the step
        bubble = (compute + recompute + tp_comm) * (pp - 1) / (v * k.accum)
    pp_exposed = pp_comm if k.pp_virtual == 1 else max(0.0, pp_comm - (compute + recompute))
    offload_t = 0.0
    if k.offload != "none":
        p_dev = trainable / (tp * pp) / (dp_group if (k.zero or k.fsdp) else 1)
        offload_t = 2 * 2 * p_dev / PCIE_BANDWIDTH + 16 * 2 * p_dev / HOST_BANDWIDTH
        if k.offload == "optimizer+params":
            offload_t += 2 * k.accum * 2 * mc.params_total / (tp * pp) / PCIE_BANDWIDTH
    exposed += tp_comm + pp_exposed + offload_t + cp_exposed
    step = compute + recompute + exposed + bubble
    tokens_global = tokens_replica * dp
    tps = tokens_global / step if step > 0 else 0.0
    model_flops = 3 * fwd * tps
    mfu = model_flops / (world * peak) if native and peak else None
    return {
        "step": step,
        "split": {"compute": compute, "exposed_comm": exposed, "bubble": bubble, "recompute": recompute},
        "comm_total": dp_comm + tp_comm + pp_comm + cp_comm,
        "tokens_per_second": tps,
        "mfu": mfu,
        "efficiency": eff,
        "native": native,
        "calibrated": measured is not None,
        "uncalibrated": uncalibrated,
        "flops_per_token": fwd * 3,
    }


def _tpu_train_time(mc: ModelConstants, k: Knobs, hw, tpu, nodes: int, per_node: int, fwd: float, compute: float,
                    recompute: float, gbytes: float, eff: float, native: bool, tokens_global: float) -> dict:
    """train_time on a TPU slice: the same compute, recompute and bubble terms, the collectives of tpu_time.py
    (torus rings, DCN between slices) instead of the node-and-link model; no CPU offload."""
    comm = tpu_time.train_comm(mc, k, tpu, per_node, nodes, gbytes, compute, LINK_EFFICIENCY)
    exposed = max(0.0, comm["dp"] - comm["dp_overlappable"])
    bubble = 0.0
    if k.pp > 1:
        bubble = (compute + recompute + comm["tp"]) * (k.pp - 1) / (k.pp_virtual * k.accum)
    pp_exposed = comm["pp"] if k.pp_virtual == 1 else max(0.0, comm["pp"] - (compute + recompute))
    exposed += comm["tp"] + pp_exposed
    step = compute + recompute + exposed + bubble
    tps = tokens_global / step if step > 0 else 0.0
    peak = hw.peak(k.prec.peak_key)
    mfu = 3 * fwd * tps / (nodes * per_node * peak) if native and peak else None
    return {
        "step": step,
        "split": {"compute": compute, "exposed_comm": exposed, "bubble": bubble, "recompute": recompute},
        "comm_total": comm["dp"] + comm["tp"] + comm["pp"],
        "tokens_per_second": tps, "mfu": mfu, "efficiency": eff, "native": native, "calibrated": False,
        "uncalibrated": None, "flops_per_token": fwd * 3,
    }


def infer_time(mc: ModelConstants, k: Knobs, hw, weights: float, kv_per_token: float, efficiency: float | None) -> dict:
    """TTFT = prefill FLOPs at peak x efficiency; each decode step reads the weights and the KV
    cache once: max(bytes / (bandwidth x 0.8), FLOPs / (peak x efficiency)) (roofline, Williams et
    al. 2009; decode memory-bound, Pope et al. 2022). TP adds 2 all-reduces per layer per token."""
    peak, eff, native = effective_peak(hw, k.prec, efficiency, k.tf32)
    rate = peak * eff / k.tp
    tpu = getattr(hw, "torus", None)

    def fpt(seq: float) -> float:  # forward FLOPs per token as the device runs them (a TPU pads to its MXU tile)
        return tpu_time.padded_flops_per_token(mc, seq, tpu.mxu_tile) if tpu is not None else flops_per_token(mc, seq)

    prefill = k.batch * k.prompt * fpt(k.prompt / 2) / rate
    bw = (hw.memory_bandwidth.value or ASSUMED_MEMORY_BANDWIDTH) * BANDWIDTH_EFFICIENCY
    avg_ctx = k.prompt + k.new_tokens / 2
    read = weights + kv_per_token * avg_ctx * k.batch
    decode_mem = read / bw
    decode_flops = k.batch * fpt(avg_ctx) / rate
    tp_lat = 0.0
    if k.tp > 1:
        cb = k.prec.compute_bytes
        tp_bw = tpu.group_bandwidth(k.tp) * LINK_EFFICIENCY if tpu is not None else _bw(hw, False)
        tp_lat = 2 * mc.layers * (2 * k.batch * mc.h * cb / tp_bw + TP_ALLREDUCE_LATENCY_S)
        prefill += 2 * mc.layers * 2 * k.batch * k.prompt * mc.h * cb / tp_bw
    per_token = max(decode_mem, decode_flops) + tp_lat
    total = prefill + per_token * k.new_tokens
    return {
        "ttft": prefill,
        "per_token": per_token,
        "total": total,
        "bound": "bandwidth" if decode_mem >= decode_flops else "compute",
        "tokens_per_second": k.batch * k.new_tokens / total if total > 0 and k.new_tokens else k.batch * k.prompt / total if total else 0.0,
        "native": native,
        "efficiency": eff,
    }
