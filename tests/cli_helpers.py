"""Run the installed `perfscale` command in a subprocess, as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def run_cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    full_env = os.environ | {"HF_HUB_OFFLINE": "1", "COLUMNS": "160"} | (env or {})
    command = [sys.executable, "-c", "from perfscale.cli.app import run; run()", *args]
    return subprocess.run(command, capture_output=True, text=True, env=full_env, timeout=timeout)


def run_json(*args: str, **kwargs) -> object:
    """Run a verb with --json: it must succeed and print exactly one JSON document, nothing else."""
    result = run_cli(*args, "--json", **kwargs)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def assert_user_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """A user's mistake: exit 2, one clear message on stderr, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
