"""The proof of a training tune: the best challenger against the baseline, paired, and the words for
what it means.

Each paired run builds both configurations in one fresh process and times their optimizer steps in
alternation (A B, B A, A B, ...: neither always goes first), so the machine's drift -- which on a
shared 2-core box moves a step's time by 20-60% within minutes (FIELD-NOTES) -- hits both alike and
cancels in the per-pair ratio time(B)/time(A). The speed-up is the median of those ratios over every
pair of every process, with its 95% CI from the two-level bootstrap of measure/stats.py (processes,
then pairs within each process): process-to-process variation widens it, no t-quantile is used. When
the interval still contains 1, the verdict says which: a difference too small to matter (the CI is
narrow) or a machine too noisy to tell within the budget (with the noise measured and the budget
that would resolve a 10% difference).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from perfscale.measure.stats import CONFIDENCE, Ratio, hierarchical_bootstrap_medians, ratio_of_medians
from perfscale.tune.train_budget import MIN_PAIRS
from perfscale.tune.train_space import Candidate

# The difference the final comparison is asked to resolve: a 10% speed-up is worth acting on (issue 19).
RESOLVE = 0.10

KNOB_LABELS = {"micro_batch": "micro-batch x accumulation", "precision": "precision", "optimizer": "optimizer",
               "checkpointing": "gradient checkpointing", "attn": "attention", "compile": "torch.compile",
               "threads": "threads", "workers": "DataLoader workers", "lora_r": "LoRA rank",
               "processes": "processes (DDP ranks, threads = cores / processes)"}


def _per_token(runs) -> list[list[float]]:
    return [[s / (r.tokens_per_iter or 1) for s in r.samples] for r in runs if r.ok and r.has_timing]


def launch_of(cand: Candidate, runs) -> dict[str, Any]:
    """How the measured runs of `cand` were launched: processes (DDP ranks under torchrun) and OpenMP/torch threads
    per process, read from the runs themselves (what the emitted command must set), else the candidate's knob."""
    threads = None
    for r in runs:
        threads = (r.distributed or {}).get("threads_per_rank") or threads
        if threads is None and cand.processes == 1:
            threads = cand.threads or ((r.environment or {}).get("threads") or {}).get("torch_intra_op")
    return {"processes": cand.processes, "threads_per_rank": threads or cand.threads,
            "strategy": "ddp" if cand.processes > 1 else "none", "from": "measured runs" if threads else "the candidate's knob"}


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
    winner: Candidate  # what tune recommends after the final: the challenger when it proved faster, else the baseline
    baseline: Candidate | None  # None: the baseline does not fit, it was not run
    challenger: Candidate | None = None  # what was compared against the baseline (the halving's best change)
    winner_runs: list = field(default_factory=list)
    baseline_runs: list = field(default_factory=list)
    challenger_runs: list = field(default_factory=list)
    speedup: dict[str, Any] = field(default_factory=dict)
    reused: int = 0
    measured: int = 0
    winner_screen_rate: float | None = None
    seconds: float = 0.0
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
            "reasons": [r.reason for r in runs if not r.ok], "launch": launch_of(cand, ok),
        }

    def winner_doc(self, seq: int) -> dict[str, Any]:
        return self._doc(self.winner, self.winner_runs, seq)

    def baseline_doc(self, seq: int, fallback: Candidate | None = None) -> dict[str, Any]:
        if self.baseline is None:
            doc = self._doc(fallback, [], seq) if fallback is not None else {}
            return doc | {"what": "Trainer defaults at the same global batch", "status": "pruned: does not fit, not run"}
        return self._doc(self.baseline, self.baseline_runs, seq) | {"what": "Trainer defaults at the same global batch"}


