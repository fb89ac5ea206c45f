"""The knob space of a model on a topology: every open knob's candidate values, as Knobs objects.

A knob the user fixed has one value; an open knob (None) takes the values below. Choices a
hardware cannot run natively (e.g. bf16 without native bf16 matmuls) are left out of open knobs.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from perfscale.estimate.knobs import Knobs

TRAIN_OPEN = ("precision", "optimizer", "checkpointing", "attn", "zero", "fsdp", "tp", "pp", "pp_virtual", "offload",
              "micro_batch")
# Interleaved 1F1B chunks per pipeline device tried when pp_virtual is open (Narayanan et al. 2021
# section 2.2.2: the bubble falls as 1/v, the point-to-point traffic grows as v).
PP_VIRTUAL_CHOICES = (1, 2, 4)
INFER_OPEN = ("precision", "quantization", "kv_cache_dtype", "tp", "attn", "cache")
# Deepest pipeline searched: the deepest in Megatron-LM's scaling table (1T parameters on 3072 GPUs:
# tensor 8 x pipeline 64; Narayanan et al. 2021, table 1). Llama 3 405B trained with pipeline 16.
MAX_PIPELINE_STAGES = 64


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


def train_precisions(hw) -> list[str]:
    out = []
    if hw.peak("bf16"):
        out.append("bf16-mixed")
    elif hw.peak("fp16"):
        out.append("fp16-mixed")
    out.append("fp32")
    return out


def infer_precisions(hw) -> list[str]:
    out = [p for p in ("bf16", "fp16") if hw.peak(p)][:1]
    return out + ["fp32"]


def tp_choices(heads: int, world: int, per_node: int) -> list[int]:
    # TP stays inside a node (its all-reduces are on the critical path) and divides the heads.
    return [t for t in divisors(world) if t <= per_node and heads % t == 0]


def pp_choices(layers: int, world_over_tp: int) -> list[int]:
    return [p for p in divisors(world_over_tp) if p <= layers and p <= MAX_PIPELINE_STAGES]


def train_space(base: Knobs, fixed: dict, heads: int, layers: int, world: int, per_node: int, hw) -> Iterator[Knobs]:
    """All training configurations: `fixed` maps knob -> value for the knobs the user gave."""
    def pick(name, options):
        return [fixed[name]] if fixed.get(name) is not None else options

    precisions = pick("precision", train_precisions(hw))
    optimizers = pick("optimizer", ["adamw_torch_fused", "adamw_torch", "adamw_bnb_8bit", "adafactor"])
    ckpts = pick("checkpointing", [False, True])
    attns = pick("attn", ["sdpa"])
    tps = pick("tp", tp_choices(heads, world, per_node))
    offloads = pick("offload", ["none", "optimizer", "optimizer+params"])
    per_replica = base.batch * base.accum
    micro = [base.batch] if fixed.get("grad_accum") is not None else [m for m in divisors(base.batch, base.accum) if m <= base.batch]
    for tp in tps:
        pps = pick("pp", pp_choices(layers, world // tp)) if world % tp == 0 else []
        for pp in pps:
            if world % (tp * pp):
                continue
            dp = world // (tp * pp)
            slots = layers + (2 if base.pp_embedding_as_layer else 0)
            virtuals = [v for v in pick("pp_virtual", list(PP_VIRTUAL_CHOICES)) if v == 1 or (1 < pp and pp * v <= slots)]
            if fixed.get("fsdp") is not None:
                shardings = [(0, fixed["fsdp"])] if fixed["fsdp"] <= dp and dp % fixed["fsdp"] == 0 else []
            elif fixed.get("zero") is not None:
                shardings = [(fixed["zero"], None)]
            else:
                shardings = [(0, None)] + ([(1, None), (2, None), (3, None), (0, dp)] if dp > 1 else [(3, None)] if pp == 1 else [])
            for (zero, fsdp), precision, optimizer, ckpt, attn, offload, mb, virtual in itertools.product(
                shardings, precisions, optimizers, ckpts, attns, offloads, micro, virtuals
            ):
                if offload != "none" and not (zero or fsdp):
                    continue  # CPU offload comes with ZeRO (DeepSpeed) or FSDP
                if offload == "optimizer+params" and not (zero == 3 or fsdp):
                    continue
                accum = per_replica // mb
                if pp > 1 and accum < pp:
                    continue  # 1F1B needs at least p micro-batches
                if virtual > 1 and accum % pp:
                    continue  # interleaving runs micro-batches in groups of p (Megatron-LM)
                yield base.copy(precision=precision, optimizer=optimizer, checkpointing=ckpt, attn=attn, zero=zero,
                                fsdp=fsdp, tp=tp, pp=pp, offload=offload, batch=mb, accum=accum, pp_virtual=virtual)


def infer_space(base: Knobs, fixed: dict, heads: int, world: int, per_node: int, hw) -> Iterator[Knobs]:
    def pick(name, options):
        return [fixed[name]] if fixed.get(name) is not None else options

    kv_dtypes = pick("kv_cache_dtype", ["auto"] + (["fp8"] if hw.peak("fp8") else []))
    for precision, quant, kvd, tp, attn, cache in itertools.product(
        pick("precision", infer_precisions(hw)), pick("quantization", ["none", "int8", "int4", "nf4"]), kv_dtypes,
        pick("tp", tp_choices(heads, world, per_node)), pick("attn", ["sdpa"]), pick("cache", ["dynamic", "static"]),
    ):
        dp = world // tp
        if base.batch % dp and fixed.get("tp") is None and tp != world:
            continue
        yield base.copy(precision=precision, quantization=quant, kv_cache_dtype=kvd, tp=tp, pp=1, attn=attn, cache=cache)
