"""A study as perfscale reports it: every trial's outcome (complete, pruned, infeasible, failed and
why), the best trial or Pareto front with its TrainingArguments, and the Trainer-defaults baseline."""

from __future__ import annotations

from typing import Any

from perfscale.hpo.recovery import ATTR
from perfscale.hpo.result import HpoResult, TrialRow
from perfscale.hpo.space import SearchSpace, run_config, training_arguments


def _status(t) -> str:
    from optuna.trial import TrialState

    s = t.user_attrs.get(f"{ATTR}_status")
    if t.state == TrialState.COMPLETE:
        return "complete"
    if t.state == TrialState.PRUNED:
        return "infeasible" if s == "infeasible" else "pruned"
    if t.state == TrialState.RUNNING:
        return "running"
    if t.state == TrialState.WAITING:
        return "waiting"
    if s in (None, "running"):
        return "dead-worker"  # failed by the heartbeat check: its worker stopped beating
    return s


def summarize(study, options, space: SearchSpace, data, capacity, storage: str, *, mine=frozenset(),
              notes=(), wall_s: float = 0.0) -> HpoResult:
    from optuna.trial import TrialState

    rows: list[TrialRow] = []
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        status = _status(t)
        counts[status] = counts.get(status, 0) + 1
        ua = t.user_attrs
        mem = ua.get(f"{ATTR}_memory") or {}
        reason = ua.get(f"{ATTR}_reason")
        if status in ("waiting", "running"):
            reason = None  # a retry's copy carries its original's attributes: its own outcome is to come
        if status == "dead-worker" and not reason:
            reason = "no heartbeat within the grace period: its worker died (killed?); failed and retried"
        rows.append(TrialRow(
            number=t.number, state=t.state.name, status=status, values=list(t.values) if t.values else None,
            params=dict(t.params), reason=reason, wall_s=ua.get(f"{ATTR}_wall_s"), steps=ua.get(f"{ATTR}_steps"),
            tokens_per_s=ua.get(f"{ATTR}_tokens_per_s"), needed_bytes=mem.get("needed_bytes"), feasibility=mem.get("method"),
            retry_of=t.system_attrs.get("failed_trial"), baseline=ua.get(f"{ATTR}_role") == "baseline", this_run=t.number in mine,
        ))
    counts["retried"] = sum(1 for r in rows if r.retry_of is not None)
    counts["new_this_run"] = len(mine)
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    best = None
    pareto: list[dict[str, Any]] = []

    def doc(t) -> dict[str, Any]:
        values = space.suggest_fixed(t.params)
        return {"number": t.number, "values": list(t.values), "params": dict(t.params), "values_used": values,
                "training_arguments": training_arguments(values), "run_config": run_config(values, options.seq).to_dict()}

    if complete:
        if options.multi_objective:
            pareto = [doc(t) for t in study.best_trials]
            best = min(pareto, key=lambda d: d["values"][0])
        else:
            best = doc(study.best_trial)
    base = next((t for t in study.get_trials(deepcopy=False) if t.user_attrs.get(f"{ATTR}_role") == "baseline"
                 and t.state in (TrialState.COMPLETE, TrialState.PRUNED)), None)
    baseline = None
    improvement = None
    if base is not None:
        baseline = {"number": base.number, "status": _status(base), "eval_loss": base.values[0] if base.values else None,
                    "params": dict(base.params)}
        if best and baseline["eval_loss"]:
            improvement = (baseline["eval_loss"] - best["values"][0]) / baseline["eval_loss"]
    return HpoResult(
        study_name=study.study_name, storage=storage, model=options.model, directions=options.directions,
        objective={"steps": options.steps, "eval_steps": options.eval_steps, "seq": options.seq, "data": data.to_dict(),
                   "values": ["held-out eval loss"] + (["training tokens/s"] if options.multi_objective else []),
                   "sampler": options.sampler, "pruner": options.pruner},
        space=space.to_dict(), requested_trials=options.trials, counts=counts, best=best, pareto=pareto, baseline=baseline,
        improvement=improvement, capacity={"bytes": capacity.bytes, "source": capacity.source},
        trials=rows, notes=list(notes), timing={"wall_s": wall_s},
    )


__all__ = ["summarize"]
