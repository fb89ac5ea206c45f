"""`run_hpo`: an Optuna study whose trials fine-tune with the Trainer, each in a fresh process, and
never start when they cannot fit.

The loop of each worker (N threads of this process; any number of processes on any machines that
point at one storage):
  1. fail what died: stale heartbeats (RDB storage; Optuna's fail_stale_trials, which re-enqueues the
     trial through RetryHeartbeatStaleTrialCallback) and running trials whose perfscale process on this
     machine is gone (any storage; retried the same way);
  2. under a lock (a thread lock, and a file lock next to a local SQLite/journal file), count the
     study's finished trials (complete + pruned, infeasible included) and running ones: stop at the
     requested *total*, wait while the running ones could reach it, else `study.ask()` (enqueued
     trials first: the Trainer-defaults baseline, retries) and sample the space (define-by-run);
  3. the feasibility filter (estimate, trace near the limit): what cannot fit is told PRUNED with the
     reason "would not fit: ..." and costs no training;
  4. the trial process (launch.py) trains, reports evaluation losses to the storage and stops when the
     pruner says so; this process keeps its heartbeat and tells Optuna the outcome: COMPLETE with the
     values, PRUNED, or FAIL with the reason (oom, hung, crashed; killed by SIGKILL or interrupted:
     also re-enqueued, so a resumed study re-runs it).
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from perfscale.errors import InvalidConfigError
from perfscale.hpo.options import OBJECTIVES, HpoOptions
from perfscale.hpo.recovery import ATTR, StudyLock, fail_dead_trials, owner, retry
from perfscale.hpo.result import HpoResult
from perfscale.hpo.samplers import PRUNERS, SAMPLERS, make_pruner, make_sampler
from perfscale.hpo.space import SearchSpace, run_config, training_arguments
from perfscale.hpo.summary import summarize

Progress = Callable[[str], None]
# The time limit of a trial once some have finished: this many times the slowest finished one (at least
# MIN_TRIAL_LIMIT_S): a hung trial costs a few trials' time, not the whole --trial-timeout.
ADAPTIVE_LIMIT_FACTOR = 4.0
MIN_TRIAL_LIMIT_S = 120.0
POLL_S = 1.0
MAX_DEFAULT_WORKERS = 8


class HpoInterrupted(KeyboardInterrupt):
    """Ctrl-C / SIGTERM during a study: the trial processes were killed and their trials failed (and
    re-enqueued); `result` is the study as it stands. `--resume` continues it."""

    def __init__(self, result: HpoResult, how: str):
        super().__init__(how)
        self.result = result
        self.how = how


def _identity(options: HpoOptions, space: SearchSpace, data) -> dict[str, Any]:
    return {"model": options.model, "data": data.fingerprint, "seq": options.seq, "steps": options.steps,
            "eval_steps": options.eval_steps, "objective": options.objective, "space": space.to_dict()}


# ----------------------------------------------------------------- the study
def _forkable(device: str) -> bool:
    """Forking the trial launcher is safe on CPU only (CUDA does not survive fork)."""
    if device == "cpu":
        return True
    import torch

    return device == "auto" and not torch.cuda.is_available()


@dataclass
class _Context:
    options: HpoOptions
    space: SearchSpace
    study: Any
    storage: Any
    spec: Any
    data: Any
    filter: Any
    lock: StudyLock
    workdir: Path
    processes: Any
    say: Progress
    threads: int
    heartbeat: bool
    mine: set[int] = field(default_factory=set)
    running_ids: set[int] = field(default_factory=set)
    walls: list[float] = field(default_factory=list)
    failures: int = 0
    notes: list[str] = field(default_factory=list)
    guard: threading.Lock = field(default_factory=threading.Lock)
    error: BaseException | None = None
    launcher: Any = None  # zygote.Launcher on CPU (trials forked from a pre-imported launcher), None: spawned
    storage_label: str = ""  # what a trial process opens (the URL, or journal:PATH)

    def trial_limit(self) -> float:
        with self.guard:
            walls = list(self.walls)
        if not walls:
            return self.options.trial_timeout
        return min(self.options.trial_timeout, max(MIN_TRIAL_LIMIT_S, ADAPTIVE_LIMIT_FACTOR * max(walls)))


def _set_attrs(study, trial_id: int, **attrs: Any) -> None:
    for k, v in attrs.items():
        study._storage.set_trial_user_attr(trial_id, f"{ATTR}_{k}", v)


def _next_trial(ctx: _Context):
    """('done' | 'wait' | trial, values) under the study lock."""
    from optuna.trial import TrialState

    study, total = ctx.study, ctx.options.trials
    with ctx.lock():
        fail_dead_trials(study)
        trials = study.get_trials(deepcopy=False)
        finished = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
        running = sum(t.state == TrialState.RUNNING for t in trials)
        if finished >= total:
            return "done", None
        limit = ctx.options.max_failures if ctx.options.max_failures is not None else total
        if ctx.failures >= limit:
            return "failures", None
        if finished + running >= total:
            return "wait", None
        trial = study.ask()
        if ctx.heartbeat:
            ctx.storage.record_heartbeat(trial._trial_id)
        with ctx.guard:
            ctx.running_ids.add(trial._trial_id)
            ctx.mine.add(trial.number)
        _set_attrs(study, trial._trial_id, owner=owner(), status="running", reason=None)
        values = ctx.space.suggest(trial)
    return trial, values


def _tell(ctx: _Context, trial, *, state=None, values=None, **attrs: Any) -> bool:
    """Tell Optuna the outcome; False when the trial was already finished elsewhere (failed as dead by
    another worker, or by this run's interruption): that verdict stands."""
    import optuna

    try:
        _set_attrs(ctx.study, trial._trial_id, **attrs)
        ctx.study.tell(trial, values=values, state=state)
    except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError) as exc:
        if "finished" not in str(exc).lower():
            raise
        return False
    return True


