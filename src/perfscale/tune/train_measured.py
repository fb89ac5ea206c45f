"""Steps 3-5 of a training tune on this machine: trace-confirm the pool, successive halving (halving.py)
with every trial journaled in the bench store as it finishes (so `--resume` re-measures nothing that
finished), the paired final comparison against the baseline (train_final.py), and the result.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from perfscale.errors import InvalidConfigError
from perfscale.measure.bench_config import MeasureOptions
from perfscale.tune.halving import HalvingRun, Outcome, design_pool, successive_halving
from perfscale.tune.result import TrainTuneResult, TrialRecord
from perfscale.tune.train_budget import Clock, Costs, final_plan
from perfscale.tune.train_final import FinalComparison, final_compare, why_it_won
from perfscale.tune.train_options import Progress, TrainTuneOptions
from perfscale.tune.train_screening import TrainEstimate, estimate_all
from perfscale.tune.train_space import Candidate, TrainSpace
from perfscale.tune.train_trace import trace_confirm

# Time limit of one compiled trial (its own process, compilation included); past it the trial is a
# timeout result. Chosen, not measured: above MiniLM's 36 s first compile here (FIELD-NOTES); a
# compiled decoder's first pass took 194-351 s under load (benchmarks/LOG.md), which tune does not run.
COMPILE_TRIAL_LIMIT_S = 300.0
# Time limit of one torchrun trial (agent, ranks' imports, build, the stop rule): chosen above the launches seen.
PROCESSES_TRIAL_LIMIT_S = 180.0
# The share of the budget kept for the final comparison while the halving runs (chosen: its resolution is the
# verdict's; the halving only has to find a challenger).
FINAL_SHARE = 0.35


@dataclass
class TuneState:
    """What every stage of a measured tune reads: the options, the model, the space, the records, the clock."""

    options: TrainTuneOptions
    spec: Any
    topology: Any
    space: TrainSpace
    records: dict[Candidate, TrialRecord]
    estimates: dict[Candidate, TrainEstimate]  # what the records' `estimate` documents were written from
    notes: list[str]
    clock: Clock
    baseline: Candidate
    stage_times: dict[str, float]
    capacity: int
    model: str  # what the trials build: options.model, or a config folder with the --task head

    def stage_done(self, name: str) -> None:
        self.stage_times[name] = self.clock.elapsed() - sum(self.stage_times.values())

    def trace(self, server, cands: list[Candidate], say: Progress) -> None:
        """Trace-confirm `cands` on the CPU program (train_trace.py): a candidate that does not fit is pruned."""
        trace_confirm(server, self.spec, cands, self.records, self.space, self.capacity, "cpu", say, self.model,
                      estimates=self.estimates)


def test_faults() -> dict[str, str]:
    from perfscale.tune.screen import _TEST_FAULTS

    return dict(_TEST_FAULTS)


def session_key(options: TrainTuneOptions, topology, space: TrainSpace) -> str:
    data = {"model": options.model, "seq": options.seq, "global_batch": options.global_batch, "topology": topology.label,
            "space": space.to_dict(), "rungs": [s.to_dict() for s in options.rung_stops], "final": options.final_stop.to_dict(),
            "repeats": options.repeats, "max_pool": options.max_pool, "faults": test_faults(), "trace_top": options.trace_top,
            "task": options.task, "num_labels": options.num_labels}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:10]


@dataclass
class _Session:
    """The store session of a measured tune: its group, whether it resumes one, the trials it counted."""

    store: Any
    group: str
    session: str
    resumed: bool
    counts: dict[str, int] = field(default_factory=lambda: {"reused": 0, "measured": 0})

    def doc(self, final: FinalComparison) -> dict[str, Any]:
        return {"id": self.session, "group": self.group, "store": str(self.store.path), "resumed": self.resumed,
                "reused_trials": self.counts["reused"] + final.reused, "measured_trials": self.counts["measured"] + final.measured}


def _open_session(t: TuneState) -> _Session:
    from perfscale.measure.store import Store

    store = Store(t.options.store)
    store.check_writable()  # before any trial: a store that cannot take rows would throw the measurements away
    prefix = f"tune-{session_key(t.options, t.topology, t.space)}-"
    resumed_from = store.latest_group(prefix) if t.options.resume else None
    session = resumed_from[len(prefix):].split("-")[0] if resumed_from else uuid.uuid4().hex[:8]
    if t.options.resume and not resumed_from:
        t.notes.append("--resume: no earlier session of this exact tune in the store; started a new one")
    return _Session(store, f"{prefix}{session}", session, bool(resumed_from))


class _Trials:
    """Successive halving's three callbacks: measure one candidate at one rung (journaled, reused on
    --resume), whether the budget allows another trial, and whether a combined candidate fits."""

    def __init__(self, t: TuneState, s: _Session, server, say: Progress):
        self.t, self.s, self.server, self.say = t, s, server, say
        self.costs = Costs(server, t.options)
        self.opts = [MeasureOptions(stop=stop, warmup=1, time_limit=t.options.trial_time_limit, gate=False, profile_memory=False)
                     for stop in t.options.rung_stops]

    def config(self, cand: Candidate):
        from perfscale.tune.screen import test_fault_extra

        return cand.bench_config(self.t.model, self.t.space.seq, extra=test_fault_extra(cand.name))

    def measure(self, cand: Candidate, rung: int) -> Outcome:
        config = self.config(cand)
        rgroup = f"{self.s.group}-r{rung}"
        prior = self.s.store.runs(group=rgroup, fingerprint=config.fingerprint(), limit=1) if self.s.resumed else []
        if prior:
            result, was_reused = prior[0].result, True
            self.s.counts["reused"] += 1
        else:
            result = self._run(cand, config, rung, rgroup)
            was_reused = False
            self.s.store.keep(result)  # a store failing mid-tune: the trial goes to a fallback file, not lost
            self.s.counts["measured"] += 1
        if not was_reused and not cand.processes > 1:  # a torchrun launch's start-up is not what a trial here costs
            self.costs.add(result)
        rate = (result.throughput().get("tokens_per_s") or {}).get("median") if result.ok else None
        _record_rung(self.t.records[cand], rung, result, was_reused)
        return Outcome(cand, rung, rate, result.status, result.reason, result, was_reused)

    def _run(self, cand: Candidate, config, rung: int, rgroup: str):
        self.say(f"rung {rung}: {cand.name}")
        rung_opts = replace(self.opts[min(rung, len(self.opts) - 1)], time_limit=self.costs.trial_limit())
        if cand.compile or cand.processes > 1:
            # compile: dynamo's caches and recompile limits must not carry across trials; processes: the ranks
            # are torchrun's (measure/multiprocess.py), with the same stop rule, over every rank's tokens.
            from perfscale.measure.runner import run_in_subprocess

            floor = COMPILE_TRIAL_LIMIT_S if cand.compile else PROCESSES_TRIAL_LIMIT_S
            rung_opts = replace(rung_opts, time_limit=max(rung_opts.time_limit, floor))
            return run_in_subprocess(config, rung_opts, workdir=self.server.workdir, group=rgroup)
        result = self.server.measure(config, rung_opts, group=rgroup)
        if result.status == "timeout" and self.costs.typical_wall():
            result.reason = f"stopped at {rung_opts.time_limit:.0f} s, 3x the typical trial here: far slower than the others (or hung)"
        return result

    def keep_going(self, rung: int) -> bool:
        # Rung 0 leaves room for two rung-1 trials and the final; rung 1 for the final only. The final
        # keeps at least FINAL_SHARE of the budget: the verdict's resolution is bought there.
        o = self.t.options
        later = 2 * self.costs.trial(o.rung_stops[1]) if rung == 0 and len(o.rung_stops) > 1 else 0.0
        stop = o.rung_stops[min(rung, len(o.rung_stops) - 1)]
        final = max(self.costs.final(min(2, o.repeats), "process", o.final_stop.min_iters), FINAL_SHARE * o.budget_seconds)
        return self.t.clock.left() - final - later > self.costs.trial(stop)

    def feasible(self, c: Candidate) -> bool:
        t = self.t
        if c in t.records:
            return t.records[c].status != "pruned"
        est = estimate_all(t.spec, [c], t.topology, t.space.seq, t.capacity)[c]
        t.estimates[c] = est
        t.records[c] = TrialRecord(name=c.name, knobs=c.knobs(), status="estimated", estimate=est.to_dict(), role="combined")
        return est.fits


def measured(t: TuneState, ranked: list[Candidate], server, progress: Progress) -> TrainTuneResult:
    """Steps 3-5 on this machine for the estimate's `ranked` candidates (best first)."""
    center, pool, role = design_pool(ranked, t.baseline, t.space.knob_values(), t.options.max_pool)
    for c, r in role.items():
        t.records[c].role = "baseline" if c == t.baseline and r is None else ("centre" if r is None else f"{r[0]}={r[1]}")
    for c in ranked:
        if c not in role and t.records[c].status == "estimated":
            t.records[c].reason = "estimated only: not in the measured pool (the centre and its one-knob neighbours)"
    s = _open_session(t)
    trace_top = 1 if t.options.trace_top is None else t.options.trace_top
    try:
        # 3. Trace-confirm the top of the pool (and the baseline): exact allocated bytes.
        confirm = [c for c in pool if c != t.baseline][:trace_top] + ([t.baseline] if t.baseline in pool and trace_top else [])
        t.trace(server, confirm, progress)
        pool = [c for c in pool if t.records[c].status != "pruned"]
        baseline_runs = t.baseline in pool
        if not baseline_runs:
            t.notes.append(f"the Trainer-defaults baseline ({t.baseline.name}) is not run: {t.records[t.baseline].reason}")
        t.stage_done("trace_s")

        # 4. Successive halving, every trial journaled as it finishes.
        trials = _Trials(t, s, server, progress)
        run = successive_halving(center, pool, role, trials.measure, rungs=len(trials.opts), keep_going=trials.keep_going,
                                 feasible=trials.feasible)
        if run.combined is not None and t.records[run.combined].role is None:
            t.records[run.combined].role = "combined"
        for c in run.skipped:
            t.records[c].status, t.records[c].reason = "not-measured", "in the pool, but the time budget ran out before its trial"
        t.stage_done("halving_s")
        ranking = run.ranking()
        if not ranking:
            raise InvalidConfigError(_all_failed_message(t.records))
        if trace_top and t.records[ranking[0].candidate].trace is None:  # confirm the winner's fit too
            t.trace(server, [ranking[0].candidate], progress)
            ranking = [o for o in ranking if t.records[o.candidate].status != "pruned"] or ranking

        # 5. The proof: the best change vs the baseline, paired (alternating steps in each fresh process).
        final = _final(t, s, trials, ranking, baseline_runs, server, progress)
    finally:
        s.store.close()
    if s.store.unsaved:
        paths = ", ".join(str(path) for _, path, _ in s.store.unsaved[:3])
        t.notes.append(f"the store failed mid-tune: {len(s.store.unsaved)} trial result(s) were written to fallback files "
                       f"({paths}{', ...' if len(s.store.unsaved) > 3 else ''}); `perfscale results --restore FILE` adds them back")
    t.stage_done("final_s")
    return _result(t, run, final, s.doc(final))


