"""What `perfscale place` returns: per device its budget and what fills it (DeviceUse), the alternatives
that would fit or run faster (Alternative), and the whole placement with its from_pretrained kwargs
(PlacementResult; bigmodel/placement.py computes it)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class DeviceUse:
    device: int | str  # GPU index, "cpu" or "disk" (accelerate's names)
    capacity_bytes: int | None  # None: disk without a limit
    budget_bytes: int  # what infer_auto_device_map was allowed to put there
    weights_bytes: int
    layers: int  # no-split blocks (decoder layers) placed here
    kv_cache_bytes: int  # for the layers it runs (GPU 0 also runs the offloaded ones)
    transient_bytes: int  # prefill activations, a streamed offloaded layer
    overhead_bytes: int  # CUDA context + workspace + fragmentation margin
    total_bytes: int  # all of the above

    @property
    def fits(self) -> bool:
        return self.capacity_bytes is None or self.total_bytes <= self.capacity_bytes


@dataclass(frozen=True)
class Alternative:
    name: str  # quantize-int8 | quantize-nf4 | more-gpus | tensor-parallel
    fits: bool
    offloaded: bool
    summary: str
    tokens_per_second: float | None
    kwargs: dict[str, Any] = field(default_factory=dict)
    command: str | None = None


@dataclass(frozen=True)
class PlacementResult:
    model: str
    architecture: str
    topology: str
    dtype: str
    quantization: str
    strategy: str
    workload: dict[str, int]
    fits: bool
    offloaded: bool
    device_map: dict[str, int | str]
    devices: list[DeviceUse]
    no_split_module_classes: list[str]
    kwargs: dict[str, Any]  # from_pretrained kwargs with this explicit device_map
    auto_kwargs: dict[str, Any]  # the same placement as device_map=<strategy> + max_memory
    snippet: str
    decode: dict[str, Any]
    alternatives: list[Alternative]
    accelerate_check: str  # what accelerate said of the map (check_device_map + dispatch_model on the meta model)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for d, use in zip(data["devices"], self.devices, strict=True):
            d["fits"] = use.fits
        return data


__all__ = ["Alternative", "DeviceUse", "PlacementResult"]
