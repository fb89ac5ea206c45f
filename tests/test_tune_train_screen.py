"""The tune trial worker: many trials per process, faults become results, it dies with its parent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from perfscale.config.run_config import RunConfig
from perfscale.measure.bench_config import BenchConfig, MeasureOptions
from perfscale.measure.stats import StopRule
from perfscale.specs.workload import TrainWorkload
from perfscale.tune.screen import TrialServer

from tiny_configs import tiny_config

FAST = MeasureOptions(stop=StopRule(min_iters=2, min_time=0.0, max_time=0.5), warmup=1, gate=False, profile_memory=False, time_limit=60)


def _model(tmp_path) -> str:
    d = tmp_path / "tiny-llama"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text(json.dumps(tiny_config("llama")))
    return str(d)


def _config(model: str, fault: str | None = None, **run) -> BenchConfig:
    return BenchConfig(scenario="train", model=model, run=RunConfig(workload=TrainWorkload(batch=2, seq=16), **run),
                       extra={"tune_fault": fault} if fault else {})


@pytest.mark.slow
def test_trials_share_a_worker_and_faults_become_results(tmp_path):
    model = _model(tmp_path)
    with TrialServer(tmp_path / "work") as server:
        ok = server.measure(_config(model), FAST, group="g")
        assert ok.status == "ok", (ok.reason, ok.stderr_tail)
        assert len(ok.samples) >= 2 and ok.tokens_per_iter == 32 and ok.group == "g"
        assert ok.environment["packages"]["torch"] and any("shared worker" in n for n in ok.notes)
        assert server.starts == 1 and server.startup_s > 0
        threads = server.measure(BenchConfig(scenario="train", model=model, run=RunConfig(workload=TrainWorkload(2, 16), torch_num_threads=1)), FAST)
        assert threads.environment["threads"]["torch_intra_op"] == 1
        again = server.measure(_config(model), FAST)
        assert again.environment["threads"]["torch_intra_op"] == ok.environment["threads"]["torch_intra_op"]  # reset between trials
        assert server.starts == 1  # three trials, one process

        traced = server.trace(model, RunConfig(workload=TrainWorkload(2, 16)).to_dict(), "cpu")
        assert traced["status"] == "ok" and traced["trace"]["peak_bytes"] > 0

        oom = server.measure(_config(model, "oom"), FAST)
        assert oom.status == "oom"
        err = server.measure(_config(model, "error"), FAST)
        assert err.status == "failed" and "on purpose" in err.reason
        assert server.starts == 1  # caught inside the worker: it lives on

        crash = server.measure(_config(model, "crash"), FAST)
        assert crash.status == "failed" and "exit code 3" in crash.reason and "on purpose" in crash.stderr_tail
        hang = server.measure(_config(model, "hang"), MeasureOptions(stop=FAST.stop, warmup=1, gate=False, time_limit=3))
        assert hang.status == "timeout" and "time limit of 3 s" in hang.reason
        assert server.starts == 2  # the hang ran in a new worker, started after the crash

        # The final's paired run: both configurations in one process, steps alternating, samples aligned pair by pair.
        pairs = StopRule(min_iters=3, min_time=0.0, target_rel_ci=0.01, max_time=0.5)
        a, b = server.measure_pair(_config(model), _config(model, precision="bf16-mixed"), pairs, 120, repeat=1)
        assert a.status == b.status == "ok", (a.reason, a.stderr_tail)
        assert len(a.samples) == len(b.samples) >= 3 and a.repeat == b.repeat == 1 and a.stop_reason == b.stop_reason
        assert a.config.run.precision == "fp32" and b.config.run.precision == "bf16-mixed"
        assert any("alternating steps" in n for n in a.notes) and b.setup["paired_with"] == a.config.display
        broken_a, broken_b = server.measure_pair(_config(model), _config(model, "error"), pairs, 120)
        assert broken_a.status == broken_b.status == "failed" and "on purpose" in broken_b.reason


_PARENT = """
import sys, time
from pathlib import Path
from perfscale.tune.screen import TrialServer
s = TrialServer(Path(sys.argv[1]))
s._start()
print(s._proc.pid, flush=True)
time.sleep(600)
"""


def test_worker_dies_with_its_parent(tmp_path):
    """kill -9 of tune must not leave a worker that goes on writing trials behind a resumed tune."""
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        worker = int(parent.stdout.readline())
        os.kill(worker, 0)  # alive
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                os.kill(worker, 0)
            except ProcessLookupError:
                break
            if Path(f"/proc/{worker}/status").read_text().find("State:\tZ") >= 0:
                break  # a zombie waiting for init: dead
            time.sleep(0.1)
        else:
            os.kill(worker, signal.SIGKILL)  # clean up what this test started
            pytest.fail("the trial worker outlived its killed parent")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
