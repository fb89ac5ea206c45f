"""Rank evaluated configurations by an objective; ties go to the simpler configuration."""

from __future__ import annotations

from perfscale.config.optimizer import ADAMW

OBJECTIVES = ("throughput", "memory", "cost")


def complexity(k) -> int:
    """How far a configuration is from the plain default (fewer changes first on ties)."""
    score = 0
    score += k.checkpointing if k.mode == "train" else 0
    score += (k.zero > 0) + bool(k.fsdp) + (k.offload != "none") * 2 if k.mode == "train" else 0
    score += (k.tp > 1) + (k.pp > 1) + (k.pp_virtual > 1) + (k.cp > 1) + (k.quantization != "none")
    score += 0 if k.mode != "train" or k.optimizer in ADAMW else 1
    score += k.sequence_parallel + k.fused_kernels + (k.selective_recompute if k.mode == "train" else 0)
    return score


def sort_key(objective: str, numbers, k) -> tuple:
    """numbers: an estimate/result.Evaluation."""
    if objective == "memory":
        return (numbers.peak, -numbers.tps, complexity(k))
    # throughput, and cost (device-hours per token = world / tokens-per-second: the same order on
    # a fixed topology).
    return (-round(numbers.tps, 6), complexity(k), -k.batch, numbers.peak)


def rank(evaluated: list[tuple], objective: str, top: int) -> list[tuple]:
    """evaluated: (numbers, knobs) pairs that fit; returns the best `top`."""
    return sorted(evaluated, key=lambda nk: sort_key(objective, nk[0], nk[1]))[:top]
