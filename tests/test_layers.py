"""The layer contract and the lint rules hold: `lint-imports` and `ruff check` (their settings are in
pyproject.toml) run in a subprocess, so an upward import, an import cycle, an unused import or a
bugbear finding fails the suite, not only CI. Both tools are declared in the `test` extra."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str) -> str:
    """The console script installed next to this interpreter (the test extra's), else on PATH."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    assert found, f"{name} is not installed: pip install -e '.[test]' (it is in the test extra)"
    return found


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_import_layers_and_no_cycles():
    out = _run([_tool("lint-imports"), "--no-cache"])
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout and "BROKEN" not in out.stdout


def test_ruff_finds_nothing():
    out = _run([_tool("ruff"), "check", "--no-cache", "src", "tests", "benchmarks"])
    assert out.returncode == 0, out.stdout + out.stderr
