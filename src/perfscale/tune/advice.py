"""Advice in words: which of the guides' methods made the difference, and what bounds the step."""

from __future__ import annotations

from perfscale.config.optimizer import ADAMW
from perfscale.units import gib


def _share(fitting, pred) -> bool:
    return bool(fitting) and all(pred(k) for _n, k in fitting)


def advice_lines(mc, topo, workload, fitting, best, used_lora, evaluate_fn, evaluate_on=None) -> list[str]:
    words: list[str] = []
    if not best:
        return words
    numbers, k = best[0]
    if workload.mode == "train":
        if used_lora:
            words.append("Full fine-tuning fits nowhere on this topology: fits only with LoRA (frozen base, "
                         "adapters on every linear layer, r=16).")
        needs = []
        if _share(fitting, lambda c: c.checkpointing):
            needs.append("gradient checkpointing")
        if _share(fitting, lambda c: c.zero or c.fsdp):
            needs.append("ZeRO/FSDP sharding")
        if _share(fitting, lambda c: c.offload != "none"):
            needs.append("CPU offload")
        if _share(fitting, lambda c: c.tp > 1 or c.pp > 1):
            needs.append("tensor or pipeline parallelism")
        if _share(fitting, lambda c: c.optimizer in ("adamw_bnb_8bit", "adafactor", "sgd")):
            needs.append("a lighter optimizer (8-bit AdamW or Adafactor)")
        if needs:
            words.append("Fits only with " + " and ".join(needs) + ".")
        other = other_ways_to_fit(mc, topo, k, numbers, evaluate_fn, evaluate_on)
        if other:
            words.append(other)
        if k.prec.mixed:
            fp32 = k.copy(precision="fp32")
            n32 = evaluate_fn(fp32)
            if n32.tps > 0:
                words.append(f"Mixed precision ({k.precision}): {numbers.tps / n32.tps:.1f}x the fp32 throughput "
                             f"(peak {k.prec.peak_key} vs fp32 on {topo.hardware.name}).")
        split = numbers.split
        step = numbers.step or 1.0
        binding = numbers.binding
        if binding == "communication":
            words.append(f"The step is communication-bound: {split['exposed_comm'] / step:.0%} of it is exposed "
                         "communication; fewer shards, larger micro-batches or gradient accumulation hide more of it.")
        elif binding == "bubble":
            words.append(f"Pipeline bubble is {split['bubble'] / step:.0%} of the step: raise gradient accumulation "
                         "(more micro-batches), interleave stages (--pp-virtual 2 or more) or lower --pp.")
        elif split.get("recompute"):
            words.append(f"Recomputation costs {split['recompute'] / step:.0%} of the step (checkpointing's price for memory).")
        if numbers.mfu is not None:
            words.append(f"Expected MFU {numbers.mfu:.0%} at efficiency {numbers.efficiency:.2f} (override with --efficiency).")
    else:
        if numbers.bound == "bandwidth" and k.new_tokens:
            q4 = evaluate_fn(k.copy(quantization="int4"))
            if q4.step > 0 and k.quantization == "none":
                ratio = numbers.per_token / q4.per_token
                words.append(f"Decode is memory-bound: int4 weights ~{ratio:.1f}x faster per token "
                             f"({numbers.per_token * 1e3:.2f} ms -> {q4.per_token * 1e3:.2f} ms).")
            else:
                words.append("Decode is memory-bandwidth-bound: each new token reads all weights and the KV cache once.")
        kv = numbers.mem["breakdown"].get("kv_cache", 0)
        if kv > numbers.mem["breakdown"]["parameters"]:
            words.append(f"The KV cache ({gib(kv)}) outweighs the weights: an fp8 cache halves it.")
    return words


