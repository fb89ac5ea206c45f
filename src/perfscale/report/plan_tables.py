"""Rich rendering of a PlanResult: the ranked configurations, the best one's breakdown, advice."""

from __future__ import annotations

from perfscale.config.run_config import KNOB_CORE, KNOB_DEFAULTS, KNOB_ENGINES, KNOB_FIELDS, KNOB_MODE, KNOB_SEARCH, MODES
from perfscale.report.bars import bar
from perfscale.units import gib, seconds

# The workload's sizes, printed in every row after the attention implementation.
_SIZES = {"train": ("batch", "accum"), "infer": ("batch",)}


def _shown(mode: str) -> tuple[str, ...]:
    """The knobs a plan row prints: every RunConfig field the estimate engine honours in `mode`, in
    declaration order, with the workload's sizes after `attn`."""
    names = [name for name in KNOB_FIELDS if "estimate" in KNOB_ENGINES[name] and KNOB_MODE.get(name, mode) == mode]
    at = names.index("attn") + 1
    return (*names[:at], *_SIZES[mode], *names[at:])


def _means_off(value) -> bool:
    """A default that means the knob is not used: False, None, "none", 0, a degree of 1, an empty list."""
    return value is None or value is False or (not isinstance(value, bool) and value in ("none", 0, 1, ()))


_SHOWN = {mode: _shown(mode) for mode in MODES}
# Printed even at their default: the core knobs (a degree of 1 says the layout), and the searched knobs whose
# default is a choice rather than "off" (kv_cache_dtype auto, cache dynamic). Every other knob (including any
# new field) is printed only when not at its default; a true switch prints as its name.
_ALWAYS = {mode: frozenset(name for name in _SHOWN[mode] if name in KNOB_DEFAULTS
                           and not isinstance(KNOB_DEFAULTS[name], bool) and mode in KNOB_SEARCH.get(name, ())
                           and (name in KNOB_CORE or not _means_off(KNOB_DEFAULTS[name])))
           for mode in MODES}


def _knob_text(knobs: dict, mode: str) -> str:
    parts = []
    for name in _SHOWN[mode]:
        if name not in knobs:
            continue
        value = knobs[name]
        if isinstance(value, (list, tuple)):
            value = tuple(value)
        if name not in _SIZES[mode] and name not in _ALWAYS[mode] and value == KNOB_DEFAULTS[name]:
            continue
        if isinstance(value, tuple):
            value = ",".join(map(str, value))  # as --lora-targets takes them
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