def final_compare(ranking, baseline: Candidate | None, model: str, seq: int, repeats: int, store, group: str,
                  resume: bool, run_pair, say, budget_s: float | None = None, run_apart=None, config_of=None) -> FinalComparison:
    """The best non-baseline candidate of the last rung (the next one if it breaks here) against the
    baseline, in `repeats` paired runs; the result says whether it is proven faster.

    `run_pair(config_a, config_b, repeat)` returns (result A, result B) of one paired run (a fresh
    process, or the tune worker); runs already in the store under `group` (a resumed tune) are reused,
    new ones are stored at once. Without a runnable baseline, the best candidate wins unproven.

    A challenger of several processes (DDP ranks under torchrun) cannot share a process with the baseline:
    `run_apart(config, repeat)` measures one configuration in its own launch, and each repeat runs both,
    the order alternating (B A, A B, ...), compared unpaired (`unpaired_speedup`), over every rank's tokens.
    `config_of(candidate)` gives the BenchConfig (default: `candidate.bench_config(model, seq)`).
    """
    import time

    started = time.perf_counter()
    counters = {"reused": 0, "measured": 0}
    challengers = [o for o in ranking if o.candidate != baseline]
    if baseline is None or not challengers:
        only = ranking[0]
        fc = FinalComparison(winner=only.candidate, baseline=baseline, winner_screen_rate=only.rate)
        fc.winner_runs = [only.result] if only.result is not None else []
        fc.baseline_runs = fc.winner_runs if only.candidate == baseline else []
        fc.speedup = _unpaired_speedup(fc)
        return fc
    config_of = config_of or (lambda c: c.bench_config(model, seq))
    base_cfg = config_of(baseline)
    fc = None
    notes: list[str] = []
    for outcome in challengers[:2]:
        chal = outcome.candidate
        chal_cfg = config_of(chal)
        apart = run_apart is not None and (chal.processes > 1 or baseline.processes > 1)
        fc = FinalComparison(winner=chal, baseline=baseline, challenger=chal, winner_screen_rate=outcome.rate, notes=notes)
        sub = f"{group}-{chal_cfg.fingerprint()[:8]}"
        for rep in range(repeats):
            pair = _stored_pair(store, sub, base_cfg, chal_cfg, rep) if resume else None
            if pair is not None:
                counters["reused"] += 2
            else:
                if apart:
                    say(f"final {rep + 1}/{repeats}: {chal.name} and the baseline, separate launches")
                    order = (chal_cfg, base_cfg) if rep % 2 == 0 else (base_cfg, chal_cfg)  # interleaved: B A, A B, ...
                    got = {cfg.fingerprint(): run_apart(cfg, rep) for cfg in order}
                    pair = (got[base_cfg.fingerprint()], got[chal_cfg.fingerprint()])
                else:
                    say(f"final {rep + 1}/{repeats}: {chal.name} vs baseline, alternating steps")
                    pair = run_pair(base_cfg, chal_cfg, rep)
                for result in pair:
                    result.group, result.repeat = sub, rep
                    store.keep(result)  # a failing store: a fallback file (tune reports it), not a lost measurement
                counters["measured"] += 2
            fc.baseline_runs.append(pair[0])
            fc.challenger_runs.append(pair[1])
            if not (pair[0].ok and pair[1].ok):
                break  # a configuration that breaks here breaks again: do not spend the budget on it
        if any(a.ok and b.ok for a, b in zip(fc.baseline_runs, fc.challenger_runs, strict=True)):
            break
        bad = next(r for pair in zip(fc.baseline_runs, fc.challenger_runs, strict=True) for r in pair if not r.ok)
        fc.notes.append(f"the paired run of {chal.name} against the baseline failed ({bad.config.display}: {bad.status}, {bad.reason})")
    fc.reused, fc.measured = counters["reused"], counters["measured"]
    fc.seconds = time.perf_counter() - started
    if run_apart is not None and (fc.challenger.processes > 1 or baseline.processes > 1):
        fc.speedup = unpaired_speedup(fc.baseline_runs, fc.challenger_runs, fc.challenger.name, fc.seconds, budget_s)
    else:
        fc.speedup = paired_speedup(fc.baseline_runs, fc.challenger_runs, fc.challenger.name, fc.seconds, budget_s)
    proven = bool(fc.speedup.get("significant")) and (fc.speedup.get("ratio") or 0) > 1
    fc.winner = fc.challenger if proven else baseline
    fc.winner_runs = fc.challenger_runs if proven else fc.baseline_runs
    if not any(r.ok for r in fc.baseline_runs):  # no paired run finished: the baseline's halving trial gives its figures
        trial = next((o.result for o in ranking if o.candidate == baseline and o.result is not None and o.result.ok), None)
        if trial is not None:
            fc.baseline_runs = [trial, *fc.baseline_runs]
            fc.winner_runs = fc.baseline_runs if fc.winner == baseline else fc.winner_runs
    return fc


def _stored_pair(store, group: str, cfg_a, cfg_b, rep: int):
    found = []
    for cfg in (cfg_a, cfg_b):
        hit = next((s.result for s in store.runs(group=group, fingerprint=cfg.fingerprint()) if s.result.repeat == rep), None)
        if hit is None:
            return None
        found.append(hit)
    return tuple(found)


