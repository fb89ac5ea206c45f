"""CPU calibration: operation times measured here replace peak x efficiency in CPU training estimates.

The accuracy of the calibrated model against measured steps is a benchmark
(benchmarks/plan_vs_cpu.py, recorded in benchmarks/LOG.md), not a timed test; these tests check
the arithmetic, the store, the probes and the command line.
"""

from __future__ import annotations

import json

import pytest

from perfscale.cli.app import main
from perfscale.config import RunConfig
from perfscale.errors import InvalidConfigError
from perfscale.estimate import cpu_step, estimate
from perfscale.estimate.calibration import Calibration, load_calibration
from perfscale.estimate.core import constants_for
from perfscale.estimate.knobs import Knobs
from perfscale.measure import cpu_probe
from perfscale.specs import Topology, TrainWorkload, get_hardware, load_model_spec, parse_topology

TINY = "perfscale-tiny-llama"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path / "perfscale" / "calibration"


def _filled(mc, k, seconds_of=lambda sig, size: 1e-3) -> Calibration:
    """A calibration holding a made-up time for every operation of (mc, k)."""
    cal = Calibration(fingerprint={"cpu": "test"}, bandwidth=1e10)
    for sig, size in cpu_step.probe_list(mc, k):
        cal.add(sig, size, seconds_of(sig, size))
    return cal


def test_lookup_interpolates_between_sizes_and_scales_outside():
    cal = Calibration(fingerprint={"cpu": "test"})
    cal.add("op", 100, 1.0)
    cal.add("op", 300, 2.0)
    assert cal.seconds("op", 100) == 1.0
    assert cal.seconds("op", 200) == pytest.approx(1.5)
    assert cal.seconds("op", 50) == pytest.approx(0.5)  # proportional below the smallest size
    assert cal.seconds("op", 600) == pytest.approx(4.0)  # and above the largest
    assert cal.seconds("other", 100) is None
    cal.add("op", 200, 1.2)  # a new point replaces the interpolation
    assert cal.seconds("op", 200) == 1.2


def test_store_round_trip_and_machine_isolation(tmp_path):
    cal = Calibration(fingerprint={"cpu": "A", "threads": 2}, bandwidth=5e10)
    cal.add("linear_fwd:256,688:fp32", 2048, 0.004)
    cal.save(tmp_path)
    again = load_calibration({"cpu": "A", "threads": 2}, tmp_path)
    assert again.times == cal.times and again.bandwidth == 5e10
    assert load_calibration({"cpu": "A", "threads": 1}, tmp_path).times == {}  # other thread count: nothing
    cal.path(tmp_path).write_text("{not json")
    assert load_calibration({"cpu": "A", "threads": 2}, tmp_path).times == {}  # damaged file: start afresh


def test_linear_ops_carry_the_models_matmul_flops():
    """The op list's GEMMs do exactly the planner's matmul FLOPs: 3 x forward, head included."""
    mc = constants_for(load_model_spec(TINY))
    k = Knobs(batch=4, seq=128)
    flops = 0.0
    for op in cpu_step.step_ops(mc, k):
        kind, _, shape = op.signature.partition(":")
        if kind.startswith("linear_"):
            fan_in, fan_out = (int(v) for v in shape.split(":")[0].split(","))
            flops += 2 * op.size * fan_in * fan_out * op.coef
    matmul_params = mc.layers * mc.matmul_layer_active + mc.head_matmul
    assert flops == pytest.approx(3 * 2 * matmul_params * 4 * 128, rel=1e-9)


def test_lora_skips_base_weight_gradients_and_adds_adapters():
    mc = constants_for(load_model_spec(TINY))
    full = {op.signature for op in cpu_step.step_ops(mc, Knobs(batch=2, seq=64))}
    lora = {op.signature for op in cpu_step.step_ops(mc, Knobs(batch=2, seq=64, lora_r=8, lora_targets=("q_proj",)))}
    assert "linear_wgrad:256,256:fp32" in full and "linear_wgrad:256,256:fp32" not in lora
    assert {"linear_wgrad:256,8:fp32", "linear_wgrad:8,256:fp32"} <= lora
    assert "optimizer:adamw_torch_fused:fp32" in lora  # the default optimizer, by its Trainer name


