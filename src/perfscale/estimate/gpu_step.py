"""A training step's GPU compute time in closed form: GEMMs, attention and memory-bound work, each at its own rate.

The op-level model (trace/op_time.py) times every aten op of the real model code; this is its closed form, for the
instant search (thousands of layouts a second), with the same parts:

  GEMMs       2 x (layer linear weights + head) FLOPs per token forward, 2x that backward, at
              peak[dtype] x plateau[generation, dtype] x K / (K + half_k) x SOFTWARE_EFFICIENCY
              (specs/gemm_efficiency.py: the cited maximum-achievable-matmul plateau and its K term, weighted over
              the layer's GEMMs by their FLOPs: Q/K/V and MLP-in K = hidden, attention-out K = q / tp, MLP-out
              K = intermediate / tp);
  attention   4 x s x q FLOPs per token per layer forward. attn "sdpa" runs the fused kernel (FlashAttention-2 /
              memory-efficient): at ATTENTION_EFFICIENCY of the peak, half the work under a causal mask (the kernel
              skips the masked blocks; Dao 2023 section 3.1), 2.5x the forward in backward (op_time.py).
              attn "eager" materialises the scores: two batched GEMMs (K = head_dim: the plateau without the K
              term, their cost is the scores' traffic) and the softmax/mask/dropout over b x heads x s x s, which
              the saved-activation bytes below carry (their "hs" unit);
  memory      MEMORY_TRAFFIC x the layer's saved-activation bytes per token (estimate/activations.py: the same
              recipe the peak memory uses, so precision, attention implementation, dropout, fused kernels, TP and
              sequence parallelism all move it; fused kernels or torch.compile: the fused traffic) over
              MEMORY_BANDWIDTH_EFFICIENCY x the HBM bandwidth: norms,
              residual adds, activations, casts, dropout, softmax are bandwidth-bound (Ivanov et al. 2021, "Data
              Movement Is All You Need", section 3: they are a third of BERT's training time on a V100);
              plus the LM head's loss over the logits (LOSS_BYTES per vocabulary entry per token);
  optimizer   the step's parameter, gradient and state traffic (OPTIMIZER_BYTES per trainable parameter on the
              device) over the bandwidth, once per step, with gradient clipping and fp16's unscale;
  casts       autocast's weight and gradient casts, every micro-step (AUTOCAST_BYTES);
  host        eager PyTorch dispatches each forward op from Python: a micro-step takes at least
              FORWARD_OPS_PER_LAYER x layers x DISPATCH_SECONDS (op_time.py's fitted per-op cost).

MEMORY_TRAFFIC_FUSED and SOFTWARE_EFFICIENCY are the two fitted constants; what they were fitted on and what is held
out is in their comments and benchmarks/LOG.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from perfscale.estimate.activations import layer_act_bytes
from perfscale.estimate.constants import ModelConstants
from perfscale.estimate.knobs import Knobs
from perfscale.specs.gemm_efficiency import k_factor as _k_factor
from perfscale.specs.gemm_efficiency import plateau

ATTENTION_EFFICIENCY = 0.6  # FlashAttention-2, the middle of its 50-73% of A100 peak (Dao 2023, abstract); as op_time.py
FLASH_BACKWARD = 2.5  # the backward kernel runs 2.5x the forward's FLOPs (5 matmuls for 2; Dao 2023 section 3)
MEMORY_BANDWIDTH_EFFICIENCY = 0.8  # elementwise kernels: achieved / peak HBM bandwidth (as op_time.py)
# Bytes a layer's memory-bound kernels move per byte it saves for backward (forward + backward together). Unfused
# (HF eager modules, fused_kernels False): the op model's memory-bound bytes per token per layer over
# activations.layer_act_bytes on GPT-2, Llama and BERT shapes (h 1024, s 512) at bf16-mixed / fp32 / bf16 x sdpa /
# eager: 3.9 to 14.1, median about 9 (LOG 2026-12-02). Fused (fused_kernels: fused norms, bias-GELU, bias-dropout-add,
# softmax, as Megatron-LM and production stacks run them): fitted, see SOFTWARE_EFFICIENCY.
MEMORY_TRAFFIC = 9.0
MEMORY_TRAFFIC_FUSED = 2.0
# What end-to-end training reaches of the GEMM table's plateau (framework gaps, kernels off their best shape,
# synchronisation), with MEMORY_TRAFFIC_FUSED: both chosen on a grid (S 0.70-0.95 x fused traffic 1-4) against the
# published runs of benchmarks/plan_vs_published.py (Megatron-LM Table 1, Llama 3 405B) and
# plan_vs_published_single_gpu.py (torchtune, llm-foundry MPT on A100 and H100), as the pair with the most of those 21
# rows within 15% (20; the worst, MPT-760m on H100, +17.5%). The unfused traffic (9) is the op model's, not fitted;
# the HF-guide V100 Trainer rows and benchmarks/plan_vs_published_trainer.py were not used to choose (held out).
SOFTWARE_EFFICIENCY = 0.75
# Cross-entropy over the logits per vocabulary entry per token, forward + backward: the logits written, upcast
# to fp32, log-softmax read and written, its gradient read and written, cast back (~6 fp32 passes).
LOSS_BYTES = 24.0
# Optimizer step traffic per trainable parameter (fp32 parameters and states; halved for 16-bit weights):
# fused AdamW reads parameter, gradient and both moments and writes three (28 B); torch's foreach AdamW runs ~9
# multi-tensor kernels over fp32 tensors (~80 B); SGD reads parameter and gradient and writes the parameter;
# Adafactor's factored update runs per-tensor reductions (the op model's 68 B per parameter); bitsandbytes 8-bit
# AdamW reads and writes 1-byte moments.
OPTIMIZER_BYTES = {"adamw_torch_fused": 28.0, "adamw_torch": 80.0, "sgd": 12.0, "adafactor": 68.0,
                   "adamw_bnb_8bit": 16.0}
# Per-parameter traffic around the optimizer step that scales with the parameters, not the tokens:
# the Trainer's gradient clipping (max_grad_norm 1.0 by default; Megatron-LM and composer clip at 1.0 too): the
# norm reads each gradient, the scaling reads and writes it (12 B per fp32 gradient, once per step);
# fp16 autocast's GradScaler.unscale_ reads and writes each fp32 gradient (8 B, once per step);
# autocast casts each fp32 weight to the 16-bit copy the matmuls read (4 B read + 2 B written) every forward, and
# its 16-bit gradient back into the fp32 .grad in backward (2 + 4 B): 12 B per parameter per micro-step.
# Counted over the trainable parameters on the device (LoRA's frozen base is cast too: not counted). With
# fused_kernels (Megatron-LM / TransformerEngine stacks) once a step: Megatron keeps 16-bit weight copies
# (Float16Module) and TransformerEngine caches the cast over a step's micro-batches (is_first_microbatch).
GRAD_CLIP_BYTES = 12.0
UNSCALE_BYTES = 8.0
AUTOCAST_BYTES = 12.0
# Host dispatch: eager PyTorch issues each forward op from Python (DISPATCH_SECONDS, op_time.py's fitted per-op
# cost), each backward op from autograd's C++ engine (BACKWARD_DISPATCH_SECONDS: assumed, a kernel launch and the
# engine's bookkeeping). Ops per layer as the op model records them for HF's GPT-2 / BERT (20 forward, 32 backward;
# autocast's casts 32 / 48) and RoPE/RMSNorm families (Llama: 46 / 74; autocast 56 / 90). Checkpointing runs the
# forward again from Python in backward.
FORWARD_OPS = {"plain": 20, "plain-autocast": 32, "rope": 46, "rope-autocast": 56}
BACKWARD_OPS = {"plain": 32, "plain-autocast": 48, "rope": 74, "rope-autocast": 90}
DISPATCH_SECONDS = 48e-6
BACKWARD_DISPATCH_SECONDS = 10e-6
ENCODER_FAMILIES = ("bert", "roberta")  # bidirectional attention: no causal mask


@dataclass(frozen=True)
class GpuCompute:
    """Seconds per step on one device of a replica's shard, by part (compute = what trains, recompute = extra)."""

    gemm: float
    attention: float
    memory: float
    optimizer: float
    casts: float
    recompute: float
    host_floor: float

    @property
    def compute(self) -> float:
        return max(self.gemm + self.attention + self.memory + self.optimizer + self.casts, self.host_floor)


