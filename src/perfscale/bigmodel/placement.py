"""Placement: a `device_map` over the GPUs of one machine, its CPU RAM and its disk, whose per-device
budgets leave room for what the run needs beyond the weights.

The vocabulary is accelerate's and transformers' (`from_pretrained(device_map=..., max_memory=...,
offload_folder=...)`; accelerate "Big model inference" guide): device_map keys are module names,
values a GPU index, "cpu" or "disk"; strategies "balanced" (= "auto"), "balanced_low_0" and
"sequential". The map itself is accelerate's `infer_auto_device_map` on the meta model (built by
specs.param_count.build_meta_model, as `init_empty_weights` would), with module sizes from
`compute_module_sizes` and, for "balanced*", budgets from `get_balanced_memory`.

What perfscale adds is the budget. Per GPU, from the estimate engine (estimate/inference.py,
estimate/overheads.py):
  capacity = weights + KV cache of the layers it holds (batch x (prompt + new tokens))
             + the prefill's largest transient (activations of one layer, last-position logits)
             + CUDA context and cuBLAS workspace + allocator fragmentation (10% planning margin)
accelerate runs CPU- and disk-offloaded layers on the main GPU (GPU 0): their KV cache lives there,
and accelerate already keeps room on it for the largest offloaded layer (infer_auto_device_map).
Decode speed of the placement (accelerate's model parallelism runs the devices one after another):
each token reads every GPU's weights and KV once from HBM, and streams every offloaded weight over
the host link (PCIe) or from disk.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

from perfscale.bigmodel.errors import PlacementError
from perfscale.bigmodel.placement_result import Alternative, DeviceUse, PlacementResult
from perfscale.errors import InvalidConfigError

STRATEGIES = ("balanced", "balanced_low_0", "sequential")
DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
QUANTIZATIONS = ("none", "int8", "nf4")
# Host RAM kept free for the interpreter, the loading buffers (one shard at a time) and the OS: a
# planning margin, not a measurement (accelerate keeps 10% of a lone GPU the same way).
HOST_RESERVE = 0.10
# Disk read bandwidth for disk offload: a PCIe 3.0 x4 NVMe SSD's sequential read (e.g. Samsung 970
# EVO Plus datasheet: 3,500 MB/s). Override with disk_bandwidth (bytes/s); a SATA SSD reads ~0.55 GB/s.
DISK_BANDWIDTH = 3.5e9
DISK_BANDWIDTH_SOURCE = "assumed NVMe sequential read, 3.5 GB/s (Samsung 970 EVO Plus datasheet); pass --disk-gbps"
UNLIMITED_DISK = 2**60


def _quiet_accelerate():
    # get_max_memory warns "Device 0 is not available" for every GPU index on a machine without them:
    # planning for hardware we do not have is the point, so that warning is noise here.
    logging.getLogger("accelerate").setLevel(logging.ERROR)
    logging.getLogger("accelerate.utils.modeling").setLevel(logging.ERROR)


def _quant_dtypes(model, quantization: str) -> dict[str, Any]:
    """special_dtypes for compute_module_sizes as transformers' bitsandbytes quantizers size them:
    Linear weights in int8 (1 byte) or accelerate's CustomDtype.INT4 (half a byte); the output head
    stays unquantized (bitsandbytes' default llm_int8_skip_modules)."""
    if quantization == "none":
        return {}
    import torch
    from accelerate.utils import CustomDtype

    target = torch.int8 if quantization == "int8" else CustomDtype.INT4
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    special = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module is not head:
            special[f"{name}.weight"] = target
    return special


def quantization_config(quantization: str, dtype: str) -> dict[str, Any] | None:
    """BitsAndBytesConfig keyword arguments (transformers' quantization_config)."""
    if quantization == "int8":
        return {"load_in_8bit": True}
    if quantization == "nf4":
        return {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_compute_dtype": DTYPES[dtype],
                "bnb_4bit_use_double_quant": True}
    return None


class _Planner:
    """Everything that does not change between the placement and its alternatives: meta model, sizes, reserves."""

    def __init__(self, spec, hw, batch: int, prompt: int, new_tokens: int, dtype: str, quantization: str,
                 kv_cache_dtype: str, model=None) -> None:
        import torch

        from perfscale.config import RunConfig
        from perfscale.estimate.core import constants_for
        from perfscale.estimate.inference import kv_bytes_per_token, prefill_transient
        from perfscale.estimate.knobs import Knobs
        from perfscale.specs import InferWorkload
        from perfscale.specs.param_count import build_meta_model

        self.spec, self.hw, self.dtype, self.quantization = spec, hw, dtype, quantization
        self.torch_dtype = getattr(torch, DTYPES[dtype])
        self.workload = InferWorkload(batch=batch, prompt=prompt, new_tokens=new_tokens)
        self.config = RunConfig(self.workload, precision=dtype, quantization=quantization, kv_cache_dtype=kv_cache_dtype)
        self.mc = constants_for(spec)
        k = Knobs.from_run_config(self.config)
        layers = max(1, self.mc.decoder_layers)
        # estimate/inference.py: KV = layers x 2 x kv_heads x head_dim x bytes per token; per layer here.
        self.kv_per_layer = kv_bytes_per_token(self.mc, k) / layers * batch * (prompt + new_tokens)
        self.kv_per_token_layer = kv_bytes_per_token(self.mc, k) / layers
        self.transient = prefill_transient(self.mc, k, batch, prompt)
        self.knobs = k
        if model is None:
            # accelerate sizes a parameter at min(its dtype, dtype=): build in the target dtype so that fp32 counts 4 bytes
            model = build_meta_model(spec.config_object(), spec.architecture).to(self.torch_dtype)
        self.model = model
        self.no_split = sorted(getattr(self.model, "_no_split_modules", None) or [])
        self.special = _quant_dtypes(self.model, quantization)
        from accelerate.utils import compute_module_sizes

        self.sizes = compute_module_sizes(self.model, dtype=self.torch_dtype, special_dtypes=self.special or None)
        self.blocks = [name for name, m in self.model.named_modules() if type(m).__name__ in self.no_split]
        block_sizes = [self.sizes[b] for b in self.blocks] or [self.sizes[""]]
        self.block_bytes = sum(block_sizes) / len(block_sizes)
        self.largest_block = max(block_sizes)

    def gpu_overheads(self) -> tuple[float, float]:
        """(fixed bytes per GPU, fragmentation fraction): estimate/overheads.py's lines."""
        from perfscale.estimate.overheads import CUDA_OVERHEADS, FRAGMENTATION

        return float(sum(b for _, b, _ in CUDA_OVERHEADS)), FRAGMENTATION

    def gpu_weight_budget(self) -> float:
        """Weights one GPU may hold: W x (1 + KV/weights of a layer) x (1 + frag) + transient x (1 + frag) + fixed
        <= capacity (KV grows with the layers placed, so it is charged per byte of layer weights)."""
        fixed, frag = self.gpu_overheads()
        kv_ratio = self.kv_per_layer / self.block_bytes if self.block_bytes else 0.0
        return max(0.0, (float(self.hw.memory) - fixed - self.transient * (1 + frag)) / ((1 + kv_ratio) * (1 + frag)))

    def place(self, gpus: int, host_bytes: float, disk_bytes: float | None, strategy: str):
        """(device_map, [DeviceUse], budgets) for `gpus` GPUs of this kind plus host RAM and disk."""
        from accelerate.utils import get_balanced_memory, infer_auto_device_map

        _quiet_accelerate()
        per_gpu = self.gpu_weight_budget()
        if self.hw.kind == "cpu":
            gpus = 0
        cpu_budget = host_bytes * (1 - HOST_RESERVE)
        if gpus == 0:  # the CPU runs everything: its RAM holds the KV cache and activations too
            cpu_budget = max(0.0, cpu_budget - self.kv_per_layer * max(1, len(self.blocks)) - self.transient)
        budgets: dict[int | str, float] = {i: per_gpu for i in range(gpus)}
        budgets["cpu"] = cpu_budget
        if gpus > 1 and strategy != "sequential":
            balanced = get_balanced_memory(self.model, max_memory={k: int(v) for k, v in budgets.items()},
                                           no_split_module_classes=self.no_split, dtype=self.torch_dtype,
                                           special_dtypes=self.special or None, low_zero=strategy == "balanced_low_0")
            budgets = {k: float(v) for k, v in balanced.items()}
        disk_cap = UNLIMITED_DISK if disk_bytes is None else disk_bytes
        extra0 = 0.0
        for _ in range(6):
            mm = {k: int(max(0.0, v - (extra0 if k == 0 else 0.0))) for k, v in budgets.items()}
            if disk_cap > 0:
                mm["disk"] = int(disk_cap)
            with warnings.catch_warnings():
                # "Current model requires N bytes of buffer for offloaded layers": the buffers are in our budgets
                warnings.simplefilter("ignore")
                device_map = infer_auto_device_map(self.model, max_memory=mm, no_split_module_classes=self.no_split,
                                                   dtype=self.torch_dtype, special_dtypes=self.special or None)
            uses = self._uses(device_map, mm, gpus, host_bytes, disk_bytes)
            offloaded_layers = sum(u.layers for u in uses if u.device in ("cpu", "disk")) if gpus else 0
            need = offloaded_layers * self.kv_per_layer * (1 + self.gpu_overheads()[1])
            if need <= extra0:
                break
            extra0 = need
        return device_map, uses, mm

    def _device_of(self, device_map: dict, name: str):
        best = None
        for key, dev in device_map.items():
            if key == "" or name == key or name.startswith(key + "."):
                if best is None or len(key) > len(best[0]):
                    best = (key, dev)
        return None if best is None else best[1]

    def _uses(self, device_map, mm, gpus: int, host_bytes: float, disk_bytes: float | None) -> list[DeviceUse]:
        fixed, frag = self.gpu_overheads()
        weights: dict[Any, float] = {}
        for key, dev in device_map.items():
            weights[dev] = weights.get(dev, 0.0) + self.sizes[key]
        layers: dict[Any, int] = {}
        for block in self.blocks:
            dev = self._device_of(device_map, block)
            layers[dev] = layers.get(dev, 0) + 1
        offloaded = [d for d in ("cpu", "disk") if weights.get(d)] if gpus else []
        off_layers = sum(layers.get(d, 0) for d in offloaded)
        largest_off = max((self.sizes[k] for k, d in device_map.items() if d in offloaded), default=0.0)
        largest_disk = max((self.sizes[k] for k, d in device_map.items() if d == "disk"), default=0.0)
        uses = []
        for i in range(gpus):
            w = weights.get(i, 0.0)
            kv = (layers.get(i, 0) + (off_layers if i == 0 else 0)) * self.kv_per_layer
            trans = self.transient + (largest_off if i == 0 else 0.0)
            over = fixed + frag * (w + kv + trans)
            uses.append(DeviceUse(i, int(self.hw.memory), int(mm.get(i, 0)), int(w), layers.get(i, 0), int(kv), int(trans),
                                  int(over), int(w + kv + trans + over)))
        cpu_w = weights.get("cpu", 0.0)
        cpu_kv = self.kv_per_layer * max(1, len(self.blocks)) if gpus == 0 else 0.0
        cpu_trans = largest_disk + (self.transient if gpus == 0 else 0.0)
        uses.append(DeviceUse("cpu", int(host_bytes * (1 - HOST_RESERVE)), int(mm.get("cpu", 0)), int(cpu_w),
                              layers.get("cpu", 0), int(cpu_kv), int(cpu_trans), 0, int(cpu_w + cpu_kv + cpu_trans)))
        if weights.get("disk") or disk_bytes is not None:
            disk_w = weights.get("disk", 0.0)
            uses.append(DeviceUse("disk", None if disk_bytes is None else int(disk_bytes), int(mm.get("disk", 0)),
                                  int(disk_w), layers.get("disk", 0), 0, 0, 0, int(disk_w)))
        return uses

    def decode(self, uses: list[DeviceUse], disk_bandwidth: float) -> dict[str, Any]:
        """Seconds per decode step of this placement: HBM reads per GPU, offloaded weights over PCIe / from disk."""
        from perfscale.estimate.time import (
            ASSUMED_MEMORY_BANDWIDTH, BANDWIDTH_EFFICIENCY, PCIE_BANDWIDTH, effective_peak, flops_per_token)

        k = self.knobs
        avg_ctx = k.prompt + k.new_tokens / 2
        kv_read_layer = self.kv_per_token_layer * avg_ctx * k.batch
        hbm = (self.hw.memory_bandwidth.value or ASSUMED_MEMORY_BANDWIDTH) * BANDWIDTH_EFFICIENCY
        split = {"gpu_memory": 0.0, "host_link": 0.0, "disk": 0.0, "compute": 0.0}
        gpu_uses = [u for u in uses if isinstance(u, DeviceUse) and isinstance(u.device, int)]
        cpu = next(u for u in uses if u.device == "cpu")
        disk = next((u for u in uses if u.device == "disk"), None)
        if gpu_uses:
            for u in gpu_uses:
                split["gpu_memory"] += (u.weights_bytes + u.layers * kv_read_layer) / hbm
            offloaded = cpu.weights_bytes + (disk.weights_bytes if disk else 0)
            off_layers = cpu.layers + (disk.layers if disk else 0)
            split["gpu_memory"] += (offloaded + off_layers * kv_read_layer) / hbm
            split["host_link"] = offloaded / PCIE_BANDWIDTH  # every offloaded weight crosses PCIe each token
            peak, eff, _ = effective_peak(self.hw, k.prec, None, k.tf32)
            split["compute"] = k.batch * flops_per_token(self.mc, avg_ctx) / (peak * eff)
        else:
            from perfscale.estimate.time import HOST_BANDWIDTH

            split["gpu_memory"] = 0.0
            split["host_link"] = (cpu.weights_bytes + len(self.blocks) * kv_read_layer) / HOST_BANDWIDTH
        if disk and disk.weights_bytes:
            split["disk"] = disk.weights_bytes / disk_bandwidth
        memory_side = split["gpu_memory"] + split["host_link"] + split["disk"]
        per_token = max(memory_side, split["compute"])
        return {"per_token_seconds": per_token, "tokens_per_second": k.batch / per_token if per_token else None,
                "split_seconds": split, "bound": max(split, key=split.get),
                "host_link_bandwidth": PCIE_BANDWIDTH if gpu_uses else None,
                "host_link_source": "estimate/time.py PCIE_BANDWIDTH: PCIe 4.0 x16 achieved, per direction" if gpu_uses
                else "estimate/time.py HOST_BANDWIDTH: host DRAM",
                "disk_bandwidth": disk_bandwidth if disk and disk.weights_bytes else None}


def _fits(uses: list[DeviceUse]) -> bool:
    return all(u.fits for u in uses)


def _check(dtype: str, quantization: str, strategy: str) -> None:
    """Every bad choice at once, each with the valid ones."""
    problems = []
    for what, value, choices, why in (("dtype", dtype, DTYPES, "the weights' dtype"),
                                      ("quantization", quantization, QUANTIZATIONS, "bitsandbytes' quantization_config"),
                                      ("strategy", strategy, STRATEGIES, "accelerate's device_map strategies; auto = balanced")):
        if value not in choices:
            problems.append(f"unknown {what} {value!r} ({why}): choose from {', '.join(choices)}")
    if problems:
        raise InvalidConfigError("Bad placement request: " + "; ".join(problems) + ".")


def plan_placement(model: str, topology: str, batch: int = 1, prompt: int = 512, new_tokens: int = 128,
                   dtype: str = "bf16", quantization: str = "none", strategy: str = "balanced",
                   host_memory: float | None = None, disk: float | None = None, disk_bandwidth: float | None = None,
                   kv_cache_dtype: str = "auto", alternatives: bool = True) -> PlacementResult:
    """A device_map for `model` on one machine of `topology` (+ host RAM + disk), with its budgets and speed.

    host_memory / disk: bytes (None: estimate/host.py's nominal host RAM; disk unlimited).
    Raises PlacementError when the model does not fit even with disk offload (the message lists the alternatives).
    """
    from perfscale.estimate.host import host_capacity
    from perfscale.specs import load_model_spec, parse_topology

    if strategy == "auto":
        strategy = "balanced"  # transformers: device_map="auto" is "balanced"
    _check(dtype, quantization, strategy)
    for name, value in (("host memory", host_memory), ("disk", disk), ("disk bandwidth", disk_bandwidth)):
        if value is not None and not (value == value and 0 <= value < float("inf")):
            raise InvalidConfigError(f"{name} {value!r} must be a finite number >= 0.")
    if disk_bandwidth is not None and disk_bandwidth <= 0:
        raise InvalidConfigError(f"disk bandwidth {disk_bandwidth!r} must be > 0 (bytes/s), e.g. 3.5e9 for an NVMe SSD.")
    topo = parse_topology(topology)
    if topo.nodes > 1:
        raise PlacementError(f"A device_map places one process's model on one machine; {topo.label} has {topo.nodes} nodes. "
                             f"Place on one node ({topo.devices_per_node}x{topo.hardware.name}), or plan tensor/pipeline "
                             f"parallel across nodes with `perfscale plan --infer --hardware {topo.label}`.")
    if topo.hardware.kind not in ("gpu", "cpu"):
        raise PlacementError(f"{topo.hardware.name} is a {topo.hardware.kind}: device_map placement is for GPUs (with CPU "
                             "and disk offload) or a CPU alone. Use `perfscale plan --infer` for TPU layouts.")
    spec = load_model_spec(model)
    hw = topo.hardware
    host = host_capacity(hw, host_memory)
    notes = []
    if host is None:
        host = float(hw.memory) if hw.kind == "cpu" else 0.0
    if host_memory is None and hw.kind == "gpu":
        from perfscale.estimate.host import HOST_MEMORY_SOURCE

        notes.append(f"host RAM {host / 2**30:,.0f} GiB: {HOST_MEMORY_SOURCE} (set --host-memory-gib)")
    planner = _Planner(spec, hw, batch, prompt, new_tokens, dtype, quantization, kv_cache_dtype)
    gpus = topo.devices_per_node if hw.kind == "gpu" else 0
    bandwidth = disk_bandwidth or DISK_BANDWIDTH
    device_map, uses, budgets = planner.place(gpus, host, disk, strategy)
    fits = _fits(uses) and _covered(planner, device_map)
    offloaded = any(u.weights_bytes for u in uses if u.device in ("cpu", "disk")) if gpus else \
        any(u.weights_bytes for u in uses if u.device == "disk")
    alts = _alternatives(planner, gpus, host, disk, strategy, bandwidth, topo) if alternatives and (offloaded or not fits) \
        else []
    if not fits:
        lines = [f"{a.name}: {a.summary}" for a in alts if a.fits] or ["nothing tried fits: use a machine with more memory"]
        short = [f"{u.device}: needs {u.total_bytes / 2**30:,.1f} GiB of {u.capacity_bytes / 2**30:,.1f} GiB"
                 for u in uses if not u.fits]
        raise PlacementError(
            f"{spec.name} in {DTYPES[dtype]}{'' if quantization == 'none' else ' ' + quantization} does not fit on "
            f"{topo.label} + {host / 2**30:,.0f} GiB host RAM + {'unlimited' if disk is None else f'{disk / 2**30:,.0f} GiB'} "
            f"disk even with offload ({'; '.join(short) or 'modules left unplaced'}). Alternatives: " + "; ".join(lines) + ".")
    decode = planner.decode(uses, bandwidth)
    if any(u.device == "disk" and u.weights_bytes for u in uses):
        notes.append(f"disk offload: {DISK_BANDWIDTH_SOURCE}" if disk_bandwidth is None else "disk offload at the given bandwidth")
    kwargs, auto_kwargs = _kwargs(device_map, budgets, uses, dtype, quantization, strategy)
    snippet = _snippet(spec, kwargs)
    accepted = accelerate_accepts(spec, device_map, DTYPES[dtype], model=planner.model)  # last use: hooks may stay
    return PlacementResult(
        model=spec.name, architecture=spec.architecture, topology=topo.label, dtype=DTYPES[dtype], quantization=quantization,
        strategy=strategy, workload={"batch": batch, "prompt": prompt, "new_tokens": new_tokens}, fits=fits,
        offloaded=offloaded, device_map=dict(device_map), devices=uses, no_split_module_classes=planner.no_split,
        kwargs=kwargs, auto_kwargs=auto_kwargs, snippet=snippet, decode=decode, alternatives=alts,
        accelerate_check=accepted, notes=notes)


def accelerate_accepts(spec, device_map: dict, dtype: str, model=None) -> str:
    """Hand the map to accelerate on a fresh meta model: check_device_map, then dispatch_model with every GPU index
    mapped to "meta" (no GPU needed) and disk-offloaded weights described by an offload index instead of written.
    Returns what was checked; raises whatever accelerate raises (a bug in the map, not a user error).
    `model`: a meta model of spec to use (dispatch attaches hooks to it); None builds a fresh one."""
    import tempfile

    from accelerate import dispatch_model
    from accelerate.utils import check_device_map

    from perfscale.specs.param_count import build_meta_model

    if model is None:
        model = build_meta_model(spec.config_object(), spec.architecture)
    check_device_map(model, device_map)
    if not any(isinstance(v, int) for v in device_map.values()):
        # dispatch_model would move the CPU-resident part to the CPU: impossible for meta tensors
        return "accelerate check_device_map accepted it (a CPU/disk map: dispatch needs the real weights)"
    meta_map = {k: ("meta" if isinstance(v, int) else v) for k, v in device_map.items()}
    disk = [k for k, v in device_map.items() if v == "disk"]
    index = {n: {"dtype": dtype, "shape": list(t.shape)} for n, t in model.state_dict().items()
             if any(k == "" or n == k or n.startswith(k + ".") for k in disk)}
    with tempfile.TemporaryDirectory(prefix="perfscale-offload-") as folder:
        dispatch_model(model, device_map=meta_map, offload_dir=folder if disk else None, offload_index=index or None)
    return "accelerate check_device_map and dispatch_model (on the meta model) accepted it"


def _covered(planner: _Planner, device_map: dict) -> bool:
    """accelerate's own check: every parameter and buffer is in exactly one entry of the map."""
    from accelerate.utils import check_device_map

    try:
        check_device_map(planner.model, device_map)
    except ValueError:
        return False
    return True


def _gib_text(n: float) -> str:
    return f"{n / 2**30:.2f}GiB"


def _kwargs(device_map, budgets, uses, dtype: str, quantization: str, strategy: str) -> tuple[dict, dict]:
    kwargs: dict[str, Any] = {"device_map": dict(device_map), "dtype": DTYPES[dtype]}
    if any(u.device == "disk" and u.weights_bytes for u in uses):
        kwargs["offload_folder"] = "offload"
    q = quantization_config(quantization, dtype)
    if q:
        kwargs["quantization_config"] = q
    auto = {"device_map": strategy, "max_memory": {k: _gib_text(v) for k, v in budgets.items() if k != "disk" or v < UNLIMITED_DISK},
            "dtype": DTYPES[dtype]}
    for key in ("offload_folder", "quantization_config"):
        if key in kwargs:
            auto[key] = kwargs[key]
    return kwargs, auto


def _snippet(spec, kwargs: dict) -> str:
    model_id = spec.hub_id or spec.location
    parts = ["device_map=device_map", f"dtype=torch.{kwargs['dtype']}"]
    if "offload_folder" in kwargs:
        parts.append(f"offload_folder={kwargs['offload_folder']!r}")
    head = ["import torch", "from transformers import AutoModelForCausalLM"]
    if "quantization_config" in kwargs:
        head.append("from transformers import BitsAndBytesConfig")
        parts.append(f"quantization_config=BitsAndBytesConfig(**{kwargs['quantization_config']!r})")
    return "\n".join(head + [f"device_map = {kwargs['device_map']!r}",
                             f"model = AutoModelForCausalLM.from_pretrained({model_id!r}, {', '.join(parts)})"])


def _alternatives(planner: _Planner, gpus: int, host: float, disk, strategy: str, bandwidth: float, topo) -> list[Alternative]:
    out: list[Alternative] = []
    spec, hw = planner.spec, planner.hw
    w = planner.workload
    for q in ("int8", "nf4"):
        if q == planner.quantization or gpus == 0:
            continue
        alt = _Planner(spec, hw, w.batch, w.prompt, w.new_tokens, planner.dtype, q, planner.config.kv_cache_dtype,
                       model=planner.model)
        dm, uses, _ = alt.place(gpus, host, disk, strategy)
        ok = _fits(uses) and _covered(alt, dm)
        off = any(u.weights_bytes for u in uses if u.device in ("cpu", "disk"))
        speed = alt.decode(uses, bandwidth)["tokens_per_second"] if ok else None
        where = "all on GPUs" if not off else "still offloads " + ", ".join(
            f"{u.weights_bytes / 2**30:,.1f} GiB to {u.device}" for u in uses if u.device in ("cpu", "disk") and u.weights_bytes)
        out.append(Alternative(f"quantize-{q}", ok, off, f"bitsandbytes {q}: {where}" + (f", ~{speed:,.1f} tokens/s" if speed else ""),
                               speed, {"quantization_config": quantization_config(q, planner.dtype), "device_map": "auto"}))
    node = int(hw.node_size.value or 8) if hw.kind == "gpu" else 0
    # No fewer GPUs than the weights need at one full budget each (the first place() call tells the budget).
    budget = planner.gpu_weight_budget()
    least = int(-(-planner.sizes[""] // budget)) if budget > 0 else node + 1
    for n in range(max(gpus + 1, least), node + 1):
        dm, uses, _ = planner.place(n, host, disk, strategy)
        off = any(u.weights_bytes for u in uses if u.device in ("cpu", "disk"))
        if _fits(uses) and not off and _covered(planner, dm):
            speed = planner.decode(uses, bandwidth)["tokens_per_second"]
            out.append(Alternative("more-gpus", True, False, f"{n}x{hw.name} hold it without offload, ~{speed:,.1f} tokens/s "
                                   "(device_map, one GPU at a time)", speed, {"device_map": strategy}))
            break
    tp = _tensor_parallel(planner, node or gpus)
    if tp is not None:
        out.append(tp)
    return out


def _tensor_parallel(planner: _Planner, max_devices: int) -> Alternative | None:
    """The smallest tensor-parallel degree whose estimate fits (perfscale's estimate engine), with tp_plan="auto"."""
    from perfscale.errors import PerfscaleError
    from perfscale.estimate import estimate
    from perfscale.specs import Topology

    spec, hw = planner.spec, planner.hw
    if hw.kind != "gpu":
        return None
    for tp in range(2, max_devices + 1):
        if spec.num_heads % tp or spec.num_kv_heads % tp and tp % spec.num_kv_heads:
            continue
        try:
            est = estimate(spec, _with_tp(planner.config, tp), Topology(hw, 1, tp))
        except PerfscaleError:
            continue
        if est.fits:
            per_token = est.time.per_token_seconds
            speed = planner.workload.batch / per_token if per_token else None
            plan = getattr(spec.config_object(), "base_model_tp_plan", None)
            note = "" if plan else f" ({spec.architecture}'s config has no base_model_tp_plan: transformers cannot shard it)"
            return Alternative("tensor-parallel", bool(plan), False,
                               f"tp={tp} over {tp}x{hw.name}: each GPU holds 1/{tp} of every layer, ~{speed or 0:,.1f} "
                               f"tokens/s decoding (estimate){note}", speed,
                               {"tp_plan": "auto", "dtype": DTYPES[planner.dtype]},
                               f"torchrun --nproc_per_node {tp} run.py  # run.py: AutoModelForCausalLM.from_pretrained("
                               f"{(spec.hub_id or spec.location)!r}, tp_plan=\"auto\", dtype=torch.{DTYPES[planner.dtype]})")
    return None


def _with_tp(config, tp: int):
    import dataclasses

    return dataclasses.replace(config, tp=tp)