def _run_one(ctx: _Context, trial, values: dict[str, Any]) -> None:
    from optuna.trial import TrialState

    from perfscale.hpo.launch import run_trial_process

    opts, study = ctx.options, ctx.study
    run = run_config(values, opts.seq)
    feas = ctx.filter.check(run)
    _set_attrs(study, trial._trial_id, run_config=run.to_dict(), memory=feas.to_dict(),
               training_arguments=training_arguments(values))
    if not feas.fits:
        ctx.say(f"trial {trial.number}: {feas.reason}")
        _tell(ctx, trial, state=TrialState.PRUNED, status="infeasible", reason=feas.reason)
        return
    baseline = trial.user_attrs.get(f"{ATTR}_role") == "baseline"  # never pruned: it is the reference
    job = {"model": opts.model, "values": values, "seq": opts.seq, "steps": opts.steps, "eval_steps": opts.eval_steps,
           "train_path": ctx.data.train_path, "eval_path": ctx.data.eval_path, "seed": opts.seed or 0, "device": opts.device,
           "threads": ctx.threads, "storage": ctx.storage_label, "study_name": study.study_name, "trial_id": trial._trial_id,
           "pruner": opts.pruner if not baseline else "none", "report": not opts.multi_objective}
    if trial.number in opts.faults:
        job["fault"], job["fault_step"] = opts.faults[trial.number]
    ctx.say(f"trial {trial.number}: training " + ", ".join(f"{p.name}={values.get(p.name)}" for p in ctx.space.searched()
                                                           if values.get(p.name) is not None))
    tag = f"trial-{trial.number}-{time.monotonic_ns()}"
    try:
        out = run_trial_process(job, ctx.workdir, ctx.trial_limit(), ctx.processes, tag, launcher=ctx.launcher)
    except RuntimeError as exc:  # the launcher could not start or fork: spawn this trial and the rest
        if not ctx.processes.stopping.is_set():
            with ctx.guard:
                if ctx.launcher is not None:
                    ctx.notes.append(f"the trial launcher failed ({exc}); trials were spawned as new interpreters instead")
                ctx.launcher = None
        out = run_trial_process(job, ctx.workdir, ctx.trial_limit(), ctx.processes, tag)
    p = out.payload
    common = {"wall_s": out.wall_s, "steps": p.get("steps"), "tokens_per_s": p.get("tokens_per_s"), "measured_memory": p.get("memory")}
    if out.status == "complete":
        with ctx.guard:
            ctx.walls.append(out.wall_s)
        vals = [p["eval_loss"], p["tokens_per_s"]] if opts.multi_objective else p["eval_loss"]
        _tell(ctx, trial, values=vals, status="complete", reason=None, evals=p.get("evals"), **common)
        ctx.say(f"trial {trial.number}: eval loss {p['eval_loss']:.4f} ({out.wall_s:.0f} s)")
        return
    if out.status == "pruned":
        with ctx.guard:
            ctx.walls.append(out.wall_s)
        _tell(ctx, trial, state=TrialState.PRUNED, status="pruned", reason=out.reason, evals=p.get("evals"), **common)
        ctx.say(f"trial {trial.number}: {out.reason}")
        return
    reason = out.reason or out.status
    if out.stderr_tail and out.status in ("failed", "oom"):
        last = [ln for ln in out.stderr_tail.strip().splitlines() if ln.strip()][-1:] or [""]
        if last[0] and last[0] not in reason:
            reason += f" [{last[0][:300]}]"
    if out.status not in ("killed", "interrupted"):  # the configuration failed (a kill is retried, not counted)
        with ctx.guard:
            ctx.failures += 1
    told = _tell(ctx, trial, state=TrialState.FAIL, status=out.status, reason=reason, **common)
    ctx.say(f"trial {trial.number}: {out.status}: {reason[:200]}")
    if told and out.status in ("killed", "interrupted"):  # the configuration did not fail: its process was stopped
        retry(study, trial.number)


