"""Successive halving over a designed pool, with a synthetic, known response surface (no processes)."""

from __future__ import annotations

import itertools

from perfscale.tune.halving import Outcome, combine, design_pool, successive_halving, survivors, vary
from perfscale.tune.train_space import Candidate, baseline_candidate

KNOBS = {"micro_batch": (1, 2, 4, 8), "precision": ("fp32", "bf16-mixed"), "attn": ("sdpa", "eager"), "optimizer": ("adamw_torch", "adamw_torch_fused")}


def _space() -> list[Candidate]:
    out = []
    for mb, prec, attn, opt in itertools.product(*KNOBS.values()):
        out.append(Candidate(micro_batch=mb, grad_accum=8 // mb, precision=prec, attn=attn, optimizer=opt))
    return out


def _rate(c: Candidate) -> float:
    """Additive-in-log effects: bf16 +30%, micro-batch 4 best, eager -20%, foreach +5%."""
    r = 1000.0
    r *= {1: 0.5, 2: 0.8, 4: 1.1, 8: 1.0}[c.micro_batch]
    r *= 1.3 if c.precision == "bf16-mixed" else 1.0
    r *= 0.8 if c.attn == "eager" else 1.0
    r *= 1.05 if c.optimizer == "adamw_torch" else 1.0
    return r


def _ranked(space):
    base = baseline_candidate(8)
    return sorted(space, key=lambda c: (-c.micro_batch, len(c.differences(base)), c.name))


def test_pool_is_centre_baseline_and_one_knob_neighbours_round_robin():
    space = _space()
    base = baseline_candidate(8)
    center, pool, role = design_pool(_ranked(space), base, KNOBS, max_pool=20)
    assert center == base and pool[0] == base and role[base] is None
    for c in pool[1:]:
        assert len(c.differences(center)) == 1
        knob, value = role[c]
        assert c == vary(center, knob, value)
    # every knob is tried once before any knob's second value; micro-batch nearest first
    first_four = [role[c][0] for c in pool[1:5]]
    assert sorted(first_four) == sorted(KNOBS)
    assert [role[c][1] for c in pool if role[c] and role[c][0] == "micro_batch"] == [4, 2, 1]
    assert len(pool) == 1 + 3 + 1 + 1 + 1
    _, cut, cut_role = design_pool(_ranked(space), base, KNOBS, max_pool=3)
    assert len(cut) == 3 and set(cut_role) == set(cut)


def test_pool_only_holds_allowed_candidates():
    space = [c for c in _space() if c.attn == "sdpa"]  # eager pruned (say, by memory)
    _, pool, _ = design_pool(_ranked(space), baseline_candidate(8), KNOBS, max_pool=20)
    assert all(c.attn == "sdpa" for c in pool)


def test_halving_finds_additive_best_measuring_under_30_percent():
    space = _space()
    base = baseline_candidate(8)
    center, pool, role = design_pool(_ranked(space), base, KNOBS, max_pool=20)
    measured = []

    def measure(c, rung):
        measured.append((c, rung))
        return Outcome(c, rung, _rate(c), "ok")

    run = successive_halving(center, pool, role, measure, rungs=2)
    best = max(space, key=_rate)
    assert run.combined == best  # bf16 + micro-batch 4 + foreach, combined from one-knob wins
    assert run.ranking()[0].candidate == best
    distinct = {c for c, _ in measured}
    assert len(distinct) <= 0.3 * len(space)
    rung1 = [c for c, r in measured if r == 1]
    assert len(rung1) < len(pool) and best in rung1
    assert run.knob_gains["precision"][0] == "bf16-mixed" and "attn" not in run.knob_gains


def test_budget_stops_rung_zero_after_two_and_skips_later_rungs():
    space = _space()
    center, pool, role = design_pool(_ranked(space), baseline_candidate(8), KNOBS, max_pool=20)
    run = successive_halving(center, pool, role, lambda c, r: Outcome(c, r, _rate(c), "ok"), rungs=2, keep_going=lambda rung: False)
    assert len(run.rungs) == 1 and len(run.rungs[0]) == 2
    assert run.skipped == pool[2:]
    assert run.ranking()[0].rung == 0


def test_failed_trials_never_survive_and_search_goes_on():
    space = _space()
    center, pool, role = design_pool(_ranked(space), baseline_candidate(8), KNOBS, max_pool=20)
    broken = pool[2]

    def measure(c, rung):
        if c == broken:
            return Outcome(c, rung, None, "oom", "out of memory")
        return Outcome(c, rung, _rate(c), "ok")

    run = successive_halving(center, pool, role, measure, rungs=2)
    assert len(run.rungs[0]) == len(pool)
    assert broken not in [o.candidate for o in run.rungs[1]]
    assert all(o.rate for o in run.ranking())


def test_survivors_and_combine_threshold():
    cands = [Candidate(micro_batch=m, grad_accum=8 // m) for m in (1, 2, 4, 8)]
    outs = [Outcome(c, 0, float(c.micro_batch), "ok") for c in cands] + [Outcome(Candidate(micro_batch=8, grad_accum=1, attn="eager"), 0, None, "failed")]
    assert survivors(outs) == [cands[3], cands[2]]  # ceil(4/3) = 2
    center = cands[3]
    role = {center: None, cands[2]: ("micro_batch", 4)}
    noisy = {center: Outcome(center, 0, 100.0, "ok"), cands[2]: Outcome(cands[2], 0, 102.0, "ok")}
    assert combine(center, noisy, role, threshold=0.03) == (None, {})  # +2% is within the screen's noise
