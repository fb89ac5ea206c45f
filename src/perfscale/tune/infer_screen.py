"""The gate and the screen of `tune encoder`, in this process: load a variant, compare its embeddings with the
fp32 eager reference's (perfscale.measure.gate), time it on the screening sentences."""

from __future__ import annotations

import time

import numpy as np

from perfscale.errors import PerfscaleError
from perfscale.tune.infer_result import Variant

# OpenVINO int8 (NNCF) calibrates on the last CALIBRATION_SENTENCES of the shipped corpus: never the gate's
# sentences (its first GATE_SENTENCES), so the gate does not grade the int8 model on what it was calibrated on.
CALIBRATION_SENTENCES = 64


def calibration_sentences() -> list[str]:
    """The sentences static int8 variants calibrate on (the shipped corpus' tail, disjoint from the gate's)."""
    from perfscale.measure.corpus import load_sentences

    return load_sentences()[-CALIBRATION_SENTENCES:]


def _screen(encoder, sentences: list[str], reps: int) -> float:
    """Median sentences/s over `reps` passes (the caller has warmed the encoder up)."""
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        encoder.encode(sentences)
        times.append(time.perf_counter() - t0)
    return len(sentences) / float(np.median(times))

def _score(v: Variant, objective: str) -> float:
    """Higher is better: screened sentences/s (throughput), or 1 / median single-request latency (latency)."""
    if objective == "latency":
        p50 = (v.latency or {}).get("p50_ms")
        return 1.0 / p50 if p50 else 0.0
    return v.screen_rate or 0.0


def _try_variant(variant: Variant, source, corpus, ref, thresholds, timing, reps, cache_dir, requests: int = 0) -> np.ndarray | None:
    """Load, gate on `corpus` against `ref`, screen the batch speed on `timing`; with `requests`, also the latency of
    that many single requests (objective latency). Returns the embeddings of `corpus` (None when the variant failed):
    the reference's are what the others are gated against."""
    from perfscale.measure.gate import compare_outputs
    from perfscale.runtimes.encoder import EncoderSettings, load_encoder

    try:
        t0 = time.perf_counter()
        encoder = load_encoder(source, EncoderSettings.from_dict(variant.settings), cache_dir=cache_dir,
                               calibration=calibration_sentences())
        variant.load_s = time.perf_counter() - t0
        variant.onnx_path = encoder.onnx_path
        if variant.settings.get("backend") == "onnxruntime" and variant.onnx_path:  # issue 21: what ORT fused
            from perfscale.runtimes.ort_fusion import fused_op_counts, fusion_record

            variant.fused_ops = fused_op_counts(variant.onnx_path)
            variant.fusion_note = (fusion_record(variant.onnx_path) or {}).get("note")
        emb = encoder.encode(corpus)  # also the warm-up (compile, ORT session arenas)
    except PerfscaleError as exc:
        variant.status, variant.reason = "failed", str(exc)
        return None
    except Exception as exc:  # a variant that crashes is a result, not a crash of the tool
        variant.status, variant.reason = "failed", f"{type(exc).__name__}: {exc}"
        return None
    variant.accuracy = compare_outputs({"embeddings": ref}, {"embeddings": emb}, thresholds) if ref is not None else None
    if variant.accuracy and not variant.accuracy["passed"]:
        variant.status = "inaccurate"
        variant.reason = "accuracy gate vs fp32 eager: " + "; ".join(variant.accuracy["failures"])
    else:
        variant.status = "ok"
    variant.screen_rate = _screen(encoder, timing, reps)
    if requests:
        from perfscale.tune.infer_serving import latency_summary, stream_latencies

        variant.latency = latency_summary(stream_latencies({variant.label: encoder}, timing[:requests])[variant.label])
    return emb

def _full_gate(variant: Variant, source, corpus, ref, thresholds, cache_dir, screened: int) -> None:
    """The gate on the whole gate corpus, for a finalist that passed on the `screened` screening sentences."""
    from perfscale.measure.gate import compare_outputs
    from perfscale.runtimes.encoder import EncoderSettings, load_encoder

    try:
        emb = load_encoder(source, EncoderSettings.from_dict(variant.settings), cache_dir=cache_dir,
                           calibration=calibration_sentences()).encode(corpus)
    except Exception as exc:  # noqa: BLE001 - a variant that crashes is a result
        variant.status, variant.reason = "failed", f"{type(exc).__name__}: {exc}"
        return
    variant.accuracy = compare_outputs({"embeddings": ref}, {"embeddings": emb}, thresholds)
    if not variant.accuracy["passed"]:
        variant.status = "inaccurate"
        variant.reason = (f"passed on the {screened} screening sentences, failed the gate on all {len(corpus)}: "
                          + "; ".join(variant.accuracy["failures"]))


__all__ = ["CALIBRATION_SENTENCES", "calibration_sentences"]
