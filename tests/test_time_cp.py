"""Context parallelism's time term (estimate/time.py): ring attention's K/V traffic, overlapped with attention."""

from __future__ import annotations

import pytest

from perfscale.config import RunConfig
from perfscale.estimate import estimate
from perfscale.estimate import time as et
from perfscale.specs import TrainWorkload, load_model_spec, parse_topology

SPEC = load_model_spec("llama-3.1-8b")


def _est(cp: int, topo: str, seq: int = 8192):
    config = RunConfig(TrainWorkload(1, seq, 1), precision="bf16-mixed", optimizer="adamw", checkpointing=True, cp=cp)
    return estimate(SPEC, config, parse_topology(topo))


def _train_time(cp: int, per_node: int) -> dict:
    from perfscale.estimate.constants import model_constants
    from perfscale.estimate.knobs import Knobs

    config = RunConfig(TrainWorkload(1, 8192, 1), precision="bf16-mixed", optimizer="adamw", checkpointing=True, cp=cp)
    hw = parse_topology("H100-80GB").hardware
    # an explicit efficiency: the token-proportional closed form, so that cp's split of the work is exact (the default
    # GPU step by part also counts the optimizer step, which every cp rank runs over the same weights)
    return et.train_time(model_constants(SPEC), Knobs.from_run_config(config), hw, 1, per_node, 0.45, SPEC.params.total)


def test_cp_splits_the_compute_and_adds_the_ring_traffic():
    one, two = _train_time(1, 1), _train_time(2, 2)
    # each of the 2 cp ranks computes half of every sequence: same replica, half the FLOPs per device
    assert two["split"]["compute"] == pytest.approx(one["split"]["compute"] / 2, rel=1e-9)
    # ring: (cp - 1) K/V blocks per layer, forward + 2x backward + the recomputed forward, over NVLink
    hw = parse_topology("1x2xH100-80GB").hardware
    kv_block = 8192 / 2 * 2 * SPEC.num_kv_heads * SPEC.head_dim * 2
    ring = (1 + et.CP_BACKWARD_FACTOR + 1) * SPEC.num_layers * 1 * kv_block / et._bw(hw, False)
    # the 2 cp ranks hold the same weights: their bf16 gradients are all-reduced (DP x CP group)
    grads = 2 * (2 - 1) / 2 * SPEC.params.total * 2 / et._bw(hw, False)
    assert one["comm_total"] == 0.0
    assert two["comm_total"] == pytest.approx(ring + grads, rel=1e-6)
    # at 8K tokens the ring hides behind the blockwise attention; the gradient all-reduce behind the backward
    assert two["split"]["exposed_comm"] == pytest.approx(one["split"]["exposed_comm"], abs=1e-9)
    assert two["step"] == pytest.approx(one["step"] / 2, rel=1e-6)


def test_a_slow_link_exposes_the_ring():
    # cp 16 over 2 nodes: the K/V ring crosses InfiniBand; short sequences leave little attention to hide it
    far = _est(16, "2x8xH100-80GB", seq=2048)
    near = _est(8, "1x8xH100-80GB", seq=2048)
    assert far.time.split["exposed_comm"] > near.time.split["exposed_comm"]
