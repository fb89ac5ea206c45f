"""Training memory per device: model states, activations, transients, and where the peak falls.

Peak = allocated tensor bytes (the same meaning as trace's `peak_bytes`); device overheads that are
not tensors (CUDA context, workspaces, fragmentation) are separate lines (overheads.py).

Peak candidates of one step (iteration >= 2, so optimizer state exists during forward/backward):
  backward start   static + saved activations + the loss head's transients (fp32 vocab x tokens)
  top layer bwd    static + saved activations - head + head grads + one layer's backward transient
  end of backward  static + all grads + the embedding's incoming gradient
  optimizer step   parameters + grads + optimizer state + the optimizer's temporaries
Derived from the order in which autograd frees saved tensors; tested against trace.

Context parallelism (RunConfig.cp; Megatron-Core context parallelism, Llama 3 section 3.3.2) splits
every sequence over cp ranks: each holds seq / cp tokens of every activation (the keys of its
attention still span the whole sequence, passed around the ring), the weights whole, and the
states sharded over the data-parallel x cp group (Megatron's distributed optimizer, torch FSDP's
dp_shard x cp mesh).
"""

from __future__ import annotations

from perfscale.config.optimizer import foreach_copy
from perfscale.estimate import families
from perfscale.estimate.constants import PRECISION_BYTES, ModelConstants
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


def lora_act_delta(mc: ModelConstants, k: Knobs, act_key: str) -> tuple[float, float]:
    """(per-layer, once) change in saved bytes per token when the base is frozen (LoRA).

    Derived from autograd's saved tensors under peft (see families.py); tested against trace.
    """
    _p, sb, cb = PRECISION_BYTES[act_key]
    autocast = sb == 4 and cb < 4
    targets = {t.split(".")[-1] for t in k.lora_targets} | set(k.lora_targets)
    every = "all-linear" in targets
    attn_t = len(targets & families.LORA_ATTN_IN) if not every else 3
    mlp_t = len(targets & families.LORA_MLP_IN) if not every else 2
    out_t = every or bool(targets & families.LORA_MLP_OUT)
    n_targets = len([n for n in mc.lora_dims if n in targets or n.split(".")[-1] in targets]) if not every else len(mc.lora_dims)
    h, t = mc.h, k.tp
    delta = 0.0
    n_norms = 1 if mc.parallel_block else 2
    if mc.rms_norm:
        delta -= n_norms * sb * h  # normalised input kept only for the (frozen) norm weight
    # Linear inputs after each norm: the recipe counts one copy per block (+ autocast extras).
    fan = {"attn": 3 if mc.model_type not in ("phi3", "gpt2", "gpt_neox", "falcon") else 1,
           "mlp": 2 if mc.model_type not in ("phi3", "gpt2", "gpt_neox", "falcon", "opt", "bert", "roberta") else 1}
    recipe_copies = (1 + (fan["attn"] - 1 if autocast else 0)) + (1 + (fan["mlp"] - 1 if autocast else 0))
    if autocast:
        kept = attn_t + mlp_t  # each targeted lora_A casts its own copy
    else:
        kept = (1 if attn_t else 0) + (1 if mlp_t else 0)
    delta -= (recipe_copies - kept) * cb * h
    out_names = {"o_proj", "dense", "out_proj", "c_proj", "o"}
    if not (every or targets & out_names):
        delta -= cb * mc.q / t  # the output projection's input copy (families._OUT_COPY)
    if mc.mlp_out_exclusive and not out_t:
        delta -= cb * mc.i / t
    delta += n_targets * k.lora_r * (cb if autocast else PRECISION_BYTES[act_key][2])  # lora_B inputs
    if mc.model_type in families.POST_NORM_FAMILIES:
        # the frozen head (a masked-LM head) does not keep the last LayerNorm's output
        return delta, -cb * h if mc.has_lm_head else 0.0
    # The first layer's norm input has no gradient upstream (frozen embeddings): nothing saved.
    once = -((4 * h + 4) if mc.rms_norm else (sb * h + 8))
    # The final norm keeps only its fp32 input and rsqrt; the frozen head keeps nothing.
    once -= (sb * h + cb * h) if mc.rms_norm else cb * h
    return delta, once


