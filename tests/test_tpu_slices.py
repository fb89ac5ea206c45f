"""TPU slices in the planner (issue 20 item 1): sourced specs, accelerator-type parsing, the torus collective
model, MXU padding, bf16-only compute and the per-strategy plan on a slice."""

from __future__ import annotations

import json

import pytest

from perfscale.config import RunConfig
from perfscale.errors import InvalidConfigError, TopologyError
from perfscale.estimate import estimate
from perfscale.estimate.constants import model_constants
from perfscale.estimate.time import flops_per_token
from perfscale.estimate.tpu_time import pad, padded_flops_per_token
from perfscale.specs import InferWorkload, TrainWorkload, get_hardware, parse_topology, spec_from_config
from perfscale.specs.hardware import catalog_hardware
from perfscale.specs.tpu import generations
from perfscale.tune.plan import plan

from tests.cli_helpers import assert_user_error, run_cli, run_json


def _llama(h=256, heads=2, i=512, layers=2, vocab=1024, head_dim=None, name="tpu-test-llama"):
    cfg = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": h, "num_attention_heads": heads,
           "num_key_value_heads": heads, "intermediate_size": i, "num_hidden_layers": layers, "vocab_size": vocab,
           "max_position_embeddings": 4096, "tie_word_embeddings": False}
    if head_dim:
        cfg["head_dim"] = head_dim
    return spec_from_config(cfg, name)


def test_every_tpu_number_has_a_source():
    """Each chip and slice number is data with a URL and what the page says, like the GPU catalogue."""
    gens = generations()
    assert set(gens) >= {"v4", "v5e", "v5p", "v6e"}
    for gen in gens.values():
        for entry in (gen.cores_per_chip, gen.ici_ports, gen.ici_link_bandwidth, gen.dcn_bandwidth,
                      gen.chips_per_host, gen.pod_chips, gen.mxu_tile, gen.chip.memory_bytes, gen.chip.memory_bandwidth):
            assert entry.value and "https://" in entry.source, (gen.name, entry)
        assert gen.chip.peak("bf16") and gen.chip.peak("int8")
        assert gen.chip.peak("fp16") is None and gen.chip.peak("fp32") is None  # bf16 is the only float MXU mode
        assert all("https://" in text for text in gen.sources.values())
    names = {hw.name for hw in catalog_hardware()}
    assert {"TPU-v4", "TPU-v5e", "TPU-v5p", "TPU-v6e"} <= names
    v5e = gens["v5e"]  # the numbers of https://docs.cloud.google.com/tpu/docs/v5e
    assert (v5e.chip.peak("bf16"), v5e.chip.peak("int8"), v5e.chip.memory_bandwidth.value) == (197e12, 393e12, 819e9)
    assert v5e.chip.memory == 16 * 2**30 and v5e.chips_per_host.value == 8 and v5e.pod_chips.value == 256
    assert v5e.ici_link_bandwidth.value * v5e.ici_ports.value * 2 == 400e9  # 400 GBps bidirectional per chip, 4 ports


@pytest.mark.parametrize("text, chips, shape, slices, label", [
    ("v5e-16", 16, (4, 4), 1, "v5e-16"), ("v5litepod-16", 16, (4, 4), 1, "v5litepod-16"),
    ("v5p-128", 64, (4, 4, 4), 1, "v5p-128"),  # v5p counts TensorCores: 2 per chip
    ("v4-32", 16, (2, 2, 4), 1, "v4-32"), ("v6e-256", 256, (16, 16), 1, "v6e-256"),
    ("2xv5e-256", 256, (16, 16), 2, "2xv5e-256"), ("8xTPU-v5e", 8, (2, 4), 1, "v5e-8"), ("TPU-v4", 4, (2, 2, 1), 1, "v4-8"),
])
def test_accelerator_types_parse(text, chips, shape, slices, label):
    topo = parse_topology(text)
    tpu = topo.hardware.torus
    assert (tpu.chips, tpu.shape, tpu.slices, topo.label) == (chips, shape, slices, label)
    assert (topo.nodes, topo.devices_per_node, topo.world_size) == (slices, chips, slices * chips)
    assert topo.hardware.kind == "tpu"
    assert json.loads(json.dumps(topo.to_dict()))["tpu_slice"]["shape"] == list(shape)


