"""`perfscale tune decoder`: for a causal LM: KV cache, compile, batch size, prompt buckets, int8 weights.

Every variant generates greedily for the same seeded prompts (a spread of lengths, as a server
sees); the gate is identical greedy tokens to eager + dynamic cache + batch 1 + no padding + fp32
weights, on every pass. Int8 weight-only variants (runtimes/decoder_quant.py) are tried with each
backend that runs here (torchao when installed, torch's own kernel); one that is not installed is
skipped with a note, unless the user named it (then an error with its install line).

Timing is interleaved: every variant first runs one untimed pass (it compiles, warms the allocator),
then `passes` rounds each run every variant once, in an order rotated by one each round, so that
the drift of a shared machine hits all variants alike. The speed-up of a variant is the median over
rounds of time(reference)/time(variant) in the same round (the same prompts and tokens, so the ratio
of tokens/s), with a bootstrap CI (perfscale.measure.stats); tokens/s, TTFT and time per output
token are summarised per variant. Recompilations are counted per variant (torch._dynamo counters),
and once more with dynamo's capture-only backend with and without buckets, so the report shows what
bucketing bounds.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from perfscale.errors import InvalidConfigError

QUICK_LENGTHS = (5, 9, 14, 22, 31)
FULL_LENGTHS = (12, 20, 33, 47, 64, 90, 117, 150)


@dataclass
class DecoderVariant:
    label: str
    settings: dict[str, Any]
    status: str = "ok"  # ok | inaccurate | failed | slower
    reason: str | None = None
    gate: dict[str, Any] | None = None
    graphs: int = 0  # dynamo graphs compiled over warm-up and timed passes
    recompile_limit_hit: bool = False
    tokens_per_s: dict[str, Any] | None = None  # stats Summary of tokens/s over passes
    ttft_s: dict[str, Any] | None = None  # Summary of TTFT over generate calls
    tpot_s: dict[str, Any] | None = None  # Summary of time per output token
    speedup: dict[str, Any] | None = None  # median over rounds of time(reference)/time(this), with CI
    warmup_s: float | None = None
    quant: dict[str, Any] | None = None  # decoder_quant.QuantInfo of an int8 variant
    pass_times_s: list[float] = field(default_factory=list)  # wall time of each timed pass, by round

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DecoderTuneResult:
    model: str
    prompt_lengths: list[int]
    new_tokens: int
    variants: list[DecoderVariant]
    winner: str
    winner_settings: dict[str, Any]
    verdict: str
    recompiles: dict[str, Any]  # {"unbucketed": graphs, "bucketed": graphs, "bucketed_bound": n, "buckets": [...], "lengths": [...]}
    passes: int
    environment: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0
    kind: str = "decoder"
    notes: list[str] = field(default_factory=list)
    quant_backends: list[str] = field(default_factory=list)  # int8 weight-only backends tried (the others: notes)
    measurement: dict[str, Any] = field(default_factory=dict)  # how the times were taken

    @property
    def apply_snippet(self) -> str:
        lines = [
            "import perfscale.apply",
            "kw = perfscale.apply.decoder(\"tuned.json\")",
            "model = AutoModelForCausalLM.from_pretrained(name, **kw['from_pretrained'])",
        ]
        if self.winner_settings.get("quant"):
            lines += ["from perfscale.runtimes.decoder_quant import quantize_decoder",
                      f"model, _ = quantize_decoder(model, {self.winner_settings['quant']!r}, {self.winner_settings['quant_backend']!r})"]
        lines.append("out = model.generate(**inputs, **kw['generate'])  # pad prompts to kw['runtime']['buckets'] (left padding)")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"apply_snippet": self.apply_snippet}

    def save(self, path: str | os.PathLike) -> Path:
        from perfscale.user_files import write_text

        return write_text(path, json.dumps(self.to_dict(), indent=2, default=str) + "\n", "--save")


def _candidates(quick: bool, include_compile: bool, buckets: tuple[int, ...], batch: int, new_tokens: int,
                quant_backends: list[str] = ()):
    from perfscale.runtimes.decoder import DecoderSettings

    # Bucketed static caches get one length for the whole bucket set (largest bucket + new tokens), written into
    # the settings so that perfscale.apply.decoder's generate kwargs carry it (else each bucket compiles its own decode).
    cache_len = buckets[-1] + new_tokens
    out = [DecoderSettings(cache="static"), DecoderSettings(batch=batch),
           DecoderSettings(cache="static", batch=batch, buckets=buckets, max_cache_len=cache_len)]
    if include_compile:
        out.append(DecoderSettings(cache="static", compile=True, buckets=buckets, max_cache_len=cache_len))
        if not quick:
            out.append(DecoderSettings(cache="static", compile=True, batch=batch, buckets=buckets, max_cache_len=cache_len))
    int8 = "int8-weight-only"
    # Int8 weights alone (eager, dynamic cache, batch 1: only the weights differ from the reference), per backend;
    # with compile, once on top of the compiled bucketed variant (the first backend: torchao when it runs here).
    out += [DecoderSettings(quant=int8, quant_backend=b) for b in quant_backends]
    if include_compile and quant_backends:
        out.append(DecoderSettings(cache="static", compile=True, buckets=buckets, max_cache_len=cache_len, quant=int8,
                                   quant_backend=quant_backends[0]))
    return out


def _failure(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def measure_interleaved(model, settings_list, prompts, new_tokens: int, passes: int, progress=None) -> list[DecoderVariant]:
    """Variants of settings_list[0] (the reference: its tokens are the gate) and the others, timed in interleaved rounds.

    Each variant warms up once (untimed: compiles), then each of `passes` rounds runs every live variant once, the
    order rotated by one per round. A variant that crashes (or cannot be built, e.g. nothing to quantize) is a
    `failed` result with the reason; the others go on. The compiled variants share the model's forward code object,
    and so dynamo's recompile limit: it is raised to cover all of them for the measurement (each variant's own graphs
    stay counted and reported), so that no variant silently falls back to eager because another compiled first."""
    import torch._dynamo

    from perfscale.measure.stats import summarize
    from perfscale.runtimes.decoder import DecoderRunner, graph_bound, greedy_agreement, reset_compiler

    progress = progress or (lambda _m: None)
    variants = [DecoderVariant(label=s.label(), settings=s.to_dict()) for s in settings_list]
    runners: dict[int, Any] = {}
    firsts: dict[int, Any] = {}
    runs: dict[int, list[Any]] = {}
    compiled = [s for s in settings_list if s.compile]
    needed = sum(graph_bound(s.buckets) if s.buckets else 2 * len({len(p) for p in prompts}) for s in compiled)
    knob = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"  # older torch
    limit = max(int(getattr(torch._dynamo.config, knob)), needed)
    reset_compiler()
    with torch._dynamo.config.patch(**{knob: limit}):
        try:
            for i, (s, v) in enumerate(zip(settings_list, variants, strict=True)):
                progress(f"warming up {v.label}")
                try:
                    runner = DecoderRunner(model, s)
                    v.quant = runner.quant_info.to_dict() if runner.quant_info else None
                    t0 = time.perf_counter()
                    firsts[i] = runner.run(prompts, new_tokens)
                    v.warmup_s = time.perf_counter() - t0
                    runners[i], runs[i] = runner, []
                except Exception as exc:  # a variant that crashes is a result, not a crash of the tool
                    v.status, v.reason = "failed", _failure(exc)
                if i == 0 and v.status == "failed":
                    return variants  # no reference, no gate: the caller says why
            for r in range(passes):
                progress(f"round {r + 1}/{passes}: every variant once, interleaved")
                live = sorted(runners)
                shift = r % len(live) if live else 0
                for i in live[shift:] + live[:shift]:
                    try:
                        runs[i].append(runners[i].run(prompts, new_tokens))
                    except Exception as exc:
                        variants[i].status, variants[i].reason = "failed", _failure(exc)
                        runners.pop(i).close()
                        runs.pop(i)
        finally:
            for runner in runners.values():
                runner.close()
            reset_compiler()
    ref_first = firsts.get(0)
    for i, v in enumerate(variants):
        if i not in runs or not runs[i]:
            continue
        first, timed = firsts[i], runs[i]
        v.graphs = first.graphs + sum(r.graphs for r in timed)
        v.recompile_limit_hit = any(r.recompile_limit_hit for r in [first, *timed])
        v.pass_times_s = [r.total_s for r in timed]
        if i == 0:
            v.gate = {"reference": True, "passed": True}
        else:
            v.gate = greedy_agreement(ref_first.tokens, first.tokens)
            later = [greedy_agreement(ref_first.tokens, r.tokens)["passed"] for r in timed]
            v.gate["all_passes_identical"] = v.gate["passed"] and all(later)
            if not v.gate["all_passes_identical"]:
                v.gate["passed"] = False
                differ = v.gate["prompts"] - v.gate["identical_prompts"]
                v.status = "inaccurate"
                v.reason = (f"greedy tokens differ from eager on {differ} of {v.gate['prompts']} prompts "
                            f"({v.gate['prefix_agreement']:.0%} of the tokens before the first difference)" if differ
                            else "greedy tokens changed between passes")
        v.tokens_per_s = summarize([r.tokens_per_s for r in timed]).to_dict()
        v.ttft_s = summarize([x for r in timed for x in r.ttft_s]).to_dict()
        v.tpot_s = summarize([x for r in timed for x in r.tpot_s]).to_dict()
    ref = variants[0]
    for v in variants[1:]:
        if v.pass_times_s and ref.pass_times_s:
            # Paired by round: both ran within the same minute of the machine's load.
            n = min(len(v.pass_times_s), len(ref.pass_times_s))
            ratios = [a / b for a, b in zip(ref.pass_times_s[:n], v.pass_times_s[:n], strict=True)]
            sm = summarize(ratios)
            v.speedup = {"ratio": sm.median, "ci_low": sm.ci_low, "ci_high": sm.ci_high, "rounds": n,
                         "significant": sm.ci_low > 1 or sm.ci_high < 1, "per_round": ratios}
    return variants


def count_recompiles(model, prompts, buckets: tuple[int, ...], new_tokens: int = 2) -> dict[str, Any]:
    """Graphs dynamo compiles (capture-only backend: no codegen cost) with and without buckets.

    Bucketed, at most two prefill graphs per bucket (padded, and unpadded: an exactly full bucket) plus one decode
    graph (the static cache has one length for the bucket set): `graph_bound`; unbucketed, each distinct length adds
    a prefill graph (and a decode graph when the cache grows) until dynamo's recompile limit, then runs eagerly.
    """
    from perfscale.runtimes.decoder import DecoderRunner, DecoderSettings, graph_bound, reset_compiler

    out: dict[str, Any] = {"lengths": sorted({len(p) for p in prompts}), "buckets": list(buckets),
                           "bucketed_bound": graph_bound(buckets)}
    for name, b in (("unbucketed", None), ("bucketed", buckets)):
        reset_compiler()
        runner = DecoderRunner(model, DecoderSettings(cache="static", compile=True, compile_backend="eager", buckets=b))
        try:
            run = runner.run(prompts, new_tokens)
        finally:
            runner.close()
        out[name] = run.graphs
        out[f"{name}_limit_hit"] = run.recompile_limit_hit
    reset_compiler()
    return out


def _default_buckets(longest: int) -> tuple[int, ...]:
    """DEFAULT_BUCKETS up to the first one that holds the longest prompt."""
    from perfscale.runtimes.decoder import DEFAULT_BUCKETS

    below = [b for b in DEFAULT_BUCKETS if b < longest]
    return tuple(below + [next((b for b in DEFAULT_BUCKETS if b >= longest), DEFAULT_BUCKETS[-1])])


def tune_decoder(
    model: str = "perfscale-tiny-llama", *, prompt_lengths: list[int] | None = None, new_tokens: int = 16, batch: int = 4,
    buckets: tuple[int, ...] | None = None, quick: bool = False, include_compile: bool | None = None, passes: int | None = None,
    quant_backends: tuple[str, ...] | None = None, seed: int = 0, progress=None,
) -> DecoderTuneResult:
    """Search generation settings; the winner is the fastest variant whose greedy tokens match eager.

    quant_backends: int8 weight-only backends to try (decoder_quant.QUANT_BACKENDS); None: every one that runs here
    (the others are skipped with a note); (): none. A backend named here that cannot run is an InvalidConfigError
    carrying its install line, raised before anything is measured."""
    from perfscale.measure.environment import collect_environment
    from perfscale.runtimes.decoder import DecoderSettings, load_decoder, make_prompts
    from perfscale.runtimes.decoder_quant import resolve_backends

    progress = progress or (lambda _m: None)
    started = time.perf_counter()
    lengths = list(prompt_lengths or (QUICK_LENGTHS if quick else FULL_LENGTHS))
    if any(not isinstance(n, int) or n < 1 for n in lengths):
        raise InvalidConfigError(f"Prompt lengths must be positive integers, got {lengths}.")
    if not isinstance(new_tokens, int) or new_tokens < 2:
        raise InvalidConfigError(f"new_tokens must be >= 2 (TTFT and time per output token need two tokens), got {new_tokens!r}.")
    if passes is not None and (not isinstance(passes, int) or passes < 1):
        raise InvalidConfigError(f"passes must be a positive integer, got {passes!r}.")
    backends, notes = resolve_backends(None if quant_backends is None else tuple(quant_backends))
    buckets = tuple(buckets) if buckets else _default_buckets(max(lengths))
    passes = passes or (2 if quick else 5)
    include_compile = (not quick) if include_compile is None else include_compile
    lm = load_decoder(model, seed=seed)
    prompts = make_prompts(lengths, lm.config.vocab_size, seed)
    settings = [DecoderSettings(), *_candidates(quick, include_compile, buckets, batch, new_tokens, backends)]
    variants = measure_interleaved(lm, settings, prompts, new_tokens, passes, progress)
    ref = variants[0]
    if ref.status != "ok":
        raise InvalidConfigError(f"The eager reference does not generate on {model!r}: {ref.reason}")
    ref.label += " (reference)"
    progress("counting recompilations with and without buckets")
    recompiles = count_recompiles(lm, prompts, buckets)
    ok = [v for v in variants[1:] if v.status == "ok" and v.speedup and v.speedup["ci_low"] > 1]
    winner = max(ok, key=lambda v: v.speedup["ratio"]) if ok else ref
    for v in variants[1:]:
        if v.status == "ok" and v is not winner:
            v.status, v.reason = "slower", ("gate passed; slower than the winner" if ok
                                            else "gate passed; not significantly faster than the eager reference")
    sp = winner.speedup
    verdict = (f"{winner.label}: {sp['ratio']:.2f}x the reference's tokens/s [95% CI {sp['ci_low']:.2f}, {sp['ci_high']:.2f}] "
               f"over {sp['rounds']} interleaved rounds, identical greedy tokens"
               if sp else "no variant was significantly faster with identical greedy tokens: keep eager generation")
    failed_gate = [v for v in variants if v.status == "inaccurate"]
    if failed_gate:
        closest = max(failed_gate, key=lambda v: v.gate.get("prefix_agreement", 0.0))
        notes.append(f"{len(failed_gate)} variant(s) failed the greedy-token gate; closest: {closest.label}, "
                     f"{closest.gate.get('prefix_agreement', 0.0):.0%} of the reference's tokens before its first difference")
    return DecoderTuneResult(
        model=model, prompt_lengths=lengths, new_tokens=new_tokens, variants=variants, winner=winner.label,
        winner_settings=winner.settings, verdict=verdict, recompiles=recompiles, passes=passes,
        environment=collect_environment("cpu"), elapsed_s=time.perf_counter() - started, notes=notes,
        quant_backends=backends,
        measurement={"method": "interleaved rounds in one process: one untimed pass per variant, then each round runs "
                               "every variant once (order rotated by one per round); speed-up = median over rounds of "
                               "time(reference)/time(variant) in the same round, 95% bootstrap CI",
                     "rounds": passes, "torch_threads": _threads()},
    )


def _threads() -> int:
    import torch

    return torch.get_num_threads()


__all__ = ["DecoderTuneResult", "DecoderVariant", "count_recompiles", "measure_interleaved", "tune_decoder"]
