"""The cited GEMM efficiency table (specs/data/gemm_efficiency.json) and its curve (issue 14 item 5)."""

from __future__ import annotations

import pytest

from perfscale.specs import get_hardware
from perfscale.specs.gemm_efficiency import gemm_efficiency, k_factor, plateau, table


def test_every_row_cites_a_source_and_is_a_fraction():
    doc = table()
    for key in ("half_k", "default_plateau"):
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
    assert effs[-1] == pytest.approx(plateau(name, "fp16"), rel=0.04)  # a 16k cube is near the plateau
    assert effs[0] < 0.15 * plateau(name, "fp16")  # K = 64: the tile prologue/epilogue dominates
    assert k_factor(table()["half_k"]["value"]) == pytest.approx(0.5)


def test_closed_form_scale_is_one_at_its_reference_and_grows_with_hidden():
    from perfscale.config import RunConfig
    from perfscale.estimate.constants import model_constants
    from perfscale.estimate.knobs import Knobs
    from perfscale.estimate.time import gemm_size_scale
    from perfscale.specs import TrainWorkload, spec_from_config

    def scale(h, tp):
        spec = spec_from_config({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_embd": h, "n_layer": 2,
                                 "n_head": h // 128, "n_positions": 2048, "vocab_size": 51200}, f"gpt-{h}")
        knobs = Knobs.from_run_config(RunConfig(TrainWorkload(4, 2048), precision="bf16-mixed", tp=tp))
        return gemm_size_scale(model_constants(spec), knobs)

    assert scale(2304, 1) == pytest.approx(1.0, abs=1e-3)  # GPT 1.7B of Narayanan et al. 2021 Table 1
    assert scale(768, 1) < scale(2304, 1) < scale(6144, 8) < scale(25600, 8) < 1.0 / table()["rows"][0]["plateau"]
