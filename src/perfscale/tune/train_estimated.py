"""Training tune results without a measurement: on hardware you do not have (`--hardware`), the
estimate's ranking (trace-confirmed at the top); and when nothing fits, what would (the planner).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from perfscale.errors import InvalidConfigError
from perfscale.tune.result import TrainTuneResult


# ----------------------------------------------------------------- estimated only (--hardware)
def estimated_only(ranked, *, confirm, estimates, options, spec, topology, space, records, notes, clock, baseline, stage_times,
                   capacity) -> TrainTuneResult:
    """`estimates`: each candidate's TrainEstimate (train_screening.py); `confirm`: train_trace.trace_confirm."""
    device = "cuda" if topology.hardware.kind == "gpu" else "cpu"
    trace_top = 1 if options.trace_top is None else options.trace_top
    if trace_top:
        from perfscale.tune.screen import TrialServer

        with tempfile.TemporaryDirectory(prefix="perfscale-tune-") as tmp, TrialServer(Path(tmp)) as server:
            confirm(server, spec, ranked[:trace_top], records, space, capacity, device, lambda _m: None)
        ranked = [c for c in ranked if records[c].status != "pruned"]
    stage_times["trace_s"] = clock.elapsed() - sum(stage_times.values())
    notes.insert(0, f"Estimated ranking, not measured: {topology.label} is not this machine. Run tune on it to measure.")
    if not ranked:
        return nothing_fits(options, spec, topology, space, records, notes, clock, capacity)
    best = ranked[0]
    b_est, w_est = estimates[baseline], estimates[best]
    ratio = w_est.tokens_per_s / b_est.tokens_per_s if b_est.fits and b_est.tokens_per_s else None
    why = [f"{k}: {b} -> {w}" for k, (b, w) in best.differences(baseline).items()] or ["the defaults are the best estimate"]
    runners = [{"name": c.name, "knobs": c.knobs(), "estimated_tokens_per_s": estimates[c].tokens_per_s} for c in ranked[1:4]]
    est_doc = lambda c: {"name": c.name, "knobs": c.knobs(), "run_config": c.run_config(space.seq).to_dict(),  # noqa: E731
                         "estimated_tokens_per_s": estimates[c].tokens_per_s, "estimated_peak_bytes": estimates[c].peak_bytes,
                         "fits": estimates[c].fits, "throughput": None}
    return TrainTuneResult(
        model=spec.name, hardware=topology.label, measured_here=False, ranking="estimated",
        workload={"seq": space.seq, "global_batch": space.global_batch, "tokens_per_step": space.seq * space.global_batch},
        space=space.to_dict(), winner=est_doc(best), baseline=est_doc(baseline),
        speedup={"ratio": ratio, "ci_low": None, "ci_high": None, "significant": None, "estimated": True,
                 "verdict": (f"estimated {ratio:.2f}x the baseline's tokens/s (no CI: not measured)" if ratio else "baseline does not fit: no ratio")},
        why=why, runners_up=runners, trials=list(records.values()), notes=notes,
        session={"id": None, "store": None, "resumed": False, "reused_trials": 0, "measured_trials": 0},
        timing={"wall_s": clock.elapsed(), "budget_s": options.budget_seconds, **stage_times},
    )


def nothing_fits(options, spec, topology, space, records, notes, clock, capacity) -> TrainTuneResult:
    """No candidate fits: say what would, from the planner (tune/plan.py searches LoRA and more)."""
    from perfscale.specs.workload import TrainWorkload

    from perfscale.tune.plan import plan

    would: list[dict[str, Any]] = []
    try:
        # what would fit, LoRA included (the answer to "nothing fits"; the tuner itself measures LoRA only with --allow-lora)
        result = plan(spec, topology, workload=TrainWorkload(batch=space.global_batch // space.data_parallel or 1, seq=space.seq), top=3,
                      allow_lora=True)
        for e in result.configs:
            would.append({"knobs": e.knobs, "estimated_peak_bytes": e.memory.peak_bytes, "estimated_tokens_per_s": e.time.tokens_per_second})
        notes.extend(result.advice)
    except InvalidConfigError as exc:  # the planner found nothing either: its message says what would
        would.append({"advice": str(exc)})
    notes.insert(0, f"Nothing in the space fits {topology.label} ({capacity / 2**30:.1f} GiB usable): nothing was measured.")
    empty = {"name": None, "knobs": None, "throughput": None}
    return TrainTuneResult(
        model=spec.name, hardware=topology.label, measured_here=options.local, ranking="none",
        workload={"seq": space.seq, "global_batch": space.global_batch, "tokens_per_step": space.seq * space.global_batch},
        space=space.to_dict(), winner=None, baseline=empty,
        speedup={"ratio": None, "ci_low": None, "ci_high": None, "significant": None, "verdict": "nothing fits"},
        why=[], runners_up=[], trials=list(records.values()), notes=notes,
        session={"id": None, "store": None, "resumed": False, "reused_trials": 0, "measured_trials": 0},
        timing={"wall_s": clock.elapsed(), "budget_s": options.budget_seconds}, what_would_fit=would,
    )


__all__ = ["estimated_only", "nothing_fits"]
