"""Training's model states per device: parameters, gradients and optimizer state in the dtypes of the
precision regime, sharded by ZeRO / FSDP, offloaded to host memory (ZeRO-Offload), or a frozen
(quantized) base under LoRA's adapters; ZeRO-3 / FSDP's gathered units; the optimizer step's temporaries.

The static part of memory.py's peak candidates; memory.stage_memory adds these to the activations
(activations.py).
"""

from __future__ import annotations

from perfscale.config.optimizer import foreach_copy
from perfscale.estimate.constants import ModelConstants
from perfscale.estimate.knobs import Knobs


# Bytes per weight of a frozen quantized base (QLoRA / weight-only quantization).
# int8: 1 byte + one fp16 scale per output row (negligible, ignored); int4: 4 bits + an fp16 scale
# and zero per group of 128 (GPTQ/AWQ default group size); nf4: 4 bits + 8-bit absmax per 64 weights
# and fp32 second-level scales per 256 blocks (bitsandbytes double quantization; QLoRA paper
# Dettmers et al. 2023, section 3: 0.127 bits/param of constants).
QUANT_BYTES = {"none": None, "int8": 1.0, "int4": 0.5 + 4 / 128, "nf4": 0.5 + 0.127 / 8}
# FSDP / ZeRO-3: unsharded units in flight (the one computing + one prefetched).
UNITS_IN_FLIGHT = 2


def optimizer_bytes(mc: ModelConstants, optimizer: str, state_bytes: int, trainable: float, lora: bool) -> float:
    """Optimizer state bytes per trainable parameter (excluding fp32 master weights).

    `optimizer` is a Trainer `optim` name, built as the Trainer builds it (config/optimizer.py).
    AdamW: m and v (Loshchilov & Hutter 2019; torch keeps them in the parameter dtype); SGD as the
    Trainer builds it has no momentum, so no state; 8-bit AdamW: two uint8 states + one fp32 absmax
    per 2048-block (Dettmers et al. 2022, blockwise quantization); Adafactor: factored second
    moment, rows + cols per matrix (Shazeer & Stern 2018), beta1=None (transformers' default, no
    first moment).
    """
    if optimizer in ("adamw_torch_fused", "adamw_torch"):
        return 2.0 * state_bytes
    if optimizer == "sgd":
        return 0.0
    if optimizer == "adamw_bnb_8bit":
        return 2.0 + 2 * 4 / 2048
    if optimizer == "adafactor":
        if lora or trainable <= 0:
            return 0.1 * state_bytes  # adapters: r x d matrices, rows + cols ~ (r + d) / (r d)
        return state_bytes * mc.adafactor_elems / mc.params_total
    return 2.0 * state_bytes


def is_lora_target(name: str, targets: tuple[str, ...]) -> bool:
    """Whether a layer's linear `name` gets an adapter (peft matches by name or suffix)."""
    return name in targets or name.split(".")[-1] in targets or "all-linear" in targets


def lora_params(mc: ModelConstants, r: int, targets: tuple[str, ...]) -> float:
    """Adapter parameters: r x (in + out) per targeted linear per layer (Hu et al. 2021)."""
    total = 0
    for name, (n_in, n_out) in mc.lora_dims.items():
        if is_lora_target(name, targets):
            total += r * (n_in + n_out)
    return total * mc.layers


def model_states(trainable: float, param_b: float, grad_b: float, opt_b: float, stage: int, nd: int) -> tuple[float, float, float]:
    """(parameters, gradients, optimizer state) bytes per device under ZeRO stage 0-3 over nd ranks.

    Rajbhandari et al. 2020 ("ZeRO", section 5, Figure 1): stage 1 shards the optimizer state
    (P_os), stage 2 also the gradients (P_os+g), stage 3 also the parameters (P_os+g+p).
    FSDP full shard = stage 3.
    """
    return (trainable * param_b / (nd if stage >= 3 else 1),
            trainable * grad_b / (nd if stage >= 2 else 1),
            trainable * opt_b / (nd if stage >= 1 else 1))