@pytest.mark.parametrize("bad", ["v5e-3", "v9-8", "v5p-12", "v4-6", "0xv5e-16", "65xv5e-16", "3xTPU-v5e"])
def test_a_string_that_is_not_a_slice_names_the_valid_ones(bad):
    with pytest.raises(TopologyError) as err:
        parse_topology(bad)
    message = str(err.value)
    assert bad.split("x")[-1] in message or bad in message
    assert "v5e-16" in message or "v5e-256" in message or "chips" in message


def test_wraparound_and_ring_bandwidth_follow_the_torus():
    """A full 16-chip v5e axis wraps (a ring: a link each way); a 4-chip axis is a line (one way). v5p cubes wrap."""
    link = 50e9
    pod = parse_topology("v5e-256").hardware.torus
    assert pod.wraps == (True, True)
    assert pod.group_bandwidth(256) == pytest.approx(2 * 2 * link)  # two axes, both ways
    assert pod.group_bandwidth(16) == pytest.approx(2 * link)  # one full axis, both ways
    assert pod.group_bandwidth(4) == pytest.approx(link)  # a segment of an axis: a line
    assert pod.group_bandwidth(64, stride=4) == pytest.approx(2 * link / 4 + 2 * link)  # strided rings share links
    small = parse_topology("v5e-16").hardware.torus
    assert small.wraps == (False, False) and small.group_bandwidth(16) == pytest.approx(2 * link)
    cube = parse_topology("v5p-128").hardware.torus
    assert cube.wraps == (True, True, True) and cube.group_bandwidth(64) == pytest.approx(3 * 2 * 100e9)
    assert parse_topology("v5p-32").hardware.torus.wraps == (False, False, False)  # smaller than a 4x4x4 cube


def test_mxu_padding_charges_padded_dims_and_only_them():
    """Dimensions that are 128-multiples cost nothing; a 64-wide head and a 1000-word vocabulary pay the tile."""
    aligned = model_constants(_llama())
    assert padded_flops_per_token(aligned, 512, 128) == pytest.approx(flops_per_token(aligned, 512))
    odd = model_constants(_llama(h=192, heads=3, i=320, vocab=1000, head_dim=64, name="tpu-odd"))
    assert pad(192, 128) == 256 and pad(1000, 128) == 1024 and pad(0, 128) == 0
    assert padded_flops_per_token(odd, 500, 128) > 1.3 * flops_per_token(odd, 500)
    assert padded_flops_per_token(odd, 500, 256) > padded_flops_per_token(odd, 500, 128)  # v6e's 256 tile


def test_padding_shows_in_time_not_in_model_flops():
    spec = _llama(h=192, heads=3, i=320, vocab=1000, head_dim=64, name="tpu-odd-time")
    cfg = RunConfig(TrainWorkload(8, 500), precision="bf16-mixed", optimizer="adamw", tp=1, pp=1)
    on_tpu = estimate(spec, cfg, parse_topology("v5e-1"))
    assert on_tpu.time.mfu < 0.81 * 0.8  # the padded FLOPs take time, the model's FLOPs count for MFU
    assert any("MXU tile" in note for note in on_tpu.notes)


def test_fp16_is_refused_on_a_tpu_and_fp32_is_six_bf16_passes():
    spec = _llama()
    topo = parse_topology("v5e-8")
    with pytest.raises(InvalidConfigError, match=r"no fp16.*bf16-mixed"):
        estimate(spec, RunConfig(TrainWorkload(4, 512), precision="fp16-mixed"), topo)
    with pytest.raises(InvalidConfigError, match=r"no fp16.*bf16"):  # inference in fp16 too
        estimate(spec, RunConfig(InferWorkload(8, 128, 16), precision="fp16"), topo)
    with pytest.raises(InvalidConfigError, match="no fp16"):
        plan(spec, "v5e-8", TrainWorkload(4, 512), precision="fp16-mixed")
    bf16 = estimate(spec, RunConfig(TrainWorkload(4, 512), precision="bf16-mixed", optimizer="adamw", fsdp=8), topo)
    fp32 = estimate(spec, RunConfig(TrainWorkload(4, 512), precision="fp32", optimizer="adamw", fsdp=8), topo)
    assert fp32.time.split["compute"] / bf16.time.split["compute"] == pytest.approx(6.0)
    assert not fp32.time.native_dtype and any("6 bf16" in n for n in fp32.notes)


