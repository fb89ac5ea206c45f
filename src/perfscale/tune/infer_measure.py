"""The final measurements of `tune encoder`: the baseline and the finalists in fresh processes, interleaved
(perfscale.measure.compare), and the serving shape (batch-1 latency under one interleaved stream of single requests)."""

from __future__ import annotations

from typing import Any

from perfscale.config.precision import Precision

from perfscale.tune.infer_result import Variant
from perfscale.tune.infer_screen import calibration_sentences

# Target seconds of one measured iteration of the baseline (the final measurement's unit of work).
ITERATION_S = 1.5
# The serving stream stops after its max_s of timing once SERVING_MIN_REQUESTS are done (infer.SERVING_MAX_S).
SERVING_MIN_REQUESTS = 16


def _bench_config(model: str, source, settings: dict[str, Any], label: str, sentences: int, cache_dir):
    from perfscale.config.run_config import RunConfig
    from perfscale.measure.bench_config import BenchConfig, split_backend
    from perfscale.specs.workload import InferWorkload

    s = dict(settings)
    explicit = {k: s.pop(k) for k in ("backend", "quantization", "precision", "threads", "batch_size", "max_length")}
    workload = InferWorkload(batch=explicit["batch_size"], prompt=explicit["max_length"] or source.max_length, new_tokens=0)
    # RunConfig's inference precisions are plain dtypes (fp32 | bf16 | fp16): the encoder's bf16-mixed is measured as
    # its compute dtype, bf16, which the encode scenario reads back as bf16-mixed (EncoderSettings' alias), so a bf16
    # finalist is measured as what was gated.
    precision = Precision.of(explicit["precision"]).compute_dtype
    runtime, compiled = split_backend(explicit["backend"])  # the encoder's backend: a runtime, or torch.compile
    run = RunConfig(workload=workload, precision=precision, compile=compiled, torch_num_threads=explicit["threads"])
    extra = {"encoder": s, "onnx_cache_dir": str(cache_dir) if cache_dir else None}
    return BenchConfig(scenario="encode", model=model, run=run, runtime=runtime,
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


def _environment(collect_environment) -> dict[str, Any]:
    """The measurement's context, with the optional backends' versions (absent: None)."""
    from importlib import metadata

    env = collect_environment("cpu")
    for package in ("openvino", "nncf"):
        try:
            env.setdefault("packages", {})[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            env.setdefault("packages", {})[package] = None
    return env


def _serving(source, baseline: Variant, finals: list[Variant], stream: list[str], max_s: float, cache_dir, progress) -> dict[str, Any]:
    """Batch-1 latency of the baseline and `finals` under one interleaved stream of single requests (fresh loads)."""
    from perfscale.runtimes.encoder import EncoderSettings, load_encoder
    from perfscale.tune.infer_serving import (
        latency_summary,
        p50_speedup,
        stream_latencies,
    )

    progress(f"serving: a stream of up to {len(stream)} single requests, {1 + len(finals)} encoder(s) interleaved")
    encoders = {}
    for v in [baseline, *finals]:
        try:
            encoders[v.label] = load_encoder(source, EncoderSettings.from_dict(v.settings), cache_dir=cache_dir,
                                             calibration=calibration_sentences())
        except Exception as exc:  # noqa: BLE001 - a variant that fails to load is a result
            v.status, v.reason = "failed", f"serving: {type(exc).__name__}: {exc}"
    times = stream_latencies(encoders, stream, max_time_s=max_s, min_requests=min(SERVING_MIN_REQUESTS, len(stream)))
    base = times.get(baseline.label, [])
    return {
        "method": "one process, encoders loaded side by side, each request sent to every encoder in turn (order rotating), "
                  "closed loop: one sentence per encode call, back to back",
        "requests": len(base),
        "latency": {label: latency_summary(t) for label, t in times.items()},
        "p50_speedup": {label: p50_speedup(base, t) for label, t in times.items() if label != baseline.label},
    }


__all__: list[str] = []
