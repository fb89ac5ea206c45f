"""The range of each floating dtype, and how far a value is from its edges, in powers of two.

IEEE 754 binary16 (fp16): 5 exponent bits, 10 mantissa bits: largest finite 65504 = (2 - 2^-10) * 2^15,
smallest normal 2^-14 (~6.1e-5), smallest subnormal 2^-24 (~6.0e-8); anything smaller flushes to 0.
bfloat16: fp32's 8 exponent bits with 7 mantissa bits: largest (2 - 2^-7) * 2^127 (~3.39e38), smallest
normal 2^-126. fp32: largest (2 - 2^-23) * 2^127, smallest normal 2^-126, smallest subnormal 2^-149.
These equal `torch.finfo(dtype).max / .tiny / .smallest_normal` (checked in tests/test_debug_overflow.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DtypeRange:
    name: str  # fp16 | bf16 | fp32
    max: float  # largest finite value
    smallest_normal: float  # below it: subnormal (fewer significant bits)
    smallest_subnormal: float  # below half of it: rounds to zero


RANGES = {
    "fp16": DtypeRange("fp16", 65504.0, 2.0**-14, 2.0**-24),
    "bf16": DtypeRange("bf16", (2 - 2.0**-7) * 2.0**127, 2.0**-126, 2.0**-133),
    "fp32": DtypeRange("fp32", (2 - 2.0**-23) * 2.0**127, 2.0**-126, 2.0**-149),
}
# torch dtype names -> our names (float64 is checked as fp32's range would be meaningless: skipped).
TORCH_TO_NAME = {"torch.float16": "fp16", "torch.bfloat16": "bf16", "torch.float32": "fp32"}


def dtype_name(dtype) -> str | None:
    """'fp16' for torch.float16; None for a dtype without a range here (ints, bools, float64, fp8)."""
    return TORCH_TO_NAME.get(str(dtype))


def headroom_bits(abs_max: float | None, dtype: str) -> float | None:
    """log2(largest finite / abs_max): how many doublings the largest value can take before it overflows
    `dtype` (negative: already out of range). None for no finite non-zero value."""
    if abs_max is None or abs_max <= 0 or not math.isfinite(abs_max):
        return None
    return math.log2(RANGES[dtype].max / abs_max)


def largest_safe_scale(abs_max: float, dtype: str = "fp16") -> float:
    """The largest power of two s with abs_max * s <= dtype's largest finite value (a loss scale that
    keeps the largest gradient in range)."""
    return 2.0 ** math.floor(math.log2(RANGES[dtype].max / abs_max))


__all__ = ["RANGES", "DtypeRange", "dtype_name", "headroom_bits", "largest_safe_scale"]