def test_dcn_between_slices_costs_what_ici_does_not():
    """Plain data parallel over two slices: reduce-scatter in each slice, then each chip all-reduces its 1/256 shard
    of the gradients with the other slice over DCN (3.125 GB/s per v5e chip), then all-gather; FSDP whose gathers
    span slices puts a share of every gather on DCN and loses to FSDP inside each slice."""
    spec = _llama(h=1024, heads=8, i=4096, layers=8, vocab=32000, name="tpu-dcn")
    cfg = RunConfig(TrainWorkload(1, 512), precision="bf16-mixed", optimizer="adamw")
    one = estimate(spec, cfg, parse_topology("v5e-256"))
    two = estimate(spec, cfg, parse_topology("2xv5e-256"))
    assert one.time.split["exposed_comm"] > 0  # the in-slice all-reduce already outlasts the last backward
    dcn_part = 2 * (1 / 2) * spec.params.total * 2 / 256 / (3.125e9 * 0.8)
    assert two.time.split["exposed_comm"] - one.time.split["exposed_comm"] == pytest.approx(dcn_part, rel=1e-6)
    hybrid = estimate(spec, RunConfig(TrainWorkload(1, 512), precision="bf16-mixed", optimizer="adamw", fsdp=256),
                      parse_topology("2xv5e-256"))
    across = estimate(spec, RunConfig(TrainWorkload(1, 512), precision="bf16-mixed", optimizer="adamw", fsdp=512),
                      parse_topology("2xv5e-256"))
    # hierarchical collectives (XLA Multislice): each chip's DCN share is 1/256 of a gather, slower all the same
    assert across.time.split["exposed_comm"] > hybrid.time.split["exposed_comm"]


def test_plan_on_a_slice_reports_each_strategy():
    result = plan(_llama(), "v5e-16", TrainWorkload(4, 256), top=3)
    strategies = [c.knobs for c in result.strategies]
    assert [("tensor" if k["tp"] > 1 else "fsdp" if k["fsdp"] else "data-parallel") for k in strategies] == \
        ["data-parallel", "fsdp", "tensor"]
    for c in result.configs:  # the XLA SPMD layouts: no ZeRO stages, pipelines or offload unless asked for
        assert c.knobs["pp"] == 1 and c.knobs["zero"] == 0 and c.knobs["offload"] == "none"
        assert c.knobs["precision"] != "fp16-mixed"
    doc = json.loads(json.dumps(result.to_dict()))
    assert [s["strategy"] for s in doc["strategies"]] == ["data-parallel", "fsdp", "tensor"]
    assert all(s["memory"]["capacity_bytes"] == 16 * 2**30 for s in doc["strategies"])
    assert get_hardware("v5e").name == "TPU-v5e"


def test_inference_on_a_slice_searches_only_what_xla_runs():
    result = plan(_llama(), "v5e-8", InferWorkload(8, 256, 16), top=50)
    assert {c.knobs["quantization"] for c in result.configs} <= {"none", "int8", "int4"}  # no bitsandbytes nf4
    assert {c.knobs["precision"] for c in result.configs} <= {"bf16", "fp32"}


def test_tune_searches_the_same_tpu_layouts():
    from perfscale.tune.train_space import build_space

    topo = parse_topology("v5e-16")
    built = build_space(topo.hardware, 16, global_batch=16, seq=128, local=False, heads=2, layers=2, per_node=16)
    assert built.layouts and all(lay.get("pp", 1) == 1 and not lay.get("zero") and lay.get("offload", "none") == "none"
                                 for lay in built.layouts)


def test_gpu_topologies_have_no_tpu_branch():
    topo = parse_topology("8xH100-80GB")
    assert topo.hardware.torus is None and "tpu_slice" not in topo.to_dict()


def test_cli_hardware_show_and_plan_on_a_slice():
    doc = run_json("hardware", "show", "v5e-16")
    assert doc["label"] == "v5e-16" and doc["tpu_slice"]["shape"] == [4, 4] and doc["world_size"] == 16
    assert_user_error(run_cli("hardware", "show", "v5e-3"), "v5e-3", "v5e-16")
