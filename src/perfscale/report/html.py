"""`perfscale report`: any result perfscale writes, as one self-contained HTML file that opens offline.

Plots are plotly (already a dependency, for hpo's Optuna plots): interactive (hover, zoom, toggling
series), and its whole library inlines into one <script> (~4.8 MB, FIELD-NOTES), so the file needs no
network and no server when it is opened. altair needs vl-convert for that and matplotlib gives static
pictures only. plotly.js is embedded once per file, however many plots it holds.

What each kind of result becomes (`SECTIONS`):
  plan     throughput against memory of every candidate (Pareto front, device memory, the binding constraint)
           and the memory breakdown of the best ones, by category
  trace    memory by category, peak by phase, the largest modules
  bench    per-iteration time distribution of each configuration (every process), median and 95% CI
  compare  the same, and the ratios to the first configuration with their CIs (a forest plot)
  tune     training: every trial by rung (tokens/s with CI), the winner and the baseline, the final ratio;
           encoder/decoder: every variant's screened and measured speed, coloured by what became of it
  hpo      the objective of every trial, in order
and for every result: its notes and the environment its numbers were measured in.

Each plot's div carries data-plot="<name>"; a small script counts drawn plots into
<body data-plots-rendered> and records JavaScript errors in #report-errors (the browser test reads both).
"""

from __future__ import annotations

import html
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perfscale.errors import InvalidConfigError

KINDS = ("plan", "trace", "bench", "compare", "tune-train", "tune-encoder", "tune-decoder", "hpo")
GIB = 2**30


class NotAResultError(InvalidConfigError):
    """A document that no perfscale verb writes."""


def detect_kind(doc: Any, name: str = "the document") -> str:
    """Which verb wrote `doc` (its --json document); NotAResultError when none did."""
    if isinstance(doc, dict):
        if "error" in doc and len(doc) == 1:
            raise NotAResultError(f"{name} is an error document ({doc['error'].get('message', '')[:200]}), not a result: "
                                  "rerun the command that failed, then report its --json output.")
        kind = doc.get("kind")
        if kind == "tune-train":
            return "tune-train"
        if kind in ("encoder", "decoder") and "variants" in doc:
            return f"tune-{kind}"
        if "configs" in doc and "objective" in doc and "topology" in doc:
            return "plan"
        if "peak_bytes" in doc and "breakdown" in doc and "top_modules" in doc:
            return "trace"
        if "configurations" in doc and "group" in doc:
            return "compare"
        if "configurations" in doc and "store" in doc:
            return "bench"
        if "study_name" in doc and "trials" in doc:
            return "hpo"
    keys = ", ".join(sorted(doc)[:8]) if isinstance(doc, dict) else type(doc).__name__
    raise NotAResultError(
        f"{name} is not a perfscale result (found: {keys or 'nothing'}). Give the --json output of one of: "
        f"{', '.join(k.replace('tune-train', 'tune').replace('tune-', 'tune ') for k in KINDS)} "
        "(e.g. `perfscale plan ... --json > plan.json`), or --store for the measurements in the results store."
    )