def other_ways_to_fit(mc, topo, k, numbers, evaluate_fn, evaluate_on=None) -> str | None:
    """What else would fit `k`'s training without CPU offload (or at all, when it does not fit), each
    estimated: a lighter optimizer or LoRA (they change what is trained: opt-in), or ZeRO-3 over more of
    the same devices (the smallest count that fits). None when `k` already fits without offload."""
    if k.mode != "train" or (numbers.fits and k.offload == "none"):
        return None
    base = k.copy(offload="none")
    ref = numbers.tps if numbers.fits else 0.0
    hw = topo.hardware

    def said(label: str, n) -> str:  # n: an estimate/result.Evaluation
        if not n.fits:
            return f"{label}: still short by {gib(max(0.0, n.total - n.capacity))} per device"
        speed = f", {n.tps / ref:.1f}x the throughput" if ref > 0 else f", {n.tps:,.0f} tokens/s"
        return f"{label}: {gib(n.total)} per device{speed}"

    options = []
    if k.optimizer in ADAMW:
        if hw.kind == "gpu":
            options.append(said("8-bit AdamW (--optimizer adamw_bnb_8bit)", evaluate_fn(base.copy(optimizer="adamw_bnb_8bit"))))
        options.append(said("Adafactor (--optimizer adafactor)", evaluate_fn(base.copy(optimizer="adafactor"))))
    if k.lora_r is None and mc.lora_dims:
        options.append(said("LoRA r=16 on every linear layer (--lora-r 16)",
                            evaluate_fn(base.copy(lora_r=16, lora_targets=tuple(mc.lora_dims)))))
    if evaluate_on is not None:
        per_node = max(topo.devices_per_node, 8) if hw.kind == "gpu" else topo.devices_per_node
        sharded = base.copy(zero=3, fsdp=None) if not base.fsdp else base
        for devices in (2**i for i in range(1, 15)):
            if devices <= topo.world_size or devices % (k.tp * k.pp):
                continue
            nodes, in_node = (1, devices) if devices <= per_node else (devices // per_node, per_node)
            n = evaluate_on(sharded, nodes, in_node)
            if n.fits:
                total = n.tps * devices
                gain = f", {total / (ref * topo.world_size):.1f}x the throughput" if ref > 0 else ""
                options.append(f"ZeRO-3 over {devices} x {hw.name} ({gib(n.total)} per device{gain})")
                break
    if not options:
        return None
    what = "Without CPU offload" if numbers.fits else "Other ways to fit"
    return (f"{what}, estimated: " + "; ".join(options) + ". A lighter optimizer or LoRA changes what is trained: "
            "plan searches them only when allowed (--allow-optimizer-change, --allow-lora).")


def host_short_message(mc, topo, numbers, k, single: bool) -> str:
    """CPU offload needs more host RAM per node than the node has: by how much, and what helps."""
    host, cap = numbers.host, numbers.host_capacity
    per_node = min(topo.devices_per_node, topo.world_size)
    head = (("This configuration does not fit" if single else f"No configuration of {mc.name} fits") +
            f" on {topo.label}: CPU offload ({k.offload}) needs {gib(host)} of host RAM per node "
            f"({gib(host / per_node)} per device x {per_node}) against {gib(cap)}, short by {gib(host - cap)}.")
    fixes = ["more nodes (ZeRO/FSDP shards the offloaded states over every device)"]
    if k.offload == "optimizer+params":
        fixes.append("--offload optimizer (parameters stay on the devices)")
    if k.optimizer in ADAMW:
        fixes.append("a lighter optimizer (--optimizer adamw_bnb_8bit or adafactor)")
    if k.lora_r is None:
        fixes.append("LoRA (--lora-r 16) to freeze the base")
    fixes.append("or --host-memory-gib if the nodes have more RAM")
    return head + " To fit: " + "; ".join(fixes) + "."


def nothing_fits_message(mc, topo, numbers, k, train: bool, single: bool = False) -> str:
    if numbers.host_short and not numbers.device_short:
        return host_short_message(mc, topo, numbers, k, single)
    cap = numbers.capacity
    short = numbers.total - cap
    head = ("This configuration does not fit" if single else f"No configuration of {mc.name} fits") + \
        f" on {topo.label}: the smallest needs {gib(numbers.total)} per device " \
        f"(peak {gib(numbers.peak)} + overheads) against {gib(cap)}, short by {gib(short)}."
    fixes = []
    if train:
        acts = numbers.mem["breakdown"]["activations"] + numbers.mem["breakdown"]["temporaries"]
        if acts > short:
            fixes.append("a smaller --batch or --seq (activations are "
                         f"{gib(acts)})" + ("" if k.checkpointing else ", or --checkpointing"))
        need_devices = max(1, int(-(-(16 * mc.params_total) // (cap * 0.7))))
        fixes.append(f"more devices with ZeRO-3/FSDP (model states of full AdamW training need ~{need_devices} "
                     f"x {topo.hardware.name} at 16 bytes/parameter)")
        if k.lora_r is None:
            fixes.append("LoRA/QLoRA (--lora-r 16 --quantization nf4) to freeze and quantize the base")
    else:
        fixes.append("int4/nf4 weights (--quantization int4), an fp8 KV cache, a smaller batch or context, "
                     "or tensor parallelism over more devices")
    return head + " To fit: " + "; ".join(fixes) + "."
