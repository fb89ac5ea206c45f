"""Placement (`perfscale place`): device_maps for catalogue models on topologies + host RAM + disk that cover
every module once, keep no-split blocks whole, stay within budgets that reserve the run's KV cache and
activations, and that accelerate accepts; on this CPU, a planned disk offload loads and runs bit-identically."""

from __future__ import annotations

import json

import pytest
import torch

from cli_contract import run_in_process
from tiny_configs import tiny_config

from perfscale.bigmodel.errors import PlacementError
from perfscale.bigmodel.placement import plan_placement

GiB = 2**30


def _module_names(model_name: str):
    from perfscale.specs import load_model_spec
    from perfscale.specs.param_count import build_meta_model

    spec = load_model_spec(model_name)
    model = build_meta_model(spec.config_object(), spec.architecture)
    tensors = [n for n, _ in model.named_parameters(remove_duplicate=False)] + [n for n, _ in model.named_buffers()]
    blocks = [n for n, m in model.named_modules() if type(m).__name__ in (model._no_split_modules or ())]
    return tensors, blocks


def _check_map(result, model_name: str) -> None:
    device_map = result.device_map
    keys = list(device_map)
    # covers every parameter and buffer exactly once: each tensor under exactly one key, keys never nested
    tensors, blocks = _module_names(model_name)
    for name in tensors:
        owners = [k for k in keys if name == k or name.startswith(k + ".")]
        assert len(owners) == 1, (name, owners)
    assert not [a for a in keys for b in keys if a != b and b.startswith(a + ".")]
    # no_split_module_classes: no key lies strictly inside a decoder block
    assert result.no_split_module_classes and blocks
    assert not [k for k in keys for b in blocks if k.startswith(b + ".")]
    # budgets: what accelerate placed fits what it was given, and everything fits each device's capacity
    for use in result.devices:
        assert use.weights_bytes <= use.budget_bytes + 1, use
        assert use.fits and (use.capacity_bytes is None or use.total_bytes <= use.capacity_bytes), use
        if isinstance(use.device, int):
            assert use.kv_cache_bytes > 0 and use.transient_bytes > 0 and use.overhead_bytes > 500 * 2**20
    assert set(device_map.values()) <= {u.device for u in result.devices}
    assert result.accelerate_check.startswith("accelerate check_device_map and dispatch_model")
    assert result.kwargs["device_map"] == device_map and json.dumps(result.to_dict())


def test_llama_70b_on_2xa100_plus_cpu():
    """A long-context batch leaves no room for all weights on 2x80 GB: the rest goes to CPU, GPU 0 keeps the
    offloaded layers' KV cache, and the alternatives name what avoids offload."""
    result = plan_placement("llama-3.1-70b", "2xA100-80GB", batch=8, prompt=8192, new_tokens=512, host_memory=256 * GiB)
    _check_map(result, "llama-3.1-70b")
    cpu = next(u for u in result.devices if u.device == "cpu")
    assert result.offloaded and cpu.weights_bytes > 10 * GiB and cpu.layers > 0
    gpu0, gpu1 = result.devices[0], result.devices[1]
    assert gpu0.kv_cache_bytes == pytest.approx((gpu0.layers + cpu.layers) / gpu1.layers * gpu1.kv_cache_bytes, rel=1e-6)
    assert result.decode["bound"] == "host_link" and result.decode["split_seconds"]["host_link"] > 0
    names = {a.name: a for a in result.alternatives}
    assert names["quantize-nf4"].fits and not names["quantize-nf4"].offloaded
    assert names["more-gpus"].fits and names["tensor-parallel"].kwargs == {"tp_plan": "auto", "dtype": "bfloat16"}
    assert names["tensor-parallel"].command.startswith("torchrun --nproc_per_node ")
    # the same model at a short context fits the two GPUs alone
    short = plan_placement("llama-3.1-70b", "2xA100-80GB", batch=1, prompt=1024, new_tokens=128, host_memory=256 * GiB)
    assert not short.offloaded and set(short.device_map.values()) == {0, 1} and not short.alternatives