def pair_log_ratios(base_runs, chal_runs) -> list[list[float]]:
    """Per paired process: log(time per token of the challenger / of the baseline), step pair by step pair."""
    groups = []
    for a, b in zip(base_runs, chal_runs, strict=True):
        if not (a.ok and b.ok) or not a.samples or len(a.samples) != len(b.samples):
            continue
        ta, tb = a.tokens_per_iter or 1, b.tokens_per_iter or 1
        groups.append([math.log((sb / tb) / (sa / ta)) for sa, sb in zip(a.samples, b.samples, strict=True) if sa > 0 and sb > 0])
    return [g for g in groups if g]


def machine_noise(base_runs) -> dict[str, Any] | None:
    """How much the baseline's own step time moved during the final: +-half its p10-p90 range, relative to its
    median, over every timed step of every process (the drift that pairing cancels)."""
    steps = [s / (r.tokens_per_iter or 1) for r in base_runs if r.ok for s in r.samples]
    if len(steps) < 2:
        return None
    p10, med, p90 = np.quantile(steps, [0.1, 0.5, 0.9])
    medians = [float(np.median(r.samples)) / (r.tokens_per_iter or 1) for r in base_runs if r.ok and r.samples]
    between = (max(medians) / min(medians) - 1) if len(medians) > 1 else None
    return {"step_variation": float((p90 - p10) / 2 / med), "between_processes": between, "steps": len(steps)}


def paired_speedup(base_runs, chal_runs, name: str, seconds: float, budget_s: float | None) -> dict[str, Any]:
    """time(baseline)/time(challenger) per token from the paired runs, its 95% CI, and the verdict in words."""
    groups = pair_log_ratios(base_runs, chal_runs)
    noise = machine_noise(base_runs)
    common = {"confidence": CONFIDENCE, "method": "paired: both in each process, alternating steps; two-level bootstrap "
              "(processes, then step pairs) of the median ratio", "challenger": name, "noise": noise,
              "final_seconds": seconds}
    if not groups:
        bad = next((r for pair in zip(base_runs, chal_runs, strict=True) for r in pair if not r.ok), None)
        why = f"{bad.config.display}: {bad.status}, {bad.reason}" if bad else "no timed pairs"
        return common | {"ratio": None, "ci_low": None, "ci_high": None, "significant": None, "processes": 0, "pairs": 0,
                         "verdict": f"no speed-up figure: the final paired run did not finish ({why}); keep the Trainer defaults"}
    logs = np.concatenate([np.asarray(g) for g in groups])
    med = float(np.median(logs))
    boots = hierarchical_bootstrap_medians(groups)
    lo, hi = np.quantile(boots, [(1 - CONFIDENCE) / 2, 1 - (1 - CONFIDENCE) / 2])
    speed = Ratio(math.exp(-med), math.exp(-hi), math.exp(-lo))  # time(A)/time(B): > 1 means the challenger is faster
    resolution = (speed.ci_high - speed.ci_low) / 2 / speed.ratio
    out = common | {"ratio": speed.ratio, "ci_low": speed.ci_low, "ci_high": speed.ci_high, "significant": speed.significant,
                    "processes": len(groups), "pairs": int(logs.size), "resolution": resolution}
    if logs.size < MIN_PAIRS:  # a bootstrap of 2-5 pairs is their range: no verdict rests on it
        out["significant"] = False
        rerun = math.ceil(((budget_s or 0.0) + seconds * (3 * MIN_PAIRS / logs.size - 1)) / 30) * 30
        step = float(np.median([s for r in base_runs if r.ok for s in r.samples])) if noise else float("nan")
        out["verdict"] = (f"not resolved: only {logs.size} alternating step pair(s) fit in the budget (a step of the baseline takes "
                          f"{step:.1f} s on this machine now; {MIN_PAIRS} per process is the least a verdict rests on); best change "
                          f"{name}: {speed.ratio:.2f}x; keep the Trainer defaults for now, or rerun with --budget-seconds {rerun} "
                          "(or on a quieter machine)")
        out["rerun_budget_s"] = float(rerun)
        return out
    out["verdict"], out["rerun_budget_s"] = final_verdict(speed, name, len(groups), int(logs.size), noise, resolution, seconds, budget_s)
    return out


