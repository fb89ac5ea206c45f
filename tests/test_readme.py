"""The README keeps exactly two set-up commands; both work as written (their perfscale parts run here)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

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
