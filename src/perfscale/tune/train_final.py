"""The proof of a training tune: the winner against the baseline, interleaved, one fresh process per
run, and the words for why it won.

Order A, B, A, B ... (A = baseline) so slow drifts of a shared machine hit both alike. The speed-up
is time(A)/time(B) per token, its 95% CI from the two-level bootstrap of measure/stats.py
(processes, then iterations), the same statistics as `perfscale compare`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from perfscale.measure.compare import speed_verdict
from perfscale.measure.stats import CONFIDENCE, Ratio, hierarchical_bootstrap_medians, ratio_of_medians
from perfscale.tune.train_space import Candidate

KNOB_LABELS = {"micro_batch": "micro-batch x accumulation", "precision": "precision", "optimizer": "optimizer",
               "checkpointing": "gradient checkpointing", "attn": "attention", "compile": "torch.compile",
               "threads": "threads", "workers": "DataLoader workers", "lora_r": "LoRA rank"}


def _per_token(runs) -> list[list[float]]:
    return [[s / (r.tokens_per_iter or 1) for s in r.samples] for r in runs if r.ok and r.has_timing]


def pooled_rate(runs) -> dict[str, Any] | None:
    """tokens/s over every timed iteration of every process, with a 95% CI over processes and iterations."""
    groups = _per_token(runs)
    if not groups:
        return None
    med = float(np.median(np.concatenate(groups)))
    boots = hierarchical_bootstrap_medians(groups)
    lo, hi = np.quantile(boots, [(1 - CONFIDENCE) / 2, 1 - (1 - CONFIDENCE) / 2])
    return {"unit": "tokens/s", "median": 1 / med, "ci_low": 1 / hi, "ci_high": 1 / lo, "processes": len(groups)}


@dataclass
class FinalComparison:
    winner: Candidate
    baseline: Candidate | None  # None: the baseline does not fit, it was not run
    winner_runs: list = field(default_factory=list)
    baseline_runs: list = field(default_factory=list)
    speedup: dict[str, Any] = field(default_factory=dict)
    reused: int = 0
    measured: int = 0
    winner_screen_rate: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def environment(self) -> dict[str, Any]:
        return next((r.environment for r in self.winner_runs + self.baseline_runs if r.environment), {})

    def _doc(self, cand: Candidate, runs, seq: int) -> dict[str, Any]:
        ok = [r for r in runs if r.ok]
        mem = [r.peak_memory_bytes for r in ok if r.peak_memory_bytes is not None]
        live = [r.memory.get("peak_live_tensor_bytes") for r in ok if r.memory.get("peak_live_tensor_bytes")]
        comp = [r.compile_s for r in ok if r.compile_s is not None]
        return {
            "name": cand.name, "knobs": cand.knobs(), "run_config": cand.run_config(seq).to_dict(),
            "throughput": pooled_rate(runs), "peak_memory_bytes": float(np.median(mem)) if mem else None,
            "peak_live_tensor_bytes": float(np.median(live)) if live else None,
            "compile_s": float(np.median(comp)) if cand.compile and comp else None,
            "processes": len(runs), "statuses": [r.status for r in runs], "store_ids": [r.store_id for r in runs],
            "reasons": [r.reason for r in runs if not r.ok],
        }

    def winner_doc(self, seq: int) -> dict[str, Any]:
        return self._doc(self.winner, self.winner_runs, seq)

    def baseline_doc(self, seq: int, fallback: Candidate | None = None) -> dict[str, Any]:
        if self.baseline is None:
            doc = self._doc(fallback, [], seq) if fallback is not None else {}
            return doc | {"what": "Trainer defaults at the same global batch", "status": "pruned: does not fit, not run"}
        return self._doc(self.baseline, self.baseline_runs, seq) | {"what": "Trainer defaults at the same global batch"}


def final_compare(ranking, baseline: Candidate | None, model: str, seq: int, repeats: int, store, group: str,
                  resume: bool, run_one, say) -> FinalComparison:
    """Winner (the best of the last rung; the next one if it breaks here) vs baseline, interleaved.

    `run_one(config, repeat)` measures one run (a fresh process, or a trial of a fresh worker); runs
    already in the store under `group` (a resumed tune) are reused, new ones are stored at once.
    """
    counters = {"reused": 0, "measured": 0}

    def run(config, rep):
        if resume:
            for stored in store.runs(group=group, fingerprint=config.fingerprint()):
                if stored.result.repeat == rep:
                    counters["reused"] += 1
                    return stored.result
        result = run_one(config, rep)
        result.group, result.repeat = group, rep
        store.keep(result)  # a failing store: a fallback file (tune reports it), not a lost measurement
        counters["measured"] += 1
        return result

    base_cfg = baseline.bench_config(model, seq) if baseline is not None else None
    base_runs: list = []
    fc = None
    for outcome in ranking[:2]:
        winner = outcome.candidate
        fc = FinalComparison(winner=winner, baseline=baseline, winner_screen_rate=outcome.rate)
        win_cfg = winner.bench_config(model, seq)
        for rep in range(repeats):
            if base_cfg is not None and len(base_runs) <= rep:
                say(f"final {rep + 1}/{repeats}: baseline")
                base_runs.append(run(base_cfg, rep))
            if winner != baseline:
                say(f"final {rep + 1}/{repeats}: {winner.name}")
                fc.winner_runs.append(run(win_cfg, rep))
        fc.baseline_runs = base_runs
        if winner == baseline:
            fc.winner_runs = base_runs
        if any(r.ok for r in fc.winner_runs):
            break
        fc.notes.append(f"{winner.name} won the halving but failed in the final comparison: {fc.winner_runs[0].reason}")
    fc.reused, fc.measured = counters["reused"], counters["measured"]
    fc.speedup = _speedup(fc)
    return fc


def _speedup(fc: FinalComparison) -> dict[str, Any]:
    if fc.winner == fc.baseline:
        return {"ratio": 1.0, "ci_low": 1.0, "ci_high": 1.0, "significant": False, "confidence": CONFIDENCE,
                "verdict": "the Trainer defaults were the fastest configuration measured: keep them"}
    a, b = _per_token(fc.baseline_runs), _per_token(fc.winner_runs)
    if fc.baseline is None:
        return {"ratio": None, "ci_low": None, "ci_high": None, "significant": None, "confidence": CONFIDENCE,
                "verdict": "no speed-up figure: the Trainer defaults do not fit this machine (any configuration that runs beats them)"}
    if not a:
        why = fc.baseline_runs[0].reason if fc.baseline_runs else "not run"
        return {"ratio": None, "ci_low": None, "ci_high": None, "significant": None, "confidence": CONFIDENCE,
                "verdict": f"no speed-up: the baseline did not finish ({fc.baseline_runs[0].status if fc.baseline_runs else 'n/a'}: {why})"}
    if not b:
        return {"ratio": None, "ci_low": None, "ci_high": None, "significant": None, "confidence": CONFIDENCE,
                "verdict": "no speed-up: the winner did not finish in the final comparison"}
    r = ratio_of_medians(a, b)  # time(B)/time(A)
    speed = Ratio(1 / r.ratio, 1 / r.ci_high, 1 / r.ci_low)
    return {"ratio": speed.ratio, "ci_low": speed.ci_low, "ci_high": speed.ci_high, "significant": speed.significant,
            "confidence": CONFIDENCE, "processes_per_config": min(len(a), len(b)),
            "verdict": speed_verdict("baseline (Trainer defaults)", "winner", speed)}


def _value(c: Candidate, knob: str) -> str:
    if knob == "micro_batch":
        return f"{c.micro_batch}x{c.grad_accum}"
    v = getattr(c, knob)
    if knob == "threads" and v is None:
        return "default"
    return str(v)


def why_it_won(winner: Candidate, baseline: Candidate, run, records) -> list[str]:
    """For each knob the winner changes: the one-knob comparison that measured it; for each knob it
    keeps: the alternative that was measured and lost."""
    rates: dict[Candidate, tuple[float, int]] = {}
    for rung in run.rungs:
        for o in rung:
            if o.rate and o.candidate not in rates:  # first (rung 0) trials: the one-knob pairs were measured together there
                rates[o.candidate] = (o.rate, o.rung)
    pairs = [(a, b) for a in rates for b in rates if a != b and len(b.differences(a)) == 1]
    out = []
    diffs = winner.differences(baseline)
    for knob in diffs:
        label = KNOB_LABELS.get(knob, knob)
        wv = _value(winner, knob)
        match = [(a, b) for a, b in pairs if knob in b.differences(a) and _value(b, knob) == wv and _value(a, knob) == _value(baseline, knob)]
        if match:
            a, b = match[0]
            gain = rates[b][0] / rates[a][0] - 1
            out.append(f"{label}: {_value(baseline, knob)} -> {wv} ({gain:+.0%} tokens/s when only this changed, rung {rates[b][1]})")
        else:
            out.append(f"{label}: {_value(baseline, knob)} -> {wv} (found with the other winning knobs; not measured alone)")
    center = run.center
    for cand, role in run.role.items():
        if role is None or role[0] in diffs or cand not in rates or center not in rates:
            continue
        knob, value = role
        if _value(winner, knob) != _value(center, knob):
            continue
        gain = rates[cand][0] / rates[center][0] - 1
        if gain <= 0.0:
            out.append(f"kept {KNOB_LABELS.get(knob, knob)} {_value(winner, knob)}: {_value(cand, knob)} measured {gain:+.0%}")
    if not diffs:
        out.insert(0, "the Trainer defaults: no measured change beat them")
    return out


__all__ = ["FinalComparison", "final_compare", "pooled_rate", "why_it_won"]