def unpaired_speedup(base_runs, chal_runs, name: str, seconds: float, budget_s: float | None) -> dict[str, Any]:
    """time(baseline)/time(challenger) per token from separate launches (interleaved, not paired step by step):
    the ratio of the pooled medians with a 95% CI from independent two-level bootstraps (processes, then steps).
    Per token means every rank's tokens over the slowest rank's step: global tokens per second, like for like."""
    ga, gb = _per_token(base_runs), _per_token(chal_runs)
    noise = machine_noise(base_runs)
    common = {"confidence": CONFIDENCE, "challenger": name, "noise": noise, "final_seconds": seconds,
              "method": "unpaired: each configuration in its own launch (a multi-process challenger cannot share a process), "
                        "launches interleaved; ratio of medians of time per global token, two-level bootstrap each"}
    if not ga or not gb:
        bad = next((r for r in [*base_runs, *chal_runs] if not r.ok), None)
        why = f"{bad.config.display}: {bad.status}, {bad.reason}" if bad else "no timed steps"
        return common | {"ratio": None, "ci_low": None, "ci_high": None, "significant": None, "processes": 0, "pairs": 0,
                         "verdict": f"no speed-up figure: the final runs did not finish ({why}); keep the Trainer defaults"}
    r = ratio_of_medians(ga, gb)  # time(challenger)/time(baseline) per token
    speed = Ratio(1 / r.ratio, 1 / r.ci_high, 1 / r.ci_low)
    steps = min(sum(len(g) for g in ga), sum(len(g) for g in gb))
    resolution = (speed.ci_high - speed.ci_low) / 2 / speed.ratio
    out = common | {"ratio": speed.ratio, "ci_low": speed.ci_low, "ci_high": speed.ci_high, "significant": speed.significant,
                    "processes": min(len(ga), len(gb)), "pairs": steps, "resolution": resolution}
    if steps < MIN_PAIRS:
        out["significant"] = False
        out["verdict"] = (f"not resolved: only {steps} timed step(s) per configuration fit in the budget ({MIN_PAIRS} is the least "
                          f"a verdict rests on); best change {name}: {speed.ratio:.2f}x; keep the Trainer defaults for now, "
                          "or rerun with a larger --budget-seconds")
        return out
    out["verdict"], out["rerun_budget_s"] = final_verdict(speed, name, out["processes"], steps, noise, resolution, seconds, budget_s)
    out["verdict"] = out["verdict"].replace("alternating step pairs", "timed steps per configuration (unpaired launches)")
    return out


def final_verdict(speed: Ratio, name: str, processes: int, pairs: int, noise: dict | None, resolution: float,
                  seconds: float, budget_s: float | None) -> tuple[str, float | None]:
    """(the verdict a person can act on, the --budget-seconds that would resolve a RESOLVE difference or None)."""
    how = f"95% CI, {processes} process{'es' if processes != 1 else ''} x {pairs // max(1, processes)} alternating step pairs"
    interval = f"[{speed.ci_low:.2f}, {speed.ci_high:.2f}]"
    if speed.significant and speed.ratio > 1:
        return f"{name} is {speed.ratio:.2f}x the speed of the Trainer defaults {interval} ({how}): use it", None
    if speed.significant:
        return (f"keep the Trainer defaults: the best change measured, {name}, is {1 - speed.ratio:.0%} slower "
                f"{interval} ({how})"), None
    if resolution <= RESOLVE:
        return (f"keep the Trainer defaults: {name} runs at the same speed within +-{resolution:.0%} "
                f"({speed.ratio:.2f}x {interval}, {how}); no difference larger than {resolution:.0%} on this machine"), None
    # Too noisy: the CI half-width shrinks as 1/sqrt(pairs), so resolving RESOLVE needs (resolution/RESOLVE)^2 times the pairs.
    more = seconds * ((resolution / RESOLVE) ** 2 - 1)
    rerun = math.ceil(((budget_s or 0.0) + more) / 30) * 30
    varied = f"+-{noise['step_variation']:.0%}" if noise else "by an unknown amount"
    return (f"not resolved: this machine's speed varied {varied} during the run; differences below {resolution:.0%} "
            f"cannot be resolved in {seconds:.0f} s (best change {name}: {speed.ratio:.2f}x {interval}, {how}); "
            f"keep the Trainer defaults for now, or rerun with --budget-seconds {rerun:.0f} (or on a quieter machine)"), float(rerun)


