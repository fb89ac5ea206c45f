"""perfscale hpo with real trials: the built-in tiny model on the shipped corpus, 2-6 steps each.

- one study (in this process) whose enqueued trials hit every outcome: trained, infeasible (pruned
  before any training, with the reason), out of memory, crashed, killed by SIGKILL (failed and retried
  with the same parameters), and the study still ends at exactly the requested total;
- a hung trial is killed at its time limit (a spawned trial process, no launcher);
- two independent worker processes on one SQLite file, one killed with SIGKILL mid-trial: the other
  fails its trial, retries it and finishes the study; `perfscale hpo --resume` then has nothing to
  add: exactly the requested trials finished, none lost or duplicated (slow);
- the exported hp_space runs in `Trainer.hyperparameter_search(backend="optuna")`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from perfscale.hpo.space import DEFAULTS, SearchSpace, run_config

SMALL = dict(steps=2, eval_steps=1, seq=32, max_eval_blocks=4, threads=1, workers=1)


def _need_gib(batch: int) -> float:
    from perfscale.estimate import estimate
    from perfscale.hpo.feasibility import resolve_capacity
    from perfscale.specs import load_model_spec

    values = dict(DEFAULTS, per_device_train_batch_size=batch, lora=False)
    _, topology = resolve_capacity(None, None)
    return estimate(load_model_spec("perfscale-tiny-llama"), run_config(values, SMALL["seq"]), topology).memory.total_bytes / 2**30


@pytest.mark.slow
def test_every_outcome_is_a_result_and_the_total_is_exact(tmp_path):
    import optuna
    from optuna.trial import TrialState

    from perfscale.hpo.data import prepare_data
    from perfscale.hpo.storage import open_storage, parse_storage
    from perfscale.hpo.study import HpoOptions, StudyLock, default_study_name, open_study, run_hpo
    from perfscale.specs import load_model_spec

    space = SearchSpace.from_dict({"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True},
                                   "per_device_train_batch_size": {"choices": [4, 64]}})
    cap = (_need_gib(4) + _need_gib(64)) / 2  # batch 4 fits, batch 64 does not
    db = str(tmp_path / "hpo.db")
    opts = HpoOptions(space=space, trials=3, storage=db, device_memory_gib=cap, resume=True, plots=str(tmp_path / "study.html"),
                      faults={2: ("oom", 0), 3: ("sigkill", 1), 4: ("crash", 0)}, **SMALL)
    # The study's first trials, enqueued: each one meets another outcome.
    data = prepare_data(load_model_spec(opts.model), opts.seq, tmp_path / "d", max_eval_blocks=opts.max_eval_blocks)
    storage = open_storage(db)
    study, _ = open_study(opts, space, data, storage, StudyLock(parse_storage(db).lock_path), default_study_name(opts, space, data))
    for batch in (4, 64, 4, 4, 4):
        study.enqueue_trial({"learning_rate": 3e-3, "per_device_train_batch_size": batch})

    result = run_hpo(opts)

    by = {t.number: t for t in result.trials}
    assert result.finished == 3  # complete + pruned, infeasible included: exactly the total asked for
    assert by[0].status == "complete" and by[0].values[0] > 0
    assert by[1].status == "infeasible" and by[1].state == "PRUNED" and by[1].wall_s is None  # no training time
    assert by[1].reason.startswith("would not fit: ") and "GiB needed" in by[1].reason and f"{cap:.2f} available" in by[1].reason
    assert by[2].status == "oom" and by[2].state == "FAIL" and "can't allocate memory" in by[2].reason
    assert by[3].status == "killed" and "SIGKILL" in by[3].reason
    assert by[4].status == "failed" and "exit code 3" in by[4].reason
    retry = by[5]  # the killed trial's configuration, retried (RetryHeartbeatStaleTrialCallback's copy)
    assert retry.retry_of == 3 and retry.params == by[3].params and retry.status == "complete"
    assert len(by) == 6 and result.counts["infeasible"] == 1 and result.counts["complete"] == 2
    assert result.best["number"] in (0, 5) and result.best["training_arguments"]["per_device_train_batch_size"] == 4
    stored = optuna.load_study(study_name=result.study_name, storage=storage)
    assert stored.trials[0].intermediate_values.keys() == {1}  # the eval loss the pruner reads, reported by the trial
    assert stored.trials[1].state == TrialState.PRUNED and stored.trials[1].user_attrs["perfscale_memory"]["fits"] is False
    html = Path(result.plots).read_text()
    assert "optimisation history" in html and "plotly" in html


def test_a_hung_trial_is_killed_at_its_limit(tmp_path):
    from perfscale.hpo.launch import Processes, run_trial_process

    t0 = time.perf_counter()
    out = run_trial_process({"fault": "hang", "fault_step": 0}, tmp_path, 3.0, Processes(), "hang")
    assert out.status == "timeout" and "time limit of 3 s" in out.reason
    assert time.perf_counter() - t0 < 30


WORKER = textwrap.dedent("""
    import sys
    from perfscale.hpo import run_hpo
    r = run_hpo(trials=4, steps=6, eval_steps=2, seq=32, max_eval_blocks=4, threads=1, workers=1, storage=sys.argv[1],
                study_name="shared", resume=True, plots=None)
    print(r.finished)
