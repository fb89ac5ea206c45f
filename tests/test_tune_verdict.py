"""The verdict of `perfscale tune` on synthetic paired outcomes: a real 10% difference under a shared
machine's drift is resolved, an unresolvable one says why (with the noise and the budget that would
do), the same speed is said as such, and the winner is only what the final comparison proved."""

from __future__ import annotations

import math
import re
from dataclasses import replace

import numpy as np
import pytest

from perfscale.measure.result import BenchResult
from perfscale.measure.stats import ratio_of_medians
from perfscale.tune.halving import HalvingRun, Outcome
from perfscale.tune.train_final import RESOLVE, final_compare, paired_speedup, why_it_won
from perfscale.tune.train_space import baseline_candidate

SEQ = 16
BASE = baseline_candidate(8)
FASTER = replace(BASE, precision="bf16-mixed")
TOKENS = 8 * SEQ


def _pair(rng, speedup: float, drift: float, jitter: float, n: int, level: float = 1.0):
    """Step times of A and B taken in alternation: a drift shared by neighbouring steps (the machine), a
    small jitter of each step, and B `speedup` times faster."""
    walk = np.exp(np.cumsum(rng.normal(0, drift, n)))  # the machine's speed wanders (a random walk in log)
    a = level * walk * np.exp(rng.normal(0, jitter, n))
    b = level * walk / speedup * np.exp(rng.normal(0, jitter, n))
    mk = lambda cand, s: BenchResult(config=cand.bench_config("perfscale-tiny-llama", SEQ), status="ok", samples=list(s),  # noqa: E731
                                     tokens_per_iter=TOKENS)
    return mk(BASE, a), mk(FASTER, b)


def _runs(speedup, drift, jitter, n, processes, seed=0):
    rng = np.random.default_rng(seed)
    pairs = [_pair(rng, speedup, drift, jitter, n, level=rng.uniform(0.6, 1.6)) for _ in range(processes)]
    return [a for a, _ in pairs], [b for _, b in pairs]


def test_a_real_10_percent_difference_under_drift_is_resolved_only_paired():
    # The machine's speed wanders by tens of percent within a run (FIELD-NOTES); each process runs at its own level.
    base, chal = _runs(1.10, drift=0.08, jitter=0.03, n=30, processes=3)
    sp = paired_speedup(base, chal, FASTER.name, seconds=40.0, budget_s=120.0)
    assert sp["significant"] and sp["ci_low"] > 1.0
    assert sp["ci_low"] <= 1.10 <= sp["ci_high"] and sp["ratio"] == pytest.approx(1.10, rel=0.03)
    assert sp["processes"] == 3 and sp["pairs"] == 90
    assert sp["verdict"].startswith(f"{FASTER.name} is 1.1") and "use it" in sp["verdict"]
    assert sp["noise"]["step_variation"] > 0.1  # the drift the pairing cancelled is reported
    # The same samples compared unpaired (pooled medians, the old final) cannot tell the two apart.
    per_token = lambda runs: [[s / TOKENS for s in r.samples] for r in runs]  # noqa: E731
    unpaired = ratio_of_medians(per_token(chal), per_token(base))
    assert unpaired.ci_low < 1 < unpaired.ci_high


def test_two_processes_give_an_interval_from_the_pairs_not_a_one_df_t():
    base, chal = _runs(1.10, drift=0.08, jitter=0.03, n=20, processes=2, seed=3)
    sp = paired_speedup(base, chal, FASTER.name, seconds=20.0, budget_s=60.0)
    assert sp["significant"] and 1.0 < sp["ci_low"] < 1.10 < sp["ci_high"] < 1.25


