"""Hardware specs (one device) and topologies (nodes x devices per node x device).

Every number carries its source. A dtype a device does not run has peak `None`, and anything
computed from it (e.g. MFU) shows "n/a" rather than a guess.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from perfscale.specs import catalog

DTYPES = ("fp32", "tf32", "fp16", "bf16", "fp8", "int8")


@dataclass(frozen=True)
class Sourced:
    """A number and where it comes from."""

    value: float | None
    source: str


@dataclass(frozen=True)
class Link:
    name: str
    bandwidth: Sourced  # bytes/s per direction per device


@dataclass(frozen=True)
class Hardware:
    """One device: memory, peak FLOP/s per dtype (dense), bandwidths, node layout."""

    name: str
    kind: str  # gpu | tpu | cpu
    vendor: str
    description: str
    memory_bytes: Sourced
    peak_flops: dict[str, Sourced]
    memory_bandwidth: Sourced
    intra_node: Link
    node_size: Sourced
    inter_node: Link
    aliases: tuple[str, ...] = ()
    detected: dict[str, Any] = field(default_factory=dict)  # facts read off this machine

    def peak(self, dtype: str) -> float | None:
        """Dense peak FLOP/s for a dtype, or None when the device does not run it (or it is unknown)."""
        entry = self.peak_flops.get(dtype)
        return entry.value if entry else None

    @property
    def memory(self) -> int:
        return int(self.memory_bytes.value or 0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Topology:
    """`nodes` x `devices_per_node` devices of one kind, e.g. 2x8xH100-80GB."""

    hardware: Hardware
    nodes: int = 1
    devices_per_node: int = 1

    @property
    def world_size(self) -> int:
        return self.nodes * self.devices_per_node

    @property
    def label(self) -> str:
        if self.nodes > 1:
            return f"{self.nodes}x{self.devices_per_node}x{self.hardware.name}"
        if self.devices_per_node > 1:
            return f"{self.devices_per_node}x{self.hardware.name}"
        return self.hardware.name

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "nodes": self.nodes,
            "devices_per_node": self.devices_per_node,
            "world_size": self.world_size,
            "hardware": self.hardware.to_dict(),
        }


def _sourced(data: dict[str, Any] | None) -> Sourced:
    data = data or {"value": None, "source": "unknown"}
    return Sourced(value=data.get("value"), source=str(data.get("source", "")))


def _link(data: dict[str, Any] | None) -> Link:
    data = data or {}
    return Link(name=str(data.get("link", "unknown")), bandwidth=_sourced(data.get("bandwidth")))


def hardware_from_dict(data: dict[str, Any]) -> Hardware:
    peaks = data.get("peak_flops", {})
    return Hardware(
        name=data["name"],
        kind=data.get("kind", "gpu"),
        vendor=data.get("vendor", ""),
        description=data.get("description", data["name"]),
        memory_bytes=_sourced(data.get("memory_bytes")),
        peak_flops={d: _sourced(peaks.get(d)) for d in DTYPES},
        memory_bandwidth=_sourced(data.get("memory_bandwidth")),
        intra_node=_link(data.get("intra_node")),
        node_size=_sourced(data.get("node_size")),
        inter_node=_link(data.get("inter_node")),
        aliases=tuple(data.get("aliases", ())),
    )


def catalog_hardware() -> list[Hardware]:
    return [hardware_from_dict(d) for d in catalog.hardware_document()["devices"]]


def hardware_names() -> list[str]:
    return [h.name for h in catalog_hardware()]
