"""bench/compare check everything before a worker starts: the model (the same error as plan), the
config file, LoRA targets, the scenario against the model's kind, sequence lengths and sizes.

A refused configuration leaves the store without a row and starts no worker process."""

from __future__ import annotations

import json
import time

import pytest

from perfscale.config.run_config import RunConfig
from perfscale.errors import InvalidConfigError, PerfscaleError, UnsupportedModelError
from perfscale.measure.bench_config import BenchConfig, load_config_file
from perfscale.measure.preflight import preflight
from perfscale.measure.store import Store
from perfscale.specs.workload import InferWorkload, TrainWorkload

from cli_helpers import assert_user_error, run_cli


def _no_rows(store) -> bool:
    return not store.exists() or Store(store).count() == 0


@pytest.fixture
def bad_model_dir(tmp_path):
    folder = tmp_path / "bad-model"
    folder.mkdir()
    (folder / "config.json").write_text("{not json")
    return folder


@pytest.mark.parametrize("model", ["no-such-model", "BAD_DIR"])
def test_bad_model_gives_plans_error_before_anything_runs(model, bad_model_dir, tmp_path):
    model = str(bad_model_dir) if model == "BAD_DIR" else model
    store = tmp_path / "r.sqlite"
    plan = run_cli("plan", "--model", model)
    t0 = time.monotonic()
    bench = run_cli("bench", "--model", model, "--store", str(store))
    compare = run_cli("compare", "backend=eager", "precision=bf16-mixed", "--model", model, "--store", str(store))
    assert time.monotonic() - t0 < 40  # no worker was started
    message = [line for line in plan.stderr.splitlines() if line.startswith("error:")]
    assert plan.returncode == 2 and message
    for result in (bench, compare):
        assert_user_error(result, message[0])  # word for word what plan says
    assert _no_rows(store)


def _config_file(tmp_path, doc, name="c.json"):
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


@pytest.mark.parametrize("doc, fragments", [
    ("{not json", ["Cannot read configuration file"]),
    ("[1, 2]", ["holds no bench configuration"]),
    ({"scenario": "selftest", "nosuchkey": 1}, ["Unknown bench configuration keys: nosuchkey"]),
    ({"scenario": "selftest", "extra": {"faulty": "oom"}}, ["unknown extra settings 'faulty'"]),
    ({"scenario": "selftest", "extra": {"fault": "explode"}}, ["selftest fault 'explode'"]),
    ({"scenario": "selftest", "run": [1]}, ["'run' must be a JSON object"]),
    ({"scenario": "train", "model": 5}, ["model must be a catalogue name"]),
])
def test_bad_config_file_is_refused(doc, fragments, tmp_path):
    path = _config_file(tmp_path, doc)
    store = tmp_path / "r.sqlite"
    assert_user_error(run_cli("bench", "--config", str(path), "--store", str(store)), *fragments)
    assert_user_error(run_cli("compare", str(path), str(path), "--store", str(store)), *fragments)
    assert _no_rows(store)


def test_config_file_and_knob_flags_do_not_mix(tmp_path):
    path = _config_file(tmp_path, BenchConfig(scenario="selftest").to_dict())
    result = run_cli("bench", "--config", str(path), "--batch", "8", "--store", str(tmp_path / "r.sqlite"))
    assert_user_error(result, "drop --batch")


