"""Rich tables for bench, compare and results; CSV and Markdown exports of stored runs."""

from __future__ import annotations

import csv
import io
from typing import Any

from perfscale.units import gib, rate, seconds

_STATUS_STYLE = {"ok": "green", "inaccurate": "magenta", "oom": "red", "timeout": "yellow", "failed": "red", "interrupted": "yellow"}


def _status(status: str) -> str:
    return f"[{_STATUS_STYLE.get(status, 'white')}]{status}[/]"


def _rate_ci(median: float | None, lo: float | None, hi: float | None, unit: str | None) -> str:
    if median is None:
        return "n/a"
    return f"{median:,.1f} {unit or ''} [{lo:,.1f}, {hi:,.1f}]"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def _metric_format(name: str):
    """How a per-iteration metric reads: bytes in MiB, ratios as x, everything else as a duration."""
    if name.endswith("_bytes"):
        return lambda v: "n/a" if v is None else f"{v / 2**20:,.1f} MiB"
    if name.endswith("_ratio"):
        return lambda v: "n/a" if v is None else f"{v:.3f}x"
    return seconds


def bench_table(doc: dict[str, Any]):
    """One BenchResult.to_dict() as a two-column table."""
    from rich.table import Table

    table = Table(title=f"bench: {doc['label']} ({doc['config']['model']}, {doc.get('device') or '?'})", show_header=False)
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_row("status", _status(doc["status"]) + (f" — {doc['reason']}" if doc.get("reason") else ""))
    drift = doc.get("machine_drift")
    if drift is None:
        table.add_row(f"throughput ({doc.get('unit')}), median [95% CI]", _rate_ci(doc.get("median"), doc.get("ci_low"), doc.get("ci_high"), ""))
    else:
        table.add_row(f"throughput ({doc.get('unit')}), median [95% re-run interval]",
                      _rate_ci(doc.get("median"), doc.get("ci_low"), doc.get("ci_high"), ""))
        table.add_row("  within this run [95% CI]",
                      _rate_ci(doc.get("median"), doc.get("within_run_ci_low"), doc.get("within_run_ci_high"), ""))
        table.add_row("  machine drift between runs",
                      f"{drift['cv']:.1%} ({drift['source']}: {drift['invocations']} earlier invocations, "
                      f"last {drift['window_days']:g} days)"
                      if drift.get("cv") is not None else "unknown: too few earlier invocations on this machine (3 of one configuration suffice)")
    for key, tp in (doc.get("throughput") or {}).items():
        table.add_row(f"  {key.replace('_per_s', '')}/s", _rate_ci(tp["median"], tp["ci_low"], tp["ci_high"], ""))
    t = doc.get("time_per_iter")
    if t:
        table.add_row("time per iteration: median", f"{seconds(t['median'])} [{seconds(t['ci_low'])}, {seconds(t['ci_high'])}]")
        table.add_row("  p10 / p90 / p99", f"{seconds(t['p10'])} / {seconds(t['p90'])} / {seconds(t['p99'])}")
        table.add_row("  IQR, iterations", f"{seconds(t['iqr'])}, n={t['n']}")
        table.add_row("  stop", f"{doc.get('stop_reason')} (CI half-width {t['rel_ci_half_width']:.1%})")
    for name, lat in (doc.get("latency") or {}).items():
        shown = _metric_format(name)
        table.add_row(f"{name} median [CI]", f"{shown(lat['median'])} [{shown(lat['ci_low'])}, {shown(lat['ci_high'])}]")
    setup = doc.get("setup") or {}
    if "checkpoint_bytes" in setup:  # the load scenario: what was loaded, against which the RSS ratio is taken
        table.add_row("checkpoint", f"{setup['checkpoint_bytes'] / 2**20:,.1f} MiB, {setup.get('format')}, {setup.get('shards')} file(s); "
                      f"{setup.get('class')}.from_pretrained(**{setup.get('kwargs')})")
    table.add_row("load / first iteration extra (compile)", f"{seconds(doc.get('load_s'))} / {seconds(doc.get('compile_s'))}")
    mem = doc.get("memory") or {}
    table.add_row("peak memory", gib(doc.get("peak_memory_bytes")))
    for key in ("cuda_max_allocated", "cuda_max_reserved", "cpu_peak_rss", "peak_live_tensor_bytes"):
        if key in mem:
            table.add_row(f"  {key.replace('_', ' ')}", gib(mem[key]))
    mfu = doc.get("mfu") or {}
    if mfu:
        table.add_row(f"MFU ({mfu.get('dtype')})", _pct(mfu.get("value")))
        table.add_row("  achieved / peak", f"{rate(mfu.get('achieved_flops'), 'FLOP/s')} / {rate(mfu.get('peak_flops'), 'FLOP/s')}")
    acc = doc.get("accuracy")
    if acc:
        if acc.get("reference"):
            table.add_row("accuracy", "is the fp32 eager reference")
        elif acc.get("kind") == "embeddings":
            table.add_row("accuracy (cosine vs fp32 eager)", f"mean {acc['mean_cosine']:.4f}, min {acc['min_cosine']:.4f}")
        elif acc.get("kind") == "logits":
            table.add_row("accuracy (vs fp32 eager)", f"top-1 {acc['top1_agreement']:.3f}, max |Δlogit| {acc['max_abs_logit_diff']:.3g}")
        elif acc.get("error"):
            table.add_row("accuracy", acc["error"])
    if doc.get("oom_bytes"):
        table.add_row("allocation asked", f"{doc['oom_bytes']:,} B ({gib(doc['oom_bytes'])})")
    if doc.get("stderr_tail") and doc["status"] in ("failed", "timeout", "oom"):
        table.add_row("stderr (tail)", doc["stderr_tail"][-600:])
    for note in doc.get("notes") or []:
        table.add_row("note", note)
    if doc.get("store_id") is not None:
        table.add_row("stored as", f"#{doc['store_id']}")
    return table


