"""`perfscale plan` end to end: the JSON contract, one fully given configuration, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from perfscale.cli.app import main
from perfscale.config import RunConfig
from perfscale.estimate import estimate
from perfscale.specs import load_model_spec, parse_topology


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
        # run_config rebuilds the configuration (for tune / compare) and agrees with the knobs
        rc = RunConfig.from_dict(c["run_config"])
        assert (rc.precision, rc.zero, rc.tp, rc.pp, rc.pp_virtual, rc.offload) == tuple(
            c["knobs"][n] for n in ("precision", "zero", "tp", "pp", "pp_virtual", "offload"))
        assert (rc.workload.batch, rc.workload.seq, rc.workload.grad_accum) == (c["knobs"]["batch"], 4096, c["knobs"]["accum"])
        again = estimate(load_model_spec("llama-3.1-8b"), rc, parse_topology("8xH100-80GB"))
        assert again.memory.peak_bytes == c["memory"]["peak_bytes"]
        assert again.time.step_seconds == pytest.approx(c["time"]["step_seconds"], rel=1e-12)
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
    # offload everything, and even the LoRA fallback's frozen 405B base (~765 GiB) exceeds 512 GiB of host RAM (at
    # 4096 tokens the device no longer fits first: DeepSpeed's reduction buckets, 16384^2 elements each, are counted)
    (["--model", "llama-3.1-405b", "--hardware", "H100-80GB", "--train", "--batch", "1", "--seq", "2048",
      "--offload", "optimizer+params", "--host-memory-gib", "512"], "of host RAM per node"),
    (["--model", "llama-3.1-8b", "--hardware", "8xH100-80GB", "--pp", "4", "--pp-virtual", "16"], "layer slots"),
    (["--model", "perfscale-tiny-llama", "--hardware", "H100-80GB", "--lora-r", "8", "--lora-targets", "nope"], "nope"),
])
def test_bad_input_exit_2(args, needle, capsys):
    code, out, err = _run(args, capsys)
    assert code == 2, (out, err)
    assert needle in err
    assert "Traceback" not in err


def test_405b_full_offload_on_one_gpu_is_short_of_host_ram(capsys):
    """Full fine-tuning of a 405B model on one H100 with everything offloaded fits the device but
    needs 18 bytes/parameter of host RAM (DeepSpeed's ZeRO-3 offload estimate): ~6.6 TiB against the
    nominal 2 TiB node. The search finds LoRA (frozen base in host RAM, ~765 GiB) when allowed, and says so otherwise."""
    full = ["--model", "llama-3.1-405b", "--hardware", "H100-80GB", "--train", "--batch", "1", "--seq", "4096",
            "--precision", "bf16-mixed", "--optimizer", "adamw", "--checkpointing", "--attn", "sdpa", "--tp", "1",
            "--pp", "1", "--zero", "3", "--offload", "optimizer+params", "--json"]
    code, out, _ = _run(full, capsys)
    assert code == 0
    doc = json.loads(out)
    c = doc["configs"][0]
    assert c["fits"] is False and c["binding"] == "host-memory"
    assert c["memory"]["total_bytes"] <= c["memory"]["capacity_bytes"]  # the device side fits
    host, cap = c["memory"]["host_bytes_per_node"], c["memory"]["host_capacity_bytes"]
    assert host == pytest.approx(18 * load_model_spec("llama-3.1-405b").params.total, rel=2e-3)
    assert cap == 2 * 2**40
    assert f"short by {(host - cap) / 2**30:,.2f} GiB" in doc["advice"][0]
    searched = full[:full.index("--precision")] + ["--offload", "optimizer+params"]
    code, out, err = _run(searched, capsys)  # LoRA changes what is trained: not searched unless allowed
    assert code == 2 and "No configuration of llama-3.1-405b fits" in err, err
    assert "LoRA r=16 on every linear layer" in err and "--allow-lora" in err
    code, out, _ = _run(searched + ["--allow-lora", "--json"], capsys)
    assert code == 0
    doc = json.loads(out)
    assert doc["configs"][0]["knobs"]["lora_r"] == 16 and doc["configs"][0]["fits"]
    assert "fits only with LoRA" in doc["advice"][0]


def test_pp_virtual_flag_cuts_the_bubble(capsys):
    base = ["--model", "llama-3.1-8b", "--hardware", "8xH100-80GB", "--train", "--batch", "1", "--seq", "2048",
            "--grad-accum", "8", "--precision", "bf16-mixed", "--optimizer", "adamw", "--no-checkpointing",
            "--attn", "sdpa", "--tp", "2", "--pp", "4", "--zero", "1", "--json"]
    steps = {}
    for v in ("1", "2"):
        code, out, _ = _run(base + ["--pp-virtual", v], capsys)
        assert code == 0
        c = json.loads(out)["configs"][0]
        assert c["knobs"]["pp_virtual"] == int(v) and c["run_config"].get("pp_virtual", 1) == int(v)
        steps[v] = c["time"]["split"]["bubble"]
    assert steps["2"] == pytest.approx(steps["1"] / 2, rel=0.02)


def test_optimizer_algorithm_changes_only_when_allowed(capsys):
    """As in tune: by default plan searches AdamW's implementations only (another algorithm changes
    what is trained); --allow-optimizer-change opens Adafactor, SGD and 8-bit AdamW."""
    args = ["--model", "llama-3.1-8b", "--hardware", "H100-80GB", "--train", "--batch", "4", "--seq", "4096",
            "--precision", "bf16-mixed", "--checkpointing", "--top", "50", "--json"]
    code, out, _ = _run(args, capsys)
    assert code == 0
    assert {c["knobs"]["optimizer"] for c in json.loads(out)["configs"]} <= {"adamw_torch", "adamw_torch_fused"}
    code, out, _ = _run([*args, "--allow-optimizer-change"], capsys)
    assert code == 0
    assert {c["knobs"]["optimizer"] for c in json.loads(out)["configs"]} - {"adamw_torch", "adamw_torch_fused"}
