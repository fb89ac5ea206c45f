"""Rich rendering of a PlanResult: the ranked configurations, the best one's breakdown, advice."""

from __future__ import annotations

from perfscale.report.bars import bar
from perfscale.units import gib, seconds

_SHOWN_TRAIN = ("precision", "optimizer", "checkpointing", "attn", "batch", "accum", "zero", "fsdp", "tp", "pp", "pp_virtual", "cp",
                "pp_embedding_as_layer", "offload", "sequence_parallel", "fused_kernels", "selective_recompute", "lora_r")
_SHOWN_INFER = ("precision", "quantization", "kv_cache_dtype", "cache", "attn", "batch", "tp")


def _knob_text(knobs: dict, mode: str) -> str:
    parts = []
    for name in _SHOWN_TRAIN if mode == "train" else _SHOWN_INFER:
        value = knobs.get(name)
        if value in (None, False, "none", 0) and name not in ("batch",):
            continue
        if name in ("pp_virtual", "cp") and value == 1:
            continue
        parts.append(name if value is True else f"{name}={value}")
    return " ".join(parts)


def _render_strategies(result, console) -> None:
    """TPU slices: the best configuration of each way to shard (tune/plan.TPU_STRATEGIES), fit or not."""
    from rich.table import Table

    from perfscale.tune.plan import strategy_of

    table = Table(title=f"Sharding strategies on {result.topology} (best of each; memory per chip)")
    for col in ("strategy", "configuration", "peak", "fits", "step", "tokens/s", "MFU"):
        table.add_column(col, justify="left" if col in ("strategy", "configuration") else "right")
    for c in result.strategies:
        table.add_row(strategy_of(c.knobs) or "", _knob_text(c.knobs, result.mode), gib(c.memory.total_bytes),
                      "yes" if c.fits else f"[red]no[/red] (capacity {gib(c.memory.capacity_bytes)})",
                      seconds(c.time.step_seconds), f"{c.time.tokens_per_second:,.0f}",
                      "n/a" if c.time.mfu is None else f"{c.time.mfu:.0%}")
    console.print(table)


def render_plan(result, console) -> None:
    from rich.table import Table

    where = f"{result.topology}" + (" (this machine: no --hardware given)" if result.hardware_detected else "")
    console.print(f"[bold]perfscale plan[/bold] {result.model} on {where}, {result.mode}, objective {result.objective}: "
                  f"{result.evaluated} configurations evaluated, {result.feasible} fit ({result.seconds * 1e3:.0f} ms)")
    table = Table(title="Ranked configurations (per device memory; peak excludes overheads)")
    for col in ("#", "configuration", "peak", "+overheads", "fits", "step" if result.mode == "train" else "total",
                "tokens/s", "MFU", "binding"):
        table.add_column(col, justify="left" if col == "configuration" else "right")
    for i, c in enumerate(result.configs, 1):
        table.add_row(str(i), _knob_text(c.knobs, result.mode), gib(c.memory.peak_bytes), gib(c.memory.total_bytes),
                      "yes" if c.fits else "[red]no[/red]", seconds(c.time.step_seconds), f"{c.time.tokens_per_second:,.0f}",
                      "n/a" if c.time.mfu is None else f"{c.time.mfu:.0%}", c.binding)
    console.print(table)
    if result.strategies:
        _render_strategies(result, console)
    if result.configs:
        best = result.configs[0]
        bd = Table(title=f"Best configuration: memory at the peak ({best.memory.phase})")
        bd.add_column("part")
        bd.add_column("bytes", justify="right")
        bd.add_column("of capacity", no_wrap=True)  # an inline bar (report/bars.py)
        bd.add_column("source")
        cap = best.memory.capacity_bytes or None
        for key, value in best.memory.breakdown.items():
            if value:
                bd.add_row(key, gib(value), bar(value / cap if cap else None, 16), "estimate")
        for o in best.memory.overheads:
            bd.add_row(o.label, gib(o.bytes), bar(o.bytes / cap if cap else None, 16), o.source)
        bd.add_row("[bold]capacity[/bold]", gib(best.memory.capacity_bytes), bar(1.0 if cap else None, 16), result.topology)
        console.print(bd)
        if best.memory.host_bytes_per_node:
            cap = best.memory.host_capacity_bytes
            console.print(f"Host RAM for CPU offload: {gib(best.memory.host_bytes_per_node)} per node"
                          + ("" if cap is None else f" of {gib(cap)}"))
        t = best.time
        line = ", ".join(f"{k} {seconds(v)}" for k, v in t.split.items() if v)
        console.print(f"Time split: {line}")
        if t.ttft_seconds is not None:
            console.print(f"Latency: TTFT {seconds(t.ttft_seconds)}, per token {seconds(t.per_token_seconds)}")
        if t.train_seconds is not None:
            cost = "" if t.cost is None else f", cost {t.cost:,.0f}"
            console.print(f"Token budget: {t.train_seconds / 3600:,.1f} h{cost}")
    for key, value in result.extras.items():
        console.print(f"{key.replace('_', ' ')}: {value:,}")
    for line in result.advice:
        console.print(f"• {line}")
