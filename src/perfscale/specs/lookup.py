"""Hardware and topologies by name: a catalogue device, or `local` (this machine, detected), and
topology strings such as `2x8xH100-80GB` (nodes x devices per node x device).

It sits above hardware.py (the value types and the catalogue) and detect.py (which builds a
Hardware for this machine from them), so those two import in one direction only.
"""

from __future__ import annotations

import re

from perfscale.errors import TopologyError, UnknownNameError, closest
from perfscale.specs.detect import detect_local
from perfscale.specs.hardware import Hardware, Topology, catalog_hardware, hardware_names
from perfscale.specs.tpu import chip_on_slice, looks_like_slice, parse_slice, slice_of_chips


def get_hardware(name: str) -> Hardware:
    """A catalogue device by name or alias (case-insensitive); `local` detects this machine."""
    if name.lower() == "local":
        return detect_local().hardware
    lowered = name.lower()
    for hw in catalog_hardware():
        if lowered == hw.name.lower() or lowered in (a.lower() for a in hw.aliases):
            return hw
    candidates = hardware_names() + [a for hw in catalog_hardware() for a in hw.aliases]
    suggestions = closest(name, candidates)
    hint = f" Did you mean: {', '.join(suggestions)}?" if suggestions else ""
    raise UnknownNameError(
        f"Unknown hardware {name!r}.{hint} List the catalogue with `perfscale hardware`, "
        "or use `local` for this machine."
    )


_COUNT_PREFIX = re.compile(r"^(\d+)[xX](.+)$")


# Bounds on a topology: the largest published training clusters are ~100k GPUs (e.g. xAI Colossus) in
# nodes of 8 (NVL72 racks expose 72 per NVLink domain); 2^17 nodes x 1024 devices leaves room and
# keeps every layout search bounded by the input's size.
MAX_NODES = 2**17
MAX_DEVICES_PER_NODE = 1024


def tpu_topology(tpu) -> Topology:
    """A TPU slice as a topology: nodes = slices (joined by DCN), devices per node = chips per slice."""
    return Topology(hardware=chip_on_slice(tpu), nodes=tpu.slices, devices_per_node=tpu.chips)


def parse_topology(text: str) -> Topology:
    """`H100-80GB` (1 device), `8xH100-80GB` (one node of 8), `2x8xH100-80GB` (2 nodes of 8); TPU slices by
    Google's accelerator type, `v5e-16`, `v5p-128`, `v4-32`, `2xv5e-256` (2 slices over DCN)."""
    example = ("Use DEVICE, NxDEVICE or NODESxNxDEVICE, e.g. H100-80GB, 8xH100-80GB, 2x8xH100-80GB, "
               "or a TPU slice such as v5e-16.")
    if looks_like_slice(text):
        return tpu_topology(parse_slice(text))
    rest, counts = text.strip(), []
    while (match := _COUNT_PREFIX.match(rest)) and len(counts) < 3:
        counts.append(int(match.group(1)))
        rest = match.group(2)
    if not rest or len(counts) > 2:
        raise TopologyError(f"Bad topology {text!r}. {example}")
    nodes, per_node = ([1, 1] + counts)[-2:]
    if nodes < 1 or per_node < 1:
        raise TopologyError(f"Bad topology {text!r}: counts must be at least 1. {example}")
    if nodes > MAX_NODES or per_node > MAX_DEVICES_PER_NODE:
        raise TopologyError(f"Bad topology {text[:80]!r}: at most {MAX_NODES:,} nodes of at most {MAX_DEVICES_PER_NODE} "
                            f"devices each (got {nodes:,} x {per_node:,}). {example}")
    try:
        hardware = get_hardware(rest)
    except UnknownNameError as exc:
        raise TopologyError(f"Bad topology {text!r}: {exc}") from exc
    if hardware.kind == "tpu":  # NxTPU-v5e: the slice of N chips (NODESxN: NODES slices over DCN); a bare chip
        # name: the generation's smallest slice (v5e-1; v4-8 and v5p-8 are one host of 4 chips)
        return tpu_topology(slice_of_chips(hardware, per_node if counts else None, nodes))
    return Topology(hardware=hardware, nodes=nodes, devices_per_node=per_node)
