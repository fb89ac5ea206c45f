"""perfscale hpo without trial processes: the space (file, flags, hp_space), the feasibility filter,
storages that cannot be opened, data too small, one name for two studies, dead workers' trials."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time

import pytest

from perfscale.errors import PerfscaleError, StoreError
from perfscale.hpo.data import prepare_data
from perfscale.hpo.feasibility import Capacity, FeasibilityFilter
from perfscale.hpo.space import SearchSpace, hp_space, load_space, parse_range_flag, run_config, training_arguments
from perfscale.hpo.storage import open_storage, parse_storage
from perfscale.hpo.study import HpoOptions, StudyLock, fail_dead_trials, open_study
from perfscale.specs import load_model_spec, parse_topology


# ----- the space
@pytest.mark.parametrize("text, suffix, fragments", [
    ("", ".yaml", ["is empty"]),
    ("   \n", ".json", ["is empty"]),
    ("learning_rate: {low: 1", ".yaml", ["not valid YAML"]),
    ("{\"learning_rate\": ", ".json", ["not valid JSON"]),
    ("- 1\n- 2\n", ".yaml", ["must be a mapping"]),
    ("learning_rate: {low: 1.0e-2, high: 1.0e-5}", ".yaml", ["low 0.01 > high 1e-05", "swap"]),
    ("learning_rat: {low: 1.0e-5, high: 1.0e-2}", ".yaml", ["learning_rat", "did you mean learning_rate"]),
    ("lora_r: {choices: [4, 8]}", ".yaml", ["apply only with LoRA on", "lora: true"]),
    ("lr_scheduler_type: {choices: [linear, warp]}", ".yaml", ["'warp' is not one of", "cosine"]),
    ("per_device_train_batch_size: {low: 0, high: 8}", ".yaml", ["outside 1..4096"]),
    ("weight_decay: {low: 0, high: 1.0e-2, log: true}", ".yaml", ["log range needs low > 0"]),
    ("precision: fp32", ".yaml", ["fixes every parameter"]),
])
def test_bad_space_files_say_what_is_wrong(tmp_path, text, suffix, fragments):
    path = tmp_path / f"space{suffix}"
    path.write_text(text)
    with pytest.raises(PerfscaleError) as err:
        load_space(path)
    for fragment in fragments:
        assert fragment in str(err.value), str(err.value)


def test_space_file_and_flags(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("learning_rate: {low: 1.0e-5, high: 1.0e-2, log: true}\nlora: {choices: [false, true]}\nlora_r: {choices: [4, 8]}\n")
    space = load_space(path)
    assert [p.name for p in space.params] == ["learning_rate", "lora", "lora_r"]
    flagged = space.with_params([parse_range_flag("per_device_train_batch_size", "4,8", "--batch"),
                                 parse_range_flag("learning_rate", "1e-4:1e-3:log", "--lr")])
    assert flagged.get("learning_rate").low == 1e-4 and flagged.get("learning_rate").log
    assert flagged.get("per_device_train_batch_size").choices == (4, 8)
    assert flagged.fingerprint() != space.fingerprint()
    with pytest.raises(PerfscaleError, match="--lr"):
        parse_range_flag("learning_rate", "1e-2:1e-5", "--lr")


def test_hp_space_and_conditional_lora_with_a_real_study():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    space = SearchSpace.from_dict({"learning_rate": {"low": 1e-5, "high": 1e-2, "log": True}, "warmup_ratio": {"low": 0.0, "high": 0.2},
                                   "precision": {"choices": ["fp32", "bf16-mixed"]}, "checkpointing": {"choices": [False, True]},
                                   "lora": {"choices": [False, True]}, "lora_r": {"choices": [4, 8]}})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    fn = hp_space(space)
    seen_lora = set()
    for _ in range(12):
        trial = study.ask()
        args = fn(trial)
        # TrainingArguments names only (Trainer.hyperparameter_search setattr()s them on the args)
        assert set(args) == {"learning_rate", "warmup_steps", "bf16", "fp16", "activation_checkpointing"}
        assert 1e-5 <= args["learning_rate"] <= 1e-2 and 0.0 <= args["warmup_steps"] <= 0.2
        assert args["bf16"] == (trial.params["precision"] == "bf16-mixed")
        assert ("lora_r" in trial.params) == trial.params["lora"]  # rank sampled only where LoRA is on
        seen_lora.add(trial.params["lora"])
        study.tell(trial, 1.0)
    assert seen_lora == {False, True}
    full = training_arguments(space.suggest_fixed(study.trials[0].params))
    assert full["per_device_train_batch_size"] == 8 and full["optim"] == "adamw_torch_fused"  # defaults where not searched


def test_defaults_are_the_baseline_only_inside_the_space():
    assert SearchSpace.default().defaults_in_space()["learning_rate"] == 5e-5
    narrow = SearchSpace.from_dict({"learning_rate": {"low": 1e-4, "high": 1e-2}})
    assert narrow.defaults_in_space() is None


# ----- feasibility
def test_feasibility_filter_prunes_what_cannot_fit_and_traces_near_the_limit():
    from perfscale.specs import spec_from_config
    from tiny_configs import tiny_config

    spec = spec_from_config(tiny_config("llama"), "llama")  # a toy llama: its trace takes a fraction of a second
    topo = parse_topology("cpu")
    values = dict(SearchSpace.default().suggest_fixed({"learning_rate": 1e-3, "warmup_ratio": 0.0, "weight_decay": 0.0,
                                                       "lr_scheduler_type": "linear", "per_device_train_batch_size": 4,
                                                       "gradient_accumulation_steps": 1}))
    small, big = run_config(values, 64), run_config(values | {"per_device_train_batch_size": 64}, 64)
    probe = FeasibilityFilter(spec, topo, Capacity(2**40, "test", "cpu"), use_trace=False)
    need_small, need_big = probe.check(small).needed_bytes, probe.check(big).needed_bytes
    assert need_big > 2 * need_small
    cap = (need_small + need_big) // 2
    filt = FeasibilityFilter(spec, topo, Capacity(cap, "--device-memory-gib", "cpu"))
    ok, no = filt.check(small), filt.check(big)
    assert ok.fits and ok.method == "estimate"
    assert not no.fits and no.reason.startswith(f"would not fit: {need_big / 2**30:.2f} GiB needed, {cap / 2**30:.2f} available")
    assert filt.traces == 0  # both far from the limit: the estimate decided
    near = FeasibilityFilter(spec, topo, Capacity(int(need_small * 1.02), "test", "cpu"))
    res = near.check(small)
    assert res.method == "trace" and near.traces == 1 and res.trace_bytes is not None
    assert res.fits == (res.trace_bytes <= int(need_small * 1.02))


# ----- storage and data
def test_storages_that_cannot_be_opened_are_refused_untouched(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        open_storage(str(tmp_path / "missing" / "s.db"))
    with pytest.raises(StoreError, match="is a folder"):
        open_storage(str(tmp_path))
    text = tmp_path / "notes.db"
    text.write_text("not a database at all " * 100)
    with pytest.raises(StoreError, match="not a SQLite database"):
        open_storage(str(text))
    other = tmp_path / "bench.sqlite"
    con = sqlite3.connect(other)
    con.execute("create table runs (id integer)")
    con.commit()
    con.close()
    before = other.read_bytes()
    with pytest.raises(StoreError, match="something else"):
        open_storage(str(other))
    assert other.read_bytes() == before
    with pytest.raises(StoreError, match="Cannot open --storage"):
        open_storage("nosuchdialect://user@host/db")
    assert parse_storage("journal:" + str(tmp_path / "j.log")).kind == "journal"


def test_data_too_small_for_the_split(tmp_path):
    spec = load_model_spec("perfscale-tiny-llama")
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("a few words\nand a few more\n")
    with pytest.raises(PerfscaleError, match="too small for the split"):
        prepare_data(spec, 64, tmp_path / "w", str(tiny))
    bad = tmp_path / "d.jsonl"
    bad.write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(PerfscaleError, match="no string field 'text'"):
        prepare_data(spec, 64, tmp_path / "w", str(bad))


# ----- one name, two studies; dead workers
def _prepared(tmp_path):
    return prepare_data(load_model_spec("perfscale-tiny-llama"), 32, tmp_path / "data")


def test_one_name_two_spaces_is_refused_and_the_study_is_unchanged(tmp_path):
    data = _prepared(tmp_path)
    url = str(tmp_path / "s.db")
    storage = open_storage(url)
    lock = StudyLock(parse_storage(url).lock_path)
    opts = HpoOptions(storage=url)
    study, created = open_study(opts, SearchSpace.default(), data, storage, lock, "same")
    assert created
    study.enqueue_trial({"learning_rate": 1e-3})
    attrs = dict(study.user_attrs)
    other = SearchSpace.from_dict({"learning_rate": {"low": 1e-4, "high": 1e-1, "log": True}})
    with pytest.raises(PerfscaleError, match="different setup") as err:
        open_study(opts, other, data, storage, lock, "same")
    assert "Nothing was changed" in str(err.value)
    with pytest.raises(PerfscaleError, match="--resume"):  # same space, has trials, no --resume
        open_study(opts, SearchSpace.default(), data, storage, lock, "same")
    import optuna

    again = optuna.load_study(study_name="same", storage=storage)
    assert dict(again.user_attrs) == attrs and len(again.trials) == 1
    assert open_study(HpoOptions(storage=url, resume=True), SearchSpace.default(), data, storage, lock, "same")[1] is False


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed", "ignore::optuna.exceptions.ExperimentalWarning")
def test_dead_workers_trials_are_failed_and_retried(tmp_path):
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    url = f"sqlite:///{tmp_path / 'h.db'}"
    study = optuna.create_study(study_name="s", storage=open_storage(url))
    # a trial owned by a perfscale process on this machine that is gone
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    t = study.ask()
    t.suggest_float("learning_rate", 1e-5, 1e-2, log=True)
    t.set_user_attr("perfscale_owner", {"host": os.uname().nodename, "pid": dead.pid, "started": time.time() - 5})
    # a trial whose heartbeat went stale (its worker on another machine died): Optuna's heartbeat check
    from optuna.storages import RDBStorage

    from perfscale.hpo.storage import retry_callback

    beat = RDBStorage(url, heartbeat_interval=1, grace_period=1, heartbeat_stale_trial_callback=retry_callback())
    stale_study = optuna.load_study(study_name="s", storage=beat)
    s = stale_study.ask()
    s.suggest_float("learning_rate", 1e-5, 1e-2, log=True)
    s.set_user_attr("perfscale_owner", {"host": "another-machine", "pid": 1, "started": 0})
    beat.record_heartbeat(s._trial_id)
    time.sleep(2.5)
    assert fail_dead_trials(stale_study) == 2
    trials = stale_study.get_trials()
    assert [x.state for x in trials[:2]] == [TrialState.FAIL, TrialState.FAIL]
    retries = [x for x in trials if x.state == TrialState.WAITING]
    assert sorted(x.system_attrs["failed_trial"] for x in retries) == [0, 1]
    assert {x.params["learning_rate"] for x in retries} == {trials[0].params["learning_rate"], trials[1].params["learning_rate"]}
    assert fail_dead_trials(stale_study) == 0  # nothing twice


def test_journal_storage_holds_a_study_and_its_dead_trials(tmp_path):
    """Optuna's JournalStorage (a file): no heartbeats there, a dead local owner is still failed and retried."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    spec = parse_storage(str(tmp_path / "hpo.journal"))
    assert spec.kind == "journal" and spec.lock_path.endswith(".perfscale-lock")
    data = _prepared(tmp_path)
    storage = open_storage(spec)
    study, created = open_study(HpoOptions(storage=spec.label), SearchSpace.default(), data, storage, StudyLock(spec.lock_path), "j")
    assert created
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    t = study.ask()
    t.suggest_float("learning_rate", 1e-5, 1e-2, log=True)
    t.set_user_attr("perfscale_owner", {"host": os.uname().nodename, "pid": dead.pid, "started": time.time() - 5})
    reopened = optuna.load_study(study_name="j", storage=open_storage(spec.label))
    assert fail_dead_trials(reopened) == 1
    assert [x.state for x in reopened.get_trials()] == [TrialState.FAIL, TrialState.WAITING]