def test_calibrated_time_is_the_sum_of_the_operations():
    mc = constants_for(load_model_spec(TINY))
    k = Knobs(batch=2, seq=64)
    cal = _filled(mc, k)
    for sig, size in cpu_step.probe_list(mc, k.copy(checkpointing=True)):  # its own program count
        cal.add(sig, size, 1e-3)
    ops = cpu_step.step_ops(mc, k)
    micro = sum(op.coef * 1e-3 for op in ops if op.phase != "opt")
    traffic = cpu_step.ELEMENTWISE_TRAFFIC * cpu_step.elementwise_bytes(mc, k) / 1e10
    compute, recompute = cpu_step.calibrated_compute(mc, k, cal)
    assert compute == pytest.approx(micro + traffic + 1e-3) and recompute == 0.0
    # accumulation repeats the micro-step, not the optimizer step
    compute4, _ = cpu_step.calibrated_compute(mc, k.copy(accum=4), cal)
    assert compute4 == pytest.approx(4 * (micro + traffic) + 1e-3)
    # checkpointing re-runs each layer's forward operations and a third of the traffic
    _, recompute = cpu_step.calibrated_compute(mc, k.copy(checkpointing=True), cal)
    fwd = sum(op.coef * 1e-3 for op in ops if op.phase == "fwd")
    assert recompute == pytest.approx(fwd + traffic / 3)


def test_estimate_uses_calibration_only_where_it_applies():
    spec = load_model_spec(TINY)
    mc = constants_for(spec)
    run = RunConfig(TrainWorkload(batch=2, seq=64))
    cpu = Topology(hardware=get_hardware("local"))
    cal = _filled(mc, Knobs(batch=2, seq=64), lambda sig, size: 0.5)
    plain = estimate(spec, run, cpu)
    calibrated = estimate(spec, run, cpu, calibration=cal)
    assert calibrated.time.step_seconds > 10  # dozens of 0.5 s operations: the calibration was used
    assert any("measured on this machine" in note for note in calibrated.notes)
    assert not any("measured on this machine" in note for note in plain.notes)
    # an explicit efficiency wins; a GPU topology and an uncovered configuration ignore the calibration
    assert estimate(spec, run, cpu, efficiency=0.3, calibration=cal).time.step_seconds < 10
    assert estimate(spec, run, parse_topology("H100-80GB"), calibration=cal).time.step_seconds < 10
    other = RunConfig(TrainWorkload(batch=4, seq=32))  # attention at seq 32 was never timed
    assert estimate(spec, other, cpu, calibration=cal).time.step_seconds == pytest.approx(
        estimate(spec, other, cpu).time.step_seconds)


def test_probes_time_real_operations():
    spec = load_model_spec(TINY)
    mc = constants_for(spec)
    k = Knobs(batch=1, seq=16, checkpointing=True, attn="eager")
    cal = cpu_probe.probe(cpu_step.probe_list(mc, k), Calibration(fingerprint=cpu_probe.fingerprint()), min_time=0.0,
                          spec=spec)
    assert cal.bandwidth > 1e8
    assert 1e-8 < cal.seconds("dispatch_unit", 1) < 1e-3
    for sig, size in cpu_step.probe_list(mc, k):
        assert 0 < cal.seconds(sig, size) < 5, sig
    compute, recompute = cpu_step.calibrated_compute(mc, k, cal)
    assert 0 < recompute < compute


def test_unknown_signature_is_a_clear_error():
    with pytest.raises(InvalidConfigError, match="unknown operation signature 'conv:3'"):
        cpu_probe.build("conv:3", 1)
    mc = constants_for(load_model_spec(TINY))
    needed = [(cpu_step.dispatch_signature(mc, Knobs(batch=1, seq=16)), mc.layers)]
    with pytest.raises(InvalidConfigError, match="pass the model spec to probe"):
        cpu_probe.probe(needed, Calibration(fingerprint={"cpu": "test"}, bandwidth=1e10))


def test_dispatch_count_is_the_programs_and_affine_in_layers():
    """The count comes from running the model's own step: one more layer adds the same number of
    calls, checkpointing re-runs each layer's forward, LoRA drops the base weight gradients."""
    spec = load_model_spec(TINY)
    run = RunConfig(TrainWorkload(batch=1, seq=16))
    one, two, three = (cpu_probe.count_dispatches(spec, run, n) for n in (1, 2, 3))
    assert two - one == three - two > 50
    ckpt = RunConfig(TrainWorkload(batch=1, seq=16), checkpointing=True)
    assert cpu_probe.count_dispatches(spec, ckpt, 2) - cpu_probe.count_dispatches(spec, ckpt, 1) > two - one
    lora = RunConfig(TrainWorkload(batch=1, seq=16), lora_r=4, lora_targets=("q_proj",))
    assert cpu_probe.count_dispatches(spec, lora, 1) < one