def test_noise_too_large_says_why_and_what_budget_would_resolve_it():
    base, chal = _runs(1.05, drift=0.3, jitter=0.4, n=8, processes=1, seed=1)
    sp = paired_speedup(base, chal, FASTER.name, seconds=30.0, budget_s=120.0)
    assert not sp["significant"] and sp["resolution"] > RESOLVE
    v = sp["verdict"]
    assert v.startswith("not resolved: this machine's speed varied +-") and "cannot be resolved in 30 s" in v
    budget = int(re.search(r"--budget-seconds (\d+)", v).group(1))
    assert budget == sp["rerun_budget_s"] and budget > 120
    # 1/sqrt(n): the suggested extra time brings the half-width to RESOLVE
    assert budget - 120 == pytest.approx(30 * ((sp["resolution"] / RESOLVE) ** 2 - 1), abs=30)


def test_same_speed_with_a_narrow_interval_is_said_plainly():
    base, chal = _runs(1.0, drift=0.05, jitter=0.01, n=30, processes=3, seed=2)
    sp = paired_speedup(base, chal, FASTER.name, seconds=30.0, budget_s=120.0)
    assert not sp["significant"] and sp["resolution"] < 0.02
    assert sp["verdict"].startswith(f"keep the Trainer defaults: {FASTER.name} runs at the same speed within +-")
    assert sp["rerun_budget_s"] is None


def test_slower_challenger_is_said_as_slower():
    base, chal = _runs(0.8, drift=0.05, jitter=0.02, n=20, processes=2, seed=4)
    sp = paired_speedup(base, chal, FASTER.name, seconds=30.0, budget_s=120.0)
    assert sp["significant"] and sp["ratio"] < 1 and "20% slower" in sp["verdict"]


class _Store:
    def __init__(self):
        self.kept = []

    def keep(self, result):
        self.kept.append(result)

    def runs(self, group, fingerprint):
        class Stored:
            def __init__(self, result):
                self.result = result
        return [Stored(r) for r in self.kept if r.group == group and r.config.fingerprint() == fingerprint]


def _outcome(cand, rate, rung=1):
    return Outcome(cand, rung, rate, "ok", result=BenchResult(config=cand.bench_config("perfscale-tiny-llama", SEQ), status="ok",
                                                               samples=[TOKENS / rate] * 3, tokens_per_iter=TOKENS))


@pytest.mark.parametrize("speedup, proven", [(1.10, True), (1.0, False), (0.8, False)])
def test_the_winner_is_what_the_final_proved_and_a_resume_reuses_the_pairs(speedup, proven):
    rng = np.random.default_rng(7)
    calls = []

    def run_pair(a, b, rep):
        calls.append(rep)
        assert a.fingerprint() == BASE.bench_config("m", SEQ).fingerprint() and b.fingerprint() == FASTER.bench_config("m", SEQ).fingerprint()
        ra, rb = _pair(rng, speedup, 0.05, 0.02, 20)
        ra.config, rb.config = a, b
        return ra, rb

    ranking = [_outcome(BASE, 100.0), _outcome(FASTER, 150.0)]  # the halving put the baseline first: the final still compares
    store = _Store()
    fc = final_compare(ranking, BASE, "m", SEQ, 3, store, "g-final", False, run_pair, lambda _m: None, budget_s=60.0)
    assert calls == [0, 1, 2] and fc.challenger == FASTER and len(store.kept) == 6
    assert fc.winner == (FASTER if proven else BASE)
    assert fc.speedup["processes"] == 3 and fc.speedup["significant"] == (speedup != 1.0)
    again = final_compare(ranking, BASE, "m", SEQ, 3, store, "g-final", True, run_pair, lambda _m: None, budget_s=60.0)
    assert calls == [0, 1, 2] and again.reused == 6 and again.speedup["ratio"] == fc.speedup["ratio"]
    why = why_it_won(fc, HalvingRun(center=FASTER, pool=[BASE, FASTER], role={BASE: None, FASTER: None},
                                    rungs=[[_outcome(BASE, 100.0, 0), _outcome(FASTER, 150.0, 0)]]))
    line = next(w for w in why if w.startswith("precision: fp32 -> bf16-mixed"))
    assert "the final paired comparison" in line  # the one changed knob: the final's own statistics, not the screen
    if not proven:
        assert why[0].startswith("the Trainer defaults stay")


