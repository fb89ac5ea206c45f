"""Many CPUs in `perfscale tune` (issue 18): processes x threads per process on this CPU, measured through
the torchrun path bench has (DDP on gloo), compared like with like (every rank's tokens per second), and
emitted as measured (OMP_NUM_THREADS, --nproc_per_node); and `--task` trains the head it names (issue 14)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace

import pytest

from perfscale.config.run_config import RunConfig
from perfscale.measure.result import BenchResult
from perfscale.measure.stats import StopRule
from perfscale.tune.halving import design_pool, vary
from perfscale.tune.train_final import launch_of, unpaired_speedup
from perfscale.tune.train_space import Candidate, TrainSpace, baseline_candidate, build_space, process_counts

from cli_helpers import assert_user_error, run_cli
from tiny_configs import tiny_model_folder

SCRIPT = Path(__file__).with_name("dist_train_script.py")
TINY_STOPS = (StopRule(min_iters=2, min_time=0.0, target_rel_ci=0.2, max_time=0.3),)
TINY_FINAL = StopRule(min_iters=6, min_time=0.0, target_rel_ci=0.1, max_time=1.0)


@pytest.fixture()
def tiny(tmp_path):
    return tiny_model_folder(tmp_path)


# ----- the space -----
def test_process_counts_are_the_divisors_of_the_cores_that_divide_the_batch():
    assert process_counts(2, 8) == (1, 2)
    assert process_counts(8, 8) == (1, 2, 4)  # capped at MAX_PROCESSES
    assert process_counts(6, 4) == (1, 2)  # 3 does not divide the global batch, 6 is over the cap
    assert process_counts(1, 8) == (1,)


def test_space_holds_both_shapes_only_when_asked_and_keeps_the_global_batch():
    from perfscale.specs.detect import detect_local

    hw = detect_local().topology.hardware
    plain = build_space(hw, 1, global_batch=4, seq=16, local=True, cpu_cores=2)
    assert plain.processes == (1,) and any("--processes" in n for n in plain.notes)
    space = build_space(hw, 1, global_batch=4, seq=16, local=True, cpu_cores=2, include_processes=True)
    assert space.processes == (1, 2)
    cands = space.candidates()
    ddp = [c for c in cands if c.processes == 2]
    assert ddp and all(c.threads is None and not c.compile for c in ddp)  # 2 ranks x (2 cores / 2) threads
    assert all(c.micro_batch * c.grad_accum * c.processes == 4 for c in cands)
    assert len(set(cands)) == len(cands)


def test_vary_processes_keeps_the_global_batch_and_shares_the_cores():
    base = baseline_candidate(4)  # mb4x1, one process
    two = vary(base, "processes", 2)
    assert (two.processes, two.micro_batch, two.grad_accum, two.threads) == (2, 2, 1, None)
    with pytest.raises(ValueError):
        vary(two, "threads", 1)  # threads per rank follow the process count
    space = TrainSpace(global_batch=4, seq=16, data_parallel=1, micro_batches=(2, 4), precisions=("fp32",),
                       optimizers=("adamw_torch_fused",), checkpointing=(False,), attns=("sdpa",), threads=(None, 1),
                       processes=(1, 2))
    ranked = sorted(space.candidates(), key=lambda c: -c.micro_batch)  # as tune ranks ties: larger micro-batches first
    center, pool, role = design_pool(ranked, base, space.knob_values(), 10)
    assert center == base and two in pool and role[two] == ("processes", 2)


def test_a_candidate_is_one_configuration_its_knobs_reach_runconfig_and_benchconfig():
    """Candidate is not a copy of RunConfig kept in sync by hand: every knob it has is a RunConfig field
    (under its name there) or a measurement matter that BenchConfig carries; a new knob fails here."""
    run_names = {f.name for f in fields(RunConfig)}
    aliases = {"micro_batch": "workload", "grad_accum": "workload", "threads": "torch_num_threads",
               "workers": "dataloader_num_workers", "processes": None}
    for f in fields(Candidate):
        assert aliases.get(f.name, f.name) in run_names or f.name == "processes", f.name
    c = Candidate(micro_batch=2, grad_accum=1, processes=2)
    cfg = c.bench_config("perfscale-tiny-llama", 16)
    assert (cfg.nproc, cfg.strategy, cfg.run.workload.batch) == (2, "ddp", 2)  # the workload is per rank
    one = Candidate(micro_batch=4, grad_accum=1).bench_config("perfscale-tiny-llama", 16)
    assert (one.nproc, one.strategy) == (1, "none")
    assert "ddp2" in c.name


def _result(samples, tokens, config=None, **extra):
    from perfscale.measure.bench_config import BenchConfig

    return BenchResult(config=config or BenchConfig(), status="ok", samples=list(samples), tokens_per_iter=tokens, **extra)


def test_unpaired_final_compares_global_tokens_per_second():
    """A 2-rank challenger whose slowest rank takes 1.5x the step for 2x the tokens is 1.33x the speed."""
    base = [_result([1.0, 1.01, 0.99, 1.0, 1.02, 0.98, 1.0], 64) for _ in range(2)]
    chal = [_result([1.5, 1.51, 1.49, 1.5, 1.52, 1.48, 1.5], 128) for _ in range(2)]
    sp = unpaired_speedup(base, chal, "mb2x1 ddp2", 10.0, 60.0)
    assert sp["method"].startswith("unpaired")
    assert sp["ratio"] == pytest.approx(4 / 3, rel=0.01) and sp["ci_low"] <= sp["ratio"] <= sp["ci_high"]
    assert sp["significant"] and "use it" in sp["verdict"]
    few = unpaired_speedup([_result([1.0, 1.0], 64)], [_result([1.5, 1.5], 128)], "x", 1.0, 60.0)
    assert few["significant"] is False and few["verdict"].startswith("not resolved")


def test_launch_reads_what_the_runs_ran_with():
    c = Candidate(micro_batch=2, grad_accum=1, processes=2)
    r = _result([1.0], 128, distributed={"threads_per_rank": 1, "world_size": 2})
    assert launch_of(c, [r]) == {"processes": 2, "threads_per_rank": 1, "strategy": "ddp", "from": "measured runs"}
    one = _result([1.0], 64, environment={"threads": {"torch_intra_op": 2}})
    assert launch_of(Candidate(micro_batch=4, grad_accum=1), [one])["threads_per_rank"] == 2


def _emit_torchrun(winner_doc, tmp_path, model="perfscale-tiny-llama") -> str:
    from perfscale.export.tune_winner import emit_winner
    from perfscale.tune.train import TrainTuneOptions

    result = SimpleNamespace(winner=winner_doc, measured_here=True)
    written = emit_winner(result, ("torchrun", "accelerate"), tmp_path / "out", TrainTuneOptions(model=model))
    by = {w["format"]: w["path"] for w in written}
    import yaml

    accel = yaml.safe_load(Path(by["accelerate"]).read_text())
    line = Path(by["torchrun"]).read_text().strip()
    return line, accel


def test_emitted_command_sets_what_was_measured(tmp_path):
    run = Candidate(micro_batch=2, grad_accum=1, processes=2).run_config(16).to_dict()
    line, accel = _emit_torchrun({"run_config": run, "launch": {"processes": 2, "threads_per_rank": 1}}, tmp_path)
    assert line.startswith("OMP_NUM_THREADS=1 torchrun --nnodes=1 --nproc_per_node=2 ")
    assert accel["num_processes"] == 2 and accel["distributed_type"] == "MULTI_CPU"
    run1 = Candidate(micro_batch=4, grad_accum=1).run_config(16).to_dict()
    line1, accel1 = _emit_torchrun({"run_config": run1, "launch": {"processes": 1, "threads_per_rank": 2}}, tmp_path / "one")
    assert line1.startswith("OMP_NUM_THREADS=2 torchrun --nnodes=1 --nproc_per_node=1 ") and accel1["num_processes"] == 1


# ----- end to end: measured, emitted, launched -----
def _launch(line: str, tmp_path) -> dict:
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = os.environ | {"HF_HUB_OFFLINE": "1", "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
                        "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    command = line.replace(" train.py", f" {shlex.quote(str(SCRIPT))}") + " --strategy ddp --steps 6"
    proc = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=400)
    assert proc.returncode == 0, (command, proc.stderr[-3000:])
    return next(json.loads(t) for t in proc.stdout.splitlines() if t.startswith("{"))


@pytest.mark.slow
def test_tune_measures_processes_x_threads_and_the_emitted_torchrun_trains(tiny, tmp_path):
    from perfscale.export.tune_winner import emit_winner
    from perfscale.tune.train import TrainTuneOptions, tune_training

    space = TrainSpace(global_batch=4, seq=16, data_parallel=1, micro_batches=(2, 4), precisions=("fp32",),
                       optimizers=("adamw_torch_fused",), checkpointing=(False,), attns=("sdpa",), threads=(None, 1),
                       processes=(1, 2))
    options = TrainTuneOptions(model=tiny, seq=16, global_batch=4, store=str(tmp_path / "s.sqlite"), rung_stops=TINY_STOPS,
                               final_stop=TINY_FINAL, budget_seconds=150, repeats=1, space=space, trace_top=0)
    r = tune_training(options)
    doc = json.loads(json.dumps(r.to_dict()))
    measured = {t["name"]: t for t in doc["trials"] if any(g["status"] == "ok" for g in t["rungs"])}
    shapes = {(t["knobs"]["processes"], t["knobs"]["threads"]) for t in measured.values()}
    assert (1, None) in shapes and (2, None) in shapes, doc["trials"]  # 1 x 2 threads and 2 ranks x 1 thread
    ddp = next(t for t in measured.values() if t["knobs"]["processes"] == 2)
    one = next(t for t in measured.values() if t["baseline"])
    # like with like: both rates are global tokens per second (the 2-rank trial counts both ranks' tokens)
    assert ddp["rungs"][0]["tokens_per_s"] > 0 and one["rungs"][0]["tokens_per_s"] > 0
    w = doc["winner"]
    launch = w["launch"]
    assert launch["processes"] == w["knobs"]["processes"] and launch["threads_per_rank"]
    written = emit_winner(r, ("torchrun",), tmp_path / "emitted", options)
    line = Path(written[0]["path"]).read_text().strip()
    assert line.startswith(f"OMP_NUM_THREADS={launch['threads_per_rank']} torchrun --nnodes=1 "
                           f"--nproc_per_node={launch['processes']} "), (line, launch)
    # The 2-process shape, emitted as the winner would be (forced when the 1-process shape won), trains.
    run = Candidate(micro_batch=2, grad_accum=1, processes=2).run_config(16).to_dict()
    forced = SimpleNamespace(winner={"run_config": run, "launch": {"processes": 2, "threads_per_rank": 1}}, measured_here=True)
    two = Path(emit_winner(forced, ("torchrun",), tmp_path / "forced", options)[0]["path"]).read_text().strip()
    assert two.startswith("OMP_NUM_THREADS=1 torchrun --nnodes=1 --nproc_per_node=2 ")
    ran = _launch(two, tmp_path)
    assert ran["world_size"] == 2 and ran["omp"] == "1" and ran["threads"] == 1
    assert ran["losses"][-1] < ran["losses"][0], ran["losses"]


# ----- --task -----
def test_task_trains_the_head_it_names(tiny, tmp_path):
    """`--task sequence-classification` on a causal-LM config: the measured trials build and train
    LlamaForSequenceClassification (the folder they build from names it), and its loss is finite."""
    from perfscale.measure.bench_config import MeasureOptions
    from perfscale.measure.runner import measure
    from perfscale.specs import load_model_spec
    from perfscale.tune.train import TrainTuneOptions, head_model

    options = TrainTuneOptions(model=tiny, seq=16, global_batch=4, task="sequence-classification", num_labels=3)
    folder = head_model(options, load_model_spec(tiny, task="sequence-classification", num_labels=3))
    assert folder == head_model(options, load_model_spec(tiny, task="sequence-classification", num_labels=3))  # stable: --resume
    config = json.loads((Path(folder) / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"] and config["num_labels"] == 3
    assert load_model_spec(folder).task == "sequence-classification"
    bench = Candidate(micro_batch=4, grad_accum=1).bench_config(folder, 16)
    result = measure(bench, MeasureOptions(stop=StopRule(min_iters=2, min_time=0.0, max_time=1.0), warmup=1, gate=False))
    assert result.ok, result.reason
    assert result.samples and result.tokens_per_iter == 64


def test_task_a_family_lacks_is_a_user_error(tiny):
    r = run_cli("tune", "--model", tiny, "--task", "multiple-choice-nonsense", "--budget-seconds", "5")
    assert_user_error(r, "multiple-choice-nonsense")


def test_final_of_a_multi_process_challenger_is_unpaired_and_interleaved():
    """A 2-rank challenger cannot share a process with the baseline: each repeat launches both, the order
    alternating (B A, A B), and the verdict rests on the unpaired ratio of global tokens per second."""
    import numpy as np

    from perfscale.tune.halving import Outcome
    from perfscale.tune.train_final import final_compare

    base, two = baseline_candidate(4), Candidate(micro_batch=2, grad_accum=1, processes=2)
    rng = np.random.default_rng(0)
    order = []

    def run_apart(config, rep):
        order.append((rep, config.nproc))
        step = 1.0 if config.nproc == 1 else 1.6  # twice the tokens in 1.6x the time: 1.25x the speed
        return _result(step * (1 + 0.01 * rng.standard_normal(12)), 64 * config.nproc, config=config)

    def run_pair(*_a):
        raise AssertionError("a multi-process challenger is never paired in one process")

    class Store:
        kept: list = []

        def keep(self, result):
            self.kept.append(result)

    ranking = [Outcome(two, 0, 125.0, "ok"), Outcome(base, 0, 100.0, "ok")]
    fc = final_compare(ranking, base, "perfscale-tiny-llama", 16, 2, Store(), "g", False, run_pair, lambda _m: None,
                       run_apart=run_apart)
    assert order == [(0, 2), (0, 1), (1, 1), (1, 2)]
    assert fc.speedup["method"].startswith("unpaired") and fc.speedup["ratio"] == pytest.approx(1.25, rel=0.02)
    assert fc.speedup["significant"] and fc.winner == two
