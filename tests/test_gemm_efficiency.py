"""The cited GEMM efficiency table (specs/data/gemm_efficiency.json) and its curve (issue 14 item 5)."""

from __future__ import annotations

import pytest

from perfscale.specs import get_hardware
from perfscale.specs.gemm_efficiency import gemm_efficiency, plateau, size_factor, table


def test_every_row_cites_a_source_and_is_a_fraction():
    doc = table()
    for key in ("half_flops", "default_plateau"):
        assert doc[key]["source"] and doc[key]["value"] > 0
    seen = set()
    for row in doc["rows"]:
        assert row["source"].strip(), row
        assert 0.3 < row["plateau"] <= 1.0, row
        assert (row["gpu"], row["dtype"]) not in seen, row  # one row per generation and dtype
        seen.add((row["gpu"], row["dtype"]))


def test_published_plateaus_are_read_for_the_catalogue_names():
    # MAMF table (stas00/ml-engineering): A100 SXM 271.2 / 312, H100 SXM 794.5 / 989 TFLOPS
    assert plateau(get_hardware("A100-80GB").name, "bf16") == pytest.approx(271.2 / 312, abs=1e-3)
    assert plateau(get_hardware("H100-80GB").name, "bf16") == pytest.approx(794.5 / 989, abs=1e-3)
    assert plateau("L4", "bf16") == table()["default_plateau"]["value"]  # no row: the stated default


@pytest.mark.parametrize("gpu", ["A100-80GB", "H100-80GB", "V100-32GB"])
def test_efficiency_grows_with_the_gemm_and_saturates_at_the_plateau(gpu):
    name = get_hardware(gpu).name
    sizes = [64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384]
    effs = [gemm_efficiency(name, "fp16", s, s, s) for s in sizes]
    assert all(a < b for a, b in zip(effs[:-1], effs[1:], strict=True))
    assert effs[-1] == pytest.approx(plateau(name, "fp16"), rel=0.01)  # a 16k cube is at the plateau
    assert effs[0] < 0.1 * plateau(name, "fp16")  # a 64-cube GEMM is launch-and-ramp bound
    assert size_factor(table()["half_flops"]["value"]) == pytest.approx(0.5)
