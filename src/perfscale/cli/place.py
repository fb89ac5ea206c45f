"""`perfscale place`: a device_map over one machine's GPUs, CPU RAM and disk, with budgets that leave room
for the KV cache, activations and CUDA context; its decode speed; alternatives when it must offload."""

from __future__ import annotations

from typing import Any

import typer

from perfscale.cli import knobs
from perfscale.report.emit import emit


def place(
    model: str = knobs.MODEL,
    hardware: str = typer.Option(..., "--hardware", "--topology", help="One machine: DEVICE or NxDEVICE, e.g. "
                                 "2xA100-80GB, 8xH100-80GB; CPU for a CPU alone."),
    batch: int = typer.Option(1, "--batch", help="Sequences generated together (the KV cache grows with it)."),
    prompt: int = typer.Option(512, "--prompt", help="Prompt length in tokens."),
    new_tokens: int = typer.Option(128, "--new-tokens", help="Tokens to generate after the prompt."),
    dtype: str = typer.Option("bf16", "--dtype", help="Weights dtype: bf16 | fp16 | fp32."),
    quantization: str = typer.Option("none", "--quantization", help="none | int8 | nf4 (bitsandbytes quantization_config)."),
    strategy: str = typer.Option("balanced", "--strategy", help="accelerate's device_map strategy: balanced (= auto) | "
                                 "balanced_low_0 | sequential."),
    host_memory_gib: float = typer.Option(None, "--host-memory-gib", help="Host RAM for CPU offload, GiB (default: "
                                          "2048 GiB per GPU node, a DGX H100's 2 TB)."),
    disk_gib: float = typer.Option(None, "--disk-gib", help="Disk for disk offload, GiB (default: unlimited; 0: none)."),
    disk_gbps: float = typer.Option(None, "--disk-gbps", help="Disk read bandwidth in GB/s for the speed of disk "
                                    "offload (default 3.5, an NVMe SSD)."),
    as_json: bool = knobs.JSON,
) -> None:
    """Where each layer goes (device_map) on GPUs + CPU + disk, the from_pretrained kwargs, the decode speed, and what
    to do instead when it must offload (quantize, more GPUs, tensor parallel)."""
    from perfscale.bigmodel.placement import plan_placement
    from perfscale.errors import InvalidConfigError
    from perfscale.specs.workload import InferWorkload

    InferWorkload(batch=batch, prompt=prompt, new_tokens=new_tokens)  # validates the sizes, all problems at once
    for name, value in (("--host-memory-gib", host_memory_gib), ("--disk-gib", disk_gib), ("--disk-gbps", disk_gbps)):
        if value is not None and not (0 <= value < 2**40) or (name == "--disk-gbps" and value is not None and value <= 0):
            raise InvalidConfigError(f"{name} {value!r} is out of range: give a finite number "
                                     f"{'> 0' if name == '--disk-gbps' else '>= 0'} (e.g. {name} 512).")
    result = plan_placement(
        model or knobs.DEFAULT_MODEL, hardware, batch=batch, prompt=prompt, new_tokens=new_tokens, dtype=dtype,
        quantization=quantization, strategy=strategy,
        host_memory=None if host_memory_gib is None else host_memory_gib * 2**30,
        disk=None if disk_gib is None else disk_gib * 2**30, disk_bandwidth=None if disk_gbps is None else disk_gbps * 1e9)
    document = result.to_dict()
    emit(document, as_json, lambda console: _render(console, document))


def _gib(n: float | None) -> str:
    return "unlimited" if n is None else f"{n / 2**30:,.1f} GiB"


def _render(console, d: dict[str, Any]) -> None:
    from rich.table import Table

    w = d["workload"]
    title = (f"{d['model']} on {d['topology']}: {d['dtype']}{'' if d['quantization'] == 'none' else ' ' + d['quantization']}, "
             f"batch {w['batch']}, {w['prompt']}+{w['new_tokens']} tokens, {d['strategy']}")
    table = Table(title=title)
    for column in ("device", "layers", "weights", "KV cache", "transient", "overheads", "total", "capacity", "fits"):
        table.add_column(column, justify="left" if column == "device" else "right")
    for u in d["devices"]:
        table.add_row(str(u["device"]), str(u["layers"]), _gib(u["weights_bytes"]), _gib(u["kv_cache_bytes"]),
                      _gib(u["transient_bytes"]), _gib(u["overhead_bytes"]), _gib(u["total_bytes"]), _gib(u["capacity_bytes"]),
                      "yes" if u["fits"] else "NO")
    console.print(table)
    dec = d["decode"]
    split = ", ".join(f"{k} {v * 1e3:,.1f} ms" for k, v in dec["split_seconds"].items() if v)
    console.print(f"decode: {dec['per_token_seconds'] * 1e3:,.1f} ms per step, ~{dec['tokens_per_second'] or 0:,.2f} tokens/s "
                  f"(bound by {dec['bound']}: {split})")
    console.print(f"from_pretrained: {', '.join(f'{k}=...' if k == 'device_map' else f'{k}={v!r}' for k, v in d['kwargs'].items())}")
    console.print(f"or: {', '.join(f'{k}={v!r}' for k, v in d['auto_kwargs'].items())}")
    console.print(d["accelerate_check"])
    if d["alternatives"]:
        alts = Table(title="Instead of offloading")
        for column in ("option", "fits", "what"):
            alts.add_column(column)
        for a in d["alternatives"]:
            alts.add_row(a["name"], "yes" if a["fits"] else "no", a["summary"] + (f"\n{a['command']}" if a["command"] else ""))
        console.print(alts)
    for note in d["notes"]:
        console.print(f"note: {note}")