def test_best_trial_files_are_valid_training_arguments(tmp_path):
    """The emitted snippet compiles (no keyword twice) and the JSON holds each tuned value once."""
    from perfscale.cli.hpo import _write_best
    from perfscale.hpo.result import HpoResult

    values = SearchSpace.default().suggest_fixed({"learning_rate": 2e-3, "warmup_ratio": 0.1, "weight_decay": 0.01,
                                                  "lr_scheduler_type": "cosine", "per_device_train_batch_size": 4,
                                                  "gradient_accumulation_steps": 2})
    best = {"number": 3, "values": [2.5], "params": {}, "training_arguments": training_arguments(values),
            "run_config": run_config(values, 64).to_dict()}
    result = HpoResult("s", "x.db", "perfscale-tiny-llama", ["minimize"], {}, {}, 1, {}, best, [], None, None, {})
    written = _write_best(result, HpoOptions(steps=30), tmp_path / "out", ())
    kwargs = json.loads((tmp_path / "out" / "best_training_arguments.json").read_text())
    assert kwargs["learning_rate"] == 2e-3 and kwargs["warmup_steps"] == 0.1 and kwargs["gradient_accumulation_steps"] == 2
    assert kwargs["lr_scheduler_type"] == "cosine" and kwargs["max_steps"] == 30 and kwargs["use_cpu"] is True
    snippet = (tmp_path / "out" / "best_trial.py").read_text()
    compile(snippet, "best_trial.py", "exec")  # a repeated keyword argument would be a SyntaxError
    assert snippet.count("per_device_train_batch_size=") == 1 and "learning_rate=0.002" in snippet
    assert len(written) == 2
