"""`perfscale tune` for training: space -> estimate/prune -> trace-confirm -> successive halving -> proof.

1. The space (train_space.py): the knobs that apply to the workload and the hardware.
2. Estimate every point (< 1 ms each); drop what does not fit with a margin; drop what the estimate
   puts far behind its best (e.g. checkpointing's recomputation when memory is plentiful); rank.
3. Trace the top candidates (fake tensors: exact allocated bytes) to confirm they fit.
4. Measure on this machine by successive halving (halving.py): short trials for the pool, longer for
   survivors, the Trainer-defaults baseline always in. Each trial is journaled in the bench store as
   it finishes, so `--resume` re-measures nothing that finished.
5. Prove it: the best change against the baseline, paired: both built in each fresh process and timed
   in alternating steps, the speed-up with its 95% CI (two-level bootstrap over processes and step pairs,
   train_final.py), and a verdict in words: proven, the same within +-X%, or not resolved on this
   machine's noise (with the budget that would resolve 10%).
On hardware you do not have (`--hardware`), steps 4-5 cannot run: the ranking is the estimate's.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from perfscale.errors import InvalidConfigError
from perfscale.measure.bench_config import MeasureOptions
from perfscale.measure.stats import StopRule
from perfscale.specs.head_folder import head_folder
from perfscale.specs.workload import DEFAULT_SEQ, MAX_SIZE
from perfscale.tune.halving import HalvingRun, Outcome, design_pool, successive_halving
from perfscale.tune.result import TrainTuneResult, TrialRecord
from perfscale.tune.train_budget import MIN_PAIRS, Clock, Costs, final_plan
from perfscale.tune.train_estimated import estimated_only, nothing_fits
from perfscale.tune.train_final import FinalComparison, final_compare, why_it_won
from perfscale.tune.train_space import Candidate, TrainSpace, baseline_candidate, build_space

DEFAULT_GLOBAL_BATCH = 8  # Trainer's per_device_train_batch_size default: the baseline needs no accumulation
DEFAULT_BUDGET_S = 120.0  # the default run must end well inside 3 minutes on 2 loaded cores
MEMORY_MARGIN = 0.10  # keep 10% of the device free: estimate error, allocator, the rest of the process
ESTIMATE_TOLERANCE = 0.2  # within 20% of the best estimate the estimate cannot decide: measure
# torch.compile joins the default space only with at least this budget. Chosen, not measured for
# training: a compiled trial's first compilation alone took 36 s for MiniLM here (FIELD-NOTES).
COMPILE_BUDGET_S = 300.0
# Time limit of one compiled trial (its own process, compilation included); past it the trial is a
# timeout result. Chosen, not measured: above MiniLM's 36 s first compile here (FIELD-NOTES); a
# compiled decoder's first pass took 194-351 s under load (benchmarks/LOG.md), which tune does not run.
COMPILE_TRIAL_LIMIT_S = 300.0
# The processes x threads candidates (DDP ranks under torchrun) join the default space only with at least
# this budget: each trial is a torchrun launch whose ranks import torch and transformers anew (measured here,
# loaded box: 15-25 s per launch of 2 ranks on 2 cores, benchmarks/LOG.md issue 18 tune section).
PROCESSES_BUDGET_S = 300.0
# Time limit of one torchrun trial (agent, ranks' imports, build, the stop rule): chosen above the launches seen.
PROCESSES_TRIAL_LIMIT_S = 180.0
# Stop rules per rung: rung 0 is a short screen, rung 1 longer; the final proof has its own.
RUNG_STOPS = (
    StopRule(min_iters=3, min_time=0.0, target_rel_ci=0.05, max_time=3.0),
    StopRule(min_iters=5, min_time=1.5, target_rel_ci=0.03, max_time=6.0),
)
# --quick: a 60 s search with one fresh process per finalist (seconds to a minute on this CPU).
QUICK_BUDGET_S = 60.0
QUICK_REPEATS = 1
# The final paired comparison: at least MIN_PAIRS step pairs and 2 s per process, then until the 95% CI of the
# speed ratio is within +-2% (max_time is set by final_plan from the budget left).
FINAL_STOP = StopRule(min_iters=MIN_PAIRS, min_time=2.0, target_rel_ci=0.02, max_time=6.0)
# The share of the budget kept for the final comparison while the halving runs (chosen: its resolution is the
# verdict's; the halving only has to find a challenger).
FINAL_SHARE = 0.35
Progress = Callable[[str], None]


@dataclass
class TrainTuneOptions:
    """Everything that shapes a training tune (the session key of --resume is built from it)."""

    model: str = "perfscale-tiny-llama"
    seq: int = DEFAULT_SEQ
    global_batch: int = DEFAULT_GLOBAL_BATCH
    hardware: str | None = None  # None / "local": this machine, measured; else a topology, estimated
    allow_lora: bool = False
    allow_optimizer_change: bool = False
    include_compile: bool | None = None  # None: only when the budget allows
    include_processes: bool | None = None  # processes x threads on this CPU (DDP, torchrun); None: only when the budget allows
    task: str | None = None  # the head to train instead of the config's architectures[0] (specs/heads.py TASKS)
    num_labels: int | None = None  # outputs of a classification head
    budget_seconds: float = DEFAULT_BUDGET_S
    store: str | None = None
    resume: bool = False
    trace_top: int | None = None  # None: 2 here, 1 on --hardware
    repeats: int = 3  # fresh processes (each a paired run) in the final comparison
    max_pool: int = 10
    rung_stops: tuple[StopRule, ...] = RUNG_STOPS
    final_stop: StopRule = FINAL_STOP
    trial_time_limit: float = 120.0
    space: TrainSpace | None = None  # an explicit space (benchmarks, tests)

    def __post_init__(self) -> None:
        problems = []
        for name in ("seq", "global_batch", "repeats", "max_pool"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_SIZE:
                problems.append(f"{name} must be an integer from 1 to {MAX_SIZE:,}, got {value!r}")
        if self.trace_top is not None and (not isinstance(self.trace_top, int) or not 0 <= self.trace_top <= 1000):
            problems.append(f"trace_top must be an integer from 0 to 1000, got {self.trace_top!r}")
        for name in ("budget_seconds", "trial_time_limit"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                problems.append(f"{name} must be a finite number of seconds > 0, got {value!r}")
        if problems:
            raise InvalidConfigError("Bad tune options: " + "; ".join(problems) + ".")

    @classmethod
    def from_user(cls, quick: bool = False, **given: Any) -> TrainTuneOptions:
        """Options from what a user gave (None = not given): defaults fill the rest, `quick` a 60 s budget
        and one process per finalist (QUICK_BUDGET_S, QUICK_REPEATS); 0 is a value, and is refused."""
        defaults = {"budget_seconds": QUICK_BUDGET_S, "repeats": QUICK_REPEATS} if quick else {}
        values = {k: defaults.get(k) if v is None else v for k, v in given.items()}
        return cls(**{k: v for k, v in values.items() if v is not None})  # the rest: the field defaults

    @property
    def local(self) -> bool:
        return self.hardware is None or self.hardware.lower() == "local"


def resolve_topology(options: TrainTuneOptions):
    from perfscale.specs import parse_topology
    from perfscale.specs.detect import detect_local

    if options.local:
        return detect_local().topology
    return parse_topology(options.hardware)


def _capacity(topology, local: bool) -> tuple[int, str]:
    """Bytes a run may use, and where that number comes from."""
    cap = int(topology.hardware.memory_bytes.value or 0)
    if local and topology.hardware.kind == "cpu":
        import psutil

        avail = psutil.virtual_memory().available
        if avail < cap:
            return int(avail), "available RAM now (psutil), not the total: other processes hold the rest"
    return cap, f"{topology.hardware.name} memory"


def _estimate_all(spec, space_cands: list[Candidate], topology, seq: int, capacity: int) -> dict[Candidate, dict[str, Any]]:
    """Estimate of each candidate; threads and workers do not change it, so equal keys share one."""
    from perfscale.errors import PerfscaleError
    from perfscale.estimate import estimate

    cache: dict[Candidate, dict[str, Any]] = {}
    out = {}
    for c in space_cands:
        key = replace(c, threads=None, workers=0, processes=1)
        if key not in cache:
            try:
                e = estimate(spec, key.run_config(seq), topology)
                cache[key] = {"tokens_per_s": e.time.tokens_per_second, "step_s": e.time.step_seconds, "peak_bytes": e.memory.peak_bytes,
                              "total_bytes": e.memory.total_bytes, "binding": e.binding}
            except PerfscaleError as exc:
                cache[key] = {"error": str(exc), "fits": False}
        est = dict(cache[key])
        if "error" not in est:
            # DDP ranks on one machine: each holds its own copy of the model and its per-rank batch, so the
            # machine's memory holds `processes` times one rank; the estimate cannot rank threads or ranks here.
            est["total_bytes"] = est["total_bytes"] * c.processes
            est["capacity_bytes"], est["fits"] = capacity, est["total_bytes"] <= capacity * (1 - MEMORY_MARGIN)
        out[c] = est
    return out


def _rank_key(baseline: Candidate, best_tps: float):
    """Best estimate first; within the estimate's resolution, larger micro-batches, then fewer changes from the defaults."""
    def key(item):
        c, est = item
        bucket = round(est["tokens_per_s"] / best_tps / 0.02)  # 2% buckets: closer than that is a tie
        return (-bucket, -c.micro_batch, len(c.differences(baseline)), c.name)
    return key