def test_a_challenger_that_breaks_in_the_final_gives_way_to_the_next():
    third = replace(BASE, optimizer="adamw_torch")
    rng = np.random.default_rng(8)

    def run_pair(a, b, rep):
        if b.fingerprint() == FASTER.bench_config("m", SEQ).fingerprint():
            return (BenchResult(config=a, status="failed", reason="worker died"), BenchResult(config=b, status="failed", reason="worker died"))
        return _pair(rng, 1.2, 0.05, 0.02, 20)

    ranking = [_outcome(FASTER, 150.0), _outcome(third, 120.0), _outcome(BASE, 100.0)]
    fc = final_compare(ranking, BASE, "m", SEQ, 2, _Store(), "g", False, run_pair, lambda _m: None)
    assert fc.challenger == third and any("failed" in n for n in fc.notes)
    assert fc.speedup["processes"] == 2 and math.isfinite(fc.speedup["ratio"])


def test_screening_estimates_are_labelled_with_their_spread():
    two = replace(BASE, precision="bf16-mixed", optimizer="adamw_torch")
    fc = final_compare([_outcome(two, 200.0)], BASE, "m", SEQ, 1, _Store(), "g", False,
                       lambda a, b, rep: _pair(np.random.default_rng(1), 1.5, 0.05, 0.02, 20), lambda _m: None)
    neighbour = replace(BASE, precision="bf16-mixed")
    run = HalvingRun(center=BASE, pool=[BASE, neighbour, two], role={BASE: None, neighbour: ("precision", "bf16-mixed"), two: None},
                     rungs=[[_outcome(BASE, 100.0, 0), _outcome(neighbour, 130.0, 0), _outcome(two, 200.0, 0)]])
    why = why_it_won(fc, run)
    line = next(w for w in why if w.startswith("precision"))
    assert "+30% tokens/s [" in line and "screening estimate" in line and "not interleaved" in line
    # the optimizer's effect: the one-knob pair (bf16, bf16 + adamw_torch) measured at rung 0
    assert any(w.startswith("optimizer: adamw_torch_fused -> adamw_torch (+54% tokens/s [") and "screening estimate" in w for w in why)
    alone = why_it_won(fc, replace(run, rungs=[run.rungs[0][:1] + run.rungs[0][2:]]))
    assert any(w.startswith("optimizer") and "not measured alone" in w for w in alone)


def test_too_few_pairs_are_no_verdict_even_when_they_agree():
    base, chal = _runs(1.5, drift=0.0, jitter=0.001, n=3, processes=1, seed=5)  # 3 pairs, all 1.5x: their range is tiny
    sp = paired_speedup(base, chal, FASTER.name, seconds=50.0, budget_s=120.0)
    assert sp["ci_low"] > 1 and not sp["significant"]
    assert sp["verdict"].startswith("not resolved: only 3 alternating step pair(s) fit in the budget")
    assert sp["rerun_budget_s"] > 120 and f"--budget-seconds {sp['rerun_budget_s']:.0f}" in sp["verdict"]


def test_no_paired_run_finishes_keeps_the_defaults_with_their_trial_figures():
    def run_pair(a, b, rep):
        return (BenchResult(config=a, status="oom", reason="killed"), BenchResult(config=b, status="oom", reason="killed"))

    ranking = [_outcome(FASTER, 150.0), _outcome(BASE, 100.0)]
    fc = final_compare(ranking, BASE, "m", SEQ, 2, _Store(), "g", False, run_pair, lambda _m: None)
    assert fc.winner == BASE and fc.speedup["ratio"] is None and "did not finish" in fc.speedup["verdict"]
    assert fc.winner_doc(SEQ)["throughput"]["median"] == pytest.approx(100.0)