def kept_logits(mc: ModelConstants, k: Knobs, cb: float, tokens: float) -> float:
    """Bytes a custom training loop keeps by holding `outputs` (RunConfig.loop): the logits, b x s x vocab
    in the head's output dtype (the compute dtype; the loss's fp32 copy is its own). The Trainer's
    compute_loss returns the loss alone, so they are freed before backward (FIELD-NOTES: Qwen2.5-0.5B
    +5.8% at b4 s1024 to +11.7% at b8 s2048 with checkpointing). A classifier's logits are negligible."""
    if k.loop != "custom" or not mc.has_lm_head:
        return 0.0
    return tokens * mc.vocab / k.tp * cb


def layer_act_bytes(mc: ModelConstants, k: Knobs, compute_override: str | None = None, program: str = "cuda") -> float:
    """Saved activation bytes per token of one layer, with TP / SP / selective recomputation.

    Korthikanti et al. 2022, section 4.2: TP splits the attention and MLP internals (units q, kv, i,
    heads, hs) by t; sequence parallelism also splits the LayerNorm/dropout parts (h, one);
    selective recomputation drops the attention-score terms (hs) and recomputes them.
    program: "cuda" or "cpu", whose dropout keeps different masks (families.DROPOUT_SITES).
    """
    table = mc.act_fused if k.fused_kernels else mc.act
    key = compute_override or k.precision
    rep, split, per_s = table[(key, k.attn)]
    if mc.dropout_act:
        d_rep, d_split, d_per_s = mc.dropout_act[(program, key, k.attn)]
        rep, split, per_s = rep + d_rep, split + d_split, per_s + d_per_s
    t = k.tp
    if k.selective_recompute:
        per_s = 0.0
    return (rep / t if k.sequence_parallel else rep) + split / t + per_s * k.seq / t


def stage_layers(mc: ModelConstants, k: Knobs, rank: int) -> tuple[float, list[float]]:
    """(transformer layers on pipeline rank `rank`, layers of each of its `pp_virtual` chunks).

    Layers are split evenly (fractionally) over p x v chunks; chunk c of rank r holds slice
    c * p + r (Megatron-LM interleaved assignment, Narayanan et al. 2021 section 2.2.2). With
    `pp_embedding_as_layer` the embedding and the head/loss each take one layer slot, so the first chunk
    of the first rank holds one layer fewer and the last chunk of the last rank likewise (Llama 3,
    Dubey et al. 2024 section 3.3.2: "the first model chunk on the first stage has only the
    embedding, and the last model chunk on the last stage has only output projection and loss").
    """
    p, v = k.pp, k.pp_virtual
    slots = mc.layers + (2 if k.pp_embedding_as_layer else 0)
    per_chunk = slots / (p * v)
    chunks = [per_chunk] * v
    if k.pp_embedding_as_layer:
        if rank == 0:
            chunks[0] = max(0.0, chunks[0] - 1)
        if rank == p - 1:
            chunks[-1] = max(0.0, chunks[-1] - 1)
    return sum(chunks), chunks


def live_layer_batches(k: Knobs, rank: int, chunks: list[float]) -> float:
    """Layer x micro-batch activation sets alive on pipeline rank `rank` when its first backward starts.

    1F1B (PipeDream-Flush, Narayanan et al. 2021 section 2.2.1): rank r runs p - r warm-up
    forwards, so rank 0 keeps p micro-batches of its L/p layers = L layers of one micro-batch.
    Interleaved (section 2.2.2; Megatron-LM schedules.py): 2(p - r - 1) + (v - 1) p warm-up chunk
    forwards plus one, in groups of p micro-batches through chunk 0, 1, ..., v - 1; for rank 0 this
    is L (1 + (p - 1)/(p v)) layers, Korthikanti et al. 2022 section 4.2.3.
    """
    p, v, m = k.pp, k.pp_virtual, k.accum
    if p == 1:
        return chunks[0]
    if v == 1:
        return min(p - rank, m) * chunks[0]
    total = min(2 * (p - rank - 1) + (v - 1) * p + 1, v * m)
    full, rest = divmod(total, p)
    return sum(p * chunks[j % v] for j in range(full)) + rest * chunks[full % v]


def regime(k: Knobs) -> tuple[float, float, float, float, float, str]:
    """(param, grad, optimizer-state dtype, master-weight bytes, activation precision key, label).

    torch autocast ("-mixed", no ZeRO/FSDP): fp32 params/grads/states, 16-bit casts of the weights
    saved for backward. DeepSpeed ZeRO with mixed precision: 16-bit params and grads, fp32 master
    + optimizer states = 12 bytes/param for Adam (Rajbhandari et al. 2020, section 3.1).
    FSDP2 MixedPrecisionPolicy(param_dtype=16-bit): fp32 sharded params/grads/states, the model
    runs in 16 bits on the all-gathered copies.
    """
    prec = k.prec
    pb, mixed = prec.weight_bytes, prec.mixed
    half = prec.compute_dtype  # the plain 16-bit precision the model runs in
    if mixed and k.zero:
        return 2, 2, 4, 4, half, "deepspeed-mixed"
    if mixed and k.fsdp:
        return 4, 4, 4, 0, half, "fsdp-mixed"
    return pb, pb, pb, 0, prec.name, "autocast" if mixed else "plain"


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


