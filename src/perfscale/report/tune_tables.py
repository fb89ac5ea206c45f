"""Rich rendering of `perfscale tune` (training): winner, speed-up with its CI, trials, snippet."""

from __future__ import annotations

from collections import Counter
from typing import Any

from perfscale.units import gib, seconds

_SHOWN = ("measured", "failed", "oom", "timeout", "not-measured")


def _rate(tp: dict[str, Any] | None) -> str:
    if not tp or tp.get("median") is None:
        return "n/a"
    return f"{tp['median']:,.0f} [{tp['ci_low']:,.0f}, {tp['ci_high']:,.0f}]"


def speedup_text(sp: dict[str, Any]) -> str:
    if sp.get("ratio") is None:
        return sp.get("verdict") or "n/a"
    if sp.get("ci_low") is None:
        return f"{sp['ratio']:.2f}x (estimated, no CI)"
    return f"{sp['ratio']:.2f}x  95% CI [{sp['ci_low']:.2f}, {sp['ci_high']:.2f}]"


# Below this many columns (a narrow terminal, or stdout a file: Rich assumes 80) the trial table keeps only
# the columns that decide (configuration, status, the rung rates): every cell on one line.
WIDE = 140


def trials_table(doc: dict[str, Any], width: int = WIDE):
    """The trials that a rung touched (measured or broke or the budget skipped), fastest first."""
    from rich.table import Table

    rows = [t for t in doc["trials"] if t["status"] in _SHOWN]
    rows.sort(key=lambda t: -max([r.get("tokens_per_s") or 0 for r in t["rungs"]] or [0]))
    winner = (doc.get("winner") or {}).get("name")
    wide = width >= WIDE
    table = Table(title=f"trials: {doc['model']}, global batch {doc['workload']['global_batch']} x seq {doc['workload']['seq']}"
                  + ("" if wide else " (tokens/s)"))
    columns = ("configuration", "role", "status", "rung 0 tok/s", "rung 1 tok/s", "est. peak", "traced peak", "note")
    for col in columns if wide else ("configuration", "status", "rung 0", "rung 1"):
        table.add_column(col, justify="left" if col in ("configuration", "role", "status", "note") else "right",
                         overflow="fold" if wide else "ellipsis", no_wrap=not wide)
    for t in rows:
        by_rung = {r["rung"]: r for r in t["rungs"]}

        def cell(rung: int, by_rung: dict = by_rung) -> str:
            r = by_rung.get(rung)
            if r is None:
                return ""
            if r.get("tokens_per_s") is None:
                return r["status"]
            return f"{r['tokens_per_s']:,.0f}" + (" (resumed)" if r.get("reused") else "")

        est = t.get("estimate") or {}
        tr = t.get("trace") or {}
        style = "bold green" if t["name"] == winner else ("cyan" if t["baseline"] else None)
        if not wide:
            table.add_row(t["name"] + (" (baseline)" if t["baseline"] else ""), t["status"], cell(0), cell(1), style=style)
            continue
        table.add_row(t["name"], ("baseline " if t["baseline"] and t.get("role") != "baseline" else "") + (t.get("role") or ""),
                      t["status"], cell(0), cell(1), gib(est.get("peak_bytes")), gib(tr.get("peak_bytes")) if tr.get("peak_bytes") else "",
                      (t.get("reason") or "")[:120], style=style)
    return table


def estimated_table(doc: dict[str, Any]):
    from rich.table import Table

    table = Table(title=f"estimated ranking on {doc['hardware']} (not measured)")
    for col in ("rank", "configuration", "est. tokens/s", "est. peak"):
        table.add_column(col, justify="left" if col == "configuration" else "right")
    rows = [doc["winner"]] + doc["runners_up"]
    for i, r in enumerate(rows, 1):
        est = r.get("estimated_tokens_per_s")
        table.add_row(str(i), r["name"], f"{est:,.0f}" if est else "n/a", gib(r.get("estimated_peak_bytes")))
    return table


def render(console, doc: dict[str, Any]) -> None:
    counts = Counter(t["status"] for t in doc["trials"])
    summary = ", ".join(f"{n} {s}" for s, n in counts.most_common())
    if doc["ranking"] == "none":
        console.print(f"[bold red]nothing fits[/bold red] {doc['model']} on {doc['hardware']} ({summary}).")
        for w in doc["what_would_fit"]:
            console.print(f"  would fit: {w.get('advice') or w}", markup=False)
        for note in doc["notes"]:
            console.print(f"note: {note}", markup=False)
        return
    if doc["ranking"] == "estimated":
        console.print(estimated_table(doc))
    else:
        console.print(trials_table(doc, console.width))
    w, b = doc["winner"], doc["baseline"]
    console.print(f"{len(doc['trials'])} configurations: {summary}.", markup=False)
    console.print(f"[bold]winner:[/bold] {w['name']}", highlight=False)
    if doc["ranking"] == "measured":
        console.print(f"  tokens/s {_rate(w.get('throughput'))} (95% CI), peak RSS {gib(w.get('peak_memory_bytes'))}, "
                      f"peak tensors {gib(w.get('peak_live_tensor_bytes'))}"
                      + (f", first compile {seconds(w.get('compile_s'))}" if w.get("compile_s") else ""), markup=False)
        console.print(f"[bold]baseline[/bold] (Trainer defaults): {b.get('name')}: tokens/s {_rate(b.get('throughput'))}", highlight=False)
    sp = doc["speedup"]
    what = f"best change vs defaults ({sp['challenger']})" if sp.get("challenger") else "speed-up over defaults"
    console.print(f"[bold]{what}:[/bold] {speedup_text(sp)}", highlight=False)
    if sp.get("noise"):
        n = sp["noise"]
        console.print(f"  final: {sp.get('processes')} process(es), {sp.get('pairs')} alternating step pairs in {sp.get('final_seconds', 0):.0f} s; "
                      f"the baseline's step time varied +-{n['step_variation']:.0%} meanwhile (cancelled by pairing)", markup=False)
    console.print(f"[bold]verdict:[/bold] {sp.get('verdict')}", highlight=False)
    if doc["why"]:
        console.print("[bold]why:[/bold]")
        for line in doc["why"]:
            console.print(f"  - {line}", markup=False)
    if doc["runners_up"]:
        console.print("runners-up: " + "; ".join(
            r["name"] + (f" ({r['tokens_per_s']:,.0f} tok/s, rung {r['rung']})" if r.get("tokens_per_s") else "") for r in doc["runners_up"]), markup=False)
    s = doc["session"]
    t = doc["timing"]
    if s.get("id"):
        console.print(f"took {t['wall_s']:.0f} s (budget {t['budget_s']:.0f} s); {s['measured_trials']} runs measured, "
                      f"{s['reused_trials']} reused{' (resumed)' if s['resumed'] else ''}; journal: {s['store']} group {s['group']}", markup=False)
    for note in doc["notes"]:
        console.print(f"note: {note}", markup=False)
    if doc.get("emitted"):
        console.print("[bold]wrote:[/bold] " + ", ".join(e["path"] for e in doc["emitted"]), highlight=False)
    if doc.get("snippet"):
        console.print("\n[bold]Trainer snippet for the winner:[/bold]")
        console.print(doc["snippet"], markup=False, highlight=False, soft_wrap=True)  # copy-pasteable: no wrapping


__all__ = ["render", "speedup_text", "trials_table"]