def test_mixtral_8x22b_on_4xh100_balanced():
    result = plan_placement("mixtral-8x22b", "4xH100-80GB", batch=1, prompt=2048, new_tokens=256)
    _check_map(result, "mixtral-8x22b")
    layers = [u.layers for u in result.devices if isinstance(u.device, int)]
    assert not result.offloaded and sum(layers) == 56 and max(layers) - min(layers) <= 3
    # sequential fills GPU 0 first; balanced spreads: an 8B model on the same 4 GPUs
    sequential = plan_placement("llama-3.1-8b", "4xH100-80GB", strategy="sequential")
    balanced = plan_placement("llama-3.1-8b", "4xH100-80GB", strategy="balanced")
    low_0 = plan_placement("llama-3.1-8b", "4xH100-80GB", strategy="balanced_low_0")
    assert set(sequential.device_map.values()) == {0}
    assert set(balanced.device_map.values()) == {0, 1, 2, 3}
    assert low_0.devices[0].weights_bytes < min(u.weights_bytes for u in low_0.devices[1:4])


def test_405b_one_node_with_cpu_and_disk_offload():
    result = plan_placement("llama-3.1-405b", "8xH100-80GB", batch=1, prompt=512, new_tokens=64, host_memory=128 * GiB)
    _check_map(result, "llama-3.1-405b")
    where = {u.device: u for u in result.devices}
    assert where["cpu"].weights_bytes > 0 and where["disk"].weights_bytes > 0
    assert where["cpu"].weights_bytes <= 128 * GiB * 0.9
    assert result.kwargs["offload_folder"] == "offload" and result.decode["split_seconds"]["disk"] > 0
    assert any(a.name == "quantize-nf4" and a.fits for a in result.alternatives)


def test_does_not_fit_even_with_disk_exits_2():
    """The KV cache of a long batch lives on GPU 0 whatever is offloaded (accelerate runs offloaded layers there):
    16 x 8192 tokens of Llama 3.1 8B cannot fit one L4 even with unlimited disk; the message names the way out."""
    with pytest.raises(PlacementError, match="does not fit") as info:
        plan_placement("llama-3.1-8b", "L4", batch=16, prompt=8192, host_memory=64 * GiB)
    assert "tensor-parallel" in str(info.value) and "more-gpus" in str(info.value)
    code, out, err, _ = run_in_process(["place", "--model", "llama-3.1-8b", "--hardware", "L4", "--batch", "16", "--prompt",
                                        "8192", "--host-memory-gib", "64", "--json"], 120)
    assert code == 2 and json.loads(out)["error"]["type"] == "PlacementError" and "Alternatives" in err


def test_planned_disk_offload_loads_and_matches_on_cpu(tmp_path):
    """The tiny Llama (509 kB) on this CPU with ~490 kB of RAM for weights: layers go to disk; from_pretrained takes the
    emitted kwargs and gives the same logits as a plain load."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from perfscale.bigmodel.quiet import quiet_transformers

    config = tiny_config("llama")
    model_type = config.pop("model_type")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **config))
    model.save_pretrained(tmp_path / "m")
    result = plan_placement(str(tmp_path / "m"), "CPU", batch=1, prompt=8, new_tokens=2, dtype="fp32",
                            host_memory=520_000 / 0.9)  # ~490 kB after the KV cache and activations: 1 of 2 layers
    assert set(result.device_map.values()) == {"cpu", "disk"}, result.device_map
    ids = torch.arange(8).reshape(1, 8)
    kwargs = dict(result.kwargs, offload_folder=str(tmp_path / "offload"))
    kwargs["dtype"] = getattr(torch, kwargs["dtype"])
    with quiet_transformers():
        placed = AutoModelForCausalLM.from_pretrained(tmp_path / "m", **kwargs)
        plain = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
        with torch.no_grad():
            assert torch.equal(placed(ids).logits, plain(ids).logits)
    # accelerate kept the disk-offloaded weights off RAM (on meta, read from the files when run)
    assert placed.hf_device_map == result.device_map
    disk = [k for k, v in result.device_map.items() if v == "disk"]
    assert disk and all(p.device.type == "meta" for n, p in placed.named_parameters() if n.startswith(disk[0] + "."))


def test_place_cli_json():
    code, out, err, _ = run_in_process(["place", "--model", "llama-3.1-8b", "--hardware", "L4", "--dtype", "fp32", "--prompt", "4096",
                                        "--host-memory-gib", "64", "--json"], 120)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["kwargs"]["dtype"] == "float32" and doc["decode"]["tokens_per_second"] > 0
    assert doc["offloaded"] and {a["name"] for a in doc["alternatives"]} >= {"quantize-int8", "quantize-nf4"}
