"""Rich table of a TPU slice (`perfscale hardware show v5e-16`): its shape and links, each with its source."""

from __future__ import annotations

from perfscale.units import rate


def tpu_slice_table(topology):
    from rich.table import Table

    from perfscale.specs.tpu import generations

    tpu = topology.hardware.torus
    gen = generations()[tpu.generation]
    table = Table(title=f"TPU slice {tpu.label}: {tpu.slices} x {tpu.chips} chips = {topology.world_size} chips")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_column("source")
    unit = "TensorCores" if gen.counts == "tensorcores" else "chips"
    table.add_row("accelerator type counts", unit, gen.sources["slice_counts_source"])
    table.add_row("chips per slice", str(tpu.chips), gen.sources["shapes_source"])
    table.add_row("torus shape", " x ".join(f"{d}{' (wraps)' if w else ''}" for d, w in zip(tpu.shape, tpu.wraps, strict=True)),
                  gen.sources["torus_source"])
    table.add_row("wraparound", gen.wraparound, gen.sources["wraparound_source"])
    table.add_row("TensorCores per chip", str(tpu.cores_per_chip), gen.cores_per_chip.source)
    table.add_row("hosts per slice", f"{tpu.hosts:g}", gen.chips_per_host.source)
    table.add_row("ICI links per chip", str(gen.ici_ports.value), gen.ici_ports.source)
    table.add_row("ICI per link, one direction", rate(tpu.ici_link_bandwidth, "B/s"), gen.ici_link_bandwidth.source)
    table.add_row("ring all-gather bandwidth, whole slice", rate(tpu.group_bandwidth(tpu.chips), "B/s"),
                  "per chip, from the torus shape (specs/tpu.TpuSlice.group_bandwidth)")
    table.add_row("DCN per chip (between slices)", rate(tpu.dcn_bandwidth, "B/s"), gen.dcn_bandwidth.source)
    table.add_row("MXU tile (matmul dims padded to)", str(tpu.mxu_tile), gen.mxu_tile.source)
    table.add_row("pod size (chips)", str(gen.pod_chips.value), gen.pod_chips.source)
    return table
