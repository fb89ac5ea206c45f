"""estimate(): memory and time of one configuration; `evaluate()` is its hot path (no validation; plain numbers in an Evaluation)."""

from __future__ import annotations

import functools

from perfscale.config.run_config import cp_problems
from perfscale.errors import InvalidConfigError, TopologyError
from perfscale.estimate.constants import ModelConstants, dropout_sites, model_constants, training_dropout
from perfscale.estimate.host import host_capacity
from perfscale.estimate.inference import infer_memory
from perfscale.estimate.knobs import Knobs
from perfscale.estimate.memory import kept_logits, train_memory
from perfscale.estimate.overheads import overheads
from perfscale.estimate.result import BREAKDOWN_KEYS, Estimate, Evaluation, MemoryEstimate, Overhead, TimeEstimate
from perfscale.estimate.time import ASSUMED_MEMORY_BANDWIDTH, flops_per_token, infer_time, train_time
from perfscale.estimate.tpu_time import padded_flops_per_token

# Most recently used models whose constants are kept: a plan or tune run uses one model; the test
# suite and the benchmarks a few dozen. An evicted model is only recomputed (0.2-0.3 ms, measured here).
CONSTANTS_CACHE_SIZE = 64


def constants_for(spec) -> ModelConstants:
    """ModelConstants of a spec, computed once per model (the CONSTANTS_CACHE_SIZE most recent)."""
    if isinstance(spec, ModelConstants):
        return spec
    key = (spec.name, spec.location, spec.architecture, spec.model_type, spec.hidden_size, spec.num_layers, spec.params.total,
           spec.vocab_size, spec.intermediate_size, dropout_sites(spec), training_dropout(spec))
    return _cached_constants(_SpecKey(key, spec))


class _SpecKey:
    """A spec keyed by the fields its constants depend on (the spec itself is not hashable)."""

    __slots__ = ("key", "spec")

    def __init__(self, key: tuple, spec) -> None:
        self.key, self.spec = key, spec

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _SpecKey) and other.key == self.key


@functools.lru_cache(maxsize=CONSTANTS_CACHE_SIZE)
def _cached_constants(keyed: _SpecKey) -> ModelConstants:
    return model_constants(keyed.spec)


