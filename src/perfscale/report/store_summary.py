"""Stored runs of one group (a bench or compare invocation, a tune session) as a compare-shaped document,
so that `perfscale report --results` draws them like a compare: per-iteration distributions, medians with
their 95% CI over processes and iterations (measure/stats.py's two-level bootstrap), ratios to the first."""

from __future__ import annotations

from typing import Any

import numpy as np


def _pooled(results) -> dict[str, Any]:
    from perfscale.measure.stats import CONFIDENCE, hierarchical_bootstrap_medians

    timed = [r for r in results if r.ok and r.has_timing]
    if not timed:
        return {}
    head = timed[0].headline()
    per = (timed[0].tokens_per_iter if head["unit"] == "tokens/s" else timed[0].samples_per_iter) or 1
    groups = [r.samples for r in timed]
    med = float(np.median(np.concatenate(groups)))
    lo, hi = np.quantile(hierarchical_bootstrap_medians(groups), [(1 - CONFIDENCE) / 2, 1 - (1 - CONFIDENCE) / 2])
    return {"unit": head["unit"], "median": per / med, "ci_low": per / hi, "ci_high": per / lo, "processes": len(timed)}


def summarize_group(stored, group: str, store_path: str) -> dict[str, Any]:
    """`stored`: StoredRun rows of one group, any order."""
    by_label: dict[str, list] = {}
    for row in sorted(stored, key=lambda r: r.id):
        by_label.setdefault(row.result.config.display, []).append(row)
    configurations = []
    for label, rows in by_label.items():
        results = [r.result for r in rows]
        tp = _pooled(results)
        ok = [r for r in results if r.ok]
        configurations.append({
            "label": label, "status": "ok" if ok else results[0].status, "reason": None if ok else results[0].reason,
            "config": results[0].config.to_dict(), **{k: tp.get(k) for k in ("unit", "median", "ci_low", "ci_high")},
            "runs": len(results), "ok_runs": len(ok), "throughput": tp,
            "peak_memory_bytes": float(np.median([r.peak_memory_bytes for r in ok if r.peak_memory_bytes])) if any(r.peak_memory_bytes for r in ok) else None,
            "speedup_vs_first": None, "speed_verdict": None, "store_ids": [r.id for r in rows],
        })
    env = next((r.result.environment for r in stored if r.result.environment), {})
    return {"group": group, "repeats": max((c["runs"] for c in configurations), default=0), "configurations": configurations,
            "environment": env, "store": store_path, "notes": [f"the stored runs of group {group} in {store_path}"]}


__all__ = ["summarize_group"]