def stage_activations(mc: ModelConstants, k: Knobs, act_key: str, label: str, program: str, first: bool,
                      layers_stage: float, live: float, tokens: float, sb: float, cb: float) -> tuple[float, float, float]:
    """Activation bytes of a stage per device: `live` layer x micro-batch sets of `tokens` tokens (layer_act_bytes,
    LoRA's changes, checkpointing's layer inputs), autocast's weight casts, RoPE tables, the embedding's dropout mask.
    Returns (saved: kept for backward when the first backward starts; recompute: what checkpointing recomputes
    for a layer in backward, 0 without it; bottom: the bottom layer's activations during its own backward)."""
    tp = k.tp
    lora = k.lora_r is not None
    a_layer = layer_act_bytes(mc, k, act_key, program)
    # The embedding output's dropout mask, kept until the bottom layer's backward is done (none
    # under LoRA: the frozen embedding's output needs no gradient), per micro-batch in flight.
    embed_mask = mc.dropout_embed.get((program, act_key), 0.0) if first and not lora else 0.0
    embed_mask /= tp if k.sequence_parallel else 1
    lora_once = 0.0
    if lora:
        d_layer, lora_once = lora_act_delta(mc, k, act_key)
        a_layer += d_layer
    rep_h = sb * mc.h / (tp if k.sequence_parallel else 1)
    if k.checkpointing:
        saved = live * rep_h * tokens  # each layer keeps its input (Chen et al. 2016)
        recompute = a_layer * tokens
    else:
        saved = live * a_layer * tokens
        recompute = 0.0
    casts = mc.matmul_layer / tp * cb  # one layer's 16-bit weight copies
    if label == "autocast":
        # autocast's 16-bit weight copies are saved for backward (torch autocast cast cache).
        if lora:
            saved += (1 if k.checkpointing else layers_stage) * casts
        elif k.checkpointing:
            recompute += casts
        else:
            saved += layers_stage * casts
    rope = mc.rope_per_seq[act_key] * k.seq / k.cp  # cos + sin of this rank's positions
    saved += rope
    saved += embed_mask * tokens * (live / layers_stage if layers_stage else 1.0)
    if lora and not k.checkpointing and first:
        saved += lora_once * tokens
    bottom = (a_layer * tokens + (rep_h * tokens if k.checkpointing else 0.0) + embed_mask * tokens
              + (casts if label == "autocast" else 0.0) + rope)
    return saved, recompute, bottom


def head_activations(mc: ModelConstants, k: Knobs, act_key: str, label: str, tokens: float, cb: float) -> tuple[float, float]:
    """(saved, backward-start transient) bytes of the output head on the last stage."""
    if mc.has_lm_head:
        v = mc.vocab / k.tp
        # final norm + fp32 log-softmax output + int64 labels (transformers ForCausalLMLoss upcasts
        # logits to fp32; cross_entropy = log_softmax + nll_loss saves the log-softmax output)
        # A loss that does not upcast (BERT/RoBERTa masked LM, T5: CrossEntropyLoss on the logits)
        # runs log-softmax in the logits' dtype, which is fp32 anyway under fp32 or CUDA autocast.
        lb = 4 if (mc.lm_loss_upcast or label == "autocast" or cb == 4) else cb
        saved = (mc.head_rep[act_key] + lb * v + 8) * tokens
        if mc.final_softcap:
            # tanh(logits / cap) * cap (Gemma2ForCausalLM): tanh keeps its output, in the logits' dtype
            saved += cb * v * tokens
        if label == "autocast":
            saved += mc.head_matmul / k.tp * cb
        # backward start: the grads of the log-softmax output and of the fp32 logits alive
        # together, while the int64 labels are already freed.
        return saved, (2 * lb * v - 8) * tokens
    if mc.task != "base":
        # a classifier head (sequence / token classification, question answering, multiple choice)
        # reads the final norm's output; its logits are num_labels (or 2, or 1) wide: negligible
        return mc.head_rep[act_key] * tokens, 0.0
    return 0.0, 0.0


