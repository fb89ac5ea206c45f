"""A CPU training step as the operations it runs, timed from this machine's calibration.

One scalar efficiency cannot follow a CPU across model sizes: small GEMMs run far below the vector
peak and larger ones much closer to it (benchmarks/LOG.md 2026-11-27: efficiency fitted on a 7M
model predicted a 29M model 31% too slow). So on a CPU with a calibration, the step is the sum of
its operations, each timed at its own shape by `perfscale.measure.cpu_probe`:
  - every linear layer: forward x @ W^T, input gradient g @ W, weight gradient g^T @ x (the three
    GEMMs of torch's linear backward; a frozen LoRA base skips the weight gradient), the LM head too;
  - attention: the SDPA kernel (or the eager matmul-softmax-matmul) forward, and forward+backward,
    with the attention dropout when the model has one (CPU SDPA then runs its math kernel);
  - dropout on the residual branches and the embedding output (families.DROPOUT_SITES): the
    random mask, the scaling multiply and its backward, per element;
  - the loss: cross-entropy over the vocabulary, forward and backward, in fp32 as transformers'
    ForCausalLMLoss upcasts;
  - the optimizer step over the trainable parameters (the same torch optimizer bench builds);
  - framework time: every aten call the step dispatches costs a few microseconds whatever its
    size (the count is taken from the model's own program cut to 1 and 2 layers, the per-call cost
    from a chain of tiny autograd operations); it is what a small model at a short sequence spends
    beyond its kernels;
  - everything else (norms, rotary, activations, residual adds, casts, the embedding gradient) as
    memory traffic: ELEMENTWISE_TRAFFIC x the bytes autograd saves, at the measured elementwise
    bandwidth.
Checkpointing re-runs each layer's forward operations (and a third of the elementwise traffic).
Only decoder-only dense families on one device are described this way; anything else (MoE,
encoder-decoder, tensor or pipeline parallelism, quantized bases, 8-bit optimizers) keeps the
efficiency model, and a plan says per configuration which model timed it.
"""

from __future__ import annotations

from dataclasses import dataclass

from perfscale.estimate.constants import ModelConstants
from perfscale.estimate.knobs import Knobs
from perfscale.estimate.memory import is_lora_target, lora_params

# Bytes the elementwise operations move per byte autograd saves: each saved tensor is written in
# the forward, read in the backward, and a gradient of its size written (derived, not fitted: a
# fit on this machine's measurements, benchmarks/plan_vs_cpu.py, was not identifiable under its
# noise, landing between -0.5 and 26 across runs, on a term worth 1-5% of the step).
ELEMENTWISE_TRAFFIC = 3.0
CALIBRATED_FAMILIES = ("llama", "mistral", "qwen2", "gemma2", "phi3", "gpt2", "gpt_neox", "falcon", "opt")
CALIBRATED_OPTIMIZERS = ("adamw_torch_fused", "adamw_torch", "sgd", "adafactor")


@dataclass(frozen=True)
class Op:
    """`coef` x the time of `signature` at `size`; phase: fwd (re-run under checkpointing) or other."""

    signature: str
    size: int
    coef: float
    phase: str


def calibration_applies(calibration, hw, world: int, efficiency: float | None) -> bool:
    """Whether a calibration may time this step: one CPU device, and no efficiency given explicitly."""
    return calibration is not None and efficiency is None and hw.kind == "cpu" and world == 1


def unsupported(mc: ModelConstants, k: Knobs) -> str | None:
    """Why this configuration has no operation-level CPU model (None when it has one)."""
    if mc.model_type not in CALIBRATED_FAMILIES or mc.is_encoder_decoder or not mc.has_lm_head:
        return f"{mc.model_type} is not a dense decoder-only family with an operation model"
    if k.mode != "train":
        return "only training steps have an operation model"
    # ZeRO/FSDP and offload on one device (the only case the caller times) run the same operations
    if k.tp > 1 or k.pp > 1 or k.quantization != "none":
        return "tensor/pipeline-parallel and quantized steps have no operation model"
    if k.optimizer not in CALIBRATED_OPTIMIZERS:
        return f"optimizer {k.optimizer} has no CPU probe"
    if k.selective_recompute or k.fused_kernels or k.compile:
        return "selective recomputation, fused kernels and torch.compile have no operation model"
    return None


def _linear_ops(fan_in: int, fan_out: int, tokens: int, dtype: str, trainable: bool, count: float) -> list[Op]:
    shape = f"{fan_in},{fan_out}:{dtype}"
    ops = [Op(f"linear_fwd:{shape}", tokens, count, "fwd"), Op(f"linear_dgrad:{shape}", tokens, count, "bwd")]
    if trainable:
        ops.append(Op(f"linear_wgrad:{shape}", tokens, count, "bwd"))
    return ops


def _fwd_bwd_ops(kind: str, shape: str, size: int, count: float, fwd_phase: str = "fwd", backward: bool = True) -> list[Op]:
    """An operation timed forward alone and forward+backward: the backward is their difference."""
    ops = [Op(f"{kind}_fwd:{shape}", size, count, fwd_phase)]
    if backward:
        ops += [Op(f"{kind}_fwdbwd:{shape}", size, count, "bwd"), Op(f"{kind}_fwd:{shape}", size, -count, "bwd")]
    return ops