def test_faults() -> dict[str, str]:
    from perfscale.tune.screen import _TEST_FAULTS

    return dict(_TEST_FAULTS)


def _session_key(options: TrainTuneOptions, topology, space: TrainSpace) -> str:
    data = {"model": options.model, "seq": options.seq, "global_batch": options.global_batch, "topology": topology.label,
            "space": space.to_dict(), "rungs": [s.to_dict() for s in options.rung_stops], "final": options.final_stop.to_dict(),
            "repeats": options.repeats, "max_pool": options.max_pool, "faults": test_faults(), "trace_top": options.trace_top,
            "task": options.task, "num_labels": options.num_labels}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:10]


def tune_training(options: TrainTuneOptions | None = None, progress: Progress | None = None, **overrides: Any) -> TrainTuneResult:
    """Find the fastest training configuration that fits, measured against Trainer's defaults.

    `tune_training(model="perfscale-tiny-llama", seq=128, global_batch=8)`; see TrainTuneOptions.
    """

    options = replace(options or TrainTuneOptions(), **overrides)
    say = progress or (lambda _m: None)
    clock = Clock(options.budget_seconds)
    if options.seq < 1 or options.global_batch < 1:
        raise InvalidConfigError(f"--seq and --global-batch must be positive integers, got {options.seq} and {options.global_batch}.")
    if options.repeats < 1:
        raise InvalidConfigError(f"--repeats must be >= 1, got {options.repeats}.")
    server = None
    if options.local:  # start the trial worker now: its imports overlap the estimate below
        from perfscale.tune.screen import TrialServer

        workdir = tempfile.TemporaryDirectory(prefix="perfscale-tune-")
        server = TrialServer(Path(workdir.name))
        server.spawn()
    try:
        return _tune(options, say, clock, server)
    finally:
        if server is not None:
            server.close()
            workdir.cleanup()


