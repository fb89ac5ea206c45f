"""How close one cuBLAS GEMM gets to a GPU's dense peak, by generation, dtype and size (cited data).

efficiency(M, N, K) = plateau[gpu, dtype] x K / (K + half_k). The plateaus are published
maximum-achievable-matmul measurements (specs/data/gemm_efficiency.json, a source per row); the K term (each
output tile's prologue/epilogue amortised over its K loop) is one fitted constant (its source says on what). Used by the op-level step time (trace/op_time.py) for
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


def k_factor(k: float) -> float:
    """K / (K + half_k): 1 for a long K loop, 1/2 at K = half_k."""
    half = float(table()["half_k"]["value"])
    return k / (k + half) if k > 0 else 0.0


def gemm_efficiency(hardware_name: str, dtype: str, m: int, n: int, k: int) -> float:
    """Fraction of the dtype's dense peak one M x K by K x N GEMM reaches (before wave quantization)."""
    return plateau(hardware_name, dtype) * k_factor(k)


__all__ = ["gemm_efficiency", "k_factor", "plateau", "table"]
