"""Hyperparameter search with Optuna over the Trainer: feasibility-filtered, one fresh process per
trial, resumable from its storage, shared by any number of workers (`perfscale hpo`, docs/hpo.md)."""

from perfscale.hpo.result import HpoResult, TrialRow
from perfscale.hpo.space import SearchSpace, hp_space, load_space, training_arguments
from perfscale.hpo.study import HpoInterrupted, HpoOptions, run_hpo

__all__ = ["HpoInterrupted", "HpoOptions", "HpoResult", "SearchSpace", "TrialRow", "hp_space", "load_space", "run_hpo",
           "training_arguments"]