def _fail_leftovers(ctx: _Context, how: str) -> None:
    """After an interruption: this run's trials still RUNNING (a worker was not done) are failed and retried."""
    import optuna
    from optuna.trial import TrialState

    for t in ctx.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.number not in ctx.mine:
            continue
        try:
            _set_attrs(ctx.study, t._trial_id, status="interrupted", reason=f"interrupted by {how}: the trial was stopped")
            ctx.study.tell(t.number, state=TrialState.FAIL)
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError, RuntimeError):
            continue  # its worker told it in the meantime
        retry(ctx.study, t.number)


def _worker(ctx: _Context, index: int, done: threading.Event) -> None:
    try:
        while not ctx.processes.stopping.is_set():
            kind, values = _next_trial(ctx)
            if kind == "done":
                return
            if kind == "failures":
                with ctx.guard:
                    note = f"stopped after {ctx.failures} failed trials in this run: look at their reasons"
                    if note not in ctx.notes:
                        ctx.notes.append(note)
                return
            if kind == "wait":
                time.sleep(POLL_S)
                continue
            trial = kind
            try:
                _run_one(ctx, trial, values)
            finally:
                with ctx.guard:
                    ctx.running_ids.discard(trial._trial_id)
    except BaseException as exc:  # noqa: BLE001 - reported by the main thread
        ctx.error = exc
        ctx.processes.kill_all()
    finally:
        done.set()


def _heartbeats(ctx: _Context, stop: threading.Event) -> None:
    from perfscale.hpo.storage import HEARTBEAT_S

    while not stop.wait(HEARTBEAT_S):
        with ctx.guard:
            ids = list(ctx.running_ids)
        for tid in ids:
            try:
                ctx.storage.record_heartbeat(tid)
            except Exception:  # noqa: BLE001 - a finished trial, a busy database: the next beat retries
                pass


