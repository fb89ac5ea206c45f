"""Training's activations per device: the bytes saved for backward per token of one layer (with TP, sequence
parallelism, selective recomputation, LoRA's frozen base), of a pipeline stage (checkpointing, autocast's
weight casts, RoPE tables, dropout masks) and of the output head, and the transients alive only in backward
(one layer's gradients, ring attention's K/V blocks, the embedding's incoming gradient).

The dynamic part of memory.py's peak candidates; memory.stage_memory adds these to the model states
(states.py).
"""

from __future__ import annotations

from perfscale.estimate import families
from perfscale.estimate.constants import PRECISION_BYTES, ModelConstants
from perfscale.estimate.knobs import Knobs


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


# The engine's hot path: the helpers below return plain tuples (a NamedTuple costs ~0.6 us to build here, x 8 per
# evaluation), named in each docstring and unpacked by name at the call.


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


__all__ = ["RING_BUFFERS", "RING_TENSORS", "backward_temporaries", "head_activations", "kept_logits", "layer_act_bytes",
           "lora_act_delta", "ring_buffers", "stage_activations"]
