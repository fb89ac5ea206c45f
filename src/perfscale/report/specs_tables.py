"""Rich tables for model specs, hardware specs and this machine."""

from __future__ import annotations

from typing import Any

from perfscale.units import count, gib, rate
from perfscale.specs.hardware import DTYPES, Hardware
from perfscale.specs.param_count import COMPONENTS


def models_table(rows: list[dict[str, Any]]):
    from rich.table import Table

    table = Table(title=f"Model catalogue ({len(rows)} models)")
    for column in ("name", "family", "params", "layers", "hidden", "heads/kv", "vocab", "published"):
        table.add_column(column, justify="left" if column in ("name", "family") else "right")
    for r in rows:
        table.add_row(
            r["name"], r["family"], count(r["params"]["total"]), str(r["num_layers"]), str(r["hidden_size"]),
            f"{r['num_heads']}/{r['num_kv_heads']}", f"{r['vocab_size']:,}", count(r.get("published_params")),
        )
    return table


def model_table(spec: dict[str, Any]):
    from rich.table import Table

    table = Table(title=f"{spec['name']} ({spec['architecture']})", show_header=False)
    table.add_column("field")
    table.add_column("value", justify="right")
    for key in (
        "family", "source", "location", "hub_id", "num_layers", "num_encoder_layers", "hidden_size", "num_heads",
        "num_kv_heads", "head_dim", "intermediate_size", "vocab_size", "tied_embeddings", "num_experts",
        "experts_per_token", "max_positions",
    ):
        if spec.get(key) is not None:
            table.add_row(key, str(spec[key]))
    params = spec["params"]
    table.add_section()
    table.add_row("parameters (exact)", f"{params['total']:,} ({count(params['total'])})")
    for component in COMPONENTS:
        table.add_row(f"  {component}", f"{params[component]:,}")
    if spec.get("published_params"):
        table.add_row("published", f"{count(spec['published_params'])} — {spec.get('published_source', '')}")
    return table


def hardware_list_table(items: list[Hardware]):
    from rich.table import Table

    table = Table(title=f"Hardware catalogue ({len(items)} devices; dense peaks)")
    for column in ("name", "memory", "bf16", "fp16", "fp32", "fp8", "mem bw", "intra-node", "node"):
        table.add_column(column, justify="left" if column in ("name", "intra-node") else "right")
    for hw in items:
        table.add_row(
            hw.name, gib(hw.memory_bytes.value), rate(hw.peak("bf16"), "FLOP/s"), rate(hw.peak("fp16"), "FLOP/s"),
            rate(hw.peak("fp32"), "FLOP/s"), rate(hw.peak("fp8"), "FLOP/s"), rate(hw.memory_bandwidth.value, "B/s"),
            f"{hw.intra_node.name} {rate(hw.intra_node.bandwidth.value, 'B/s')}",
            str(int(hw.node_size.value)) if hw.node_size.value else "n/a",
        )
    return table


def hardware_table(hw: Hardware):
    from rich.table import Table

    table = Table(title=f"{hw.name}: {hw.description}")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_column("source")
    table.add_row("memory", gib(hw.memory_bytes.value), hw.memory_bytes.source)
    for dtype in DTYPES:
        entry = hw.peak_flops[dtype]
        table.add_row(f"peak {dtype} (dense)", rate(entry.value, "FLOP/s"), entry.source)
    table.add_row("memory bandwidth", rate(hw.memory_bandwidth.value, "B/s"), hw.memory_bandwidth.source)
    table.add_row(f"intra-node ({hw.intra_node.name})", rate(hw.intra_node.bandwidth.value, "B/s"), hw.intra_node.bandwidth.source)
    table.add_row("devices per node", str(hw.node_size.value), hw.node_size.source)
    table.add_row(f"inter-node ({hw.inter_node.name})", rate(hw.inter_node.bandwidth.value, "B/s"), hw.inter_node.bandwidth.source)
    return table


def local_tables(machine: dict[str, Any]) -> list:
    from rich.table import Table

    cpu = machine["cpu"]
    table = Table(title="This machine", show_header=False)
    table.add_column("field")
    table.add_column("value")
    table.add_row("CPU", cpu["model"])
    table.add_row("cores", f"{cpu['physical_cores']} physical, {cpu['logical_cores']} usable")
    table.add_row("memory", gib(cpu["memory_bytes"]))
    table.add_row("ISA", " ".join(f for f, on in cpu["isa"].items() if on) or "none detected")
    table.add_row("native bf16 / fp16", f"{'yes' if cpu['native_bf16'] else 'no'} / {'yes' if cpu['native_fp16'] else 'no'}")
    for gpu in machine["gpus"]:
        table.add_row(f"GPU {gpu['index']}", f"{gpu['name']}, {gib(gpu['memory_bytes'])}, sm {gpu['capability']} (catalogue: {gpu['catalog_match'] or 'n/a'})")
    if not machine["gpus"]:
        table.add_row("GPU", "none (CUDA not available)")
    tables = [table]
    if machine.get("gpu_topology"):
        tables.append(machine["gpu_topology"])
    return tables
