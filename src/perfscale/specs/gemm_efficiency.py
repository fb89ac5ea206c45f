"""How close one cuBLAS GEMM gets to a GPU's dense peak, by generation, dtype and size (cited data).

efficiency(M, N, K) = plateau[gpu, dtype] x F / (F + half_flops), F = 2 M N K. The plateaus are published
maximum-achievable-matmul measurements (specs/data/gemm_efficiency.json, a source per row); the size term
is one fitted constant (its source says on what). Used by the op-level step time (trace/op_time.py) for
every GEMM, and by the closed-form step time (estimate/time.py) for a layer's representative GEMM.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources


@lru_cache(maxsize=1)
def table() -> dict:
    """The data file, parsed once."""
    return json.loads(resources.files("perfscale.specs").joinpath("data/gemm_efficiency.json").read_text())


def _generation(hardware_name: str) -> str | None:
    name = hardware_name.upper()
    gens = {row["gpu"] for row in table()["rows"]}
    for gen in sorted(gens, key=len, reverse=True):
        if name.startswith(gen):
            return gen
    return None


def plateau(hardware_name: str, dtype: str) -> float:
    """Large-GEMM fraction of the dtype's dense peak on this GPU (the default plateau where no row)."""
    gen = _generation(hardware_name)
    for row in table()["rows"]:
        if row["gpu"] == gen and row["dtype"] == dtype:
            return float(row["plateau"])
    return float(table()["default_plateau"]["value"])


def size_factor(flops: float) -> float:
    """F / (F + half_flops): 1 for a large GEMM, 1/2 at F = half_flops."""
    half = float(table()["half_flops"]["value"])
    return flops / (flops + half) if flops > 0 else 0.0


def gemm_efficiency(hardware_name: str, dtype: str, m: int, n: int, k: int) -> float:
    """Fraction of the dtype's dense peak one M x K by K x N GEMM reaches (before wave quantization)."""
    return plateau(hardware_name, dtype) * size_factor(2.0 * m * n * k)


__all__ = ["gemm_efficiency", "plateau", "size_factor", "table"]
