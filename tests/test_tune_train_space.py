"""The training tune's knob space: what applies to which hardware, the Trainer-defaults baseline, candidates."""

from __future__ import annotations

import json

import pytest

from perfscale.errors import InvalidConfigError
from perfscale.export.trainer import trainer_kwargs
from perfscale.specs import get_hardware, parse_topology
from perfscale.specs.detect import CpuInfo, cpu_hardware, detect_local
from perfscale.tune.train_space import Candidate, baseline_candidate, build_space

AVX2 = {"avx": True, "avx2": True, "fma": True, "f16c": True}


def _cpu(**isa) -> object:
    return cpu_hardware(CpuInfo(model="test cpu", physical_cores=2, logical_cores=2, memory_bytes=24 * 2**30, mhz=2600.0, isa=AVX2 | isa))


def test_bf16_only_where_the_cpu_runs_it_natively():
    plain = build_space(_cpu(), 1, global_batch=8, seq=64, local=True, cpu_cores=2)
    assert plain.precisions == ("fp32",)
    assert any("bf16 left out" in n and "no native bf16" in n for n in plain.notes)
    native = build_space(_cpu(avx512f=True, avx512_bf16=True), 1, global_batch=8, seq=64, local=True, cpu_cores=2)
    assert native.precisions == ("fp32", "bf16-mixed")
    assert not any("bf16 left out" in n for n in native.notes)


def test_this_machine_decides_by_detection_not_by_a_constant():
    hw = get_hardware("local")
    space = build_space(hw, 1, global_batch=8, seq=64, local=True, cpu_cores=detect_local().cpu.physical_cores)
    assert ("bf16-mixed" in space.precisions) == bool(hw.peak("bf16"))
    if hw.kind == "cpu":
        assert ("bf16-mixed" in space.precisions) == detect_local().cpu.native_bf16


def test_optional_knobs_need_permission_or_budget():
    hw = _cpu()
    default = build_space(hw, 1, global_batch=8, seq=64, local=True, cpu_cores=2)
    assert default.optimizers == ("adamw_torch", "adamw_torch_fused") and default.lora_ranks == (None,) and default.compile == (False,)
    assert default.threads == (None, 1) and default.workers == (0, 1)
    assert default.micro_batches == (1, 2, 4, 8)
    wide = build_space(hw, 1, global_batch=8, seq=64, local=True, cpu_cores=2, allow_lora=True, allow_optimizer_change=True, include_compile=True)
    assert set(wide.optimizers) == {"adamw_torch", "adamw_torch_fused", "sgd", "adafactor"}  # no adamw_bnb_8bit: bitsandbytes is CUDA
    assert wide.lora_ranks == (None, 16) and wide.compile == (False, True)
    assert wide.size() == default.size() * 2 * 2 * 2
    names = {c.name for c in wide.candidates()}
    assert len(names) == wide.size()  # every candidate is distinct


def test_trainer_defaults_baseline_at_the_same_global_batch():
    assert baseline_candidate(8) == Candidate(micro_batch=8, grad_accum=1)
    assert baseline_candidate(32) == Candidate(micro_batch=8, grad_accum=4)
    assert baseline_candidate(12) == Candidate(micro_batch=4, grad_accum=3)
    assert baseline_candidate(2) == Candidate(micro_batch=2, grad_accum=1)
    b = baseline_candidate(64, data_parallel=4)
    assert (b.micro_batch, b.grad_accum) == (8, 2)
    base = baseline_candidate(8)
    assert (base.precision, base.optimizer, base.checkpointing, base.attn, base.compile, base.threads, base.workers) == (
        "fp32", "adamw_torch_fused", False, "sdpa", False, None, 0)
    kwargs = trainer_kwargs(base.run_config(64), parse_topology("local"))
    assert kwargs["per_device_train_batch_size"] == 8 and kwargs["optim"] == "adamw_torch_fused" and not kwargs["bf16"]


def test_every_candidate_keeps_the_global_batch():
    space = build_space(_cpu(avx512f=True, avx512_bf16=True), 1, global_batch=24, seq=32, local=True, cpu_cores=2)
    assert space.micro_batches == (1, 2, 4, 8)
    for c in space.candidates():
        assert c.micro_batch * c.grad_accum == 24


