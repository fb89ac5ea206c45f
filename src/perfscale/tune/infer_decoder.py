"""`perfscale tune decoder`: for a causal LM: KV cache, compile, batch size and prompt buckets.

Every variant generates greedily for the same seeded prompts (a spread of lengths, as a server
sees); the gate is identical greedy tokens to eager + dynamic cache + batch 1 + no padding. Times
come from repeated passes in this process (after one untimed pass that compiles), summarised with
perfscale.measure.stats (median, bootstrap CI); the speed-up is time(reference)/time(variant).
Recompilations are counted per variant (torch._dynamo counters), and once more with dynamo's
capture-only backend with and without buckets, so the report shows what bucketing bounds.
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
    speedup: dict[str, Any] | None = None  # time(reference)/time(this), with CI
    warmup_s: float | None = None

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

    @property
    def apply_snippet(self) -> str:
        return (
            "import perfscale.apply\n"
            "kw = perfscale.apply.decoder(\"tuned.json\")\n"
            "model = AutoModelForCausalLM.from_pretrained(name, **kw['from_pretrained'])\n"
            "out = model.generate(**inputs, **kw['generate'])  # pad prompts to kw['runtime']['buckets'] (left padding)"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"apply_snippet": self.apply_snippet}

    def save(self, path: str | os.PathLike) -> Path:
        from perfscale.user_files import write_text

        return write_text(path, json.dumps(self.to_dict(), indent=2, default=str) + "\n", "--save")


def _candidates(quick: bool, include_compile: bool, buckets: tuple[int, ...], batch: int, new_tokens: int):
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
    return out


def _time_variant(model, settings, prompts, new_tokens, passes: int, reference_tokens):
    from perfscale.measure.stats import summarize
    from perfscale.runtimes.decoder import DecoderRunner, greedy_agreement, reset_compiler

    v = DecoderVariant(label=settings.label(), settings=settings.to_dict())
    reset_compiler()
    runner = DecoderRunner(model, settings)
    try:
        t0 = time.perf_counter()
        first = runner.run(prompts, new_tokens)  # untimed: compiles, warms the allocator
        v.warmup_s = time.perf_counter() - t0
        runs = [runner.run(prompts, new_tokens) for _ in range(passes)]
    except Exception as exc:  # a variant that crashes is a result, not a crash of the tool
        v.status, v.reason = "failed", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return v, []
    finally:
        runner.close()
    v.graphs = first.graphs + sum(r.graphs for r in runs)
    v.recompile_limit_hit = any(r.recompile_limit_hit for r in [first, *runs])
    if reference_tokens is not None:
        v.gate = greedy_agreement(reference_tokens, first.tokens)
        if not v.gate["passed"]:
            v.status, v.reason = "inaccurate", f"greedy tokens differ from eager on {v.gate['prompts'] - v.gate['identical_prompts']} of {v.gate['prompts']} prompts"
    else:
        v.gate = {"reference": True, "passed": True}
        v._tokens = first.tokens  # type: ignore[attr-defined]
    v.tokens_per_s = summarize([r.tokens_per_s for r in runs]).to_dict()
    v.ttft_s = summarize([x for r in runs for x in r.ttft_s]).to_dict()
    v.tpot_s = summarize([x for r in runs for x in r.tpot_s]).to_dict()
    return v, [r.total_s for r in runs]


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
    seed: int = 0, progress=None,
) -> DecoderTuneResult:
    """Search generation settings; the winner is the fastest variant whose greedy tokens match eager."""
    from perfscale.measure.environment import collect_environment
    from perfscale.measure.stats import ratio_of_medians
    from perfscale.runtimes.decoder import DecoderSettings, load_decoder, make_prompts

    progress = progress or (lambda _m: None)
    started = time.perf_counter()
    lengths = list(prompt_lengths or (QUICK_LENGTHS if quick else FULL_LENGTHS))
    if any(not isinstance(n, int) or n < 1 for n in lengths):
        raise InvalidConfigError(f"Prompt lengths must be positive integers, got {lengths}.")
    if not isinstance(new_tokens, int) or new_tokens < 2:
        raise InvalidConfigError(f"new_tokens must be >= 2 (TTFT and time per output token need two tokens), got {new_tokens!r}.")
    buckets = tuple(buckets) if buckets else _default_buckets(max(lengths))
    passes = passes or (2 if quick else 5)
    include_compile = (not quick) if include_compile is None else include_compile
    lm = load_decoder(model, seed=seed)
    prompts = make_prompts(lengths, lm.config.vocab_size, seed)
    progress("reference: eager, dynamic cache, batch 1")
    ref, ref_times = _time_variant(lm, DecoderSettings(), prompts, new_tokens, passes, None)
    if ref.status != "ok":
        raise InvalidConfigError(f"The eager reference does not generate on {model!r}: {ref.reason}")
    ref_tokens = ref._tokens  # type: ignore[attr-defined]
    ref.label += " (reference)"
    variants, times = [ref], {ref.label: ref_times}
    for settings in _candidates(quick, include_compile, buckets, batch, new_tokens):
        progress(f"trying {settings.label()}")
        v, t = _time_variant(lm, settings, prompts, new_tokens, passes, ref_tokens)
        variants.append(v)
        times[v.label] = t
    for v in variants[1:]:
        if times[v.label]:
            r = ratio_of_medians([ref_times], [times[v.label]])  # time(v)/time(ref)
            v.speedup = {"ratio": 1 / r.ratio, "ci_low": 1 / r.ci_high, "ci_high": 1 / r.ci_low, "significant": r.significant}
    progress("counting recompilations with and without buckets")
    recompiles = count_recompiles(lm, prompts, buckets)
    ok = [v for v in variants[1:] if v.status == "ok" and v.speedup and v.speedup["ci_low"] > 1]
    winner = max(ok, key=lambda v: v.speedup["ratio"]) if ok else ref
    for v in variants[1:]:
        if v.status == "ok" and v is not winner:
            v.status, v.reason = "slower", "slower than the winner" if ok else "not significantly faster than the eager reference"
    sp = winner.speedup
    verdict = (f"{winner.label}: {sp['ratio']:.2f}x the reference's tokens/s [95% CI {sp['ci_low']:.2f}, {sp['ci_high']:.2f}], identical greedy tokens"
               if sp else "no variant was significantly faster with identical greedy tokens: keep eager generation")
    return DecoderTuneResult(
        model=model, prompt_lengths=lengths, new_tokens=new_tokens, variants=variants, winner=winner.label,
        winner_settings=winner.settings, verdict=verdict, recompiles=recompiles, passes=passes,
        environment=collect_environment("cpu"), elapsed_s=time.perf_counter() - started,
    )


__all__ = ["DecoderTuneResult", "DecoderVariant", "count_recompiles", "tune_decoder"]
