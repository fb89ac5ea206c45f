"""Optuna's samplers and pruners as `perfscale hpo` names them (--sampler, --pruner): built in the study's
process and, for the pruner, again in each trial process (its `should_prune` runs there)."""

from __future__ import annotations

import warnings

SAMPLERS = ("tpe", "random", "nsga2")
PRUNERS = ("median", "hyperband", "none")


def make_pruner(name: str, steps: int, eval_steps: int | None = None):
    import optuna

    if name == "median":
        # n_startup_trials: the median of fewer than 4 curves is noise. Evaluations are the steps.
        return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=eval_steps or max(1, steps // 3), max_resource=steps, reduction_factor=3)
    return optuna.pruners.NopPruner()


def make_sampler(name: str, seed: int | None, trials: int, multi: bool):
    import optuna

    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(50, trials // 3)))
    # TPE: random startup for a third of the study (at least 3, Optuna's default 10 at most), then the
    # model; multivariate (joint) with constant liar for trials running in parallel.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(3, min(10, trials // 3)), multivariate=True,
                                          constant_liar=True)


__all__ = ["PRUNERS", "SAMPLERS", "make_pruner", "make_sampler"]