def _plan(args, capsys):
    code = main(["plan", "--model", TINY, "--train", "--batch", "2", "--seq", "32", "--precision", "fp32",
                 "--optimizer", "adamw", "--attn", "sdpa", "--tp", "1", "--pp", "1", "--json", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_calibrate_stores_and_later_plans_reuse(cache, capsys):
    code, out, _ = _plan([], capsys)
    assert code == 0
    assert not any("measured on this machine" in n for n in json.loads(out)["configs"][0]["notes"])
    code, out, _ = _plan(["--calibrate"], capsys)
    assert code == 0
    calibrated = json.loads(out)["configs"][0]
    assert any("measured on this machine" in n for n in calibrated["notes"])
    assert len(list(cache.glob("*.json"))) == 1
    code, out, _ = _plan([], capsys)  # no flag: the stored timings are used
    again = json.loads(out)["configs"][0]
    assert any("measured on this machine" in n for n in again["notes"])
    assert again["time"]["step_seconds"] == calibrated["time"]["step_seconds"]


def test_cli_calibrate_refuses_other_hardware(capsys):
    code, _, err = _plan(["--calibrate", "--hardware", "H100-80GB"], capsys)
    assert code == 2
    assert "--calibrate times operations on this machine" in err and "Traceback" not in err


def test_every_calibrated_family_probes_end_to_end():
    """Each family the operation model covers builds its op list, counts its program and gets a time."""
    from perfscale.specs import spec_from_config

    from tiny_configs import DECODER_FAMILIES, tiny_config

    for family in sorted(set(DECODER_FAMILIES) & set(cpu_step.CALIBRATED_FAMILIES)):
        spec = spec_from_config(tiny_config(family), f"tiny-{family}")
        mc = constants_for(spec)
        k = Knobs(batch=1, seq=16, attn="eager" if family == "gemma2" else "sdpa")  # gemma2 has no SDPA
        assert cpu_step.unsupported(mc, k) is None, family
        cal = cpu_probe.probe(cpu_step.probe_list(mc, k), Calibration(fingerprint={"cpu": "test", "threads": 1}),
                              min_time=0.0, spec=spec)
        compute, _ = cpu_step.calibrated_compute(mc, k, cal)
        assert compute > 0, family


def test_training_dropout_is_read_and_timed():
    """Training dropout (config value, else the family's transformers default) is part of the
    estimate: the operation model times its masks and SDPA with dropout, and a stored calibration
    without them leaves the configuration on the efficiency model instead of ignoring dropout."""
    from perfscale.estimate.constants import training_dropout
    from perfscale.specs import spec_from_config

    from tiny_configs import tiny_config

    gpt2 = load_model_spec("gpt2")
    assert training_dropout(gpt2) == 0.1
    assert training_dropout(load_model_spec(TINY)) == 0.0
    omitted = {k: v for k, v in tiny_config("gpt2").items() if not k.endswith("pdrop")}
    assert training_dropout(spec_from_config(omitted, "gpt2-defaults")) == 0.1  # GPT2Config's default
    assert training_dropout(spec_from_config(tiny_config("gpt2"), "gpt2-no-dropout")) == 0.0
    train = estimate(gpt2, RunConfig(TrainWorkload(batch=1, seq=128)), parse_topology("H100-80GB"))
    assert not any("dropout" in note for note in train.notes)

    k = Knobs(batch=2, seq=32)
    with_dropout = constants_for(spec_from_config(omitted, "gpt2-defaults"))
    without = constants_for(spec_from_config(tiny_config("gpt2"), "gpt2-no-dropout"))
    assert cpu_step.unsupported(with_dropout, k) is None
    signatures = {op.signature for op in cpu_step.step_ops(with_dropout, k)}
    assert {"dropout_fwd:fp32", "dropout_fwdbwd:fp32", "sdpa_fwd:4,4,32,16,0.1:fp32"} <= signatures
    assert not any("dropout" in op.signature or ",0.1:" in op.signature for op in cpu_step.step_ops(without, k))
    # A calibration of the dropout-free model lacks the masks: no silent zero, the efficiency model times it.
    cal = cpu_probe.probe(cpu_step.probe_list(without, k), Calibration(fingerprint={"cpu": "test", "threads": 1}),
                          min_time=0.0, spec=spec_from_config(tiny_config("gpt2"), "gpt2-no-dropout"))
    assert cpu_step.calibrated_compute(without, k, cal) is not None
    assert cpu_step.calibrated_compute(with_dropout, k, cal) is None
    cal = cpu_probe.probe(cpu_step.probe_list(with_dropout, k), cal, min_time=0.0, spec=spec_from_config(omitted, "gpt2-defaults"))
    assert cpu_step.calibrated_compute(with_dropout, k, cal)[0] > 0
    masks = sum(op.coef * cal.seconds(op.signature, op.size) for op in cpu_step.step_ops(with_dropout, k)
                if op.signature.startswith("dropout"))
    assert masks > 0  # forward + (forward+backward - forward) of every site
