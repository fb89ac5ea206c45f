"""The closed-form step time against published at-scale GPU training runs (issue 14 item 5: within 15%).

The rows, their layouts and sources are in benchmarks/plan_vs_published.py: Megatron-LM's Table 1 (Narayanan et al.
2021) with the layouts of the paper's own reproduction script (NVIDIA/Megatron-LM examples/sc21/run_table_1.sh), and
Llama 3 405B (Dubey et al. 2024). The GPU step's two fitted constants (estimate/gpu_step.py SOFTWARE_EFFICIENCY,
MEMORY_TRAFFIC_FUSED) were chosen on these rows together with the single-GPU ones, so they are fits, not held-out
checks. Logged in benchmarks/LOG.md (2026-12-02)."""

from __future__ import annotations

import pytest

from bench_module import load_benchmark

bench = load_benchmark("plan_vs_published")

TOLERANCE = 0.15  # the bar
# Rows outside it (none today: the 1T row, -18.4% with one efficiency constant, is -2.8% with the GPU step by part).
KNOWN_GAP: dict[str, float] = {}


def _params():
    for row in bench.ROWS:
        marks = [pytest.mark.xfail(strict=True, reason="known gap, see KNOWN_GAP")] if row[0] in KNOWN_GAP else []
        yield pytest.param(row, id=row[0], marks=marks)


@pytest.mark.parametrize("row", list(_params()))
def test_estimated_throughput_matches_the_published_run(row):
    result = bench.run_row(row)
    assert result["fits"], result
    assert abs(result["error"]) <= TOLERANCE, result


def test_the_known_gap_does_not_grow():
    for row in bench.ROWS:
        if row[0] in KNOWN_GAP:
            result = bench.run_row(row)
            assert abs(result["error"]) <= KNOWN_GAP[row[0]], result