def layout_problems(mc: ModelConstants, k: Knobs, world: int) -> list[str]:
    """Why a parallel layout cannot work on this model and world size (empty when it can)."""
    problems = []
    if mc.heads % k.tp:
        divisors = [d for d in range(1, min(mc.heads, world) + 1) if mc.heads % d == 0]
        problems.append(f"tensor parallel degree {k.tp} does not divide the {mc.heads} attention heads of "
                        f"{mc.name}: use --tp one of {', '.join(map(str, divisors))}")
    if k.pp > mc.layers:
        problems.append(f"pipeline degree {k.pp} exceeds the {mc.layers} layers of {mc.name}: use --pp <= {mc.layers}")
    elif k.pp_virtual > 1:
        slots = mc.layers + (2 if k.pp_embedding_as_layer else 0)
        if k.pp == 1:
            problems.append(f"--pp-virtual {k.pp_virtual} interleaves pipeline stages and needs --pp >= 2")
        elif k.pp * k.pp_virtual > slots:
            problems.append(f"pp x pp_virtual = {k.pp} x {k.pp_virtual} chunks exceed the {slots} layer slots of "
                            f"{mc.name}: use --pp-virtual <= {max(1, slots // k.pp)}")
        if k.mode == "train" and k.pp > 1 and k.accum % k.pp:
            problems.append(f"the interleaved schedule runs micro-batches in groups of pp = {k.pp}: gradient "
                            f"accumulation {k.accum} must be a multiple of {k.pp} (Megatron-LM's rule)")
    cp = k.cp if k.mode == "train" else 1
    if cp > 1:
        problems.extend(cp_problems(cp, k.seq, k.attn))
    if world % (k.tp * k.pp * cp):
        names, degrees = ("tp x pp x cp", f"{k.tp} x {k.pp} x {cp}") if cp > 1 else ("tp x pp", f"{k.tp} x {k.pp}")
        problems.append(f"{names} = {degrees} = {k.tp * k.pp * cp} does not divide the world size {world}: "
                        "choose degrees whose product divides the number of devices")
    else:
        # ZeRO / FSDP shard over the data-parallel x context-parallel ranks: they hold the same weights
        # (Megatron-Core's distributed optimizer over the DP x CP group; torch FSDP's dp_shard x cp mesh).
        dp = world // (k.tp * k.pp)
        if k.fsdp and (k.fsdp > dp or dp % k.fsdp):
            problems.append(f"FSDP shard degree {k.fsdp} must divide the data-parallel{' x cp' if cp > 1 else ''} degree "
                            f"{dp} (= world {world} / (tp {k.tp} x pp {k.pp}))")
        if k.mode == "infer" and k.batch % dp:
            problems.append(f"batch {k.batch} is not divisible by the {dp} data-parallel replicas "
                            f"(world {world} / (tp {k.tp} x pp {k.pp})): use a batch that is a multiple of {dp}")
        # ZeRO on one data-parallel rank is legal (nothing to shard): no problem to report.
    if k.lora_r is not None and k.lora_targets:
        known = set(mc.lora_dims) | {n.split(".")[-1] for n in mc.lora_dims} | {"all-linear"}
        unknown = [t for t in k.lora_targets if t not in known]
        if unknown:
            raise InvalidConfigError(
                f"LoRA targets {', '.join(unknown)} match no linear layer of {mc.name} ({mc.model_type}). "
                f"Choose from: {', '.join(sorted(known))}."
            )
    return problems


def hardware_problems(hw, k: Knobs) -> list[str]:
    """What the hardware cannot run at all (empty when it can): fp16 on a TPU, whose MXUs have no fp16 mode."""
    if hw.kind == "tpu" and k.prec.compute_dtype == "fp16":
        return [f"precision {k.precision} on {hw.name}: TPUs have no fp16 matmuls (the MXU multiplies bf16; "
                f"{hw.peak_flops['fp16'].source}). Use --precision bf16-mixed (fp32 weights, bf16 matmuls; no loss "
                "scaling needed) or bf16 (pure bf16 weights)."]
    return []