def test_multi_device_layouts_only_for_a_topology():
    topo = parse_topology("8xH100-80GB")
    space = build_space(topo.hardware, topo.world_size, global_batch=64, seq=512, local=False, heads=32, layers=32, per_node=8)
    layouts = space.layouts
    assert {"zero": 3, "tp": 1, "pp": 1, "offload": "none"} in layouts
    assert any(lay.get("fsdp") == 8 for lay in layouts) and any(lay["tp"] == 8 for lay in layouts) and any(lay["pp"] == 2 for lay in layouts)
    assert any(lay["offload"] == "optimizer" for lay in layouts)
    assert space.threads == (None,) and space.workers == (0,)  # not estimable: not searched
    assert "bf16-mixed" in space.precisions
    for c in space.candidates()[:200]:
        dp = 8 // (c.tp * c.pp)
        assert c.micro_batch * c.grad_accum * dp == 64
    with pytest.raises(InvalidConfigError, match="not divisible by the 8 devices"):
        build_space(topo.hardware, 8, global_batch=12, seq=512, local=False)


def test_candidate_to_bench_and_run_config():
    c = Candidate(micro_batch=4, grad_accum=2, precision="bf16-mixed", optimizer="adamw", threads=1, workers=1)
    bc = c.bench_config("perfscale-tiny-llama", 64)
    assert bc.threads == 1 and bc.dataloader_workers == 1 and bc.run.precision == "bf16-mixed"
    assert bc.run.workload.batch == 4 and bc.run.workload.grad_accum == 2 and bc.label == c.name
    assert bc.fingerprint() == c.bench_config("perfscale-tiny-llama", 64, label="other").fingerprint()  # label is not identity
    rc = c.run_config(64)
    assert (rc.dataloader_num_workers, rc.torch_num_threads) == (1, 1)
    assert trainer_kwargs(rc, parse_topology("local"))["dataloader_num_workers"] == 1
    from perfscale.export.trainer import trainer_snippet

    assert "torch.set_num_threads(1)" in trainer_snippet(rc, parse_topology("local"), "m")
    assert "set_num_threads" not in trainer_snippet(baseline_candidate(8).run_config(64), parse_topology("local"), "m")
    assert json.dumps(c.knobs())  # serialisable
    assert set(c.differences(Candidate(micro_batch=8, grad_accum=1))) == {"micro_batch", "precision", "optimizer", "threads", "workers"}


@pytest.mark.parametrize("topology", ["H100-80GB", "V100-32GB", "8xA100-80GB", "2x8xH100-80GB"])
@pytest.mark.parametrize("allow_change", [False, True])
def test_tune_searches_the_planners_space(topology, allow_change):
    """One space: on hardware tune only estimates, each knob takes exactly the values plan searches
    (tune/space.train_space), and the parallel layouts are the planner's with one pipeline chunk."""
    from perfscale.estimate.knobs import Knobs
    from perfscale.tune import space as shared

    topo = parse_topology(topology)
    world, per_node = topo.world_size, topo.devices_per_node
    ours = build_space(topo.hardware, world, global_batch=256 * world, seq=128, local=False, heads=32, layers=32,
                       per_node=per_node, allow_optimizer_change=allow_change)
    # accumulation 32: every pipeline depth has its micro-batches (plan fixes the batch per replica,
    # tune the global batch; which layouts exist does not depend on that)
    planned = list(shared.train_space(Knobs(batch=8, seq=128, accum=32), {"pp_virtual": 1}, 32, 32, world, per_node,
                                      topo.hardware, allow_change))
    assert set(ours.precisions) == {k.precision for k in planned}
    assert set(ours.optimizers) == {k.optimizer for k in planned}
    assert set(ours.attns) == {k.attn for k in planned} == {"sdpa"}
    layout = ("zero", "fsdp", "tp", "pp", "offload")
    defaults = {"zero": 0, "fsdp": None, "tp": 1, "pp": 1, "offload": "none"}
    tune_layouts = {tuple(lay.get(n, defaults[n]) for n in layout) for lay in ours.layouts}
    assert tune_layouts == {tuple(getattr(k, n) for n in layout) for k in planned}


def test_measured_cpu_space_adds_only_measured_knobs():
    local = build_space(_cpu(), 1, global_batch=8, seq=64, local=True, cpu_cores=2)
    remote = build_space(_cpu(), 1, global_batch=8, seq=64, local=False, cpu_cores=2)
    assert local.attns == ("sdpa", "eager") and remote.attns == ("sdpa",)
    assert local.precisions == remote.precisions and local.optimizers == remote.optimizers