def _tune(options: TrainTuneOptions, say: Progress, clock: Clock, server) -> TrainTuneResult:
    from perfscale.specs import load_model_spec
    from perfscale.specs.detect import detect_local

    spec = load_model_spec(options.model, task=options.task, num_labels=options.num_labels)
    topology = resolve_topology(options)
    hw = topology.hardware
    notes: list[str] = []
    include_compile = options.include_compile
    if include_compile is None:
        include_compile = options.budget_seconds >= COMPILE_BUDGET_S
    include_processes = options.include_processes
    if include_processes is None:
        include_processes = options.budget_seconds >= PROCESSES_BUDGET_S
    from perfscale.measure.multiprocess import cores

    space = options.space or build_space(
        hw, topology.world_size, global_batch=options.global_batch, seq=options.seq, local=options.local,
        allow_lora=options.allow_lora, allow_optimizer_change=options.allow_optimizer_change, include_compile=include_compile,
        cpu_cores=min(detect_local().cpu.physical_cores or 1, cores()), heads=spec.num_heads, layers=spec.num_layers,
        per_node=topology.devices_per_node, include_processes=include_processes,
    )
    notes += list(space.notes)
    capacity, cap_source = _capacity(topology, options.local)
    baseline = baseline_candidate(space.global_batch, space.data_parallel)
    cands = space.candidates()
    baseline_in_space = baseline in cands
    if not baseline_in_space:  # measured for the comparison, but not a point of the search
        cands.insert(0, baseline)
    say(f"estimating {len(cands)} configurations")
    estimates = _estimate_all(spec, cands, topology, space.seq, capacity)
    records = {c: TrialRecord(name=c.name, knobs=c.knobs(), status="estimated", baseline=c == baseline, estimate=estimates[c]) for c in cands}
    fitting = [(c, estimates[c]) for c in cands if estimates[c].get("fits")]
    for c in cands:
        est = estimates[c]
        if "error" in est:
            records[c].status, records[c].reason = "pruned", est["error"]
        elif not est["fits"]:
            records[c].status = "pruned"
            records[c].reason = (f"does not fit: estimated {est['total_bytes'] / 2**30:.2f} GiB > {1 - MEMORY_MARGIN:.0%} of "
                                 f"{capacity / 2**30:.2f} GiB ({cap_source})")
    stage_times: dict[str, float] = {"estimate_s": clock.elapsed()}
    if not fitting:
        return nothing_fits(options, spec, topology, space, records, notes, clock, capacity)
    best_tps = max(e["tokens_per_s"] for _, e in fitting)
    ranked_items = sorted(fitting, key=_rank_key(baseline, best_tps))
    kept = []
    for c, est in ranked_items:
        if est["tokens_per_s"] < best_tps * (1 - ESTIMATE_TOLERANCE) and c != baseline:
            records[c].status = "pruned"
            records[c].reason = f"estimated {1 - est['tokens_per_s'] / best_tps:.0%} slower than the best estimate" + (
                " (checkpointing recomputes the forward)" if c.checkpointing else "")
        else:
            kept.append(c)
    ranked = kept if baseline_in_space else [c for c in kept if c != baseline]
    if not ranked:
        return nothing_fits(options, spec, topology, space, records, notes, clock, capacity)
    common = dict(options=options, spec=spec, topology=topology, space=space, records=records, notes=notes, clock=clock,
                  baseline=baseline, stage_times=stage_times, capacity=capacity)
    if not options.local:
        return estimated_only(ranked, confirm=partial(_trace_confirm, model=head_model(options, spec)), **common)
    return _measured(ranked, **common, model=head_model(options, spec), server=server, progress=say)


