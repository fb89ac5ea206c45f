"""`perfscale plan` end to end: the JSON contract, one fully given configuration, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from perfscale.cli.app import main


def _run(args, capsys):
    code = main(["plan", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_json_contract_search(capsys):
    code, out, _err = _run(["--model", "llama-3.1-8b", "--hardware", "8xH100-80GB", "--train", "--batch", "4",
                            "--seq", "4096", "--top", "3", "--json"], capsys)
    assert code == 0
    doc = json.loads(out)
    assert 1 <= len(doc["configs"]) <= 3
    for c in doc["configs"]:
        assert c["fits"] is True
        assert c["memory"]["peak_bytes"] > 0 and c["time"]["step_seconds"] > 0 and c["time"]["tokens_per_second"] > 0
        assert set(c["memory"]["breakdown"]) == {"parameters", "gradients", "optimizer_state", "activations",
                                                 "temporaries", "kv_cache", "other"}
        assert sum(c["memory"]["breakdown"].values()) == pytest.approx(c["memory"]["peak_bytes"], abs=8)
        assert c["memory"]["total_bytes"] <= c["memory"]["capacity_bytes"]
        assert "precision" in c["knobs"] and "zero" in c["knobs"]
    tps = [c["time"]["tokens_per_second"] for c in doc["configs"]]
    assert tps == sorted(tps, reverse=True)
    assert doc["evaluated"] > doc["feasible"] >= len(doc["configs"])


def test_every_knob_given_evaluates_one_config(capsys):
    args = ["--model", "perfscale-tiny-llama", "--hardware", "H100-80GB", "--train", "--batch", "2", "--seq", "128",
            "--precision", "bf16-mixed", "--optimizer", "adamw", "--no-checkpointing", "--attn", "sdpa",
            "--zero", "0", "--tp", "1", "--pp", "1", "--json"]
    code, out, _ = _run(args, capsys)
    assert code == 0
    doc = json.loads(out)
    assert doc["evaluated"] == 1 and len(doc["configs"]) == 1
    knobs = doc["configs"][0]["knobs"]
    assert (knobs["precision"], knobs["batch"], knobs["seq"], knobs["checkpointing"]) == ("bf16-mixed", 2, 128, False)


def test_inference_reports_latency_and_limits(capsys):
    code, out, _ = _run(["--model", "llama-3.1-70b", "--hardware", "H100-80GB", "--infer", "--batch", "8",
                         "--prompt", "4096", "--new-tokens", "256", "--json"], capsys)
    assert code == 0
    doc = json.loads(out)
    best = doc["configs"][0]
    assert best["fits"] and best["knobs"]["quantization"] in ("int8", "int4", "nf4")  # bf16 70B cannot fit 80 GB
    assert best["time"]["ttft_seconds"] > 0 and best["time"]["per_token_seconds"] > 0
    assert doc["extras"]["largest_batch"] >= 8 and doc["extras"]["longest_context"] >= 4096 + 256


def test_local_hardware_is_said(capsys):
    code, out, _ = _run(["--train", "--batch", "2", "--seq", "64", "--json"], capsys)
    assert code == 0
    doc = json.loads(out)
    assert doc["hardware_detected"] is True
    assert any("No --hardware given" in line for line in doc["advice"])


def test_help_mentions_detected_device():
    code = "import sys; from perfscale.cli.app import main; sys.exit(main(['plan', '--help']))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"COLUMNS": "200", "PATH": ""})
    assert done.returncode == 0, done.stderr
    assert "this machine" in done.stdout


@pytest.mark.parametrize("args, needle", [
    (["--model", "llama-3.1-8b", "--hardware", "8xH100-80GB", "--tp", "3"], "does not divide the 32 attention heads"),
    (["--model", "perfscale-tiny-llama", "--hardware", "8xH100-80GB", "--pp", "8"], "exceeds the"),
    (["--model", "llama-3.1-8b", "--hardware", "8xH100-80GB", "--infer", "--batch", "3", "--tp", "1", "--precision", "bf16",
      "--attn", "sdpa"], "not divisible"),
    (["--model", "no-such-model"], "no-such-model"),
    (["--model", "llama-3.1-8b", "--hardware", "H999"], "H999"),
    (["--model", "llama-3.1-405b", "--hardware", "H100-80GB", "--train", "--batch", "1", "--seq", "4096",
      "--offload", "none"], "short by"),
    (["--model", "perfscale-tiny-llama", "--hardware", "H100-80GB", "--lora-r", "8", "--lora-targets", "nope"], "nope"),
])
def test_bad_input_exit_2(args, needle, capsys):
    code, out, err = _run(args, capsys)
    assert code == 2, (out, err)
    assert needle in err
    assert "Traceback" not in err
