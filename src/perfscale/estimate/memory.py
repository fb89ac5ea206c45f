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

The pieces: model states (parameters, gradients, optimizer state, their sharding and offload) in states.py;
activations and backward's transients in activations.py; this file lays the layers out over pipeline stages
and adds the pieces up into the peak candidates above.
"""

from __future__ import annotations

from perfscale.config.deepspeed import bucket_bytes
from perfscale.estimate.activations import (
    RING_BUFFERS,
    RING_TENSORS,
    backward_temporaries,
    head_activations,
    kept_logits,
    layer_act_bytes,
    lora_act_delta,
    ring_buffers,
    stage_activations,
)
from perfscale.estimate.constants import PRECISION_BYTES, ModelConstants
from perfscale.estimate.knobs import Knobs
from perfscale.estimate.states import (
    fsdp_root,
    QUANT_BYTES,
    UNITS_IN_FLIGHT,
    gathered_units,
    is_lora_target,
    lora_params,
    model_states,
    optimizer_bytes,
    optimizer_temporaries,
    regime,
    sharded_states,
    stage_weights,
)


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
    root, root_reduce, root_grads = (fsdp_root(mc, k, first, last, label, t_pb, cb, t_gb, shard) if (k.fsdp and not lora)
                                     else (0.0, 0.0, 0.0))
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
    # FSDP's root (fsdp_root): gathered through forward and backward; at the loss it is the only unit gathered (every
    # layer resharded after its forward). At the end of backward the root's unsharded gradients wait for its
    # reduce-scatter (its sharded ones do not exist yet) beside the bottom layer's (gather_bwd); in fp32 its
    # gathered parameters are still there, under mixed precision they are resharded and the gradients are
    # reduced from an fp32 copy. Checked against the FSDP2 trace (benchmarks/LOG.md 2026-12-02 16:40).
    at_loss = root if root else gather
    if root:
        at_end = (root_reduce if root_reduce else root) + root - (0.0 if grads_in_static else root_grads) + gather_bwd
    else:
        at_end = gather
    cands = {
        "backward-bottom": (params + opt + gather + root + bottom_grads + bottom_acts + layer_trans + in_layer, bottom_acts,
                            layer_trans),
        "backward": (static + at_loss + gather_bwd + saved + head_saved + head_trans, saved + head_saved,
                     head_trans + gather_bwd),
        "backward-layers": (static + gather + root + saved + head_grad + layer_trans + recompute + in_layer,
                            saved + recompute, layer_trans),
        # (the tied weight's gradient is not accumulated yet: a temporary, as the trace counts it)
        "backward-end": (static + at_end + (0.0 if grads_in_static else grads) + emb_trans, 0.0,
                         emb_trans + (0.0 if grads_in_static else tied_grad)
                         + (root + root_reduce + gather_bwd if root else 0.0)),
        "optimizer": (params + grads + opt + opt_temp, 0.0, opt_temp),
    }
    kept = kept_logits(mc, k, cb, tokens) if last else 0.0
    if kept:  # a custom loop's `outputs`: alive from the forward to the next forward, every phase
        cands = {c: (total + kept, a + kept, t) for c, (total, a, t) in cands.items()}
    # gloo (the CPU backend) has no native reduce-scatter / all-gather-into-tensor: c10d runs them through a
    # full-size temporary, the largest unit's (measured under torchrun: benchmarks/LOG.md 2026-12-02 04:00, one
    # and at times two alive at a rank's peak; NCCL has none). One is counted, outside the optimizer step.
    gloo = max(root_reduce or root, mc.params_layer / tp * t_pb) if (root and program == "cpu") else 0.0
    # DeepSpeed's gradient-reduction buckets (config/deepspeed.py): allocated whole and kept from the first
    # backward on, so in every phase's peak after the first step.
    buckets = 0.0 if k.fsdp else bucket_bytes(k.zero, mc.h, t_gb)
    if gloo or buckets:
        cands = {c: (total + buckets + (0.0 if c == "optimizer" else gloo), a, t + (0.0 if c == "optimizer" else gloo))
                 for c, (total, a, t) in cands.items()}
    phase = max(cands, key=lambda c: cands[c][0])
    peak, act_bytes, temps = cands[phase]
    if phase in ("backward-end", "optimizer") or grads_in_static:
        # at the end of backward: the tied weight's gradient and FSDP's root's sharded ones are not there yet
        grads_at = grads - ((tied_grad + root_grads) if phase == "backward-end" and not grads_in_static else 0.0)
    else:
        grads_at = {"backward-layers": head_grad, "backward-bottom": bottom_grads}.get(phase, 0.0)
    return {
        "peak": peak,
        "phase": "optimizer" if phase == "optimizer" else "backward",  # every other candidate is in backward
        "breakdown": {
            "parameters": params + {"backward": at_loss, "backward-end": (0.0 if root_reduce else root) if root else gather,
                                    "optimizer": 0.0}.get(phase, gather + root),
            "gradients": grads_at,
            "optimizer_state": opt,
            "activations": act_bytes,
            "temporaries": temps,
            "kv_cache": 0.0,
            "other": buckets,
        },
        "trainable": trainable * (pp * tp),
        "optimizer_peak": cands["optimizer"][0],
        "stage": stage,
        "host": host,
    }


# What callers import from here: this file's own functions, and the pieces from states.py and activations.py.
__all__ = [
    "PRECISION_BYTES", "QUANT_BYTES", "RING_BUFFERS", "RING_TENSORS", "UNITS_IN_FLIGHT", "backward_temporaries",
    "gathered_units", "head_activations", "is_lora_target", "kept_logits", "layer_act_bytes", "live_layer_batches",
    "lora_act_delta", "lora_params", "model_states", "optimizer_bytes", "optimizer_temporaries", "regime", "ring_buffers",
    "sharded_states", "stage_activations", "stage_layers", "stage_memory", "stage_weights", "train_memory",
]
