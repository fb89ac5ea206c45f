"""TPU slices: each generation's chip (a Hardware), the slice shapes Google sells, the ICI torus between
the chips of a slice and the DCN between slices. Data in specs/data/tpu.json, a source for every number.

Names are Google's accelerator types: `v5e-16` / `v5litepod-16` (v5e and v6e count chips), `v5p-128` and
`v4-32` (v4 and v5p count TensorCores, 2 per chip: v5p-128 is 64 chips, v4-32 is 16). `2xv5e-256` is two
slices joined by the data-center network (Multislice).

The torus model (How to Scale Your Model, part 3, https://jax-ml.github.io/scaling-book/sharding/): a ring
collective over one axis moves its bytes at the link bandwidth in one direction on a line (a mesh axis), in
both directions when the axis wraps around (a torus axis); over several axes the bandwidths add.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from functools import cache
from typing import Any

from perfscale.errors import TopologyError
from perfscale.specs import catalog
from perfscale.specs.hardware import Hardware, Sourced, _sourced, tpu_chip_from_entry

# The largest Multislice job Google documents: 'You can scale up to 18432 chips using Multislice' (v5p page,
# 3 slices of 6144); 64 slices bounds what a plan searches.
MAX_SLICES = 64


@dataclass(frozen=True)
class TpuSlice:
    """One slice shape of a generation (times `slices` over DCN): the facts the time model reads."""

    generation: str
    name: str  # the accelerator type as given, e.g. "v5e-16"
    chips: int  # per slice
    shape: tuple[int, ...]  # chips along each torus axis (innermost first)
    wraps: tuple[bool, ...]  # whether each axis closes into a ring (torus) or is a line (mesh)
    slices: int
    cores_per_chip: int
    hosts: float  # per slice (a sub-host slice has a fraction)
    ici_link_bandwidth: float  # bytes/s, one link, one direction
    dcn_bandwidth: float  # bytes/s per chip between slices
    mxu_tile: int  # matmul dimensions are padded to a multiple of this

    @property
    def label(self) -> str:
        return f"{self.slices}x{self.name}" if self.slices > 1 else self.name

    @property
    def topology_text(self) -> str:
        return "x".join(map(str, self.shape))

    def group_bandwidth(self, size: int, stride: int = 1) -> float:
        """Bytes/s per chip of a ring collective over `size` chips of one slice that are `stride` chips apart
        in the slice's order (groups laid innermost first: tensor parallel at stride 1, data parallel at stride
        tp). Per axis the group spans: link x (2 if the group closes the axis' wraparound ring, else 1), divided
        by the axis stride (strided rings share links); axes add. A layout that does not factor over the axes
        gets one link in one direction (the slowest case)."""
        link = self.ici_link_bandwidth
        if size <= 1:
            return link
        total, left, inner = 0.0, size, stride
        for d, wrap in zip(self.shape, self.wraps, strict=True):
            if left == 1:
                break
            if inner >= d:
                if inner % d:
                    return link
                inner //= d
                continue
            if d % inner:
                return link
            room = d // inner
            used = min(left, room)
            if left % used or room % used:
                return link
            closed = wrap and used == room
            total += (2.0 if closed else 1.0) * link / inner
            left //= used
            inner = 1
        return total if left == 1 and total > 0 else link

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["label"], data["topology"] = self.label, self.topology_text
        return data


@dataclass(frozen=True)
class TpuGeneration:
    name: str
    chip: Hardware
    slice_names: tuple[str, ...]
    counts: str  # "chips" | "tensorcores": what the number in an accelerator type counts
    cores_per_chip: Sourced
    torus_dims: int
    wraparound: str  # "full_axis" (an axis of the pod's full 16) | "cube" (whole 4x4x4 cubes, axes multiple of 4)
    ici_ports: Sourced
    ici_link_bandwidth: Sourced
    dcn_bandwidth: Sourced
    chips_per_host: Sourced
    pod_chips: Sourced
    mxu_tile: Sourced
    shapes: dict[int, tuple[int, ...]]  # chips -> torus shape
    sources: dict[str, str]

    def accelerator_types(self) -> list[str]:
        per = self.cores_per_chip.value if self.counts == "tensorcores" else 1
        return [f"{self.name}-{int(chips * per)}" for chips in sorted(self.shapes)]

    def wraps(self, shape: tuple[int, ...]) -> tuple[bool, ...]:
        chips = 1
        for d in shape:
            chips *= d
        if self.wraparound == "full_axis":
            full = round((self.pod_chips.value or 0) ** (1 / self.torus_dims))
            return tuple(d == full and d > 2 for d in shape)
        return tuple(chips >= 64 and d % 4 == 0 for d in shape)

    def slice(self, name: str, chips: int, slices: int = 1) -> TpuSlice:
        shape = self.shapes[chips]
        return TpuSlice(
            generation=self.name, name=name, chips=chips, shape=shape, wraps=self.wraps(shape), slices=slices,
            cores_per_chip=int(self.cores_per_chip.value), hosts=chips / self.chips_per_host.value,
            ici_link_bandwidth=float(self.ici_link_bandwidth.value), dcn_bandwidth=float(self.dcn_bandwidth.value),
            mxu_tile=int(self.mxu_tile.value),
        )

    def describe(self) -> dict[str, Any]:
        """Every per-generation number with its source (for `perfscale hardware show`)."""
        return {
            "generation": self.name, "chip": self.chip.name, "accelerator_types": self.accelerator_types(),
            "counts": self.counts, "cores_per_chip": dataclasses.asdict(self.cores_per_chip),
            "torus_dims": self.torus_dims, "wraparound": self.wraparound,
            "ici_ports": dataclasses.asdict(self.ici_ports), "ici_link_bandwidth": dataclasses.asdict(self.ici_link_bandwidth),
            "dcn_bandwidth": dataclasses.asdict(self.dcn_bandwidth), "chips_per_host": dataclasses.asdict(self.chips_per_host),
            "pod_chips": dataclasses.asdict(self.pod_chips), "mxu_tile": dataclasses.asdict(self.mxu_tile),
            "shapes": {str(c): list(s) for c, s in sorted(self.shapes.items())}, "sources": dict(self.sources),
        }


@cache
def generations() -> dict[str, TpuGeneration]:
    out = {}
    for entry in catalog.tpu_document()["generations"]:
        out[entry["generation"]] = TpuGeneration(
            name=entry["generation"], chip=tpu_chip_from_entry(entry), slice_names=tuple(entry["slice_names"]),
            counts=entry["slice_counts"], cores_per_chip=_sourced(entry["cores_per_chip"]),
            torus_dims=int(entry["torus_dims"]), wraparound=entry["wraparound"],
            ici_ports=_sourced(entry["ici_ports"]), ici_link_bandwidth=_sourced(entry["ici_link_bandwidth"]),
            dcn_bandwidth=_sourced(entry["dcn_bandwidth"]), chips_per_host=_sourced(entry["chips_per_host"]),
            pod_chips=_sourced(entry["pod_chips"]), mxu_tile=_sourced(entry["mxu_tile"]),
            shapes={int(c): tuple(s) for c, s in entry["shapes"].items()},
            sources={k: entry[k] for k in ("slice_counts_source", "torus_source", "wraparound_source", "shapes_source")},
        )
    return out


def tpu_chips() -> list[Hardware]:
    return [g.chip for g in generations().values()]


def generation_of(hw: Hardware) -> TpuGeneration | None:
    return next((g for g in generations().values() if g.chip.name == hw.name), None)


def valid_slices() -> list[str]:
    return [t for g in generations().values() for t in g.accelerator_types()]


_SLICE = re.compile(r"^(?:(\d+)[xX])?(v\d+[a-z]*|v5litepod)-(\d+)$", re.IGNORECASE)


def looks_like_slice(text: str) -> bool:
    """`v5e-16`, `v4-32`, `2xv5e-256`, `v9-8` (a TPU-style name, valid or not)."""
    return bool(_SLICE.match(text.strip()))


def _bad(text: str, why: str) -> TopologyError:
    examples = ", ".join(g.accelerator_types()[min(2, len(g.accelerator_types()) - 1)] for g in generations().values())
    return TopologyError(
        f"Bad TPU slice {text[:80]!r}: {why} Valid slices: "
        + "; ".join(f"{g.name}: {', '.join(g.accelerator_types())}" for g in generations().values())
        + f". Use one of them (e.g. {examples}), or NxSLICE for N slices over DCN (e.g. 2xv5e-256); "
        "`perfscale hardware show v5e-16` shows one."
    )


def parse_slice(text: str) -> TpuSlice:
    """A TPU accelerator type (optionally N x one for Multislice) as a TpuSlice; TopologyError names the valid ones."""
    match = _SLICE.match(text.strip())
    if not match:
        raise _bad(text, "not a TPU accelerator type (GENERATION-COUNT).")
    count_text, family, number_text = match.groups()
    family = family.lower()
    gen = next((g for g in generations().values() if family in g.slice_names), None)
    if gen is None:
        raise _bad(text, f"no TPU generation {family!r} in the catalogue.")
    slices, number = int(count_text or 1), int(number_text)
    if not 1 <= slices <= MAX_SLICES:
        raise _bad(text, f"{slices} slices: between 1 and {MAX_SLICES} slices over DCN.")
    per = int(gen.cores_per_chip.value) if gen.counts == "tensorcores" else 1
    if number % per or number // per not in gen.shapes:
        unit = "TensorCores" if gen.counts == "tensorcores" else "chips"
        raise _bad(text, f"{gen.name} has no slice of {number} {unit} (its number counts {unit}).")
    name = f"{family}-{number}"
    return gen.slice(name, number // per, slices)


def slice_of_chips(hw: Hardware, chips: int | None, slices: int = 1) -> TpuSlice:
    """The slice of `chips` chips of this TPU chip (for NxTPU-v5e style topologies); None: the smallest slice."""
    gen = generation_of(hw)
    if gen is not None and chips is None:
        chips = min(gen.shapes)
    if gen is None or chips not in gen.shapes:
        valid = ", ".join(map(str, sorted(gen.shapes))) if gen else "none"
        raise TopologyError(f"Bad topology: {chips} x {hw.name} is not a TPU slice ({hw.name} slices have {valid} chips). "
                            f"Use an accelerator type such as {gen.accelerator_types()[-1] if gen else 'v5e-16'}.")
    per = int(gen.cores_per_chip.value) if gen.counts == "tensorcores" else 1
    return gen.slice(f"{gen.slice_names[0]}-{chips * per}", chips, slices)


def chip_on_slice(tpu: TpuSlice) -> Hardware:
    """The generation's chip, carrying the slice it sits in (what the time model reads as `hw.torus`)."""
    return dataclasses.replace(generations()[tpu.generation].chip, torus=tpu)
