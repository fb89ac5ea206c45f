"""benchmarks/gpu_bench_check.py: its CPU dry path here; the CUDA path where a GPU is present."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_bench_check.py"


def _run(tmp_path, *args, timeout):
    out = tmp_path / "check.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), *args], capture_output=True, text=True,
                          timeout=timeout, env=os.environ | {"HF_HUB_OFFLINE": "1"})
    return proc, (json.loads(out.read_text()) if out.exists() else None)


def test_dry_run_on_cpu_writes_passing_checks(tmp_path):
    proc, doc = _run(tmp_path, "--dry-run", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert doc["passed"] and doc["dry_run"] and doc["device"] == "cpu"
    names = [c["name"] for c in doc["checks"]]
    assert any(n.startswith("train") for n in names) and any(n.startswith("generate") for n in names)
    assert any("encode skipped" in n for n in doc["notes"])
    assert (tmp_path / "check.sqlite").exists()


@pytest.mark.gpu
@pytest.mark.slow
def test_cuda_check(tmp_path):
    proc, doc = _run(tmp_path, timeout=900)
    assert proc.returncode == 0, json.dumps([c for c in doc["checks"] if not c["passed"]], indent=1) if doc else proc.stderr
