"""Unit checks of the estimate engine's formulas (inference memory, time model, speed)."""

from __future__ import annotations

import time

import pytest

from perfscale.config import RunConfig
from perfscale.estimate import estimate
from perfscale.estimate.core import constants_for, evaluate
from perfscale.estimate.inference import infer_memory, kv_bytes_per_token, largest_batch, longest_context
from perfscale.estimate.knobs import Knobs
from perfscale.specs import InferWorkload, TrainWorkload, load_model_spec, parse_topology


@pytest.fixture(scope="module")
def llama8b():
    return load_model_spec("llama-3.1-8b")


def test_kv_cache_formula(llama8b):
    # Pope et al. 2022: layers x 2 x kv_heads x head_dim x bytes per token (bf16 = 2, fp8 = 1).
    mc = constants_for(llama8b)
    per_tok = 32 * 2 * 8 * 128
    assert kv_bytes_per_token(mc, Knobs(mode="infer", precision="bf16")) == per_tok * 2
    assert kv_bytes_per_token(mc, Knobs(mode="infer", precision="bf16", kv_cache_dtype="fp8")) == per_tok
    assert kv_bytes_per_token(mc, Knobs(mode="infer", precision="bf16", tp=8)) == per_tok * 2 / 8
    mem = infer_memory(mc, Knobs(mode="infer", precision="bf16", batch=4, prompt=1000, new_tokens=24))
    assert mem["breakdown"]["kv_cache"] in (per_tok * 2 * 4 * 1000, per_tok * 2 * 4 * 1024)


def test_largest_batch_and_context_are_tight(llama8b):
    mc = constants_for(llama8b)
    k = Knobs(mode="infer", precision="bf16", batch=1, prompt=2048, new_tokens=256)
    cap = 80e9
    b = largest_batch(mc, k, cap)
    assert b > 1
    assert infer_memory(mc, k.copy(batch=b))["peak"] <= cap < infer_memory(mc, k.copy(batch=b + 1))["peak"]
    n = longest_context(mc, k, cap)
    assert n > 2048 + 256
    assert infer_memory(mc, k.copy(prompt=n + 1 - 256))["peak"] > cap


def test_decode_is_bandwidth_bound_and_int4_helps(llama8b):
    topo = parse_topology("H100-80GB")
    base = RunConfig(InferWorkload(1, 512, 128), precision="bf16")
    e16 = estimate(llama8b, base, topo)
    e4 = estimate(llama8b, RunConfig(InferWorkload(1, 512, 128), precision="bf16", quantization="int4"), topo)
    assert e16.binding == "bandwidth"
    # per-token time ~ bytes read / bandwidth: 16.06 GB of bf16 weights at 0.8 x 3.35 TB/s ~ 6 ms
    assert e16.time.per_token_seconds == pytest.approx(16.06e9 / (0.8 * 3.35e12), rel=0.05)
    assert e16.time.per_token_seconds / e4.time.per_token_seconds > 2.0


def test_pipeline_bubble_fraction(llama8b):
    topo = parse_topology("8xH100-80GB")
    for m in (4, 8, 32):
        e = estimate(llama8b, RunConfig(TrainWorkload(1, 2048, m), precision="bf16-mixed", pp=4, tp=2, zero=1), topo)
        split = e.time.split
        assert split["bubble"] / e.time.step_seconds <= (4 - 1) / (m + 4 - 1) + 1e-9
        # bubble = (p-1)/m x the per-stage work of one pass over m micro-batches (compute + TP traffic)
        work = split["compute"] + split["recompute"]
        assert work * 3 / m <= split["bubble"] <= (work + split["exposed_comm"]) * 3 / m


def test_training_flops_and_mfu(llama8b):
    # One H100, compute-bound: MFU equals the efficiency parameter (no comm, no bubble, no recompute).
    e = estimate(llama8b, RunConfig(TrainWorkload(1, 2048), precision="bf16-mixed", lora_r=16,
                                    lora_targets=("q_proj", "v_proj")), parse_topology("H100-80GB"), efficiency=0.4)
    assert e.time.split["exposed_comm"] == 0 and e.time.split["bubble"] == 0
    full = estimate(llama8b, RunConfig(TrainWorkload(1, 2048), precision="bf16-mixed", checkpointing=True),
                    parse_topology("H100-80GB"), efficiency=0.4)
    assert full.time.split["recompute"] == pytest.approx(full.time.split["compute"] / 3, rel=1e-9)
    assert full.time.mfu == pytest.approx(0.4 * 3 / 4, rel=1e-6)  # recompute is not model FLOPs


def test_overheads_are_separate_lines(llama8b):
    e = estimate(llama8b, RunConfig(TrainWorkload(1, 1024), precision="bf16-mixed", checkpointing=True,
                                    optimizer="adamw-8bit"), parse_topology("H100-80GB"))
    labels = [o.label for o in e.memory.overheads]
    assert "CUDA context" in labels and all(o.source for o in e.memory.overheads)
    assert sum(e.memory.breakdown.values()) == pytest.approx(e.memory.peak_bytes, abs=8)
    assert e.memory.total_bytes == e.memory.peak_bytes + sum(o.bytes for o in e.memory.overheads)


def test_one_estimate_under_a_millisecond(llama8b):
    mc = constants_for(llama8b)
    topo = parse_topology("2x8xH100-80GB")
    k = Knobs(batch=2, seq=4096, accum=8, precision="bf16-mixed", tp=2, pp=2, zero=1, checkpointing=True)
    evaluate(mc, k, topo.hardware, topo.nodes, topo.devices_per_node)
    n, start = 500, time.perf_counter()
    for _ in range(n):
        evaluate(mc, k, topo.hardware, topo.nodes, topo.devices_per_node)
    assert (time.perf_counter() - start) / n < 1e-3