def layer_k_factor(h: float, q: float, i: float, tp: int, matmul_layer: float, speed: float = 1.0) -> float:
    """The layer's GEMM K term, weighted by each GEMM's FLOPs; `speed`: the dtype's peak over the 16-bit one
    (the tile overhead shrinks relative to a slower K loop: K / (K + half_k x speed))."""
    def k_factor(kk: float) -> float:
        return _k_factor(kk / speed) if speed > 0 else 1.0

    out, down = q * h, i * h
    inward = max(matmul_layer - out - down, 0.0)
    total = inward + out + down
    if total <= 0:
        return 1.0
    return (inward * k_factor(h) + out * k_factor(q / tp) + down * k_factor(i / tp)) / total


def matmul_key(hw, precision, tf32: bool = False) -> str:
    """The catalogue peak the matmuls run at: the precision's compute dtype, or "tf32" for fp32 matmuls with
    TF32 allowed (RunConfig.tf32) on hardware that has it."""
    key = precision.peak_key
    return "tf32" if tf32 and key == "fp32" and hw.peak("tf32") else key


def _slowness(hw, peak: float) -> float:
    """The dtype's peak over the 16-bit tensor cores' (1 for bf16/fp16; fp32 on a V100: 15.7 / 125)."""
    fast = hw.peak("bf16") or hw.peak("fp16") or peak
    return min(1.0, peak / fast) if fast else 1.0


def software_efficiency(slow: float) -> float:
    """SOFTWARE_EFFICIENCY for a dtype `slow` times the 16-bit peak. What end-to-end training loses around its
    GEMMs (launch gaps, synchronisation, kernels between them) is time of its own, not a share of the GEMM's: a
    GEMM that runs `slow` times as fast loses that share times `slow` (the K term's argument, one level up).
    Motivated by the fp32 rows of benchmarks/plan_vs_published_trainer.py (V100: -21% with one factor for all
    dtypes), so those rows are no longer held out for it; no constant was fitted."""
    return 1.0 - (1.0 - SOFTWARE_EFFICIENCY) * slow


