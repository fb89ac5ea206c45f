"""The CLI as a user runs it: models, hardware, --json, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

from cli_helpers import assert_user_error, run_cli, run_json

import perfscale
from perfscale.specs.detect import ISA_FLAGS


def test_version_and_help():
    assert run_cli("--version").stdout.strip() == f"perfscale {perfscale.__version__}"
    result = run_cli("--help")
    assert result.returncode == 0 and "models" in result.stdout and "hardware" in result.stdout


def test_models_json_lists_catalogue_with_exact_counts():
    document = run_json("models")
    models = document["models"]
    assert len(models) >= 30
    by_name = {m["name"]: m for m in models}
    assert by_name["llama-3.1-8b"]["params"]["total"] == 8_030_261_248
    assert by_name["gpt2"]["params"]["total"] == 124_439_808  # GPT2LMHeadModel, lm_head tied
    assert all(m["params"]["total"] > 0 for m in models)


def test_models_family_filter_and_show():
    families = {m["family"] for m in run_json("models", "--family", "mixtral")["models"]}
    assert families == {"mixtral"}
    spec = run_json("models", "show", "mixtral-8x7b")
    assert spec["num_experts"] == 8 and spec["experts_per_token"] == 2
    human = run_cli("models", "show", "gpt2")
    assert human.returncode == 0 and "124,439,808" in human.stdout


def test_hardware_catalogue_and_show():
    devices = run_json("hardware")["hardware"]
    assert len(devices) >= 23
    assert all(d["memory_bytes"]["source"] for d in devices)
    topo = run_json("hardware", "show", "2x8xH100-80GB")
    assert (topo["nodes"], topo["devices_per_node"], topo["world_size"]) == (2, 8, 16)
    assert topo["hardware"]["peak_flops"]["bf16"]["source"]


def test_hardware_local_describes_this_machine():
    machine = run_json("hardware", "--local")
    assert machine["cpu"]["logical_cores"] >= 1
    # Every known flag is reported, each true exactly when this CPU has it (read here independently).
    isa = machine["cpu"]["isa"]
    assert set(isa) == set(ISA_FLAGS) and all(isinstance(v, bool) for v in isa.values())
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        flags = set(next((line.split(":", 1)[1].split() for line in cpuinfo.read_text().splitlines()
                          if line.startswith(("flags", "Features"))), []))
        assert {f for f, on in isa.items() if on} == {f for f in ISA_FLAGS if f in flags}
    assert machine["hardware"]["memory_bytes"]["value"] > 0
    assert run_json("hardware", "show", "local")["cpu"] == machine["cpu"]


def test_unknown_names_exit_2_with_suggestions():
    assert_user_error(run_cli("models", "show", "llama-3.1-8"), "Unknown model", "Did you mean", "perfscale models")
    assert_user_error(run_cli("hardware", "show", "H100-8GB"), "Unknown hardware", "Did you mean")
    assert_user_error(run_cli("models", "--family", "lama"), "Unknown family", "llama")


def test_bad_topology_exit_2():
    assert_user_error(run_cli("hardware", "show", "0x8xH100-80GB"), "Bad topology", "2x8xH100-80GB")


def test_malformed_and_incomplete_configs_exit_2(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text('{"model_type": "llama", ')
    assert_user_error(run_cli("models", "show", str(bad)), str(bad), "not valid JSON")
    bad.write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
    assert_user_error(run_cli("models", "show", str(tmp_path)), "missing num_hidden_layers")


def test_hub_id_offline_exit_2():
    assert_user_error(run_cli("models", "show", "acme/not-cached"), "acme/not-cached", "HF_HUB_OFFLINE")


def test_json_errors_are_one_error_document():
    """--json on a mistake: stdout holds exactly one {"error": ...} document (scripts never parse ""), stderr the message."""
    import json

    result = run_cli("models", "show", "nope", "--json")
    assert result.returncode == 2 and "Unknown model 'nope'" in result.stderr
    assert json.loads(result.stdout) == {"error": {"type": "UnknownNameError", "message": result.stderr.strip()[len("error: "):],
                                                   "exit_code": 2}}
    usage = run_cli("plan", "--batch", "abc", "--json")
    assert usage.returncode == 2 and json.loads(usage.stdout)["error"]["type"] == "BadParameter"
