"""Layer repetition is exact: tracing 4 and 5 layers and extrapolating gives the same peak, breakdown,
phase and per-phase peaks, to the byte, as tracing every layer (here 8- and 9-layer models)."""

from __future__ import annotations

import pytest

from perfscale.config import RunConfig
from perfscale.specs import InferWorkload, TrainWorkload, spec_from_config
from perfscale.trace import trace
from perfscale.trace.repeat import NotRepeatable, extrapolate
from perfscale.trace.result import RawTrace
from tiny_configs import tiny_config

CASES = [
    ("llama", 9, RunConfig(TrainWorkload(2, 32, 1), precision="bf16-mixed", checkpointing=True), None),
    ("llama", 8, RunConfig(TrainWorkload(2, 32, 2), lora_r=4, lora_targets=("q_proj", "v_proj")), "cpu"),
    ("gpt2", 8, RunConfig(TrainWorkload(2, 32, 1), attn="eager", optimizer="sgd", precision="bf16-mixed"), None),
    ("qwen2", 8, RunConfig(InferWorkload(2, 32, 6), precision="bf16"), None),
    ("llama", 8, RunConfig(InferWorkload(2, 32, 5), precision="bf16", cache="static"), None),
    ("llama", 8, RunConfig(TrainWorkload(2, 32, 1), fsdp=4, precision="bf16-mixed"), None),
]


def _key(result):
    return result.peak_bytes, result.breakdown, result.phase, result.phase_peaks, result.kv_cache_bytes


@pytest.mark.slow
@pytest.mark.parametrize("family,layers,config,device", CASES)
def test_repetition_equals_full_trace(family, layers, config, device):
    overrides = {"n_layer": layers} if family == "gpt2" else {"num_hidden_layers": layers}
    spec = spec_from_config(tiny_config(family, **overrides), f"tiny-{family}-{layers}")
    full = trace(spec, config, device=device, repeat_layers=False)
    rep = trace(spec, config, device=device, repeat_layers=True)
    assert rep.method.startswith("repeat") and full.method == "full"
    assert _key(rep) == _key(full)


def _raw(n, mid_step=100):
    """Synthetic regions: layer i forward level = 1000 + 10 n + mid_step i."""
    regions = {("s", "forward", ("after", -1)): (10 * n, {"parameters": 10 * n})}
    for i in range(n):
        total = 1000 + 10 * n + mid_step * i
        regions[("s", "forward", ("in", i))] = (total, {"parameters": 10 * n, "activations": total - 10 * n})
    return RawTrace(regions=regions, module_peaks={}, num_layers=n)


def test_extrapolation_takes_the_max_at_the_right_end():
    out = extrapolate(_raw(4), _raw(5), 4, 40)
    assert max(t for t, _ in out.regions.values()) == 1000 + 400 + 100 * 39


def test_non_affine_middle_layers_are_refused():
    bad = _raw(5)
    bad.regions[("s", "forward", ("in", 3))] = (5, {"parameters": 5})
    with pytest.raises(NotRepeatable):
        extrapolate(_raw(4), bad, 4, 40)