def _plateau_rate(k: Knobs, hw, peak: float, slow: float) -> float:
    """FLOP/s of a long-K GEMM in training: peak x the table's plateau x the software efficiency."""
    return peak * plateau(hw.name, matmul_key(hw, k.prec, k.tf32)) * software_efficiency(slow)


def gemm_rate(mc: ModelConstants, k: Knobs, hw, peak: float) -> float:
    """FLOP/s the layer's GEMMs run at on `hw`. The K term's overhead is a fixed time per output tile: a dtype
    with a slower peak than the 16-bit tensor cores amortises it over a K loop that many times shorter."""
    slow = _slowness(hw, peak)
    kf = layer_k_factor(mc.h, mc.q or mc.h, mc.i or 4 * mc.h, k.tp, mc.matmul_layer_active, slow)
    return _plateau_rate(k, hw, peak, slow) * kf


def gpu_compute(mc: ModelConstants, k: Knobs, hw, peak: float, tokens_replica: float, shards: int,
                backward_factor: float, trainable_on_device: float) -> GpuCompute:
    """The step's GPU time on one device (TP x PP x CP shards a replica's work; see the module docstring)."""
    bw = (hw.memory_bandwidth.value or 1e12) * MEMORY_BANDWIDTH_EFFICIENCY
    tokens = tokens_replica / shards  # token-layers of work on this device, in units of a full model's tokens
    passes = 1 + backward_factor
    gemm_fwd = 2.0 * (mc.layers * mc.matmul_layer_active + mc.head_matmul)
    rate = gemm_rate(mc, k, hw, peak)
    gemm = tokens * gemm_fwd * passes / rate
    attn_fwd = 4.0 * k.seq * mc.q * mc.layers
    if k.attn == "sdpa":
        causal = 0.5 if mc.model_type not in ENCODER_FAMILIES else 1.0
        attn_rate = peak * ATTENTION_EFFICIENCY * SOFTWARE_EFFICIENCY
        attn_f, attn_b = attn_fwd * causal / attn_rate, FLASH_BACKWARD * attn_fwd * causal / attn_rate
    else:
        attn_rate = _plateau_rate(k, hw, peak, _slowness(hw, peak))
        attn_f, attn_b = attn_fwd / attn_rate, 2 * attn_fwd / attn_rate
    attention = tokens * (attn_f + (attn_b if backward_factor >= 2 else attn_b / 2))
    # layer_act_bytes is per token of one layer on this device (already / tp); a device holds layers / pp
    # torch.compile (inductor) fuses the pointwise and normalisation ops into generated kernels, as fused_kernels
    # names for hand-written stacks: the same fused traffic (torchtune Llama 3.2 3B: compile +27% over eager, LOG).
    fused = k.fused_kernels or k.compile
    per_token_layer = (MEMORY_TRAFFIC_FUSED if fused else MEMORY_TRAFFIC) * layer_act_bytes(mc, k)
    lm_loss = LOSS_BYTES * mc.vocab if mc.has_lm_head else 0.0
    memory_fwd_share = 1.0 / 3.0  # the forward's share of a layer's memory-bound traffic (backward ~2x)
    memory = tokens_replica / max(1, k.cp) * (mc.layers / k.pp * per_token_layer + lm_loss / (k.tp * k.pp)) / bw
    w_scale = k.prec.weight_bytes / 4.0
    per_param = OPTIMIZER_BYTES.get(k.optimizer, 28.0) * w_scale + GRAD_CLIP_BYTES * w_scale
    if k.prec.loss_scaling:
        per_param += UNSCALE_BYTES
    cast_passes = 1 if k.fused_kernels else k.accum  # production stacks cast once a step (see AUTOCAST_BYTES)
    casts = AUTOCAST_BYTES * cast_passes * trainable_on_device / bw if k.prec.mixed else 0.0
    optimizer = trainable_on_device * per_param / bw
    recompute = 0.0
    if k.checkpointing:
        recompute = (tokens * gemm_fwd / rate + tokens * attn_f + memory * memory_fwd_share
                     + casts / 2)  # the recomputed forward casts the weights again
    elif k.selective_recompute:
        recompute = tokens * attn_f
    kind = ("rope" if mc.rms_norm and mc.model_type != "t5" else "plain") + ("-autocast" if k.prec.mixed else "")
    forward_host = FORWARD_OPS[kind] * DISPATCH_SECONDS * (2 if k.checkpointing else 1)
    host = k.accum * mc.layers / k.pp * (forward_host + BACKWARD_OPS[kind] * BACKWARD_DISPATCH_SECONDS)
    return GpuCompute(gemm, attention, memory, optimizer, casts, recompute, host)


__all__ = ["GpuCompute", "gpu_compute", "gemm_rate", "layer_k_factor", "matmul_key", "software_efficiency"]
