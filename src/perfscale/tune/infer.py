"""`perfscale tune encoder`: the fastest way to run a model on this CPU whose outputs stay right.

Encoders (sentence embeddings), in three steps:
1. Gate: every variant encodes the whole sentence corpus; its embeddings are compared with the fp32
   eager ones (perfscale.measure.gate: mean and min cosine). A variant below the gate is out,
   however fast, and the report says by how much it missed.
2. Screen (in this process, seconds each): runtimes and quantization first (eager, bf16 where the
   CPU has native bf16, torch int8, torch.compile, ONNX Runtime with and without fusions, four int8
   schemes), then batch size, threads, padding/bucketing and inference_mode on the best runtime,
   one knob at a time, keeping a change only when it is faster.
3. Measure: the baseline (SentenceTransformer(...).encode with its defaults) and the best screened
   variants run interleaved in fresh processes (perfscale.measure.compare); the speed-up over the
   baseline and its 95% CI come from there. The winner must be significantly faster than the
   baseline, else the baseline stays.
Objectives (`objective=`): throughput (sentences/s in batches, the above) or latency (what an online service
sees: a stream of single requests; screen and final rank by the median latency of one request, and the final is
one interleaved stream of the baseline and the finalists, perfscale.tune.infer_serving). Either way the result
states both shapes: `serving` holds batch-1 p50/p90/p99 of the baseline and the winner under one stream.
Backends: every installed one unless named (an absent optional package is skipped with a note; a named one that
is absent is the user's error, with its install line). Variants follow the CPU's flags (specs/detect.py):
bf16 (torch autocast, torch.compile + autocast, OpenVINO's bf16 precision) only with native bf16; ONNX Runtime's
int8 schemes ordered by whether the CPU has VNNI/AMX int8 kernels.
The parts: infer_space (the variants), infer_screen (gate and screen in this process), infer_measure (fresh
processes, the serving stream), infer_decide (the winner, or why none), infer_result (the document).
Decoders: perfscale.tune.infer_decoder.tune_decoder (cache, compile, batch, prompt buckets).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from perfscale.errors import InvalidConfigError, PerfscaleError
from perfscale.tune.infer_decide import _decide, _decide_latency, _no_winner
from perfscale.tune.infer_measure import _environment, _measure, _serving
from perfscale.tune.infer_result import EncoderTuneResult, Variant, load_result
from perfscale.tune.infer_screen import _full_gate, _score, _try_variant
from perfscale.tune.infer_space import _knob_stages, _runtime_candidates, int8_kernels

Progress = Callable[[str], None]
# Screen step 2 keeps a knob change only when its screen rate beats the best so far by more than 2%.
# Chosen, not measured: a tie-breaker so that a change within the screen's noise (in-process rates
# move by +-10% on this CPU, FIELD-NOTES) does not replace a simpler setting; the finalists'
# interleaved measurement decides the winner, not this screen.
KNOB_STAGE_MIN_GAIN = 1.02
# Cheap screening (issue 19: the default search answers in ~3 minutes here, --quick in ~1): each variant is
# timed and pre-gated in this process on SCREEN_SENTENCES; only the finalists are gated on GATE_SENTENCES
# (a third of the shipped corpus: 512 sentences of its seeded-shuffle order, so lengths and topics mix).
SCREEN_SENTENCES = 128
QUICK_SCREEN_SENTENCES = 64
GATE_SENTENCES = 512
QUICK_GATE_SENTENCES = 128
# Stop screening new variants after this long (the gate of the finalists and the final measurement still run).
# Chosen from the timings in benchmarks/LOG.md (2026-12): ~5 s a variant idle, 2-4x that on a busy box.
SCREEN_BUDGET_S = 75.0
QUICK_SCREEN_BUDGET_S = 25.0
# Runtime variants screened whatever the budget: the first ones of the prior order (_runtime_candidates).
MIN_SCREENED = 2
OBJECTIVES = ("throughput", "latency")
# Serving shapes: single requests per variant in the latency screen, and in the final stream (which stops
# after SERVING_MAX_S of timing once SERVING_MIN_REQUESTS are done: ~10 ms a request idle, 10-60x that loaded).
SCREEN_REQUESTS, QUICK_SCREEN_REQUESTS = 32, 16
SERVING_REQUESTS, QUICK_SERVING_REQUESTS = 200, 64
SERVING_MAX_S, QUICK_SERVING_MAX_S = 30.0, 10.0


def tune_encoder(
    model: str = "minilm", *, quick: bool = False, budget_seconds: float | None = None, min_mean_cosine: float = 0.99,
    min_min_cosine: float = 0.97, sentences: list[str] | None = None, backends: tuple[str, ...] | None = None,
    include_compile: bool | None = None, repeats: int | None = None, finalists: int | None = None, cache_dir=None,
    objective: str = "throughput", progress: Progress | None = None,
) -> EncoderTuneResult:
    """Search encoder runtimes and knobs; return the fastest variant that passes the accuracy gate.

    Cheap first (issue 19: the default answers in about 3 minutes): every variant is screened in this process
    on SCREEN_SENTENCES sentences (speed, and the gate on those); only the finalists are gated on the whole gate
    corpus (GATE_SENTENCES) and measured against the baseline in fresh processes.
    quick: a smaller search (64 screening sentences, one finalist, one measurement process each).
    budget_seconds: stop screening new variants after this long (default SCREEN_BUDGET_S; the gate and the
    final measurement still run).
    backends: the runtimes to search; None = every one installed here (absent ones are skipped with a note).
    A backend named here that is not installed raises InvalidConfigError with its install line.
    objective: throughput (sentences/s in batches) or latency (median latency of a single request).
    """
    from perfscale.measure.bench_config import GateThresholds
    from perfscale.measure.corpus import load_sentences
    from perfscale.measure.environment import collect_environment
    from perfscale.runtimes.encoder import (
        BACKENDS,
        EncoderSettings,
        backend_missing,
        require_backend,
    )
    from perfscale.runtimes.source import resolve_encoder
    from perfscale.specs.detect import detect_cpu

    progress = progress or (lambda _msg: None)
    started = time.perf_counter()
    if objective not in OBJECTIVES:
        from perfscale.errors import choice_error

        raise choice_error("objective", objective, OBJECTIVES, "throughput: sentences/s in batches; latency: one request at a time.")
    if not 0 < min_min_cosine <= 1 or not 0 < min_mean_cosine <= 1:
        raise InvalidConfigError(f"Gate thresholds must be cosines in (0, 1], got mean {min_mean_cosine!r}, min {min_min_cosine!r}.")
    if budget_seconds is not None and budget_seconds <= 0:
        raise InvalidConfigError(f"--budget-seconds must be > 0, got {budget_seconds!r}.")
    named = backends is not None
    backends = tuple(backends) if named else BACKENDS
    bad = [b for b in backends if b not in BACKENDS]
    if bad or not backends:
        raise InvalidConfigError(f"Unknown backend(s): {', '.join(bad) or '(none given)'}. Choose from: {', '.join(BACKENDS)}.")
    if named:
        for b in backends:
            require_backend(b)  # named and absent: the user's to install (exit 2, with the line)
    missing = {b: line for b in backends if (line := backend_missing(b))}
    notes: list[str] = [f"backend {b} skipped: not installed ({line})" for b, line in missing.items()]
    thresholds = GateThresholds(min_mean_cosine=min_mean_cosine, min_min_cosine=min_min_cosine)
    source = resolve_encoder(model)
    bench_model = "minilm" if source.name == "minilm" else source.path
    corpus = list(sentences) if sentences is not None else load_sentences(QUICK_GATE_SENTENCES if quick else GATE_SENTENCES)
    if not corpus:
        raise InvalidConfigError("The sentence list is empty: give sentences to encode (or leave it out for the shipped corpus).")
    timing = corpus[: QUICK_SCREEN_SENTENCES if quick else SCREEN_SENTENCES]
    reps = 1 if quick else 2
    requests = 0 if objective == "throughput" else (QUICK_SCREEN_REQUESTS if quick else SCREEN_REQUESTS)
    cpu = detect_cpu()
    cores = max(1, cpu.physical_cores)
    # torch.compile's first compile alone takes ~36 s here (FIELD-NOTES): only when asked for.
    include_compile = False if include_compile is None else include_compile
    if budget_seconds is None:
        budget_seconds = QUICK_SCREEN_BUDGET_S if quick else SCREEN_BUDGET_S
    # throughput: each finalist costs `repeats` fresh processes: the budget goes to the best one. latency: a finalist
    # costs its gate and a place in the final stream, which decides fairly (interleaved) where the one-at-a-time
    # screen did not: in two runs here the screen put OpenVINO int8 and ORT int8 within 4% and then 3.5x apart.
    finalists = finalists or (2 if objective == "latency" else 1)

    def over_budget() -> bool:
        return budget_seconds is not None and time.perf_counter() - started > budget_seconds

    # Reference (fp32 eager, perfscale's pooling) and the baseline a user has today.
    progress(f"reference: fp32 eager on {len(timing)} sentences")
    reference = Variant(label="fp32 eager (reference)", settings=EncoderSettings().to_dict(), stage="reference")
    screen_ref = _try_variant(reference, source, timing, None, thresholds, timing, reps, cache_dir)
    if reference.status != "ok":
        raise PerfscaleError(f"The fp32 eager reference of {source.name!r} does not run: {reference.reason}")
    reference.accuracy = {"reference": True, "passed": True}
    full_ref: list = []

    def reference_on_corpus():
        """fp32 eager on the whole gate corpus, once, when the first finalist needs it."""
        if not full_ref:
            from perfscale.runtimes.encoder import load_encoder

            progress(f"reference: fp32 eager on all {len(corpus)} sentences")
            full_ref.append(load_encoder(source, EncoderSettings(), cache_dir=cache_dir).encode(corpus))
        return full_ref[0]
    baseline = Variant(label="sentence-transformers", settings=EncoderSettings(engine="sentence-transformers").to_dict(), stage="baseline")
    progress("baseline: SentenceTransformer(...).encode")
    _try_variant(baseline, source, timing, screen_ref, thresholds, timing, reps, cache_dir, requests)
    if baseline.status == "failed":
        raise PerfscaleError(f"The sentence-transformers baseline does not run on {source.name!r}: {baseline.reason}")
    variants = [baseline, reference]

    def run(v: Variant, always: bool = False) -> Variant:
        if over_budget() and not always:
            v.status, v.reason = "skipped", f"time budget of {budget_seconds:g} s spent before this variant"
        else:
            progress(f"trying {v.label}")
            _try_variant(v, source, timing, screen_ref, thresholds, timing, reps, cache_dir, requests)
        variants.append(v)
        return v

    screened = 0
    for kwargs, skip in _runtime_candidates(quick, cpu, tuple(backends), include_compile, missing):
        settings = EncoderSettings(**kwargs)
        v = Variant(label=settings.label(), settings=settings.to_dict(), stage="runtime")
        if skip:
            v.status, v.reason = "skipped", skip
            variants.append(v)
            continue
        run(v, always=screened < MIN_SCREENED)  # the best priors are screened even when the machine is slow
        screened += v.status != "skipped"
    passing = [v for v in variants if v.status == "ok" and v.stage not in ("baseline", "reference")]
    if not passing:
        return _no_winner(source, thresholds, corpus, variants, notes, started, collect_environment, budget_seconds, objective)
    best = max(passing, key=lambda v: _score(v, objective))
    for stage, overrides in _knob_stages(best.settings, quick, cores, objective):
        for override in overrides:
            settings = EncoderSettings.from_dict({**best.settings, **override})
            v = run(Variant(label=settings.label(), settings=settings.to_dict(), stage=stage))
            if v.status == "ok" and _score(v, objective) > _score(best, objective) * KNOB_STAGE_MIN_GAIN:
                best = v
    # Finalists: the best, then the fastest passing variants of other runtimes; each gated on the whole corpus
    # now (only these could win), the next one taking the place of one that fails.
    ranked = sorted((v for v in variants if v.status == "ok" and v.stage not in ("baseline", "reference")), key=lambda v: -_score(v, objective))
    chosen = [best] + [v for v in ranked if v is not best]
    finals: list[Variant] = []
    for v in chosen:
        key = (v.settings["backend"], v.settings["quantization"], v.settings["precision"])
        if any((f.settings["backend"], f.settings["quantization"], f.settings["precision"]) == key for f in finals):
            continue
        if len(timing) < len(corpus):
            progress(f"gate: {v.label} on all {len(corpus)} sentences")
            _full_gate(v, source, corpus, reference_on_corpus(), thresholds, cache_dir, screened=len(timing))
        if v.status == "ok":
            finals.append(v)
        if len(finals) >= finalists:
            break
    if not finals:
        return _no_winner(source, thresholds, corpus, variants, notes, started, collect_environment, budget_seconds, objective)
    what = "speed" if objective == "throughput" else "speed, single-request latency"
    notes.append(f"screened {sum(v.screen_rate is not None for v in variants) - 2} variants in this process on {len(timing)} "
                 f"sentences ({what} and the gate on those); gated the finalist(s) on all {len(corpus)}; measured "
                 f"{len(finals)} finalist(s) against the baseline "
                 + ("in fresh processes" if objective == "throughput" else "in one interleaved stream of single requests"))
    stream = corpus[: QUICK_SERVING_REQUESTS if quick else SERVING_REQUESTS]
    max_s = QUICK_SERVING_MAX_S if quick else SERVING_MAX_S
    if objective == "throughput":
        measurement = _measure(bench_model, source, baseline, finals, quick, repeats, cache_dir, progress)
        winner, speedup, verdict = _decide(baseline, finals)
        serving = _serving(source, baseline, [winner] if winner is not baseline else [], stream, max_s, cache_dir, progress)
    else:
        serving = _serving(source, baseline, finals, stream, max_s, cache_dir, progress)
        measurement = {"method": serving["method"], "repeats": 1, "sentences_per_iteration": 1, "requests": serving["requests"]}
        winner, speedup, verdict = _decide_latency(baseline, finals, serving)
    for v in variants:
        if v.status == "ok" and v is not winner and v.stage not in ("baseline", "reference"):
            v.status = "slower"
            v.reason = v.reason or (f"slower than the winner in the measurement: {v.measured['verdict']}" if v.measured
                                    else f"screened at {v.screen_rate:.0f} sentences/s, below the finalists" if objective == "throughput"
                                    else f"screened at {(v.latency or {}).get('p50_ms') or 0:.1f} ms a request (p50), above the finalists")
    notes.append(f"int8 kernels on this CPU: {int8_kernels(cpu)}; bf16: {'native' if cpu.native_bf16 else 'emulated (bf16 variants skipped)'}"
                 + ("" if "onnxruntime" not in backends else "; ONNX Runtime runs no bf16 variant (its CPU provider's bf16 GEMM "
                    "fast-math is ARM64-only): bf16 is tried through torch and OpenVINO"))
    return EncoderTuneResult(
        model=source.name, model_path=source.path, gate=thresholds.to_dict(), corpus_sentences=len(corpus),
        variants=variants, winner=winner.label, winner_settings=winner.settings, speedup=speedup, verdict=verdict,
        measurement=measurement, environment=_environment(collect_environment), notes=notes,
        elapsed_s=time.perf_counter() - started, objective=objective, serving=serving,
    )


__all__ = ["EncoderTuneResult", "Variant", "load_result", "tune_encoder"]
