"""`compare(configs)`: A vs B (vs C ...) on this machine, interleaved, with ratios, CIs and verdicts.

Order: repeat r = 1..R runs A, B, C, A, B, C, ... each in a fresh process, so slow drifts of the
machine (thermal, other users, background jobs) hit every configuration alike. Each ratio to the
first configuration comes from a two-level bootstrap over processes and iterations (stats.py), so
it carries process-to-process variation, which one long process would hide.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from perfscale.errors import InvalidConfigError
from perfscale.measure.bench_config import BenchConfig, MeasureOptions
from perfscale.measure.result import BenchResult
from perfscale.measure.runner import (
    ReferenceOutputs, RunInterrupted, apply_gate, how_interrupted, interrupted_result, run_in_subprocess, temp_workdir,
)
from perfscale.measure.stats import CONFIDENCE, Ratio, hierarchical_bootstrap_medians, ratio_of_medians

FAILED = ("oom", "timeout", "failed", "interrupted")


def _fmt_ratio(x: float) -> str:
    return f"{x:.2f}x"


def speed_verdict(label_a: str, label_b: str, speedup: Ratio) -> str:
    """speedup = time(A)/time(B): > 1 means B is faster."""
    if not speedup.significant:
        return f"no significant difference at {CONFIDENCE:.0%} ({label_b} vs {label_a}: {_fmt_ratio(speedup.ratio)} [{speedup.ci_low:.2f}, {speedup.ci_high:.2f}])"
    if speedup.ratio > 1:
        return f"{label_b} is {_fmt_ratio(speedup.ratio)} faster than {label_a} [{speedup.ci_low:.2f}, {speedup.ci_high:.2f}]"
    inv = Ratio(1 / speedup.ratio, 1 / speedup.ci_high, 1 / speedup.ci_low)
    return f"{label_b} is {_fmt_ratio(inv.ratio)} slower than {label_a} [{inv.ci_low:.2f}, {inv.ci_high:.2f}]"


def memory_verdict(label_a: str, label_b: str, ratio: Ratio) -> str:
    """ratio = memory(B)/memory(A)."""
    if not ratio.significant:
        return f"no significant memory difference at {CONFIDENCE:.0%} ({_fmt_ratio(ratio.ratio)} [{ratio.ci_low:.2f}, {ratio.ci_high:.2f}])"
    word = "less" if ratio.ratio < 1 else "more"
    return f"{label_b} uses {_fmt_ratio(ratio.ratio)} the peak memory of {label_a} ({word}) [{ratio.ci_low:.2f}, {ratio.ci_high:.2f}]"


@dataclass
class CompareRow:
    label: str
    config: BenchConfig
    status: str
    reason: str | None
    runs: list[BenchResult]
    throughput: dict[str, Any] = field(default_factory=dict)  # {unit, median, ci_low, ci_high} pooled over processes
    peak_memory_bytes: float | None = None  # median over processes
    speedup: Ratio | None = None  # time(first) / time(this)
    speed_verdict: str | None = None
    memory_ratio: Ratio | None = None  # memory(this) / memory(first)
    memory_verdict: str | None = None
    accuracy: dict[str, Any] | None = None
    interrupted: bool = False  # Ctrl-C / SIGTERM stopped the invocation this row belongs to (measure_repeated)
    interrupted_by: str | None = None  # "Ctrl-C" | "SIGTERM"

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label, "status": self.status, "reason": self.reason, "config": self.config.to_dict(),
            **{k: self.throughput.get(k) for k in ("unit", "median", "ci_low", "ci_high")},
            "runs": len(self.runs), "ok_runs": sum(r.ok for r in self.runs), "throughput": self.throughput,
            "peak_memory_bytes": self.peak_memory_bytes,
            "speedup_vs_first": self.speedup.to_dict() if self.speedup else None, "speed_verdict": self.speed_verdict,
            "memory_ratio_vs_first": self.memory_ratio.to_dict() if self.memory_ratio else None, "memory_verdict": self.memory_verdict,
            "accuracy": self.accuracy, "run_ids": [r.run_id for r in self.runs], "store_ids": [r.store_id for r in self.runs],
            "converged_runs": sum(r.converged for r in self.runs),
            # under torchrun: the layout and each rank's numbers, from every process of this configuration
            **({"distributed": next((r.distributed for r in self.runs if r.distributed), {}),
                "ranks_per_run": [r.ranks for r in self.runs]} if self.config.distributed else {}),
        }


@dataclass
class CompareResult:
    group: str
    repeats: int
    rows: list[CompareRow]
    interrupted: bool = False
    options: MeasureOptions | None = None
    interrupted_by: str | None = None  # "Ctrl-C" | "SIGTERM"

    @property
    def runs(self) -> list[BenchResult]:
        return [r for row in self.rows for r in row.runs]

    def to_dict(self) -> dict[str, Any]:
        env = next((r.environment for r in self.runs if r.environment), {})
        return {
            "group": self.group, "repeats": self.repeats, "interrupted": self.interrupted, "interrupted_by": self.interrupted_by,
            "reference": self.rows[0].label if self.rows else None, "confidence": CONFIDENCE,
            "configurations": [row.to_dict() for row in self.rows],
            "options": self.options.to_dict() if self.options else None, "environment": env,
        }


def _unit(config: BenchConfig) -> tuple[str, str]:
    if config.scenario == "encode":
        return "samples_per_iter", "sentences/s"
    if config.scenario in ("train", "generate"):
        return "tokens_per_iter", "tokens/s"
    if config.scenario == "load":
        return "samples_per_iter", "loads/s"
    return "samples_per_iter", "samples/s"


def _summarise_row(row: CompareRow) -> None:
    ok = [r for r in row.runs if r.ok or r.status == "inaccurate"]
    bad = [r for r in row.runs if r.status in FAILED]
    accs = [r.accuracy for r in row.runs if r.accuracy]
    row.accuracy = accs[0] if accs else None
    if bad:
        row.status, row.reason = bad[0].status, bad[0].reason
    elif any(r.status == "inaccurate" for r in row.runs):
        row.status = "inaccurate"
        row.reason = next(r.reason for r in row.runs if r.status == "inaccurate")
    else:
        row.status, row.reason = ("ok", None) if ok else ("failed", "no run finished")
    timed = [r for r in ok if r.has_timing]
    if not timed:
        return
    attr, unit = _unit(row.config)
    per_iter = getattr(timed[0], attr) or 1
    groups = [r.samples for r in timed]
    pooled = float(np.median(np.concatenate(groups)))
    boots = hierarchical_bootstrap_medians(groups)
    lo, hi = np.quantile(boots, [(1 - CONFIDENCE) / 2, 1 - (1 - CONFIDENCE) / 2])
    row.throughput = {"unit": unit, "median": per_iter / pooled, "ci_low": per_iter / hi, "ci_high": per_iter / lo, "processes": len(timed)}
    mems = [r.peak_memory_bytes for r in timed if r.peak_memory_bytes is not None]
    row.peak_memory_bytes = float(np.median(mems)) if mems else None


def _per_iter_scaled(row: CompareRow) -> list[list[float]]:
    """Per-process samples as seconds per unit of work, so configurations of different sizes compare fairly."""
    attr, _ = _unit(row.config)
    out = []
    for r in row.runs:
        if (r.ok or r.status == "inaccurate") and r.has_timing:
            per = getattr(r, attr) or 1
            out.append([s / per for s in r.samples])
    return out


def _ratios(rows: list[CompareRow]) -> None:
    first = rows[0]
    a_time = _per_iter_scaled(first)
    a_mem = [[r.peak_memory_bytes] for r in first.runs if r.peak_memory_bytes is not None and r.has_timing]
    for row in rows[1:]:
        b_time = _per_iter_scaled(row)
        if a_time and b_time:
            r = ratio_of_medians(a_time, b_time)  # time(B)/time(A)
            row.speedup = Ratio(1 / r.ratio, 1 / r.ci_high, 1 / r.ci_low)
            row.speed_verdict = speed_verdict(first.label, row.label, row.speedup)
            if row.status == "inaccurate":
                row.speed_verdict = f"inaccurate, not counted as faster ({row.reason}); timing: {row.speed_verdict}"
        else:
            row.speed_verdict = f"no verdict: {first.label if not a_time else row.label} has no finished timing"
        b_mem = [[r.peak_memory_bytes] for r in row.runs if r.peak_memory_bytes is not None and r.has_timing]
        if a_mem and b_mem:
            row.memory_ratio = ratio_of_medians(a_mem, b_mem)
            row.memory_verdict = memory_verdict(first.label, row.label, row.memory_ratio)


def _unique_labels(configs: list[BenchConfig]) -> list[str]:
    labels = [c.display for c in configs]
    seen: dict[str, int] = {}
    out = []
    for lab in labels:
        if labels.count(lab) > 1:
            seen[lab] = seen.get(lab, 0) + 1
            lab = f"{lab} #{seen[lab]}"
        out.append(lab)
    return out


def compare(
    configs: list[BenchConfig], options: MeasureOptions | None = None, *, repeats: int = 3, store=None,
    on_result: Callable[[BenchResult], None] | None = None, workdir: str | None = None,
) -> CompareResult:
    """Measure configurations interleaved (ABAB...), `repeats` fresh processes each; ratios to the first.

    Every configuration is checked against its model and the store for writability before any process
    starts. Every run is stored as it finishes. Ctrl-C (or SIGTERM under runner.sigterm_as_interrupt)
    kills the running worker, stores an `interrupted` row for it and returns what finished, with
    `interrupted=True`.
    """
    if len(configs) < 2:
        raise InvalidConfigError(f"compare needs at least two configurations, got {len(configs)}. Add another one (e.g. backend=compile).")
    return _interleaved(configs, options, repeats=repeats, store=store, on_result=on_result, workdir=workdir)


def measure_repeated(
    config: BenchConfig, options: MeasureOptions | None = None, *, repeats: int = 3, store=None,
    on_result: Callable[[BenchResult], None] | None = None, workdir: str | None = None,
) -> CompareRow:
    """One configuration in `repeats` fresh processes. Its throughput CI comes from the two-level
    bootstrap over processes and iterations, so it covers process-to-process drift, which the CI of
    one process does not (benchmarks/LOG.md: two single-process runs 11% apart with tight CIs).
    Ctrl-C returns what finished, with `interrupted=True` on the row."""
    result = _interleaved([config], options, repeats=repeats, store=store, on_result=on_result, workdir=workdir)
    row = result.rows[0]
    row.interrupted, row.interrupted_by = result.interrupted, result.interrupted_by
    return row


# Fresh processes per configuration: each costs a model load (seconds); beyond this a run is a typo.
MAX_REPEATS = 1000


def _interleaved(
    configs: list[BenchConfig], options: MeasureOptions | None, *, repeats: int, store,
    on_result: Callable[[BenchResult], None] | None, workdir: str | None,
) -> CompareResult:
    if not isinstance(repeats, int) or isinstance(repeats, bool) or not 1 <= repeats <= MAX_REPEATS:
        raise InvalidConfigError(f"repeats must be an integer from 1 to {MAX_REPEATS} (fresh processes per configuration), "
                                 f"got {repeats!r}.")
    if not isinstance(repeats, int) or repeats < 1:
        raise InvalidConfigError(f"repeats must be an integer >= 1, got {repeats!r}.")
    from perfscale.measure.preflight import preflight

    options = options or MeasureOptions()
    notes = preflight(configs)
    if store is not None:
        store.check_writable()
    group = uuid.uuid4().hex[:12]
    labels = _unique_labels(configs)
    rows = [CompareRow(label=lab, config=c, status="ok", reason=None, runs=[]) for lab, c in zip(labels, configs, strict=True)]
    interrupted, interrupted_by = False, None
    running: tuple[CompareRow, int, float] | None = None  # the run in progress: (row, repeat, started)
    with temp_workdir("compare", workdir) as wd:
        refs = ReferenceOutputs(wd, options)
        try:
            for rep in range(repeats):
                for i, row in enumerate(rows):
                    running = (row, rep, time.time())
                    # Outputs for the gate from the first process of each configuration only.
                    outputs = wd / f"outputs-{i}.npz" if (options.gate and row.config.is_inference and rep == 0) else None
                    result = run_in_subprocess(row.config, options, workdir=wd, outputs_path=outputs, group=group, repeat=rep)
                    result.notes.extend(notes[row.config.fingerprint()])
                    if outputs is not None:
                        refs.offer(row.config, outputs)
                        apply_gate(result, outputs, refs, options)
                    elif rows[i].runs and rows[i].runs[0].accuracy is not None and result.ok:
                        result.accuracy = rows[i].runs[0].accuracy  # same config, same verdict
                        if result.accuracy.get("passed") is False:
                            result.status, result.reason = "inaccurate", rows[i].runs[0].reason
                    if store is not None:
                        store.keep(result)
                    row.runs.append(result)
                    running = None
                    if on_result is not None:
                        on_result(result)
        except KeyboardInterrupt as exc:
            interrupted, interrupted_by = True, how_interrupted(exc)
            if running is not None:  # the run in progress becomes an `interrupted` row
                row, rep, started = running
                mine = isinstance(exc, RunInterrupted) and exc.result.config is row.config
                result = exc.result if mine else interrupted_result(
                    row.config, how_interrupted(exc), started=started, group=group, repeat=rep,
                    during=" (during the fp32 reference run)" if isinstance(exc, RunInterrupted) else "")
                if store is not None:
                    store.keep(result)
                row.runs.append(result)
    for row in rows:
        _summarise_row(row)
    if rows[0].runs:
        _ratios(rows)
    return CompareResult(group=group, repeats=repeats, rows=rows, interrupted=interrupted, options=options,
                         interrupted_by=interrupted_by)


__all__ = ["CompareResult", "CompareRow", "compare", "measure_repeated", "memory_verdict", "speed_verdict"]