def open_study(options: HpoOptions, space: SearchSpace, data, storage, lock: StudyLock, name: str):
    """Load the study `name` (checking it is the same study) or create it; returns (study, created)."""
    import optuna

    identity = _identity(options, space, data)
    with lock():
        try:
            study = optuna.load_study(study_name=name, storage=storage)
            existing = True
        except KeyError:
            existing = False
        if existing:
            theirs = study.user_attrs.get(f"{ATTR}_identity")
            if theirs is None:
                raise InvalidConfigError(f"Study {name!r} in this storage was not made by perfscale hpo: give another --study-name.")
            if list(study.directions) and [d.name.lower() for d in study.directions] != options.directions:
                raise InvalidConfigError(f"Study {name!r} optimises {[d.name.lower() for d in study.directions]}, not {options.directions}: "
                                         "give another --study-name, or the same --objective.")
            diffs = [k for k in identity if identity[k] != theirs.get(k)]
            if diffs:
                detail = "; ".join(f"{k}: the study has {_short(theirs.get(k))}, this run {_short(identity[k])}" for k in diffs)
                raise InvalidConfigError(f"Study {name!r} already exists with a different setup ({detail}). Nothing was changed in it. "
                                         "Give another --study-name for a new study, or repeat the study's own settings to continue it.")
            n = len(study.trials)
            if n and not options.resume:
                raise InvalidConfigError(f"Study {name!r} already has {n} trials in {storage_label(options)}: pass --resume to continue it to "
                                         f"--trials {options.trials} in total (or join it from another worker), or give another --study-name.")
            return study, False
        study = optuna.create_study(study_name=name, storage=storage, directions=options.directions, load_if_exists=True)
        study.set_user_attr(f"{ATTR}_identity", identity)
        return study, True


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 160 else text[:157] + "..."


def storage_label(options: HpoOptions) -> str:
    from perfscale.hpo.storage import parse_storage

    return parse_storage(options.storage).label


