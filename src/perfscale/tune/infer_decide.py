"""The decision of `tune encoder`: the winner only when significantly faster than the baseline (95% CI), and,
when no variant passes the gate, why each lost and how close the nearest came."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from perfscale.tune.infer_measure import _environment
from perfscale.tune.infer_result import EncoderTuneResult, Variant


def _decide_latency(baseline: Variant, finals: list[Variant], serving: dict[str, Any]):
    """The finalist with the lowest median single-request latency, if significantly below the baseline's."""
    ratios = {v.label: serving["p50_speedup"].get(v.label) for v in finals if v.status == "ok"}
    ratios = {k: r for k, r in ratios.items() if r}
    if not ratios:
        return baseline, None, "no variant both passed the accuracy gate and served the stream: keep the baseline"
    label = max(ratios, key=lambda k: ratios[k]["ratio"])
    top, sp = next(v for v in finals if v.label == label), ratios[label]
    lat = serving["latency"]
    said = (f"{lat[label]['p50_ms']:.1f} ms vs {lat[baseline.label]['p50_ms']:.1f} ms p50 per single request "
            f"({serving['requests']} requests, interleaved)")
    if sp["ci_low"] > 1:
        return top, sp, f"{label} answers a single request {sp['ratio']:.2f}x faster than the baseline [95% CI {sp['ci_low']:.2f}, {sp['ci_high']:.2f}]: {said}"
    top.status, top.reason = "slower", f"not significantly faster than the baseline at batch 1: {sp['ratio']:.2f}x [{sp['ci_low']:.2f}, {sp['ci_high']:.2f}]"
    return baseline, None, f"no variant was significantly faster than the baseline at batch 1 (best: {label}, {sp['ratio']:.2f}x [{sp['ci_low']:.2f}, {sp['ci_high']:.2f}]; {said}): keep the baseline"


def _closest(tried: list[Variant], thresholds) -> str | None:
    """The gated variant nearest to passing: the one whose worse margin (mean or min cosine) is the smallest miss."""
    gated = [v for v in tried if v.accuracy and np.isfinite(v.accuracy.get("mean_cosine", np.nan))
             and np.isfinite(v.accuracy.get("min_cosine", np.nan))]
    if not gated:
        return None

    def margin(v: Variant) -> float:
        return min(v.accuracy["mean_cosine"] - thresholds.min_mean_cosine, v.accuracy["min_cosine"] - thresholds.min_min_cosine)
    v = max(gated, key=margin)
    return (f"closest: {v.label} (mean cosine {v.accuracy['mean_cosine']:.4f} vs >= {thresholds.min_mean_cosine:g}, "
            f"min {v.accuracy['min_cosine']:.4f} vs >= {thresholds.min_min_cosine:g}); to accept that accuracy, rerun with "
            f"--min-mean-cosine {np.floor(v.accuracy['mean_cosine'] * 1e4) / 1e4:g} --min-min-cosine {np.floor(v.accuracy['min_cosine'] * 1e4) / 1e4:g}")


def _no_winner(source, thresholds, corpus, variants, notes, started, collect_environment, budget=None, objective="throughput") -> EncoderTuneResult:
    """No variant passed the gate (or ran): the baseline stays, and each variant says why it lost."""
    baseline = variants[0]
    tried = [v for v in variants if v.stage not in ("baseline", "reference")]
    why = "; ".join(f"{v.label}: {v.status} ({v.reason})" for v in tried if v.status != "skipped" or "budget" not in (v.reason or ""))
    ran = [v for v in tried if v.status != "skipped"]
    out_of_time = [v for v in tried if v.status == "skipped" and "budget" in (v.reason or "")]
    closest = _closest(tried, thresholds)
    verdict = f"no variant passed the accuracy gate and ran: keep the baseline. {closest + '. ' if closest else ''}{why}"
    if out_of_time:
        slow = f"the fp32 reference encoded {variants[1].screen_rate:.0f} sentences/s here" if variants[1].screen_rate else "this machine is slow now"
        verdict = (f"keep the baseline for now: {len(ran)} variant(s) screened ({(closest + '; ') if closest else ''}{why or 'none passed'}), "
                   f"{len(out_of_time)} not tried before the {budget:g} s screening budget ran out ({slow}); rerun with "
                   f"--budget-seconds {4 * (budget or 60):g} (or on a quieter machine)")
    return EncoderTuneResult(
        model=source.name, model_path=source.path, gate=thresholds.to_dict(), corpus_sentences=len(corpus), variants=variants,
        winner=baseline.label, winner_settings=baseline.settings, speedup=None,
        verdict=verdict,
        measurement={"method": "none: nothing to measure against the baseline", "repeats": 0, "sentences_per_iteration": 0},
        environment=_environment(collect_environment), notes=notes, elapsed_s=time.perf_counter() - started, objective=objective,
    )


def _decide(baseline: Variant, finals: list[Variant]):
    """The finalist with the highest measured speed-up, if significantly faster than the baseline."""
    measured = [v for v in finals if v.status == "ok" and v.measured and v.measured.get("speedup")]
    if not measured:
        return baseline, None, "no variant both passed the accuracy gate and finished its measurement: keep the baseline"
    top = max(measured, key=lambda v: v.measured["speedup"]["ratio"])
    sp = top.measured["speedup"]
    if sp["ci_low"] > 1:
        return top, sp, f"{top.label} is {sp['ratio']:.2f}x the baseline's sentences/s [95% CI {sp['ci_low']:.2f}, {sp['ci_high']:.2f}]"
    top.status, top.reason = "slower", f"not significantly faster than the baseline: {top.measured['verdict']}"
    return baseline, None, f"no variant was significantly faster than the baseline (best: {top.label}, {sp['ratio']:.2f}x [{sp['ci_low']:.2f}, {sp['ci_high']:.2f}]): keep the baseline"


__all__: list[str] = []
