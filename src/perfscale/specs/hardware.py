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
    # A TPU chip placed in a slice: the slice's torus and DCN (specs/tpu.TpuSlice), read by the time model; None
    # for a catalogue chip and for every GPU/CPU.
    torus: Any = None

    def peak(self, dtype: str) -> float | None:
        """Dense peak FLOP/s for a dtype, or None when the device does not run it (or it is unknown)."""
        entry = self.peak_flops.get(dtype)
        return entry.value if entry else None

    @property
    def memory(self) -> int:
        return int(self.memory_bytes.value or 0)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if data["torus"] is None:  # only a TPU chip in a slice has one
            del data["torus"]
        return data


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
        if self.hardware.torus is not None:  # a TPU slice: Google's accelerator type, N x it over DCN
            return self.hardware.torus.label
        if self.nodes > 1:
            return f"{self.nodes}x{self.devices_per_node}x{self.hardware.name}"
        if self.devices_per_node > 1:
            return f"{self.devices_per_node}x{self.hardware.name}"
        return self.hardware.name

    def to_dict(self) -> dict[str, Any]:
        hardware = self.hardware.to_dict()
        tpu = hardware.pop("torus", None)
        data = {
            "label": self.label,
            "nodes": self.nodes,
            "devices_per_node": self.devices_per_node,
            "world_size": self.world_size,
            "hardware": hardware,
        }
        if tpu is not None:  # nodes = slices (over DCN), devices_per_node = chips per slice
            data["tpu_slice"] = self.hardware.torus.to_dict()
        return data


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


def tpu_chip_from_entry(entry: dict[str, Any]) -> Hardware:
    """A TPU generation's chip (specs/data/tpu.json) as a catalogue device: ICI within a slice, DCN between."""
    peaks = entry["peak_flops"]
    ici, ports = entry["ici_link_bandwidth"], entry["ici_ports"]
    return Hardware(
        name=entry["chip"], kind="tpu", vendor="google", description=entry["description"],
        memory_bytes=_sourced(entry["memory_bytes"]), peak_flops={d: _sourced(peaks.get(d)) for d in DTYPES},
        memory_bandwidth=_sourced(entry["memory_bandwidth"]),
        intra_node=Link(f"ICI {entry['torus_dims']}D torus, {ports['value']} links",
                        Sourced(ici["value"] * ports["value"],
                                f"{ports['value']} links x {ici['value'] / 1e9:g} GB/s per link per direction (all links "
                                f"of a chip, one direction). Links: {ports['source']}. Per link: {ici['source']}")),
        node_size=_sourced(entry["chips_per_host"]),
        inter_node=Link("DCN (data-center network, between slices)", _sourced(entry["dcn_bandwidth"])),
        aliases=tuple(entry["aliases"]),
    )


def catalog_hardware() -> list[Hardware]:
    """GPUs and CPUs (specs/data/hardware.json), then the TPU chips (specs/data/tpu.json), before the CPU entry."""
    devices = [hardware_from_dict(d) for d in catalog.hardware_document()["devices"]]
    tpus = [tpu_chip_from_entry(e) for e in catalog.tpu_document()["generations"]]
    cpus = [d for d in devices if d.kind == "cpu"]
    return [d for d in devices if d.kind != "cpu"] + tpus + cpus


def hardware_names() -> list[str]:
    return [h.name for h in catalog_hardware()]
