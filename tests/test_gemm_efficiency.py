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


def test_closed_form_gemm_rate_grows_with_hidden_and_stays_under_the_plateau():
    from perfscale.config import RunConfig
    from perfscale.estimate.constants import model_constants
    from perfscale.estimate.gpu_step import SOFTWARE_EFFICIENCY, gemm_rate
    from perfscale.estimate.knobs import Knobs
    from perfscale.specs import TrainWorkload, get_hardware, spec_from_config

    hw = get_hardware("A100-80GB")

    def rate(h, tp, precision="bf16-mixed"):
        spec = spec_from_config({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_embd": h, "n_layer": 2,
                                 "n_head": h // 128, "n_positions": 2048, "vocab_size": 51200}, f"gpt-{h}")
        knobs = Knobs.from_run_config(RunConfig(TrainWorkload(4, 2048), precision=precision, tp=tp))
        peak = hw.peak(knobs.prec.peak_key)
        return gemm_rate(model_constants(spec), knobs, hw, peak) / peak

    top = table()["rows"][0]["plateau"] * SOFTWARE_EFFICIENCY  # A100 bf16
    assert rate(768, 1) < rate(2304, 1) < rate(6144, 8) < rate(25600, 8) < top
    # fp32 runs on CUDA cores at 1/16 of the tensor-core peak: the per-tile overhead is that much smaller a share
    assert rate(768, 1, "fp32") > rate(768, 1)