def regime(k: Knobs) -> tuple[float, float, float, float, float, str]:
    """(param, grad, optimizer-state dtype, master-weight bytes, activation precision key, label).

    torch autocast ("-mixed", no ZeRO/FSDP): fp32 params/grads/states, 16-bit casts of the weights
    saved for backward. DeepSpeed ZeRO with mixed precision: 16-bit params and grads, fp32 master
    + optimizer states = 12 bytes/param for Adam (Rajbhandari et al. 2020, section 3.1).
    FSDP2 MixedPrecisionPolicy(param_dtype=16-bit): fp32 sharded params/grads/states, the model
    runs in 16 bits on the all-gathered copies. DeepSpeed ZeRO in fp32 still keeps its fp32 master partition,
    a copy beside the (fp32) model weights: 4 more bytes a parameter, sharded with the optimizer state
    (DeepSpeed 0.19 stage_1_and_2.py: `single_partition_of_fp32_groups` is `.clone().float()` of the partition
    whatever the dtype; stage3.py likewise `fp32_partitioned_groups_flat`).
    """
    prec = k.prec
    pb, mixed = prec.weight_bytes, prec.mixed
    half = prec.compute_dtype  # the plain 16-bit precision the model runs in
    if mixed and k.zero:
        return 2, 2, 4, 4, half, "deepspeed-mixed"
    if mixed and k.fsdp:
        return 4, 4, 4, 0, half, "fsdp-mixed"
    return pb, pb, pb, 4 if (k.zero and pb == 4) else 0, prec.name, "autocast" if mixed else "plain"


# The engine's hot path: the helpers below return plain tuples (a NamedTuple costs ~0.6 us to build here, x 8 per
# evaluation), named in each docstring and unpacked by name at the call.


def stage_weights(mc: ModelConstants, k: Knobs, first: bool, last: bool, layers_stage: float, pb: float, gb: float,
                  stb: float) -> tuple[float, float, float, float, float, float, float]:
    """The parameters of a stage, split by TP, and which of them train (all, or LoRA's adapters on a frozen base):
    (params: on this device, every layer of the stage + the embedding/head where it has them; head: the output
    head's weights, its own or the tied embedding of an LM head, 0 off the last stage; trainable: trainable
    parameters on this device, the adapters under LoRA; frozen_bytes: a LoRA base's (quantized) bytes, else 0;
    param_b, grad_b, state_b: bytes per trainable parameter, per gradient and per optimizer-state element)."""
    tp, pp = k.tp, k.pp
    layer_params = mc.params_layer / tp
    embed, head = mc.params_embed / tp, mc.params_head / tp
    # pipelined, a tied LM head keeps its own copy of the embedding on the last stage
    tied_copy = mc.params_embed / tp if (mc.params_head == 0 and mc.has_lm_head and pp > 1) else 0.0
    p_dev = layers_stage * layer_params + (embed if first else 0.0) + ((head + tied_copy) if last and pp > 1 else (head if last else 0.0))
    # the output head's weights: its own, or the tied embedding of an LM head (a classifier's are tiny, in `other`)
    head_dev = (head if head else (embed if mc.has_lm_head else 0.0)) if last else 0.0
    if k.lora_r is None:
        return p_dev, head_dev, p_dev, 0.0, pb, gb, stb
    trainable = lora_params(mc, k.lora_r, k.lora_targets) / pp / tp
    qb = QUANT_BYTES.get(k.quantization) or pb
    # Embeddings and the head stay in the 16/32-bit dtype under bitsandbytes quantization.
    embed_dev = embed if first else 0.0
    frozen_bytes = (p_dev - embed_dev - head_dev) * qb + (embed_dev + head_dev) * pb
    return p_dev, head_dev, trainable, frozen_bytes, 4, 4, 4  # peft keeps adapters in fp32 (autocast_adapter_dtype=True)


def sharded_states(mc: ModelConstants, k: Knobs, trainable: float, frozen_bytes: float, param_b: float, grad_b: float,
                   state_b: float, master: float, shard: int) -> tuple[float, float, float, float]:
    """(params, grads, optimizer state, host) bytes per device: ZeRO stage or FSDP over `shard` ranks
    (model_states), then ZeRO-Offload of the optimizer state (and the parameters) to host memory."""
    lora = k.lora_r is not None
    opt_per = optimizer_bytes(mc, k.optimizer, state_b, trainable, lora) + (master if not lora else 0)
    full_shard = k.zero == 3 or bool(k.fsdp)
    params, grads, opt = model_states(trainable, param_b, grad_b, opt_per, 3 if k.fsdp else k.zero, shard)
    params += frozen_bytes / (shard if full_shard else 1)
    host = 0.0
    if k.offload != "none":
        # ZeRO-Offload (Ren et al. 2021, section 4.1): optimizer states and fp32 master weights
        # live in CPU memory, and each gradient partition is copied to the CPU as soon as it is
        # reduced, so the device keeps only the unit being reduced (DeepSpeed's memory
        # estimator, estimate_zero2/3_model_states_mem_needs: GPU = largest layer with
        # offload). Host per device: the states + an fp32 (state-dtype) gradient partition;
        # with parameter offload also the 16-bit parameter partition (+ a frozen base):
        # 16 + 2 = 18 bytes/parameter for mixed-precision Adam, as DeepSpeed's estimator
        # counts (its 1.5x pinned-buffer margin is not added).
        host = opt + trainable * state_b / shard
        opt = 0.0
        grads = mc.params_layer / k.tp * grad_b if not lora else 0.0
    if k.offload == "optimizer+params":
        host += params
        params = 0.0
    return params, grads, opt, host