def _final(t: TuneState, s: _Session, trials: _Trials, ranking, baseline_runs: bool, server, say) -> FinalComparison:
    """The best change against the baseline: paired in fresh processes (one process each), or -- for a
    multi-process challenger, which no single process can hold -- unpaired, separate launches interleaved."""
    from perfscale.measure.runner import run_in_subprocess
    from perfscale.tune.screen import TrialServer

    plan = final_plan(trials.costs, t.options, t.clock)
    t.notes.append(plan["note"])
    stop = plan["stop"]
    pair_limit = max(t.options.trial_time_limit, 3 * (trials.costs.pair_fixed(True) + stop.max_time) + 60)

    def run_pair(config_a, config_b, rep):
        if plan["isolation"] != "process":
            return server.measure_pair(config_a, config_b, stop, pair_limit, repeat=rep)
        fresh = TrialServer(server.workdir / f"final-{rep}")
        try:
            return fresh.measure_pair(config_a, config_b, stop, pair_limit, repeat=rep)
        finally:
            fresh.close()

    def run_apart(config, rep):
        opts = MeasureOptions(stop=stop, warmup=1, time_limit=max(pair_limit, PROCESSES_TRIAL_LIMIT_S), gate=False, profile_memory=False)
        return run_in_subprocess(config, opts, workdir=server.workdir, repeat=rep)

    say("final: the best change vs the baseline")
    final = final_compare(ranking, t.baseline if baseline_runs else None, t.model, t.space.seq, plan["repeats"], s.store,
                          f"{s.group}-final", s.resumed, run_pair, say, budget_s=t.options.budget_seconds,
                          run_apart=run_apart, config_of=lambda c: c.bench_config(t.model, t.space.seq))
    t.notes.extend(final.notes)
    return final