def _unpaired_speedup(fc: FinalComparison) -> dict[str, Any]:
    """No pair to run: the baseline was the only candidate measured, or it does not fit."""
    if fc.baseline is not None and fc.winner == fc.baseline:
        return {"ratio": 1.0, "ci_low": 1.0, "ci_high": 1.0, "significant": False, "confidence": CONFIDENCE,
                "verdict": "keep the Trainer defaults: no other configuration finished a trial within the budget"}
    return {"ratio": None, "ci_low": None, "ci_high": None, "significant": None, "confidence": CONFIDENCE,
            "verdict": "no speed-up figure: the Trainer defaults do not fit this machine (any configuration that runs beats them)"}


def _value(c: Candidate, knob: str) -> str:
    if knob == "micro_batch":
        return f"{c.micro_batch}x{c.grad_accum}"
    v = getattr(c, knob)
    if knob == "threads" and v is None:
        return "default"
    return str(v)


def _screen_ratio(a, b) -> Ratio | None:
    """Speed of b over a from their screening trials (one short trial each): time(a)/time(b) per token."""
    ga, gb = _per_token([a.result]) if a.result is not None else [], _per_token([b.result]) if b.result is not None else []
    if not ga or not gb:
        return None
    r = ratio_of_medians(ga, gb)
    return Ratio(1 / r.ratio, 1 / r.ci_high, 1 / r.ci_low)


def _effect(r: Ratio, rung: int) -> str:
    return (f"{r.ratio - 1:+.0%} tokens/s [{r.ci_low - 1:+.0%}, {r.ci_high - 1:+.0%}], screening estimate: one short "
            f"trial each at rung {rung}, not interleaved")


def why_it_won(fc: FinalComparison, run, records=None) -> list[str]:
    """For each knob the challenger changes from the defaults: its measured effect -- from the final paired
    comparison when that knob is the only change, else the screening estimate with its 95% CI (one short
    trial each, labelled so); for each knob kept: the alternative that was screened and lost."""
    baseline = fc.baseline
    chal = fc.challenger or fc.winner
    if baseline is None:
        return [f"{chal.name}: the Trainer defaults do not fit, so there is nothing to compare it with"]
    first: dict[Candidate, Any] = {}
    for rung in run.rungs:
        for o in rung:
            if o.rate and o.candidate not in first:  # first (rung 0) trials: the one-knob pairs were measured together there
                first[o.candidate] = o
    pairs = [(a, b) for a in first for b in first if a != b and len(b.differences(a)) == 1]
    out = []
    diffs = chal.differences(baseline)
    sp = fc.speedup or {}
    for knob in diffs:
        label = KNOB_LABELS.get(knob, knob)
        cv = _value(chal, knob)
        if len(diffs) == 1 and sp.get("ratio") is not None and sp.get("ci_low") is not None:
            out.append(f"{label}: {_value(baseline, knob)} -> {cv} ({sp['ratio'] - 1:+.0%} tokens/s "
                       f"[{sp['ci_low'] - 1:+.0%}, {sp['ci_high'] - 1:+.0%}], the final paired comparison)")
            continue
        match = [(a, b) for a, b in pairs if knob in b.differences(a) and _value(b, knob) == cv and _value(a, knob) == _value(baseline, knob)]
        ratio = _screen_ratio(first[match[0][0]], first[match[0][1]]) if match else None
        if ratio is not None:
            out.append(f"{label}: {_value(baseline, knob)} -> {cv} ({_effect(ratio, first[match[0][1]].rung)})")
        else:
            out.append(f"{label}: {_value(baseline, knob)} -> {cv} (found with the other changes; not measured alone)")
    center = run.center
    for cand, role in run.role.items():
        if role is None or role[0] in diffs or cand not in first or center not in first:
            continue
        knob, _value_ = role
        if _value(chal, knob) != _value(center, knob):
            continue
        ratio = _screen_ratio(first[center], first[cand])
        if ratio is not None and ratio.ratio <= 1.0:
            out.append(f"kept {KNOB_LABELS.get(knob, knob)} {_value(chal, knob)}: {_value(cand, knob)} measured "
                       f"{_effect(ratio, first[cand].rung)}")
    if fc.winner == baseline:
        if fc.challenger is None:
            out.insert(0, "the Trainer defaults: no other configuration finished a trial")
        else:
            out.insert(0, f"the Trainer defaults stay: the best change found, {chal.name}, was not proven faster in the "
                          "final paired comparison (its changes below)")
    return out


__all__ = ["RESOLVE", "FinalComparison", "final_compare", "final_verdict", "machine_noise", "pair_log_ratios", "paired_speedup",
           "pooled_rate", "unpaired_speedup", "why_it_won"]