def load_document(path: str | os.PathLike) -> tuple[str, dict[str, Any]]:
    """(kind, document) from a --json file; a clear error for a missing, unreadable or foreign file."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise InvalidConfigError(f"Cannot read {p}: {exc.strerror or exc}. Give a file written by `perfscale <verb> --json`.") from exc
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NotAResultError(f"{p} is not JSON ({exc.msg} at line {exc.lineno}): give the --json output of a perfscale verb.") from exc
    return detect_kind(doc, str(p)), doc


# ----------------------------------------------------------------- sections
@dataclass
class Section:
    """One part of the report: a heading, plots (plotly figures) and HTML fragments (tables, notes)."""

    title: str
    kind: str
    plots: list[tuple[str, Any]] = field(default_factory=list)  # (plot name, plotly Figure)
    html: list[str] = field(default_factory=list)


def _go():
    import plotly.graph_objects as go

    return go


def _layout(fig, title: str, x: str, y: str, **kw) -> Any:
    fig.update_layout(title=title, xaxis_title=x, yaxis_title=y, template="plotly_white", height=kw.pop("height", 420),
                      margin={"l": 70, "r": 30, "t": 60, "b": 60}, legend={"orientation": "h", "y": -0.2}, **kw)
    return fig


def _table(headers: list[str], rows: list[list[Any]], caption: str | None = None) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in r) + "</tr>" for r in rows)
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1e5 else f"{v:,.0f}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, default=str)[:300]
    return str(v)


def _notes(doc: dict[str, Any]) -> list[str]:
    notes = doc.get("notes") or []
    if not notes:
        return []
    return ["<h3>Notes</h3><ul>" + "".join(f"<li>{html.escape(str(n))}</li>" for n in notes) + "</ul>"]


_BREAKDOWN = ("parameters", "gradients", "optimizer_state", "activations", "temporaries", "kv_cache", "other")


def _plan(doc: dict[str, Any], _runs) -> Section:
    go = _go()
    s = Section(f"plan: {doc['model']} on {doc['topology']} ({doc['mode']}, objective {doc['objective']})", "plan")
    configs = doc["configs"]
    mem = [c["memory"].get("total_bytes") or c["memory"]["peak_bytes"] for c in configs]
    tps = [c["time"]["tokens_per_second"] for c in configs]
    names = [_knob_label(c["knobs"]) for c in configs]
    fits = [bool(c.get("fits")) for c in configs]
    fig = go.Figure()
    for ok, label, colour in ((True, "fits", "#1f77b4"), (False, "does not fit", "#d62728")):
        idx = [i for i, f in enumerate(fits) if f == ok]
        if idx:
            fig.add_trace(go.Scatter(x=[mem[i] / GIB for i in idx], y=[tps[i] for i in idx], mode="markers", name=label,
                                     marker={"color": colour, "size": 9},
                                     text=[f"{names[i]}<br>binding: {configs[i].get('binding')}" for i in idx],
                                     hovertemplate="%{text}<br>%{x:.2f} GiB, %{y:,.0f} tokens/s<extra></extra>"))
    front = _pareto([(m, t, i) for i, (m, t) in enumerate(zip(mem, tps, strict=True)) if fits[i]])
    if front:
        fig.add_trace(go.Scatter(x=[mem[i] / GIB for i in front], y=[tps[i] for i in front], mode="lines", name="Pareto front",
                                 line={"color": "#2ca02c", "dash": "dot"}))
    cap = next((c["memory"].get("capacity_bytes") for c in configs if c["memory"].get("capacity_bytes")), None)
    if cap:
        fig.add_vline(x=cap / GIB, line_dash="dash", line_color="grey", annotation_text="device memory")
    s.plots.append(("plan-pareto", _layout(fig, "throughput against memory per device (each point a configuration)",
                                           "memory per device (GiB)", "tokens/s (estimated)")))
    s.plots.append(("plan-memory", _stacked_breakdown([c["memory"]["breakdown"] for c in configs[:8]], names[:8],
                                                      "memory breakdown of the best configurations")))
    s.html.append(_table(["#", "configuration", "tokens/s", "memory (GiB)", "fits", "binding"],
                         [[i + 1, names[i], tps[i], mem[i] / GIB, fits[i], configs[i].get("binding")] for i in range(len(configs))]))
    s.html += ["<p>" + html.escape(a) + "</p>" for a in doc.get("advice") or []]
    return s


def _pareto(points: list[tuple[float, float, int]]) -> list[int]:
    """Indices of the points no other beats on both memory (lower) and throughput (higher), by memory."""
    out, best = [], -math.inf
    for _m, t, i in sorted(points):
        if t > best:
            out.append(i)
            best = t
    return out


def _knob_label(k: dict[str, Any]) -> str:
    parts = [f"b{k.get('batch')}x{k.get('accum', k.get('grad_accum', 1))}", str(k.get("precision")), str(k.get("optimizer"))]
    for name in ("zero", "tp", "pp"):
        if k.get(name) and k.get(name) not in (0, 1):
            parts.append(f"{name}{k[name]}")
    if k.get("fsdp"):
        parts.append(f"fsdp {k['fsdp']}")
    if k.get("checkpointing"):
        parts.append("ckpt")
    if k.get("offload") and k["offload"] != "none":
        parts.append(f"offload {k['offload']}")
    if k.get("lora_r"):
        parts.append(f"lora r{k['lora_r']}")
    return " ".join(parts)


def _stacked_breakdown(breakdowns: list[dict[str, int]], names: list[str], title: str):
    go = _go()
    fig = go.Figure()
    for cat in _BREAKDOWN:
        values = [(b.get(cat) or 0) / GIB for b in breakdowns]
        if any(values):
            fig.add_trace(go.Bar(name=cat.replace("_", " "), x=names, y=values))
    return _layout(fig, title, "configuration", "GiB", barmode="stack")


def _trace(doc: dict[str, Any], _runs) -> Section:
    go = _go()
    cfg = doc.get("config") or {}
    wl = cfg.get("workload") or {}
    s = Section(f"trace: {doc['model']} ({wl.get('mode', '')}, batch {wl.get('batch')}, {cfg.get('precision', '')}) on {doc.get('device')}",
                "trace")
    bd = doc["breakdown"]
    cats = [c for c in bd if bd[c]]
    fig = go.Figure(go.Bar(x=[c.replace("_", " ") for c in cats], y=[bd[c] / GIB for c in cats], marker_color="#1f77b4",
                           text=[f"{bd[c] / doc['peak_bytes']:.0%}" if doc["peak_bytes"] else "" for c in cats], textposition="outside"))
    s.plots.append(("trace-breakdown", _layout(fig, f"memory at the peak ({doc['peak_bytes'] / GIB:.2f} GiB, {doc.get('phase')}), by category",
                                               "category", "GiB")))
    phases = doc.get("phase_peaks") or {}
    if phases:
        fig = go.Figure(go.Bar(x=list(phases), y=[v / GIB for v in phases.values()], marker_color="#ff7f0e"))
        s.plots.append(("trace-phases", _layout(fig, "peak memory of each phase", "phase", "GiB")))
    mods = (doc.get("top_modules") or [])[:20]
    if mods:
        fig = go.Figure(go.Bar(y=[m["module"] for m in mods][::-1], x=[m["bytes"] / GIB for m in mods][::-1], orientation="h",
                               marker_color="#2ca02c"))
        s.plots.append(("trace-modules", _layout(fig, "memory per module (largest first)", "GiB", "module",
                                                 height=max(320, 24 * len(mods) + 120))))
    overheads = doc.get("device_overheads") or {}
    if overheads:
        s.html.append(_table(["device overhead", "bytes", "source"], [[k, v.get("bytes"), v.get("source")] for k, v in overheads.items()],
                             "not in the trace: what the device adds"))
    s.html += _notes(doc)
    return s


def _measured(doc: dict[str, Any], runs: Callable[[list[int]], list[dict]] | None, kind: str) -> Section:
    go = _go()
    rows = doc["configurations"]
    s = Section(f"{kind}: {len(rows)} configuration(s), {doc.get('repeats') or 1} fresh process(es) each", kind)
    fig = go.Figure()
    drawn = 0
    for row in rows:
        ids = row.get("store_ids") or ([row["store_id"]] if row.get("store_id") is not None else [])  # compare / one bench run
        samples = runs(ids, row.get("config"), doc.get("store")) if runs else []
        for i, run in enumerate(samples):
            per_iter = run.get("samples") or []
            if per_iter:
                fig.add_trace(go.Box(y=[x * 1000 for x in per_iter], name=f"{row['label']} #{i + 1}", boxpoints="all", jitter=0.4,
                                     pointpos=0, legendgroup=row["label"]))
                drawn += 1
    if drawn:
        s.plots.append((f"{kind}-distribution", _layout(fig, "time per iteration, every timed iteration of every process",
                                                        "configuration, process", "ms per iteration")))
    fig = go.Figure(go.Scatter(
        x=[r["label"] for r in rows], y=[r.get("median") for r in rows], mode="markers", marker={"size": 11},
        error_y={"type": "data", "symmetric": False, "array": [(r.get("ci_high") or 0) - (r.get("median") or 0) for r in rows],
                 "arrayminus": [(r.get("median") or 0) - (r.get("ci_low") or 0) for r in rows]}))
    unit = next((r.get("unit") for r in rows if r.get("unit")), "rate")
    s.plots.append((f"{kind}-medians", _layout(fig, f"median {unit} with its 95% CI (processes and iterations)", "configuration", unit)))
    if kind == "compare" and len(rows) > 1:
        ratios = [r for r in rows[1:] if r.get("speedup_vs_first")]
        if ratios:
            fig = go.Figure(go.Scatter(
                y=[r["label"] for r in ratios], x=[r["speedup_vs_first"]["ratio"] for r in ratios], mode="markers", marker={"size": 11},
                error_x={"type": "data", "symmetric": False,
                         "array": [r["speedup_vs_first"]["ci_high"] - r["speedup_vs_first"]["ratio"] for r in ratios],
                         "arrayminus": [r["speedup_vs_first"]["ratio"] - r["speedup_vs_first"]["ci_low"] for r in ratios]}))
            fig.add_vline(x=1.0, line_dash="dash", line_color="grey", annotation_text=f"= {rows[0]['label']}")
            s.plots.append(("compare-forest", _layout(fig, f"speed-up over {rows[0]['label']} (95% CI): right of the line is faster",
                                                      "speed-up (x)", "configuration", height=max(300, 60 * len(ratios) + 160))))
    s.html.append(_table(["configuration", "status", unit, "95% CI", "peak memory (GiB)", "verdict"],
                         [[r["label"], r["status"], r.get("median"), f"[{_fmt(r.get('ci_low'))}, {_fmt(r.get('ci_high'))}]",
                           (r.get("peak_memory_bytes") or 0) / GIB or None, r.get("speed_verdict")] for r in rows]))
    if not drawn:
        s.html.append("<p>Per-iteration samples: not in the document and not found in the results store "
                      f"({html.escape(str(doc.get('store') or 'no store named'))}); only the summaries are shown.</p>")
    return s


def _tune_train(doc: dict[str, Any], _runs) -> Section:
    go = _go()
    s = Section(f"tune: {doc['model']} on {doc['hardware']} (global batch {doc['workload']['global_batch']} x seq {doc['workload']['seq']})",
                "tune-train")
    winner = (doc.get("winner") or {}).get("name")
    sp = doc.get("speedup") or {}
    fig = go.Figure()
    for t in doc["trials"]:
        pts = [r for r in t["rungs"] if r.get("tokens_per_s")]
        if not pts:
            continue
        colour = "#2ca02c" if t["name"] == winner else ("#1f77b4" if t["baseline"] else "#7f7f7f")
        label = t["name"] + (" (winner)" if t["name"] == winner else "") + (" (baseline)" if t["baseline"] else "")
        fig.add_trace(go.Scatter(
            x=[f"rung {r['rung']}" for r in pts], y=[r["tokens_per_s"] for r in pts], mode="markers+lines", name=label,
            marker={"color": colour, "size": 12 if t["name"] == winner or t["baseline"] else 8}, line={"color": colour, "width": 1},
            error_y={"type": "data", "symmetric": False, "array": [(r.get("ci_high") or r["tokens_per_s"]) - r["tokens_per_s"] for r in pts],
                     "arrayminus": [r["tokens_per_s"] - (r.get("ci_low") or r["tokens_per_s"]) for r in pts]}))
    if doc.get("ranking") == "estimated":  # hardware you do not have: the estimate's ranking, nothing measured
        ranked = [r for r in [doc.get("winner") or {}, *doc.get("runners_up", [])] if r.get("estimated_tokens_per_s")]
        if ranked:
            bars = go.Figure(go.Bar(x=[r["name"] for r in ranked], y=[r["estimated_tokens_per_s"] for r in ranked],
                                    marker_color=["#2ca02c"] + ["#7f7f7f"] * (len(ranked) - 1),
                                    text=[f"{(r.get('estimated_peak_bytes') or 0) / GIB:.1f} GiB" for r in ranked], textposition="outside"))
            s.plots.append(("tune-estimated", _layout(bars, f"estimated ranking on {doc['hardware']} (not measured; label: peak memory)",
                                                      "configuration", "tokens/s (estimated)", height=460)))
    if fig.data:
        s.plots.append(("tune-trials", _layout(fig, "every measured trial by rung (tokens/s, 95% CI within the trial)", "rung",
                                               "tokens/s", height=480)))
    if sp.get("ratio") is not None and sp.get("ci_low") is not None:
        fig = go.Figure(go.Scatter(x=[sp["ratio"]], y=[sp.get("challenger") or winner], mode="markers", marker={"size": 14, "color": "#2ca02c"},
                                   error_x={"type": "data", "symmetric": False, "array": [sp["ci_high"] - sp["ratio"]],
                                            "arrayminus": [sp["ratio"] - sp["ci_low"]]}))
        fig.add_vline(x=1.0, line_dash="dash", line_color="grey", annotation_text="= Trainer defaults")
        s.plots.append(("tune-final", _layout(fig, "the final paired comparison: speed over the Trainer defaults (95% CI)",
                                              "speed-up (x)", "", height=260)))
    s.html.append(f"<p class='verdict'><b>verdict:</b> {html.escape(str(sp.get('verdict')))}</p>")
    s.html.append("<ul>" + "".join(f"<li>{html.escape(w)}</li>" for w in doc.get("why") or []) + "</ul>")
    rows = [t for t in doc["trials"] if t["rungs"]]
    s.html.append(_table(["configuration", "role", "status", "rung 0 tokens/s", "rung 1 tokens/s", "est. peak (GiB)", "note"],
                         [[t["name"], t.get("role"), t["status"], *[next((r.get("tokens_per_s") for r in t["rungs"] if r["rung"] == k), None) for k in (0, 1)],
                           ((t.get("estimate") or {}).get("peak_bytes") or 0) / GIB or None, t.get("reason")] for t in rows]))
    counts = doc.get("trial_counts") or {}
    s.html.append("<p>" + html.escape(", ".join(f"{n} {k}" for k, n in counts.items() if n)) + " configurations.</p>")
    s.html += _notes(doc)
    return s


def _tune_infer(doc: dict[str, Any], _runs) -> Section:
    go = _go()
    kind = "tune-encoder"
    s = Section(f"tune encoder: {doc['model']}", kind)
    colours = {"ok": "#2ca02c", "slower": "#1f77b4", "inaccurate": "#d62728", "failed": "#000000", "skipped": "#bbbbbb"}
    variants = [v for v in doc["variants"] if v.get("screen_rate")]
    fig = go.Figure()
    for status in dict.fromkeys(v["status"] for v in variants):
        vs = [v for v in variants if v["status"] == status]
        fig.add_trace(go.Bar(x=[v["label"] for v in vs], y=[v["screen_rate"] for v in vs], name=status,
                             marker_color=colours.get(status, "#7f7f7f")))
    if variants:
        s.plots.append((f"{kind}-screen", _layout(fig, f"every variant's screened speed (winner: {doc['winner']})", "variant", "rate (screen)",
                                                  height=480)))
    measured = [v for v in doc["variants"] if v.get("measured") and (v["measured"].get("throughput") or {}).get("median")]
    if measured:
        tp = [v["measured"]["throughput"] for v in measured]
        fig = go.Figure(go.Scatter(x=[v["label"] for v in measured], y=[t["median"] for t in tp], mode="markers", marker={"size": 12},
                                   error_y={"type": "data", "symmetric": False, "array": [t["ci_high"] - t["median"] for t in tp],
                                            "arrayminus": [t["median"] - t["ci_low"] for t in tp]}))
        s.plots.append((f"{kind}-measured", _layout(fig, "measured in fresh processes, interleaved (95% CI)", "variant",
                                                    tp[0].get("unit") or "rate")))
    s.html.append(f"<p class='verdict'><b>verdict:</b> {html.escape(str(doc.get('verdict')))}</p>")
    s.html.append(_table(["variant", "stage", "status", "screen rate", "mean / min cosine", "reason"],
                         [[v["label"], v["stage"], v["status"], v.get("screen_rate"),
                           (f"{v['accuracy'].get('mean_cosine', 1):.4f} / {v['accuracy'].get('min_cosine', 1):.4f}"
                            if v.get("accuracy") and "mean_cosine" in v["accuracy"] else None), v.get("reason")] for v in doc["variants"]]))
    s.html += _notes(doc)
    return s


def _tune_decoder(doc: dict[str, Any], _runs) -> Section:
    go = _go()
    s = Section(f"tune decoder: {doc['model']} (prompts {doc.get('prompt_lengths')}, {doc.get('new_tokens')} new tokens)", "tune-decoder")
    colours = {"ok": "#2ca02c", "slower": "#1f77b4", "inaccurate": "#d62728", "failed": "#000000"}
    timed = [v for v in doc["variants"] if (v.get("tokens_per_s") or {}).get("median")]
    fig = go.Figure()
    for status in dict.fromkeys(v["status"] for v in timed):
        vs = [v for v in timed if v["status"] == status]
        t = [v["tokens_per_s"] for v in vs]
        fig.add_trace(go.Bar(x=[v["label"] for v in vs], y=[x["median"] for x in t], name=status, marker_color=colours.get(status, "#7f7f7f"),
                             error_y={"type": "data", "symmetric": False, "array": [x["ci_high"] - x["median"] for x in t],
                                      "arrayminus": [x["median"] - x["ci_low"] for x in t]}))
    if timed:
        s.plots.append(("tune-decoder-variants", _layout(fig, f"generated tokens/s of every variant, 95% CI (winner: {doc['winner']})",
                                                         "variant", "tokens/s", height=480)))
    s.html.append(f"<p class='verdict'><b>verdict:</b> {html.escape(str(doc.get('verdict')))}</p>")
    s.html.append(_table(["variant", "status", "tokens/s", "graphs compiled", "reason"],
                         [[v["label"], v["status"], (v.get("tokens_per_s") or {}).get("median"), v.get("graphs"), v.get("reason")]
                          for v in doc["variants"]]))
    s.html += _notes(doc)
    return s


def _hpo(doc: dict[str, Any], _runs) -> Section:
    go = _go()
    s = Section(f"hpo: {doc['study_name']} ({doc.get('model')})", "hpo")
    trials = [t for t in doc["trials"] if t.get("values")]
    if trials:
        fig = go.Figure(go.Scatter(x=[t["number"] for t in trials], y=[t["values"][0] for t in trials], mode="markers",
                                   text=[t["status"] for t in trials], marker={"size": 9}))
        s.plots.append(("hpo-trials", _layout(fig, "objective of every finished trial", "trial", (doc.get("directions") or ["value"])[0])))
    s.html.append(_table(["trial", "status", "values", "params"], [[t["number"], t["status"], t.get("values"), t.get("params")] for t in doc["trials"]]))
    s.html += _notes(doc)
    return s


SECTIONS: dict[str, Callable[..., Section]] = {
    "plan": _plan, "trace": _trace, "bench": lambda d, r: _measured(d, r, "bench"), "compare": lambda d, r: _measured(d, r, "compare"),
    "tune-train": _tune_train, "tune-encoder": _tune_infer, "tune-decoder": _tune_decoder, "hpo": _hpo,
}


def environment_of(doc: dict[str, Any]) -> dict[str, Any]:
    env = doc.get("environment") or {}
    if not env and doc.get("hardware_detected"):
        env = {"hardware": doc["hardware_detected"]}
    if not env and doc.get("topology"):
        env = {"topology (estimated, not measured)": doc["topology"]}
    return env


def _flatten(d: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(d, dict):
        return [kv for k, v in d.items() for kv in _flatten(v, f"{prefix}{k}." if not isinstance(v, dict) or not v else f"{prefix}{k}.")]
    return [(prefix.rstrip("."), d)]


# ----------------------------------------------------------------- the file
_STYLE = """body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1200px;color:#222}
h1{font-size:1.5em}h2{border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:2em}
table{border-collapse:collapse;margin:12px 0;font-size:.85em}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4}caption{text-align:left;font-style:italic}.verdict{font-size:1.1em;background:#f6fff2;padding:8px}
details{margin:8px 0}.plot{min-height:260px}"""

# Counts the drawn plots (an SVG inside each plot div) and records errors: the browser test reads both.
_PROBE = """window.__reportErrors=[];window.addEventListener('error',function(e){window.__reportErrors.push(String(e.message));
var el=document.getElementById('report-errors');if(el){el.textContent=window.__reportErrors.join('\\n');}});
window.addEventListener('load',function(){var n=0;document.querySelectorAll('div[data-plot]').forEach(function(d){
if(d.querySelector('svg.main-svg')){n++;d.setAttribute('data-rendered','1');}});document.body.setAttribute('data-plots-rendered',String(n));});"""


@dataclass
class ReportResult:
    """What `perfscale report` wrote."""

    path: str
    bytes: int
    inputs: list[dict[str, str]]  # {source, kind}
    plots: list[dict[str, str]]  # {name, kind, title}
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "report", "path": self.path, "bytes": self.bytes, "inputs": self.inputs, "plots": self.plots,
                "seconds": self.seconds}


def render_html(items: list[tuple[str, str, dict[str, Any]]], runs=None) -> tuple[str, list[dict[str, str]]]:
    """(the HTML text, the plots in it) for [(source, kind, document)]; `runs(store_ids)` gives stored samples."""
    import plotly.io as pio
    from plotly.offline import get_plotlyjs

    from perfscale import __version__

    parts, plots, n = [], [], 0
    for source, kind, doc in items:
        section = SECTIONS[kind](doc, runs)
        parts.append(f"<section data-kind='{kind}'><h2>{html.escape(section.title)}</h2><p><small>from {html.escape(source)}</small></p>")
        for name, fig in section.plots:
            n += 1
            div = pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=f"plot-{n}", config={"displaylogo": False})
            parts.append(f"<div class='plot' data-plot='{name}'>{div}</div>")
            plots.append({"name": name, "kind": kind, "title": str(fig.layout.title.text or "")})
        parts += section.html
        env = environment_of(doc)
        if env:
            parts.append("<details><summary>environment of these numbers</summary>"
                         + _table(["field", "value"], [[k, v] for k, v in _flatten(env)]) + "</details>")
        parts.append("</section>")
    head = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>perfscale report</title><style>{_STYLE}</style>"
            f"<script>{_PROBE}</script><script type='text/javascript'>{get_plotlyjs()}</script></head><body>")
    title = (f"<h1>perfscale report</h1><p>{len(items)} result(s), {len(plots)} plot(s); written by perfscale {__version__} "
             f"at {time.strftime('%Y-%m-%d %H:%M:%S %Z')}. Opens offline: plotly.js is embedded.</p>"
             "<pre id='report-errors' style='color:#b00'></pre>")
    return head + title + "".join(parts) + "</body></html>", plots


def write_report(items: list[tuple[str, str, dict[str, Any]]], path: str | os.PathLike, runs=None) -> ReportResult:
    """Render and write the report (atomically, the output checked writable first)."""
    from perfscale.user_files import write_text

    started = time.perf_counter()
    if not items:
        raise InvalidConfigError("Nothing to report: give one or more --json files of perfscale verbs, or --store.")
    text, plots = render_html(items, runs)
    written = write_text(path, text, "--out")
    return ReportResult(path=str(written), bytes=len(text.encode()), inputs=[{"source": s, "kind": k} for s, k, _ in items],
                        plots=plots, seconds=time.perf_counter() - started)


__all__ = ["KINDS", "SECTIONS", "NotAResultError", "ReportResult", "detect_kind", "load_document", "render_html", "write_report"]