def step_ops(mc: ModelConstants, k: Knobs) -> list[Op]:
    """The timed operations of one micro-step (forward, loss, backward), then the optimizer step
    (phase "opt"), which runs once per optimizer step whatever the accumulation."""
    dtype = k.prec.peak_key
    tokens = k.batch * k.seq
    lora = k.lora_r is not None
    ops: list[Op] = []
    for name, (fan_in, fan_out) in mc.lora_dims.items():  # every linear of a layer, (in, out)
        ops += _linear_ops(fan_in, fan_out, tokens, dtype, not lora, mc.layers)
        if lora and is_lora_target(name, k.lora_targets):
            ops += _linear_ops(fan_in, k.lora_r, tokens, dtype, True, mc.layers)
            ops += _linear_ops(k.lora_r, fan_out, tokens, dtype, True, mc.layers)
    sites = dict(mc.dropout_sites)
    attn = "sdpa" if k.attn == "sdpa" else "eager_attn"
    probs = f",{mc.dropout:g}" if sites.get("probs") else ""  # attention dropout probability
    ops += _fwd_bwd_ops(attn, f"{mc.heads},{mc.kv_heads},{k.seq},{mc.head_dim}{probs}:{dtype}", k.batch, mc.layers)
    if sites.get("layer"):
        ops += _fwd_bwd_ops("dropout", dtype, tokens * mc.h, sites["layer"] * mc.layers)
    mlp = sites.get("mlp", 0) + sites.get("mlp_gated", 0)
    if mlp:
        ops += _fwd_bwd_ops("dropout", dtype, tokens * mc.i, mlp * mc.layers)
    if sites.get("embed"):  # on the embedding output, in the parameter dtype; no gradient under LoRA
        embed_dtype = k.prec.weight_dtype
        ops += _fwd_bwd_ops("dropout", embed_dtype, tokens * mc.h, sites["embed"], "embed", backward=not lora)
    ops += [Op(op.signature, op.size, op.coef, "head") for op in _linear_ops(mc.h, mc.vocab, tokens, dtype, not lora, 1)]
    ops.append(Op(f"cross_entropy:{mc.vocab}:fp32", tokens, 1, "head"))
    ops.append(Op(dispatch_signature(mc, k), mc.layers, 1, "framework"))
    param_dtype = k.prec.weight_dtype
    trainable = lora_params(mc, k.lora_r, k.lora_targets) if lora else mc.params_total
    ops.append(Op(f"optimizer:{k.optimizer}:{param_dtype}", int(trainable), 1.0, "opt"))
    return ops


def dispatch_signature(mc: ModelConstants, k: Knobs) -> str:
    """The framework-time operation of a step: which program (family, GQA or not, knobs), sized by layers."""
    lora = f"{k.lora_r},{'+'.join(sorted(k.lora_targets))}" if k.lora_r is not None else "0,"
    return (f"dispatch:{mc.model_type},{mc.heads},{mc.kv_heads}:{k.precision},{k.attn},{int(k.checkpointing)},"
            f"{k.optimizer},{lora}:{k.seq}")


def elementwise_bytes(mc: ModelConstants, k: Knobs) -> float:
    """Bytes autograd saves in one micro-step's layers, plus the final norm and the logits (fp32).
    Without dropout masks: the dropout probes time their own traffic."""
    rep, split, per_s = mc.act[(k.precision, k.attn)]
    tokens = k.batch * k.seq
    return tokens * (mc.layers * (rep + split + per_s * k.seq) + mc.head_rep[k.precision] + 4 * mc.vocab)


def probe_list(mc: ModelConstants, k: Knobs) -> list[tuple[str, int]]:
    """(signature, size) pairs a calibration needs for this configuration."""
    return sorted({(op.signature, op.size) for op in step_ops(mc, k)})


def calibrated_compute(mc: ModelConstants, k: Knobs, calibration,
                       traffic: float = ELEMENTWISE_TRAFFIC) -> tuple[float, float] | None:
    """(compute seconds, recompute seconds) of one optimizer step (accum micro-steps), or None when
    the calibration lacks an operation this configuration runs. `traffic`: the elementwise
    coefficient (0: the timed operations alone, as benchmarks/plan_vs_cpu.py splits them)."""
    if calibration is None or calibration.bandwidth is None or unsupported(mc, k):
        return None
    fwd = micro = optimizer = 0.0
    for op in step_ops(mc, k):
        seconds = calibration.seconds(op.signature, op.size)
        if seconds is None:
            return None
        if op.phase == "opt":
            optimizer += op.coef * seconds
            continue
        micro += op.coef * seconds
        if op.phase == "fwd":
            fwd += op.coef * seconds
    traffic_s = traffic * elementwise_bytes(mc, k) / calibration.bandwidth
    compute = (micro + traffic_s) * k.accum + optimizer
    recompute = (fwd + traffic_s / 3) * k.accum if k.checkpointing else 0.0
    return compute, recompute
