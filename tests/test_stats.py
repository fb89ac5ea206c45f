"""Statistics of timing samples: summaries, bootstrap CIs, ratios, the stop rule."""

from __future__ import annotations

import numpy as np
import pytest

from perfscale.errors import InvalidConfigError
from perfscale.measure.stats import (
    StopChecker, StopRule, bootstrap_medians, hierarchical_bootstrap_medians, median_ci, ratio_of_medians, summarize,
)


def test_summary_matches_numpy_quantiles():
    x = np.random.default_rng(1).lognormal(0, 0.3, 501)
    s = summarize(x)
    assert s.n == 501
    assert s.median == pytest.approx(np.median(x))
    assert s.p10 == pytest.approx(np.quantile(x, 0.1))
    assert s.p90 == pytest.approx(np.quantile(x, 0.9))
    assert s.p99 == pytest.approx(np.quantile(x, 0.99))
    assert s.iqr == pytest.approx(np.quantile(x, 0.75) - np.quantile(x, 0.25))
    assert s.ci_low <= s.median <= s.ci_high
    assert s.to_dict()["rel_ci_half_width"] == pytest.approx((s.ci_high - s.ci_low) / 2 / s.median)


def test_median_ci_covers_true_median_about_95_percent():
    # Exponential(1): true median ln 2. 200 independent experiments of 41 samples each.
    rng = np.random.default_rng(7)
    hits = 0
    for i in range(200):
        lo, hi = median_ci(rng.exponential(1.0, 41), resamples=500, seed=i)
        hits += lo <= np.log(2) <= hi
    assert 0.88 <= hits / 200 <= 0.995


def test_ci_shrinks_with_more_samples():
    rng = np.random.default_rng(3)
    small = summarize(rng.normal(10, 1, 20))
    large = summarize(rng.normal(10, 1, 2000))
    assert large.rel_ci_half_width < small.rel_ci_half_width / 4


def test_bootstrap_is_seeded_and_handles_one_sample():
    x = np.arange(30.0)
    assert np.array_equal(bootstrap_medians(x, 100, seed=5), bootstrap_medians(x, 100, seed=5))
    assert np.all(bootstrap_medians([2.5], 10) == 2.5)
    with pytest.raises(ValueError):
        summarize([])


def test_ratio_detects_a_real_difference_and_not_a_fake_one():
    rng = np.random.default_rng(11)
    a = [rng.normal(1.0, 0.02, 50) for _ in range(3)]
    b = [rng.normal(1.3, 0.026, 50) for _ in range(3)]
    r = ratio_of_medians(a, b)
    assert r.ratio == pytest.approx(1.3, rel=0.02)
    assert r.significant and r.ci_low > 1.2
    same = ratio_of_medians(a, [rng.normal(1.0, 0.02, 50) for _ in range(3)])
    assert not same.significant


def test_hierarchical_bootstrap_widens_with_process_to_process_spread():
    rng = np.random.default_rng(2)
    tight = [rng.normal(1.0, 0.01, 40) for _ in range(4)]
    spread = [rng.normal(m, 0.01, 40) for m in (0.9, 1.0, 1.1, 1.05)]
    w_tight = np.ptp(np.quantile(hierarchical_bootstrap_medians(tight, 500), [0.025, 0.975]))
    w_spread = np.ptp(np.quantile(hierarchical_bootstrap_medians(spread, 500), [0.025, 0.975]))
    assert w_spread > 3 * w_tight


def test_stop_rule_converges_on_stable_samples():
    checker = StopChecker(StopRule(min_iters=5, min_time=0.0, target_rel_ci=0.02, max_time=100))
    samples = []
    rng = np.random.default_rng(0)
    reason = None
    while reason is None:
        samples.append(1.0 + rng.normal(0, 0.01))
        reason = checker.check(samples, elapsed=len(samples) * 0.01)
    assert reason == "converged"
    assert 5 <= len(samples) < 100
    assert checker.last_rel_ci <= 0.02


def test_stop_rule_respects_minimums_and_caps():
    rule = StopRule(min_iters=10, min_time=1.0, target_rel_ci=0.02, max_time=2.0, max_iters=50)
    checker = StopChecker(rule)
    stable = [1.0] * 12
    assert checker.check(stable[:9], elapsed=5.0 - 4.0) is None  # too few iterations
    assert checker.check(stable, elapsed=0.5) is None  # too little time
    assert checker.check(stable, elapsed=1.5) == "converged"
    noisy = list(np.random.default_rng(1).exponential(1.0, 20))
    assert StopChecker(rule).check(noisy, elapsed=2.5) == "time_cap"
    assert StopChecker(rule).check(noisy * 3, elapsed=1.5) == "iteration_cap"


@pytest.mark.parametrize("kwargs, fragment", [
    ({"min_iters": 1}, "min_iters"), ({"target_rel_ci": 2.0}, "target_rel_ci"), ({"min_time": 10, "max_time": 5}, "max_time"),
])
def test_stop_rule_rejects_bad_values(kwargs, fragment):
    with pytest.raises(InvalidConfigError, match=fragment):
        StopRule(**kwargs)