def gathered_units(mc: ModelConstants, k: Knobs, param_b: float, label: str, first: bool, cb: float, pb: float,
                   tokens: float) -> tuple[float, float]:
    """(forward, backward) bytes of the unsharded units in flight under ZeRO-3 / FSDP / parameter offload."""
    layer_params = mc.params_layer / k.tp
    lora = k.lora_r is not None
    gather = 0.0
    if k.zero == 3 or k.fsdp or k.offload == "optimizer+params":
        # Unsharded copies of the units in flight, in the compute dtype (FSDP2 all-gather output).
        if lora:
            gather = UNITS_IN_FLIGHT * layer_params * (QUANT_BYTES.get(k.quantization) or pb)
        else:
            gather = UNITS_IN_FLIGHT * layer_params * (cb if label in ("fsdp-mixed", "deepspeed-mixed") else param_b)
    gather_bwd = 0.0
    if k.fsdp and not lora:
        # FSDP2 backward: one unit's unsharded gradients (reduce-scatter input, compute dtype)
        # beside the gathered parameters; with a 16-bit param_dtype the root also keeps the
        # fp32 embedding output and its cast. Derived from the FSDP2 trace (FSDPMemTracker).
        gather_bwd = layer_params * (cb if label == "fsdp-mixed" else param_b)
        if label == "fsdp-mixed" and first:
            gather_bwd += tokens * mc.h * 4
    return gather, gather_bwd


def fsdp_root(mc: ModelConstants, k: Knobs, first: bool, last: bool, label: str, param_b: float, cb: float,
              grad_b: float, shard: int) -> tuple[float, float, float]:
    """Bytes of FSDP2's root unit unsharded on this stage: the embedding (first stage) and an untied output head
    (last), everything outside the per-layer units (trace/fsdp.py wraps each layer, then the model). fully_shard
    does not reshard the root after forward, so its all-gathered copy (the param_dtype: 16-bit under mixed
    precision) lives from the first forward op to the end of backward, and its unsharded gradients, the same size,
    wait for the root's reduce-scatter, the step's last (FSDP2 _fsdp_state: the root's post_forward_mesh_info is
    None). Measured by the FSDP2 trace: the whole root, and no layer unit, is gathered at the loss.
    Returns (unsharded bytes, the fp32 copy its 16-bit gradients are reduced in (MixedPrecisionPolicy
    reduce_dtype=fp32; 0 without mixed precision), the root's sharded gradient bytes: not yet there before its
    reduce-scatter)."""
    n = ((mc.params_embed if first else 0) + (mc.params_head if last else 0)) / k.tp
    mixed = label == "fsdp-mixed"
    return n * (cb if mixed else param_b), n * 4 if mixed else 0.0, n * grad_b / shard


def optimizer_temporaries(mc: ModelConstants, k: Knobs, trainable: float, param_b: float, state_b: float, label: str,
                          program: str, shard: int) -> float:
    """Temporaries of the optimizer step (config/optimizer.py: as the Trainer builds the optimizer on `program`)."""
    lora = k.lora_r is not None
    if k.offload != "none" or (k.zero and label == "deepspeed-mixed"):
        return 0.0
    oshard = shard if (k.zero >= 1 or k.fsdp) else 1
    if foreach_copy(k.optimizer, program):
        # foreach AdamW (CUDA): sqrt(v) + eps for every parameter at once
        return trainable * state_b / oshard
    if k.optimizer == "adamw_torch" and not lora:
        # the per-parameter loop (CPU): sqrt(v) and sqrt(v) / bias_correction of one
        # parameter alive together, the largest one's (torch.optim.adamw._single_tensor_adamw;
        # tiny llama: trace +4,195,328 B = 2 x its 2048 x 256 fp32 embedding). LoRA: adapter-sized, not counted.
        return 2 * mc.largest_matrix / k.tp * state_b / oshard
    if k.optimizer == "adafactor":
        big = (mc.largest_matrix if not lora else 0) / k.tp
        return big * 4 * (2 if param_b == 4 else 4)  # (grad^2 + eps) and the update, fp32
    return 0.0


__all__ = ["QUANT_BYTES", "UNITS_IN_FLIGHT", "fsdp_root", "gathered_units", "is_lora_target", "lora_params", "model_states",
           "optimizer_bytes", "optimizer_temporaries", "regime", "sharded_states", "stage_weights"]