def compare_table(doc: dict[str, Any]):
    """CompareResult.to_dict() as one row per configuration, then the verdicts."""
    from rich.table import Table

    title = f"compare ({doc['repeats']} processes each, interleaved; ratios to {doc['reference']})"
    if doc.get("interrupted"):
        title += " — INTERRUPTED, partial"
    drift = next((row["machine_drift"] for row in doc["configurations"] if row.get("machine_drift")), None)
    caption = None
    if drift is not None:  # bench --repeats: the interval includes the drift between invocations
        caption = (f"throughput interval: 95% re-run interval, the within-run CI widened by {drift['cv']:.1%} machine "
                   f"drift ({drift['source']})" if drift.get("cv") is not None
                   else "throughput interval: within-run 95% CI (machine drift unknown: too few earlier invocations)")
    table = Table(title=title, caption=caption)
    for col in ("configuration", "status", "throughput [95% CI]", "speed vs first", "peak memory", "memory vs first", "accuracy"):
        table.add_column(col, justify="left" if col in ("configuration", "status", "accuracy") else "right")
    for row in doc["configurations"]:
        sp = row.get("speedup_vs_first")
        mr = row.get("memory_ratio_vs_first")
        acc = row.get("accuracy") or {}
        acc_text = (
            "reference" if acc.get("reference") else
            f"cos {acc['mean_cosine']:.4f}/{acc['min_cosine']:.4f}" if acc.get("kind") == "embeddings" else
            f"top1 {acc['top1_agreement']:.3f}" if acc.get("kind") == "logits" else acc.get("error", "")
        )
        table.add_row(
            row["label"], _status(row["status"]), _rate_ci(row.get("median"), row.get("ci_low"), row.get("ci_high"), row.get("unit")),
            f"{sp['ratio']:.2f}x [{sp['ci_low']:.2f}, {sp['ci_high']:.2f}]" if sp else "1.00x (reference)" if row is doc["configurations"][0] else "n/a",
            gib(row.get("peak_memory_bytes")),
            f"{mr['ratio']:.2f}x [{mr['ci_low']:.2f}, {mr['ci_high']:.2f}]" if mr else "—",
            acc_text,
        )
    return table


def compare_verdicts(doc: dict[str, Any]) -> list[str]:
    lines = []
    for row in doc["configurations"][1:]:
        if row.get("speed_verdict"):
            lines.append(row["speed_verdict"])
        if row.get("memory_verdict"):
            lines.append("  " + row["memory_verdict"])
        if row["status"] not in ("ok", "inaccurate") and row.get("reason"):
            lines.append(f"  {row['label']}: {row['status']} — {row['reason']}")
    first = doc["configurations"][0] if doc["configurations"] else None
    if first and first["status"] not in ("ok",) and first.get("reason"):
        lines.append(f"{first['label']}: {first['status']} — {first['reason']}")
    return lines


RESULT_COLUMNS = ("id", "created", "scenario", "model", "label", "status", "throughput", "ci_low", "ci_high", "unit", "peak_memory_bytes", "mfu", "stop_reason", "group")


def results_table(rows: list[dict[str, Any]], store_path: str):
    from rich.table import Table

    table = Table(title=f"stored runs ({len(rows)}) in {store_path}")
    for col in ("id", "created", "scenario", "model", "label", "status", "throughput [95% CI]", "peak memory", "MFU", "group"):
        table.add_column(col, justify="right" if col in ("id", "peak memory", "MFU") else "left")
    for r in rows:
        table.add_row(
            str(r["id"]), r["created"], r["scenario"], r["model"], r["label"], _status(r["status"]),
            _rate_ci(r["throughput"], r["ci_low"], r["ci_high"], r["unit"]), gib(r["peak_memory_bytes"]), _pct(r["mfu"]), r["group"] or "",
        )
    return table


def results_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(RESULT_COLUMNS), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in RESULT_COLUMNS})
    return buf.getvalue()


def results_markdown(rows: list[dict[str, Any]]) -> str:
    head = ("id", "created", "scenario", "model", "label", "status", "throughput [95% CI]", "peak memory", "MFU")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        cells = (
            str(r["id"]), r["created"], r["scenario"], r["model"], r["label"], r["status"],
            _rate_ci(r["throughput"], r["ci_low"], r["ci_high"], r["unit"]), gib(r["peak_memory_bytes"]), _pct(r["mfu"]),
        )
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"
