"""The TPU branch of the time model: MXU padding, bf16-only matmuls, collectives on the ICI torus, DCN.

- MXU tile: the MXU multiplies 128x128 tiles (256x256 on v6e); 'weight matrices need to be padded to at least
  size 128 (256 on TPU v6) in both dimensions' (How to Scale Your Model, part 2,
  https://jax-ml.github.io/scaling-book/tpus/). Compute time counts every matmul with its dimensions rounded
  up to the tile (hidden, q/kv widths, MLP width, vocabulary, head dimension, sequence in attention); MFU
  counts the model's own FLOPs, so padding shows as lost MFU.
- Precision: TPUs multiply in bf16. fp16 has no MXU mode (refused: `hardware_problems`); fp32 runs at XLA's
  HIGHEST precision as 6 bf16 passes (jax.lax.Precision docs), so its rate is bf16 peak / 6.
- Collectives: ring collectives per torus axis (part 3 of the same book, https://jax-ml.github.io/scaling-book/sharding/):
  an all-gather or reduce-scatter of V bytes takes (n-1)/n x V / B, B the group's bandwidth per chip from
  specs/tpu.TpuSlice.group_bandwidth (per axis: one link each way on a torus axis, one way on a mesh axis);
  an all-reduce is both. Layout: tensor parallel innermost (stride 1), data parallel over the rest of the slice.
- FSDP (XLA SPMD, ZeRO-3-like): parameters all-gathered for forward and again for backward, gradients
  reduce-scattered, per micro-step, over the FSDP group; overlapped with compute (XLA async collectives,
  MaxText's --xla_tpu_enable_async_collective_fusion flags). When the FSDP group is one slice of several, the
  gradient shards are then all-reduced across slices over DCN once per step (MaxText's dcn_data_parallelism),
  overlapped with backward. Plain data parallel: one gradient all-reduce per step (in-slice reduce-scatter,
  cross-slice all-reduce of the shard over DCN, in-slice all-gather).
"""

from __future__ import annotations

from perfscale.estimate.constants import ModelConstants

# XLA's HIGHEST precision for f32 matmuls on TPU: 6 bf16 passes (jax.lax.Precision: 'HIGHEST: ... 6 passes').
FP32_PASSES = 6


def pad(n: float, tile: int) -> float:
    """n rounded up to a multiple of the MXU tile (0 stays 0)."""
    if n <= 0:
        return 0.0
    return float(-(-int(round(n)) // tile) * tile)


def padded_flops_per_token(mc: ModelConstants, seq: float, tile: int) -> float:
    """Forward FLOPs per token as the MXU runs them: estimate.time.flops_per_token with every matmul dimension
    padded to the tile. The layer's linear weights are split into attention (h x (q + 2 kv) in, q x h out) and
    the rest (the MLP: h and i dimensions); the attention core pads the head dimension and the sequence."""
    h, q, kv, i = mc.h, mc.q, mc.kv, mc.i
    attn = 2.0 * h * q + 2.0 * h * kv
    mlp = max(0.0, mc.matmul_layer_active - attn)
    ph = pad(h, tile)
    attn_p = 2.0 * ph * pad(q, tile) + 2.0 * ph * pad(kv, tile)
    mlp_p = mlp * (ph / h) * (pad(i, tile) / i) if h and i else mlp
    head = mc.head_matmul
    head_p = pad(mc.vocab, tile) * ph if mc.vocab and head else head
    heads = mc.heads or 1
    head_dim = mc.head_dim or q / heads
    core_p = 4.0 * pad(seq, tile) * pad(head_dim, tile) * heads * mc.layers
    return 2.0 * (mc.layers * (attn_p + mlp_p) + head_p) + core_p


def ring(n: int) -> float:
    return (n - 1) / n if n > 1 else 0.0


def all_gather_seconds(tpu, n: int, stride: int, total_bytes: float, link_efficiency: float) -> float:
    """An all-gather (or reduce-scatter) of `total_bytes` (the whole gathered array) over `n` chips of a slice
    that are `stride` apart: (n-1)/n x bytes / (ring bandwidth per chip x link efficiency). No per-hop latency
    (~1 us per hop, Scaling Book part 3): small arrays are latency-bound and take longer than this."""
    return ring(n) * total_bytes / (tpu.group_bandwidth(n, stride) * link_efficiency)


def train_comm(mc: ModelConstants, k, tpu, per_node: int, nodes: int, gbytes: float, compute: float,
               link_efficiency: float) -> dict:
    """Communication of one training step on a TPU slice (or slices): times in seconds per chip.

    gbytes: the gradient (and 16-bit parameter) bytes of the trainable parameters on this chip before data
    parallel sharding (already divided by tp x pp)."""
    tp, pp = k.tp, k.pp
    in_slice = max(1, per_node // (tp * pp))  # data-parallel chips within one slice
    dp = in_slice * nodes
    dcn = tpu.dcn_bandwidth * link_efficiency
    shard_full = k.zero == 3 or bool(k.fsdp)
    fsdp = (k.fsdp or dp) if shard_full else 0
    out: dict = {"dp": 0.0, "dp_overlappable": 0.0, "tp": 0.0, "pp": 0.0}
    if shard_full:
        # The FSDP group: within a slice when it fits there, else across slices (DCN carries the gathers).
        group_in = min(fsdp, in_slice)
        gathers = 3 * all_gather_seconds(tpu, group_in, tp * pp, gbytes * k.accum, link_efficiency)
        if fsdp > in_slice:  # the rest of the FSDP group is across slices: its share of every gather is on DCN
            span = fsdp // in_slice
            gathers += 3 * ring(span) * gbytes / group_in * k.accum / dcn
        if fsdp >= in_slice:  # FSDP covers the slice: the replicas are whole slices, over DCN
            across = 2 * ring(dp // fsdp) * gbytes / fsdp / dcn
        else:  # hybrid sharding inside a slice: replicas of the FSDP group over ICI, then over DCN
            replicas_in = in_slice // fsdp
            ici_r = tpu.group_bandwidth(replicas_in, tp * pp * fsdp) * link_efficiency
            across = 2 * ring(replicas_in) * gbytes / fsdp / ici_r
            across += 2 * ring(nodes) * gbytes / in_slice / dcn if nodes > 1 else 0.0
        out["dp"] = gathers + across
        out["dp_overlappable"] = compute  # gathers prefetched under forward, reductions under backward
    elif dp > 1:
        ici = tpu.group_bandwidth(in_slice, tp * pp) * link_efficiency
        within = 2 * ring(in_slice) * gbytes / ici
        across = 2 * ring(nodes) * gbytes / in_slice / dcn if nodes > 1 else 0.0
        out["dp"] = within + across
        out["dp_overlappable"] = compute * 2 / 3 / k.accum  # the last micro-step's backward
    if tp > 1:
        ici = tpu.group_bandwidth(min(tp, per_node), 1) * link_efficiency
        n_ar = 4 + (2 if k.checkpointing else 0)
        out["tp"] = n_ar * (mc.layers / pp) * 2 * ring(tp) * k.batch * k.seq * mc.h * k.prec.compute_bytes * k.accum / ici
    if pp > 1:
        link = tpu.ici_link_bandwidth * link_efficiency
        out["pp"] = 2 * k.pp_virtual * k.accum * k.batch * k.seq * mc.h * k.prec.compute_bytes / tp / link
    return out