def _record_rung(record: TrialRecord, rung: int, result, reused: bool) -> None:
    tp = (result.throughput().get("tokens_per_s") or {}) if result.ok else {}
    record.rungs.append({
        "rung": rung, "status": result.status, "reason": result.reason, "tokens_per_s": tp.get("median"),
        "ci_low": tp.get("ci_low"), "ci_high": tp.get("ci_high"), "iterations": len(result.samples),
        "peak_memory_bytes": result.peak_memory_bytes, "wall_s": result.wall_s, "store_id": result.store_id, "reused": reused,
        "compile_s": result.compile_s if result.config.run.compile else None,  # first compile, reported apart
    })
    record.status = "measured" if result.ok else result.status if result.status in ("oom", "timeout") else "failed"
    record.reason = None if result.ok else result.reason


def _all_failed_message(records) -> str:
    failed = [r for r in records.values() if r.status in ("failed", "oom", "timeout")]
    lines = "; ".join(f"{r.name}: {r.status} ({(r.reason or '')[:160]})" for r in failed[:4])
    return (f"No measured trial finished ({len(failed)} failed: {lines}). "
            "Check `perfscale bench` on the baseline, or give more --budget-seconds.")


def _result(t: TuneState, run: HalvingRun, final: FinalComparison, session: dict[str, Any]) -> TrainTuneResult:
    winner = final.winner
    why = why_it_won(final, run, t.records)
    runners = []
    for o in run.ranking():
        if o.candidate != winner and len(runners) < 3:
            runners.append({"name": o.candidate.name, "knobs": o.candidate.knobs(), "tokens_per_s": o.rate, "rung": o.rung,
                            "vs_winner_screen": (o.rate / final.winner_screen_rate) if final.winner_screen_rate and o.rate else None})
    space = t.space
    docs = {"winner": final.winner_doc(space.seq), "baseline": final.baseline_doc(space.seq, t.baseline)}
    for doc in docs.values():  # two models share a paired process: its peak RSS is not one configuration's
        rung_peaks = [r["peak_memory_bytes"] for tr in t.records.values() if tr.name == doc.get("name") for r in tr.rungs
                      if r.get("peak_memory_bytes")]
        if doc.get("name") and doc.get("peak_memory_bytes") is None and rung_peaks:
            doc["peak_memory_bytes"], doc["peak_memory_from"] = rung_peaks[-1], "its halving trial (the final runs two models per process)"
    return TrainTuneResult(
        model=t.spec.name, hardware=t.topology.hardware.description, measured_here=True, ranking="measured",
        workload={"seq": space.seq, "global_batch": space.global_batch, "tokens_per_step": space.seq * space.global_batch},
        space=space.to_dict(), winner=docs["winner"], baseline=docs["baseline"], speedup=final.speedup,
        why=why, runners_up=runners, trials=list(t.records.values()), notes=t.notes, session=session,
        timing={"wall_s": t.clock.elapsed(), "budget_s": t.options.budget_seconds, **t.stage_times},
        environment=final.environment,
    )


__all__ = ["COMPILE_TRIAL_LIMIT_S", "FINAL_SHARE", "PROCESSES_TRIAL_LIMIT_S", "TuneState", "measured", "session_key", "test_faults"]
