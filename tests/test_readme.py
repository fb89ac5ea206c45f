"""The README keeps exactly two set-up commands; both work as written (their perfscale parts run here)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
SETUP = [line for line in README.splitlines() if line.startswith("pip install ")]


def test_exactly_two_setup_commands_pinning_cpu_torch():
    assert len(SETUP) == 2, SETUP
    for line in SETUP:
        assert line.startswith("pip install torch==2.13.0 "), "a fresh install must not pull a CUDA torch"


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    pattern = re.search(r"grep -E '([^']+)' README.md", ci).group(1)
    assert [line for line in SETUP if re.search(pattern, line)] == [SETUP[1]]
    assert "pytest" in SETUP[1]


def _perfscale_parts(line: str) -> list[list[str]]:
    steps = [shlex.split(part) for part in line.split("&&")]
    return [step[1:] for step in steps if step and step[0] == "perfscale"]


def test_main_command_runs():
    parts = _perfscale_parts(SETUP[0])
    assert parts, "the main command must run perfscale"
    for args in parts:
        result = subprocess.run(
            [sys.executable, "-c", "from perfscale.cli.app import run; run()", *args],
            capture_output=True, text=True, timeout=600,
        )
        assert result.returncode == 0, (args, result.stderr)
        assert result.stdout.strip()


# ----- every command of the README's usage section runs as written (smaller where it would take minutes) -----
def _usage_commands() -> list[str]:
    section = README.split("## Use", 1)[1]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    return [re.split(r"\s+#\s", line, maxsplit=1)[0].strip() for line in block.splitlines() if line.startswith("perfscale ")]


USAGE = _usage_commands()
# What the test appends where the README's command measures for minutes on this machine; each key
# must still be a README command (test_smaller_runs_are_readme_commands), so this cannot rot.
SMALLER = {
    "perfscale bench --scenario train --batch 4 --seq 128": ["--min-iters", "2", "--min-time", "0", "--max-time", "2",
                                                             "--warmup", "1"],
    'perfscale compare --scenario encode "backend=eager" "backend=onnxruntime" "backend=onnxruntime,quant=int8-per-channel"':
        ["--min-iters", "2", "--min-time", "0", "--max-time", "2", "--warmup", "1", "--repeats", "1", "--sentences", "32"],
    "perfscale tune decoder --quick": ["--new-tokens", "2", "--prompt-lengths", "4"],
}
# `perfscale tune` is the README's main job: test_main_command_runs runs it exactly as written;
# tests/test_tune_train.py::test_kill_9_then_resume_remeasures_nothing_that_finished runs `tune ... --emit all --out DIR` and reads every file.
# tests/test_tune_infer.py::test_cli_tune_infer_quick_json_save_and_apply runs `tune encoder --quick` and applies it;
# tests/test_plan_calibration.py::test_cli_calibrate_stores_and_later_plans_reuse runs `plan --calibrate` (tiny model).
# (Each would add ~45-70 s to the suite here, which must stay under 20 minutes on 2 cores.)
# tests/test_multiprocess.py runs bench under torchrun (2 ranks, DDP and FSDP2, 25-95 s here);
# tests/test_debug_overflow.py and tests/test_debug_dist.py run `debug overflow` and `debug dist` (torchrun) through the CLI.
RUN_ELSEWHERE = {"perfscale tune", "perfscale tune --emit all --out tuned/", "perfscale tune --processes --budget-seconds 600",
                 "perfscale tune encoder --model minilm",
                 "perfscale plan --train --batch 8 --seq 256 --calibrate",
                 "perfscale bench --batch 2 --seq 32 --nproc 2 --strategy fsdp2",
                 "perfscale bench --batch 2 --seq 32 --nproc 2 --strategy deepspeed --zero 3",
                 "perfscale bench --task sequence-classification --num-labels 3 --batch 4 --seq 128",
                 "perfscale debug overflow --steps 1 --seq 16 --batch 1", "perfscale debug dist --nproc 2 --sizes 4K --iters 1",
                 "perfscale bench --scenario load", "perfscale tune encoder --model minilm --objective latency",
                 "perfscale debug xla --batches 3 --batch 1 --lengths 12,40,12 --buckets 64 --no-probe"}
# tests/test_bench_load.py runs `bench --scenario load` on a checkpoint (fresh processes, ~40 s);
# tests/test_tune_infer_serving.py tunes for latency (the serving stream) on a tiny encoder;
# tests/test_debug_xla.py runs `debug xla` (torch.compile's counters) on a one-layer model.
# tests/test_bench_deepspeed.py runs ZeRO-3 on 2 ranks; tests/test_bench_task.py a classification head's bench;
# tests/test_tune_processes.py tunes processes x threads (slow, 1 test).
# The top-level keys each verb's JSON document has (its shape).
SHAPE = {"models": "models", "models show": "params", "hardware": "hardware", "hardware show": "hardware",
         "hardware --local": "cpu", "trace": "peak_bytes", "plan": "configs", "bench": "configurations", "compare": "configurations",
         "tune": "winner", "place": "device_map", "hpo": "counts"}


def test_smaller_runs_are_readme_commands():
    assert set(SMALLER) | RUN_ELSEWHERE <= set(USAGE), set(SMALLER) - set(USAGE)
    assert len(USAGE) >= 15


@pytest.mark.slow
@pytest.mark.parametrize("command", [c for c in USAGE if c not in RUN_ELSEWHERE], ids=lambda c: c.replace('"', "")[10:70])
def test_usage_command_runs(command, tmp_path):
    args = shlex.split(command)[1:] + SMALLER.get(command, [])
    as_json = "--format" not in args  # results --format markdown prints Markdown, not JSON
    result = subprocess.run(
        [sys.executable, "-c", "from perfscale.cli.app import run; run()", *args, *(["--json"] if as_json else [])],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
        env=os.environ | {"HF_HUB_OFFLINE": "1", "XDG_CACHE_HOME": str(tmp_path / "cache")},
    )
    assert result.returncode == 0, (command, result.stderr[-3000:])
    assert "Traceback" not in result.stderr
    if not as_json:
        assert result.stdout.lstrip().startswith("|"), result.stdout[:500]
        return
    document = json.loads(result.stdout)
    verb = " ".join(a for a in args[:2] if not a.startswith("-") or a == "--local")
    verb = "tune" if verb.startswith("tune") else verb
    key = SHAPE.get(verb) or SHAPE[args[0]]
    assert key in document, (command, sorted(document))
