"""`debug profile`: steps made to be bound by one thing each are classified as that thing, and the bench
scenario is profiled through the CLI with its trace written."""

from __future__ import annotations

import json

import pytest

from cli_contract import run_in_process
from perfscale.debug.profile import CLASSES, profile_step
from perfscale.debug.profile_probes import compute_bound, input_bound, launch_bound
from perfscale.errors import InvalidConfigError, UnsupportedModelError


@pytest.mark.parametrize("make, bound, knob", [
    (input_bound, "input", "--workers"),
    (launch_bound, "host", "--compile"),
    (compute_bound, "compute", "--precision"),
], ids=["sleeping-dataloader", "tiny-ops-loop", "large-matmul"])
def test_made_to_fail_steps_are_classified(make, bound, knob):
    result = profile_step(make(), what=bound, steps=2, warmup=1)
    assert result.bound == bound and result.fractions[bound] > 0.6, result.fractions
    assert sum(result.fractions.values()) == pytest.approx(1.0)
    assert result.verdict.startswith(f"{bound}: bound by") and knob in result.advice[0]
    assert result.top_ops and set(result.fractions) == set(CLASSES)
    json.dumps(result.to_dict(), allow_nan=False)


def test_waiting_while_a_collective_runs_elsewhere_is_communication():
    """c10d returns at once and gloo reduces on its own thread: the gap in the step's thread that overlaps the
    collective is the step waiting for it (synthetic events: a step of 0..100 us with ops at 0..10 and 90..100)."""
    from types import SimpleNamespace as NS

    from perfscale.debug.profile import _gaps, _waits_on_communication

    def ev(start, end, thread=1, children=()):
        return NS(time_range=NS(start=start, end=end), thread=thread, cpu_children=list(children))

    step = ev(0, 100, children=[ev(0, 10), ev(90, 100)])
    assert _gaps(step) == [(10, 90)]
    gloo = [ev(20, 50, thread=7), ev(40, 70, thread=7), ev(95, 120, thread=7), ev(30, 60, thread=1)]
    # other threads only, merged (20..70), inside the gap: 50 us; the same-thread event is the step's own
    assert _waits_on_communication(step, gloo) == pytest.approx(50e-6)


@pytest.mark.slow
def test_the_train_scenario_through_the_cli_writes_its_trace(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err, _ = run_in_process(["debug", "profile", "--scenario", "train", "--batch", "1", "--seq", "16", "--steps", "2",
                                        "--out", str(tmp_path / "prof"), "--json"], 180.0)
    assert code == 0, err[-2000:]
    doc = json.loads(out)
    assert doc["bound"] in CLASSES and doc["fractions"]["optimizer"] > 0 and doc["fractions"]["compute"] > 0
    assert any(m["module"] == "Linear" for m in doc["top_modules"])
    trace = json.loads((tmp_path / "prof" / "trace.json").read_text())
    assert any(e.get("name") == "perfscale.step" for e in trace["traceEvents"])
    timeline = json.loads((tmp_path / "prof" / "memory_timeline.json").read_text())
    assert timeline["peak_bytes_above_start"] > 0 and doc["memory"]["peak_bytes_above_start"] == timeline["peak_bytes_above_start"]
    # nothing from torch's C++ side (kineto's start/stop lines, the allocator's notes) reaches the terminal
    assert "Traceback" not in err and "profiler_start" not in err and "CPUAllocator" not in err, err


def test_bad_input_and_a_failing_step():
    with pytest.raises(InvalidConfigError, match="--steps 0"):
        profile_step(compute_bound(8), steps=0)
    with pytest.raises(InvalidConfigError, match="not a writable folder"):
        profile_step(compute_bound(8), out_dir="/proc/version/x")

    def broken():
        raise RuntimeError("shape mismatch in the user's step")

    with pytest.raises(UnsupportedModelError, match="shape mismatch"):
        profile_step(broken, steps=1, warmup=0)