def head_model(options: TrainTuneOptions, spec) -> str:
    """What the measured trials build: the model itself, or -- with --task / --num-labels -- the folder holding its
    config with that head (specs/head_folder.py, shared with bench's --task), so that the train scenario trains it."""
    if options.task is None and options.num_labels is None:
        return options.model
    return head_folder(spec)


# ----------------------------------------------------------------- measured here
@dataclass
class _Tune:
    """What every stage of a measured tune reads: the options, the model, the space, the records, the clock."""

    options: TrainTuneOptions
    spec: Any
    topology: Any
    space: TrainSpace
    records: dict[Candidate, TrialRecord]
    notes: list[str]
    clock: Clock
    baseline: Candidate
    stage_times: dict[str, float]
    capacity: int
    model: str  # what the trials build: options.model, or a config folder with the --task head

    def stage_done(self, name: str) -> None:
        self.stage_times[name] = self.clock.elapsed() - sum(self.stage_times.values())


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


def _open_session(t: _Tune) -> _Session:
    from perfscale.measure.store import Store

    store = Store(t.options.store)
    store.check_writable()  # before any trial: a store that cannot take rows would throw the measurements away
    prefix = f"tune-{_session_key(t.options, t.topology, t.space)}-"
    resumed_from = store.latest_group(prefix) if t.options.resume else None
    session = resumed_from[len(prefix):].split("-")[0] if resumed_from else uuid.uuid4().hex[:8]
    if t.options.resume and not resumed_from:
        t.notes.append("--resume: no earlier session of this exact tune in the store; started a new one")
    return _Session(store, f"{prefix}{session}", session, bool(resumed_from))


class _Trials:
    """Successive halving's three callbacks: measure one candidate at one rung (journaled, reused on
    --resume), whether the budget allows another trial, and whether a combined candidate fits."""

    def __init__(self, t: _Tune, s: _Session, server, say: Progress):
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
        est = _estimate_all(t.spec, [c], t.topology, t.space.seq, t.capacity)[c]
        t.records[c] = TrialRecord(name=c.name, knobs=c.knobs(), status="estimated", estimate=est, role="combined")
        return bool(est.get("fits"))


def _measured(ranked, *, server, progress, **common) -> TrainTuneResult:
    t = _Tune(**common)
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
        _trace_confirm(server, t.spec, confirm, t.records, t.space, t.capacity, "cpu", progress, t.model)
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
            _trace_confirm(server, t.spec, [ranking[0].candidate], t.records, t.space, t.capacity, "cpu", progress, t.model)
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
    return _result_measured(t.options, t.spec, t.topology, t.space, t.records, t.notes, t.clock, t.baseline, t.stage_times, run,
                            final, s.doc(final))


def _final(t: _Tune, s: _Session, trials: _Trials, ranking, baseline_runs: bool, server, say) -> FinalComparison:
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
        "compile_s": result.compile_s if result.config.backend == "compile" else None,  # first compile, reported apart
    })
    record.status = "measured" if result.ok else result.status if result.status in ("oom", "timeout") else "failed"
    record.reason = None if result.ok else result.reason


