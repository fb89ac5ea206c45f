"""Rich tables for a trace result: breakdown at the peak, phase peaks, top modules, overheads."""

from __future__ import annotations

from typing import Any

from perfscale.report.bars import bar
from perfscale.units import gib, seconds

_LABELS = {
    "parameters": "parameters", "gradients": "gradients", "optimizer_state": "optimizer state",
    "activations": "activations", "temporaries": "temporaries (backward)", "kv_cache": "KV cache", "other": "other (buffers, inputs)",
}


def _size(n: int) -> str:
    return gib(n) if abs(n) >= 2**30 else f"{n / 2**20:,.2f} MiB"


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def breakdown_table(doc: dict[str, Any]):
    from rich.table import Table

    cfg = doc["config"]
    wl = cfg["workload"]
    what = (f"train batch {wl['batch']} x seq {wl['seq']}" if wl["mode"] == "train"
            else f"infer batch {wl['batch']}, prompt {wl['prompt']}, +{wl['new_tokens']} tokens, {cfg['cache']} cache")
    title = (f"{doc['model']}: {what}, {cfg['precision']}"
             + (f", FSDP x{doc['world_size']}" if doc.get("world_size", 1) > 1 else "")
             + f" — peak {gib(doc['peak_bytes'])} per {doc['device']} device in {doc['phase']}")
    table = Table(title=title)
    table.add_column("at the peak")
    table.add_column("bytes", justify="right")
    table.add_column("size", justify="right")
    table.add_column("share", justify="right")
    table.add_column("", no_wrap=True)  # the share as a bar (report/bars.py)
    for key, value in doc["breakdown"].items():
        if value:
            table.add_row(_LABELS.get(key, key), f"{value:,}", _size(value), _pct(value, doc["peak_bytes"]),
                          bar(value / doc["peak_bytes"] if doc["peak_bytes"] else None))
    table.add_section()
    table.add_row("peak allocated", f"{doc['peak_bytes']:,}", _size(doc["peak_bytes"]), "100%", bar(1.0))
    return table


def phases_table(doc: dict[str, Any]):
    from rich.table import Table

    table = Table(title="Peak per phase")
    table.add_column("phase")
    table.add_column("peak", justify="right")
    for phase, value in doc["phase_peaks"].items():
        mark = " <- peak" if phase == doc["phase"] else ""
        table.add_row(phase, _size(value) + mark)
    if doc.get("kv_cache_bytes") is not None:
        table.add_section()
        table.add_row("KV cache after the last token", _size(doc["kv_cache_bytes"]))
    return table


def modules_table(doc: dict[str, Any]):
    from rich.table import Table

    table = Table(title="Top modules (largest rise of allocated bytes while their forward ran)")
    table.add_column("module")
    table.add_column("rise", justify="right")
    for row in doc["top_modules"]:
        table.add_row(row["module"], _size(row["bytes"]))
    return table


def overheads_line(doc: dict[str, Any]) -> str:
    over = doc.get("device_overheads") or {}
    if not over:
        return ""
    parts = ", ".join(f"{name.replace('_', ' ')} ~{gib(v['bytes'])}" for name, v in over.items() if v.get("bytes"))
    return (f"Not in the peak (device overheads, from published defaults; see --json for sources): {parts}. "
            "The cuBLAS workspace is counted by torch.cuda.max_memory_allocated; the context is not.")


def render_trace(console, doc: dict[str, Any]) -> None:
    console.print(breakdown_table(doc))
    console.print(phases_table(doc))
    if doc["top_modules"]:
        console.print(modules_table(doc))
    line = overheads_line(doc)
    if line:
        console.print(line, style="dim")
    console.print(f"Traced on {doc['traced_on']} ({doc['method']}) in {seconds(doc['trace_seconds'])}.", style="dim")
    for note in doc.get("notes", []):
        console.print(f"note: {note}", style="dim")
