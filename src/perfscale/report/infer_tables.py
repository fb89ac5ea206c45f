"""Rich rendering of `perfscale tune encoder` and `perfscale tune decoder` results."""

from __future__ import annotations

from typing import Any

from perfscale.units import seconds


def _ci(sp: dict[str, Any] | None) -> str:
    if not sp:
        return "n/a"
    return f"{sp['ratio']:.2f}x [{sp['ci_low']:.2f}, {sp['ci_high']:.2f}]"


def encoder_table(doc: dict[str, Any]):
    from rich.table import Table

    table = Table(title=f"tune encoder {doc['model']}: {doc['corpus_sentences']} sentences, gate mean cos >= {doc['gate']['min_mean_cosine']}, min >= {doc['gate']['min_min_cosine']}")
    for col in ("variant", "stage", "status", "mean cos", "min cos", "screen sent/s", "measured sent/s", "speed-up vs baseline (95% CI)", "why"):
        table.add_column(col, justify="left" if col in ("variant", "stage", "status", "why") else "right", overflow="fold")
    for v in doc["variants"]:
        acc = v.get("accuracy") or {}
        m = v.get("measured") or {}
        thr = (m.get("throughput") or {}).get("median")
        style = "bold green" if v["label"] == doc["winner"] else None
        table.add_row(
            v["label"], v["stage"], v["status"],
            f"{acc['mean_cosine']:.4f}" if "mean_cosine" in acc else ("ref" if acc.get("reference") else "n/a"),
            f"{acc['min_cosine']:.4f}" if "min_cosine" in acc else "",
            f"{v['screen_rate']:.0f}" if v.get("screen_rate") else "n/a",
            f"{thr:.0f}" if thr else "", _ci(m.get("speedup")), v.get("reason") or "", style=style,
        )
    return table


def _print_usage(console, doc: dict[str, Any], saved: str | None) -> None:
    """How to use the winner: the perfscale.apply snippet, and where the result was saved."""
    console.print("\n[bold]use it:[/bold]" + (f" (saved to {saved})" if saved else " (save with --save tuned.json)"))
    console.print(doc["apply_snippet"], markup=False, highlight=False)


def render_encoder(console, doc: dict[str, Any], saved: str | None = None) -> None:
    console.print(encoder_table(doc))
    console.print(f"[bold]winner:[/bold] {doc['winner']}  ({doc['verdict']})")
    meas = doc["measurement"]
    console.print(f"measured with {meas['method']}: {meas['repeats']} process(es) per configuration, "
                  f"{meas['sentences_per_iteration']} sentences per iteration; shared machines make timings noisy: trust the CI.")
    serving = doc.get("serving")
    if serving:
        console.print(serving_table(doc))
    for note in doc.get("notes", []):
        console.print(f"note: {note}")
    _print_usage(console, doc, saved)


def serving_table(doc: dict[str, Any]):
    """Batch-1 latency under one interleaved stream of single requests (the result's `serving`)."""
    from rich.table import Table

    serving = doc["serving"]
    table = Table(title=f"serving: {serving['requests']} single requests, one at a time, interleaved "
                        f"(objective {doc.get('objective', 'throughput')})")
    for col in ("variant", "p50 ms", "p90 ms", "p99 ms", "requests/s", "p50 speed-up vs baseline (95% CI)"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    fmt = lambda x: f"{x:.1f}" if x is not None else "n/a"  # noqa: E731
    for label, lat in serving["latency"].items():
        table.add_row(label, fmt(lat["p50_ms"]), fmt(lat["p90_ms"]), fmt(lat["p99_ms"]), fmt(lat["requests_per_s"]),
                      _ci(serving["p50_speedup"].get(label)), style="bold green" if label == doc["winner"] else None)
    return table


def decoder_table(doc: dict[str, Any]):
    from rich.table import Table

    table = Table(title=f"tune decoder {doc['model']}: prompts {doc['prompt_lengths']} tokens, {doc['new_tokens']} new tokens, {doc['passes']} timed passes")
    for col in ("variant", "status", "tokens/s", "TTFT", "time/token", "graphs", "speed-up (95% CI)", "why"):
        table.add_column(col, justify="left" if col in ("variant", "status", "why") else "right", overflow="fold")
    for v in doc["variants"]:
        tps = (v.get("tokens_per_s") or {}).get("median")
        table.add_row(
            v["label"], v["status"], f"{tps:.1f}" if tps else "n/a", seconds((v.get("ttft_s") or {}).get("median")),
            seconds((v.get("tpot_s") or {}).get("median")), str(v.get("graphs", 0)) + (" (limit hit)" if v.get("recompile_limit_hit") else ""),
            _ci(v.get("speedup")), v.get("reason") or "", style="bold green" if v["label"] == doc["winner"] else None,
        )
    return table


def render_decoder(console, doc: dict[str, Any], saved: str | None = None) -> None:
    console.print(decoder_table(doc))
    console.print(f"[bold]winner:[/bold] {doc['winner']}  ({doc['verdict']})")
    rc = doc["recompiles"]
    console.print(f"recompilations (torch.compile, dynamic=False) over {len(rc['lengths'])} prompt lengths: "
                  f"{rc['unbucketed']} graphs unbucketed{' (limit hit)' if rc.get('unbucketed_limit_hit') else ''}, "
                  f"{rc['bucketed']} with buckets {rc['buckets']}")
    for note in doc.get("notes", []):
        console.print(f"note: {note}", markup=False)
    _print_usage(console, doc, saved)
