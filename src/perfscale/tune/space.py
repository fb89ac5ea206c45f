"""The one knob space of a model on a topology, shared by `plan` (estimated) and `tune` (measured,
tune/train_space.py adds the knobs only a measurement can decide): every open knob's values.

A knob the user fixed has one value; an open knob (None) takes the values below. Choices a
hardware cannot run natively (e.g. bf16 without native bf16 matmuls) are left out of open knobs.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from perfscale.config.run_config import CACHE_IMPLEMENTATIONS, KNOB_FIELDS, KNOB_SEARCH, KV_CACHE_DTYPES, QUANTIZATION
from perfscale.config.run_config import OFFLOAD as OFFLOAD_CHOICES
from perfscale.estimate.knobs import Knobs

# The knobs the search opens in each mode (the RunConfig fields with _knob(search=...), in declaration order;
# the values tried are below). micro_batch is no field: the workload's batch x accumulation split (train_space).
TRAIN_OPEN = (*(name for name in KNOB_FIELDS if "train" in KNOB_SEARCH.get(name, ())), "micro_batch")
INFER_OPEN = tuple(name for name in KNOB_FIELDS if "infer" in KNOB_SEARCH.get(name, ()))
# Memory savers, switched on one after another (memory_savers) only while a configuration does not fit.
# Interleaved 1F1B chunks per pipeline device tried when pp_virtual is open (Narayanan et al. 2021
# section 2.2.2: the bubble falls as 1/v, the point-to-point traffic grows as v).
PP_VIRTUAL_CHOICES = (1, 2, 4, 8)
# Deepest pipeline searched: the deepest in Megatron-LM's scaling table (1T parameters on 3072 GPUs:
# tensor 8 x pipeline 64; Narayanan et al. 2021, table 1). Llama 3 405B trained with pipeline 16.
MAX_PIPELINE_STAGES = 64
# Context parallelism is searched only where it can help, long sequences: each rank keeps at least
# CP_MIN_TOKENS of every sequence. Ring attention hides a K/V block's transfer (2 x chunk x kv x bytes)
# behind that block's attention (4 x chunk^2 x q FLOPs), so the chunk must be long: on H100s over
# 400 Gb/s InfiniBand a Llama-style GQA layer hides it from ~1,400 tokens a rank (989 TFLOP/s x 0.45
# against 50 GB/s x 0.8). The published layouts set the bar higher: Llama 3 405B (Dubey et al. 2024,
# section 3.3.2) pretrained at 8,192 tokens without CP and used cp 16 at 131,072 tokens, 8,192 a rank;
# Megatron-Core's context-parallel docs recommend CP for long sequences (8K and more). So cp opens at
# 16,384 tokens (cp 2) and keeps the search of 8K-token runs as it was.
CP_MIN_TOKENS = 8192


def prime_factors(n: int) -> dict[int, int]:
    """{prime: exponent} of n >= 1 by trial division: at most sqrt(n) steps, fewer for smooth n."""
    factors: dict[int, int] = {}
    d = 2
    while d * d <= n:
        while n % d == 0:
            factors[d] = factors.get(d, 0) + 1
            n //= d
        d += 1 if d == 2 else 2
    if n > 1:
        factors[n] = factors.get(n, 0) + 1
    return factors


def divisors(*ns: int) -> list[int]:
    """Sorted divisors of the product of ns, from their factorisations (so the work is bounded by the
    number of divisors and sqrt of each factor, never by the product's value: batch x accumulation
    of 2^24 each is instant)."""
    factors: dict[int, int] = {}
    for n in ns:
        for prime, power in prime_factors(n).items():
            factors[prime] = factors.get(prime, 0) + power
    out = [1]
    for prime, power in factors.items():
        out = [d * prime**k for d in out for k in range(power + 1)]
    return sorted(out)


# Optimizer *implementations* of AdamW (the same update, other kernels): always searched. Other
# algorithms change what is trained: only when the user allows it (allow_optimizer_change).
SAME_ALGORITHM = ("adamw_torch", "adamw_torch_fused")
OTHER_ALGORITHMS_CPU = ("sgd", "adafactor")  # bitsandbytes' 8-bit AdamW needs CUDA
OTHER_ALGORITHMS_GPU = ("sgd", "adafactor", "adamw_bnb_8bit")


def train_precisions(hw) -> tuple[list[str], list[str]]:
    """Training precisions the hardware runs natively (a peak entry for the dtype), and why others
    are left out."""
    out, notes = ["fp32"], []
    if hw.peak("bf16"):
        out.append("bf16-mixed")
    else:
        notes.append(f"bf16 left out: {hw.name} has no native bf16 matmuls ({hw.peak_flops['bf16'].source})")
        if hw.kind != "cpu" and hw.peak("fp16"):
            out.append("fp16-mixed")
    if hw.kind == "cpu":
        notes.append("fp16 left out on CPU: no loss scaling for CPU training, and no native fp16 matmuls on most CPUs")
    return out, notes


def train_optimizers(hw, allow_change: bool) -> tuple[list[str], list[str]]:
    """Trainer `optim` names searched, and the note when other algorithms are left out."""
    if allow_change:  # bitsandbytes' 8-bit AdamW is CUDA-only: not on CPUs or TPUs
        return list(SAME_ALGORITHM + (OTHER_ALGORITHMS_GPU if hw.kind == "gpu" else OTHER_ALGORITHMS_CPU)), []
    return list(SAME_ALGORITHM), ["optimizer: only AdamW implementations (fused, foreach/loop); other algorithms "
                                  "change training: allow them with --allow-optimizer-change"]


def attention_choices(measured: bool) -> tuple[str, ...]:
    """sdpa always; eager only where it is measured: in the estimate eager never takes less time or
    memory than sdpa (it materialises the score matrix), but measured on CPU at short sequences it can
    be faster (the sdpa dispatch costs more than the small matmuls it replaces)."""
    return ("sdpa", "eager") if measured else ("sdpa",)


def infer_precisions(hw) -> list[str]:
    out = [p for p in ("bf16", "fp16") if hw.peak(p)][:1]
    return out + ["fp32"]


def tp_choices(heads: int, world: int, per_node: int) -> list[int]:
    # TP stays inside a node (its all-reduces are on the critical path) and divides the heads.
    return [t for t in divisors(world) if t <= per_node and heads % t == 0]


def pp_choices(layers: int, world_over_tp: int) -> list[int]:
    return [p for p in divisors(world_over_tp) if p <= layers and p <= MAX_PIPELINE_STAGES]


def cp_choices(seq: int, world_over_tp_pp: int) -> list[int]:
    """Context-parallel degrees for sequences of `seq` tokens: 1, and every degree dividing the devices left
    after tp x pp whose load-balanced split works (seq a multiple of 2 cp: RunConfig.cp) and leaves each rank
    CP_MIN_TOKENS or more of the sequence."""
    return [c for c in divisors(world_over_tp_pp) if c == 1 or (seq % (2 * c) == 0 and seq // c >= CP_MIN_TOKENS)]


def _pick(fixed: dict, name: str, options: list) -> list:
    return [fixed[name]] if fixed.get(name) is not None else options


def pipeline_schedulable(pp: int, virtual: int, accum: int) -> bool:
    """Whether `accum` micro-batches can be scheduled on `pp` stages with `virtual` chunks each: 1F1B
    needs at least p micro-batches, and interleaving runs them in groups of p (Megatron-LM)."""
    return (pp == 1 or accum >= pp) and (virtual == 1 or accum % pp == 0)


def parallel_layouts(world: int, per_node: int, heads: int, layers: int, fixed: dict | None = None,
                     pp_embedding_as_layer: bool = False, seq: int = 0) -> Iterator[dict]:
    """Every way to lay a training step over `world` devices: tp x pp x cp x data parallel, with the data
    parallel sharding (none, ZeRO 1-3, FSDP full shard over all replicas), CPU offload and the
    interleaving degree. Yields dicts of tp, pp, cp, zero, fsdp, offload, pp_virtual; knobs in `fixed`
    keep the user's value. Context parallelism is searched for sequences of `seq` tokens (cp_choices;
    0: not searched, cp 1 unless fixed). Micro-batch rules (pipeline_schedulable) are the caller's."""
    fixed = fixed or {}
    for tp in _pick(fixed, "tp", tp_choices(heads, world, per_node)):
        if world % tp:
            continue
        for pp in _pick(fixed, "pp", pp_choices(layers, world // tp)):
            if world % (tp * pp):
                continue
            # ZeRO and FSDP shard over the data-parallel x context-parallel ranks (they hold the same weights)
            shard_group = world // (tp * pp)
            # The embedding and the head as pipeline layer slots (Megatron-LM's account-for-embedding/loss
            # in the pipeline split; Llama 3 405B: 126 layers + 2 = 16 stages x 8 chunks): open with pp > 1.
            as_layer = [pp_embedding_as_layer] if fixed.get("pp_embedding_as_layer") is not None or pp == 1 \
                else [False, True]
            for cp in _pick(fixed, "cp", cp_choices(seq, shard_group) if seq else [1]):
                if shard_group % cp:
                    continue
                for embedding_as_layer in as_layer:
                    for layout in _sharded_layouts(fixed, tp, pp, shard_group, layers + (2 if embedding_as_layer else 0),
                                                   embedding_as_layer):
                        layout["cp"] = cp
                        yield layout


def _sharded_layouts(fixed: dict, tp: int, pp: int, dp: int, slots: int, embedding_as_layer: bool) -> Iterator[dict]:
    """The data-parallel sharding, offload and interleaving choices of one tp x pp layout."""
    virtuals = [v for v in _pick(fixed, "pp_virtual", list(PP_VIRTUAL_CHOICES)) if v == 1 or (1 < pp and pp * v <= slots)]
    if fixed.get("fsdp") is not None:
        shardings = [(0, fixed["fsdp"])] if fixed["fsdp"] <= dp and dp % fixed["fsdp"] == 0 else []
    elif fixed.get("zero") is not None:
        shardings = [(fixed["zero"], None)]
    else:
        # One device still gains from ZeRO-3 with offload (ZeRO-Infinity); with pp > 1 it does not.
        shardings = [(0, None)] + ([(1, None), (2, None), (3, None), (0, dp)] if dp > 1 else [(3, None)] if pp == 1 else [])
    for (zero, fsdp), offload, virtual in itertools.product(
        shardings, _pick(fixed, "offload", list(OFFLOAD_CHOICES)), virtuals
    ):
        # DeepSpeed offloads the optimizer with ZeRO stage 1-3 (its offload_optimizer), the
        # parameters with stage 3 only; FSDP offloads both (CPUOffload).
        if offload != "none" and not (zero or fsdp):
            continue
        if offload == "optimizer+params" and not (zero == 3 or fsdp):
            continue
        yield {"tp": tp, "pp": pp, "zero": zero, "fsdp": fsdp, "offload": offload, "pp_virtual": virtual,
               "pp_embedding_as_layer": embedding_as_layer}


def tpu_layouts(layouts: Iterator[dict], fixed: dict, world: int, per_node: int) -> Iterator[dict]:
    """The layouts XLA SPMD runs on a TPU slice (PyTorch/XLA's FSDPv2 and tensor sharding, MaxText's mesh):
    data parallel, FSDP (ZeRO-3-like) and tensor parallel, with FSDP inside each slice and data parallel across
    slices when there are several (MaxText's ici_fsdp / dcn_data). ZeRO stages (FSDP is the SPMD form of stage 3),
    pipeline stages, context parallelism and CPU offload are GPU-stack (DeepSpeed / Megatron) knobs: searched only
    when given."""
    for layout in layouts:
        if (layout["pp"] > 1 and fixed.get("pp") is None) or (layout["zero"] and fixed.get("zero") is None) \
                or (layout["offload"] != "none" and fixed.get("offload") is None) or (layout["cp"] > 1 and fixed.get("cp") is None):
            continue
        yield layout
        in_slice = per_node // (layout["tp"] * layout["pp"])
        if layout["fsdp"] and world > per_node and fixed.get("fsdp") is None and 1 < in_slice < layout["fsdp"]:
            yield dict(layout, fsdp=in_slice)  # FSDP over ICI in each slice, data parallel over DCN


def train_space(base: Knobs, fixed: dict, heads: int, layers: int, world: int, per_node: int, hw,
                allow_optimizer_change: bool = False, global_batch: int | None = None) -> Iterator[Knobs]:
    """All training configurations the estimate ranks: `fixed` maps knob -> value for the knobs the
    user gave. tune/train_space.py searches the same values and adds what only measurement decides.

    Without `global_batch` each data-parallel replica runs base.batch x base.accum sequences a step, so
    the global batch grows with the data-parallel degree. With it (sequences per optimizer step over all
    replicas, as large runs fix it: Llama 3 trained at 16M tokens a step), a layout whose data-parallel
    degree divides it runs global_batch / dp sequences per replica, split into every micro-batch that
    divides that (or the accumulation the user fixed)."""
    precisions = _pick(fixed, "precision", train_precisions(hw)[0])
    optimizers = _pick(fixed, "optimizer", train_optimizers(hw, allow_optimizer_change)[0])
    ckpts = _pick(fixed, "checkpointing", [False, True])
    attns = _pick(fixed, "attn", list(attention_choices(measured=False)))
    per_replica = base.batch * base.accum
    micro = [base.batch] if fixed.get("grad_accum") is not None else [m for m in divisors(base.batch, base.accum) if m <= base.batch]
    # context parallelism: a GPU training stack's knob (Megatron-Core, TransformerEngine, torch's context_parallel)
    layouts = parallel_layouts(world, per_node, heads, layers, fixed, base.pp_embedding_as_layer,
                               seq=base.seq if hw.kind == "gpu" else 0)
    if hw.kind == "tpu":
        layouts = tpu_layouts(layouts, fixed, world, per_node)
    for layout in layouts:
        pp, virtual = layout["pp"], layout["pp_virtual"]
        reps, micros = per_replica, micro
        if global_batch is not None:
            dp = world // (layout["tp"] * pp * layout["cp"])  # the cp ranks of a replica share its sequences
            if global_batch % dp:
                continue
            reps = global_batch // dp
            accum_given = fixed.get("grad_accum")
            if accum_given is not None:
                micros = [reps // accum_given] if reps % accum_given == 0 else []
            else:
                micros = divisors(reps)
        for precision, optimizer, ckpt, attn, mb in itertools.product(precisions, optimizers, ckpts, attns, micros):
            if layout["cp"] > 1 and attn != "sdpa":  # ring attention runs blockwise kernels (RunConfig.cp)
                continue
            accum = reps // mb
            if not pipeline_schedulable(pp, virtual, accum):
                continue
            yield base.copy(precision=precision, optimizer=optimizer, checkpointing=ckpt, attn=attn, batch=mb,
                            accum=accum, **layout)


def memory_savers(k: Knobs, fixed: dict, hw) -> list[Knobs]:
    """`k`, then `k` with each open memory saver switched on in turn, cheapest first: sequence parallelism
    (with tp > 1: norm and dropout activations split over the tensor group at the same communication
    volume, Korthikanti et al. 2022 section 4.2.2), fused RMSNorm/SwiGLU kernels (fewer saved
    activations; Trainer's use_liger_kernel), then selective recomputation (attention's softmax and
    dropout recomputed: a few % more FLOPs, Korthikanti et al. section 5), which only matters without
    full checkpointing. The estimate charges the first two no step time, so the first variant that fits
    is the fastest of them; plan evaluates them in this order and stops at the first that fits.
    GPU training stacks only (Megatron-LM, TransformerEngine, Liger-Kernel)."""
    out = [k]
    if k.mode != "train" or hw.kind != "gpu":
        return out
    if k.tp > 1 and not k.sequence_parallel and fixed.get("sequence_parallel") is None:
        out.append(out[-1].copy(sequence_parallel=True))
    if not k.fused_kernels and fixed.get("fused_kernels") is None:
        out.append(out[-1].copy(fused_kernels=True))
    if not k.checkpointing and not k.selective_recompute and fixed.get("selective_recompute") is None:
        out.append(out[-1].copy(selective_recompute=True))
    return out


# Weight quantization on a TPU: PyTorch/XLA's quantized matmul (torch_xla.experimental.xla_quantized_matmul,
# https://docs.pytorch.org/xla/release/r2.8/perf/quantized_ops.html) runs int8 and blockwise int4 weights;
# bitsandbytes' nf4 is CUDA-only.
TPU_QUANTIZATION = ("none", "int8", "int4")


def infer_space(base: Knobs, fixed: dict, heads: int, world: int, per_node: int, hw) -> Iterator[Knobs]:
    kv_dtypes = _pick(fixed, "kv_cache_dtype", [d for d in KV_CACHE_DTYPES if d != "fp8" or hw.peak("fp8")])
    quants = [q for q in QUANTIZATION if hw.kind != "tpu" or q in TPU_QUANTIZATION]
    for precision, quant, kvd, tp, attn, cache in itertools.product(
        _pick(fixed, "precision", infer_precisions(hw)), _pick(fixed, "quantization", quants), kv_dtypes,
        _pick(fixed, "tp", tp_choices(heads, world, per_node)), _pick(fixed, "attn", list(attention_choices(measured=False))),
        _pick(fixed, "cache", list(CACHE_IMPLEMENTATIONS)),
    ):
        dp = world // tp
        if base.batch % dp and fixed.get("tp") is None and tp != world:
            continue
        yield base.copy(precision=precision, quantization=quant, kv_cache_dtype=kvd, tp=tp, pp=1, attn=attn, cache=cache)
