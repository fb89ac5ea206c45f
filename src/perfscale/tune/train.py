"""`perfscale tune` for training: space -> estimate/prune -> trace-confirm -> successive halving -> proof.

1. The space (train_space.py): the knobs that apply to the workload and the hardware.
2. Estimate every point (< 1 ms each); drop what does not fit with a margin; drop what the estimate
   puts far behind its best (e.g. checkpointing's recomputation when memory is plentiful); rank
   (train_screening.py).
3. Trace the top candidates (fake tensors: exact allocated bytes) to confirm they fit (train_trace.py).
4. Measure on this machine by successive halving (halving.py): short trials for the pool, longer for
   survivors, the Trainer-defaults baseline always in. Each trial is journaled in the bench store as
   it finishes, so `--resume` re-measures nothing that finished (train_measured.py).
5. Prove it: the best change against the baseline, paired: both built in each fresh process and timed
   in alternating steps, the speed-up with its 95% CI (two-level bootstrap over processes and step pairs,
   train_final.py), and a verdict in words: proven, the same within +-X%, or not resolved on this
   machine's noise (with the budget that would resolve 10%).
On hardware you do not have (`--hardware`), steps 4-5 cannot run: the ranking is the estimate's
(train_estimated.py). The options and their defaults are in train_options.py; this file runs the steps.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from perfscale.errors import InvalidConfigError
from perfscale.specs.head_folder import head_folder
from perfscale.tune.result import TrainTuneResult, TrialRecord
from perfscale.tune.train_budget import Clock
from perfscale.tune.train_estimated import estimated_only, nothing_fits
from perfscale.tune.train_measured import TuneState, measured
from perfscale.tune.train_options import (
    COMPILE_BUDGET_S,
    DEFAULT_BUDGET_S,
    DEFAULT_GLOBAL_BATCH,
    DEFAULT_SEQ,
    PROCESSES_BUDGET_S,
    Progress,
    TrainTuneOptions,
)
from perfscale.tune.train_screening import capacity, estimate_all, screen
from perfscale.tune.train_space import baseline_candidate, build_space
from perfscale.tune.train_trace import trace_confirm


def resolve_topology(options: TrainTuneOptions):
    from perfscale.specs import parse_topology
    from perfscale.specs.detect import detect_local

    if options.local:
        return detect_local().topology
    return parse_topology(options.hardware)


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
    cap, cap_source = capacity(topology, options.local)
    baseline = baseline_candidate(space.global_batch, space.data_parallel)
    cands = space.candidates()
    baseline_in_space = baseline in cands
    if not baseline_in_space:  # measured for the comparison, but not a point of the search
        cands.insert(0, baseline)

    # 2. Estimate every point, prune, rank.
    say(f"estimating {len(cands)} configurations")
    estimates = estimate_all(spec, cands, topology, space.seq, cap)
    records = {c: TrialRecord(name=c.name, knobs=c.knobs(), status="estimated", baseline=c == baseline, estimate=estimates[c].to_dict())
               for c in cands}
    kept = screen(cands, estimates, records, baseline, cap, cap_source)
    stage_times: dict[str, float] = {"estimate_s": clock.elapsed()}
    ranked = None if kept is None else kept if baseline_in_space else [c for c in kept if c != baseline]
    if not ranked:
        return nothing_fits(options, spec, topology, space, records, notes, clock, cap)
    model = head_model(options, spec)
    if not options.local:
        return estimated_only(ranked, confirm=partial(trace_confirm, model=model, estimates=estimates), estimates=estimates,
                              options=options, spec=spec, topology=topology, space=space, records=records, notes=notes,
                              clock=clock, baseline=baseline, stage_times=stage_times, capacity=cap)
    state = TuneState(options=options, spec=spec, topology=topology, space=space, records=records, estimates=estimates, notes=notes,
                      clock=clock, baseline=baseline, stage_times=stage_times, capacity=cap, model=model)
    return measured(state, ranked, server=server, progress=say)


def head_model(options: TrainTuneOptions, spec) -> str:
    """What the measured trials build: the model itself, or -- with --task / --num-labels -- the folder holding its
    config with that head (specs/head_folder.py, shared with bench's --task), so that the train scenario trains it."""
    if options.task is None and options.num_labels is None:
        return options.model
    return head_folder(spec)


__all__ = ["DEFAULT_BUDGET_S", "DEFAULT_GLOBAL_BATCH", "DEFAULT_SEQ", "TrainTuneOptions", "head_model", "resolve_topology",
           "tune_training"]