def default_study_name(options: HpoOptions, space: SearchSpace, data) -> str:
    import hashlib
    import json

    digest = hashlib.sha256(json.dumps(_identity(options, space, data), sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"hpo-{Path(options.model).name}-{digest}"


def run_hpo(options: HpoOptions | None = None, progress: Progress | None = None, **overrides: Any) -> HpoResult:
    """Run (or continue, or join) a study to `options.trials` finished trials; returns its summary.

    `run_hpo(trials=12, steps=60)`; see HpoOptions. Raises HpoInterrupted (a KeyboardInterrupt) on
    Ctrl-C after failing and re-enqueueing the trials that were running.
    """
    import optuna

    from perfscale.hpo.data import prepare_data
    from perfscale.hpo.feasibility import FeasibilityFilter, resolve_capacity
    from perfscale.hpo.launch import Processes
    from perfscale.hpo.storage import open_storage, parse_storage
    from perfscale.specs import load_model_spec
    from perfscale.specs.detect import detect_local

    options = replace(options or HpoOptions(), **overrides)
    say = progress or (lambda _m: None)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Quiet: heartbeats are used with ask/tell here on purpose (this process beats for its trial processes).
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning, module="optuna")
    space = options.space or SearchSpace.default()
    t0 = time.perf_counter()
    spec = load_model_spec(options.model)
    capacity, topology = resolve_capacity(options.device_memory_gib, options.hardware)
    sspec = parse_storage(options.storage)
    with tempfile.TemporaryDirectory(prefix="perfscale-hpo-") as tmp:
        data = prepare_data(spec, options.seq, tmp, options.data, text_field=options.text_field,
                            eval_fraction=options.eval_fraction, max_eval_blocks=options.max_eval_blocks, seed=options.seed or 0)
        storage = open_storage(sspec, heartbeat=True)
        lock = StudyLock(sspec.lock_path)
        name = options.study_name or default_study_name(options, space, data)
        study, created = open_study(options, space, data, storage, lock, name)
        notes: list[str] = []
        if options.resume and created:
            notes.append(f"--resume: study {name!r} did not exist in {sspec.label}; started it")
        if created and options.baseline:
            defaults = space.defaults_in_space()
            if defaults is not None:
                study.enqueue_trial(defaults, user_attrs={f"{ATTR}_role": "baseline"})
            else:
                notes.append("no baseline trial: the space excludes one of the Trainer defaults (see docs/hpo.md)")
        seed = None if options.seed is None else options.seed + len(study.trials)  # a resumed study draws new points
        study.sampler = make_sampler(options.sampler, seed, options.trials, options.multi_objective)
        study.pruner = make_pruner(options.pruner, options.steps, options.eval_steps)
        if options.multi_objective and options.pruner != "none":
            notes.append("multi-objective: Optuna prunes single-objective studies only, so no trial is pruned early")
        cores = detect_local().cpu.physical_cores or os.cpu_count() or 1
        forkable = _forkable(options.device)
        # Default: on CPU one trial per physical core with one thread each (2 threads per trial on a shared
        # 2-core box lose to OpenMP barriers: 12 default trials took 13.7 min that way and 2.7 min so,
        # benchmarks/LOG.md); on a GPU one trial at a time.
        workers = options.workers or (max(1, min(cores, MAX_DEFAULT_WORKERS)) if forkable else 1)
        options = replace(options, workers=workers)
        ctx = _Context(options=options, space=space, study=study, storage=storage, spec=spec, data=data,
                       filter=FeasibilityFilter(spec, topology, capacity, use_trace=options.use_trace), lock=lock,
                       workdir=Path(tmp), processes=Processes(), say=say,
                       threads=options.threads or max(1, cores // options.workers), heartbeat=sspec.kind == "rdb", notes=notes)
        ctx.storage_label = sspec.label if sspec.kind == "journal" else sspec.url  # what the trial process opens
        from optuna.trial import TrialState

        done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.get_trials(deepcopy=False))
        if options.fork and done < options.trials and forkable:
            from perfscale.hpo.zygote import Launcher

            ctx.launcher = Launcher(options.model, Path(tmp))  # started by the first trial that fits (none: no cost)
        stop_beats = threading.Event()
        beats = threading.Thread(target=_heartbeats, args=(ctx, stop_beats), daemon=True) if ctx.heartbeat else None
        if beats:
            beats.start()
        # The main thread waits on events, not Thread.join: a join interrupted by Ctrl-C can return early
        # afterwards (CPython 3.11), and the trials must be told before the summary.
        dones = [threading.Event() for _ in range(options.workers)]
        workers = [threading.Thread(target=_worker, args=(ctx, i, dones[i]), name=f"perfscale-hpo-worker-{i}", daemon=True)
                   for i in range(options.workers)]
        interrupted = None
        try:
            for w in workers:
                w.start()
            for d in dones:
                while not d.wait(0.5):
                    pass
        except KeyboardInterrupt as exc:
            from perfscale.measure.runner import how_interrupted

            interrupted = how_interrupted(exc)
            ctx.processes.kill_all()
            deadline = time.monotonic() + 30
            for d in dones:
                d.wait(max(0.0, deadline - time.monotonic()))
            _fail_leftovers(ctx, interrupted)
        finally:
            stop_beats.set()
            if ctx.launcher is not None:
                ctx.launcher.close()
        if ctx.error is not None and interrupted is None:
            raise ctx.error
        if ctx.error is not None:
            ctx.notes.append(f"a worker stopped with {type(ctx.error).__name__}: {ctx.error}")
        result = summarize(study, options, space, data, capacity, sspec.label, mine=ctx.mine, notes=ctx.notes,
                           wall_s=time.perf_counter() - t0)
        if ctx.filter.traces:
            result.notes.append(f"{ctx.filter.traces} configuration(s) near the memory limit were checked by trace")
        if options.plots:
            from perfscale.hpo.plots import write_plots

            from perfscale.errors import StoreError

            try:
                result.plots, skipped = write_plots(study, options.plots, options.multi_objective)
                result.notes += [f"plot not drawn: {s}" for s in skipped]
            except StoreError as exc:  # the study is safe in its storage: say so, keep the result
                result.notes.append(f"plots not written: {exc}")
    if interrupted:
        result.interrupted = interrupted
        raise HpoInterrupted(result, interrupted)
    return result


__all__ = ["HpoInterrupted", "HpoOptions", "OBJECTIVES", "PRUNERS", "SAMPLERS", "StudyLock", "fail_dead_trials", "make_pruner",
           "make_sampler", "open_study", "run_hpo", "summarize"]
