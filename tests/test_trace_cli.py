"""`perfscale trace` CLI: one JSON document with --json, tables otherwise, exit 2 on bad input;
and the GPU check script's CPU smoke path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from perfscale.cli.app import main
from tiny_configs import tiny_config

ROOT = Path(__file__).resolve().parents[1]


def _model_dir(tmp_path, family, **overrides) -> str:
    folder = tmp_path / family
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(tiny_config(family, **overrides)))
    return str(folder)


def test_train_json(capsys, tmp_path):
    model = _model_dir(tmp_path, "llama")
    code = main(["trace", "--model", model, "--train", "--batch", "2", "--seq", "32", "--precision", "bf16-mixed",
                 "--optimizer", "adamw", "--checkpointing", "--attn", "sdpa", "--json"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["peak_bytes"] == sum(doc["breakdown"].values()) > 0
    assert doc["phase"] in ("forward", "backward", "optimizer") and doc["trace_seconds"] > 0
    assert doc["config"]["checkpointing"] is True and doc["device"] == "cuda"


def test_infer_tables(capsys, tmp_path):
    model = _model_dir(tmp_path, "llama")
    code = main(["trace", "--model", model, "--infer", "--batch", "2", "--prompt", "16", "--new-tokens", "4",
                 "--precision", "bf16", "--cache", "static"])
    out = capsys.readouterr().out
    assert code == 0
    assert "prefill" in out and "decode" in out and "KV cache" in out and "Not in the peak" in out


@pytest.mark.parametrize("args,needle", [
    (["--lora-r", "4", "--lora-targets", "nope_proj"], "nope_proj"),
    (["--lora-r", "4", "--lora-targets", "q_proj", "--optimizer", "adafactor"], "adafactor"),
    (["--precision", "fp16", "--optimizer", "adamw"], "fp16"),
    (["--device", "tpu"], "tpu"),
])
def test_bad_input_exits_2(capsys, tmp_path, args, needle):
    model = _model_dir(tmp_path, "llama")
    assert main(["trace", "--model", model, "--train", "--batch", "1", "--seq", "16", *args]) == 2
    assert needle in capsys.readouterr().err


def test_unsupported_architecture_exits_2_naming_plan(capsys, tmp_path):
    model = _model_dir(tmp_path, "mixtral")
    assert main(["trace", "--model", model, "--train", "--batch", "1", "--seq", "16", "--precision", "fp32"]) == 2
    assert "perfscale plan" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_subprocess_prints_exactly_one_json_document():
    exe = Path(sys.executable).with_name("perfscale")
    done = subprocess.run([str(exe), "trace", "--json", "--batch", "1", "--seq", "16"], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["model"] == "perfscale-tiny-llama"


@pytest.mark.slow
def test_gpu_check_script_cpu_smoke(tmp_path):
    out = tmp_path / "trace_gpu.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_trace_check.py"), "--device", "cpu", "--dry-run",
                           "--out", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    doc = json.loads(out.read_text())
    assert len(doc["rows"]) == 4 and {r["checkpointing"] for r in doc["rows"]} == {False, True}
    for row in doc["rows"]:
        assert abs(row["trace_error_pct"]) <= 1.0  # the CPU program, traced vs really run