def _trace_confirm(server, spec, cands, records, space, capacity, device, say, model: str | None = None) -> None:
    """Trace each candidate's RunConfig once; a candidate whose traced peak does not fit is pruned."""
    done: dict[Any, dict] = {replace(c, threads=None, workers=0, processes=1): r.trace for c, r in records.items() if r.trace}
    for c in cands:
        if c.zero or c.tp > 1 or c.pp > 1 or c.offload != "none":
            records[c].trace = {"status": "skipped", "reason": "trace models one device or FSDP, not ZeRO/TP/PP/offload"}
            continue
        key = replace(c, threads=None, workers=0, processes=1)  # one rank's program
        if key not in done:
            say(f"trace: {c.name}")
            t0 = time.perf_counter()
            out = server.trace(model or (spec.name if not spec.location else spec.location), key.run_config(space.seq).to_dict(), device)
            if out.get("status") == "ok":
                tr = out["trace"]
                est = records[c].estimate or {}
                overhead = (est.get("total_bytes") or 0) - (est.get("peak_bytes") or 0)
                total = tr["peak_bytes"] + overhead
                done[key] = {"status": "ok", "peak_bytes": tr["peak_bytes"], "total_bytes": total, "fits": total <= capacity * (1 - MEMORY_MARGIN),
                             "estimate_error": (est["peak_bytes"] / tr["peak_bytes"] - 1) if est.get("peak_bytes") and tr["peak_bytes"] else None,
                             "seconds": time.perf_counter() - t0, "method": tr.get("method")}
            else:
                done[key] = {"status": out.get("status"), "reason": out.get("reason"), "fits": None}
        records[c].trace = done[key]
        if done[key].get("fits") is False:
            records[c].status = "pruned"
            records[c].reason = f"does not fit by trace: {done[key]['total_bytes'] / 2**30:.2f} GiB traced > {1 - MEMORY_MARGIN:.0%} of {capacity / 2**30:.2f} GiB"


def _all_failed_message(records) -> str:
    failed = [r for r in records.values() if r.status in ("failed", "oom", "timeout")]
    lines = "; ".join(f"{r.name}: {r.status} ({(r.reason or '')[:160]})" for r in failed[:4])
    return (f"No measured trial finished ({len(failed)} failed: {lines}). "
            "Check `perfscale bench` on the baseline, or give more --budget-seconds.")


def _result_measured(options, spec, topology, space, records, notes, clock, baseline, stage_times, run: HalvingRun,
                     final: FinalComparison, session) -> TrainTuneResult:
    winner = final.winner
    why = why_it_won(final, run, records)
    runners = []
    for o in run.ranking():
        if o.candidate != winner and len(runners) < 3:
            runners.append({"name": o.candidate.name, "knobs": o.candidate.knobs(), "tokens_per_s": o.rate, "rung": o.rung,
                            "vs_winner_screen": (o.rate / final.winner_screen_rate) if final.winner_screen_rate and o.rate else None})
    docs = {"winner": final.winner_doc(space.seq), "baseline": final.baseline_doc(space.seq, baseline)}
    for doc in docs.values():  # two models share a paired process: its peak RSS is not one configuration's
        rung_peaks = [r["peak_memory_bytes"] for t in records.values() if t.name == doc.get("name") for r in t.rungs if r.get("peak_memory_bytes")]
        if doc.get("name") and doc.get("peak_memory_bytes") is None and rung_peaks:
            doc["peak_memory_bytes"], doc["peak_memory_from"] = rung_peaks[-1], "its halving trial (the final runs two models per process)"
    return TrainTuneResult(
        model=spec.name, hardware=topology.hardware.description, measured_here=True, ranking="measured",
        workload={"seq": space.seq, "global_batch": space.global_batch, "tokens_per_step": space.seq * space.global_batch},
        space=space.to_dict(), winner=docs["winner"], baseline=docs["baseline"], speedup=final.speedup,
        why=why, runners_up=runners, trials=list(records.values()), notes=notes, session=session,
        timing={"wall_s": clock.elapsed(), "budget_s": options.budget_seconds, **stage_times},
        environment=final.environment,
    )


__all__ = ["DEFAULT_BUDGET_S", "DEFAULT_GLOBAL_BATCH", "DEFAULT_SEQ", "TrainTuneOptions", "tune_training"]
