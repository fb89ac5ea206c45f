"""Rank evaluated configurations by an objective; ties go to the simpler configuration."""

from __future__ import annotations

from perfscale.config.run_config import KNOB_MODE, KNOB_WEIGHT, MODES

OBJECTIVES = ("throughput", "memory", "cost")

# Per mode, the (knob, weight, plain values) that complexity counts: RunConfig's _knob(weight=..., plain=...),
# a knob of one mode counted in that mode only.
_TERMS = {mode: tuple((name, weight, plain) for name, (weight, plain) in KNOB_WEIGHT.items()
                      if weight and KNOB_MODE.get(name, mode) == mode) for mode in MODES}


def complexity(k) -> int:
    """How far a configuration is from the plain default (fewer changes first on ties): the weight of
    every knob not at a plain value, e.g. ZeRO, FSDP, each parallel degree > 1, quantization, an optimizer
    other than AdamW, each memory saver switched on; CPU offload counts 2."""
    return sum(weight for name, weight, plain in _TERMS[k.mode] if getattr(k, name) not in plain)


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