def backward_temporaries(mc: ModelConstants, k: Knobs, first: bool, tokens: float, sb: float, cb: float,
                         grad_b: float, gshard: int) -> tuple[float, float, float, float]:
    """Bytes alive only during backward: (layer: one layer's backward, the gradients of its widest intermediates
    and of the residual stream, + the ring's K/V blocks under cp; in_layer: a gated MLP's extra at its peak inside
    the layer; embedding: end of backward, the embedding's incoming gradient + a tied weight's two gradients;
    tied_grad: a tied embedding's accumulated gradient, 0 when untied)."""
    tp = k.tp
    lora = k.lora_r is not None
    # One layer's backward: gradients of its widest intermediates (two for a gated MLP, whose
    # product rule needs both branches' gradients; OPT's ReLU likewise; one for GELU MLPs) and of the residual stream.
    wide = 2 if mc.model_type in families.GATED_FAMILIES + ("opt",) else 1  # ReLU saves its output too
    # Inside a gated layer's backward the peak falls in the MLP: the down projection's input (the
    # product) and the activation output are freed by then, the down projection's weight gradient
    # exists, and two more h-wide gradients (residual and norm) are alive. Fitted to the traces of
    # llama / mistral / qwen2 / phi3 (tiny, b8 s64, checkpointing: +2.0% -> within 0.1%).
    in_layer = 0.0
    if mc.model_type in families.GATED_FAMILIES and not lora:
        in_layer = tokens * (2 * mc.h * sb - 2 * mc.i * cb) / tp + mc.i * mc.h * grad_b / tp / gshard
    layer_trans = tokens * (wide * mc.i * cb + 2 * mc.h * sb) / tp
    if k.cp > 1:
        layer_trans += ring_buffers(mc, k, tokens, cb)
    emb_trans = tokens * mc.h * sb if first else 0.0
    tied_grad = 0.0
    if first and not lora and mc.params_head == 0 and mc.has_lm_head:
        # A tied embedding: autograd sums the weight's two gradients (the head's, held since the
        # head's backward, and the embedding's dense V x h gradient) before accumulating them, so
        # the end of backward holds both and their sum (trace of GPT-2 small, b2 s256: 3 x V x h fp32
        # temporaries beside every other gradient; the peak under checkpointing, -10.7% without this).
        tied_grad = mc.params_embed / tp * grad_b / gshard
        emb_trans += 2 * tied_grad
    return layer_trans, in_layer, emb_trans, tied_grad


# Ring attention's point-to-point buffers in one layer's backward: two (the block being used and the one
# arriving), each holding K, V and their gradients dK, dV of one rank's chunk (TransformerEngine's
# AttnFuncWithCPAndKVP2P, used by Megatron-Core context parallelism: p2p_comm_buffers of 2 x kv shape).
RING_BUFFERS, RING_TENSORS = 2, 4


def ring_buffers(mc: ModelConstants, k: Knobs, tokens: float, cb: float) -> float:
    """Bytes of the ring's K/V (and dK/dV) blocks in flight in a layer's backward under context parallelism;
    `tokens` are this rank's (seq / cp of each sequence), K and V in the compute dtype, heads split by TP."""
    return RING_BUFFERS * RING_TENSORS * tokens * mc.kv / k.tp * cb


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


def train_memory(mc: ModelConstants, k: Knobs, world: int, program: str = "cuda") -> dict:
    """Per-device training memory of the worst pipeline stage. Returns plain numbers.

    program: "cuda" (GPUs and the default trace) or "cpu": the CPU program's dropout noise, and
    torch's per-parameter AdamW loop instead of CUDA's foreach (config/optimizer.py)."""
    dtypes = regime(k)
    if k.pp == 1:
        return stage_memory(mc, k, world, program, "only", dtypes)
    first, last = stage_memory(mc, k, world, program, "first", dtypes), stage_memory(mc, k, world, program, "last", dtypes)
    return last if last["peak"] > first["peak"] else first


