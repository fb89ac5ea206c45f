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
Decoders: perfscale.tune.infer_decoder.tune_decoder (cache, compile, batch, prompt buckets).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from perfscale.errors import InvalidConfigError, PerfscaleError

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
# Target seconds of one measured iteration of the baseline (the final measurement's unit of work).
ITERATION_S = 1.5
# Runtime variants screened whatever the budget: the first ones of the prior order (_runtime_candidates).
MIN_SCREENED = 2

@dataclass
class Variant:
    """One configuration tried: how it did on the gate, the screen and (if a finalist) the measurement."""

    label: str
    settings: dict[str, Any]
    stage: str  # baseline | reference | runtime | batch_size | threads | padding | bucketing | inference_mode
    status: str = "pending"  # ok | inaccurate | failed | skipped | slower
    reason: str | None = None
    accuracy: dict[str, Any] | None = None
    screen_rate: float | None = None  # sentences/s, in-process screen (not the final measurement)
    load_s: float | None = None
    onnx_path: str | None = None
    measured: dict[str, Any] | None = None  # from perfscale.measure.compare: throughput, speedup vs baseline

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

@dataclass
class EncoderTuneResult:
    """What `tune encoder` found for an encoder; `to_dict()` is the --json document and the saved file."""

    model: str
    model_path: str
    gate: dict[str, float]
    corpus_sentences: int
    variants: list[Variant]
    winner: str  # label of the winning variant (the baseline when nothing beat it)
    winner_settings: dict[str, Any]
    speedup: dict[str, Any] | None  # {ratio, ci_low, ci_high, significant}: time(baseline)/time(winner)
    verdict: str
    measurement: dict[str, Any]
    environment: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    kind: str = "encoder"

    @property
    def winner_variant(self) -> Variant:
        return next(v for v in self.variants if v.label == self.winner)

    @property
    def apply_snippet(self) -> str:
        return (
            "import perfscale.apply\n"
            "enc = perfscale.apply.encoder(\"tuned.json\")  # saved with --save tuned.json, or the result / its dict\n"
            "embeddings = enc.encode([\"first sentence\", \"second sentence\"])  # numpy [n, dim]"
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["apply_snippet"] = self.apply_snippet
        return data

    def save(self, path: str | os.PathLike) -> Path:
        from perfscale.user_files import write_text

        return write_text(path, json.dumps(self.to_dict(), indent=2, default=str) + "\n", "--save")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderTuneResult:
        data = {k: v for k, v in data.items() if k != "apply_snippet"}
        data["variants"] = [Variant(**v) for v in data.get("variants", [])]
        return cls(**data)

# ----- the search space -----
def _runtime_candidates(quick: bool, native_bf16: bool, backends: tuple[str, ...], include_compile: bool):
    """(settings kwargs, skip reason or None) for the runtime/quantization stage."""
    out: list[tuple[dict[str, Any], str | None]] = []
    if "eager" in backends:
        out.append(({"backend": "eager"}, None))
        if not quick:
            out.append(({"backend": "eager", "precision": "bf16"},
                        None if native_bf16 else "this CPU has no native bf16 (avx512_bf16/AMX): bf16 runs emulated, several times slower (FIELD-NOTES)"))
            out.append(({"backend": "eager", "quantization": "int8-dynamic"}, None))
    if "compile" in backends:
        out.append(({"backend": "compile", "pad_multiple": 16},
                    None if include_compile else "torch.compile is left out unless asked for (its first compile takes ~30+ s here): add --compile"))
    if "onnxruntime" in backends:
        quants = ("int8-dynamic", "int8-per-channel") if quick else ("int8-dynamic", "int8-per-channel", "int8-reduce-range", "int8-per-channel-reduce-range")
        out.append(({"backend": "onnxruntime"}, None))
        if not quick:
            out.append(({"backend": "onnxruntime", "fusions": True}, None))
        out += [({"backend": "onnxruntime", "fusions": True, "quantization": q}, None) for q in quants]
    return sorted(out, key=lambda item: -_prior(item[0]))


# The screen's order: sentences/s of all-MiniLM-L6-v2 on this kind of CPU (FIELD-NOTES, "Inference on this
# CPU"; 2 threads, batch 32), so that a budget that ends the screen early has tried the likeliest winners.
# A prior orders the search only: every variant is still gated and timed here.
PRIORS = {("onnxruntime", "int8-per-channel-reduce-range"): 104, ("onnxruntime", "int8-per-channel"): 100,
          ("onnxruntime", "int8-reduce-range"): 95, ("onnxruntime", "int8-dynamic"): 93, ("eager", "int8-dynamic"): 84,
          ("onnxruntime+fusions", "none"): 72, ("compile", "none"): 66, ("onnxruntime", "none"): 65, ("eager", "none"): 57}


def _prior(kwargs: dict[str, Any]) -> float:
    backend = kwargs["backend"] + ("+fusions" if kwargs.get("fusions") and not kwargs.get("quantization") else "")
    if kwargs.get("precision") == "bf16":
        return 10.0  # 9-10 sentences/s where bf16 was emulated; screened last
    return PRIORS.get((backend, kwargs.get("quantization") or "none"), 50.0)

def _knob_stages(best: dict[str, Any], quick: bool, cores: int) -> list[tuple[str, list[dict[str, Any]]]]:
    """One knob at a time on the best runtime: (stage name, list of setting overrides)."""
    stages = [("batch_size", [{"batch_size": b} for b in ((64,) if quick else (16, 64, 128))])]
    if quick:
        return stages
    if cores > 1:
        stages.append(("threads", [{"threads": t} for t in sorted({1, cores})]))
    stages.append(("padding", [{"pad_multiple": 8}]))
    stages.append(("bucketing", [{"sort_by_length": False}]))
    if best.get("backend") != "onnxruntime":
        stages.append(("inference_mode", [{"inference_mode": False}]))
    return stages

# ----- gate and screen (in this process) -----
def _screen(encoder, sentences: list[str], reps: int) -> float:
    """Median sentences/s over `reps` passes (the caller has warmed the encoder up)."""
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        encoder.encode(sentences)
        times.append(time.perf_counter() - t0)
    return len(sentences) / float(np.median(times))

def _try_variant(variant: Variant, source, corpus, ref, thresholds, timing, reps, cache_dir) -> None:
    from perfscale.measure.gate import compare_outputs
    from perfscale.runtimes.encoder import EncoderSettings, load_encoder

    try:
        t0 = time.perf_counter()
        encoder = load_encoder(source, EncoderSettings.from_dict(variant.settings), cache_dir=cache_dir)
        variant.load_s = time.perf_counter() - t0
        variant.onnx_path = getattr(encoder, "onnx_path", None)
        emb = encoder.encode(corpus)  # also the warm-up (compile, ORT session arenas)
    except PerfscaleError as exc:
        variant.status, variant.reason = "failed", str(exc)
        return
    except Exception as exc:  # a variant that crashes is a result, not a crash of the tool
        variant.status, variant.reason = "failed", f"{type(exc).__name__}: {exc}"
        return
    variant.accuracy = compare_outputs({"embeddings": ref}, {"embeddings": emb}, thresholds) if ref is not None else None
    if variant.accuracy and not variant.accuracy["passed"]:
        variant.status = "inaccurate"
        variant.reason = "accuracy gate vs fp32 eager: " + "; ".join(variant.accuracy["failures"])
    else:
        variant.status = "ok"
    variant.screen_rate = _screen(encoder, timing, reps)
    if ref is None:
        variant._embeddings = emb  # type: ignore[attr-defined]

def _full_gate(variant: Variant, source, corpus, ref, thresholds, cache_dir) -> None:
    """The gate on the whole gate corpus, for a finalist that passed on the screening slice."""
    from perfscale.measure.gate import compare_outputs
    from perfscale.runtimes.encoder import EncoderSettings, load_encoder

    try:
        emb = load_encoder(source, EncoderSettings.from_dict(variant.settings), cache_dir=cache_dir).encode(corpus)
    except Exception as exc:  # noqa: BLE001 - a variant that crashes is a result
        variant.status, variant.reason = "failed", f"{type(exc).__name__}: {exc}"
        return
    variant.accuracy = compare_outputs({"embeddings": ref}, {"embeddings": emb}, thresholds)
    if not variant.accuracy["passed"]:
        variant.status = "inaccurate"
        variant.reason = (f"passed on the {SCREEN_SENTENCES} screening sentences, failed the gate on all {len(corpus)}: "
                          + "; ".join(variant.accuracy["failures"]))

# ----- final measurement (fresh processes, interleaved) -----
def _bench_config(model: str, source, settings: dict[str, Any], label: str, sentences: int, cache_dir):
    from perfscale.config.run_config import RunConfig
    from perfscale.measure.bench_config import BenchConfig
    from perfscale.specs.workload import InferWorkload

    s = dict(settings)
    explicit = {k: s.pop(k) for k in ("backend", "quantization", "precision", "threads", "batch_size", "max_length")}
    workload = InferWorkload(batch=explicit["batch_size"], prompt=explicit["max_length"] or source.max_length, new_tokens=0)
    run = RunConfig(workload=workload, precision=explicit["precision"], compile=explicit["backend"] == "compile",
                    torch_num_threads=explicit["threads"])
    extra = {"encoder": s, "onnx_cache_dir": str(cache_dir) if cache_dir else None}
    return BenchConfig(scenario="encode", model=model, run=run, backend=explicit["backend"],
                       encoder_quantization=explicit["quantization"], sentences=sentences, label=label, extra=extra)

def _measure(model, source, baseline: Variant, finalists: list[Variant], quick: bool, repeats: int | None, cache_dir, progress):
    from perfscale.measure.bench_config import MeasureOptions
    from perfscale.measure.compare import compare
    from perfscale.measure.stats import StopRule

    # Sentences an iteration: about ITERATION_S of the baseline at its screened speed, in whole batches of 32,
    # at most 128 (64 quick: 4 batches of the default 32, whole batches of 64/128 if those won). On a busy box
    # the baseline encoded 3 sentences/s instead of 57: 128 a iteration made each of its processes take minutes.
    cap = 64 if quick else 128
    rate = baseline.screen_rate or 0.0
    sentences = int(min(cap, max(32, 32 * round(rate * ITERATION_S / 32)))) if rate else cap
    if quick:
        options = MeasureOptions(stop=StopRule(min_iters=3, min_time=0.3, target_rel_ci=0.05, max_time=4.0), warmup=1,
                                 gate=False, profile_memory=False, time_limit=240)
    else:
        options = MeasureOptions(stop=StopRule(min_iters=3, min_time=2.0, target_rel_ci=0.03, max_time=10.0), warmup=1,
                                 gate=False, profile_memory=False)
    repeats = repeats or (1 if quick else 2)
    configs = [_bench_config(model, source, v.settings, v.label, sentences, cache_dir) for v in [baseline, *finalists]]
    progress(f"measuring {len(configs)} configurations x {repeats} fresh processes, interleaved")
    result = compare(configs, options, repeats=repeats, on_result=lambda r: progress(f"  {r.config.display}: {r.status}"))
    for variant, row in zip([baseline, *finalists], result.rows, strict=True):
        variant.measured = {
            "throughput": row.throughput, "status": row.status, "reason": row.reason,
            "speedup": row.speedup.to_dict() if row.speedup else None, "verdict": row.speed_verdict,
            "processes": len(row.runs),
        }
        if row.status not in ("ok", "inaccurate") and variant is not baseline:
            variant.status, variant.reason = "failed", f"measurement {row.status}: {row.reason}"
    return {"method": "perfscale.measure.compare (fresh process per run, interleaved)", "repeats": repeats,
            "sentences_per_iteration": sentences, "options": options.to_dict(), "group": result.group,
            "interrupted": result.interrupted}

# ----- the tuner -----
def tune_encoder(
    model: str = "minilm", *, quick: bool = False, budget_seconds: float | None = None, min_mean_cosine: float = 0.99,
    min_min_cosine: float = 0.97, sentences: list[str] | None = None, backends: tuple[str, ...] = ("eager", "compile", "onnxruntime"),
    include_compile: bool | None = None, repeats: int | None = None, finalists: int | None = None, cache_dir=None,
    progress: Progress | None = None,
) -> EncoderTuneResult:
    """Search encoder runtimes and knobs; return the fastest variant that passes the accuracy gate.

    Cheap first (issue 19: the default answers in about 3 minutes): every variant is screened in this process
    on SCREEN_SENTENCES sentences (speed, and the gate on those); only the finalists are gated on the whole gate
    corpus (GATE_SENTENCES) and measured against the baseline in fresh processes.
    quick: a smaller search (64 screening sentences, one finalist, one measurement process each).
    budget_seconds: stop screening new variants after this long (default SCREEN_BUDGET_S; the gate and the
    final measurement still run).
    """
    from perfscale.measure.bench_config import GateThresholds
    from perfscale.measure.corpus import load_sentences
    from perfscale.measure.environment import collect_environment
    from perfscale.runtimes.encoder import BACKENDS, EncoderSettings
    from perfscale.runtimes.source import resolve_encoder
    from perfscale.specs.detect import detect_cpu

    progress = progress or (lambda _msg: None)
    started = time.perf_counter()
    if not 0 < min_min_cosine <= 1 or not 0 < min_mean_cosine <= 1:
        raise InvalidConfigError(f"Gate thresholds must be cosines in (0, 1], got mean {min_mean_cosine!r}, min {min_min_cosine!r}.")
    if budget_seconds is not None and budget_seconds <= 0:
        raise InvalidConfigError(f"--budget-seconds must be > 0, got {budget_seconds!r}.")
    bad = [b for b in backends if b not in BACKENDS]
    if bad or not backends:
        raise InvalidConfigError(f"Unknown backend(s): {', '.join(bad) or '(none given)'}. Choose from: {', '.join(BACKENDS)}.")
    thresholds = GateThresholds(min_mean_cosine=min_mean_cosine, min_min_cosine=min_min_cosine)
    source = resolve_encoder(model)
    bench_model = "minilm" if source.name == "minilm" else source.path
    corpus = list(sentences) if sentences is not None else load_sentences(QUICK_GATE_SENTENCES if quick else GATE_SENTENCES)
    if not corpus:
        raise InvalidConfigError("The sentence list is empty: give sentences to encode (or leave it out for the shipped corpus).")
    timing = corpus[: QUICK_SCREEN_SENTENCES if quick else SCREEN_SENTENCES]
    reps = 1 if quick else 2
    cpu = detect_cpu()
    cores = max(1, cpu.physical_cores)
    # torch.compile's first compile alone takes ~36 s here (FIELD-NOTES): only when asked for.
    include_compile = False if include_compile is None else include_compile
    if budget_seconds is None:
        budget_seconds = QUICK_SCREEN_BUDGET_S if quick else SCREEN_BUDGET_S
    finalists = finalists or 1  # each finalist costs `repeats` fresh processes: the budget goes to the best one
    notes: list[str] = []

    def over_budget() -> bool:
        return budget_seconds is not None and time.perf_counter() - started > budget_seconds

    # Reference (fp32 eager, perfscale's pooling) and the baseline a user has today.
    progress(f"reference: fp32 eager on {len(timing)} sentences")
    reference = Variant(label="fp32 eager (reference)", settings=EncoderSettings().to_dict(), stage="reference")
    _try_variant(reference, source, timing, None, thresholds, timing, reps, cache_dir)
    if reference.status != "ok":
        raise PerfscaleError(f"The fp32 eager reference of {source.name!r} does not run: {reference.reason}")
    screen_ref = reference._embeddings  # type: ignore[attr-defined]
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
    _try_variant(baseline, source, timing, screen_ref, thresholds, timing, reps, cache_dir)
    if baseline.status == "failed":
        raise PerfscaleError(f"The sentence-transformers baseline does not run on {source.name!r}: {baseline.reason}")
    variants = [baseline, reference]

    def run(v: Variant, always: bool = False) -> Variant:
        if over_budget() and not always:
            v.status, v.reason = "skipped", f"time budget of {budget_seconds:g} s spent before this variant"
        else:
            progress(f"trying {v.label}")
            _try_variant(v, source, timing, screen_ref, thresholds, timing, reps, cache_dir)
        variants.append(v)
        return v

    screened = 0
    for kwargs, skip in _runtime_candidates(quick, cpu.native_bf16, tuple(backends), include_compile):
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
        return _no_winner(source, thresholds, corpus, variants, notes, started, collect_environment, budget_seconds)
    best = max(passing, key=lambda v: v.screen_rate or 0.0)
    for stage, overrides in _knob_stages(best.settings, quick, cores):
        for override in overrides:
            settings = EncoderSettings.from_dict({**best.settings, **override})
            v = run(Variant(label=settings.label(), settings=settings.to_dict(), stage=stage))
            if v.status == "ok" and (v.screen_rate or 0) > (best.screen_rate or 0) * KNOB_STAGE_MIN_GAIN:
                best = v
    # Finalists: the best, then the fastest passing variants of other runtimes; each gated on the whole corpus
    # now (only these could win), the next one taking the place of one that fails.
    ranked = sorted((v for v in variants if v.status == "ok" and v.stage not in ("baseline", "reference")), key=lambda v: -(v.screen_rate or 0))
    chosen = [best] + [v for v in ranked if v is not best]
    finals: list[Variant] = []
    for v in chosen:
        key = (v.settings["backend"], v.settings["quantization"], v.settings["precision"])
        if any((f.settings["backend"], f.settings["quantization"], f.settings["precision"]) == key for f in finals):
            continue
        if len(timing) < len(corpus):
            progress(f"gate: {v.label} on all {len(corpus)} sentences")
            _full_gate(v, source, corpus, reference_on_corpus(), thresholds, cache_dir)
        if v.status == "ok":
            finals.append(v)
        if len(finals) >= finalists:
            break
    if not finals:
        return _no_winner(source, thresholds, corpus, variants, notes, started, collect_environment, budget_seconds)
    notes.append(f"screened {sum(v.screen_rate is not None for v in variants) - 2} variants in this process on {len(timing)} "
                 f"sentences (speed and the gate on those); gated the finalist(s) on all {len(corpus)}; measured "
                 f"{len(finals)} finalist(s) against the baseline in fresh processes")
    measurement = _measure(bench_model, source, baseline, finals, quick, repeats, cache_dir, progress)
    winner, speedup, verdict = _decide(baseline, finals)
    for v in variants:
        if v.status == "ok" and v is not winner and v.stage not in ("baseline", "reference"):
            v.status = "slower"
            v.reason = v.reason or (f"slower than the winner in the measurement: {v.measured['verdict']}" if v.measured
                                    else f"screened at {v.screen_rate:.0f} sentences/s, below the finalists")
    if source.name == "minilm" and not cpu.isa.get("avx512_vnni"):
        notes.append("no VNNI on this CPU: int8 kernels saturate without reduce_range; expect per-channel+reduce_range to be the accurate int8 scheme")
    return EncoderTuneResult(
        model=source.name, model_path=source.path, gate=thresholds.to_dict(), corpus_sentences=len(corpus),
        variants=variants, winner=winner.label, winner_settings=winner.settings, speedup=speedup, verdict=verdict,
        measurement=measurement, environment=collect_environment("cpu"), notes=notes,
        elapsed_s=time.perf_counter() - started,
    )

def _no_winner(source, thresholds, corpus, variants, notes, started, collect_environment, budget=None) -> EncoderTuneResult:
    """No variant passed the gate (or ran): the baseline stays, and each variant says why it lost."""
    baseline = variants[0]
    tried = [v for v in variants if v.stage not in ("baseline", "reference")]
    why = "; ".join(f"{v.label}: {v.status} ({v.reason})" for v in tried if v.status != "skipped" or "budget" not in (v.reason or ""))
    ran = [v for v in tried if v.status != "skipped"]
    out_of_time = [v for v in tried if v.status == "skipped" and "budget" in (v.reason or "")]
    verdict = f"no variant passed the accuracy gate and ran: keep the baseline. {why}"
    if out_of_time:
        slow = f"the fp32 reference encoded {variants[1].screen_rate:.0f} sentences/s here" if variants[1].screen_rate else "this machine is slow now"
        verdict = (f"keep the baseline for now: {len(ran)} variant(s) screened ({why or 'none passed'}), {len(out_of_time)} not tried "
                   f"before the {budget:g} s screening budget ran out ({slow}); rerun with --budget-seconds {4 * (budget or 60):g} "
                   "(or on a quieter machine)")
    return EncoderTuneResult(
        model=source.name, model_path=source.path, gate=thresholds.to_dict(), corpus_sentences=len(corpus), variants=variants,
        winner=baseline.label, winner_settings=baseline.settings, speedup=None,
        verdict=verdict,
        measurement={"method": "none: nothing to measure against the baseline", "repeats": 0, "sentences_per_iteration": 0},
        environment=collect_environment("cpu"), notes=notes, elapsed_s=time.perf_counter() - started,
    )


def _decide(baseline: Variant, finals: list[Variant]):
    """The finalist with the highest measured speed-up, if significantly faster than the baseline."""
    measured = [v for v in finals if v.status == "ok" and v.measured and v.measured.get("speedup")]
    if not measured:
        return baseline, None, "no variant both passed the accuracy gate and finished its measurement: keep the baseline"
    top = max(measured, key=lambda v: v.measured["speedup"]["ratio"])
    sp = top.measured["speedup"]
    if sp["ci_low"] > 1:
        return top, sp, f"{top.label} is {sp['ratio']:.2f}x the baseline's sentences/s [95% CI {sp['ci_low']:.2f}, {sp['ci_high']:.2f}]"
    top.status, top.reason = "slower", f"not significantly faster than the baseline: {top.measured['verdict']}"
    return baseline, None, f"no variant was significantly faster than the baseline (best: {top.label}, {sp['ratio']:.2f}x [{sp['ci_low']:.2f}, {sp['ci_high']:.2f}]): keep the baseline"

def load_result(source: str | os.PathLike | dict | EncoderTuneResult) -> EncoderTuneResult:
    """A tune result from the object, its to_dict() document, or a saved JSON file."""
    if isinstance(source, EncoderTuneResult):
        return source
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            source = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InvalidConfigError(f"Cannot read a tune result from {path}: {exc}. Save one with `perfscale tune encoder --save {path}`.") from exc
    if not isinstance(source, dict) or "winner_settings" not in source:
        raise InvalidConfigError(
            "Not an encoder tune result (no 'winner_settings'): pass the object tune_encoder() returned, the dict of "
            "`perfscale tune encoder --json`, or the file saved with --save."
        )
    try:
        return EncoderTuneResult.from_dict(source)
    except TypeError as exc:
        raise InvalidConfigError(f"Malformed tune result: {exc}. Re-run `perfscale tune encoder --json`.") from exc

__all__ = ["EncoderTuneResult", "Variant", "load_result", "tune_encoder"]