def test_bench_config_file_round_trip(tmp_path):
    """--save-config writes what --config reads (and what compare reads)."""
    saved = tmp_path / "saved.json"
    result = run_cli("bench", "--config", str(_config_file(tmp_path, BenchConfig(scenario="selftest", extra={"size": 16}).to_dict())),
                     "--min-iters", "3", "--min-time", "0.1", "--max-time", "1", "--warmup", "1", "--no-gate",
                     "--save-config", str(saved), "--store", str(tmp_path / "r.sqlite"), "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["configurations"][0]["status"] == "ok"
    assert load_config_file(saved) == BenchConfig(scenario="selftest", extra={"size": 16})


def test_save_config_into_a_missing_folder_is_a_user_error(tmp_path):
    path = _config_file(tmp_path, BenchConfig(scenario="selftest").to_dict())
    result = run_cli("bench", "--config", str(path), "--save-config", str(tmp_path / "no" / "such" / "dir" / "c.json"),
                     "--store", str(tmp_path / "r.sqlite"))
    assert_user_error(result, "Cannot write --save-config")


# ----- the checks that need the model (in-process: the meta models are built once per test process) -----
def _train(model="perfscale-tiny-llama", **run) -> BenchConfig:
    wl = run.pop("workload", TrainWorkload(batch=2, seq=32))
    return BenchConfig(scenario="train", model=model, run=RunConfig(workload=wl, **run))


def _generate(model="perfscale-tiny-llama", prompt=16, new_tokens=4, batch=1) -> BenchConfig:
    return BenchConfig(scenario="generate", model=model, run=RunConfig(workload=InferWorkload(batch=batch, prompt=prompt, new_tokens=new_tokens)))


def test_lora_targets_must_match_a_module():
    preflight(_train(lora_r=8, lora_targets=("q_proj", "v_proj")))
    preflight(_train(lora_r=8, lora_targets=("all-linear",)))
    preflight(_train(lora_r=8))  # peft's defaults for llama
    with pytest.raises(InvalidConfigError, match=r"LoRA targets nope match no linear layer of perfscale-tiny-llama.*q_proj"):
        preflight(_train(lora_r=8, lora_targets=("q_proj", "nope")))
    preflight(_train(model="gpt2", lora_r=8, lora_targets=("c_attn",)))  # GPT-2's Conv1D layers are LoRA targets too
    with pytest.raises(InvalidConfigError, match="c_attn"):
        preflight(_train(model="gpt2", lora_r=8, lora_targets=("q_proj",)))


def test_learned_positions_bound_the_sequence_rotary_ones_do_not():
    preflight(_train(model="gpt2", workload=TrainWorkload(batch=1, seq=1024)))
    with pytest.raises(InvalidConfigError, match="--seq 1025 = 1,025 tokens exceeds the 1,024 learned positions of gpt2"):
        preflight(_train(model="gpt2", workload=TrainWorkload(batch=1, seq=1025)))
    with pytest.raises(InvalidConfigError, match=r"--prompt 1000 \+ --new-tokens 100 = 1,100 tokens exceeds"):
        preflight(_generate(model="gpt2", prompt=1000, new_tokens=100))
    # llama's rotary positions extrapolate: measured, not refused, with a note the result carries
    config = _generate(prompt=8000, new_tokens=1000)
    assert "extrapolate" in preflight(config)[config.fingerprint()][0]


@pytest.mark.parametrize("config, error, fragment", [
    (lambda: BenchConfig(scenario="encode", model="perfscale-tiny-llama"), UnsupportedModelError, "decoder-only"),
    (lambda: BenchConfig(scenario="encode", model="no-such-encoder"), PerfscaleError, "Unknown encoder model"),
    (lambda: _generate(model="minilm"), UnsupportedModelError, "no causal LM head"),
    (lambda: _generate(model="t5-base"), UnsupportedModelError, "encoder-decoder"),
    (lambda: _train(quantization="nf4", lora_r=8), UnsupportedModelError, "quantization nf4"),
    (lambda: _train(workload=TrainWorkload(batch=16_000_000, seq=100_000)), InvalidConfigError, "exceed this machine's memory"),
])
def test_scenario_must_fit_the_model(config, error, fragment):
    try:
        built = config()
    except PerfscaleError as exc:  # refused even earlier, when the configuration was built: fine too
        assert isinstance(exc, error), exc
        return
    with pytest.raises(error, match=fragment):
        preflight(built)


def test_encode_on_a_decoder_via_the_cli(tmp_path):
    store = tmp_path / "r.sqlite"
    result = run_cli("bench", "--scenario", "encode", "--model", "perfscale-tiny-llama", "--store", str(store))
    assert_user_error(result, "decoder-only", "--model minilm")
    assert _no_rows(store)