def stage_memory(mc: ModelConstants, k: Knobs, world: int, program: str, stage: str, dtypes: tuple | None = None) -> dict:
    """Training memory of one pipeline stage (first | last | only): the peak candidates of the module
    docstring, the largest of them, and its breakdown. dtypes: regime(k), when the caller has it."""
    pb, gb, stb, master, act_key, label = dtypes or regime(k)
    _p, sb, cb = PRECISION_BYTES[act_key]
    tp, pp = k.tp, k.pp
    shard = k.fsdp if k.fsdp else max(1, world // (tp * pp))  # ZeRO shards over data parallel x cp
    lora = k.lora_r is not None
    # this rank's tokens: multiple choice runs b x choices sequences; context parallelism holds seq / cp of each
    tokens = k.batch * k.seq * mc.sequences_per_example / k.cp
    first, last = stage in ("first", "only"), stage in ("last", "only")
    layers_stage, chunks = stage_layers(mc, k, 0 if first else pp - 1)
    live = live_layer_batches(k, 0 if first else pp - 1, chunks)

    _p_dev, head_w, trainable, frozen, t_pb, t_gb, t_stb = stage_weights(mc, k, first, last, layers_stage, pb, gb, stb)
    params, grads, opt, host = sharded_states(mc, k, trainable, frozen, t_pb, t_gb, t_stb, master, shard)
    gather, gather_bwd = gathered_units(mc, k, t_pb, label, first, cb, pb, tokens)
    saved, recompute, bottom_acts = stage_activations(mc, k, act_key, label, program, first, layers_stage, live, tokens, sb, cb)
    head_saved, head_trans = head_activations(mc, k, act_key, label, tokens, cb) if last else (0.0, 0.0)
    gshard = shard if (k.zero >= 2 or k.fsdp) else 1  # gradients sharded (ZeRO-2/3, FSDP)
    layer_trans, in_layer, emb_trans, tied_grad = backward_temporaries(mc, k, first, tokens, sb, cb, t_gb, gshard)
    opt_temp = optimizer_temporaries(mc, k, trainable, t_pb, t_stb, label, program, shard)

    grads_in_static = k.accum > 1  # accumulated gradients persist between micro-steps
    static = params + opt + (grads if grads_in_static else 0.0)
    head_grad = 0.0 if grads_in_static or lora else head_w * t_gb / gshard
    # Bottom layer's backward: every other layer's gradients exist, only this layer's
    # activations (recomputed under checkpointing) are left.
    g_layer = 0.0 if lora else mc.params_layer / tp * t_gb / gshard
    # A tied embedding already holds the head's gradient before the bottom layer runs.
    tied = mc.params_head == 0 and mc.has_lm_head
    g_embed = 0.0 if (lora or tied or not first) else mc.params_embed / tp * t_gb / gshard
    bottom_grads = grads if grads_in_static else max(0.0, grads - g_layer - g_embed)
    # phase: (total, activations, temporaries)
    cands = {
        "backward-bottom": (params + opt + gather + bottom_grads + bottom_acts + layer_trans + in_layer, bottom_acts,
                            layer_trans),
        "backward": (static + gather + gather_bwd + saved + head_saved + head_trans, saved + head_saved,
                     head_trans + gather_bwd),
        "backward-layers": (static + gather + saved + head_grad + layer_trans + recompute + in_layer,
                            saved + recompute, layer_trans),
        # (the tied weight's gradient is not accumulated yet: a temporary, as the trace counts it)
        "backward-end": (static + gather + (0.0 if grads_in_static else grads) + emb_trans, 0.0,
                         emb_trans + (0.0 if grads_in_static else tied_grad)),
        "optimizer": (params + grads + opt + opt_temp, 0.0, opt_temp),
    }
    kept = kept_logits(mc, k, cb, tokens) if last else 0.0
    if kept:  # a custom loop's `outputs`: alive from the forward to the next forward, every phase
        cands = {c: (total + kept, a + kept, t) for c, (total, a, t) in cands.items()}
    phase = max(cands, key=lambda c: cands[c][0])
    peak, act_bytes, temps = cands[phase]
    if phase in ("backward-end", "optimizer") or grads_in_static:
        grads_at = grads - (tied_grad if phase == "backward-end" and not grads_in_static else 0.0)
    else:
        grads_at = {"backward-layers": head_grad, "backward-bottom": bottom_grads}.get(phase, 0.0)
    return {
        "peak": peak,
        "phase": "optimizer" if phase == "optimizer" else "backward",  # every other candidate is in backward
        "breakdown": {
            "parameters": params + (gather if phase != "optimizer" else 0.0),
            "gradients": grads_at,
            "optimizer_state": opt,
            "activations": act_bytes,
            "temporaries": temps,
            "kv_cache": 0.0,
            "other": 0.0,
        },
        "trainable": trainable * (pp * tp),
        "optimizer_peak": cands["optimizer"][0],
        "stage": stage,
        "host": host,
    }