def evaluate(mc: ModelConstants, k: Knobs, hw, nodes: int, per_node: int, efficiency: float | None = None,
             host_memory: float | None = None, calibration=None) -> Evaluation:
    """All numbers of one configuration (no validation, no rounding): the search's hot path.

    host_memory: host RAM per node in bytes (None: the nominal default of estimate/host.py).
    calibration: operation times measured on this CPU (estimate/calibration.py), or None.
    """
    world = nodes * per_node
    capacity = hw.memory_bytes.value or 0
    if k.mode == "train":
        mem = train_memory(mc, k, world, "cpu" if hw.kind == "cpu" else "cuda")
        tm = train_time(mc, k, hw, nodes, per_node, efficiency, mem["trainable"], calibration)
        step, tps, split = tm["step"], tm["tokens_per_second"], tm["split"]
        ttft = per_token = bound = None
        calibrated, uncalibrated = tm["calibrated"], tm["uncalibrated"]
    else:
        mem = infer_memory(mc, k)
        tm = infer_time(mc, k, hw, mem["weights"], mem["kv_per_token"], efficiency)
        step, tps = tm["total"], tm["tokens_per_second"] * max(1, world // (k.tp * k.pp))
        split = {"compute": tm["ttft"], "exposed_comm": 0.0, "bubble": 0.0, "recompute": 0.0, "decode": tm["per_token"] * k.new_tokens}
        ttft, per_token, bound = tm["ttft"], tm["per_token"], tm["bound"]
        calibrated, uncalibrated = False, None
    over = overheads(hw.kind, mem["peak"])
    total = mem["peak"] + sum(o[1] for o in over)
    # Host RAM per node: each device's offloaded states x the devices that share a node.
    host = mem.get("host", 0.0) * min(per_node, world)
    host_cap = host_capacity(hw, host_memory)
    host_short = host - host_cap if host and host_cap is not None and host > host_cap else 0.0
    device_short = total - capacity if total > capacity else 0.0
    if device_short:
        binding = "memory"
    elif host_short:
        binding = "host-memory"
    elif k.mode == "infer":
        binding = bound if k.new_tokens else "compute"
    else:
        parts = {"compute": split["compute"] + split["recompute"], "communication": split["exposed_comm"], "bubble": split["bubble"]}
        binding = max(parts, key=parts.get)
    return Evaluation(mem, tuple(over), total, capacity, not device_short and not host_short, device_short + host_short,
                      device_short, host_short, host, host_cap, world, step, tps, split, binding, tm.get("mfu"),
                      tm["efficiency"], tm["native"], calibrated, uncalibrated, ttft, per_token, bound)


def to_estimate(mc: ModelConstants, k: Knobs, topology, numbers: Evaluation, token_budget: float | None = None,
                price_per_device_hour: float | None = None) -> Estimate:
    mem = numbers.mem
    memory = MemoryEstimate(
        peak_bytes=int(round(mem["peak"])),
        breakdown={key: int(round(mem["breakdown"].get(key, 0.0))) for key in BREAKDOWN_KEYS},
        phase=mem["phase"],
        overheads=tuple(Overhead(label, int(round(b)), src) for label, b, src in numbers.over),
        capacity_bytes=int(numbers.capacity),
        host_bytes_per_node=int(round(numbers.host)),
        host_capacity_bytes=None if numbers.host_capacity is None else int(numbers.host_capacity),
        optimizer_peak_bytes=int(round(mem["optimizer_peak"])) if "optimizer_peak" in mem else None,
    )
    train_seconds = cost = None
    if token_budget and numbers.tps > 0:
        train_seconds = token_budget / numbers.tps
        if price_per_device_hour is not None:
            cost = train_seconds / 3600 * numbers.world * price_per_device_hour
    time = TimeEstimate(
        step_seconds=numbers.step, tokens_per_second=numbers.tps, split=dict(numbers.split),
        mfu=numbers.mfu, efficiency=numbers.efficiency, native_dtype=numbers.native,
        ttft_seconds=numbers.ttft, per_token_seconds=numbers.per_token,
        train_seconds=train_seconds, cost=cost,
    )
    notes = []
    if numbers.calibrated:
        notes.append("time from operations measured on this machine (perfscale plan --calibrate), not peak x efficiency")
    elif numbers.uncalibrated:
        notes.append(f"time from peak x efficiency, not this machine's calibration: {numbers.uncalibrated}")
    if not numbers.native and topology.hardware.kind == "tpu":
        notes.append(f"{topology.hardware.name} has no native fp32 matmuls: time assumes XLA's HIGHEST precision, 6 bf16 "
                     "passes (6x slower than bf16); use bf16-mixed")
    elif not numbers.native:
        notes.append(f"{topology.hardware.name} has no native {k.precision} matmuls: time assumes emulation (~20x slower)")
    tpu = getattr(topology.hardware, "torus", None)
    if tpu is not None:
        notes.append(_tpu_note(mc, k, tpu))
    if k.mode == "infer" and not topology.hardware.memory_bandwidth.value:
        notes.append(f"{topology.hardware.name}'s memory bandwidth is unknown: decode time assumes "
                     f"{ASSUMED_MEMORY_BANDWIDTH / 1e9:.0f} GB/s")
    loop_note = _loop_note(mc, k, mem["peak"])
    if loop_note:
        notes.append(loop_note)
    dp = max(1, numbers.world // (k.tp * k.pp * (k.cp if k.mode == "train" else 1)))  # cp: a training knob
    return Estimate(model=mc.name, topology=topology.label, world_size=numbers.world, knobs=k.as_dict(),
                    memory=memory, time=time, fits=numbers.fits, binding=numbers.binding, data_parallel=dp,
                    notes=tuple(notes), run_config=k.to_run_config().to_dict())


def _tpu_note(mc: ModelConstants, k: Knobs, tpu) -> str:
    """The slice, and what padding to the MXU tile costs this model (estimate/tpu_time.py)."""
    waste = padded_flops_per_token(mc, k.seq, tpu.mxu_tile) / flops_per_token(mc, k.seq) - 1
    torus = "x".join(f"{d}{'' if w else ' (mesh)'}" for d, w in zip(tpu.shape, tpu.wraps, strict=True))
    where = f"{tpu.slices} slices over DCN ({tpu.dcn_bandwidth / 1e9:g} GB/s per chip) of " if tpu.slices > 1 else ""
    pad = (f"matmuls padded to the {tpu.mxu_tile}-wide MXU tile cost {waste:.1%} more FLOPs than the model's"
           if waste > 0.0005 else f"every matmul dimension is a multiple of the {tpu.mxu_tile}-wide MXU tile (no padding)")
    return (f"TPU {where}{tpu.chips} chips ({torus} ICI torus, {tpu.ici_link_bandwidth / 1e9:g} GB/s per link per "
            f"direction): {pad}; bf16 matmuls, collectives as rings per torus axis")


# When the logits a custom loop keeps are worth a word: above this share of the peak (Qwen2.5-0.5B at
# b4 s1024 bf16-mixed: 5.9%, traced).
LOOP_NOTE_SHARE = 0.03


def _loop_note(mc: ModelConstants, k: Knobs, peak: float) -> str | None:
    """Advice on the training loop's program (RunConfig.loop) when the logits it may keep matter."""
    if k.mode != "train" or peak <= 0:
        return None
    logits = kept_logits(mc, k.copy(loop="custom"), k.prec.compute_bytes, k.batch * k.seq * mc.sequences_per_example)
    if logits / k.pp < LOOP_NOTE_SHARE * peak:
        return None
    share = logits / peak
    if k.loop == "custom":
        return (f"loop custom: keeping `outputs` holds the logits ({logits / 2**30:.2f} GiB, {share:.0%} of the peak) through "
                "backward and the optimizer step; `del outputs` before backward (keep only the loss), as the Trainer does, frees them")
    return (f"loop trainer: the outputs are freed before backward; a custom loop that keeps `outputs` alive would add the logits "
            f"({logits / 2**30:.2f} GiB, +{share:.0%}; --loop custom)")


def estimate(spec, config, topology, efficiency: float | None = None, token_budget: float | None = None,
             price_per_device_hour: float | None = None, host_memory: float | None = None,
             calibration=None) -> Estimate:
    """Memory and time of one RunConfig on a topology (< 1 ms; no torch).

    host_memory: host RAM per node in bytes for CPU offload (default: estimate/host.py).
    calibration: a Calibration of this CPU (perfscale.measure.cpu_probe); used for CPU training
    steps it covers, else the efficiency model applies."""
    mc = constants_for(spec)
    k = Knobs.from_run_config(config)
    problems = layout_problems(mc, k, topology.world_size)
    if problems:
        raise TopologyError("Impossible layout:\n  - " + "\n  - ".join(problems))
    unrunnable = hardware_problems(topology.hardware, k)
    if unrunnable:
        raise InvalidConfigError(" ".join(unrunnable))
    numbers = evaluate(mc, k, topology.hardware, topology.nodes, topology.devices_per_node, efficiency, host_memory,
                       calibration)
    return to_estimate(mc, k, topology, numbers, token_budget, price_per_device_hour)
