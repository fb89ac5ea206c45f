"""Faults become results: oom (with the size asked), timeout (killed), failed (stderr tail), Ctrl-C keeps
what finished, bad values fail before anything runs. Uses the harness's own `selftest` scenario."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from perfscale.measure.bench_config import BenchConfig, MeasureOptions
from perfscale.measure.compare import compare
from perfscale.measure.runner import measure
from perfscale.measure.stats import StopRule
from perfscale.measure.store import Store
from perfscale.measure.worker import parse_oom

from cli_helpers import assert_user_error, run_cli

FAST = MeasureOptions(stop=StopRule(min_iters=3, min_time=0.1, max_time=1.0), warmup=1, gate=False, profile_memory=False)


def _selftest(**extra) -> BenchConfig:
    return BenchConfig(scenario="selftest", extra=extra)


def test_parse_oom_messages():
    cpu = "RuntimeError: DefaultCPUAllocator: can't allocate memory: you tried to allocate 1152921504606846976 bytes. Error code 12"
    assert parse_oom(cpu) == (True, 1152921504606846976)
    cuda = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity of 79.1 GiB"
    assert parse_oom(cuda) == (True, 20 * 2**30)
    assert parse_oom("ValueError: shapes do not match") == (False, None)


def test_oom_timeout_and_crash_are_results_and_stored(tmp_path):
    with Store(tmp_path / "r.sqlite") as db:
        oom = measure(_selftest(fault="oom"), FAST, store=db)
        assert oom.status == "oom" and oom.oom_bytes == 1 << 60
        assert "can't allocate memory" in oom.reason

        t0 = time.monotonic()
        hang = measure(_selftest(fault="hang"), MeasureOptions(stop=FAST.stop, warmup=1, time_limit=4, gate=False), store=db)
        assert hang.status == "timeout" and "killed" in hang.reason
        assert time.monotonic() - t0 < 30

        crash = measure(_selftest(fault="crash"), FAST, store=db)
        assert crash.status == "failed" and "exit code 3" in crash.reason
        assert "crashing on purpose" in crash.stderr_tail

        err = measure(_selftest(fault="error"), FAST, store=db)
        assert err.status == "failed" and "step failed on purpose" in err.reason
        assert "Traceback" in err.stderr_tail

        assert [r.status for r in db.runs()] == ["failed", "failed", "timeout", "oom"]


def test_ctrl_c_in_compare_keeps_finished_runs(tmp_path):
    store = Store(tmp_path / "r.sqlite")
    seen = []

    def interrupt_after_first(result):
        seen.append(result)
        raise KeyboardInterrupt

    res = compare([_selftest(size=32), _selftest(size=64)], FAST, repeats=2, store=store, on_result=interrupt_after_first)
    assert res.interrupted and len(seen) == 1
    assert store.count() == 1 and store.runs()[0].result.run_id == seen[0].run_id
    assert res.rows[0].runs and not res.rows[1].runs


def test_sigint_to_the_cli_stops_cleanly_and_keeps_finished(tmp_path):
    """A real Ctrl-C (SIGINT) to `perfscale compare`: exit 130, no traceback, finished runs stored, worker killed."""
    slow = tmp_path / "slow.json"
    slow.write_text(json.dumps(_selftest(sleep=0.05).to_dict()))
    store = tmp_path / "r.sqlite"
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-c", "from perfscale.cli.app import run; run()", "compare", str(slow), str(slow), "--repeats", "3",
           "--min-iters", "3", "--min-time", "0.1", "--max-time", "1", "--warmup", "1", "--store", str(store), "--json"]
    # A shell's background jobs inherit SIGINT ignored; restore the default so Python raises KeyboardInterrupt.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if store.exists() and Store(store).count() >= 1:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    doc = json.loads(out)
    assert doc["interrupted"] is True
    finished = Store(store).count()
    assert finished >= 1 and finished < 6
    assert sum(row["runs"] for row in doc["configurations"]) == finished


@pytest.mark.parametrize("args, fragments", [
    (["bench", "--scenario", "infer"], ["scenario", "train, encode, generate"]),
    (["bench", "--precision", "fp64"], ["precision 'fp64'"]),
    (["bench", "--scenario", "generate", "--backend", "onnxruntime"], ["onnxruntime is for the encode scenario"]),
    (["bench", "--scenario", "generate", "--seq", "64"], ["--seq and --grad-accum are training flags"]),
    (["bench", "--min-iters", "1"], ["min_iters"]),
    (["compare", "backend=eager"], ["at least two configurations"]),
    (["compare", "backend=eager", "bakend=compile"], ["did you mean"]),
])
def test_bad_values_fail_before_anything_runs(args, fragments, tmp_path):
    t0 = time.monotonic()
    result = run_cli(*args, "--store", str(tmp_path / "r.sqlite"))
    assert_user_error(result, *fragments)
    assert time.monotonic() - t0 < 20  # no worker process was started
    assert not (tmp_path / "r.sqlite").exists() or Store(tmp_path / "r.sqlite").count() == 0