""")


@pytest.mark.slow
def test_two_workers_one_killed_then_resume(tmp_path):
    """Two independent invocations on one SQLite file; one is killed with SIGKILL mid-trial."""
    import optuna

    from cli_helpers import run_json

    db = str(tmp_path / "shared.db")
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, db], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              start_new_session=True) for _ in range(2)]
    victim = procs[0]
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    deadline = time.monotonic() + 240
    killed_trial = None
    while time.monotonic() < deadline and killed_trial is None:
        time.sleep(1)
        try:
            study = optuna.load_study(study_name="shared", storage=f"sqlite:///{db}")
        except KeyError:
            continue
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            owner = t.user_attrs.get("perfscale_owner") or {}
            if owner.get("pid") == victim.pid and t.user_attrs.get("perfscale_run_config"):  # training
                killed_trial = t.number
    assert killed_trial is not None, "the first worker never started a trial"
    os.killpg(victim.pid, signal.SIGKILL)  # the worker, its launcher and its trial
    victim.wait()
    out, err = procs[1].communicate(timeout=400)
    assert procs[1].returncode == 0, err.decode()[-3000:]
    # --resume after the kill: the study is complete, nothing is added, nothing lost or duplicated.
    doc = run_json("hpo", "--trials", "4", "--steps", "6", "--eval-steps", "2", "--seq", "32", "--max-eval-blocks", "4",
                   "--storage", db, "--study-name", "shared", "--resume", "--no-plots", "--out", str(tmp_path / "out"))
    assert doc["finished"] == 4 and doc["counts"]["new_this_run"] == 0
    rows = {t["number"]: t for t in doc["trials"]}
    dead = rows[killed_trial]
    assert dead["state"] == "FAIL" and dead["status"] in ("dead-worker", "killed")
    retries = [t for t in doc["trials"] if t["retry_of"] == killed_trial]
    assert len(retries) == 1 and retries[0]["params"] == dead["params"] and retries[0]["state"] in ("COMPLETE", "PRUNED")
    finished = [t for t in doc["trials"] if t["state"] in ("COMPLETE", "PRUNED")]
    assert len(finished) == 4
    originals = [t["retry_of"] for t in doc["trials"] if t["retry_of"] is not None]
    assert len(originals) == len(set(originals))  # each failed trial retried once, never twice


def test_exported_hp_space_runs_in_trainer_hyperparameter_search(tmp_path):
    """The same space, by hand: Optuna through Trainer.hyperparameter_search (tiny model, 2 trials of 2 steps)."""
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    from perfscale.hpo import hp_space
    from perfscale.hpo.data import prepare_data
    from perfscale.specs import load_model_spec

    spec = load_model_spec("perfscale-tiny-llama")
    data = prepare_data(spec, 32, tmp_path / "d", max_eval_blocks=4)

    class Blocks(torch.utils.data.Dataset):
        def __init__(self, path):
            self.x = torch.from_numpy(np.load(path))

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            return {"input_ids": self.x[i], "labels": self.x[i]}

    def model_init(trial=None):
        torch.manual_seed(0)
        return AutoModelForCausalLM.from_config(spec.config_object())

    space = SearchSpace.from_dict({"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}, "warmup_ratio": {"low": 0.1, "high": 0.2},
                                   "per_device_train_batch_size": {"choices": [2, 4]}})
    args = TrainingArguments(output_dir=str(tmp_path / "o"), max_steps=2, warmup_steps=0.0, eval_strategy="steps", eval_steps=1,
                             save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True, logging_strategy="no")
    trainer = Trainer(model_init=model_init, args=args, train_dataset=Blocks(data.train_path), eval_dataset=Blocks(data.eval_path))
    seen = []

    def hp(trial):
        values = hp_space(space)(trial)
        seen.append(values)
        return values

    best = trainer.hyperparameter_search(backend="optuna", hp_space=hp, n_trials=2, direction="minimize")
    assert len(seen) == 2 and 1e-4 <= float(best.hyperparameters["learning_rate"]) <= 1e-2
    assert set(seen[0]) == {"learning_rate", "warmup_steps", "per_device_train_batch_size"}
    assert trainer.args.warmup_steps == seen[-1]["warmup_steps"] > 0  # a float field: the fraction is kept, not int()-ed
    assert json.dumps(seen)  # plain values
