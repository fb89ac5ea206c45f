"""Human units at the edge only: bytes and seconds inside, GiB/GB and ms when shown.

At the bottom of the layers (with errors.py) because text for people is built in several layers:
report tables, and the plan's advice and error messages (tune/advice.py).
"""

from __future__ import annotations


def gib(n: float | None) -> str:
    return "n/a" if n is None else f"{n / 2**30:,.2f} GiB"


def count(n: float | None) -> str:
    """12_345_678 -> '12.35M'."""
    if n is None:
        return "n/a"
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            return f"{n / scale:,.2f}{suffix}"
    return f"{n:,.0f}"


def rate(n: float | None, unit: str) -> str:
    """Decimal prefixes for FLOP/s and bytes/s: 9.89e14 -> '989.0 TFLOP/s'."""
    if n is None:
        return "n/a"
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M")):
        if abs(n) >= scale:
            return f"{n / scale:,.1f} {prefix}{unit}"
    return f"{n:,.0f} {unit}"


def seconds(s: float | None) -> str:
    if s is None:
        return "n/a"
    if s < 1e-3:
        return f"{s * 1e6:,.1f} µs"
    if s < 1:
        return f"{s * 1e3:,.2f} ms"
    return f"{s:,.2f} s"
